//! [`FakeTopology`]: a machine built in code, deterministic, for tests and demos.

use std::path::Path;

use crossbeam_channel::{Receiver, Sender};

use crate::os;
use crate::sync::{lock, Mutex};
use crate::sysfs::SysfsTopology;
use crate::virtual_cpu::{nodes_by_distance, VirtualCpus};
use crate::{
    CpuId, CpuSet, CpuState, Error, NodeId, NodeSet, OnlineChange, Result, Topology, LOCAL_DISTANCE,
    REMOTE_DISTANCE,
};

/// The memory a fake node with memory reports by default: 4 GiB, in kB.
const DEFAULT_NODE_MEM_KB: u64 = 4 << 20;

/// The largest fake machine: enough for any test, small enough to refuse typos.
const MAX_FAKE_CPUS: usize = 4096;

/// Describes a fake machine; [`FakeBuilder::build`] checks and builds it.
///
/// CPUs are numbered node by node: with 2 nodes of 2 CPUs, node 0 has CPUs 0-1 and node 1
/// has CPUs 2-3. CPU-less nodes come after the nodes with CPUs.
#[derive(Debug, Clone)]
pub struct FakeBuilder {
    nodes: usize,
    cpus_per_node: usize,
    cpuless_nodes: usize,
    memoryless: Vec<NodeId>,
    node_mem_kb: u64,
    distances: Vec<(NodeId, NodeId, u32)>,
    allowed_mems: Option<NodeSet>,
    live_cpus: bool,
}

impl Default for FakeBuilder {
    fn default() -> Self {
        Self {
            nodes: 1,
            cpus_per_node: 1,
            cpuless_nodes: 0,
            memoryless: Vec::new(),
            node_mem_kb: DEFAULT_NODE_MEM_KB,
            distances: Vec::new(),
            allowed_mems: None,
            live_cpus: false,
        }
    }
}

impl FakeBuilder {
    /// The number of nodes that have CPUs (default 1).
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    /// CPUs in each node that has CPUs (default 1).
    pub fn cpus_per_node(mut self, cpus: usize) -> Self {
        self.cpus_per_node = cpus;
        self
    }

    /// Nodes with memory but no CPUs, numbered after the others (default 0).
    pub fn cpuless_nodes(mut self, count: usize) -> Self {
        self.cpuless_nodes = count;
        self
    }

    /// Makes `node` a node without memory; its CPUs allocate from the nearest memory node.
    pub fn memoryless_node(mut self, node: NodeId) -> Self {
        self.memoryless.push(node);
        self
    }

    /// `MemTotal` of each node with memory, in kB (default 4 GiB).
    pub fn node_mem_kb(mut self, kb: u64) -> Self {
        self.node_mem_kb = kb;
        self
    }

    /// Sets the distance between two distinct nodes, both ways (default 20).
    pub fn distance(mut self, a: NodeId, b: NodeId, distance: u32) -> Self {
        self.distances.push((a, b, distance));
        self
    }

    /// Restricts the memory nodes the process may allocate from, as a cpuset's `mems`
    /// does (default: every node with memory). Must name at least one node with memory.
    pub fn allowed_memory_nodes(mut self, nodes: NodeSet) -> Self {
        self.allowed_mems = Some(nodes);
        self
    }

    /// Puts the machine on the running machine's CPUs: its CPU ids are the kernel's,
    /// [`Topology::current_cpu`] asks the kernel and [`Topology::bind_current_thread`]
    /// pins the thread, while the nodes, their memory and distances stay as described
    /// (no memory is bound to a fake node). It lays a one-node machine's CPUs out on
    /// several nodes, so that the cross-node paths run with the per-CPU fast path a real
    /// machine of that shape would run ([`Topology::cpus_are_live`]). The kernel alone
    /// switches its CPUs: [`FakeTopology::set_online`] refuses, the CPUs the kernel has
    /// offline when the machine is built start offline, and the fake's online set does
    /// not follow the kernel's later changes (no callback would run for them).
    /// [`FakeBuilder::build`] refuses a description whose CPUs are not exactly the
    /// kernel's possible CPUs: a thread may run on any of those, and the kernel refuses
    /// to address any other.
    pub fn on_live_cpus(mut self) -> Self {
        self.live_cpus = true;
        self
    }

