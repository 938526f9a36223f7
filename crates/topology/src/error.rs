//! Errors of the topology crate.

use std::path::PathBuf;

use crate::{CpuId, Diagnostic, NodeId};

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while parsing one of the kernel's id-set text forms.
///
/// It carries the offending text and the reason, so that the caller can wrap it with the
/// file it came from ([`Error::Malformed`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?}: {reason}")]
pub struct ParseError {
    /// The text that was parsed, as given (trailing newline and NUL included).
    pub text: String,
    /// Why it was refused, in words.
    pub reason: String,
}

/// Everything the topology crate can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or folder could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A file was read but its content is not what the kernel writes there.
    #[error("malformed {what} in {path}: {text:?}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What the file should hold ("cpu list", "cpu mask", "distance row", ...).
        what: &'static str,
        /// The offending text.
        text: String,
        /// Why it was refused.
        reason: String,
    },
    /// An id-set text (not from a file) could not be parsed.
    #[error("invalid {what}: {source}")]
    Parse {
        /// What the text should hold ("cpu list", "cpu mask", ...).
        what: &'static str,
        /// The offending text and the reason.
        #[source]
        source: ParseError,
    },
    /// A quirk that a strict reading refuses (see [`Reading::Strict`](crate::Reading)); a
    /// lenient reading reports it in [`Topology::diagnostics`](crate::Topology::diagnostics).
    #[error("strict reading refuses {0}")]
    Strict(Box<Diagnostic>),
    /// The root folder is not a sysfs tree.
    #[error("{root} is not a sysfs tree: {reason}")]
    NotSysfs {
        /// The root folder that was given.
        root: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// A CPU id that this machine does not have.
    #[error("cpu {cpu} is not a possible cpu of this machine (possible: {possible})")]
    UnknownCpu {
        /// The CPU id asked for.
        cpu: CpuId,
        /// The machine's possible CPUs, in list form.
        possible: String,
    },
    /// A node id that this machine does not have.
    #[error("node {node} is not a possible node of this machine (possible: {possible})")]
    UnknownNode {
        /// The node id asked for.
        node: NodeId,
        /// The machine's possible nodes, in list form.
        possible: String,
    },
    /// An operation that needs an online CPU was given an offline one.
    #[error("cpu {cpu} is offline: {operation} needs an online cpu")]
    CpuOffline {
        /// The CPU.
        cpu: CpuId,
        /// What was asked ("binding a thread", ...).
        operation: &'static str,
    },
    /// A CPU that cannot be taken offline or online (cpu0 without an `online` file).
    #[error("cpu {cpu} cannot be hotplugged: {reason}")]
    NotHotpluggable {
        /// The CPU.
        cpu: CpuId,
        /// Why not.
        reason: String,
    },
    /// Writing a CPU's `online` file failed (the kernel said EBUSY, EPERM, ...).
    #[error("cannot set cpu {cpu} {state} through {path}: {source}")]
    SetOnline {
        /// The CPU.
        cpu: CpuId,
        /// "online" or "offline".
        state: &'static str,
        /// The `online` file.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// The calling thread could not be pinned to a CPU (`sched_setaffinity` failed).
    #[error("cannot bind the calling thread to cpu {cpu}: {source}")]
    Affinity {
        /// The CPU.
        cpu: CpuId,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// A fixture could not be found or loaded.
    #[error("fixture {name}: {reason}")]
    Fixture {
        /// The name or path asked for.
        name: String,
        /// What was wrong.
        reason: String,
    },
    /// A fake machine description that cannot be built.
    #[error("invalid fake machine: {0}")]
    InvalidFake(String),
    /// The operation is not possible on this backend.
    #[error("{operation} is not supported by the {backend} backend")]
    Unsupported {
        /// What was asked.
        operation: &'static str,
        /// Which backend.
        backend: &'static str,
    },
}
