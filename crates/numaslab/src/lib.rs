//! numaslab: a NUMA-aware, CPU-hotplug-aware slab allocator.
//!
//! This facade is the only crate that knows all three parts: it re-exports [`topology`],
//! [`slab_core`] and [`hotplug`], and [`NumaSlab`] registers the allocator's CPU bring-up
//! and teardown as hotplug states, so that a program gets a hotplug-aware allocator on
//! any backend in a few lines:
//!
//! ```
//! use std::sync::Arc;
//! use numaslab::{NumaSlab, topology::FakeTopology, slab_core::CacheFlags};
//!
//! let slab = NumaSlab::new(Arc::new(FakeTopology::seed_box()))?;
//! let connections = slab.allocator().create_typed::<[u8; 64]>("connections", CacheFlags::NONE)?;
//! let buffer = connections.alloc([0; 64])?;
//! slab.cpu_down(3)?; // CPU 3's caches are drained; `buffer` stays valid
//! drop(buffer);
//! slab.cpu_up(3)?;
//! # Ok::<(), numaslab::Error>(())
//! ```
//!
//! The seed's torture test is [`torture`], behind the `torture` feature (the `numaslab`
//! command, package `numaslab-cli`, turns it on).

mod error;
mod global;
#[cfg(feature = "torture")]
pub mod torture;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use hotplug;
pub use slab_core;
pub use topology;

use hotplug::{EventKind, Hotplug, Slot, State, StateId};
use slab_core::Allocator;
use topology::{CpuId, CpuState, Topology};

pub use crate::error::{Error, Result};
pub use crate::global::{Machinery, NumaSlabAlloc, MAX_DEPTH};

/// One completed CPU transition, as the facade's drivers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The CPU.
    pub cpu: CpuId,
    /// The state it reached.
    pub state: CpuState,
    /// Time spent in the allocator's callbacks (zero when the CPU was already there).
    pub callbacks: Duration,
}

/// An allocator wired to the hotplug state machine of one machine.
///
/// Two hotplug states carry the allocator's CPU rules, as the kernel registers its slab
/// callbacks: `slab:prepare` in the prepare section (startup = [`Allocator::cpu_up_prepare`],
/// teardown = [`Allocator::cpu_dead`]) and `slab:online` in the online section (startup =
/// [`Allocator::cpu_online`], teardown = [`Allocator::cpu_down_prepare`]).
pub struct NumaSlab {
    topology: Arc<dyn Topology>,
    allocator: Arc<Allocator>,
    hotplug: Hotplug,
    states: [StateId; 2],
    /// Callback time of the last finished transition of each CPU, from hotplug events.
    last_callbacks: Arc<Mutex<CallbackClock>>,
}

impl std::fmt::Debug for NumaSlab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NumaSlab")
            .field("machine", &self.topology.name())
            .field("states", &self.states)
            .finish()
    }
}

/// Sums callback durations per CPU between `TransitionStarted` and `TransitionFinished`.
#[derive(Debug, Default)]
struct CallbackClock {
    running: HashMap<CpuId, Duration>,
    finished: HashMap<CpuId, Duration>,
}

impl CallbackClock {
    fn observe(&mut self, kind: &EventKind) {
        match kind {
            EventKind::TransitionStarted { cpu, .. } => {
                self.running.insert(*cpu, Duration::ZERO);
            }
            EventKind::StateEntered { cpu, duration: Some(spent), .. }
            | EventKind::StateLeft { cpu, duration: Some(spent), .. }
            | EventKind::CallbackFailed { cpu, duration: spent, .. } => {
                *self.running.entry(*cpu).or_default() += *spent;
            }
            EventKind::TransitionFinished { cpu, .. } => {
                let spent = self.running.remove(cpu).unwrap_or_default();
                self.finished.insert(*cpu, spent);
            }
            _ => {}
        }
    }
}

impl NumaSlab {
    /// An allocator for `topology` with its CPU callbacks registered; every CPU online now
    /// is prepared.
    pub fn new(topology: Arc<dyn Topology>) -> Result<Arc<Self>> {
        let allocator = Allocator::new(topology.clone());
        let hotplug = Hotplug::new(topology.clone())?;
        let last_callbacks = Arc::new(Mutex::new(CallbackClock::default()));
        let clock = last_callbacks.clone();
        hotplug.on_event(move |event| {
            clock.lock().unwrap_or_else(|poison| poison.into_inner()).observe(&event.kind);
        });
        // With calls, although `Allocator::new` prepared the CPUs online when it read the
        // machine: preparing a CPU again installs nothing, and a CPU that came online
        // since (a real machine's hotplug does not wait for us) is in the state machine's
        // view now and must be prepared before the online state's startup runs on it.
        let prepare = hotplug.setup_state(Slot::PrepareDynamic, {
            let (up, down) = (allocator.clone(), allocator.clone());
            State::new("slab:prepare")
                .startup(move |cpu| up.cpu_up_prepare(cpu).map_err(hotplug::CallbackError::other))
                .teardown(move |cpu| down.cpu_dead(cpu))
        })?;
        let online = hotplug.setup_state(Slot::OnlineDynamic, {
            let (up, down) = (allocator.clone(), allocator.clone());
            State::new("slab:online")
                .startup(move |cpu| up.cpu_online(cpu).map_err(hotplug::CallbackError::other))
                .teardown(move |cpu| {
                    // A teardown cannot fail: the CPU is going, whatever the allocator says.
                    let _ = down.cpu_down_prepare(cpu);
                })
        })?;
        // A CPU that went offline since is prepared but outside the view, so no teardown
        // will ever run on it: CPU_DEAD now, before anything can be allocated there.
        let view = hotplug.online_view();
        for cpu in allocator.prepared_cpus().iter().filter(|&cpu| !view.contains(cpu)) {
            allocator.cpu_dead(cpu);
        }
        Ok(Arc::new(Self { topology, allocator, hotplug, states: [prepare, online], last_callbacks }))
    }

    /// The machine.
    pub fn topology(&self) -> &Arc<dyn Topology> {
        &self.topology
    }

    /// The allocator: create caches here.
    pub fn allocator(&self) -> &Arc<Allocator> {
        &self.allocator
    }

    /// The hotplug state machine: start a watcher on it, observe its events.
    pub fn hotplug(&self) -> &Hotplug {
        &self.hotplug
    }

    /// Takes a CPU offline (writing `cpuN/online` or calling the fake) and runs the
    /// teardowns.
    pub fn cpu_down(&self, cpu: CpuId) -> Result<Transition> {
        self.hotplug.cpu_down(cpu)?;
        Ok(self.transition(cpu, CpuState::Offline))
    }

    /// Brings a CPU online and runs the startups; a failing startup rolls it back.
    pub fn cpu_up(&self, cpu: CpuId) -> Result<Transition> {
        self.hotplug.cpu_up(cpu)?;
        Ok(self.transition(cpu, CpuState::Online))
    }

    fn transition(&self, cpu: CpuId, state: CpuState) -> Transition {
        let mut clock = self.last_callbacks.lock().unwrap_or_else(|poison| poison.into_inner());
        let callbacks = clock.finished.remove(&cpu).unwrap_or_default();
        Transition { cpu, state, callbacks }
    }
}

#[cfg(test)]
mod tests;
