//! Following `fork`: `pthread_atfork` handlers, registered once per process, that take
//! every registered [`NumaSlabAlloc`] across it.
//!
//! The child of a multi-threaded program has only the thread that forked: a lock any
//! other thread held stays held in the child for ever. So the prepare handler takes the
//! bootstrap arena's lock (one for the process), and the child's handler releases it and
//! retires each allocator's machinery ([`NumaSlabAlloc::after_fork_in_child`]: the
//! parent's caches, whose locks may be held, are left alone, and the child brings up its
//! own). Without this, a child that allocates can wait for ever on a lock of a thread
//! it does not have.
//!
//! The handlers find the allocators in a fixed table of `'static` references, filled by
//! [`NumaSlabAlloc::follow_fork`] and, for an allocator in static storage (every
//! `#[global_allocator]`), by its bring-up.

use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Once;

use slab_core::kmalloc;

use super::NumaSlabAlloc;

/// How many allocators a process can have follow `fork`.
const MAX_FOLLOWERS: usize = 8;

/// The allocators that follow `fork`; null slots are free.
static FOLLOWERS: [AtomicPtr<NumaSlabAlloc>; MAX_FOLLOWERS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_FOLLOWERS];

/// Registers the handlers, once.
static HANDLERS: Once = Once::new();

/// Makes `alloc` follow `fork` from now on; false if the table is full. Idempotent.
pub(super) fn follow(alloc: &'static NumaSlabAlloc) -> bool {
    let wanted = std::ptr::from_ref(alloc).cast_mut();
    let known = FOLLOWERS.iter().any(|slot| slot.load(Ordering::Acquire) == wanted);
    let added = known
        || FOLLOWERS.iter().any(|slot| {
            slot.compare_exchange(std::ptr::null_mut(), wanted, Ordering::AcqRel, Ordering::Acquire).is_ok()
        });
    if added {
        // Before returning, so that a fork after this call is followed. (Two threads
        // adding one allocator at once may give it two slots; its child's step is
        // idempotent.)
        // SAFETY: plain functions of this library, which stays loaded with the program.
        HANDLERS.call_once(|| unsafe {
            libc::pthread_atfork(Some(prepare), Some(parent), Some(child));
        });
    }
    added
}

/// Whether `alloc` lies in a loaded object's static storage (a `static` of the program or
/// of a shared library), as `dladdr` tells: such an allocator lives as long as its
/// object stays loaded, so bring-up may register it.
pub(super) fn is_static(alloc: &NumaSlabAlloc) -> bool {
    // SAFETY: Dl_info is plain data, valid zeroed.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the loader's tables; any address may be asked about.
    unsafe { libc::dladdr(std::ptr::from_ref(alloc).cast(), &mut info) != 0 }
}

/// The prepare handler: the arena's lock, held across the fork.
pub(super) extern "C" fn prepare() {
    kmalloc::lock_for_fork();
}

/// The parent's handler.
pub(super) extern "C" fn parent() {
    kmalloc::unlock_after_fork();
}

/// The child's handler: the arena's lock released, every follower's machinery retired.
extern "C" fn child() {
    kmalloc::unlock_after_fork();
    for slot in &FOLLOWERS {
        // SAFETY: a non-null slot holds a `'static` allocator (`follow`).
        if let Some(alloc) = unsafe { slot.load(Ordering::Acquire).as_ref() } {
            alloc.after_fork_in_child();
        }
    }
}
