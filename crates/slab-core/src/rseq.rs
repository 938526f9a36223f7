//! The per-CPU fast path with no atomic instruction: restartable sequences (rseq), the
//! user-space counterpart of the kernel's "interrupts off on this CPU" around
//! `cachep->array[smp_processor_id()]`.
//!
//! A thread arms a sequence by storing its descriptor's address into the `rseq_cs` field
//! of its `struct rseq` (glibc's registration, at `__rseq_offset` from the thread
//! pointer). If the thread is preempted, migrated or signalled before the sequence's last
//! instruction, the kernel moves it to the sequence's abort address instead of letting it
//! continue. So a sequence that only loads, computes, and ends with one store (the
//! commit) either happens as a whole on one CPU with nothing else running there, or not
//! at all (`kernel/rseq.c`; tcmalloc's per-CPU caches and librseq work the same way).
//! `docs/ARCHITECTURE.md` lists where each rule is kept; the rules:
//!
//! - **R1.** Every load feeding the commit, and the commit, lie in one armed sequence,
//!   whose first instruction compares the CPU used for addressing with `rseq->cpu_id`
//!   (signed: an unregistered thread's -1 or -2 never matches). No store precedes it.
//!   The sequences for a CPU the caller names ([`RseqArea::pop`], [`RseqArea::push`])
//!   start `cmp cpu, fs:[area + 4]; jne mismatch`; those for the thread's own CPU
//!   ([`RseqArea::pop_here`], [`RseqArea::push_here`], the fast paths) start by loading
//!   `rseq->cpu_id` and address with what they loaded (as tcmalloc's per-CPU caches do),
//!   so that no earlier value exists to compare: a migration after the load aborts the
//!   sequence, and an id that is not a slot (-1 and -2 among them) exits before any
//!   store.
//! - **R2.** Another thread touches a CPU's array only after unpublishing it (swapping
//!   [`crate::array_cache::ArraySlot::published`] to null) and then
//!   `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, MEMBARRIER_CMD_FLAG_CPU, cpu)`
//!   returned: [`membarrier_stop_cpu`], called by `ArraySlot::lock`. The membarrier
//!   interrupts the CPU if one of our threads runs there (aborting or completing its
//!   sequence); a preempted sequence aborts when it resumes; an offline CPU has no
//!   sequence in flight (leaving a CPU is a context switch, which aborts), and the call
//!   returns at once.
//! - **R3.** An array is freed only after R2: it is freed by the thread that took it out
//!   of a locked slot.
//! - **R4.** A thread whose area is not registered (`cpu_id < 0`) never reaches an array:
//!   R1's compare fails.
//! - **R5.** rseq and compare-and-swap access are never mixed on one slot: the mode is
//!   chosen once per cache (`FastPath` in `cpu.rs`) and every slot of the cache follows it.
//!
//! Each sequence is one `asm!` block with no labels leaving it: it returns its outcome in
//! a register (an object address is always above [`STATUS_LIMIT`], an outcome below it),
//! so it needs no `asm goto`. The fast paths' sequences keep their exits and abort
//! handler out of line, so that a commit falls through to the caller's code. Its descriptor (`struct rseq_cs`: version 0, flags 0,
//! start, length, abort) goes into the `__rseq_cs` section; the abort address is preceded
//! by glibc's signature, as the kernel checks (`RSEQ_SIG`, "ud1 0x53053053(%rip),%edi").
//! Numeric labels only, so that a copy of an inlined block gets its own descriptor.
//!
//! Architectures: x86_64. On others (aarch64 included: this project cannot build or run
//! aarch64 code where it is developed, and an untested critical section is worse than
//! none) the cache uses the CAS slot protocol.

use std::ptr::NonNull;

use crossbeam_utils::CachePadded;

use crate::array_cache::{ArraySlot, Block};

/// glibc's registration signature on x86_64 (`RSEQ_SIG`): the four bytes before every
/// abort address must equal it, or the kernel kills the process. The sequences spell it
/// out (`.long 0x53053053`); the descriptor test checks each abort address against this.
#[cfg(test)]
pub(crate) const RSEQ_SIG: u32 = 0x5305_3053;

/// Results below this are outcomes, not objects (no object lies in the first page).
pub(crate) const STATUS_LIMIT: usize = 4096;

