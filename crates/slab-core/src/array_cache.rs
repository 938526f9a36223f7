//! Array caches (`struct array_cache`): LIFO stacks of object pointers, and the slots
//! that hold them: one per possible CPU (`cachep->array[cpu]`) and one per pair of nodes
//! for the alien caches (`l3->alien[node]`).
//!
//! # The slot protocol
//!
//! The kernel protects a CPU's array by running on that CPU with interrupts off. In user
//! space several threads can hold the same CPU id (a stale `current_cpu`, a fake machine),
//! so each [`ArraySlot`] has a [`TryLock`]: the fast paths take it with one
//! compare-and-swap and, finding it taken, go to the slow path instead of waiting.
//!
//! A slot lives as long as its cache; the array inside it comes and goes with CPU
//! hotplug. `None` is the *detached* state: the CPU's array was never prepared, or was
//! detached by `cpu_dead`. Every access to the array, by any thread, happens under the
//! slot lock, and hotplug detaches an array by taking the slot lock (waiting for it),
//! moving the array out, and releasing the lock. From then on the array is owned by the
//! hotplug thread alone: no other thread can reach it, so it can be drained and freed
//! without any use after release. A thread that finds a slot detached (under its lock)
//! is served by the slow path from the node lists: nothing is lost, nothing is used after
//! release.
//!
//! The slot also counts the objects handed out and taken back through it, under the same
//! lock, so that `validate` (which takes every lock) can account for objects that are out
//! with callers.
//!
//! # What the compare-and-swap costs, and what could replace it
//!
//! The slot's compare-and-swap is most of a fast path's time: on this project's
//! reference machine (AMD EPYC, 2 CPUs) a `lock cmpxchg` plus the releasing store costs
//! about 2.2 ns more than a plain load and store, so about 4.4 ns of an alloc/free pair
//! (about 6 ns in all) go to the two locks. Nothing cheaper is safe here as the code
//! stands: the kernel's answer (interrupts off on the owning CPU) has two user-space
//! counterparts, both far larger changes: restartable sequences (an rseq critical section
//! per pop and push, committed by its final store, with `membarrier(MEMBARRIER_CMD_
//! PRIVATE_EXPEDITED_RSEQ)` as the fence every other user of a CPU's array, hotplug,
//! the reaper, tuning, a thread holding a stale CPU id, must issue before touching it:
//! tcmalloc's per-CPU caches), or biased slots owned by one thread with an asymmetric
//! fence for revocation. Neither can be checked by the loom models, and fixtures and
//! fakes (virtual CPUs) would still need this lock; both are left for later.

use std::collections::TryReserveError;

use crate::barn::Sheaf;
use crate::sync::{TryLock, UnsafeCell};

/// The kernel's `struct array_cache`: `avail` objects at `entry[0..avail]`, LIFO.
#[derive(Debug)]
pub(crate) struct ArrayCache {
    /// Objects in the array.
    pub(crate) avail: u32,
    /// Capacity.
    pub(crate) limit: u32,
    /// Objects moved per refill or flush.
    pub(crate) batchcount: u32,
    /// Used since the last reap (`touched`): the reaper then spares it once.
    pub(crate) touched: bool,
    entry: Box<[*mut u8]>,
}

// SAFETY: the entries are addresses of slab objects; an array is only reached under the
// lock of the slot or node that holds it.
unsafe impl Send for ArrayCache {}

impl ArrayCache {
    /// A new empty array (`alloc_arraycache`). Fails instead of aborting when the memory
    /// cannot be had, so that a CPU bring-up can be refused and rolled back.
    pub(crate) fn new(limit: u32, batchcount: u32) -> Result<Self, TryReserveError> {
        let mut entry = Vec::new();
        entry.try_reserve_exact(limit as usize)?;
        entry.resize(limit as usize, std::ptr::null_mut());
        Ok(Self { avail: 0, limit, batchcount, touched: false, entry: entry.into_boxed_slice() })
    }

    /// Takes the most recently added object (`ac->entry[--ac->avail]`).
    #[inline(always)]
    pub(crate) fn pop(&mut self) -> Option<*mut u8> {
        if self.avail == 0 {
            return None;
        }
        self.avail -= 1;
        self.touched = true;
        // SAFETY: avail < limit == entry.len(): push never lets avail pass limit.
        Some(unsafe { *self.entry.get_unchecked(self.avail as usize) })
    }

    /// Adds an object if there is room (`ac->entry[ac->avail++] = objp`).
    #[inline(always)]
    pub(crate) fn push(&mut self, obj: *mut u8) -> bool {
        if self.avail >= self.limit {
            return false;
        }
        // SAFETY: avail < limit == entry.len().
        unsafe { *self.entry.get_unchecked_mut(self.avail as usize) = obj };
        self.avail += 1;
        true
    }

    /// Room left.
    pub(crate) fn room(&self) -> u32 {
        self.limit - self.avail
    }

    /// The objects held, oldest first.
    pub(crate) fn objects(&self) -> &[*mut u8] {
        &self.entry[..self.avail as usize]
    }

