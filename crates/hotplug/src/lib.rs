//! A user-space counterpart of the kernel's CPU-hotplug state machine (`kernel/cpu.c`,
//! `Documentation/core-api/cpu_hotplug.rst`): named states in a fixed order, each with an
//! optional startup and teardown callback, run in a guaranteed order as CPUs come and go.
//!
//! - [`Hotplug`] is the machine: register states ([`Hotplug::setup_state`]), drive CPUs
//!   ([`Hotplug::cpu_up`], [`Hotplug::cpu_down`]), reconcile with the machine
//!   ([`Hotplug::reconcile`]), observe [`Event`]s, inject faults.
//! - [`Watcher`] is a thread that wakes on kernel uevents, on changes of the polled sysfs
//!   `online` files, or on the fake backend's notices, and reconciles each time and
//!   periodically. The `online` files (through [`topology::Topology::online_cpus`]) are the
//!   truth; what woke the watcher is only a hint.
//!
//! The crate knows nothing of what the callbacks do; it depends on `topology` alone.
//!
//! ```
//! use std::sync::Arc;
//! use hotplug::{CallbackError, Hotplug, Slot, State, Watcher};
//! use topology::FakeTopology;
//!
//! let topology = Arc::new(FakeTopology::seed_box());
//! let machine = Hotplug::new(topology.clone())?;
//! machine.setup_state(
//!     Slot::PrepareDynamic,
//!     State::new("demo:prepare").startup(|_cpu| Ok::<(), CallbackError>(())).teardown(|_cpu| {}),
//! )?;
//! let watcher = Watcher::start(&machine)?;
//! machine.cpu_down(3)?;
//! assert!(!machine.online_view().contains(3));
//! machine.cpu_up(3)?;
//! watcher.stop();
//! # Ok::<(), hotplug::Error>(())
//! ```

// The syscalls (netlink socket, pipe, fstat, poll) go through rustix: nothing here needs unsafe.
#![forbid(unsafe_code)]

mod descriptor;
mod error;
mod events;
mod poll;
mod state;
mod state_machine;
mod sync;
#[cfg(feature = "testing")]
mod testing;
mod uevent;
mod watcher;

pub use crate::error::{CallbackError, Error, Result, UeventError};
pub use crate::events::{Event, EventFn, EventKind, Outcome, Source};
pub use crate::state::{Callbacks, Rank, Section, Slot, StartupFn, State, StateId, TeardownFn};
pub use crate::state_machine::{Hotplug, Reconciled, StateInfo};
#[cfg(feature = "testing")]
pub use crate::testing::wait_for_event;
pub use crate::uevent::{classify, Uevent, Verdict, KERNEL_GROUP};
pub use crate::watcher::{
    WatchMode, WatchStats, Watcher, WatcherBuilder, DEFAULT_POLL_INTERVAL, DEFAULT_RECONCILE_INTERVAL,
};
