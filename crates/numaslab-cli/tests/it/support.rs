//! What the end-to-end tests share: the guard for tests that switch real CPUs.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard};

const CPU1_ONLINE: &str = "/sys/devices/system/cpu/cpu1/online";

/// Serializes the real-hotplug tests of this binary; the file lock serializes them with
/// every other test binary of the project that switches cpu1.
static REAL: Mutex<()> = Mutex::new(());

/// The lock every program of the project takes before it switches real CPUs.
pub(crate) const LOCK_PATH: &str = "/tmp/numaslab-real-hotplug.lock";

/// The real-hotplug lock, held: by this binary's mutex and by `flock` on [`LOCK_PATH`].
#[derive(Debug)]
pub(crate) struct HotplugLock {
    _file: File,
    _local: MutexGuard<'static, ()>,
}

impl HotplugLock {
    /// Waits for the lock and takes it.
    pub(crate) fn acquire() -> Self {
        let local = REAL.lock().unwrap_or_else(|poison| poison.into_inner());
        let file = File::create(LOCK_PATH).expect("create the hotplug lock file");
        // SAFETY: flock(2) on a descriptor we own; it blocks until the lock is ours.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(locked, 0, "flock of the hotplug lock file failed");
        Self { _file: file, _local: local }
    }

    /// Only this binary's mutex, for a test whose child takes the file lock itself.
    pub(crate) fn local_only() -> MutexGuard<'static, ()> {
        REAL.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Exclusive use of cpu1; brings it back online however the test ends.
#[derive(Debug)]
pub(crate) struct RealCpu1 {
    _lock: HotplugLock,
    /// A private lock file for the `--real` runs the test starts while it holds the
    /// shared one (`--lock-file`), so that they do not refuse to run.
    private_lock: tempfile::TempDir,
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
        let guard = Self { _lock: HotplugLock::acquire(), private_lock: tempfile::tempdir().unwrap() };
        guard.restore();
        Some(guard)
    }

    /// `--lock-file PATH` for a `--real` run started under this guard.
    pub(crate) fn lock_file_args(&self) -> [String; 2] {
        ["--lock-file".into(), self.private_lock.path().join("lock").to_string_lossy().into_owned()]
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

/// The check named `name` of a torture report in JSON.
pub(crate) fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    let checks = report["checks"].as_array().expect("the report lists its checks");
    checks.iter().find(|check| check["name"] == name).expect("the check is reported")
}