/// `MEMBARRIER_CMD_QUERY`.
const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
/// `MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ` (Linux 5.10).
const MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ: libc::c_int = 1 << 7;
/// `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ`.
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ: libc::c_int = 1 << 8;
/// `MEMBARRIER_CMD_FLAG_CPU`: fence one CPU only.
const MEMBARRIER_CMD_FLAG_CPU: libc::c_uint = 1;

/// Where the calling thread's `struct rseq` lies: `__rseq_offset` bytes from the thread
/// pointer. Only [`RseqArea::detect`] makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RseqArea {
    /// `__rseq_offset`: where the sequences address `struct rseq`.
    offset: isize,
    /// Its `cpu_id` field, as the topology crate reads it.
    cpu_id: topology::RseqCpuIdOffset,
}

/// What a pop sequence did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pop {
    /// An object, counted out of the array.
    Hit(NonNull<u8>),
    /// The array is empty.
    Empty,
    /// Outcomes that leave the array alone.
    Miss(Miss),
}

/// What a push sequence did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// The object is on the array, counted in.
    Done,
    /// The array is full.
    Full,
    /// The object is not of the CPU's node ([`RseqArea::push_here`] only): it is a
    /// remote free, for the alien cache.
    Remote,
    /// Outcomes that leave the array alone.
    Miss(Miss),
}

/// A sequence that did not reach the array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// No array is published for the CPU: detached, never prepared, or stopped by
    /// another thread (hotplug, tuning, the reaper, `validate`).
    Detached,
    /// The thread is not on the CPU it addressed (it migrated after reading its CPU, or
    /// was asked to act for another CPU, or its area is not registered).
    Mismatch,
    /// The kernel aborted the sequence (preemption, migration, a signal, a membarrier).
    Aborted,
}

/// What a sequence on the calling thread's own CPU ([`RseqArea::pop_here`],
/// [`RseqArea::push_here`]) left in its result register. The fast paths test it for their
/// one outcome ([`Here::popped`], [`Here::pushed`]); only the slow paths decode the rest
/// ([`Here::pop`], [`Here::push`]), so that no match on the outcome is compiled into the
/// fast path. The CPU the sequence used is not kept (a register less in the sequence): a
/// slow path reads the CPU again, and acts on the one the thread is on then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Here(usize);

impl Here {
    /// The object a pop sequence handed out, if it did.
    #[inline(always)]
    pub(crate) fn popped(self) -> Option<NonNull<u8>> {
        match Pop::from_result(self.0) {
            Pop::Hit(obj) => Some(obj),
            _ => None,
        }
    }

    /// Whether a push sequence put its object on the array.
    #[inline(always)]
    pub(crate) fn pushed(self) -> bool {
        self.0 == code::DONE
    }

    /// A pop sequence's outcome.
    pub(crate) fn pop(self) -> Pop {
        Pop::from_result(self.0)
    }

    /// A push sequence's outcome.
    pub(crate) fn push(self) -> Push {
        Push::from_code(self.0)
    }
}

/// Outcome codes in the result register, below [`STATUS_LIMIT`].
mod code {
    pub(super) const DONE: usize = 0;
    pub(super) const DETACHED: usize = 1;
    pub(super) const MISMATCH: usize = 2;
    pub(super) const ABORTED: usize = 3;
    pub(super) const LIMIT: usize = 4;
    pub(super) const REMOTE: usize = 5;
}

impl Pop {
    /// A pop sequence's result register: an object, or an outcome code.
    #[inline(always)]
    fn from_result(result: usize) -> Pop {
        if result >= STATUS_LIMIT {
            // SAFETY: above the first page: an object address from the array.
            return Pop::Hit(unsafe { NonNull::new_unchecked(result as *mut u8) });
        }
        match Miss::from_code(result) {
            Some(miss) => Pop::Miss(miss),
            None => Pop::Empty,
        }
    }

    /// The miss, if the sequence did not reach the array.
    pub(crate) fn miss(self) -> Option<Miss> {
        match self {
            Pop::Miss(miss) => Some(miss),
            Pop::Hit(_) | Pop::Empty => None,
        }
    }
}

impl Push {
    /// A push sequence's outcome code.
    #[inline(always)]
    fn from_code(code: usize) -> Push {
        match code {
            code::DONE => Push::Done,
            code::LIMIT => Push::Full,
            code::REMOTE => Push::Remote,
            other => Push::Miss(Miss::from_code(other).unwrap_or(Miss::Aborted)),
        }
    }

