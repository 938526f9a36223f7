//! Watchers on the fake backend: its direct notices wake them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hotplug::{EventKind, Hotplug, Rank, Slot, Source, WatchMode, Watcher};
use topology::{CpuState, FakeTopology};

use crate::support::{finished, wait_from, woke, Log};

const WAIT: Duration = Duration::from_secs(5);

fn machine() -> (Arc<FakeTopology>, Hotplug, Log) {
    let fake = Arc::new(FakeTopology::seed_box());
    let hotplug = Hotplug::new(fake.clone()).unwrap();
    let log = Log::default();
    hotplug.setup_state(Slot::PrepareDynamic, log.state("prepare")).unwrap();
    hotplug.setup_state(Slot::OnlineDynamic, log.state("online")).unwrap();
    log.take();
    (fake, hotplug, log)
}

#[test]
fn a_fake_notice_runs_the_callbacks_in_order() {
    let (fake, hotplug, log) = machine();
    let watcher = Watcher::builder(&hotplug).reconcile_interval(Duration::from_secs(60)).start().unwrap();
    assert_eq!(watcher.mode(), WatchMode::Fake);
    let events = hotplug.events();
    fake.set_online(2, CpuState::Offline).unwrap();
    assert!(wait_from(&events, Source::Fake, WAIT, finished(2, Rank::OFFLINE)).is_some());
    assert_eq!(log.take_for(2), [("down", "online"), ("down", "prepare")]);
    fake.set_online(2, CpuState::Online).unwrap();
    assert!(wait_from(&events, Source::Fake, WAIT, finished(2, Rank::ONLINE)).is_some());
    assert_eq!(log.take_for(2), [("up", "prepare"), ("up", "online")]);
    let stats = watcher.stop();
    assert!(stats.wakeups >= 2 && stats.reconciles >= 2, "{stats:?}");
}

#[test]
fn a_driven_change_is_not_run_twice_when_its_notice_arrives() {
    let (_fake, hotplug, log) = machine();
    let watcher = Watcher::start(&hotplug).unwrap();
    let events = hotplug.events();
    hotplug.cpu_down(1).unwrap();
    // The notice of the driver's own change wakes the watcher, which finds nothing to do.
    assert!(wait_from(&events, Source::Fake, WAIT, woke(1, CpuState::Offline)).is_some());
    assert!(hotplug.reconcile(hotplug::Source::Manual).unwrap().is_quiet());
    assert_eq!(log.take_for(1), [("down", "online"), ("down", "prepare")]);
    drop(watcher);
}

#[test]
fn starting_brings_the_states_into_line_with_the_machine() {
    let (fake, hotplug, log) = machine();
    // Changes that nobody watched.
    fake.set_online(3, CpuState::Offline).unwrap();
    let events = hotplug.events();
    let watcher = Watcher::start(&hotplug).unwrap();
    // The initial reconcile ran before start returned.
    assert_eq!(log.take_for(3), [("down", "online"), ("down", "prepare")]);
    assert!(events.try_iter().any(|event| event.source == Source::Initial
        && matches!(event.kind, EventKind::TransitionFinished { cpu: 3, reached: Rank::OFFLINE, .. })));
    watcher.stop();
}

#[test]
fn stopping_and_dropping_are_prompt() {
    let (_fake, hotplug, _log) = machine();
    for mode in [WatchMode::Fake, WatchMode::ReconcileOnly] {
        let watcher = Watcher::builder(&hotplug)
            .mode(mode)
            .reconcile_interval(Duration::from_secs(3600))
            .start()
            .unwrap();
        assert_eq!(watcher.mode(), mode);
        std::thread::sleep(Duration::from_millis(20));
        let started = Instant::now();
        watcher.stop();
        assert!(started.elapsed() < Duration::from_secs(1), "{mode:?} took {:?} to stop", started.elapsed());

        let watcher = Watcher::builder(&hotplug)
            .mode(mode)
            .reconcile_interval(Duration::from_secs(3600))
            .start()
            .unwrap();
        let started = Instant::now();
        drop(watcher);
        assert!(started.elapsed() < Duration::from_secs(1), "{mode:?} took {:?} to drop", started.elapsed());
    }
}

#[test]
fn polling_needs_a_sysfs_root() {
    // Also with --cfg numaslab_force_poll: a machine without files keeps its notices.
    let (_fake, hotplug, _log) = machine();
    let error = Watcher::builder(&hotplug).force_poll().start().unwrap_err();
    assert!(error.to_string().contains("has no sysfs root"), "{error}");
}

#[test]
fn a_periodic_reconcile_finds_what_no_notice_said() {
    // A machine watched only by periodic reconciles: the fake's notices are ignored, as if
    // every one were lost.
    let (fake, hotplug, log) = machine();
    let watcher = Watcher::builder(&hotplug)
        .mode(WatchMode::ReconcileOnly)
        .reconcile_interval(Duration::from_millis(10))
        .start()
        .unwrap();
    let events = hotplug.events();
    fake.set_online(1, CpuState::Offline).unwrap();
    assert!(wait_from(&events, Source::Reconcile, WAIT, finished(1, Rank::OFFLINE)).is_some());
    assert_eq!(log.take_for(1), [("down", "online"), ("down", "prepare")]);
    watcher.stop();
}
