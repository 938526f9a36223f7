//! Tunables: the kernel's defaults by object size (`enable_cpucache`) and run-time
//! changes (`do_tune_cpucache`, checked as `slabinfo_write` checks them).

use topology::{CpuId, CpuSet, NodeId};

use crate::barn::barn_sheaves;
use crate::cache::{Cache, KmemCache};
use crate::error::{Error, Result};
use crate::failslab::UNUSED_BATCHCOUNT;
use crate::hotplug::alien_limit;
use crate::memory::page_size;
use crate::node::free_limit;
use crate::slab::SlabChain;
use crate::sync::Lock;

/// The largest `limit` accepted: far above the kernel's defaults (120 at most), low
/// enough that a typo cannot ask for gigabytes of array caches.
pub const MAX_LIMIT: u32 = 1 << 15;
/// The largest `shared * batchcount` accepted (the objects a node's barn holds, rounded
/// up to whole sheaves).
pub const MAX_SHARED_ENTRIES: u32 = 1 << 20;

/// The default shared factor on SMP: `shared * batchcount` objects make 10 sheaves of
/// `limit` (batchcount is half the limit), the most full sheaves SLUB's barn keeps
/// (`MAX_FULL_SHEAVES`). The kernel SLAB's factor was 8, a shared array of four arrays'
/// worth; a barn that small sends any batch of more than five arrays' worth of objects
/// (a thread freeing 1024 objects of 64 bytes, say) to the slab lists object by object,
/// where ten sheaves exchange whole. The reaper trims a barn no CPU took a sheaf from,
/// as it did the shared array.
pub const DEFAULT_SHARED: u32 = 20;

/// A cache's per-CPU array tunables, as `/proc/slabinfo` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunables {
    /// Objects a CPU's array holds at most.
    pub limit: u32,
    /// Objects moved per refill or flush.
    pub batchcount: u32,
    /// The shared factor: each node's barn holds sheaves (arrays of `limit` objects) for
    /// `shared * batchcount` objects, rounded up to whole sheaves, as the kernel's shared
    /// array held `shared * batchcount`; 0 for no barn.
    pub shared: u32,
}

impl Tunables {
    /// `enable_cpucache`'s defaults for objects of `buffer_size` bytes: the limit by size
    /// (">131072: 1, >PAGE_SIZE: 8, >1024: 24, >256: 54, else 120"), batchcount
    /// `(limit + 1) / 2`, a shared factor of [`DEFAULT_SHARED`] on SMP for objects up to a
    /// page (the kernel's was 8), and a limit of at most 32 with debugging on ("large
    /// batchcount lead to excessively long periods with disabled local interrupts").
    pub(crate) fn defaults(buffer_size: usize, smp: bool, debug: bool) -> Self {
        let mut limit = if buffer_size > 131072 {
            1
        } else if buffer_size > page_size() {
            8
        } else if buffer_size > 1024 {
            24
        } else if buffer_size > 256 {
            54
        } else {
            120
        };
        let shared = if smp && buffer_size <= page_size() { DEFAULT_SHARED } else { 0 };
        if debug && limit > 32 {
            limit = 32;
        }
        Self { limit, batchcount: limit.div_ceil(2), shared }
    }

    /// Checks values given to `tune`, as `slabinfo_write` does ("limit < 1 || batchcount
    /// < 1 || batchcount > limit" is -EINVAL) plus bounds against absurd sizes.
    pub(crate) fn check(self, cache: &str) -> Result<Self> {
        let refuse = |reason: &str| Error::InvalidTunables {
            cache: cache.to_owned(),
            limit: self.limit,
            batchcount: self.batchcount,
            shared: self.shared,
            reason: reason.to_owned(),
        };
        if self.limit < 1 {
            return Err(refuse("limit must be at least 1"));
        }
        if self.batchcount < 1 {
            return Err(refuse("batchcount must be at least 1"));
        }
        if self.batchcount > self.limit {
            return Err(refuse("batchcount must not exceed limit"));
        }
        if self.limit > MAX_LIMIT {
            return Err(refuse(&format!("limit must not exceed {MAX_LIMIT}")));
        }
        if self.shared.checked_mul(self.batchcount).is_none_or(|entries| entries > MAX_SHARED_ENTRIES) {
            return Err(refuse(&format!("shared * batchcount must not exceed {MAX_SHARED_ENTRIES}")));
        }
        Ok(self)
    }
}

