//! End-to-end tests of the `numaslab` binary.

mod bad_input;
mod follow_command;
mod real_hotplug;
mod real_lock;
mod support;
mod topology_command;
mod torture_command;
mod watch_command;