    /// Checks the description and builds the machine, with every CPU online (on the live
    /// CPUs, those the kernel has online).
    pub fn build(self) -> Result<FakeTopology> {
        let (cpu_count, node_count) = self.counts()?;
        let distance = self.distance_matrix(node_count)?;
        let possible = CpuSet::first_n(cpu_count as u32);
        let cpu_node: Vec<Option<NodeId>> =
            (0..cpu_count).map(|cpu| Some((cpu / self.cpus_per_node) as NodeId)).collect();
        let node_cpus: Vec<CpuSet> = (0..node_count)
            .map(|node| {
                if node < self.nodes {
                    let first = (node * self.cpus_per_node) as u32;
                    (first..first + self.cpus_per_node as u32).collect()
                } else {
                    CpuSet::new()
                }
            })
            .collect();
        let nodes = NodeSet::first_n(node_count as u32);
        let order = nodes_by_distance(&nodes, node_count, |a, b| Some(distance[a as usize][b as usize]));
        let node_mem_kb = (0..node_count as u32)
            .map(|n| if self.memoryless.contains(&n) { 0 } else { self.node_mem_kb })
            .collect();
        let allowed_mems = self.checked_allowed_mems(&nodes)?;
        let online = if self.live_cpus { Self::live_online_cpus(&possible)? } else { possible.clone() };
        let cpus = VirtualCpus::new(possible.clone(), &online, cpu_node.clone(), node_cpus.clone(), order);
        Ok(FakeTopology {
            name: format!(
                "fake:{cpu_count}x{}{}",
                self.nodes,
                if self.live_cpus { "-on-live-cpus" } else { "" }
            ),
            live_cpus: self.live_cpus,
            possible,
            cpu_node,
            node_cpus,
            nodes,
            node_mem_kb,
            distance,
            allowed_mems,
            cpus,
            change: Mutex::new(Vec::new()),
        })
    }

    /// The kernel's online CPUs, once its possible CPUs are `possible`.
    fn live_online_cpus(possible: &CpuSet) -> Result<CpuSet> {
        let live = SysfsTopology::detect()?;
        let kernel = live.possible_cpus();
        if kernel != *possible {
            return Err(Error::InvalidFake(format!(
                "on the live cpus: the fake's cpus {possible} are not the running machine's possible cpus {kernel}"
            )));
        }
        live.online_cpus()
    }

    /// The CPU and node counts, once they make a machine with memory somewhere.
    fn counts(&self) -> Result<(usize, usize)> {
        let node_count = self.nodes + self.cpuless_nodes;
        let cpu_count = self.nodes * self.cpus_per_node;
        if self.nodes == 0 || self.cpus_per_node == 0 {
            return Err(Error::InvalidFake("a machine needs at least one node with one cpu".into()));
        }
        if cpu_count > MAX_FAKE_CPUS || node_count > MAX_FAKE_CPUS {
            return Err(Error::InvalidFake(format!(
                "{cpu_count} cpus on {node_count} nodes is beyond the limit of {MAX_FAKE_CPUS}"
            )));
        }
        if let Some(&node) = self.memoryless.iter().find(|&&n| n as usize >= node_count) {
            return Err(Error::InvalidFake(format!("memory-less node {node} does not exist")));
        }
        if (0..node_count as u32).all(|n| self.memoryless.contains(&n)) {
            return Err(Error::InvalidFake("at least one node must have memory".into()));
        }
        Ok((cpu_count, node_count))
    }

