//! Where the fast paths learn the calling thread's CPU (the kernel's
//! `smp_processor_id()`), chosen once when the allocator is built.
//!
//! On the live machine with glibc's rseq area registered, the kernel writes the thread's
//! CPU into `struct rseq` on every return to user space, so the answer is one load at a
//! fixed offset from the thread pointer: [`CpuSource::Rseq`] does that load inline, with
//! no call through the `Topology` trait object. Everywhere else (fixtures and fakes with
//! their virtual CPUs, a live machine without rseq, builds with `--cfg
//! numaslab_force_getcpu`, loom models) the fast paths ask the topology.
//!
//! Either answer may be stale the moment it is read (the thread may migrate, the CPU may
//! go down): every path that takes a CPU id is correct whatever id it gets (see the slot
//! protocol in `array_cache.rs`); a stale id only costs locality.

use topology::{RseqCpuIdOffset, Topology};

use crate::rseq::RseqArea;

/// How the calling thread's CPU is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CpuSource {
    /// glibc's rseq area: the `cpu_id` field of the thread's `struct rseq`, read inline.
    Rseq(RseqCpuIdOffset),
    /// `Topology::current_cpu`.
    Topology,
}

impl CpuSource {
    /// The source for `topology`: inline rseq reads where its CPUs are the kernel's
    /// ([`Topology::cpus_are_live`]: the live machine, or a fake laid out on its CPUs)
    /// and the topology crate itself reads rseq; the topology otherwise.
    pub(crate) fn for_topology(topology: &dyn Topology) -> CpuSource {
        if cfg!(slab_core_loom) || !topology.cpus_are_live() {
            return CpuSource::Topology;
        }
        // The topology crate finds glibc's rseq area (and honours
        // `--cfg numaslab_force_getcpu`); the fast path only reads it.
        match topology::rseq_cpu_id_offset() {
            Some(offset) if offset.read() >= 0 => CpuSource::Rseq(offset),
            _ => CpuSource::Topology,
        }
    }
}

/// How a cache's fast paths reach the current CPU's array, chosen once per allocator
/// (the machine) and per cache (a debug cache always locks): restartable sequences on
/// the live machine where the kernel and glibc allow them (`rseq.rs`), the slot's
/// compare-and-swap lock everywhere else (`array_cache.rs`). Never both on one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FastPath {
    /// Pops and pushes in restartable sequences in this thread-pointer-relative area.
    Rseq(RseqArea),
    /// The compare-and-swap slot protocol.
    Cas,
}

impl FastPath {
    /// rseq mode where the CPU comes from the rseq area (the live machine) and
    /// [`RseqArea::detect`] finds everything it needs; the CAS slot protocol otherwise.
    pub(crate) fn for_cpu_source(source: CpuSource) -> FastPath {
        match source {
            CpuSource::Rseq(_) => RseqArea::detect().map_or(FastPath::Cas, FastPath::Rseq),
            CpuSource::Topology => FastPath::Cas,
        }
    }

    /// The public name of the mode.
    pub(crate) fn mode(self) -> FastPathMode {
        match self {
            FastPath::Rseq(_) => FastPathMode::Rseq,
            FastPath::Cas => FastPathMode::Cas,
        }
    }
}

/// How the per-CPU fast path of an allocator's caches runs ([`crate::Allocator::fast_path`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FastPathMode {
    /// Restartable sequences: a pop or a push is one critical section that commits with a
    /// single store and no atomic instruction; other users stop the CPU first.
    Rseq,
    /// The fallback: each CPU's array behind a one-compare-and-swap try-lock (fixtures,
    /// fakes, loom, debug caches, other architectures, no rseq or membarrier).
    Cas,
}

impl FastPathMode {
    /// `"rseq"` or `"cas"`, as the torture report prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            FastPathMode::Rseq => "rseq",
            FastPathMode::Cas => "cas",
        }
    }
}

impl std::fmt::Display for FastPathMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests;
