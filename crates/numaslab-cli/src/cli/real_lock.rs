//! The lock a `--real` run holds while it switches this machine's CPUs, so that two runs
//! (or a run and the project's real-hotplug tests) never switch them at once and count
//! each other's transitions as their own.
//!
//! It is an exclusive `flock(2)` on [`LOCK_PATH`], the file the tests lock too, taken
//! without waiting: a second run refuses at once, naming the holder. The holder is found
//! in `/proc/locks` (which knows every holder, the tests included, who write nothing into
//! the file); the pid and command a run writes into the file are the fallback.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The lock file every program of the project that switches real CPUs locks.
pub(crate) const LOCK_PATH: &str = "/tmp/numaslab-real-hotplug.lock";

/// The held lock; released when dropped (when the process ends, at the latest).
#[derive(Debug)]
pub(crate) struct RealLock {
    _file: File,
}

impl RealLock {
    /// Takes the lock at `path` or refuses, naming who holds it.
    pub(crate) fn acquire(path: &Path) -> Result<Self> {
        // Not truncated before the lock is ours: the file may name the holder.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot open the real-hotplug lock {}", path.display()))?;
        // SAFETY: flock(2) on a descriptor this function owns; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(error).with_context(|| format!("cannot lock {}", path.display()));
            }
            bail!(
                "another program is switching this machine's CPUs: {} holds {}; wait for it to end (a --real run takes this lock for its whole run)",
                holder(&mut file),
                path.display()
            );
        }
        let command: Vec<String> = std::env::args().collect();
        let record = format!("pid {}\ncommand {}\n", std::process::id(), command.join(" "));
        // The record is a courtesy to whoever is refused; the lock itself is what counts.
        let _ = file.set_len(0).and_then(|()| file.write_all(record.as_bytes()));
        Ok(Self { _file: file })
    }
}

/// Who holds the lock on `file`: from `/proc/locks`, else from what the holder wrote.
fn holder(file: &mut File) -> String {
    if let Some(pid) = file.metadata().ok().and_then(|meta| flock_holder(meta.dev(), meta.ino())) {
        let command = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|bytes| {
                let words: Vec<String> = bytes
                    .split(|&byte| byte == 0)
                    .filter(|word| !word.is_empty())
                    .map(|word| String::from_utf8_lossy(word).into_owned())
                    .collect();
                words.join(" ")
            })
            .unwrap_or_default();
        if command.is_empty() {
            return format!("pid {pid}");
        }
        return format!("pid {pid} ({command})");
    }
    let mut text = String::new();
    let _ = file.rewind().and_then(|()| file.read_to_string(&mut text));
    let text = text.trim().replace('\n', ", ");
    if text.is_empty() {
        "another process".into()
    } else {
        text
    }
}

/// The pid holding an `flock` on the file with device `dev` and inode `ino`, from
/// `/proc/locks`, whose lines read `1: FLOCK  ADVISORY  WRITE 2262 fe:00:5432001 0 EOF`
/// (waiters' lines carry a `->` and are skipped).
fn flock_holder(dev: u64, ino: u64) -> Option<u32> {
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let (major, minor) = (libc::major(dev) as u64, libc::minor(dev) as u64);
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&"FLOCK") {
            return None;
        }
        let (pid, id) = (fields.get(4)?, fields.get(5)?);
        let mut parts = id.split(':');
        let parse = |part: Option<&str>, radix| part.and_then(|text| u64::from_str_radix(text, radix).ok());
        let (file_major, file_minor, file_ino) =
            (parse(parts.next(), 16)?, parse(parts.next(), 16)?, parse(parts.next(), 10)?);
        (file_major == major && file_minor == minor && file_ino == ino).then(|| pid.parse().ok()).flatten()
    })
}

/// The lock path to use: the hidden `--lock-file`, else [`LOCK_PATH`].
pub(crate) fn path(given: Option<&PathBuf>) -> PathBuf {
    given.cloned().unwrap_or_else(|| PathBuf::from(LOCK_PATH))
}