    /// Drops the `count` oldest objects from the array after the caller has handed them
    /// elsewhere, moving the rest down (the kernel's `memmove` after `free_block`).
    pub(crate) fn remove_oldest(&mut self, count: u32) {
        let count = count.min(self.avail);
        self.entry.copy_within(count as usize..self.avail as usize, 0);
        self.avail -= count;
    }

    /// Exchanges the array's storage whole (a sheaf, SLUB's `pcs->main`) through `f`,
    /// which gets the storage with its objects and gives back a sheaf to use from now on,
    /// or the same one refused. The array takes whatever `f` returns: its `limit` becomes
    /// that sheaf's capacity (the same, for a barn of this array's size). Returns whether
    /// `f` gave another sheaf.
    pub(crate) fn exchange(&mut self, f: impl FnOnce(Sheaf) -> Result<Sheaf, Sheaf>) -> bool {
        let entry = std::mem::take(&mut self.entry);
        let avail = std::mem::replace(&mut self.avail, 0);
        // Until the storage comes back the array has none: limit 0, so nothing is pushed
        // out of bounds whatever happens in `f`.
        let limit = std::mem::replace(&mut self.limit, 0);
        let (exchanged, sheaf) = match f(Sheaf::from_parts(entry, avail)) {
            Ok(sheaf) => (true, sheaf),
            Err(sheaf) => (false, sheaf),
        };
        let (entry, avail) = sheaf.into_parts();
        debug_assert!(exchanged || entry.len() == limit as usize, "a refused sheaf is the array's own");
        self.limit = entry.len() as u32;
        self.avail = avail;
        self.entry = entry;
        if exchanged {
            self.touched = true;
        }
        exchanged
    }
}

/// What a slot protects: its array (absent when detached) and its counters.
#[derive(Debug, Default)]
pub(crate) struct SlotData {
    /// The array cache; `None` when detached or never prepared.
    pub(crate) array: Option<ArrayCache>,
    /// Objects handed to callers through this slot.
    pub(crate) allocs: u64,
    /// Objects taken back from callers through this slot.
    pub(crate) frees: u64,
}

impl SlotData {
    /// Objects handed out minus taken back through this slot (may be negative: objects
    /// travel between CPUs).
    pub(crate) fn net_out(&self) -> i64 {
        self.allocs.wrapping_sub(self.frees) as i64
    }
}

/// A lockable home for an array cache: `cachep->array[cpu]` or `l3->alien[node]`.
pub(crate) struct ArraySlot {
    lock: TryLock,
    /// For a CPU slot, the CPU's node with memory (`numa_node_id()`, or the nearest
    /// memory node for a CPU of a memory-less node); for an alien slot, the node the
    /// objects belong to. Fixed at creation.
    pub(crate) node: u32,
    data: UnsafeCell<SlotData>,
}

// SAFETY: `data` is only reached under `lock` (see `SlotGuard`); `node` is immutable.
unsafe impl Sync for ArraySlot {}
// SAFETY: as above; the raw pointers inside are slab object addresses.
unsafe impl Send for ArraySlot {}

impl std::fmt::Debug for ArraySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArraySlot").field("node", &self.node).finish_non_exhaustive()
    }
}

impl ArraySlot {
    /// A detached slot for `node`.
    pub(crate) fn new(node: u32) -> Self {
        Self { lock: TryLock::new(), node, data: UnsafeCell::new(SlotData::default()) }
    }

    /// Takes the slot if it is free: the fast paths' single compare-and-swap.
    #[inline(always)]
    pub(crate) fn try_lock(&self) -> Option<SlotGuard<'_>> {
        if self.lock.try_lock() {
            Some(SlotGuard { slot: self })
        } else {
            None
        }
    }

    /// Takes the slot, waiting for the thread that holds it. Slow paths only.
    pub(crate) fn lock(&self) -> SlotGuard<'_> {
        self.lock.lock();
        SlotGuard { slot: self }
    }
}

/// Exclusive access to a slot's data; releases the slot when dropped.
pub(crate) struct SlotGuard<'a> {
    slot: &'a ArraySlot,
}

impl SlotGuard<'_> {
    /// Runs `f` on the slot's data. `&mut self` keeps calls from nesting.
    #[inline(always)]
    pub(crate) fn with<R>(&mut self, f: impl FnOnce(&mut SlotData) -> R) -> R {
        // SAFETY: the guard holds the slot lock, so this is the only access to the data;
        // `&mut self` prevents a second `&mut` from this guard while the first lives.
        self.slot.data.with_mut(|data| f(unsafe { &mut *data }))
    }

    /// The slot's node.
    #[inline(always)]
    pub(crate) fn node(&self) -> u32 {
        self.slot.node
    }
}

impl Drop for SlotGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.slot.lock.unlock();
    }
}

impl std::fmt::Debug for SlotGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotGuard").field("node", &self.slot.node).finish()
    }
}

#[cfg(test)]
mod tests;
