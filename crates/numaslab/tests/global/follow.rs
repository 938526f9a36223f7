//! `NumaSlabAlloc::follow_hotplug`: one watcher per process, whatever the number of
//! callers, its thread blocking every signal, and (opt-in) the allocator's own hotplug
//! states following cpu1 switched outside it. Each test runs in a child process (this
//! binary again, with `NUMASLAB_FOLLOW_CHILD` set), so that the watcher thread it
//! starts lives apart from the other tests.

use std::fs;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use numaslab::hotplug::{wait_for_event, EventKind, Rank, Source, WatchMode, Watcher};

use crate::GLOBAL;

const CHILD: &str = "NUMASLAB_FOLLOW_CHILD";
const CPU1_ONLINE: &str = "/sys/devices/system/cpu/cpu1/online";

/// Whether this process is the child that runs `test`'s body.
fn is_child(test: &str) -> bool {
    std::env::var(CHILD).as_deref() == Ok(test)
}

/// Runs `test` alone in a child process and asserts that it ran and passed.
fn in_child(test: &str) {
    let output = Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", &format!("follow::{test}"), "--nocapture", "--test-threads=1"])
        .env(CHILD, test)
        .output()
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{test} in a child: {}\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("1 passed"), "{test} ran in the child: {stdout}");
}

/// The threads of this process named `hotplug-watcher` (waiting up to five seconds for
/// a new one to name itself), with their blocked-signal masks.
fn watcher_threads(expected: usize) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut masks = Vec::new();
        for task in fs::read_dir("/proc/self/task").expect("/proc/self/task").flatten() {
            let path = task.path();
            if fs::read_to_string(path.join("comm")).is_ok_and(|name| name == "hotplug-watcher\n") {
                let status = fs::read_to_string(path.join("status")).unwrap_or_default();
                let mask = status
                    .lines()
                    .find_map(|line| line.strip_prefix("SigBlk:"))
                    .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
                    .unwrap_or(0);
                masks.push(mask);
            }
        }
        if masks.len() >= expected || Instant::now() > deadline {
            return masks;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn address(watcher: &'static Watcher) -> usize {
    std::ptr::from_ref(watcher) as usize
}

/// Eight threads ask at once: one watcher starts, all get it, and its thread blocks the
/// program's signals.
#[test]
fn follow_hotplug_starts_one_watcher_for_the_process() {
    if !is_child("follow_hotplug_starts_one_watcher_for_the_process") {
        return in_child("follow_hotplug_starts_one_watcher_for_the_process");
    }
    assert!(GLOBAL.watcher().is_none(), "no watcher before the first call");
    let barrier = Arc::new(Barrier::new(8));
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                GLOBAL.follow_hotplug().map(address).map_err(|error| error.to_string())
            })
        })
        .collect();
    let started: Vec<usize> =
        callers.into_iter().map(|caller| caller.join().expect("a caller").expect("follow_hotplug")).collect();
    assert!(started.iter().all(|&watcher| watcher == started[0]), "one watcher for all: {started:x?}");
    let watcher = GLOBAL.watcher().expect("the watcher is kept");
    assert_eq!(address(watcher), started[0]);
    assert_eq!(GLOBAL.follow_hotplug().map(address).ok(), Some(started[0]), "a later call");
    assert_ne!(watcher.mode(), WatchMode::Auto);
    let masks = watcher_threads(1);
    assert_eq!(masks.len(), 1, "one hotplug-watcher thread");
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGCHLD, libc::SIGUSR1] {
        assert!(masks[0] >> (signal - 1) & 1 == 1, "signal {signal} blocked in {:x}", masks[0]);
    }
}

/// Another program (here, a write to sysfs the allocator does not make) takes cpu1
/// offline and back: the watcher `follow_hotplug` started runs the global allocator's
/// own hotplug states both ways.
#[test]
fn follow_hotplug_follows_cpu1_switched_outside_the_allocator() {
    if !is_child("follow_hotplug_follows_cpu1_switched_outside_the_allocator") {
        // The child switches cpu1 under this process's lock; it takes none itself.
        let Some(_guard) = crate::real_linux::Cpu1Guard::acquire(
            "follow_hotplug_follows_cpu1_switched_outside_the_allocator",
        ) else {
            return;
        };
        return in_child("follow_hotplug_follows_cpu1_switched_outside_the_allocator");
    }
    GLOBAL.follow_hotplug().expect("follow_hotplug");
    let hotplug = GLOBAL.machinery().expect("up").numaslab.hotplug();
    let events = hotplug.events();
    for (text, rank) in [("0", Rank::OFFLINE), ("1", Rank::ONLINE)] {
        fs::write(CPU1_ONLINE, text).expect("switch cpu1");
        let followed = wait_for_event(&events, Duration::from_secs(10), |event| {
            matches!(event.source, Source::Uevent | Source::Poll | Source::Reconcile)
                && matches!(event.kind, EventKind::TransitionFinished { cpu: 1, reached, .. } if reached == rank)
        });
        assert!(followed.is_some(), "cpu1 {text}: the allocator's states did not follow");
    }
    assert!(hotplug.online_view().contains(1), "cpu1 online again in the allocator's view");
}
