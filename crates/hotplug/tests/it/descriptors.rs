//! A program that closes descriptors it did not open (`close_range`, `closefrom`) or puts
//! files of its own under the watcher's numbers: the watcher never reads, writes or
//! closes them, opens new descriptors of its own and goes on following uevents (or, if
//! it cannot open a socket, polls), and still stops at once.

use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hotplug::{wait_for_event, Event, EventKind, Hotplug, Rank, Slot, Source, WatchMode, Watcher};
use topology::{CpuState, FakeTopology, SysfsTopology};

use crate::fixture::{small_tree, write_online};
use crate::forged::send_to_port;
use crate::support::{finished, Log};

const FORGED: &[u8] =
    b"offline@/devices/system/cpu/cpu1\0ACTION=offline\0DEVPATH=/devices/system/cpu/cpu1\0SUBSYSTEM=cpu\0";
const CONTENT: &[u8] = b"the program's own file\n";

/// A uevent watcher of a fake machine, or `None` after saying why the test skips.
fn uevent_watcher(test: &str) -> Option<(Hotplug, Watcher)> {
    let hotplug = Hotplug::new(Arc::new(FakeTopology::seed_box())).unwrap();
    match Watcher::builder(&hotplug).mode(WatchMode::Uevent).start() {
        Ok(watcher) => Some((hotplug, watcher)),
        Err(error) => {
            println!("{test}: skipped: no uevent socket here: {error}");
            None
        }
    }
}

/// Asserts that each of `numbers` is close-on-exec, as everything the watcher opens is.
fn all_close_on_exec(numbers: &[RawFd]) {
    for &number in numbers {
        // SAFETY: F_GETFD reads a descriptor's flags and changes nothing.
        let flags = unsafe { libc::fcntl(number, libc::F_GETFD) };
        assert!(flags >= 0 && flags & libc::FD_CLOEXEC != 0, "descriptor {number}: flags {flags}");
    }
}

/// The `DescriptorLost` events of `count` descriptors, within five seconds.
fn lost(events: &crossbeam_channel::Receiver<Event>, count: usize) -> Vec<(&'static str, i32)> {
    let mut lost = Vec::new();
    while lost.len() < count {
        let Some(event) = wait_for_event(events, Duration::from_secs(5), |e| {
            matches!(e.kind, EventKind::DescriptorLost { .. })
        }) else {
            break;
        };
        if let EventKind::DescriptorLost { descriptor, number, .. } = event.kind {
            lost.push((descriptor, number));
        }
    }
    lost.sort_by_key(|&(_, number)| number);
    lost
}

/// Whether a forged uevent sent to the watcher's socket now is heard (and judged forged):
/// the socket it holds is live. `None` if this machine cannot send one.
fn hears(watcher: &Watcher, events: &crossbeam_channel::Receiver<Event>) -> Option<bool> {
    let port = watcher.uevent_port().expect("a uevent watcher has a port");
    if let Err(reason) = send_to_port(port, FORGED) {
        println!("cannot send a netlink uevent (needs CAP_NET_ADMIN): {reason}");
        return None;
    }
    Some(
        wait_for_event(events, Duration::from_secs(5), |e| matches!(e.kind, EventKind::Forged { .. }))
            .is_some(),
    )
}

#[test]
fn files_of_the_program_under_the_watchers_numbers_are_left_alone() {
    let Some((hotplug, watcher)) = uevent_watcher("files_of_the_program_under_the_watchers_numbers") else {
        return;
    };
    let events = hotplug.events();
    let numbers = watcher.descriptors();
    assert_eq!(numbers.len(), 3, "a socket and a pipe's two ends: {numbers:?}");
    all_close_on_exec(&numbers);
    // The program puts a file of its own, with content and an offset, under each number.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("own");
    let mut file = fs::File::create(&path).unwrap();
    file.write_all(CONTENT).unwrap();
    for &number in &numbers {
        // SAFETY: dup2 onto a number the watcher holds, as a program that does not know of
        // it would; the watcher must cope (that is the test).
        assert_eq!(unsafe { libc::dup2(file.as_raw_fd(), number) }, number);
    }
    let found = lost(&events, 3);
    let mut expected: Vec<RawFd> = numbers.clone();
    expected.sort_unstable();
    assert_eq!(found.iter().map(|&(_, number)| number).collect::<Vec<_>>(), expected, "{found:?}");
    let renewed = watcher.descriptors();
    assert!(
        renewed.iter().all(|number| !numbers.contains(number)),
        "new descriptors {renewed:?} beside {numbers:?}"
    );
    assert_eq!(renewed.len(), 3, "a new socket and pipe: {renewed:?}");
    all_close_on_exec(&renewed);
    if let Some(heard) = hears(&watcher, &events) {
        assert!(heard, "the new uevent socket hears nothing");
    }
    let stats = stop_promptly(watcher);
    assert_eq!(stats.lost_descriptors, 3, "{stats:?}");
    // Nothing was written to, read from or closed of the program's file.
    assert_eq!(fs::read(&path).unwrap(), CONTENT, "the file's content");
    for &number in &numbers {
        assert!(
            fs::read_link(format!("/proc/self/fd/{number}")).is_ok_and(|target| target == path),
            "descriptor {number} is still the program's file"
        );
        // SAFETY: lseek on the program's own descriptor, then close it.
        let offset = unsafe { libc::lseek(number, 0, libc::SEEK_CUR) };
        assert_eq!(offset, CONTENT.len() as libc::off_t, "descriptor {number}'s offset");
        // SAFETY: the test's own duplicate, closed once.
        unsafe { libc::close(number) };
    }
}

