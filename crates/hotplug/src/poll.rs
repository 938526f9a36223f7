//! Polling the sysfs `online` files: the fallback where uevents are not available, and
//! the only source for a fixture copy (whose files no kernel announces).
//!
//! A poll reads `sys/devices/system/cpu/online` (the summary the kernel keeps) and every
//! `cpuN/online` under the root, and compares with the previous poll. A difference is a
//! wake-up; the machine then reads the truth through the topology. Both kinds of file are
//! read because a fixture copy's summary is a plain file that writing `cpuN/online` does
//! not update.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use topology::{CpuId, CpuState, OnlineChange};

/// The folder of CPU devices under a sysfs root.
const CPU_DIR: &str = "sys/devices/system/cpu";

/// The `online` files of one sysfs tree.
#[derive(Debug)]
pub(crate) struct OnlineFiles {
    summary: PathBuf,
    /// `cpuN/online` for every CPU that has one (cpu0 often has none).
    per_cpu: Vec<(CpuId, PathBuf)>,
}

/// What one poll read: the summary's text and each CPU's state, `None` where a file
/// could not be read or held neither `0` nor `1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    summary: Option<String>,
    per_cpu: Vec<(CpuId, Option<CpuState>)>,
}

impl OnlineFiles {
    /// Finds the `online` files under `root` (`/` for the live machine).
    pub(crate) fn new(root: &Path) -> std::io::Result<OnlineFiles> {
        let dir = root.join(CPU_DIR);
        let mut per_cpu = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let Some(cpu) = entry.file_name().to_str().and_then(cpu_folder_id) else { continue };
            let file = entry.path().join("online");
            if file.exists() {
                per_cpu.push((cpu, file));
            }
        }
        per_cpu.sort_by_key(|&(cpu, _)| cpu);
        Ok(OnlineFiles { summary: dir.join("online"), per_cpu })
    }

    /// Reads every file once.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let summary = read_small(&self.summary);
        let per_cpu = self.per_cpu.iter().map(|(cpu, file)| (*cpu, read_state(file))).collect();
        Snapshot { summary, per_cpu }
    }
}

/// The id in a CPU's sysfs folder name (`cpu12` is 12); `None` for other names
/// (`cpufreq`, `cpu+1`).
pub(crate) fn cpu_folder_id(name: &str) -> Option<CpuId> {
    name.strip_prefix("cpu")
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse().ok())
}

/// The most a poll reads of one file: a CPU list of every possible id is far shorter. A
/// longer file reads as unreadable (`None`), as one that is not a regular file does.
const MAX_POLL_BYTES: u64 = 64 * 1024;

/// One `online` file's text, read as [`topology::open_attribute`] opens it (never
/// blocking on a FIFO) and at most [`MAX_POLL_BYTES`]; `None` if it cannot be read.
fn read_small(file: &Path) -> Option<String> {
    let mut text = String::new();
    topology::open_attribute(file).ok()?.take(MAX_POLL_BYTES + 1).read_to_string(&mut text).ok()?;
    (text.len() as u64 <= MAX_POLL_BYTES).then_some(text)
}

fn read_state(file: &Path) -> Option<CpuState> {
    match read_small(file)?.trim() {
        "1" => Some(CpuState::Online),
        "0" => Some(CpuState::Offline),
        _ => None,
    }
}

impl Snapshot {
    /// The per-CPU changes from `earlier` to `self`, as hints; empty when only the summary
    /// changed or a file became unreadable.
    pub(crate) fn changes_since(&self, earlier: &Snapshot) -> Vec<OnlineChange> {
        self.per_cpu
            .iter()
            .filter_map(|&(cpu, now)| {
                let before = earlier.per_cpu.iter().find(|&&(c, _)| c == cpu).and_then(|&(_, state)| state);
                match now {
                    Some(state) if Some(state) != before => Some(OnlineChange { cpu, state }),
                    _ => None,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
