//! Errors of the slab allocator.

use topology::{CpuId, NodeId};

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which red zone of an object (debug mode) was found overwritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedZoneSide {
    /// The word just before the object: an underflow, or a write into the previous object's tail.
    Before,
    /// The word just after the object: an overflow.
    After,
}

impl std::fmt::Display for RedZoneSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedZoneSide::Before => "before",
            RedZoneSide::After => "after",
        })
    }
}

use crate::failslab::FailPoint;

/// Everything the slab allocator can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A CPU id that the topology does not list as possible.
    #[error("cpu {cpu} is not a possible cpu of this machine (cpu ids go up to {bound})")]
    UnknownCpu {
        /// The CPU asked for.
        cpu: CpuId,
        /// One past the largest possible CPU id.
        bound: usize,
    },
    /// A node id that the topology does not list as possible.
    #[error("node {node} is not a possible node of this machine (possible: {possible})")]
    UnknownNode {
        /// The node asked for.
        node: NodeId,
        /// The possible nodes, in list form.
        possible: String,
    },
    /// `cpu_online` for a CPU whose `cpu_up_prepare` has not run.
    #[error("cpu {cpu} cannot go online: its caches were not prepared (cpu_up_prepare)")]
    NotPrepared {
        /// The CPU.
        cpu: CpuId,
    },
    /// A cache name that is empty, too long, has whitespace, or is taken.
    #[error("invalid cache name {name:?}: {reason}")]
    InvalidName {
        /// The name asked for.
        name: String,
        /// Why it was refused.
        reason: String,
    },
    /// An object layout that no slab can hold.
    #[error("cache {cache:?}: invalid object layout (size {size}, align {align}): {reason}")]
    InvalidLayout {
        /// The cache.
        cache: String,
        /// The requested size in bytes.
        size: usize,
        /// The requested alignment in bytes.
        align: usize,
        /// Why it was refused.
        reason: String,
    },
    /// Tunables that `tune` refuses (the kernel's `slabinfo_write` checks, and bounds).
    #[error(
        "cache {cache:?}: invalid tunables limit {limit} batchcount {batchcount} shared {shared}: {reason}"
    )]
    InvalidTunables {
        /// The cache.
        cache: String,
        /// The per-CPU array size asked for.
        limit: u32,
        /// The batch size asked for.
        batchcount: u32,
        /// The shared factor asked for.
        shared: u32,
        /// Why it was refused.
        reason: String,
    },
    /// The OS refused memory for a slab or an array cache.
    #[error("cache {cache:?}: out of memory for {bytes} bytes on node {node}: {reason}")]
    OutOfMemory {
        /// The cache.
        cache: String,
        /// The node the memory was for.
        node: NodeId,
        /// How much was asked.
        bytes: usize,
        /// What the OS or the allocator said.
        reason: String,
    },
    /// `destroy_cache` while objects are still allocated.
    #[error("cache {cache:?} cannot be destroyed: {count} objects are still allocated")]
    ObjectsInUse {
        /// The cache.
        cache: String,
        /// How many objects are out.
        count: usize,
    },
    /// An operation on a cache that was destroyed.
    #[error("cache {cache:?} was destroyed")]
    CacheDestroyed {
        /// The cache.
        cache: String,
    },
    /// A cache that does not belong to this allocator.
    #[error("cache {cache:?} does not belong to this allocator")]
    NotInChain {
        /// The cache.
        cache: String,
    },
    /// A free of an object that is already free (debug mode).
    #[error("cache {cache:?}: double free of object {ptr:#x}")]
    DoubleFree {
        /// The cache.
        cache: String,
        /// The object's address.
        ptr: usize,
    },
    /// A free of an object that belongs to another cache.
    #[error("cache {cache:?}: object {ptr:#x} belongs to cache {owner:?}")]
    WrongCache {
        /// The cache the free was asked of.
        cache: String,
        /// The cache that owns the object, where known.
        owner: String,
        /// The object's address.
        ptr: usize,
    },
    /// A free of a pointer that no cache of this allocator owns (debug mode).
    #[error("cache {cache:?}: {ptr:#x} is not an object of any cache of this allocator")]
    ForeignPointer {
        /// The cache the free was asked of.
        cache: String,
        /// The pointer.
        ptr: usize,
    },
    /// A pointer inside one of this cache's slabs that is not the start of an object.
    #[error("cache {cache:?}: {ptr:#x} is inside a slab but not an object's start: {reason}")]
    NotAnObject {
        /// The cache.
        cache: String,
        /// The pointer.
        ptr: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A debug red zone was overwritten.
    #[error("cache {cache:?}: red zone {side} object {ptr:#x} overwritten (found {found:#018x})")]
    RedZone {
        /// The cache.
        cache: String,
        /// The object's address.
        ptr: usize,
        /// Which red zone.
        side: RedZoneSide,
        /// The word found there.
        found: u64,
    },
    /// A free object was written after it was freed: its poison changed (debug mode).
    #[error("cache {cache:?}: object {ptr:#x} was written after free: byte {offset} is {found:#04x}, expected {expected:#04x}")]
    Poisoned {
        /// The cache.
        cache: String,
        /// The object's address.
        ptr: usize,
        /// The first changed byte's offset in the object.
        offset: usize,
        /// The byte found.
        found: u8,
        /// The poison byte expected.
        expected: u8,
    },
    /// A failure-injection plan that cannot be followed ([`crate::Cache::fail_nth`]).
    #[error("cache {cache:?}: cannot plan a failure of the {point}: {reason}")]
    InvalidFailure {
        /// The cache.
        cache: String,
        /// The fail point.
        point: FailPoint,
        /// What is wrong with the plan.
        reason: String,
    },
    /// An allocation from one node only ([`crate::Cache::alloc_node_exact`]) of a node
    /// that has no memory: its objects would have to come from another node.
    #[error("node {node} has no memory: no object can come from it alone (the nearest node with memory is {nearest})")]
    NodeWithoutMemory {
        /// The node asked for.
        node: NodeId,
        /// Where `alloc_node` would have taken the object.
        nearest: NodeId,
    },
    /// An allocation from one node only ([`crate::Cache::alloc_node_exact`]) of a node
    /// that has memory this process may not use (outside its cpuset's `mems`,
    /// [`topology::Topology::allowed_memory_nodes`]).
    #[error("node {node} is not an allowed memory node of this process: no object can come from it (the nearest allowed node is {nearest})")]
    NodeNotAllowed {
        /// The node asked for.
        node: NodeId,
        /// Where `alloc_node` would have taken the object.
        nearest: NodeId,
    },
    /// `validate` found the cache's bookkeeping inconsistent.
    #[error("cache {cache:?}: corrupted: {reason}")]
    Corrupted {
        /// The cache.
        cache: String,
        /// What is inconsistent.
        reason: String,
    },
}

impl Error {
    /// Whether a debug cache found an object's memory overwritten: a red zone, or the
    /// poison of a free object. An allocation that finds it has repainted the object and
    /// put it back, so the allocation may be retried (the kernel's SLAB reports such an
    /// object and goes on); a free that finds it says by [`Error::object_freed`] whether
    /// it freed the object.
    pub fn is_damage(&self) -> bool {
        matches!(self, Error::RedZone { .. } | Error::Poisoned { .. })
    }

    /// Whether a free that returned this error freed the object all the same: when the
    /// red zone after it was overwritten (an overflow) while the one before it said the
    /// object was out. Every other error of a free leaves the pointer alone.
    pub fn object_freed(&self) -> bool {
        matches!(self, Error::RedZone { side: RedZoneSide::After, .. })
    }

    /// Whether the error is about the pointer a caller gave (unknown, not an object's
    /// start, of another cache, freed already, or its red zones overwritten), not about
    /// memory or the machine.
    pub fn is_bad_pointer(&self) -> bool {
        matches!(
            self,
            Error::DoubleFree { .. }
                | Error::WrongCache { .. }
                | Error::ForeignPointer { .. }
                | Error::NotAnObject { .. }
                | Error::RedZone { .. }
        )
    }
}
