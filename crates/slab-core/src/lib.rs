//! The NUMA slab allocator, after the Linux kernel's SLAB (`mm/slab.c`, 2.6.15 era) with
//! the CPU up/down locking of the seed patch "NUMA slab locking fixes".
//!
//! An [`Allocator`] owns the cache chain; each [`Cache`] hands out fixed-size objects from
//! slabs mapped from the OS, through per-CPU array caches, per-node lists with a barn of
//! sheaves (exchanged whole with the CPU arrays, in the shared array's role), a queue of
//! remote frees, and alien caches. [`TypedCache`] wraps a cache for values of one type.
//! The allocator follows CPU hotplug through its `cpu_*` methods, the kernel's
//! `cpuup_callback` cases.
//!
//! slab-core sees the machine only through [`topology::Topology`]; it never reads sysfs.
//!
//! Code map, by kernel concept: `slab.rs` (struct slab, bufctl, cache_estimate),
//! `array_cache.rs` (struct array_cache and the per-CPU slot protocol), `node.rs` (struct
//! kmem_list3, free_block), `barn.rs` (SLUB's sheaves and node_barn), `remote.rs` (the
//! lock-free hand-off of remote frees to their node), `cache.rs` (struct kmem_cache, the alloc and free paths,
//! cache_grow), `tune.rs` (enable_cpucache, do_tune_cpucache), `reap.rs` (cache_reap,
//! drain_cpu_caches, kmem_cache_shrink), `hotplug.rs` (cpuup_callback), `debug.rs` (red
//! zones, poison, validate), `failslab.rs` (allocation-failure injection), `fallback.rs`
//! (`fallback_alloc`: another node's objects when a node cannot grow), `stats.rs` (slabinfo), `cpu.rs` (the current CPU), `memory.rs` (pages from the OS), `pages.rs` (the page-block cache beneath the slabs),
//! `sync.rs` (every atomic and lock, loom-switchable).

mod allocator;
#[cfg(not(slab_core_loom))]
mod api2;
mod array_cache;
mod barn;
mod cache;
mod cpu;
mod debug;
mod error;
mod failslab;
mod fallback;
mod hotplug;
// kmalloc keeps statics (the bootstrap arena), which cannot hold loom's types.
#[cfg(not(slab_core_loom))]
pub mod kmalloc;
mod machine;
mod memory;
mod node;
mod pages;
mod reap;
mod registry;
mod remote;
mod rseq;
mod slab;
mod stats;
mod sync;
mod tune;
mod typed;

pub use crate::allocator::Allocator;
pub use crate::cache::Cache;
pub use crate::cpu::FastPathMode;
pub use crate::error::{Error, RedZoneSide, Result};
pub use crate::failslab::FailPoint;
#[cfg(not(slab_core_loom))]
pub use crate::kmalloc::{Checking, Kmalloc};
pub use crate::stats::{CacheStats, NodeStats, SLABINFO_HEADER};
pub use crate::tune::{Tunables, DEFAULT_SHARED, MAX_LIMIT, MAX_SHARED_ENTRIES};
pub use crate::typed::{Handle, TypedCache};

/// Flags given at cache creation (the kernel's `SLAB_*` flags), combinable with `|`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CacheFlags(u32);

impl CacheFlags {
    /// No flag.
    pub const NONE: CacheFlags = CacheFlags(0);
    /// Debug mode: red zones, poisoning checked when an object is handed out again,
    /// double-free, wrong-cache and foreign-pointer detection reported as errors
    /// (`SLAB_RED_ZONE | SLAB_POISON` and the kernel's DEBUG checks).
    pub const DEBUG: CacheFlags = CacheFlags(1);
    /// Align objects to the hardware cache line (`SLAB_HWCACHE_ALIGN`): as the kernel's
    /// `kmem_cache_create` computes it, the alignment starts at the cache line (64 bytes)
    /// and is halved while the object fits in half of it, so a 64-byte object sits on one
    /// cache line, a 32-byte one on half of one, and an 8-byte one stays word-aligned;
    /// a larger alignment in the layout wins. No object then straddles more cache lines
    /// than its size demands (and two CPUs' objects of 64 bytes or more never share one),
    /// at the cost of padding sizes up to that alignment (24 bytes take 32, 40 take 64).
    /// [`Allocator::create_typed`] always sets it, like the kernel's kmalloc caches.
    pub const HWCACHE_ALIGN: CacheFlags = CacheFlags(2);

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: CacheFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for CacheFlags {
    type Output = CacheFlags;

    fn bitor(self, other: CacheFlags) -> CacheFlags {
        CacheFlags(self.0 | other.0)
    }
}

impl std::ops::BitOrAssign for CacheFlags {
    fn bitor_assign(&mut self, other: CacheFlags) {
        self.0 |= other.0;
    }
}
