//! The seed's CPU hotplug rules, per cache (`cpuup_callback` in `mm/slab.c` after the
//! patch "NUMA slab locking fixes: fix cpu down and up locking"). The allocator's
//! `cpu_*` methods take the cache_chain mutex and call these for every cache; see
//! `docs/hotplug-locking.md` for the rule-by-rule map.

use topology::{CpuId, NodeId};

use crate::array_cache::ArrayCache;
use crate::barn::{barn_sheaves, BarnContents};
use crate::cache::KmemCache;
use crate::error::Result;
use crate::failslab::UNUSED_BATCHCOUNT;
use crate::node::free_limit;
use crate::slab::SlabChain;
use crate::tune::Tunables;

/// The kernel's alien array size (`alloc_alien_cache`: "if (limit > 1) limit = 12"), for
/// a cache without barns.
const ALIEN_LIMIT: u32 = 12;

/// The size of each alien array of a cache with these tunables. Where the owner node has
/// a barn (`shared` > 0), an alien array is a sheaf being filled for it: as large as a CPU
/// array, so that a full one is handed to the owner's barn whole (`alien_flush_and_push`).
/// Without a barn, the kernel's 12.
pub(crate) fn alien_limit(tunables: Tunables) -> u32 {
    if barn_sheaves(tunables.limit, tunables.batchcount, tunables.shared) > 0 {
        tunables.limit
    } else if tunables.limit > 1 {
        ALIEN_LIMIT
    } else {
        tunables.limit
    }
}

/// The arrays `cpu_up_prepare` allocates for one cache before taking any lock.
struct Prepared {
    nc: Option<ArrayCache>,
    barn: Option<BarnContents>,
    alien: Vec<(NodeId, Option<ArrayCache>)>,
}

impl KmemCache {
    /// CPU_UP_PREPARE for one cache: allocate the CPU's array cache, the sheaves of the
    /// node's barn (in the shared array's place) and the node's alien caches *before*
    /// taking the node's list lock, install them under it only where still absent, and
    /// free the spares after unlocking. `cpus_on_node` counts the node's prepared CPUs
    /// including this one, for `free_limit`.
    pub(crate) fn cpu_up_prepare(&self, cpu: CpuId, home: NodeId, cpus_on_node: usize) -> Result<()> {
        let tunables = self.tunables.get();
        // alloc_arraycache(node, limit, batchcount), then the barn's sheaves and the alien
        // arrays: all allocation happens here, with no lock held.
        let nc = self.alloc_arraycache(home, tunables.limit, tunables.batchcount)?;
        let barn = match barn_sheaves(tunables.limit, tunables.batchcount, tunables.shared) {
            0 => None,
            sheaves => Some(self.alloc_barn(home, sheaves, tunables.limit)?),
        };
        let alien_limit = alien_limit(tunables);
        let mut alien = Vec::new();
        for &owner in self.machine.memory_nodes.iter().filter(|&&n| n != home) {
            let ac = self.alloc_arraycache(home, alien_limit, UNUSED_BATCHCOUNT)?;
            alien.push((owner, Some(ac)));
        }
        let mut prepared = Prepared { nc: Some(nc), barn, alien };
        self.install(cpu, home, cpus_on_node, &mut prepared);
        // Spares (a node that had its barn's sheaves or alien caches already) are freed here,
        // after every lock was released.
        drop(prepared);
        Ok(())
    }

    /// The installing half of `cpu_up_prepare`: `cachep->array[cpu] = nc`, then under
    /// the list lock the barn's sheaves (`l3->shared`'s place) and `l3->alien` where
    /// absent. What was installed is taken out of `prepared`; what is left there are
    /// spares.
    fn install(&self, cpu: CpuId, home: NodeId, cpus_on_node: usize, prepared: &mut Prepared) {
        if let Some(slot) = self.array.get(cpu as usize) {
            let mut guard = slot.lock();
            guard.with(|data| {
                if let Some(nc) = prepared.nc.take() {
                    prepared.nc = data.install(nc);
                }
            });
        }
        let l3 = self.l3(home);
        let mut state = l3.list_lock.lock();
        let tunables = self.tunables.get();
        state.free_limit = free_limit(cpus_on_node, tunables.batchcount, self.geometry.num);
        if let Some(contents) = prepared.barn.take() {
            prepared.barn = l3.barn.install(contents);
        }
        for (owner, spare) in prepared.alien.iter_mut() {
            let mut guard = l3.alien[*owner as usize].lock();
            guard.with(|data| {
                if let Some(ac) = spare.take() {
                    *spare = data.install(ac);
                }
            });
        }
        drop(state);
    }