    /// The miss, if the sequence did not reach the array.
    pub(crate) fn miss(self) -> Option<Miss> {
        match self {
            Push::Miss(miss) => Some(miss),
            Push::Done | Push::Full | Push::Remote => None,
        }
    }
}

impl Miss {
    fn from_code(code: usize) -> Option<Miss> {
        match code {
            code::DETACHED => Some(Miss::Detached),
            code::MISMATCH => Some(Miss::Mismatch),
            code::ABORTED => Some(Miss::Aborted),
            _ => None,
        }
    }
}

impl RseqArea {
    /// The area for the fast path, if this process can run restartable sequences here:
    /// x86_64; not a loom build or `--cfg numaslab_force_cas`; glibc registered an area
    /// of at least 20 bytes (`topology::rseq_area_size`, which also honours
    /// `--cfg numaslab_force_getcpu`); the calling thread is registered; and the kernel
    /// offers `MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ` and accepts our registration for it
    /// (registered again in every child after `fork`). `None` means the CAS fallback.
    pub(crate) fn detect() -> Option<RseqArea> {
        if cfg!(any(slab_core_loom, numaslab_force_cas)) || !cfg!(target_arch = "x86_64") {
            return None;
        }
        let cpu_id = topology::rseq_cpu_id_offset()?;
        if topology::rseq_area_size()? < 20 {
            return None;
        }
        let area = RseqArea { offset: cpu_id.offset() - 4, cpu_id };
        if area.cpu_id() < 0 || !membarrier_rseq_registered() {
            return None;
        }
        Some(area)
    }

    /// The calling thread's `rseq->cpu_id`: its CPU, or negative while unregistered.
    #[inline(always)]
    pub(crate) fn cpu_id(self) -> i32 {
        self.cpu_id.read()
    }

    /// Pops the newest object of `cpu`'s published array, as one sequence.
    ///
    /// # Safety
    /// `published` must be the [`crate::array_cache::ArraySlot::published`] of the slot of
    /// `cpu`, in a cache whose slots all follow rseq mode; the array it points at, if any,
    /// holds objects of that slot's node.
    #[inline(always)]
    pub(crate) unsafe fn pop(self, cpu: u32, published: *const *mut Block) -> Pop {
        // SAFETY: forwarded to the caller.
        Pop::from_result(unsafe { arch::pop(self.offset, cpu, published) })
    }

    /// Pushes `obj` on `cpu`'s published array, as one sequence.
    ///
    /// # Safety
    /// As for [`RseqArea::pop`]; `obj` is a handed-out object of the slot's node.
    #[inline(always)]
    pub(crate) unsafe fn push(self, cpu: u32, published: *const *mut Block, obj: *mut u8) -> Push {
        // SAFETY: forwarded to the caller.
        Push::from_code(unsafe { arch::push(self.offset, cpu, published, obj) })
    }

    /// Pops the newest object of the calling thread's CPU's published array, as one
    /// sequence that reads the CPU itself (see R1). `Miss::Mismatch` here means that the
    /// thread's CPU id is not one of `slots` (an unregistered thread's is negative): the
    /// caller asks the topology instead.
    ///
    /// # Safety
    /// `slots` are the CPU slots of a cache whose slots all follow rseq mode; the array
    /// published in each, if any, holds objects of that slot's node.
    #[inline(always)]
    pub(crate) unsafe fn pop_here(self, slots: &[CachePadded<ArraySlot>]) -> Here {
        // SAFETY: forwarded to the caller; SLOT_STRIDE is the slice's element size.
        Here(unsafe { arch::pop_here(self.offset, slots.as_ptr().cast(), slots.len()) })
    }

    /// Pushes `obj`, an object of `node`, on the calling thread's CPU's published array,
    /// as [`RseqArea::pop_here`] pops: one sequence that reads the CPU and compares the
    /// CPU's node with `node` before any store ([`Push::Remote`] when they differ).
    ///
    /// # Safety
    /// As for [`RseqArea::pop_here`]; `obj` is a handed-out object of `node`.
    #[inline(always)]
    pub(crate) unsafe fn push_here(self, slots: &[CachePadded<ArraySlot>], obj: *mut u8, node: u32) -> Here {
        // SAFETY: forwarded to the caller.
        Here(unsafe { arch::push_here(self.offset, slots.as_ptr().cast(), slots.len(), obj, node) })
    }