/// The cache's current tunables; changed under the cache_chain mutex only.
#[derive(Debug)]
pub(crate) struct TunableCells(Lock<Tunables>);

impl TunableCells {
    pub(crate) fn new(tunables: Tunables) -> Self {
        Self(Lock::new(tunables))
    }

    pub(crate) fn get(&self) -> Tunables {
        *self.0.lock()
    }

    fn set(&self, tunables: Tunables) {
        *self.0.lock() = tunables;
    }
}

impl Cache {
    /// The most memory, in bytes, that this cache's limits let it keep while no object is
    /// out with a caller: every possible CPU's array full (`limit`), every memory node's
    /// barn full (its sheaves of `limit` objects, `shared * batchcount` objects rounded up
    /// to whole sheaves) and its alien arrays for the other nodes full, and `free_limit`
    /// free objects on each node's slabs (the formula with every CPU of the node
    /// prepared), counted in whole slabs per node as if packed. Beyond it come the objects
    /// out with callers, the free objects of partial slabs (what fragmentation leaves,
    /// which no limit bounds), the remote frees queued for a node until its next refill
    /// or reap, and the allocator's page-block cache
    /// ([`crate::Allocator::page_cache_bound_bytes`]).
    pub fn limits_bytes(&self) -> usize {
        self.kmem().limits_bytes()
    }

    /// What one object costs in a full slab: the slab's bytes over its objects, rounded
    /// up (the object, its alignment and red zones, and its share of the descriptor,
    /// colouring and the slab's unused tail).
    pub fn bytes_per_object(&self) -> usize {
        let geometry = &self.kmem().geometry;
        geometry.slab_bytes.div_ceil(geometry.num as usize)
    }
}

impl KmemCache {
    /// `Cache::limits_bytes`.
    fn limits_bytes(&self) -> usize {
        let tunables = self.tunables.get();
        let nodes = &self.machine.memory_nodes;
        let num = self.geometry.num as usize;
        let per_node = |node: NodeId| {
            let cpus = self.machine.cpu_home.iter().filter(|&&home| home == Some(node)).count();
            let barn = barn_sheaves(tunables.limit, tunables.batchcount, tunables.shared) * tunables.limit;
            let objects = cpus * tunables.limit as usize
                + barn as usize
                + (nodes.len() - 1) * alien_limit(tunables) as usize
                + free_limit(cpus, tunables.batchcount, self.geometry.num);
            objects.div_ceil(num) * self.geometry.slab_bytes
        };
        nodes.iter().map(|&node| per_node(node)).sum()
    }

    /// `Cache::tune`: checks, then `do_tune_cpucache` under the cache_chain mutex.
    pub(crate) fn tune(&self, limit: u32, batchcount: u32, shared: u32) -> Result<()> {
        let tunables = Tunables { limit, batchcount, shared }.check(&self.name)?;
        let allocator = self.allocator.upgrade();
        let chain = allocator.as_ref().map(|allocator| allocator.chain.lock());
        // Without an allocator no hotplug can happen: the CPUs with an array are the prepared ones.
        let prepared = match chain.as_ref() {
            Some(chain) => chain.prepared.clone(),
            None => self.attached_cpus(),
        };
        if self.is_destroyed() {
            return Err(self.destroyed_error());
        }
        self.do_tune_cpucache(tunables, &prepared)
    }

