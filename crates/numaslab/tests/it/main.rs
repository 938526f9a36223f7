//! End-to-end tests of the `numaslab` binary.

mod topology_command;
