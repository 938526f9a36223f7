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

use std::sync::atomic::{AtomicU8, Ordering};

use slab_core::kmalloc;

use super::NumaSlabAlloc;

const UNREGISTERED: u8 = 0;
const REGISTERING: u8 = 1;
const REGISTERED: u8 = 2;

/// Whether the handlers are registered. Never waited on: a forked child may inherit it
/// mid-registration (then its parent's registration, which the child inherits whole or
/// not at all, decides), and a bring-up must not block on another thread.
static HANDLERS: AtomicU8 = AtomicU8::new(UNREGISTERED);

/// Registers the handlers, once per process; later calls (every bring-up, a forked
/// child's included: it inherits its parent's handlers) do nothing.
pub(super) fn follow() {
    if HANDLERS.compare_exchange(UNREGISTERED, REGISTERING, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return;
    }
    // SAFETY: plain functions of this library, which stays loaded as long as the
    // process allocates through it.
    let failed = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    // Without memory for the registration, a later bring-up tries again.
    HANDLERS.store(if failed == 0 { REGISTERED } else { UNREGISTERED }, Ordering::Release);
}

/// The prepare handler: the arena's lock, held across the fork.
pub(super) extern "C" fn prepare() {
    kmalloc::lock_for_fork();
}

/// The parent's handler.
pub(super) extern "C" fn parent() {
    kmalloc::unlock_after_fork();
}

/// The child's handler: the arena's lock released, the parent's machinery retired.
extern "C" fn child() {
    kmalloc::unlock_after_fork();
    NumaSlabAlloc::after_fork_in_child();
}
