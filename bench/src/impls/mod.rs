//! The implementations under test, behind one small trait the workloads are generic over.
//!
//! Every implementation hands out an [`Obj`] through its own idiomatic API: the malloc
//! family through its `GlobalAlloc` impl called directly (see [`malloc`]), the pools
//! through their borrowing handles, numaslab through its typed cache, its raw API and its
//! kmalloc caches (what `NumaSlabAlloc`, its `GlobalAlloc`, calls).

pub(crate) mod malloc;
pub(crate) mod numaslab;
pub(crate) mod pools;

use std::fmt;
use std::mem::MaybeUninit;

use anyhow::{bail, Result};
use topology::{CpuId, CpuState, Topology};

/// One allocator or pool, as the workloads use it.
///
/// A handle is one live object; it may be sent to another thread and freed there.
pub(crate) trait Impl: Sync {
    /// A live object. Borrowing pools tie it to the pool; the workloads run in scoped
    /// threads, so that costs them nothing.
    type Handle<'a>: Send
    where
        Self: 'a;

    /// Allocates one object and writes `stamp` into its first word.
    fn alloc(&self, stamp: u64) -> Self::Handle<'_>;

    /// Frees an object (from any thread).
    fn free<'a>(&'a self, handle: Self::Handle<'a>);

    /// The stamp written at allocation.
    fn stamp(&self, handle: &Self::Handle<'_>) -> u64;

    /// What identifies the object (its address, or a pool's key), for `black_box`: once
    /// that escapes, the optimiser cannot remove an allocation and its free as unused.
    /// The handle itself stays in registers (see `workloads::alloc`).
    fn identity(&self, handle: &Self::Handle<'_>) -> usize;

    /// Runs `f` on the object's words (cache-scratch writes through this).
    fn with_words<R>(&self, handle: &mut Self::Handle<'_>, f: impl FnOnce(&mut [MaybeUninit<u64>]) -> R)
        -> R;

    /// Called first on every thread the workload starts, after it was bound to its CPU.
    fn thread_start(&self) {}

    /// Called last on every thread the workload starts.
    fn thread_end(&self) {}

    /// Checks the implementation's own accounting after a run (numaslab's `validate`).
    fn finish(&self) -> Result<()> {
        Ok(())
    }

    /// Takes a fixture CPU offline. Peers only see the topology change; numaslab runs its
    /// hotplug callbacks around it.
    fn cpu_down(&self, topology: &dyn Topology, cpu: CpuId) -> Result<()> {
        topology.set_cpu_online(cpu, CpuState::Offline)?;
        Ok(())
    }

    /// Brings a fixture CPU back online.
    fn cpu_up(&self, topology: &dyn Topology, cpu: CpuId) -> Result<()> {
        topology.set_cpu_online(cpu, CpuState::Online)?;
        Ok(())
    }
}

/// Every implementation the harness knows, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ImplId {
    NumaslabTyped,
    NumaslabRaw,
    NumaslabRawCas,
    NumaslabKmalloc,
    NumaslabGlobal,
    Glibc,
    Mimalloc,
    Jemalloc,
    Snmalloc,
    Rpmalloc,
    LockfreeObjectPool,
    ShardedSlab,
    ObjectPool,
}

impl ImplId {
    /// Every implementation, in report order.
    pub(crate) const ALL: [ImplId; 13] = [
        ImplId::NumaslabTyped,
        ImplId::NumaslabRaw,
        ImplId::NumaslabRawCas,
        ImplId::NumaslabKmalloc,
        ImplId::NumaslabGlobal,
        ImplId::Glibc,
        ImplId::Mimalloc,
        ImplId::Jemalloc,
        ImplId::Snmalloc,
        ImplId::Rpmalloc,
        ImplId::LockfreeObjectPool,
        ImplId::ShardedSlab,
        ImplId::ObjectPool,
    ];

    /// The name used on the command line, in the table and in `results.json`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ImplId::NumaslabTyped => "numaslab-typed",
            ImplId::NumaslabRaw => "numaslab-raw",
            ImplId::NumaslabRawCas => "numaslab-raw-cas",
            ImplId::NumaslabKmalloc => "numaslab-kmalloc",
            ImplId::NumaslabGlobal => "numaslab-global",
            ImplId::Glibc => "glibc",
            ImplId::Mimalloc => "mimalloc",
            ImplId::Jemalloc => "jemalloc",
            ImplId::Snmalloc => "snmalloc",
            ImplId::Rpmalloc => "rpmalloc",
            ImplId::LockfreeObjectPool => "lockfree-object-pool",
            ImplId::ShardedSlab => "sharded-slab",
            ImplId::ObjectPool => "object-pool",
        }
    }

    /// A short column heading for the terminal table.
    pub(crate) fn short_name(self) -> &'static str {
        match self {
            ImplId::NumaslabTyped => "ns-typed",
            ImplId::NumaslabRaw => "ns-raw",
            ImplId::NumaslabRawCas => "ns-cas",
            ImplId::NumaslabKmalloc => "ns-kmalloc",
            ImplId::NumaslabGlobal => "ns-global",
            ImplId::Glibc => "glibc",
            ImplId::Mimalloc => "mimalloc",
            ImplId::Jemalloc => "jemalloc",
            ImplId::Snmalloc => "snmalloc",
            ImplId::Rpmalloc => "rpmalloc",
            ImplId::LockfreeObjectPool => "lf-pool",
            ImplId::ShardedSlab => "sh-slab",
            ImplId::ObjectPool => "obj-pool",
        }
    }

    /// Whether this is one of numaslab's own APIs (not a peer).
    pub(crate) fn is_numaslab(self) -> bool {
        matches!(
            self,
            ImplId::NumaslabTyped
                | ImplId::NumaslabRaw
                | ImplId::NumaslabRawCas
                | ImplId::NumaslabKmalloc
                | ImplId::NumaslabGlobal
        )
    }

    /// Parses a name as [`ImplId::name`] prints it.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        match Self::ALL.iter().find(|id| id.name() == text) {
            Some(&id) => Ok(id),
            None => {
                let names: Vec<&str> = Self::ALL.iter().map(|id| id.name()).collect();
                bail!("unknown implementation {text:?}; expected one of {}", names.join(", "))
            }
        }
    }

    /// `Err(reason)` when this binary was built without the implementation.
    pub(crate) fn compiled_in(self) -> std::result::Result<(), &'static str> {
        let feature_missing = match self {
            ImplId::Mimalloc => cfg!(not(feature = "mimalloc")),
            ImplId::Jemalloc => cfg!(not(feature = "jemalloc")),
            ImplId::Snmalloc => cfg!(not(feature = "snmalloc")),
            ImplId::Rpmalloc => cfg!(not(feature = "rpmalloc")),
            _ => false,
        };
        if feature_missing {
            Err("the harness was built without its cargo feature")
        } else {
            Ok(())
        }
    }
}

impl fmt::Display for ImplId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Ends the process when an implementation cannot allocate: a benchmark cannot go on,
/// and the driver reports the child's exit and message.
#[cold]
#[inline(never)]
pub(crate) fn allocation_failed(implementation: &str, why: &dyn fmt::Display) -> ! {
    eprintln!("error: {implementation} could not allocate: {why}");
    std::process::exit(3)
}
