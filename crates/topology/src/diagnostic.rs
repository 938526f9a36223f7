//! [`Diagnostic`]: a quirk of a machine's files that a backend read by a documented
//! interpretation instead of refusing the machine, and [`Reading`], which says whether
//! quirks are read that way or refused.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::sysfs::read::excerpt;
use crate::{Error, Result};

/// How a backend treats files that the kernel would not write but that real machines
/// (old kernels, broken firmware, trimmed captures) do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Reading {
    /// Read each quirk by its documented interpretation and report it in
    /// [`Topology::diagnostics`](crate::Topology::diagnostics). The default: an allocator
    /// must start on whatever machine it is deployed to.
    #[default]
    Lenient,
    /// Refuse the machine at the first quirk with [`Error::Strict`]: for validating captures
    /// and fixtures.
    Strict,
}

/// The kinds of quirk a backend reads leniently; each is described in `sysfs.rs`'s module
/// documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "kebab-case"))]
#[non_exhaustive]
pub enum Quirk {
    /// A `cpuN/online` file with no text in it.
    EmptyOnlineFlag,
    /// A `proc/self/cpuset` file with no path in it.
    EmptyCpusetPath,
    /// No `proc/meminfo` on a machine without a `node/` folder: node 0's memory is unknown.
    NoMeminfo,
    /// Every node lists every CPU (firmware with a broken SRAT): the NUMA facts are unusable.
    AllCpusInEveryNode,
    /// A `nodeN/distance` row holding a `0`.
    ZeroDistance,
    /// A CPU named in two nodes' lists (heterogeneous memory).
    CpuInTwoNodes,
    /// A memory-node restriction (cpuset `mems`) naming no node with memory.
    NoAllowedMemoryNode,
}

impl Quirk {
    /// A short name, as printed and as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Quirk::EmptyOnlineFlag => "empty-online-flag",
            Quirk::EmptyCpusetPath => "empty-cpuset-path",
            Quirk::NoMeminfo => "no-meminfo",
            Quirk::AllCpusInEveryNode => "all-cpus-in-every-node",
            Quirk::ZeroDistance => "zero-distance",
            Quirk::CpuInTwoNodes => "cpu-in-two-nodes",
            Quirk::NoAllowedMemoryNode => "no-allowed-memory-node",
        }
    }
}

impl fmt::Display for Quirk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One quirk as it was found and read: the file, its text, and the interpretation taken.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Diagnostic {
    /// Which quirk.
    pub quirk: Quirk,
    /// The file (or folder) that holds it.
    pub path: PathBuf,
    /// Its text, as read (an excerpt for long files; empty for a missing file).
    pub text: String,
    /// How it was read, in words.
    pub reading: String,
}

impl Diagnostic {
    /// A diagnostic quoting (an excerpt of) `text`.
    pub(crate) fn new(quirk: Quirk, path: &Path, text: &str, reading: impl Into<String>) -> Self {
        Self { quirk, path: path.to_path_buf(), text: excerpt(text), reading: reading.into() }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {:?}: {}", self.quirk, self.path.display(), self.text, self.reading)
    }
}

/// Collects the diagnostics of one reading, or turns the first into an error when strict.
#[derive(Debug, Default)]
pub(crate) struct Notes {
    reading: Reading,
    found: Vec<Diagnostic>,
}

impl Notes {
    pub(crate) fn new(reading: Reading) -> Self {
        Self { reading, found: Vec::new() }
    }

    /// Records a quirk read leniently; [`Error::Strict`] in strict reading.
    pub(crate) fn note(&mut self, diagnostic: Diagnostic) -> Result<()> {
        match self.reading {
            Reading::Lenient => {
                if !self.found.contains(&diagnostic) {
                    self.found.push(diagnostic);
                }
                Ok(())
            }
            Reading::Strict => Err(Error::Strict(Box::new(diagnostic))),
        }
    }

    pub(crate) fn into_found(self) -> Vec<Diagnostic> {
        self.found
    }
}
