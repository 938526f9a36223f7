//! What the allocator needs to know of the machine, read once from the [`Topology`]
//! when the allocator is built. slab-core never reads sysfs: everything comes through
//! the trait.

use std::sync::Arc;

use topology::{CpuId, NodeId, NodeSet, Topology};

use crate::cpu::{CpuSource, FastPath};
use crate::error::{Error, Result};

/// The kernel's `BREAK_GFP_ORDER_HI`, used when the machine has more than 32 MiB.
const BREAK_GFP_ORDER_HI: u32 = 1;
/// The kernel's `BREAK_GFP_ORDER_LO`.
const BREAK_GFP_ORDER_LO: u32 = 0;

/// Static machine facts and per-CPU/per-node tables.
#[derive(Debug)]
pub(crate) struct Machine {
    /// The topology, for `current_cpu` and descriptions.
    pub(crate) topology: Arc<dyn Topology>,
    /// Where the fast paths read the current CPU.
    pub(crate) cpu_source: CpuSource,
    /// How the fast paths of non-debug caches reach a CPU's array.
    pub(crate) fast_path: FastPath,
    /// Length of per-CPU tables.
    pub(crate) cpu_bound: usize,
    /// Length of per-node tables.
    pub(crate) node_bound: usize,
    /// For each CPU id, the node its allocations come from: its own node if that has
    /// memory, else the nearest node with memory. `None` for impossible CPU ids.
    pub(crate) cpu_home: Vec<Option<NodeId>>,
    /// For each node id, the nearest node with memory (itself if it has memory).
    pub(crate) node_fallback: Vec<Option<NodeId>>,
    /// Possible nodes.
    pub(crate) possible_nodes: NodeSet,
    /// Possible nodes that have memory and that this process may allocate from
    /// ([`Topology::allowed_memory_nodes`]): where slabs live, and the only nodes `mbind`
    /// is ever asked for. A disallowed node keeps its lists (as every possible node does)
    /// but they stay empty: allocation for it, and for its CPUs, falls back to the nearest
    /// node here.
    pub(crate) memory_nodes: Vec<NodeId>,
    /// More than one possible CPU (the kernel's `CONFIG_SMP` for the shared-array default).
    pub(crate) smp: bool,
    /// Whether slabs are `mbind`-ed to their node: only on the live machine (the topology
    /// is the sysfs of `/`) with more than one memory node.
    pub(crate) numa_binding: bool,
    /// `slab_break_gfp_order`: 1 above 32 MiB of memory, else 0.
    pub(crate) slab_break_gfp_order: u32,
}

impl Machine {
    /// Reads the facts from the topology. A topology that lists no allowed node with
    /// memory (impossible on a running machine) is served from its first possible node.
    pub(crate) fn new(topology: Arc<dyn Topology>) -> Self {
        let possible_nodes = topology.possible_nodes();
        let node_bound = topology.node_id_bound().max(1);
        let cpu_bound = topology.cpu_id_bound();
        let allowed = topology.allowed_memory_nodes();
        let mut memory_nodes: Vec<NodeId> =
            possible_nodes.iter().filter(|&n| topology.has_memory(n) && allowed.contains(n)).collect();
        if memory_nodes.is_empty() {
            eprintln!(
                "slab-core: topology {} lists no allowed node with memory; using its first node",
                topology.name()
            );
            memory_nodes.push(possible_nodes.first().unwrap_or(0));
        }
        let nearest = |node: NodeId| -> NodeId {
            if memory_nodes.contains(&node) {
                return node;
            }
            *memory_nodes
                .iter()
                .min_by_key(|&&candidate| (topology.distance(node, candidate).unwrap_or(u32::MAX), candidate))
                .expect("memory_nodes is not empty")
        };
        let node_fallback =
            (0..node_bound as NodeId).map(|n| possible_nodes.contains(n).then(|| nearest(n))).collect();
        let possible_cpus = topology.possible_cpus();
        let cpu_home = (0..cpu_bound as CpuId)
            .map(|cpu| {
                possible_cpus
                    .contains(cpu)
                    .then(|| nearest(topology.cpu_node(cpu).unwrap_or(memory_nodes[0])))
            })
            .collect();
        // Saturating: a topology's sizes are its own reading, and no sum of them may panic.
        let total_kb =
            memory_nodes.iter().filter_map(|&n| topology.node_mem_total_kb(n)).fold(0, u64::saturating_add);
        let live = topology.is_live();
        let cpu_source = CpuSource::for_topology(&*topology);
        Self {
            cpu_source,
            fast_path: FastPath::for_cpu_source(cpu_source),
            cpu_bound,
            node_bound,
            cpu_home,
            node_fallback,
            smp: possible_cpus.len() > 1,
            numa_binding: live && memory_nodes.len() > 1,
            slab_break_gfp_order: if total_kb > 32 * 1024 { BREAK_GFP_ORDER_HI } else { BREAK_GFP_ORDER_LO },
            possible_nodes,
            memory_nodes,
            topology,
        }
    }

    /// The home node of a possible CPU, or an error naming the CPU.
    pub(crate) fn home_of(&self, cpu: CpuId) -> Result<NodeId> {
        self.cpu_home
            .get(cpu as usize)
            .copied()
            .flatten()
            .ok_or(Error::UnknownCpu { cpu, bound: self.cpu_bound })
    }

    /// The memory node serving allocations for `node`, or an error naming the node.
    pub(crate) fn fallback_of(&self, node: NodeId) -> Result<NodeId> {
        self.node_fallback
            .get(node as usize)
            .copied()
            .flatten()
            .ok_or_else(|| Error::UnknownNode { node, possible: self.possible_nodes.to_string() })
    }
}