    /// R2 without the fence, for the thread that runs on `cpu`: one sequence on `cpu`
    /// stores null into `published`. When it commits, every other thread that could be
    /// inside a sequence on `cpu`'s array is off the CPU (this thread is on it), so it
    /// aborts when it resumes, and no thread on another CPU passes R1's compare: the
    /// array is stopped with no system call. `false` when the thread is not on `cpu` (or
    /// was interrupted): then the caller fences with [`membarrier_stop_cpu`].
    ///
    /// # Safety
    /// `published` is the cell of the slot of `cpu`, whose lock the caller holds.
    pub(crate) unsafe fn unpublish_own(self, cpu: u32, published: *mut *mut Block) -> bool {
        // SAFETY: forwarded to the caller.
        let result = unsafe { arch::unpublish(self.offset, cpu, published) };
        matches!(result, code::DONE | code::DETACHED)
    }
}

#[cfg(test)]
thread_local! {
    /// The fences [`membarrier_stop_cpu`] issued on this thread, for tests.
    pub(crate) static FENCES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// R2's fence: returns once no restartable sequence on `cpu` can still be using what was
/// unpublished before the call. An offline CPU (or a process with one thread) returns at
/// once; the offline itself was the fence.
///
/// The registration succeeded when the mode was chosen, so the kernel refuses this only
/// if something revoked it under us (a seccomp filter installed later, a `fork` child
/// whose registration failed): continuing would risk handing one object out twice, so
/// the process stops with a message, as the kernel's own rseq does with SIGSEGV.
pub(crate) fn membarrier_stop_cpu(cpu: u32) {
    #[cfg(test)]
    FENCES.with(|fences| fences.set(fences.get() + 1));
    // SAFETY: membarrier takes three integers and touches no memory of ours.
    let result = unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
            MEMBARRIER_CMD_FLAG_CPU,
            cpu as libc::c_int,
        )
    };
    if result != 0 {
        let error = std::io::Error::last_os_error();
        eprintln!("slab-core: membarrier(PRIVATE_EXPEDITED_RSEQ, cpu {cpu}) failed: {error}; stopping");
        std::process::abort();
    }
}

/// Whether this process is registered for `MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ`:
/// queries the kernel and registers once; registers each `fork` child again.
fn membarrier_rseq_registered() -> bool {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *REGISTERED.get_or_init(|| {
        // SAFETY: membarrier with QUERY takes no pointer and returns a command mask.
        let commands = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0) };
        let wanted = (MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ | MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ)
            as libc::c_long;
        if commands < 0 || commands & wanted != wanted || !register_membarrier_rseq() {
            return false;
        }
        // SAFETY: the handler is an `extern "C" fn()` with no preconditions.
        unsafe { libc::pthread_atfork(None, None, Some(register_in_child)) == 0 }
    })
}

/// `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ`; registering again is harmless.
fn register_membarrier_rseq() -> bool {
    // SAFETY: membarrier with a REGISTER command takes no pointer.
    unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ, 0, 0) == 0 }
}

/// The `fork` child's handler: its new address space must be registered before any of
/// its threads stops a CPU. A child that cannot register stops at its first stop
/// ([`membarrier_stop_cpu`]) instead of racing.
extern "C" fn register_in_child() {
    register_membarrier_rseq();
}

#[cfg(target_arch = "x86_64")]
#[path = "rseq/x86_64.rs"]
mod arch;

/// Never called: [`RseqArea::detect`] answers `None` on other architectures.
#[cfg(not(target_arch = "x86_64"))]
mod arch {
    use super::Block;

    pub(super) unsafe fn pop(_: isize, _: u32, _: *const *mut Block) -> usize {
        super::code::MISMATCH
    }
    pub(super) unsafe fn push(_: isize, _: u32, _: *const *mut Block, _: *mut u8) -> usize {
        super::code::MISMATCH
    }
    pub(super) unsafe fn unpublish(_: isize, _: u32, _: *mut *mut Block) -> usize {
        super::code::MISMATCH
    }
    pub(super) unsafe fn pop_here(_: isize, _: *const u8, _: usize) -> usize {
        super::code::MISMATCH
    }
    pub(super) unsafe fn push_here(_: isize, _: *const u8, _: usize, _: *mut u8, _: u32) -> usize {
        super::code::MISMATCH
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod stress_tests;
