//! Reaping and draining: `cache_reap` (the periodic drain of untouched arrays, alien
//! caches, queued remote frees, untouched barns and surplus free slabs),
//! `drain_cpu_caches`, `kmem_cache_shrink`, and the teardown used by `destroy_cache` and
//! by the drop of a cache's last handle.

use std::time::{Duration, Instant};

use topology::{CpuId, NodeId};

use crate::array_cache::ArrayCache;
use crate::barn::BarnContents;
use crate::cache::KmemCache;
use crate::node::NodeState;
use crate::slab::SlabChain;

/// When the node-level part of `cache_reap` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodePass {
    /// When the node's `next_reap` has passed; then again after this long (the kernel's
    /// `REAPTIMEOUT_LIST3`).
    Due(Duration),
    /// Now (an explicit `reap()`).
    Now,
}

/// What `drain_cpu_caches` leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DrainMode {
    /// Empty arrays stay attached (`kmem_cache_shrink`).
    Empty,
    /// Arrays are detached and freed (destroy, last handle dropped): the fast paths then
    /// find every slot detached and take the slow path, which refuses a destroyed cache.
    Detach,
}

/// How much of an array `drain_array_locked` frees (the kernel's `force` argument, 0 or
/// 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drain {
    /// The reaper's share: spare a touched array once, else free about a fifth; skip an
    /// alien cache another thread holds.
    ReaperShare,
    /// Everything, waiting for the lock.
    Everything,
}

/// `drain_array_locked`'s choice: how many of the oldest objects to free, clearing
/// `touched` when a touched array is spared.
fn objects_to_drain(ac: &mut ArrayCache, drain: Drain) -> u32 {
    if ac.avail() == 0 {
        return 0;
    }
    if drain == Drain::ReaperShare && ac.touched() {
        ac.set_touched(false);
        return 0;
    }
    if drain == Drain::Everything {
        return ac.avail();
    }
    let tofree = ac.limit().div_ceil(5);
    if tofree > ac.avail() {
        ac.avail().div_ceil(2)
    } else {
        tofree
    }
}

impl KmemCache {
    /// Whether `destroy_cache` has marked the cache.
    pub(crate) fn is_destroyed(&self) -> bool {
        self.nodelists.first().is_some_and(|l3| l3.list_lock.lock().destroyed)
    }

    /// Returns the oldest objects of an array to `node`'s slabs (`drain_array_locked`),
    /// taking the node's lock inside the array's.
    fn drain_array(&self, ac: &mut ArrayCache, node: NodeId, drain: Drain, chain: &mut SlabChain) {
        let tofree = objects_to_drain(ac, drain);
        if tofree == 0 {
            return;
        }
        let mut state = self.l3(node).list_lock.lock();
        // SAFETY: array entries are handed-out objects of `node`.
        unsafe { self.return_to_slabs(&mut state, &ac.objects()[..tofree as usize], node, chain) };
        drop(state);
        ac.remove_oldest(tofree);
    }

    /// Drains a node's alien caches to their owners (`drain_alien_cache`). The reaper
    /// skips an alien cache another thread holds.
    fn drain_alien_cache(&self, node: NodeId, drain: Drain, chain: &mut SlabChain) {
        for slot in self.l3(node).alien.iter() {
            let guard = if drain == Drain::Everything { Some(slot.lock()) } else { slot.try_lock() };
            let Some(mut guard) = guard else { continue };
            let owner = guard.node();
            guard.with(|data| {
                if let Some(ac) = data.array_mut() {
                    self.drain_array(ac, owner, Drain::Everything, chain);
                }
            });
        }
    }

