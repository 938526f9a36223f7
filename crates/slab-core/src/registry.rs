//! The slab registry: which slabs exist, by base address, and which cache owns each.
//!
//! The fast paths never look here: they trust the caller's pointer (the raw `free` is an
//! `unsafe fn`) and read the descriptor at the masked address. The registry serves what
//! must work for *any* pointer: [`crate::Cache::node_of`], and the debug-mode free, which
//! refuses pointers no cache owns, or another cache owns, before touching their memory.
//! A debug free holds the read lock while it reads the descriptor, and a slab leaves the
//! registry under the write lock before it is unmapped, so the check never reads memory
//! that is being returned to the OS.

use std::collections::HashMap;

use crate::memory::page_size;
use crate::slab::MAX_GFP_ORDER;
use crate::sync::{AtomicUsize, Ordering, ReadWriteLock};

/// Who owns a registered slab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlabOwner {
    /// The owning cache's id.
    pub(crate) cache_id: u64,
    /// The slab's node.
    pub(crate) node: u32,
    /// The slab's size, which the lookup must match.
    pub(crate) slab_bytes: usize,
}

/// Every slab of one allocator's caches, plus the caches' names for error messages.
#[derive(Debug)]
pub(crate) struct SlabRegistry {
    pub(crate) slabs: ReadWriteLock<HashMap<usize, SlabOwner>>,
    /// Inserts announced by [`SlabRegistry::reserve`] and not made yet: the table keeps
    /// room for them. Changed only under the write lock of `slabs`.
    reserved: AtomicUsize,
    names: ReadWriteLock<HashMap<u64, String>>,
}

impl SlabRegistry {
    /// An empty registry.
    pub(crate) fn new() -> Self {
        Self {
            slabs: ReadWriteLock::new(HashMap::new()),
            reserved: AtomicUsize::new(0),
            names: ReadWriteLock::new(HashMap::new()),
        }
    }

    /// Records a cache's name.
    pub(crate) fn name_cache(&self, cache_id: u64, name: &str) {
        self.names.write().insert(cache_id, name.to_owned());
    }

    /// Forgets a cache's name.
    pub(crate) fn forget_cache(&self, cache_id: u64) {
        self.names.write().remove(&cache_id);
    }

    /// A cache's name, or a description of the id.
    pub(crate) fn cache_name(&self, cache_id: u64) -> String {
        self.names.read().get(&cache_id).cloned().unwrap_or_else(|| format!("<cache #{cache_id}>"))
    }

    /// Makes room in the table for one more slab, for a coming [`SlabRegistry::insert`];
    /// called with no lock held.
    ///
    /// The table never grows under a lock: when numaslab is the process's allocator, a
    /// bigger table comes from the kmalloc caches, whose growth inserts here under their
    /// node's list lock, and neither that lock nor the table's is reentrant. So a table
    /// without room is replaced by one allocated with no lock held, installed under the
    /// lock, and the old one is freed after unlocking (the seed's rule for array caches,
    /// applied to the registry). A reservation is counted, so that the room is still
    /// there when the insert comes, whatever other threads inserted meanwhile.
    pub(crate) fn reserve(&self) {
        loop {
            let capacity = {
                let slabs = self.slabs.write();
                let reserved = self.reserved.load(Ordering::Relaxed);
                // `len < capacity` means an insert does not reallocate.
                if slabs.len() + reserved < slabs.capacity() {
                    self.reserved.store(reserved + 1, Ordering::Relaxed);
                    return;
                }
                slabs.capacity()
            };
            let mut bigger = HashMap::with_capacity((capacity * 2).max(64));
            let old = {
                let mut slabs = self.slabs.write();
                let needed = slabs.len() + self.reserved.load(Ordering::Relaxed);
                if needed < slabs.capacity() || needed >= bigger.capacity() {
                    // Another thread grew the table meanwhile (or more than ours holds
                    // is needed now): ours is a spare.
                    Some(bigger)
                } else {
                    bigger.extend(slabs.drain());
                    Some(std::mem::replace(&mut *slabs, bigger))
                }
            };
            // The old table (or the spare) is freed here, with no lock held.
            drop(old);
        }
    }

    /// Gives back a reservation that no insert will use.
    pub(crate) fn cancel_reservation(&self) {
        let _slabs = self.slabs.write();
        let reserved = self.reserved.load(Ordering::Relaxed);
        self.reserved.store(reserved.saturating_sub(1), Ordering::Relaxed);
    }

    /// Adds a slab, using a reservation if one was made (without one, the table may grow
    /// here, under the lock: fine only where no allocation can come back to this
    /// registry, as in unit tests).
    pub(crate) fn insert(&self, base: usize, owner: SlabOwner) {
        let mut slabs = self.slabs.write();
        let reserved = self.reserved.load(Ordering::Relaxed);
        self.reserved.store(reserved.saturating_sub(1), Ordering::Relaxed);
        slabs.insert(base, owner);
    }

    /// Removes a slab; done before its memory is unmapped.
    pub(crate) fn remove(&self, base: usize) {
        self.slabs.write().remove(&base);
    }

    /// The owner of the slab holding `ptr`, trying every slab size: O(orders).
    pub(crate) fn find(&self, ptr: usize) -> Option<SlabOwner> {
        let slabs = self.slabs.read();
        (0..=MAX_GFP_ORDER).find_map(|order| {
            let bytes = page_size() << order;
            slabs.get(&(ptr & !(bytes - 1))).copied().filter(|owner| owner.slab_bytes == bytes)
        })
    }
}
