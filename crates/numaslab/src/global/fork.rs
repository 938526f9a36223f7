//! Following `fork`: `pthread_atfork` handlers, registered once per process at the
//! allocator's first bring-up, that take the process's allocator across every fork.
//!
//! The child of a multi-threaded program has only the thread that forked: a lock any
//! other thread held stays held in the child for ever. So the prepare handler takes the
//! bootstrap arena's lock (one for the process), and the child's handler releases it and
//! retires the allocator's machinery ([`NumaSlabAlloc::after_fork_in_child`]: the
//! parent's caches, whose locks may be held, are left alone, and the child brings up its
//! own). Without this, a child that allocates can wait for ever on a lock of a thread
//! it does not have. The handlers need no pointer to any value: the allocator's state
//! is the process's.
//!
//! A process that has never had a second thread (glibc's `__libc_single_threaded`, as
//! glibc's own fork handling asks) skips both: no other thread can hold a lock, so the
//! child keeps its parent's caches, objects and all, with no bring-up of its own (a
//! single-threaded pre-fork server's children, a shell's). The one thread's own locks
//! are held only when `fork` ran from a signal handler that interrupted the allocator,
//! and the interrupted code resumes in the child as in the parent; taking the arena's
//! lock then would have waited for ever on the thread itself.

use std::ffi::c_char;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering};

use slab_core::kmalloc;

use super::NumaSlabAlloc;

const UNREGISTERED: u8 = 0;
const REGISTERING: u8 = 1;
const REGISTERED: u8 = 2;

/// Whether the handlers are registered. Never waited on: a forked child may inherit it
/// mid-registration (then its parent's registration, which the child inherits whole or
/// not at all, decides), and a bring-up must not block on another thread.
static HANDLERS: AtomicU8 = AtomicU8::new(UNREGISTERED);

/// glibc's `__libc_single_threaded` (non-zero until the process first creates a thread,
/// and never again after), looked up at registration; null where the C library has none,
/// and then every fork is followed.
static SINGLE_THREADED: AtomicPtr<c_char> = AtomicPtr::new(std::ptr::null_mut());

/// Whether the fork in progress was left alone by [`prepare`]. One static suffices: it
/// is set only while the process has one thread, so no two forks set it at once, and
/// forks of a multi-threaded process only ever clear it.
static LEFT_ALONE: AtomicBool = AtomicBool::new(false);

/// Registers the handlers, once per process; later calls (every bring-up, a forked
/// child's included: it inherits its parent's handlers) do nothing.
pub(super) fn follow() {
    if HANDLERS.compare_exchange(UNREGISTERED, REGISTERING, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return;
    }
    // SAFETY: dlsym only looks a NUL-terminated name up in the loaded objects.
    let single_threaded = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__libc_single_threaded".as_ptr()) };
    SINGLE_THREADED.store(single_threaded.cast(), Ordering::Release);
    // SAFETY: plain functions of this library, which stays loaded as long as the
    // process allocates through it.
    let failed = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    // Without memory for the registration, a later bring-up tries again.
    HANDLERS.store(if failed == 0 { REGISTERED } else { UNREGISTERED }, Ordering::Release);
}

/// Whether the process has only ever had one thread.
fn single_threaded() -> bool {
    let flag = SINGLE_THREADED.load(Ordering::Acquire);
    // SAFETY: a non-null `flag` is glibc's `char __libc_single_threaded`, which lives as
    // long as the process. glibc clears it before it creates the process's second thread,
    // so a thread that can fork sees it clear once a second thread exists.
    !flag.is_null() && unsafe { flag.read_volatile() } != 0
}

/// The prepare handler: the arena's lock, held across the fork, unless the process has
/// one thread.
pub(super) extern "C" fn prepare() {
    let alone = single_threaded();
    LEFT_ALONE.store(alone, Ordering::Relaxed);
    if !alone {
        kmalloc::lock_for_fork();
    }
}

/// The parent's handler.
pub(super) extern "C" fn parent() {
    if !LEFT_ALONE.load(Ordering::Relaxed) {
        kmalloc::unlock_after_fork();
    }
}

/// The child's handler: the arena's lock released, the parent's machinery retired; in
/// the child of a single-threaded process, nothing.
extern "C" fn child() {
    if !LEFT_ALONE.load(Ordering::Relaxed) {
        kmalloc::unlock_after_fork();
        NumaSlabAlloc::after_fork_in_child();
    }
}
