//! Node fallback (`fallback_alloc`, since kernel 2.6.18): when a node's slabs have no free
//! object and the node cannot grow, an allocation takes an object from another node,
//! nearest first by the distance matrix, instead of failing while other nodes have memory
//! to spare; unless the caller asked for that node only ([`Cache::alloc_node_exact`], the
//! kernel's `__GFP_THISNODE`).
//!
//! The order follows the kernel's (2.6.22 and later): first every other node that has free
//! objects on its lists, nearest first, with no growth; then the nearest node that can
//! grow. An object from another node is handed straight to the caller, never put in the
//! CPU's array (which holds local objects only); its free is a remote free, through the
//! alien cache, as for any other node's object.

use std::ptr::NonNull;

use topology::NodeId;

use crate::cache::{Cache, KmemCache};
use crate::error::{Error, Result};
use crate::slab::SlabChain;

/// Which nodes a direct allocation may take its object from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeScope {
    /// The node asked for, else another one (`fallback_alloc`).
    AnyNode,
    /// The node asked for only (`__GFP_THISNODE`).
    ThisNode,
}

impl Cache {
    /// An object from `node` and no other (`kmem_cache_alloc_node` with
    /// `__GFP_THISNODE`): when `node` has no free object and cannot grow, this is
    /// [`Error::OutOfMemory`], where [`Cache::alloc_node`] would take another node's.
    /// The object comes from the node's lists, not through a CPU's array. A node
    /// without memory is [`Error::NodeWithoutMemory`], one outside the allowed memory
    /// nodes [`Error::NodeNotAllowed`], an impossible one [`Error::UnknownNode`].
    pub fn alloc_node_exact(&self, node: NodeId) -> Result<NonNull<u8>> {
        let kmem = self.kmem();
        let nearest = kmem.machine.fallback_of(node)?;
        if nearest != node && kmem.machine.topology.has_memory(node) {
            return Err(Error::NodeNotAllowed { node, nearest });
        }
        if nearest != node {
            return Err(Error::NodeWithoutMemory { node, nearest });
        }
        kmem.cache_alloc_node(node, NodeScope::ThisNode)
    }
}

impl KmemCache {
    /// `__cache_alloc_node`: one object straight from `node`'s slabs, growing the node
    /// when it has none free; when the growth fails, `fallback_alloc` unless `scope` is
    /// [`NodeScope::ThisNode`].
    pub(crate) fn cache_alloc_node(&self, node: NodeId, scope: NodeScope) -> Result<NonNull<u8>> {
        loop {
            if let Some(result) = self.take_direct(node) {
                return result;
            }
            if let Err(error) = self.cache_grow(node) {
                return match scope {
                    NodeScope::ThisNode => Err(error),
                    NodeScope::AnyNode => self.fallback_alloc(node, error),
                };
            }
        }
    }

    /// One object from `node`'s lists as they are, without growing: `None` when the node
    /// has no free object. Counted as a direct allocation; checked in debug mode.
    fn take_direct(&self, node: NodeId) -> Option<Result<NonNull<u8>>> {
        let l3 = self.l3(node);
        let mut chain = SlabChain::default();
        let (obj, refused) = {
            let mut state = l3.list_lock.lock();
            if state.destroyed {
                return Some(Err(self.destroyed_error()));
            }
            // The next allocation on a node drains its queued remote frees to its slabs: a
            // node without CPUs has no refill to do it.
            let refused = l3.drain_remote(&mut state, &self.geometry, node, &mut chain, |_| 0);
            let obj = state.take_object(&self.geometry);
            if obj.is_some() {
                state.direct_allocs = state.direct_allocs.wrapping_add(1);
            }
            (obj, refused)
        };
        self.note_refused(refused);
        self.slabs_destroy(chain);
        let obj = obj?;
        if self.debug {
            return Some(self.debug_alloc_direct(node, obj));
        }
        // SAFETY: objects are slab addresses, never null.
        Some(Ok(unsafe { NonNull::new_unchecked(obj) }))
    }

    /// `fallback_alloc`: `node` could not grow (`error`). Rare (memory is short, or a
    /// test injected the failure), so it pays for walking the distance matrix. Returns
    /// `error` itself when no other node can serve, and never falls back from a destroyed
    /// cache or an error that is not a shortage of memory.
    #[cold]
    #[inline(never)]
    pub(crate) fn fallback_alloc(&self, node: NodeId, error: Error) -> Result<NonNull<u8>> {
        if !matches!(error, Error::OutOfMemory { .. }) {
            return Err(error);
        }
        // First the free objects of other nodes, nearest first, with no growth.
        let mut cursor = None;
        while let Some(other) = self.next_nearest(node, &mut cursor) {
            if let Some(result) = self.take_direct(other) {
                return result;
            }
        }
        // Then the nearest node that can grow.
        let mut cursor = None;
        while let Some(other) = self.next_nearest(node, &mut cursor) {
            match self.cache_alloc_node(other, NodeScope::ThisNode) {
                Ok(obj) => return Ok(obj),
                Err(Error::OutOfMemory { .. }) => continue,
                Err(other_error) => return Err(other_error),
            }
        }
        Err(error)
    }

    /// The memory node after `cursor` in the order of distance from `node` (ties by id),
    /// `node` itself excluded: the kernel's zonelist order, found without allocating (a
    /// fallback may run because memory is short).
    fn next_nearest(&self, node: NodeId, cursor: &mut Option<(u32, NodeId)>) -> Option<NodeId> {
        let topology = &self.machine.topology;
        let next = self
            .machine
            .memory_nodes
            .iter()
            .filter(|&&other| other != node)
            .map(|&other| (topology.distance(node, other).unwrap_or(u32::MAX), other))
            .filter(|&key| cursor.is_none_or(|after| key > after))
            .min()?;
        *cursor = Some(next);
        Some(next.1)
    }
}

#[cfg(test)]
mod tests;
