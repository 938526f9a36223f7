//! Shared helpers: a callback log and event waits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::Receiver;
use hotplug::{wait_for_event, CallbackError, Event, EventKind, Rank, Source, State};
use topology::{CpuId, CpuState};

/// Whether a call was a startup or a teardown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Up,
    Down,
}

/// One callback call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Call {
    pub(crate) kind: Kind,
    pub(crate) state: &'static str,
    pub(crate) cpu: CpuId,
}

/// Records every callback call of the states it makes.
#[derive(Clone, Default)]
pub(crate) struct Log(Arc<Mutex<Vec<Call>>>);

impl Log {
    pub(crate) fn state(&self, name: &'static str) -> State {
        let (up, down) = (self.clone(), self.clone());
        State::new(name)
            .startup(move |cpu| {
                up.push(Kind::Up, name, cpu);
                Ok::<(), CallbackError>(())
            })
            .teardown(move |cpu| down.push(Kind::Down, name, cpu))
    }

    fn push(&self, kind: Kind, state: &'static str, cpu: CpuId) {
        self.0.lock().unwrap().push(Call { kind, state, cpu });
    }

    pub(crate) fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// The calls as ("up"/"down", state) for one CPU.
    pub(crate) fn take_for(&self, cpu: CpuId) -> Vec<(&'static str, &'static str)> {
        self.take()
            .into_iter()
            .filter(|call| call.cpu == cpu)
            .map(|call| (if call.kind == Kind::Up { "up" } else { "down" }, call.state))
            .collect()
    }
}

/// The end of a transition of `cpu` to `reached`, for [`wait_from`].
pub(crate) fn finished(cpu: CpuId, reached: Rank) -> impl Fn(&EventKind) -> bool {
    move |kind| matches!(*kind, EventKind::TransitionFinished { cpu: c, reached: r, .. } if c == cpu && r == reached)
}

/// A wake-up reporting that `cpu` went to `state`, for [`wait_from`].
pub(crate) fn woke(cpu: CpuId, state: CpuState) -> impl Fn(&EventKind) -> bool {
    move |kind| matches!(*kind, EventKind::Wakeup { reported: Some(change) } if change.cpu == cpu && change.state == state)
}

/// Waits for an event caused by `source` whose kind `want` accepts.
pub(crate) fn wait_from(
    events: &Receiver<Event>,
    source: Source,
    timeout: Duration,
    want: impl Fn(&EventKind) -> bool,
) -> Option<Event> {
    wait_for_event(events, timeout, |event| event.source == source && want(&event.kind))
}