    /// `cache_reap`'s per-CPU part, done on behalf of `cpu`: drain its node's alien
    /// caches, then spare or trim its array.
    pub(crate) fn reap_cpu(&self, cpu: CpuId) {
        let Some(slot) = self.array.get(cpu as usize) else { return };
        let mut chain = SlabChain::default();
        self.drain_alien_cache(slot.node, Drain::ReaperShare, &mut chain);
        if let Some(mut guard) = slot.try_lock() {
            let node = guard.node();
            guard.with(|data| {
                if let Some(ac) = data.array_mut() {
                    self.drain_array(ac, node, Drain::ReaperShare, &mut chain);
                }
            });
        }
        self.slabs_destroy(chain);
    }

    /// `cache_reap`'s per-node part: when due, drain the node's queued remote frees, trim
    /// its barn and, unless a refill took a free slab since last time (`free_touched`),
    /// return about a fifth of `free_limit` worth of free slabs. Returns how many slabs
    /// went to the OS.
    pub(crate) fn reap_node(&self, node: NodeId, pass: NodePass) -> usize {
        let mut chain = SlabChain::default();
        {
            let mut guard = self.l3(node).list_lock.lock();
            let state = &mut *guard;
            if let NodePass::Due(period) = pass {
                let now = Instant::now();
                match state.next_reap {
                    Some(next) if next > now => return 0,
                    _ => state.next_reap = Some(now + period),
                }
            }
            let l3 = self.l3(node);
            // Remote frees queued for the node go to its slabs: the reaper is what drains
            // the queue of a node without CPUs.
            let refused = l3.drain_remote(state, &self.geometry, node, &mut chain, |_| 0);
            self.note_refused(refused);
            self.trim_barn(node, state, &mut chain);
            if state.free_touched {
                state.free_touched = false;
            } else {
                let num = self.geometry.num as usize;
                let tofree = state.free_limit.div_ceil(5 * num);
                state.trim_free(&self.geometry, tofree, &mut chain);
            }
        }
        self.slabs_destroy(chain)
    }

    /// The barn's part of `cache_reap` (`drain_array(l3->shared)`): a barn a CPU took a
    /// full sheaf from since the last pass is spared once; otherwise about a fifth of its
    /// sheaves' worth (at least one full sheaf, the oldest first) goes back to the slabs,
    /// and the emptied sheaves stay in the barn. `state` is the node's locked state.
    fn trim_barn(&self, node: NodeId, state: &mut NodeState, chain: &mut SlabChain) {
        let barn = &self.l3(node).barn;
        if barn.clear_touched() {
            return;
        }
        let counts = barn.counts();
        let tofree = (counts.full_sheaves + counts.empty_sheaves).div_ceil(5);
        for _ in 0..tofree {
            let Some(mut sheaf) = barn.take_oldest_full() else { break };
            // SAFETY: the barn's sheaves hold handed-out objects of this node.
            unsafe { self.return_to_slabs(state, sheaf.objects(), node, chain) };
            sheaf.clear();
            // The sheaf was the barn's, and the barn cannot change size while the caller
            // holds the cache_chain mutex: it always has room for it again.
            drop(barn.put_empty(sheaf));
        }
    }

    /// Returns every object of the node's barn and remote-free queue to its slabs, under
    /// the node's lock: the barn's contents are emptied in place, or detached and handed
    /// back for the caller to free after unlocking (`DrainMode::Detach`).
    fn drain_node_caches(
        &self,
        node: NodeId,
        mode: DrainMode,
        chain: &mut SlabChain,
    ) -> Option<BarnContents> {
        let l3 = self.l3(node);
        let mut guard = l3.list_lock.lock();
        let state = &mut *guard;
        let refused = l3.drain_remote(state, &self.geometry, node, chain, |_| 0);
        self.note_refused(refused);
        let mut contents = l3.barn.detach();
        for sheaf in contents.full_sheaves() {
            // SAFETY: the barn's sheaves hold handed-out objects of this node.
            unsafe { self.return_to_slabs(state, sheaf.objects(), node, chain) };
        }
        contents.clear_full();
        match mode {
            DrainMode::Empty => l3.barn.install(contents),
            DrainMode::Detach => Some(contents),
        }
    }

