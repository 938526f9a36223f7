//! End-to-end runs of the torture in this process, on fake and fixture machines.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use topology::{CpuState, FakeTopology};

use super::*;

/// Serializes the tests of this crate that run a torture or read the process's memory
/// figures: the memory check compares the whole process's peak RSS, which a run or a
/// test holding memory beside it would change.
pub(crate) fn one_at_a_time() -> MutexGuard<'static, ()> {
    static RUNS: Mutex<()> = Mutex::new(());
    RUNS.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Follow mode on the fake: a thread of the test plays the other program and switches
/// CPUs through the fake, whose notices wake the watcher; the report counts exactly
/// those transitions and every check passes.
#[test]
fn follow_on_the_fake_counts_the_transitions_another_thread_makes() {
    let _serial = one_at_a_time();
    let fake = Arc::new(FakeTopology::seed_box());
    let slab = NumaSlab::new(fake.clone()).unwrap();
    let config = TortureConfig {
        duration: Duration::from_secs(30),
        workers: 2,
        hotplug: HotplugDriver::Follow,
        ..TortureConfig::default()
    };
    let stop = AtomicBool::new(false);
    let progress = Progress::default();
    let report = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !progress.started.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
            }
            // Node 1 (CPUs 2 and 3) loses its last CPU and comes back, three times.
            for _ in 0..3 {
                for (cpu, state) in [
                    (3, CpuState::Offline),
                    (2, CpuState::Offline),
                    (3, CpuState::Online),
                    (2, CpuState::Online),
                ] {
                    let seen = progress.transitions.load(Ordering::Relaxed);
                    fake.set_online(cpu, state).unwrap();
                    // Wait until the follower counted it (a missed one fails the counts
                    // below after 10 s instead of hanging the test).
                    let deadline = std::time::Instant::now() + Duration::from_secs(10);
                    while progress.transitions.load(Ordering::Relaxed) == seen
                        && std::time::Instant::now() < deadline
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
        run(&slab, &config, &stop, &progress).unwrap()
    });
    let failed: Vec<&Check> = report.checks.iter().filter(|check| !check.passed).collect();
    assert!(report.checks_passed, "{failed:#?}");
    assert_eq!(report.watched.as_ref().map(|watched| watched.mode.as_str()), Some("fake"));
    let transitions = &report.transitions;
    assert_eq!(
        (transitions.attempted, transitions.done, transitions.failed),
        (12, 12, 0),
        "{transitions:#?}"
    );
    assert_eq!(
        (transitions.offline, transitions.online, transitions.nodes_emptied),
        (6, 6, 3),
        "{transitions:#?}"
    );
}

/// A CPU list that names CPUs the machine lacks, or cannot switch, is refused by name.
#[test]
fn hotplug_cpus_that_do_not_exist_or_cannot_switch_are_refused() {
    let seed_box = topology::FixtureTopology::seed_box().unwrap();
    assert_eq!(switchable_cpus(&seed_box).to_string(), "1-3", "the seed box has no cpu0/online");
    let error = check_hotplug_cpus(&seed_box, &"0-5".parse().unwrap()).unwrap_err().to_string();
    assert!(
        error.contains("cpu 4-5 does not exist") && error.contains("cpu 0 cannot be switched"),
        "{error}"
    );
    assert!(check_hotplug_cpus(&seed_box, &"1-3".parse().unwrap()).is_ok());
    let fake = FakeTopology::seed_box();
    assert_eq!(switchable_cpus(&fake).to_string(), "0-3", "the fake can switch every CPU");
}

fn memory_check(report: &Report) -> &Check {
    report.checks.iter().find(|check| check.name.starts_with("peak RSS")).expect("the memory check runs")
}

/// One test, two runs one after the other: the check compares the process's peak, so the
/// held memory of the second must not overlap the first.
#[test]
fn the_memory_check_passes_a_sound_run_and_fails_one_that_holds_memory() {
    let _serial = one_at_a_time();
    let slab = NumaSlab::new(Arc::new(FakeTopology::seed_box())).unwrap();
    let config = TortureConfig { duration: Duration::from_millis(300), ..TortureConfig::default() };
    let stop = AtomicBool::new(false);
    let sound = run(&slab, &config, &stop, &Progress::default()).unwrap();
    let check = memory_check(&sound);
    assert!(check.passed, "{}", check.detail);
    assert!(sound.peak_rss_bytes.is_some() && sound.memory_bound.start_bytes.is_some());
    assert!(sound.memory_bound.live_bytes > 0 && sound.memory_bound.limits_bytes > 0);

    let holding = TortureConfig { fault: Some(Fault::HoldMemory), ..config };
    let report = run(&slab, &holding, &stop, &Progress::default()).unwrap();
    let check = memory_check(&report);
    assert!(!check.passed, "{}", check.detail);
    assert!(check.detail.contains("exceeds bound"), "{}", check.detail);
    assert!(report.peak_rss_bytes.unwrap() >= HELD_BYTES as u64);
    assert!(!report.checks_passed);
    // Every other check still passes: the held memory is not the allocator's.
    let others: Vec<&Check> = report.checks.iter().filter(|c| !c.passed && c.name != check.name).collect();
    assert!(others.is_empty(), "{others:?}");
}
