//! Following CPU hotplug: a `hotplug::Watcher` thread per process
//! (`NumaSlabAlloc::follow_hotplug`), started by the library's constructor and, in a
//! forked child (which has no thread but the one that called `fork`), by the child's
//! first allocation once its own allocator is up, as jemalloc starts its background
//! threads lazily from an allocation.
//!
//! A state word makes the start happen once and never recursively: the allocations of
//! the start itself (the thread's stack bookkeeping, `pthread_create`'s thread-local
//! storage, the watcher's buffers) see it `STARTING` and go by. The new thread blocks
//! every signal (`follow_hotplug` starts it with them all blocked), so that no signal meant for the program's own
//! threads is delivered to it, and a program that blocks a signal in all its threads to
//! read it from a `signalfd` or `sigwait` still has it blocked in all of them.
//!
//! The watcher's descriptors (its uevent socket, its wake-up pipe) sit in the program's
//! table, where a program that closes every descriptor it did not open (`close_range(3,
//! ~0U, 0)`, `closefrom`, a daemon) can take their numbers back: the watcher checks each
//! before each use, never touches one that became the program's, and opens new ones
//! (`hotplug`'s `descriptor.rs`). Each such loss is counted for the stats line and, in
//! debug mode, said on stderr.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use hotplug::{EventKind, Source, WatchMode};
use numaslab::NumaSlabAlloc;

/// `NUMASLAB_WATCH=0`: this process does not follow hotplug.
const OFF: u8 = 0;
/// A watcher is to be started by the next allocation that finds the allocator up.
const WANTED: u8 = 1;
/// One is being started (by the thread that moved the state here).
const STARTING: u8 = 2;
/// This process's watcher runs.
const RUNNING: u8 = 3;
/// It could not be started (said on stderr in debug mode).
const FAILED: u8 = 4;

static STATE: AtomicU8 = AtomicU8::new(OFF);

/// CPU transitions this process's watcher followed (a CPU that went offline or came
/// online after it started), for `NUMASLAB_SHOW_STATS`.
static FOLLOWED: AtomicU64 = AtomicU64::new(0);

/// Descriptors of the watcher's that the program closed or replaced, and that the
/// watcher let go and opened anew, for `NUMASLAB_SHOW_STATS`.
static LOST: AtomicU64 = AtomicU64::new(0);

/// Asks for a watcher (the constructor, unless `NUMASLAB_WATCH=0`).
pub(crate) fn want() {
    STATE.store(WANTED, Ordering::Release);
}

/// `pthread_atfork`'s child handler: the parent's watcher did not come along, so the
/// child wants its own, which its first allocation starts. Nothing else happens here:
/// starting a thread before the child's allocator is up (or in a child that only goes on
/// to `exec`) would be wasted.
pub(crate) fn fork_child() {
    FOLLOWED.store(0, Ordering::Relaxed);
    LOST.store(0, Ordering::Relaxed);
    if STATE.load(Ordering::Relaxed) != OFF {
        STATE.store(WANTED, Ordering::Release);
    }
}

/// Called after every allocation: one load, and a start only when one is wanted.
#[inline(always)]
pub(crate) fn after_allocation(alloc: &'static NumaSlabAlloc) {
    if STATE.load(Ordering::Relaxed) == WANTED {
        start(alloc);
    }
}

/// Starts the watcher if one is wanted and the allocator is up. Cold: a watcher is
/// wanted once per process (and once in each forked child), so after the first
/// allocations that find it wanted, nothing comes here.
#[cold]
#[inline(never)]
pub(crate) fn start(alloc: &'static NumaSlabAlloc) {
    // Not up yet (this allocation came from the bootstrap arena): a later one starts it.
    let Some(machinery) = alloc.machinery() else { return };
    if STATE.compare_exchange(WANTED, STARTING, Ordering::AcqRel, Ordering::Relaxed).is_err() {
        return;
    }
    let hotplug = machinery.numaslab.hotplug();
    let debug = crate::env_is("NUMASLAB_DEBUG", "1");
    hotplug.on_event(move |event| {
        let followed = matches!(event.source, Source::Uevent | Source::Poll | Source::Reconcile);
        match &event.kind {
            EventKind::TransitionFinished { .. } if followed => {
                FOLLOWED.fetch_add(1, Ordering::Relaxed);
            }
            EventKind::DescriptorLost { descriptor, number, outcome } => {
                LOST.fetch_add(1, Ordering::Relaxed);
                if debug {
                    crate::say(&format!(
                        "numaslab-malloc[{}]: hotplug watcher: descriptor {number} ({descriptor}) was closed or \
                         replaced by the program; left alone, {outcome}",
                        std::process::id()
                    ));
                }
            }
            _ => {}
        }
    });
    match alloc.follow_hotplug() {
        Ok(_) => STATE.store(RUNNING, Ordering::Release),
        Err(error) => {
            if crate::env_is("NUMASLAB_DEBUG", "1") {
                eprintln!("numaslab-malloc: not following CPU hotplug: {error}");
            }
            STATE.store(FAILED, Ordering::Release);
        }
    }
}

/// One line for `NUMASLAB_SHOW_STATS`.
pub(crate) fn report(alloc: &NumaSlabAlloc) -> String {
    let followed = FOLLOWED.load(Ordering::Relaxed);
    let lost = match LOST.load(Ordering::Relaxed) {
        0 => String::new(),
        lost => format!(", {lost} lost descriptors replaced"),
    };
    match (STATE.load(Ordering::Acquire), alloc.watcher()) {
        (RUNNING, Some(watcher)) => {
            let mode = match watcher.mode() {
                WatchMode::Uevent => "uevents",
                WatchMode::Poll => "polling",
                WatchMode::Fake => "fake notices",
                WatchMode::ReconcileOnly | WatchMode::Auto => "periodic reconciles",
            };
            format!("hotplug watcher ({mode}): {followed} CPU transitions followed{lost}")
        }
        (OFF, _) => "no hotplug watcher (NUMASLAB_WATCH=0)".to_owned(),
        (FAILED, _) => "no hotplug watcher (it could not start)".to_owned(),
        _ => "no hotplug watcher (not started yet)".to_owned(),
    }
}
