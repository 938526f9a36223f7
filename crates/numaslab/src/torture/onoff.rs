//! The hotplug thread: the user-space counterpart of the kernel's `torture_onoff()`.
//!
//! Every interval it picks a CPU at random and takes it offline if it is online, else
//! brings it online. Every fourth step it instead empties a whole node, CPU by CPU, so
//! that the last CPU of a node (the seed patch's case) goes down often, and the step
//! after brings that node back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use topology::{CpuId, CpuSet, CpuState, NodeId};

use crate::NumaSlab;

/// What the hotplug thread did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct TransitionStats {
    /// Transitions tried.
    pub attempted: u64,
    /// Transitions that completed, callbacks included.
    pub done: u64,
    /// Transitions refused by the machine or the callbacks.
    pub failed: u64,
    /// CPUs taken offline.
    pub offline: u64,
    /// CPUs brought online.
    pub online: u64,
    /// Times a node lost its last online CPU.
    pub nodes_emptied: u64,
    /// Callback time of each completed transition, in microseconds.
    #[serde(skip)]
    pub callback_us: Vec<u64>,
    /// The first few failures, verbatim.
    pub errors: Vec<String>,
    /// The failures to bring a CPU the torture took offline back online at the end (also
    /// in `errors`).
    #[serde(skip)]
    pub not_restored: Vec<String>,
    /// CPUs found with objects in their array cache right after going offline, with the
    /// count: must stay empty.
    pub stranded: Vec<(CpuId, usize)>,
}

/// The hotplug thread's plan.
#[derive(Debug)]
pub(crate) struct OnOff {
    pub(crate) slab: Arc<NumaSlab>,
    /// CPUs it may switch (never cpu0 on a real machine).
    pub(crate) candidates: CpuSet,
    pub(crate) interval: Duration,
    pub(crate) seed: u64,
    /// Completed transitions, for the progress bar.
    pub(crate) progress: Arc<AtomicU64>,
}

/// Brings every CPU that the torture took offline back online, also when dropped during
/// a panic.
#[derive(Debug)]
pub(crate) struct Restore {
    slab: Arc<NumaSlab>,
    taken_offline: CpuSet,
}

impl Restore {
    pub(crate) fn new(slab: Arc<NumaSlab>) -> Self {
        Self { slab, taken_offline: CpuSet::new() }
    }

    /// Brings back every CPU taken offline; returns the failures.
    pub(crate) fn restore(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for cpu in self.taken_offline.clone().iter() {
            match self.slab.cpu_up(cpu) {
                Ok(_) => {
                    self.taken_offline.remove(cpu);
                }
                Err(error) => errors.push(format!("cannot bring cpu {cpu} back online: {error}")),
            }
        }
        errors
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        for error in self.restore() {
            eprintln!("numaslab torture: {error}");
        }
    }
}

impl OnOff {
    /// Runs until `stop` is set; then brings every CPU back and returns the statistics.
    pub(crate) fn run(self, stop: &AtomicBool) -> TransitionStats {
        let mut rng = SmallRng::seed_from_u64(self.seed ^ 0x6f6e_6f66);
        let mut stats = TransitionStats::default();
        let mut restore = Restore::new(self.slab.clone());
        let mut emptied: Option<NodeId> = None;
        let mut step = 0u64;
        while sleep_unless_stopped(self.interval, stop) {
            step += 1;
            if let Some(node) = emptied.take() {
                for cpu in self.node_candidates(node).iter() {
                    self.switch(cpu, CpuState::Online, &mut stats, &mut restore);
                }
            } else if step % 4 == 0 {
                emptied = self.empty_a_node(&mut rng, &mut stats, &mut restore);
            } else if let Some(cpu) = pick(&self.candidates, &mut rng) {
                let target = match self.slab.topology().cpu_online(cpu) {
                    Ok(true) => CpuState::Offline,
                    _ => CpuState::Online,
                };
                self.switch(cpu, target, &mut stats, &mut restore);
            }
        }
        for error in restore.restore() {
            stats.failed += 1;
            stats.errors.push(error.clone());
            stats.not_restored.push(error);
        }
        stats
    }

    /// Takes every online candidate CPU of a random node offline; returns the node if
    /// it lost its last online CPU.
    fn empty_a_node(
        &self,
        rng: &mut SmallRng,
        stats: &mut TransitionStats,
        restore: &mut Restore,
    ) -> Option<NodeId> {
        let topology = self.slab.topology();
        // Only nodes whose every CPU may be switched can lose their last CPU.
        let nodes: CpuSet = topology
            .online_nodes()
            .iter()
            .filter(|&node| {
                let cpus = topology.node_cpus(node);
                !cpus.is_empty() && cpus.is_subset(&self.candidates)
            })
            .collect();
        let node = pick(&nodes, rng)?;
        for cpu in topology.node_cpus(node).iter() {
            if topology.cpu_online(cpu).unwrap_or(false) {
                self.switch(cpu, CpuState::Offline, stats, restore);
            }
        }
        let online = topology.online_cpus().unwrap_or_default();
        if topology.node_cpus(node).intersection(&online).is_empty() {
            stats.nodes_emptied += 1;
        }
        Some(node)
    }

    fn node_candidates(&self, node: NodeId) -> CpuSet {
        self.slab.topology().node_cpus(node).intersection(&self.candidates)
    }

    fn switch(&self, cpu: CpuId, target: CpuState, stats: &mut TransitionStats, restore: &mut Restore) {
        // The kernel refuses to take the last online CPU offline; asking would only count
        // a failure that is no fault of the allocator.
        let online = self.slab.topology().online_cpus().unwrap_or_default();
        if target == CpuState::Offline && online.len() == 1 && online.contains(cpu) {
            return;
        }
        stats.attempted += 1;
        let result = match target {
            CpuState::Offline => self.slab.cpu_down(cpu),
            CpuState::Online => self.slab.cpu_up(cpu),
        };
        match result {
            Ok(transition) => {
                stats.done += 1;
                self.progress.fetch_add(1, Ordering::Relaxed);
                stats.callback_us.push(transition.callbacks.as_micros() as u64);
                match target {
                    CpuState::Offline => {
                        stats.offline += 1;
                        restore.taken_offline.insert(cpu);
                        let stranded: usize =
                            self.slab.allocator().caches().iter().map(|cache| cache.cpu_cache_len(cpu)).sum();
                        if stranded > 0 {
                            stats.stranded.push((cpu, stranded));
                        }
                    }
                    CpuState::Online => {
                        stats.online += 1;
                        restore.taken_offline.remove(cpu);
                    }
                }
            }
            Err(error) => {
                stats.failed += 1;
                if stats.errors.len() < 8 {
                    stats.errors.push(format!("cpu {cpu} {target}: {error}"));
                }
            }
        }
    }
}

fn pick(set: &CpuSet, rng: &mut SmallRng) -> Option<u32> {
    let count = set.len();
    (count > 0).then(|| set.iter().nth(rng.gen_range(0..count))).flatten()
}

/// Sleeps for `interval` in short slices; returns false as soon as `stop` is set.
pub(crate) fn sleep_unless_stopped(interval: Duration, stop: &AtomicBool) -> bool {
    let deadline = Instant::now() + interval;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(10)));
    }
}
