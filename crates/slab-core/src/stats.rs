//! Statistics: `/proc/slabinfo` version 2.1 lines (`s_show`) and structured figures.

use topology::{CpuId, NodeId};

use crate::cache::KmemCache;
use crate::cpu::FastPathMode;
use crate::node::KmemList3;
use crate::sync::Ordering;

/// The slabinfo 2.1 header, two lines, as the kernel prints it.
pub const SLABINFO_HEADER: &str = "slabinfo - version: 2.1\n\
# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>";

/// One node's figures of one cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStats {
    /// The node.
    pub node: NodeId,
    /// Objects handed out of this node's slabs (in array caches or with callers).
    pub active_objs: usize,
    /// Objects in this node's slabs.
    pub num_objs: usize,
    /// Slabs with at least one object handed out.
    pub active_slabs: usize,
    /// All slabs.
    pub num_slabs: usize,
    /// `l3->free_objects`.
    pub free_objects: usize,
    /// `l3->free_limit`.
    pub free_limit: usize,
    /// Objects in the node's barn (its full sheaves), slabinfo's `sharedavail`; `None`
    /// when the barn holds no sheaves (no prepared CPU on the node, or `shared` 0).
    pub shared_avail: Option<usize>,
    /// Sheaves with objects in the node's barn.
    pub barn_full_sheaves: usize,
    /// Empty sheaves in the node's barn.
    pub barn_empty_sheaves: usize,
    /// Objects of this node freed on other nodes and queued for it, not yet drained.
    pub remote_avail: usize,
    /// Objects in this node's alien caches (objects of other nodes).
    pub alien_avail: usize,
    /// Slabs grown on this node so far.
    pub grown: u64,
    /// Slabs returned to the OS from this node so far.
    pub released: u64,
}

/// A cache's figures. Each node is read under its lock and each CPU array under its
/// slot lock, one after the other: a snapshot per part, not of the whole while other
/// threads work (use `validate` for a consistent check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStats {
    /// The cache's name.
    pub name: String,
    /// Objects handed out of the slabs: in array caches or with callers.
    pub active_objs: usize,
    /// Objects in all slabs.
    pub num_objs: usize,
    /// Bytes per object slot (`buffer_size`: the object, alignment and red zones).
    pub objsize: usize,
    /// Objects per slab.
    pub objperslab: usize,
    /// Pages per slab.
    pub pagesperslab: usize,
    /// Per-CPU array limit.
    pub limit: u32,
    /// Batch size.
    pub batchcount: u32,
    /// Shared factor.
    pub sharedfactor: u32,
    /// Slabs with objects handed out.
    pub active_slabs: usize,
    /// All slabs.
    pub num_slabs: usize,
    /// Objects in the nodes' barns (slabinfo's `sharedavail`).
    pub shared_avail: usize,
    /// Objects queued as remote frees for their nodes.
    pub remote_avail: usize,
    /// Objects in alien caches.
    pub alien_avail: usize,
    /// Objects out with callers: handed out of the slabs and in no array cache, barn or
    /// remote-free queue.
    pub in_use: usize,
    /// Per node, every possible node.
    pub nodes: Vec<NodeStats>,
    /// Per CPU with an attached array: (cpu, objects in it).
    pub cpu_cached: Vec<(CpuId, usize)>,
    /// How the cache's per-CPU fast path runs (`rseq` or `cas`).
    pub fast_path: FastPathMode,
    /// rseq mode: sequences the kernel aborted (preemption, migration, a signal, or a stop
    /// by another thread), each retried or served by the slow path.
    pub fast_path_aborts: u64,
    /// rseq mode: sequences that found the thread on another CPU than the one it
    /// addressed (it migrated after reading its CPU), each retried or served slowly.
    pub fast_path_mismatches: u64,
}

impl CacheStats {
    /// Objects in a CPU's array cache (0 when it has none).
    pub fn in_cpu_caches(&self, cpu: CpuId) -> usize {
        self.cpu_cached.iter().find(|(c, _)| *c == cpu).map_or(0, |(_, n)| *n)
    }

    /// Objects in all CPU array caches.
    pub fn in_all_cpu_caches(&self) -> usize {
        self.cpu_cached.iter().map(|(_, n)| n).sum()
    }

