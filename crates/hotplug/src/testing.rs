//! What tests and tools that follow transitions from outside need, behind the `testing`
//! feature so that it stays out of the state machine's API.

use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::events::Event;

/// Waits on `events` until one matches `want` or `timeout` passes; for tests and tools
/// that follow a transition from outside.
pub fn wait_for_event(
    events: &Receiver<Event>,
    timeout: Duration,
    mut want: impl FnMut(&Event) -> bool,
) -> Option<Event> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match events.recv_timeout(left) {
            Ok(event) if want(&event) => return Some(event),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}
