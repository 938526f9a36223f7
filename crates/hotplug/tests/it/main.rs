//! Integration tests of the hotplug crate: watchers on the fake backend, polled fixture
//! trees, a property test of random transitions, a program that closes or replaces the
//! watcher's descriptors, and (opt-in) real CPU hotplug.

mod descriptors;
mod fake_watch;
mod fixture;
mod forged;
mod model;
mod real_linux;
mod support;
