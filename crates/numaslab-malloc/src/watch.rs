//! Following CPU hotplug: a `hotplug::Watcher` thread per process, started by the
//! library's constructor and, in a forked child (which has no thread but the one that
//! called `fork`), by the child's first allocation once its own allocator is up, as
//! jemalloc starts its background threads lazily from an allocation.
//!
//! A state word makes the start happen once and never recursively: the allocations of
//! the start itself (the thread's stack bookkeeping, `pthread_create`'s thread-local
//! storage, the watcher's buffers) see it `STARTING` and go by. The new thread blocks
//! every signal (it inherits the mask of the thread that starts it, which blocks them
//! all for the moment of the start), so that no signal meant for the program's own
//! threads is delivered to it, and a program that blocks a signal in all its threads to
//! read it from a `signalfd` or `sigwait` still has it blocked in all of them.
//!
//! The watcher's descriptors (its uevent socket, its wake-up pipe) sit in the program's
//! table, where a program that closes every descriptor it did not open (`close_range(3,
//! ~0U, 0)`, `closefrom`, a daemon) can take their numbers back: the watcher checks each
//! before each use, never touches one that became the program's, and opens new ones
//! (`hotplug`'s `descriptor.rs`). Each such loss is counted for the stats line and, in
//! debug mode, said on stderr.

use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, Ordering};

use hotplug::{EventKind, Source, WatchMode, Watcher};
use numaslab::Machinery;

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

/// This process's watcher, leaked: it runs for the life of the process. A forked child
/// overwrites its parent's (which belongs to a thread the child does not have, and so is
/// never stopped or dropped).
static WATCHER: AtomicPtr<Watcher> = AtomicPtr::new(std::ptr::null_mut());

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
pub(crate) fn after_allocation(machinery: impl FnOnce() -> Option<&'static Machinery>) {
    if STATE.load(Ordering::Relaxed) == WANTED {
        start(machinery);
    }
}

/// Starts the watcher if one is wanted and the allocator is up. Cold: a watcher is
/// wanted once per process (and once in each forked child), so after the first
/// allocations that find it wanted, nothing comes here.
#[cold]
#[inline(never)]
pub(crate) fn start(machinery: impl FnOnce() -> Option<&'static Machinery>) {
    // Not up yet (this allocation came from the bootstrap arena): a later one starts it.
    let Some(machinery) = machinery() else { return };
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
    match with_signals_blocked(|| Watcher::start(hotplug)) {
        Ok(watcher) => {
            WATCHER.store(Box::into_raw(Box::new(watcher)), Ordering::Release);
            STATE.store(RUNNING, Ordering::Release);
        }
        Err(error) => {
            if crate::env_is("NUMASLAB_DEBUG", "1") {
                eprintln!("numaslab-malloc: not following CPU hotplug: {error}");
            }
            STATE.store(FAILED, Ordering::Release);
        }
    }
}

/// Runs `f` with every signal blocked in the calling thread (glibc keeps the two it
/// needs for cancellation and `setxid` unblocked), so that a thread it starts begins
/// with them all blocked; the caller's mask is restored after.
fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: sigset_t is plain data, valid zeroed; sigfillset initialises it.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both sets are valid for writing; pthread_sigmask affects this thread only.
    let blocked = unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old) == 0
    };
    let result = f();
    if blocked {
        // SAFETY: old is the mask read above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    }
    result
}

/// One line for `NUMASLAB_SHOW_STATS`.
pub(crate) fn report() -> String {
    let followed = FOLLOWED.load(Ordering::Relaxed);
    let lost = match LOST.load(Ordering::Relaxed) {
        0 => String::new(),
        lost => format!(", {lost} lost descriptors replaced"),
    };
    match STATE.load(Ordering::Acquire) {
        RUNNING => {
            // SAFETY: RUNNING is published after the pointer, which is never freed.
            let mode = match unsafe { &*WATCHER.load(Ordering::Acquire) }.mode() {
                WatchMode::Uevent => "uevents",
                WatchMode::Poll => "polling",
                WatchMode::Fake => "fake notices",
                WatchMode::ReconcileOnly | WatchMode::Auto => "periodic reconciles",
            };
            format!("hotplug watcher ({mode}): {followed} CPU transitions followed{lost}")
        }
        OFF => "no hotplug watcher (NUMASLAB_WATCH=0)".to_owned(),
        FAILED => "no hotplug watcher (it could not start)".to_owned(),
        _ => "no hotplug watcher (not started yet)".to_owned(),
    }
}
