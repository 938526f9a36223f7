//! Real CPU hotplug of cpu1 on this machine: opt-in with `NUMASLAB_REAL_HOTPLUG=1` (which
//! `.ci/run` sets as root when `cpu1/online` is writable). cpu0 is never touched; cpu1 is
//! brought back online by a drop guard whatever happens.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hotplug::{Hotplug, Rank, Slot, Source, WatchMode, Watcher};
use topology::{CpuState, SysfsTopology, Topology};

use crate::support::{finished, wait_from, woke, Log};

const CPU1_ONLINE: &str = "/sys/devices/system/cpu/cpu1/online";
const WAIT: Duration = Duration::from_secs(10);

/// Serializes the real tests of this binary, and (through a lock file other crates'
/// real-hotplug tests may take too) with other processes.
static REAL: Mutex<()> = Mutex::new(());

/// Holds the locks and puts cpu1 back online when dropped.
pub(crate) struct Cpu1Guard {
    _file: File,
    _local: MutexGuard<'static, ()>,
}

impl Cpu1Guard {
    /// `Some` when real hotplug tests are enabled; prints why not otherwise.
    pub(crate) fn acquire(test: &str) -> Option<Cpu1Guard> {
        if std::env::var("NUMASLAB_REAL_HOTPLUG").as_deref() != Ok("1") {
            println!("{test}: skipped: set NUMASLAB_REAL_HOTPLUG=1 (as root, with {CPU1_ONLINE} writable) to run it");
            return None;
        }
        if fs::OpenOptions::new().write(true).open(CPU1_ONLINE).is_err() {
            println!("{test}: skipped: {CPU1_ONLINE} is not writable here");
            return None;
        }
        let local = REAL.lock().unwrap_or_else(|poison| poison.into_inner());
        let file = File::create("/tmp/numaslab-real-hotplug.lock").expect("create the hotplug lock file");
        // SAFETY: flock(2) on a descriptor we own; blocks until the lock is ours.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(locked, 0, "flock of the hotplug lock file failed");
        let guard = Cpu1Guard { _file: file, _local: local };
        guard.restore();
        Some(guard)
    }

    fn restore(&self) {
        if fs::read_to_string(CPU1_ONLINE).map(|text| text.trim() == "0").unwrap_or(false) {
            if let Err(error) = fs::write(CPU1_ONLINE, "1") {
                eprintln!("could not bring cpu1 back online: {error}");
            }
        }
    }
}

impl Drop for Cpu1Guard {
    fn drop(&mut self) {
        self.restore();
    }
}

fn machine() -> (Arc<SysfsTopology>, Hotplug, Log) {
    let topology = Arc::new(SysfsTopology::detect().expect("read this machine's sysfs"));
    let hotplug = Hotplug::new(topology.clone()).unwrap();
    let log = Log::default();
    hotplug.setup_state(Slot::PrepareDynamic, log.state("prepare")).unwrap();
    hotplug.setup_state(Slot::OnlineDynamic, log.state("online")).unwrap();
    log.take();
    (topology, hotplug, log)
}

#[test]
fn real_cpu1_down_and_up_through_the_crate_with_uevents() {
    let Some(_guard) = Cpu1Guard::acquire("real_cpu1_down_and_up_through_the_crate_with_uevents") else {
        return;
    };
    let (topology, hotplug, log) = machine();
    if cfg!(numaslab_force_poll) {
        println!("real_cpu1_down_and_up_through_the_crate_with_uevents: skipped: built with --cfg numaslab_force_poll");
        return;
    }
    let watcher = Watcher::builder(&hotplug).start().unwrap();
    assert_eq!(watcher.mode(), WatchMode::Uevent, "the live root is watched through uevents");
    let events = hotplug.events();

    // Driven: callbacks in order, and the kernel's uevent arrives.
    hotplug.cpu_down(1).unwrap();
    assert_eq!(log.take_for(1), [("down", "online"), ("down", "prepare")]);
    assert!(!topology.online_cpus().unwrap().contains(1));
    assert!(
        wait_from(&events, Source::Uevent, WAIT, woke(1, CpuState::Offline)).is_some(),
        "no offline uevent"
    );
    hotplug.cpu_up(1).unwrap();
    assert_eq!(log.take_for(1), [("up", "prepare"), ("up", "online")]);
    assert!(
        wait_from(&events, Source::Uevent, WAIT, woke(1, CpuState::Online)).is_some(),
        "no online uevent"
    );

    // Written behind the crate's back: the uevent alone makes the watcher run them.
    fs::write(CPU1_ONLINE, "0").unwrap();
    assert!(wait_from(&events, Source::Uevent, WAIT, finished(1, Rank::OFFLINE)).is_some());
    assert_eq!(log.take_for(1), [("down", "online"), ("down", "prepare")]);
    fs::write(CPU1_ONLINE, "1").unwrap();
    assert!(wait_from(&events, Source::Uevent, WAIT, finished(1, Rank::ONLINE)).is_some());
    assert_eq!(log.take_for(1), [("up", "prepare"), ("up", "online")]);
    let stats = watcher.stop();
    assert!(stats.wakeups >= 4, "{stats:?}");
}

#[test]
fn real_cpu1_through_the_polling_fallback() {
    let Some(_guard) = Cpu1Guard::acquire("real_cpu1_through_the_polling_fallback") else {
        return;
    };
    let (_topology, hotplug, log) = machine();
    let watcher =
        Watcher::builder(&hotplug).force_poll().poll_interval(Duration::from_millis(10)).start().unwrap();
    assert_eq!(watcher.mode(), WatchMode::Poll);
    let events = hotplug.events();
    fs::write(CPU1_ONLINE, "0").unwrap();
    assert!(wait_from(&events, Source::Poll, WAIT, finished(1, Rank::OFFLINE)).is_some());
    assert_eq!(log.take_for(1), [("down", "online"), ("down", "prepare")]);
    fs::write(CPU1_ONLINE, "1").unwrap();
    assert!(wait_from(&events, Source::Poll, WAIT, finished(1, Rank::ONLINE)).is_some());
    assert_eq!(log.take_for(1), [("up", "prepare"), ("up", "online")]);
    watcher.stop();
}

#[test]
fn real_cpu0_is_refused_before_any_callback() {
    let Some(_guard) = Cpu1Guard::acquire("real_cpu0_is_refused_before_any_callback") else {
        return;
    };
    let (_topology, hotplug, log) = machine();
    if std::path::Path::new("/sys/devices/system/cpu/cpu0/online").exists() {
        println!("real_cpu0_is_refused_before_any_callback: skipped: cpu0 has an online file here, and cpu0 is never touched");
        return;
    }
    let error = hotplug.cpu_down(0).unwrap_err();
    assert!(matches!(error, hotplug::Error::NoOnlineFile { cpu: 0, .. }), "{error}");
    assert!(log.take().is_empty());
}

#[test]
fn real_auto_mode_follows_the_force_poll_cfg() {
    let Some(_guard) = Cpu1Guard::acquire("real_auto_mode_follows_the_force_poll_cfg") else {
        return;
    };
    let (_topology, hotplug, _log) = machine();
    let watcher = Watcher::builder(&hotplug).start().unwrap();
    let expected = if cfg!(numaslab_force_poll) { WatchMode::Poll } else { WatchMode::Uevent };
    assert_eq!(watcher.mode(), expected);
    watcher.stop();
}