    /// The distance matrix: 10 to itself, 20 to others, unless stated.
    fn distance_matrix(&self, node_count: usize) -> Result<Vec<Vec<u32>>> {
        let mut distance = vec![vec![REMOTE_DISTANCE; node_count]; node_count];
        (0..node_count).for_each(|n| distance[n][n] = LOCAL_DISTANCE);
        for &(a, b, d) in &self.distances {
            let (a, b) = (a as usize, b as usize);
            if a >= node_count || b >= node_count || a == b || d <= LOCAL_DISTANCE {
                return Err(Error::InvalidFake(format!(
                    "distance {d} between nodes {a} and {b}: both must exist, differ, and be farther than {LOCAL_DISTANCE}"
                )));
            }
            distance[a][b] = d;
            distance[b][a] = d;
        }
        Ok(distance)
    }

    /// The allowed memory nodes: every node with memory unless restricted, and then only
    /// a restriction to existing nodes, one of them with memory.
    fn checked_allowed_mems(&self, nodes: &NodeSet) -> Result<NodeSet> {
        let memory: NodeSet = nodes.iter().filter(|&n| !self.memoryless.contains(&n)).collect();
        match &self.allowed_mems {
            None => Ok(memory),
            Some(allowed) if !allowed.is_subset(nodes) => {
                Err(Error::InvalidFake(format!("allowed memory nodes {allowed}: not all exist ({nodes})")))
            }
            Some(allowed) if allowed.intersection(&memory).is_empty() => {
                Err(Error::InvalidFake(format!("allowed memory nodes {allowed}: none has memory")))
            }
            Some(allowed) => Ok(allowed.intersection(&memory)),
        }
    }
}

/// A machine built in code. Every CPU starts online; [`FakeTopology::set_online`] changes
/// that and tells subscribers at once. Deterministic: the same description and calls give
/// the same answers.
#[derive(Debug)]
pub struct FakeTopology {
    name: String,
    possible: CpuSet,
    cpu_node: Vec<Option<NodeId>>,
    node_cpus: Vec<CpuSet>,
    nodes: NodeSet,
    node_mem_kb: Vec<u64>,
    distance: Vec<Vec<u32>>,
    allowed_mems: NodeSet,
    /// Whether the CPUs are the running machine's ([`FakeBuilder::on_live_cpus`]).
    live_cpus: bool,
    /// The online state, and for a fake on virtual CPUs each thread's CPU.
    cpus: VirtualCpus,
    /// Serializes online changes and holds the subscribers they are sent to.
    change: Mutex<Vec<Sender<OnlineChange>>>,
}

impl FakeTopology {
    /// Starts describing a fake machine.
    pub fn builder() -> FakeBuilder {
        FakeBuilder::default()
    }

    /// The seed's test box: 4 CPUs on 2 nodes, node 0 = CPUs 0-1, node 1 = CPUs 2-3.
    pub fn seed_box() -> Self {
        Self::from_spec("4x2").expect("the seed box description is valid")
    }

    /// Builds from `CPUSxNODES`, such as `4x2` (4 CPUs spread evenly over 2 nodes).
    pub fn from_spec(spec: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidFake(format!("{spec:?}: {reason}"));
        let (cpus, nodes) =
            spec.split_once('x').ok_or_else(|| invalid("expected CPUSxNODES, such as 4x2"))?;
        let cpus: usize = cpus.trim().parse().map_err(|_| invalid("the cpu count is not a number"))?;
        let nodes: usize = nodes.trim().parse().map_err(|_| invalid("the node count is not a number"))?;
        if nodes == 0 || cpus == 0 || cpus % nodes != 0 {
            return Err(invalid("the cpu count must be a positive multiple of the node count"));
        }
        Self::builder().nodes(nodes).cpus_per_node(cpus / nodes).build()
    }