#[test]
fn closed_descriptors_are_replaced_and_uevents_still_heard() {
    let Some((hotplug, watcher)) = uevent_watcher("closed_descriptors_are_replaced") else { return };
    let events = hotplug.events();
    let numbers = watcher.descriptors();
    for &number in &numbers {
        // SAFETY: closes a number the watcher holds, as close_range(3, ~0U, 0) would.
        assert_eq!(unsafe { libc::close(number) }, 0);
    }
    // A descriptor closed while poll(2) waits on it wakes nothing (poll holds the file):
    // the losses are found at the next wake-up, a uevent or the reconcile within a second.
    assert_eq!(lost(&events, 3).len(), 3, "every closed descriptor is reported");
    assert_eq!(watcher.mode(), WatchMode::Uevent, "a new socket, not a fallback");
    if let Some(heard) = hears(&watcher, &events) {
        assert!(heard, "the new uevent socket hears nothing");
    }
    let stats = stop_promptly(watcher);
    assert_eq!(stats.lost_descriptors, 3, "{stats:?}");
}

#[test]
fn a_socket_that_cannot_be_reopened_leaves_the_watcher_polling() {
    let dir = tempfile::tempdir().unwrap();
    small_tree(dir.path());
    let hotplug = Hotplug::new(Arc::new(SysfsTopology::new(dir.path()).unwrap())).unwrap();
    let log = Log::default();
    hotplug.setup_state(Slot::OnlineDynamic, log.state("online")).unwrap();
    log.take();
    let watcher = match Watcher::builder(&hotplug)
        .mode(WatchMode::Uevent)
        .poll_interval(Duration::from_millis(5))
        // The wake-up that finds the socket closed.
        .reconcile_interval(Duration::from_millis(100))
        .start()
    {
        Ok(watcher) => watcher,
        Err(error) => {
            println!("a_socket_that_cannot_be_reopened: skipped: no uevent socket here: {error}");
            return;
        }
    };
    let events = hotplug.events();
    watcher.refuse_new_sockets();
    let socket = watcher.descriptors()[0];
    // SAFETY: closes the watcher's socket, as close_range(3, ~0U, 0) would.
    assert_eq!(unsafe { libc::close(socket) }, 0);
    let said = wait_for_event(
        &events,
        Duration::from_secs(5),
        |e| matches!(&e.kind, EventKind::DescriptorLost { number, .. } if *number == socket),
    );
    let Some(Event { kind: EventKind::DescriptorLost { descriptor, outcome, .. }, .. }) = said else {
        panic!("the closed socket was not reported: {said:?}")
    };
    assert_eq!(descriptor, "uevent socket");
    assert!(outcome.contains("polling the online files instead"), "{outcome}");
    assert_eq!(watcher.mode(), WatchMode::Poll);
    assert_eq!(watcher.uevent_port(), None);
    // The fixture's files are polled: a CPU written offline runs its teardown, found by
    // the poll (or, if the write falls between a poll and a periodic reconcile, by that).
    write_online(dir.path(), 2, CpuState::Offline);
    let offline = finished(2, Rank::OFFLINE);
    let done = wait_for_event(&events, Duration::from_secs(5), |e| offline(&e.kind)).expect("cpu 2 offline");
    assert!(matches!(done.source, Source::Poll | Source::Reconcile), "{done:?}");
    assert_eq!(log.take_for(2), [("down", "online")]);
    watcher.stop();
}

/// Stops the watcher, which must take well under a second: a stop that waited for the
/// next reconcile would mean the wake-up pipe was lost and not replaced.
fn stop_promptly(watcher: Watcher) -> hotplug::WatchStats {
    let started = Instant::now();
    let stats = watcher.stop();
    assert!(started.elapsed() < Duration::from_millis(500), "the stop took {:?}", started.elapsed());
    stats
}
