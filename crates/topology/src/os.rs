//! The live machine's answers that only the kernel has: the calling thread's CPU and its
//! affinity.
//!
//! The current CPU comes from glibc's rseq area where glibc registered one (glibc 2.35
//! and later do by default): the kernel writes the thread's CPU into `struct rseq` on
//! every return to user space, so reading it costs a load. Elsewhere, or when built with
//! `--cfg numaslab_force_getcpu`, it comes from `sched_getcpu()` (a vDSO call). Either
//! answer can be stale the moment it is read: the thread may migrate right after.

use std::io;

use crate::sync::OnceLock;
use crate::{CpuId, CpuSet, ID_LIMIT};

/// Where a live current-CPU answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CurrentCpuSource {
    /// glibc's registered rseq area (`__rseq_offset` from the thread pointer).
    Rseq,
    /// `sched_getcpu()`.
    SchedGetcpu,
}

/// The calling thread's CPU as the kernel last wrote it into glibc's rseq area; `None`
/// where glibc has no rseq area (older glibc, `glibc.pthread.rseq=0`, an unsupported
/// architecture), where registration failed, or when built with
/// `--cfg numaslab_force_getcpu`. May be stale the moment it returns.
pub fn rseq_current_cpu() -> Option<CpuId> {
    // RSEQ_CPU_ID_UNINITIALIZED (-1) and RSEQ_CPU_ID_REGISTRATION_FAILED (-2) are negative.
    u32::try_from(rseq_cpu_id_offset()?.read()).ok()
}

/// Where the calling thread's rseq `cpu_id` lies, in bytes from the thread pointer
/// (`__rseq_offset + 4`), for callers that read it inline on a fast path: only
/// [`rseq_cpu_id_offset`] makes one, so [`RseqCpuIdOffset::read`] always reads glibc's
/// area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RseqCpuIdOffset(isize);

impl RseqCpuIdOffset {
    /// The offset in bytes from the thread pointer: for a caller's own restartable
    /// sequences, which address `struct rseq` at `offset() - 4`.
    pub fn offset(self) -> isize {
        self.0
    }

    /// The calling thread's `cpu_id`: its CPU, or negative while its area is not
    /// registered (`RSEQ_CPU_ID_UNINITIALIZED`, `RSEQ_CPU_ID_REGISTRATION_FAILED`). One
    /// load; may be stale the moment it returns.
    #[inline(always)]
    pub fn read(self) -> i32 {
        arch_read_cpu_id(self.0)
    }
}

/// Where the calling thread's rseq `cpu_id` lies; `None` where [`rseq_current_cpu`] would
/// answer `None` for want of an area (no symbols, no registration, an unsupported
/// architecture, `--cfg numaslab_force_getcpu`). The field is negative in a thread whose
/// registration failed: such a reader must fall back.
pub fn rseq_cpu_id_offset() -> Option<RseqCpuIdOffset> {
    if cfg!(numaslab_force_getcpu) || thread_pointer().is_none() {
        return None;
    }
    // `struct rseq` (include/uapi/linux/rseq.h): u32 cpu_id_start at 0, s32 cpu_id at 4.
    rseq_offset().map(|offset| RseqCpuIdOffset(offset + 4))
}

/// The `cpu_id` at `offset` from the thread pointer; `offset` comes from a
/// [`RseqCpuIdOffset`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn arch_read_cpu_id(offset: isize) -> i32 {
    let cpu: i32;
    // SAFETY: on x86-64 Linux the `fs` segment base is the thread pointer, and glibc
    // documents that `__rseq_offset` from it is the thread's `struct rseq`, which lives
    // in the thread control block for the thread's whole life and is 32-byte aligned:
    // `cpu_id` at `offset` (a `RseqCpuIdOffset`, so `__rseq_offset + 4`) is an aligned,
    // readable i32. The kernel writes it on return to user space; the asm is not `pure`,
    // so every call reads it anew. Nothing is written.
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

/// As the x86-64 version, from the thread pointer register.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn arch_read_cpu_id(offset: isize) -> i32 {
    let Some(pointer) = thread_pointer() else { return -1 };
    // SAFETY: as for x86-64: glibc's rseq area at `__rseq_offset` from the thread pointer
    // lives as long as the thread; `cpu_id` is an aligned i32 the kernel writes, hence a
    // volatile read. (Only reached with an offset, which only architectures with a
    // thread pointer give.)
    unsafe { std::ptr::read_volatile(pointer.wrapping_add_signed(offset) as *const i32) }
}

/// glibc's `__rseq_size`: how many bytes of `struct rseq` the registration covers (20 or
/// 32 on the glibc versions that register one); `None` exactly where
/// [`rseq_cpu_id_offset`] is. A fast path that arms critical sections needs at least 20
/// (the `rseq_cs` pointer at 8 and the `flags` at 16).
pub fn rseq_area_size() -> Option<u32> {
    rseq_cpu_id_offset()?;
    rseq_registration().map(|(_, size)| size)
}

