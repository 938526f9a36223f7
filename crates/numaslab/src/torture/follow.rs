//! The follower: in `--follow` mode the torture switches no CPU itself; another program
//! does (`chcpu`, a VM's vCPU unplug, a test writing `cpuN/online`), the hotplug watcher
//! notices it (uevents on the live machine, polling on a sysfs copy, the fake's notices)
//! and runs the allocator's callbacks, and this thread reads the hotplug events to count
//! and check those transitions as the hotplug thread counts its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use hotplug::{Event, EventKind, Outcome, Source};
use topology::{CpuId, CpuSet};

use super::onoff::TransitionStats;
use crate::NumaSlab;

/// A transition being followed, from its start to its finish.
#[derive(Debug)]
struct Running {
    going_offline: bool,
    callbacks: Duration,
    failure: Option<String>,
}

/// The follower thread's state.
#[derive(Debug)]
pub(crate) struct Follow {
    pub(crate) slab: Arc<NumaSlab>,
    /// Every hotplug event from before the watcher started.
    pub(crate) events: Receiver<Event>,
    /// Completed transitions, for the progress bar.
    pub(crate) progress: Arc<AtomicU64>,
    /// The online CPUs as the followed transitions left them: whether a node lost its
    /// last CPU is judged from the events, not from the machine now, which the other
    /// program may have changed again since.
    pub(crate) online: CpuSet,
}

impl Follow {
    /// Follows until `stop` is set, then reads what is already queued and returns the
    /// statistics.
    pub(crate) fn run(mut self, stop: &AtomicBool) -> TransitionStats {
        self.online = self.slab.hotplug().online_view();
        let mut stats = TransitionStats::default();
        let mut running: HashMap<CpuId, Running> = HashMap::new();
        while !stop.load(Ordering::Relaxed) {
            if let Ok(event) = self.events.recv_timeout(Duration::from_millis(20)) {
                self.observe(&event, &mut running, &mut stats);
            }
        }
        while let Ok(event) = self.events.try_recv() {
            self.observe(&event, &mut running, &mut stats);
        }
        stats
    }

    fn observe(&mut self, event: &Event, running: &mut HashMap<CpuId, Running>, stats: &mut TransitionStats) {
        // The watcher's first reconcile only lines the states up with the machine as it
        // was when the run started; the run follows what changes after.
        if matches!(event.source, Source::Initial | Source::Registration) {
            return;
        }
        match &event.kind {
            EventKind::TransitionStarted { cpu, from, to } => {
                stats.attempted += 1;
                running.insert(
                    *cpu,
                    Running { going_offline: to < from, callbacks: Duration::ZERO, failure: None },
                );
            }
            EventKind::StateEntered { cpu, duration: Some(spent), .. }
            | EventKind::StateLeft { cpu, duration: Some(spent), .. } => {
                if let Some(transition) = running.get_mut(cpu) {
                    transition.callbacks += *spent;
                }
            }
            EventKind::CallbackFailed { cpu, state, duration, .. } => {
                if let Some(transition) = running.get_mut(cpu) {
                    transition.callbacks += *duration;
                    transition.failure.get_or_insert_with(|| format!("a callback of state {state} failed"));
                }
            }
            EventKind::TransitionFinished { cpu, outcome, .. } => {
                let Some(transition) = running.remove(cpu) else { return };
                self.finished(*cpu, *outcome, transition, stats);
            }
            _ => {}
        }
    }

    fn finished(&mut self, cpu: CpuId, outcome: Outcome, transition: Running, stats: &mut TransitionStats) {
        let direction = if transition.going_offline { "offline" } else { "online" };
        if outcome == Outcome::RolledBack {
            stats.failed += 1;
            if stats.errors.len() < 8 {
                let why = transition.failure.unwrap_or_else(|| "rolled back".into());
                stats.errors.push(format!("cpu {cpu} {direction} (made by another program): {why}"));
            }
            return;
        }
        stats.done += 1;
        stats.callback_us.push(transition.callbacks.as_micros() as u64);
        if !transition.going_offline {
            self.online.insert(cpu);
            stats.online += 1;
            self.progress.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.online.remove(cpu);
        stats.offline += 1;
        let hotplug = self.slab.hotplug();
        let topology = self.slab.topology();
        // The other program may have brought the CPU back already, refilling its cache
        // legitimately: only a CPU offline before and after the count can strand objects.
        if !hotplug.online_view().contains(cpu) {
            let stranded: usize =
                self.slab.allocator().caches().iter().map(|cache| cache.cpu_cache_len(cpu)).sum();
            if stranded > 0 && !hotplug.online_view().contains(cpu) {
                stats.stranded.push((cpu, stranded));
            }
        }
        if let Some(node) = topology.cpu_node(cpu) {
            if topology.node_cpus(node).intersection(&self.online).is_empty() {
                stats.nodes_emptied += 1;
            }
        }
        self.progress.fetch_add(1, Ordering::Relaxed);
    }
}
