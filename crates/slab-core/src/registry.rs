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
use crate::sync::ReadWriteLock;

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
    names: ReadWriteLock<HashMap<u64, String>>,
}

impl SlabRegistry {
    /// An empty registry.
    pub(crate) fn new() -> Self {
        Self { slabs: ReadWriteLock::new(HashMap::new()), names: ReadWriteLock::new(HashMap::new()) }
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

    /// Adds a slab.
    pub(crate) fn insert(&self, base: usize, owner: SlabOwner) {
        self.slabs.write().insert(base, owner);
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