    /// CPU_DEAD and CPU_UP_CANCELED for one cache, first pass: detach the CPU's array and
    /// return its objects to the slabs under the node's list lock. If the node has no
    /// prepared CPU left (`last`), detach the barn's sheaves and the alien caches under the
    /// same lock: the full sheaves' objects and the queued remote frees are `free_block`-ed
    /// under it, and only after unlocking are the sheaves freed, the alien caches drained
    /// to their owners and freed, and the CPU's array freed. The node lists, the barn's
    /// structure and the remote-free queue are never freed: remote frees pushed after this
    /// are drained by the reaper, the next allocation on the node, shrink or destroy.
    pub(crate) fn cpu_dead(&self, cpu: CpuId, home: NodeId, remaining_cpus: usize) {
        let last = remaining_cpus == 0;
        // "cpu is dead; no one can alloc from it": detach under the slot lock, waiting
        // for any thread still holding the dead CPU's id to finish its operation.
        let mut nc = self.array.get(cpu as usize).and_then(|slot| slot.lock().with(|data| data.take()));
        let mut chain = SlabChain::default();
        let mut barn = None;
        let mut alien = Vec::new();
        let l3 = self.l3(home);
        {
            let mut state = l3.list_lock.lock();
            let tunables = self.tunables.get();
            state.free_limit = free_limit(remaining_cpus, tunables.batchcount, self.geometry.num);
            if let Some(nc) = nc.as_mut() {
                // SAFETY: the array held handed-out objects of its home node.
                unsafe { self.return_to_slabs(&mut state, nc.objects(), home, &mut chain) };
            }
            if last {
                let contents = l3.barn.detach();
                for sheaf in contents.full_sheaves() {
                    // SAFETY: the barn's sheaves held handed-out objects of this node.
                    unsafe { self.return_to_slabs(&mut state, sheaf.objects(), home, &mut chain) };
                }
                barn = Some(contents);
                let refused = l3.drain_remote(&mut state, &self.geometry, home, &mut chain, |_| 0);
                self.note_refused(refused);
                for slot in l3.alien.iter() {
                    if let Some(ac) = slot.lock().with(|data| data.take()) {
                        alien.push((slot.node, ac));
                    }
                }
            }
        }
        // kfree(shared): the barn's sheaves, after unlocking.
        drop(barn);
        // drain_alien_cache + free_alien_cache, after unlocking.
        for (owner, ac) in alien {
            self.drain_detached(owner, ac, &mut chain);
        }
        // kfree(nc).
        drop(nc);
        self.slabs_destroy(chain);
    }

    /// Returns a detached array's objects to their node's slabs and frees the array.
    pub(crate) fn drain_detached(&self, node: NodeId, ac: ArrayCache, chain: &mut SlabChain) {
        if ac.avail() > 0 {
            let mut state = self.l3(node).list_lock.lock();
            // SAFETY: the array held handed-out objects of `node`.
            unsafe { self.return_to_slabs(&mut state, ac.objects(), node, chain) };
        }
        drop(ac);
    }

    /// CPU_DEAD second pass: "all the objects were freed to the respective cache's slabs,
    /// now we can go ahead and shrink each nodelist to its limit" (`__node_shrink`).
    /// The slabs are unmapped after the lock is released. Returns how many.
    pub(crate) fn shrink_node(&self, node: NodeId) -> usize {
        let mut chain = SlabChain::default();
        self.l3(node).list_lock.lock().node_shrink(&self.geometry, &mut chain);
        self.slabs_destroy(chain)
    }
}

#[cfg(test)]
mod tests;
