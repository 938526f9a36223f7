//! What the end-to-end tests share: the guard for tests that switch real CPUs.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard};

const CPU1_ONLINE: &str = "/sys/devices/system/cpu/cpu1/online";

/// Serializes the real-hotplug tests of this binary; the file lock serializes them with
/// every other test binary of the project that switches cpu1.
static REAL: Mutex<()> = Mutex::new(());

/// Exclusive use of cpu1; brings it back online however the test ends.
#[derive(Debug)]
pub(crate) struct RealCpu1 {
    _file: File,
    _local: MutexGuard<'static, ()>,
}

impl RealCpu1 {
    /// Takes cpu1 for a test, or prints why the test is skipped and returns `None`.
    pub(crate) fn acquire() -> Option<Self> {
        if std::env::var("NUMASLAB_REAL_HOTPLUG").as_deref() != Ok("1") {
            eprintln!(
                "skipped: set NUMASLAB_REAL_HOTPLUG=1 (as root, with cpu1 hotpluggable) to switch real CPUs"
            );
            return None;
        }
        let local = REAL.lock().unwrap_or_else(|poison| poison.into_inner());
        let file = File::create("/tmp/numaslab-real-hotplug.lock").expect("create the hotplug lock file");
        // SAFETY: flock(2) on a descriptor we own; it blocks until the lock is ours.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(locked, 0, "flock of the hotplug lock file failed");
        let guard = Self { _file: file, _local: local };
        guard.restore();
        Some(guard)
    }

    fn restore(&self) {
        if std::fs::read_to_string(CPU1_ONLINE).is_ok_and(|text| text.trim() == "0") {
            if let Err(error) = std::fs::write(CPU1_ONLINE, "1") {
                eprintln!("could not bring cpu1 back online: {error}");
            }
        }
    }
}

impl Drop for RealCpu1 {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Whether cpu1 is online now (a machine without cpu1's file counts as online).
pub(crate) fn cpu1_online() -> bool {
    std::fs::read_to_string(CPU1_ONLINE).map_or(true, |text| text.trim() == "1")
}