    /// This cache's `/proc/slabinfo` 2.1 line (`s_show`'s format).
    pub fn slabinfo_line(&self) -> String {
        format!(
            "{:<17} {:>6} {:>6} {:>6} {:>4} {:>4} : tunables {:>4} {:>4} {:>4} : slabdata {:>6} {:>6} {:>6}",
            self.name,
            self.active_objs,
            self.num_objs,
            self.objsize,
            self.objperslab,
            self.pagesperslab,
            self.limit,
            self.batchcount,
            self.sharedfactor,
            self.active_slabs,
            self.num_slabs,
            self.shared_avail
        )
    }
}

impl KmemCache {
    /// Gathers the figures (`s_show`, made safe for a node without a shared array as the
    /// seed patch does).
    pub(crate) fn stats(&self) -> CacheStats {
        let num = self.geometry.num as usize;
        // Sized before any lock is taken: nothing is allocated under list_lock (a kmalloc
        // cache's allocation could need it).
        let mut nodes = Vec::with_capacity(self.nodelists.len());
        for (node, l3) in self.nodelists.iter().enumerate() {
            nodes.push(self.node_stats(node as NodeId, l3));
        }
        let cpu_cached: Vec<(CpuId, usize)> = self
            .array
            .iter()
            .enumerate()
            .filter_map(|(cpu, slot)| {
                slot.lock().with(|data| data.array().map(|ac| (cpu as CpuId, ac.avail() as usize)))
            })
            .collect();
        let tunables = self.tunables.get();
        let active_objs = nodes.iter().map(|n| n.active_objs).sum();
        let shared_avail = nodes.iter().filter_map(|n| n.shared_avail).sum();
        let alien_avail = nodes.iter().map(|n| n.alien_avail).sum();
        let remote_avail = nodes.iter().map(|n| n.remote_avail).sum();
        let cached: usize =
            cpu_cached.iter().map(|(_, n)| n).sum::<usize>() + shared_avail + alien_avail + remote_avail;
        CacheStats {
            name: self.name.clone(),
            active_objs,
            num_objs: nodes.iter().map(|n| n.num_objs).sum(),
            objsize: self.geometry.buffer_size,
            objperslab: num,
            pagesperslab: self.geometry.pages_per_slab(),
            limit: tunables.limit,
            batchcount: tunables.batchcount,
            sharedfactor: tunables.shared,
            active_slabs: nodes.iter().map(|n| n.active_slabs).sum(),
            num_slabs: nodes.iter().map(|n| n.num_slabs).sum(),
            shared_avail,
            remote_avail,
            alien_avail,
            in_use: active_objs.saturating_sub(cached),
            nodes,
            cpu_cached,
            fast_path: self.fast_path.mode(),
            fast_path_aborts: self.rseq_aborts.load(Ordering::Relaxed),
            fast_path_mismatches: self.rseq_mismatches.load(Ordering::Relaxed),
        }
    }

    /// One node's figures, under its locks in turn (alien slots, then `list_lock`).
    fn node_stats(&self, node: NodeId, l3: &KmemList3) -> NodeStats {
        let num = self.geometry.num as usize;
        let alien_avail = l3
            .alien
            .iter()
            .map(|slot| slot.lock().with(|data| data.array().map_or(0, |ac| ac.avail() as usize)))
            .sum();
        let state = l3.list_lock.lock();
        let barn = l3.barn.counts();
        let mut remote_avail = 0;
        l3.walk_remote(&state, &self.geometry, |_| {
            remote_avail += 1;
            true
        });
        let num_slabs = state.slabs_full.len() + state.slabs_partial.len() + state.slabs_free.len();
        NodeStats {
            node,
            active_objs: num_slabs * num - state.free_objects,
            num_objs: num_slabs * num,
            active_slabs: state.slabs_full.len() + state.slabs_partial.len(),
            num_slabs,
            free_objects: state.free_objects,
            free_limit: state.free_limit,
            shared_avail: barn.attached.then_some(barn.objects),
            barn_full_sheaves: barn.full_sheaves,
            barn_empty_sheaves: barn.empty_sheaves,
            remote_avail,
            alien_avail,
            grown: state.grown,
            released: state.released,
        }
    }
}