    /// `drain_cpu_caches`: every CPU array, then every alien cache, then every node's
    /// remote-free queue and barn back to the slabs ("drains alien caches before shared
    /// ones"; the queues and barns take the shared arrays' place). Returns how
    /// many slabs the drain emptied beyond the nodes' free limits and released.
    pub(crate) fn drain_cpu_caches(&self, mode: DrainMode) -> usize {
        let mut chain = SlabChain::default();
        for slot in self.array.iter() {
            let node = slot.node;
            let mut guard = slot.lock();
            match mode {
                DrainMode::Empty => guard.with(|data| {
                    if let Some(ac) = data.array_mut() {
                        self.drain_array(ac, node, Drain::Everything, &mut chain);
                    }
                }),
                DrainMode::Detach => {
                    let detached = guard.with(|data| data.take());
                    drop(guard);
                    if let Some(ac) = detached {
                        self.drain_detached(node, ac, &mut chain);
                    }
                }
            }
        }
        for node in 0..self.nodelists.len() as NodeId {
            match mode {
                DrainMode::Empty => self.drain_alien_cache(node, Drain::Everything, &mut chain),
                DrainMode::Detach => {
                    for slot in self.l3(node).alien.iter() {
                        let detached = slot.lock().with(|data| data.take());
                        if let Some(ac) = detached {
                            self.drain_detached(slot.node, ac, &mut chain);
                        }
                    }
                }
            }
        }
        for node in 0..self.nodelists.len() as NodeId {
            // Freed after the node's lock is released.
            drop(self.drain_node_caches(node, mode, &mut chain));
        }
        self.slabs_destroy(chain)
    }

    /// `__cache_shrink`: drain every array and return every free slab; the caller holds
    /// the cache_chain mutex. Returns how many slabs went to the OS.
    pub(crate) fn shrink_locked(&self) -> usize {
        let drained = self.drain_cpu_caches(DrainMode::Empty);
        drained + (0..self.nodelists.len() as NodeId).map(|node| self.shrink_node(node)).sum::<usize>()
    }

    /// `kmem_cache_shrink`, serialized against hotplug by the cache_chain mutex: the free
    /// slabs leave the cache and the page cache returns every block it holds to the OS.
    pub(crate) fn shrink(&self) -> usize {
        let allocator = self.allocator.upgrade();
        let chain = allocator.as_ref().map(|allocator| allocator.chain.lock());
        let released = self.shrink_locked();
        drop(chain);
        self.pages.drain_all();
        released
    }

    /// Objects handed out of all slabs (in arrays or with callers).
    pub(crate) fn objects_in_slabs_in_use(&self) -> usize {
        self.nodelists.iter().map(|l3| l3.list_lock.lock().objects_in_use(&self.geometry)).sum()
    }

    /// Marks every node destroyed (or not).
    pub(crate) fn set_destroyed(&self, destroyed: bool) {
        for l3 in self.nodelists.iter() {
            l3.list_lock.lock().destroyed = destroyed;
        }
    }

    /// Returns every slab to the OS, through the page cache; only when no object is
    /// handed out.
    pub(crate) fn release_all_slabs(&self) -> usize {
        let released = (0..self.nodelists.len() as NodeId).map(|node| self.shrink_node(node)).sum();
        self.registry.forget_cache(self.id);
        self.pages.drain_all();
        released
    }

    /// The drop of the last handle: detach and drain everything, then free all slabs if
    /// no object is out. Returns whether the cache's memory may be freed.
    pub(crate) fn release_if_unused(&self) -> bool {
        if self.is_destroyed() {
            return true;
        }
        self.drain_cpu_caches(DrainMode::Detach);
        if self.objects_in_slabs_in_use() > 0 {
            return false;
        }
        self.set_destroyed(true);
        self.release_all_slabs();
        true
    }
}

#[cfg(test)]
mod tests;