    /// CPUs whose slot holds an array.
    fn attached_cpus(&self) -> CpuSet {
        (0..self.array.len() as CpuId)
            .filter(|&cpu| self.array[cpu as usize].lock().with(|data| data.is_attached()))
            .collect()
    }

    /// `do_tune_cpucache`: new arrays for every prepared CPU, and new barn sheaves and
    /// alien arrays for every node with one (`alloc_kmemlist`), all allocated before
    /// anything changes, so that a refused allocation returns its error (the kernel's
    /// -ENOMEM) with the old tunables and arrays in force. Then the CPU arrays are swapped
    /// in under each slot lock and the alien arrays under theirs, the old arrays' objects
    /// returned to their nodes' slabs; then each node's barn sheaves and free limit are
    /// replaced under its list lock, the old full sheaves' objects returned to the slabs
    /// under it and the sheaves freed after unlocking. The caller holds the cache_chain
    /// mutex (or the allocator is gone).
    pub(crate) fn do_tune_cpucache(&self, tunables: Tunables, prepared: &CpuSet) -> Result<()> {
        let cpus: Vec<CpuId> = prepared.iter().filter(|&cpu| (cpu as usize) < self.array.len()).collect();
        let mut fresh = Vec::with_capacity(cpus.len());
        for &cpu in &cpus {
            fresh.push(self.alloc_arraycache(
                self.home_or_default(cpu),
                tunables.limit,
                tunables.batchcount,
            )?);
        }
        let cpus_on = |node: NodeId| cpus.iter().filter(|&&cpu| self.home_or_default(cpu) == node).count();
        let sheaves = barn_sheaves(tunables.limit, tunables.batchcount, tunables.shared);
        let mut barns = Vec::with_capacity(self.nodelists.len());
        for node in 0..self.nodelists.len() as NodeId {
            let wanted = cpus_on(node) > 0 && sheaves > 0;
            barns.push(if wanted { Some(self.alloc_barn(node, sheaves, tunables.limit)?) } else { None });
        }
        // An alien array's size follows the tunables (`alien_limit`): every node with CPUs
        // gets new ones, as it gets a new barn.
        let mut aliens = Vec::new();
        for node in (0..self.nodelists.len() as NodeId).filter(|&node| cpus_on(node) > 0) {
            for &owner in self.machine.memory_nodes.iter().filter(|&&owner| owner != node) {
                aliens.push((
                    node,
                    owner,
                    self.alloc_arraycache(node, alien_limit(tunables), UNUSED_BATCHCOUNT)?,
                ));
            }
        }
        // Nothing can fail from here on.
        let mut chain = SlabChain::default();
        for (&cpu, ac) in cpus.iter().zip(fresh) {
            let slot = &self.array[cpu as usize];
            let old = slot.lock().with(|data| data.replace(ac));
            if let Some(old) = old {
                self.drain_detached(slot.node, old, &mut chain);
            }
        }
        self.tunables.set(tunables);
        for (node, owner, ac) in aliens {
            let old = self.l3(node).alien[owner as usize].lock().with(|data| data.replace(ac));
            if let Some(old) = old {
                self.drain_detached(owner, old, &mut chain);
            }
        }
        for (node, contents) in (0..self.nodelists.len() as NodeId).zip(barns) {
            let l3 = self.l3(node);
            let old = {
                let mut state = l3.list_lock.lock();
                state.free_limit = free_limit(cpus_on(node), tunables.batchcount, self.geometry.num);
                let old = match contents {
                    Some(contents) => l3.barn.replace(contents),
                    None => l3.barn.detach(),
                };
                for sheaf in old.full_sheaves() {
                    // SAFETY: the barn's sheaves held handed-out objects of this node.
                    unsafe { self.return_to_slabs(&mut state, sheaf.objects(), node, &mut chain) };
                }
                old
            };
            // kfree(old shared): the old sheaves, after unlocking.
            drop(old);
        }
        self.slabs_destroy(chain);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
