//! Fixture copies: writing `cpuN/online` in a sysfs-shaped folder makes the poller run
//! the callbacks.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hotplug::{Error, Hotplug, Rank, Slot, Source, WatchMode, Watcher};
use topology::{CpuState, FixtureTopology, SysfsTopology, Topology};

use crate::support::{finished, wait_from, woke, Log};

const WAIT: Duration = Duration::from_secs(5);
const CPU_DIR: &str = "sys/devices/system/cpu";

/// A small sysfs tree: 4 CPUs on node 0, cpu0 without an `online` file as on x86.
pub(crate) fn small_tree(root: &Path) {
    let cpu = root.join(CPU_DIR);
    fs::create_dir_all(&cpu).unwrap();
    for (file, text) in [("online", "0-3\n"), ("possible", "0-3\n"), ("present", "0-3\n"), ("offline", "\n")]
    {
        fs::write(cpu.join(file), text).unwrap();
    }
    for n in 0..4 {
        fs::create_dir_all(cpu.join(format!("cpu{n}"))).unwrap();
        if n != 0 {
            fs::write(cpu.join(format!("cpu{n}/online")), "1\n").unwrap();
        }
    }
    let node = root.join("sys/devices/system/node");
    fs::create_dir_all(node.join("node0")).unwrap();
    for (file, text) in [("possible", "0\n"), ("online", "0\n"), ("has_cpu", "0\n"), ("has_memory", "0\n")] {
        fs::write(node.join(file), text).unwrap();
    }
    fs::write(node.join("node0/cpulist"), "0-3\n").unwrap();
    fs::write(node.join("node0/distance"), "10\n").unwrap();
    fs::write(node.join("node0/meminfo"), "Node 0 MemTotal:       8000000 kB\n").unwrap();
}

pub(crate) fn write_online(root: &Path, cpu: u32, state: CpuState) {
    let text = if state == CpuState::Online { "1\n" } else { "0\n" };
    fs::write(root.join(CPU_DIR).join(format!("cpu{cpu}/online")), text).unwrap();
}

fn watched(topology: Arc<dyn Topology>) -> (Hotplug, Log, Watcher) {
    let hotplug = Hotplug::new(topology).unwrap();
    let log = Log::default();
    hotplug.setup_state(Slot::PrepareDynamic, log.state("prepare")).unwrap();
    hotplug.setup_state(Slot::OnlineDynamic, log.state("online")).unwrap();
    log.take();
    let watcher = Watcher::builder(&hotplug)
        .poll_interval(Duration::from_millis(5))
        .reconcile_interval(Duration::from_secs(60))
        .start()
        .unwrap();
    assert_eq!(watcher.mode(), WatchMode::Poll, "a fixture root is polled");
    (hotplug, log, watcher)
}

#[test]
fn writing_cpu_online_in_a_small_tree_runs_the_callbacks() {
    let dir = tempfile::tempdir().unwrap();
    small_tree(dir.path());
    let topology = Arc::new(SysfsTopology::new(dir.path()).unwrap());
    let (hotplug, log, watcher) = watched(topology);
    let events = hotplug.events();

    write_online(dir.path(), 2, CpuState::Offline);
    assert!(wait_from(&events, Source::Poll, WAIT, woke(2, CpuState::Offline)).is_some());
    assert!(wait_from(&events, Source::Poll, WAIT, finished(2, Rank::OFFLINE)).is_some());
    assert_eq!(log.take_for(2), [("down", "online"), ("down", "prepare")]);

    write_online(dir.path(), 2, CpuState::Online);
    assert!(wait_from(&events, Source::Poll, WAIT, finished(2, Rank::ONLINE)).is_some());
    assert_eq!(log.take_for(2), [("up", "prepare"), ("up", "online")]);
    assert_eq!(hotplug.online_view().iter().collect::<Vec<_>>(), [0, 1, 2, 3]);
    watcher.stop();
}

#[test]
fn driving_a_small_tree_writes_its_files_and_cpu0_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    small_tree(dir.path());
    let topology = Arc::new(SysfsTopology::new(dir.path()).unwrap());
    let (hotplug, log, watcher) = watched(topology);
    hotplug.cpu_down(3).unwrap();
    assert_eq!(fs::read_to_string(dir.path().join(CPU_DIR).join("cpu3/online")).unwrap().trim(), "0");
    assert_eq!(log.take_for(3), [("down", "online"), ("down", "prepare")]);

    let error = hotplug.cpu_down(0).unwrap_err();
    assert!(matches!(&error, Error::NoOnlineFile { cpu: 0, .. }), "{error}");
    assert!(error.to_string().contains("cpu0/online does not exist"), "{error}");
    assert!(log.take().is_empty(), "no callback may run for a cpu that cannot be switched");

    hotplug.cpu_up(3).unwrap();
    assert_eq!(log.take_for(3), [("up", "prepare"), ("up", "online")]);
    // The poller saw the driver's writes and found nothing left to do.
    std::thread::sleep(Duration::from_millis(50));
    assert!(log.take().is_empty());
    watcher.stop();
}

#[test]
fn writing_cpu_online_in_the_seed_box_fixture_runs_the_callbacks() {
    let fixture = match FixtureTopology::seed_box() {
        Ok(fixture) => Arc::new(fixture),
        Err(error) => panic!("the compiled-in seed box must load: {error}"),
    };
    let root = fixture.copy_root().to_path_buf();
    let (hotplug, log, watcher) = watched(fixture);
    let events = hotplug.events();
    write_online(&root, 3, CpuState::Offline);
    assert!(wait_from(&events, Source::Poll, WAIT, finished(3, Rank::OFFLINE)).is_some());
    assert_eq!(log.take_for(3), [("down", "online"), ("down", "prepare")]);
    write_online(&root, 3, CpuState::Online);
    assert!(wait_from(&events, Source::Poll, WAIT, finished(3, Rank::ONLINE)).is_some());
    assert_eq!(log.take_for(3), [("up", "prepare"), ("up", "online")]);
    watcher.stop();
}