    /// Takes a CPU offline or brings it online, and tells subscribers. Refuses to take
    /// the last online CPU offline, as the kernel does. Setting a CPU to the state it is
    /// in changes nothing and sends nothing.
    pub fn set_online(&self, cpu: CpuId, state: CpuState) -> Result<()> {
        if !self.possible.contains(cpu) {
            return Err(Error::UnknownCpu { cpu, possible: self.possible.to_string() });
        }
        if self.live_cpus {
            return Err(Error::NotHotpluggable {
                cpu,
                reason: "the fake runs on the live machine's cpus, which only the kernel switches".into(),
            });
        }
        let mut subscribers = lock(&self.change);
        let online = state == CpuState::Online;
        if self.cpus.is_online(cpu) == online {
            return Ok(());
        }
        if !online && self.cpus.online_set().len() == 1 {
            return Err(Error::NotHotpluggable { cpu, reason: "it is the last online cpu".into() });
        }
        self.cpus.set_online(cpu, state);
        subscribers.retain(|tx| tx.send(OnlineChange { cpu, state }).is_ok());
        Ok(())
    }

    fn check_node(&self, node: NodeId) -> Option<usize> {
        self.nodes.contains(node).then_some(node as usize)
    }
}

impl Topology for FakeTopology {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn possible_cpus(&self) -> CpuSet {
        self.possible.clone()
    }

    fn present_cpus(&self) -> CpuSet {
        self.possible.clone()
    }

    fn online_cpus(&self) -> Result<CpuSet> {
        Ok(self.cpus.online_set())
    }

    fn cpu_node(&self, cpu: CpuId) -> Option<NodeId> {
        self.cpu_node.get(cpu as usize).copied().flatten()
    }

    fn allowed_cpus(&self) -> CpuSet {
        let online = self.cpus.online_set();
        if !self.live_cpus {
            return online;
        }
        // The calling thread's affinity, as the live machine's sysfs backend answers.
        match os::thread_affinity(self.possible.id_bound() as u32) {
            Ok(mask) => mask.intersection(&online),
            Err(_) => online,
        }
    }

    fn possible_nodes(&self) -> NodeSet {
        self.nodes.clone()
    }

    fn online_nodes(&self) -> NodeSet {
        self.nodes.clone()
    }

    fn node_cpus(&self, node: NodeId) -> CpuSet {
        self.check_node(node).map(|n| self.node_cpus[n].clone()).unwrap_or_default()
    }

    fn node_mem_total_kb(&self, node: NodeId) -> Option<u64> {
        self.check_node(node).map(|n| self.node_mem_kb[n])
    }

    fn distance(&self, from: NodeId, to: NodeId) -> Option<u32> {
        Some(self.distance[self.check_node(from)?][self.check_node(to)?])
    }

    fn current_cpu(&self) -> CpuId {
        if self.live_cpus {
            return os::current_cpu_with_source().map_or(0, |(cpu, _)| cpu);
        }
        self.cpus.current()
    }

    fn bind_current_thread(&self, cpu: CpuId) -> Result<()> {
        if !self.live_cpus {
            return self.cpus.bind(cpu);
        }
        if !self.possible.contains(cpu) {
            return Err(Error::UnknownCpu { cpu, possible: self.possible.to_string() });
        }
        os::bind_thread(cpu, self.possible.id_bound() as u32)
            .map_err(|source| Error::Affinity { cpu, source })
    }

    fn cpus_are_live(&self) -> bool {
        self.live_cpus
    }

    fn set_cpu_online(&self, cpu: CpuId, state: CpuState) -> Result<()> {
        self.set_online(cpu, state)
    }

    fn sysfs_root(&self) -> Option<&Path> {
        None
    }

    fn allowed_memory_nodes(&self) -> NodeSet {
        self.allowed_mems.clone()
    }

    fn subscribe(&self) -> Option<Receiver<OnlineChange>> {
        let (tx, rx) = crossbeam_channel::unbounded();
        lock(&self.change).push(tx);
        Some(rx)
    }
}

#[cfg(test)]
mod tests;
