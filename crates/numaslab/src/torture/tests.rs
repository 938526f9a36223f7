use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use topology::{CpuState, FakeTopology};

use super::*;

/// Follow mode on the fake: a thread of the test plays the other program and switches
/// CPUs through the fake, whose notices wake the watcher; the report counts exactly
/// those transitions and every check passes.
#[test]
fn follow_on_the_fake_counts_the_transitions_another_thread_makes() {
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
