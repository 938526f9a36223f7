//! Observable events: every state entered and left, every callback's duration, every
//! failure, and every wake-up of the watcher, with the source that caused it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use topology::{CpuId, OnlineChange};

use crate::state::Rank;
use crate::sync::{lock, AtomicU64, Mutex, Ordering};

/// What set a transition off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// A kernel uevent (`NETLINK_KOBJECT_UEVENT`) woke the watcher.
    Uevent,
    /// Polling the sysfs `online` files found a change.
    Poll,
    /// A watcher's periodic reconcile, run when nothing woke it for a reconcile interval
    /// (in every mode: it is what finds a change whose uevent or notice was lost).
    Reconcile,
    /// The fake backend announced a change directly.
    Fake,
    /// [`crate::Hotplug::cpu_up`] or [`crate::Hotplug::cpu_down`].
    Driver,
    /// Registering or removing a state.
    Registration,
    /// A watcher bringing the states into line with the machine when it starts.
    Initial,
    /// An explicit call of [`crate::Hotplug::reconcile`].
    Manual,
}

impl Source {
    /// A short lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Uevent => "uevent",
            Source::Poll => "poll",
            Source::Reconcile => "reconcile",
            Source::Fake => "fake",
            Source::Driver => "driver",
            Source::Registration => "registration",
            Source::Initial => "initial",
            Source::Manual => "manual",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a transition of one CPU ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every callback on the way ran; the CPU is at the target.
    Completed,
    /// A startup failed and the CPU was rolled back to where it started.
    RolledBack,
}

/// What happened.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum EventKind {
    /// A watcher source woke the reconciler; `reported` is what the source claimed, which
    /// is only a hint (the `online` files are the truth).
    Wakeup {
        /// The change the source reported, if it named one.
        reported: Option<OnlineChange>,
    },
    /// Something a watcher did not act on: a kernel uevent about something other than a
    /// CPU going online or offline, a malformed uevent, an error of the uevent socket, or
    /// a reconcile that failed.
    Ignored {
        /// Why, in words.
        reason: String,
    },
    /// A uevent whose sender is not the kernel (its netlink port is not 0), ignored as
    /// udev ignores them since CVE-2009-1185.
    Forged {
        /// The sender's netlink port.
        port: u32,
    },
    /// The uevent socket overflowed (`ENOBUFS`): uevents were lost, so a full reconcile
    /// follows.
    Overflow,
    /// A descriptor of the watcher's was closed or replaced by the program (as
    /// `close_range(3, ~0U, 0)` or `closefrom` do to descriptors they did not open): the
    /// watcher let its number go, never to read, write or close it again, and opened a new
    /// one or, for a uevent socket it could not reopen, fell back to polling. A reconcile
    /// follows, for the changes it may have missed.
    DescriptorLost {
        /// What it was: `uevent socket`, `wake-up pipe (read end)` or `(write end)`.
        descriptor: &'static str,
        /// Its number, which is the program's now, or nobody's.
        number: i32,
        /// What the watcher did instead, in words.
        outcome: String,
    },
    /// A CPU starts moving from one rank to another.
    TransitionStarted {
        /// The CPU.
        cpu: CpuId,
        /// Where it is.
        from: Rank,
        /// Where it goes.
        to: Rank,
    },
    /// A state came up on a CPU (its startup, if any, succeeded).
    StateEntered {
        /// The CPU.
        cpu: CpuId,
        /// The state's name.
        state: Arc<str>,
        /// The state's rank.
        rank: Rank,
        /// How long the startup took; `None` for a state without one.
        duration: Option<Duration>,
    },
    /// A state went down on a CPU (its teardown, if any, ran).
    StateLeft {
        /// The CPU.
        cpu: CpuId,
        /// The state's name.
        state: Arc<str>,
        /// The state's rank.
        rank: Rank,
        /// How long the teardown took; `None` for a state without one.
        duration: Option<Duration>,
    },
    /// A startup failed (or a teardown panicked, which is caught and reported here).
    CallbackFailed {
        /// The CPU.
        cpu: CpuId,
        /// The state's name.
        state: Arc<str>,
        /// The state's rank.
        rank: Rank,
        /// How long the callback ran.
        duration: Duration,
        /// The error, in words.
        error: String,
    },
    /// A CPU finished moving.
    TransitionFinished {
        /// The CPU.
        cpu: CpuId,
        /// The rank it is at now.
        reached: Rank,
        /// Whether it reached the target.
        outcome: Outcome,
    },
}

/// One observable event.
#[derive(Debug, Clone)]
pub struct Event {
    /// Increases by one per event of this machine.
    pub seq: u64,
    /// When it happened.
    pub at: Instant,
    /// What set it off.
    pub source: Source,
    /// What happened.
    pub kind: EventKind,
}

impl Event {
    /// The CPU the event is about, if one.
    pub fn cpu(&self) -> Option<CpuId> {
        match &self.kind {
            EventKind::Wakeup { reported } => reported.map(|change| change.cpu),
            EventKind::Ignored { .. }
            | EventKind::Forged { .. }
            | EventKind::Overflow
            | EventKind::DescriptorLost { .. } => None,
            EventKind::TransitionStarted { cpu, .. }
            | EventKind::StateEntered { cpu, .. }
            | EventKind::StateLeft { cpu, .. }
            | EventKind::CallbackFailed { cpu, .. }
            | EventKind::TransitionFinished { cpu, .. } => Some(*cpu),
        }
    }
}

/// A function called with each event, on the thread that caused it, with the transition
/// lock held: it must be quick and must not call back into the machine (that is refused).
pub type EventFn = dyn Fn(&Event) + Send + Sync;

/// The channels and functions events go to.
#[derive(Default)]
pub(crate) struct Observers {
    seq: AtomicU64,
    channels: Mutex<Vec<Sender<Event>>>,
    functions: Mutex<Vec<Arc<EventFn>>>,
}

impl fmt::Debug for Observers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observers")
            .field("seq", &self.seq.load(Ordering::Relaxed))
            .field("channels", &lock(&self.channels).len())
            .field("functions", &lock(&self.functions).len())
            .finish()
    }
}

impl Observers {
    /// A new unbounded channel of every later event.
    pub(crate) fn subscribe(&self) -> Receiver<Event> {
        let (tx, rx) = crossbeam_channel::unbounded();
        lock(&self.channels).push(tx);
        rx
    }

    /// Calls `function` with every later event.
    pub(crate) fn on_event(&self, function: Arc<EventFn>) {
        lock(&self.functions).push(function);
    }

    /// Sends an event to every observer; channels whose receiver is gone are dropped.
    pub(crate) fn emit(&self, source: Source, kind: EventKind) {
        let event = Event { seq: self.seq.fetch_add(1, Ordering::Relaxed), at: Instant::now(), source, kind };
        let functions: Vec<Arc<EventFn>> = lock(&self.functions).clone();
        for function in functions {
            // An observer's panic must not unwind through a transition half done.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| function(&event)));
        }
        lock(&self.channels).retain(|tx| tx.send(event.clone()).is_ok());
    }
}
