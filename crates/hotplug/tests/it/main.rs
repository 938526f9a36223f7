//! Integration tests of the hotplug crate: watchers on the fake backend, polled fixture
//! trees, a property test of random transitions, and (opt-in) real CPU hotplug.

mod fake_watch;
mod fixture;
mod forged;
mod model;
mod real_linux;
mod support;