/// The calling thread's CPU from `sched_getcpu()`, `None` if the call fails. May be stale
/// the moment it returns.
pub fn sched_getcpu() -> Option<CpuId> {
    // SAFETY: sched_getcpu takes no arguments and only returns a number or -1.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).ok()
}

/// The calling thread's CPU: rseq where registered, else `sched_getcpu`, with the source.
pub fn current_cpu_with_source() -> Option<(CpuId, CurrentCpuSource)> {
    rseq_current_cpu()
        .map(|cpu| (cpu, CurrentCpuSource::Rseq))
        .or_else(|| sched_getcpu().map(|cpu| (cpu, CurrentCpuSource::SchedGetcpu)))
}

/// glibc's `__rseq_offset`, looked up once with `dlsym` so that this links and runs where
/// glibc lacks the symbols (musl, glibc before 2.35); `None` where they are missing or
/// `__rseq_size` says no area was registered.
fn rseq_offset() -> Option<isize> {
    rseq_registration().map(|(offset, _)| offset)
}

/// glibc's `__rseq_offset` and `__rseq_size`, read once.
fn rseq_registration() -> Option<(isize, u32)> {
    static REGISTRATION: OnceLock<Option<(isize, u32)>> = OnceLock::new();
    *REGISTRATION.get_or_init(|| {
        // SAFETY: dlsym only looks a NUL-terminated name up in the loaded objects.
        let size = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr()) };
        // SAFETY: as above.
        let offset = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr()) };
        if size.is_null() || offset.is_null() {
            return None;
        }
        // SAFETY: glibc defines `__rseq_size` as a `const unsigned int` that is set before
        // any user code runs and never changes afterwards.
        let size = unsafe { *(size as *const u32) };
        // SAFETY: glibc defines `__rseq_offset` as a `const ptrdiff_t`, likewise fixed.
        let offset = unsafe { *(offset as *const isize) };
        // A size of 0 means glibc did not register (tunable off, kernel without rseq);
        // cpu_id ends at byte 8.
        (size >= 8).then_some((offset, size))
    })
}

/// The thread pointer that glibc's `__rseq_offset` is relative to.
#[cfg(target_arch = "x86_64")]
fn thread_pointer() -> Option<usize> {
    let pointer: usize;
    // SAFETY: on x86-64 Linux `fs:0` holds the thread control block's own address (the
    // TLS ABI's self pointer); reading it has no side effect.
    unsafe {
        std::arch::asm!("mov {}, fs:0", out(reg) pointer, options(nostack, readonly, preserves_flags));
    }
    Some(pointer)
}

/// The thread pointer that glibc's `__rseq_offset` is relative to.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
fn thread_pointer() -> Option<usize> {
    let pointer: usize;
    // SAFETY: reading `tpidr_el0`, the thread pointer register, has no side effect.
    unsafe {
        std::arch::asm!("mrs {}, tpidr_el0", out(reg) pointer, options(nostack, nomem, preserves_flags));
    }
    Some(pointer)
}

/// Other architectures use `sched_getcpu`.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn thread_pointer() -> Option<usize> {
    None
}

/// The calling thread's affinity mask, for a machine whose CPU ids are below `limit`.
pub(crate) fn thread_affinity(limit: u32) -> io::Result<CpuSet> {
    let mut words = mask_words(limit);
    // SAFETY: `words` is a writable buffer of `words.len() * 8` bytes, at least the size
    // of a `cpu_set_t`; the kernel writes at most that many bytes.
    let result =
        unsafe { libc::sched_getaffinity(0, words.len() * 8, words.as_mut_ptr().cast::<libc::cpu_set_t>()) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut set = CpuSet::new();
    for (index, word) in words.iter().enumerate() {
        for bit in (0..64).filter(|bit| word & (1 << bit) != 0) {
            let cpu = index as u32 * 64 + bit;
            if cpu < ID_LIMIT {
                set.insert(cpu);
            }
        }
    }
    Ok(set)
}

/// Pins the calling thread to one CPU.
pub(crate) fn bind_thread(cpu: CpuId, limit: u32) -> io::Result<()> {
    let mut words = mask_words(limit.max(cpu + 1));
    words[cpu as usize / 64] |= 1 << (cpu % 64);
    // SAFETY: `words` is a readable buffer of `words.len() * 8` bytes, at least the size
    // of a `cpu_set_t`.
    let result =
        unsafe { libc::sched_setaffinity(0, words.len() * 8, words.as_ptr().cast::<libc::cpu_set_t>()) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A zeroed mask buffer for ids below `limit`, never smaller than `cpu_set_t` (1024 bits).
fn mask_words(limit: u32) -> Vec<u64> {
    vec![0u64; (limit as usize).div_ceil(64).max(std::mem::size_of::<libc::cpu_set_t>() / 8)]
}
