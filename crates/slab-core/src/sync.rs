//! The crate's only door to atomics, locks and `UnsafeCell`.
//!
//! Normal builds use std's types; `RUSTFLAGS="--cfg slab_core_loom"` switches every one of
//! them to loom's, so that the loom models in `tests/loom.rs` explore the interleavings of
//! the real code. The switch is scoped to this crate, as crossbeam scopes its own
//! (`crossbeam_loom`): a dependency that switches on a plain `cfg(loom)` keeps its std
//! types, and nothing but slab-core's own code runs under the model. Two things stay std's under loom on purpose, and are said so where they are:
//! the cache id counter (not part of any protocol) and the red-zone word compare-and-swap
//! on slab memory (loom cannot place its atomics in mmap'd memory; the hand-over of an
//! object between threads is ordered by the locks, which loom does model).

use std::fmt;

#[cfg(slab_core_loom)]
pub(crate) use loom::cell::UnsafeCell;
#[cfg(slab_core_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(slab_core_loom)]
use loom::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

#[cfg(not(slab_core_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// The header word of an array cache and the per-CPU published-array pointers: std's
/// atomics also under loom, because the rseq sequences (`rseq.rs`) read and write them
/// from assembly, which needs their plain memory layout. Under loom (always CAS mode)
/// they are only reached under a slot or node lock, which loom does model.
pub(crate) use std::sync::atomic::{AtomicPtr as PublishedPtr, AtomicU64 as HeaderWord};
#[cfg(not(slab_core_loom))]
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `UnsafeCell` with loom's closure API, so that the same code builds with both.
#[cfg(not(slab_core_loom))]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(slab_core_loom))]
impl<T> UnsafeCell<T> {
    /// A cell holding `value`.
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a mutable pointer to the content.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// A blocking lock (the kernel's spinlocks that may be held across a page allocation:
/// `l3->list_lock`, `cache_chain_mutex`). A panic while it is held does not poison it:
/// every critical section leaves the protected data consistent before it can panic.
pub(crate) struct Lock<T>(Mutex<T>);

/// The guard of a [`Lock`].
pub(crate) type LockGuard<'a, T> = MutexGuard<'a, T>;

impl<T> Lock<T> {
    /// A lock protecting `value`.
    pub(crate) fn new(value: T) -> Self {
        Self(Mutex::new(value))
    }

    /// Takes the lock, waiting as long as needed.
    pub(crate) fn lock(&self) -> LockGuard<'_, T> {
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Takes the lock if it is free (the kernel's `mutex_trylock`).
    pub(crate) fn try_lock(&self) -> Option<LockGuard<'_, T>> {
        #[cfg(not(slab_core_loom))]
        match self.0.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(poison)) => Some(poison.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
        #[cfg(slab_core_loom)]
        self.0.try_lock().ok()
    }
}

impl<T> fmt::Debug for Lock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Lock { .. }")
    }
}

/// A reader-writer lock (the slab registry), poison-free like [`Lock`].
pub(crate) struct ReadWriteLock<T>(RwLock<T>);

impl<T> ReadWriteLock<T> {
    /// A lock protecting `value`.
    pub(crate) fn new(value: T) -> Self {
        Self(RwLock::new(value))
    }

    /// Shared access.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, T> {
        self.0.read().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Exclusive access.
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, T> {
        self.0.write().unwrap_or_else(|poison| poison.into_inner())
    }
}

impl<T> fmt::Debug for ReadWriteLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReadWriteLock { .. }")
    }
}

/// The per-CPU and alien array-cache lock: one compare-and-swap to take it when free, and
/// no waiting on the fast paths. A fast path that finds it taken (another thread holds the
/// same CPU id: a stale `current_cpu`, a fake topology) goes to the slow path instead of
/// spinning. Slow paths that must have it (hotplug, tuning, validation) wait with
/// [`TryLock::lock`], which yields while it waits.
pub(crate) struct TryLock {
    locked: AtomicBool,
}

impl TryLock {
    /// A free lock.
    pub(crate) fn new() -> Self {
        Self { locked: AtomicBool::new(false) }
    }

    /// Takes the lock if it is free; one compare-and-swap.
    #[inline(always)]
    pub(crate) fn try_lock(&self) -> bool {
        self.locked.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// Takes the lock, yielding while another thread holds it. Slow paths only.
    pub(crate) fn lock(&self) {
        let mut spins = 0u32;
        while !self.try_lock() {
            while self.locked.load(Ordering::Relaxed) {
                spins = spins.wrapping_add(1);
                relax(spins);
            }
        }
    }

    /// Releases the lock taken by this thread.
    #[inline(always)]
    pub(crate) fn unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }
}

impl fmt::Debug for TryLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TryLock { .. }")
    }
}

/// What a waiting slow path does between two looks at a lock: a few spins, then yields.
/// Under loom every wait yields, as loom requires of spin loops.
fn relax(spins: u32) {
    #[cfg(slab_core_loom)]
    {
        let _ = spins;
        loom::thread::yield_now();
    }
    #[cfg(not(slab_core_loom))]
    if spins < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// Unique cache ids. A std atomic also under loom: the ids take no part in any protocol.
pub(crate) fn next_cache_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Compare-and-swap of one 64-bit word of slab memory (a debug red zone), so that two
/// racing frees of the same object cannot both pass the double-free check.
///
/// # Safety
/// `word` must be valid for reads and writes, aligned to 8 bytes, and only accessed
/// atomically while other threads may access it.
pub(crate) unsafe fn compare_exchange_word(word: *mut u64, current: u64, new: u64) -> Result<u64, u64> {
    // SAFETY: the caller guarantees validity and alignment; std's atomic is used under
    // loom too because loom's atomics cannot live in mmap'd slab memory.
    let atomic = unsafe { std::sync::atomic::AtomicU64::from_ptr(word) };
    atomic.compare_exchange(
        current,
        new,
        std::sync::atomic::Ordering::AcqRel,
        std::sync::atomic::Ordering::Acquire,
    )
}
