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

use std::path::Path;

use topology::Topology;

use crate::rseq::RseqArea;

/// How the calling thread's CPU is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CpuSource {
    /// glibc's rseq area: the `cpu_id` field of the thread's `struct rseq` lies this many
    /// bytes from the thread pointer (`__rseq_offset + 4`).
    Rseq(isize),
    /// `Topology::current_cpu`.
    Topology,
}

impl CpuSource {
    /// The source for `topology`: inline rseq reads for the live machine (the sysfs of
    /// `/`, whose `current_cpu` is by contract the kernel's answer) where the topology
    /// crate itself reads rseq; the topology otherwise.
    pub(crate) fn for_topology(topology: &dyn Topology) -> CpuSource {
        if cfg!(slab_core_loom) || topology.sysfs_root() != Some(Path::new("/")) {
            return CpuSource::Topology;
        }
        // The topology crate finds glibc's rseq area (and honours
        // `--cfg numaslab_force_getcpu`); the fast path only reads it.
        match topology::rseq_cpu_id_offset() {
            Some(offset) if read_rseq_cpu(offset) >= 0 => CpuSource::Rseq(offset),
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

/// The `cpu_id` of the calling thread's rseq area: the CPU, or a negative value while the
/// area is not registered (`RSEQ_CPU_ID_UNINITIALIZED`, `RSEQ_CPU_ID_REGISTRATION_FAILED`).
/// `offset` must come from `topology::rseq_cpu_id_offset`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn read_rseq_cpu(offset: isize) -> i32 {
    let cpu: i32;
    // SAFETY: on x86-64 Linux the `fs` segment base is the thread pointer, and glibc
    // documents that `__rseq_offset` from it is the thread's `struct rseq`, which lives
    // in the thread control block for the thread's whole life and is 32-byte aligned:
    // `cpu_id` at `offset` is an aligned, readable i32. The kernel writes it on return to
    // user space; the asm is not `pure`, so every call reads it anew. Nothing is written.
    unsafe {
        std::arch::asm!(
            "mov {cpu:e}, dword ptr fs:[{offset}]",
            offset = in(reg) offset,
            cpu = lateout(reg) cpu,
            options(nostack, readonly, preserves_flags),
        );
    }
    cpu
}

/// As the x86-64 version: `tpidr_el0` is the thread pointer.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
pub(crate) fn read_rseq_cpu(offset: isize) -> i32 {
    let pointer: usize;
    // SAFETY: reading `tpidr_el0`, the thread pointer register, has no side effect.
    unsafe {
        std::arch::asm!("mrs {}, tpidr_el0", out(reg) pointer, options(nostack, nomem, preserves_flags));
    }
    // SAFETY: as for x86-64: glibc's rseq area at `__rseq_offset` from the thread pointer
    // lives as long as the thread; `cpu_id` is an aligned i32 the kernel writes, hence a
    // volatile read.
    unsafe { std::ptr::read_volatile(pointer.wrapping_add_signed(offset) as *const i32) }
}

/// Never called: `topology::rseq_cpu_id_offset` gives no offset on other architectures.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
#[inline(always)]
pub(crate) fn read_rseq_cpu(_offset: isize) -> i32 {
    -1
}

#[cfg(test)]
mod tests;
