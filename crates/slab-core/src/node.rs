//! Per-node lists (`struct kmem_list3`): the node's partial, full and free slabs,
//! `free_objects`, `free_limit`, the colour cursor, the barn (in the shared array cache's
//! role), the queue of remote frees, the alien caches, and the operations the kernel does
//! under `l3->list_lock`.
//!
//! Node lists are created for every possible node when the cache is created and live
//! until the cache is dropped: CPU hotplug never frees or clears them (the seed's rule:
//! another CPU may be allocating node-local memory for a node whose CPUs are all down).
//! The same holds for the barn's structure and the remote-free queue: only the barn's
//! sheaves come and go with the node's CPUs.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_utils::CachePadded;
use topology::NodeId;

use crate::array_cache::{ArrayCache, ArraySlot, SlotFence};
use crate::barn::Barn;
use crate::cache::KmemCache;
use crate::registry::{SlabOwner, SlabRegistry};
use crate::remote::RemoteFrees;
use crate::slab::{Geometry, ListKind, SlabChain, SlabList, SlabPtr};
use crate::sync::Lock;

/// `struct kmem_list3`.
#[derive(Debug)]
pub(crate) struct KmemList3 {
    /// `l3->list_lock` and what it protects.
    pub(crate) list_lock: Lock<NodeState>,
    /// `l3->alien`: for each other node, the array collecting objects of that node freed
    /// by CPUs of this one. The slots live as long as the cache; the arrays in them are
    /// installed by `cpu_up_prepare` and detached when this node loses its last CPU.
    pub(crate) alien: Box<[CachePadded<ArraySlot>]>,
    /// The node's barn of sheaves (in `l3->shared`'s role), behind its own lock.
    pub(crate) barn: Barn,
    /// Batches of this node's objects freed on other nodes, pushed without any lock;
    /// taken and walked only under `list_lock` (see `remote.rs`). On its own cache line:
    /// every remote pusher writes it.
    pub(crate) remote: CachePadded<RemoteFrees>,
}

impl KmemList3 {
    /// Empty lists for a node, with alien slots for every node id below `node_bound`.
    pub(crate) fn new(free_limit: usize, node_bound: usize, records: SlabRecords) -> Self {
        Self {
            list_lock: Lock::new(NodeState::new(free_limit, records)),
            alien: (0..node_bound as u32)
                .map(|node| CachePadded::new(ArraySlot::new(node, SlotFence::Lock)))
                .collect(),
            barn: Barn::new(),
            remote: CachePadded::new(RemoteFrees::new()),
        }
    }

    /// Takes every queued remote free and hands the objects to `keep` in chunks; `keep`
    /// returns how many of each chunk (from the start) it kept, and the rest go back to
    /// the slabs (`free_block`). `state` is this node's locked state: the take happens
    /// under `list_lock`, as the queue's protocol requires. A queue longer than the
    /// node's handed-out objects (made circular by a double free) is counted as refused.
    pub(crate) fn drain_remote(
        &self,
        state: &mut NodeState,
        geometry: &Geometry,
        node: u32,
        chain: &mut SlabChain,
        mut keep: impl FnMut(&[*mut u8]) -> usize,
    ) -> Refused {
        let mut refused = Refused::default();
        if self.remote.is_empty() {
            return refused;
        }
        let bound = state.objects_in_use(geometry);
        // SAFETY: `state` is this node's list_lock guard's content, so the lock is held.
        let objects = unsafe { self.remote.take_all() };
        let complete = objects.drain(bound, |objects| {
            let kept = keep(objects).min(objects.len());
            // SAFETY: queued objects are handed-out objects of this node.
            refused.merge(unsafe { state.free_block(geometry, &objects[kept..], node, chain) });
        });
        if !complete {
            refused.already_free += 1;
        }
        refused
    }

    /// Walks the objects queued as remote frees under the node's lock (`state` is its
    /// locked state), while `f` accepts them; returns whether the walk reached the end
    /// (false: `f` refused one, or the queue is longer than the node's handed-out objects).
    pub(crate) fn walk_remote(
        &self,
        state: &NodeState,
        geometry: &Geometry,
        f: impl FnMut(*mut u8) -> bool,
    ) -> bool {
        let bound = state.objects_in_use(geometry);
        // SAFETY: the caller holds list_lock (it lends us its state), so no take runs; the
        // objects of the queue are handed-out objects of this node's live slabs, and a
        // checking `f` refuses anything else before it is read.
        unsafe { self.remote.walk(bound, f) }
    }
}

/// Where one node's slabs of one cache are recorded in the allocator's slab registry.
///
/// The registry is written only here, under the node's list lock, at the moment a slab
/// enters the node's lists (`add_grown_slab`) or leaves them for a release chain
/// (`free_block`, `trim_free`): the lists and the registry then change together, so that
/// `validate`, which holds every list lock of the cache, sees them agree even while other
/// threads grow and release slabs. A slab on a release chain is out of the registry
/// before its block is given back, as the debug free's check requires. Lock order: the
/// list lock, then the registry's (the only order in which both are held).
#[derive(Debug)]
pub(crate) struct SlabRecords {
    registry: Arc<SlabRegistry>,
    owner: SlabOwner,
}

impl SlabRecords {
    /// The records of `node`'s slabs of the cache `cache_id`, of `slab_bytes` each.
    pub(crate) fn new(registry: Arc<SlabRegistry>, cache_id: u64, node: u32, slab_bytes: usize) -> Self {
        Self { registry, owner: SlabOwner { cache_id, node, slab_bytes } }
    }

    fn enter(&self, slab: SlabPtr) {
        self.registry.insert(slab.base() as usize, self.owner);
    }

    fn leave(&self, slab: SlabPtr) {
        self.registry.remove(slab.base() as usize);
    }
}

/// Everything under `l3->list_lock`.
#[derive(Debug)]
pub(crate) struct NodeState {
    /// `slabs_partial`.
    pub(crate) slabs_partial: SlabList,
    /// `slabs_full`.
    pub(crate) slabs_full: SlabList,
    /// `slabs_free`.
    pub(crate) slabs_free: SlabList,
    /// Free objects on this node's slabs (`l3->free_objects`).
    pub(crate) free_objects: usize,
    /// Free objects above which empty slabs go back to the OS (`l3->free_limit`).
    pub(crate) free_limit: usize,
    /// The next slab's colour (`l3->colour_next`).
    pub(crate) colour_next: u32,
    /// A refill took a free slab since the last reap (`l3->free_touched`).
    pub(crate) free_touched: bool,
    /// When the reaper next does this node's periodic work (`l3->next_reap`).
    pub(crate) next_reap: Option<Instant>,
    /// Objects handed to callers straight from this node's slabs (no CPU array).
    pub(crate) direct_allocs: u64,
    /// Objects taken back from callers straight into this node's slabs.
    pub(crate) direct_frees: u64,
    /// Set by `destroy_cache` while it tears the cache down: no slab may be added.
    pub(crate) destroyed: bool,
    /// Slabs grown on this node (`STATS_INC_GROWN`).
    pub(crate) grown: u64,
    /// Slabs returned to the OS from this node (`STATS_INC_REAPED` and destroys).
    pub(crate) released: u64,
    /// The registry entries of this node's slabs, kept in step with the lists.
    records: SlabRecords,
}

/// What a `free_block` call refused.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    /// Objects already on their slab's free list (a double free that reached the slab).
    pub(crate) already_free: usize,
    /// Objects whose slab belongs to another node (never happens unless memory is corrupt).
    pub(crate) wrong_node: usize,
}

impl Refused {
    /// Whether anything was refused.
    pub(crate) fn any(&self) -> bool {
        self.already_free + self.wrong_node > 0
    }

    /// Adds another call's refusals.
    pub(crate) fn merge(&mut self, other: Refused) {
        self.already_free += other.already_free;
        self.wrong_node += other.wrong_node;
    }
}

impl NodeState {
    pub(crate) fn new(free_limit: usize, records: SlabRecords) -> Self {
        Self {
            slabs_partial: SlabList::new(ListKind::Partial),
            slabs_full: SlabList::new(ListKind::Full),
            slabs_free: SlabList::new(ListKind::Free),
            free_objects: 0,
            free_limit,
            colour_next: 0,
            free_touched: false,
            next_reap: None,
            direct_allocs: 0,
            direct_frees: 0,
            destroyed: false,
            grown: 0,
            released: 0,
            records,
        }
    }

    fn list_mut(&mut self, kind: ListKind) -> Option<&mut SlabList> {
        match kind {
            ListKind::Partial => Some(&mut self.slabs_partial),
            ListKind::Full => Some(&mut self.slabs_full),
            ListKind::Free => Some(&mut self.slabs_free),
            ListKind::Detached => None,
        }
    }

    /// Unlinks a slab from whichever list holds it (`list_del(&slabp->list)`).
    ///
    /// # Safety
    /// `slab` is a live slab of this node.
    unsafe fn unlink(&mut self, slab: SlabPtr) {
        // SAFETY: we hold the lock (we are `&mut NodeState`); the slab is ours.
        unsafe {
            if let Some(list) = self.list_mut(slab.list()) {
                list.remove(slab);
            }
        }
    }

    /// The colour of the next slab, advancing the cursor (the start of `cache_grow`).
    pub(crate) fn next_colour(&mut self, geometry: &Geometry) -> u32 {
        let colour = self.colour_next;
        self.colour_next += 1;
        if self.colour_next >= geometry.colour {
            self.colour_next = 0;
        }
        if geometry.colour == 0 {
            0
        } else {
            colour
        }
    }

    /// Adds a freshly grown slab (the end of `cache_grow`) and registers it.
    ///
    /// # Safety
    /// `slab` is a new, detached slab of this node with every object free.
    pub(crate) unsafe fn add_grown_slab(&mut self, geometry: &Geometry, slab: SlabPtr) {
        self.records.enter(slab);
        // SAFETY: forwarded; lock held.
        unsafe { self.slabs_free.push_back(slab) };
        self.free_objects += geometry.num as usize;
        self.grown += 1;
    }

    /// Returns objects to their slabs (`free_block`). Empty slabs beyond `free_limit` go
    /// to `chain`, to be unmapped by the caller once it holds no lock; `chain` may already
    /// hold slabs of other nodes, and only the slabs this call adds count as this node's
    /// `released`.
    ///
    /// # Safety
    /// Every object is a slot start of a live slab of this cache (handed out from it).
    pub(crate) unsafe fn free_block(
        &mut self,
        geometry: &Geometry,
        objects: &[*mut u8],
        node: u32,
        chain: &mut SlabChain,
    ) -> Refused {
        let mut refused = Refused::default();
        for &obj in objects {
            let Some(slab) = SlabPtr::of(obj, geometry.slab_bytes) else { continue };
            // SAFETY: the caller vouches for obj, so its slab is live; we hold the node lock.
            if unsafe { slab.nodeid() } != node {
                refused.wrong_node += 1;
                continue;
            }
            // The object goes back first: that changes the slab's free list and count,
            // never its list links, so a refused object leaves the slab exactly where it
            // was.
            // SAFETY: obj is a slot start of this slab (the caller's promise); lock held.
            if !unsafe { slab.put_obj(geometry, obj) } {
                refused.already_free += 1;
                continue;
            }
            self.free_objects += 1;
            // SAFETY: the slab is live and on one of this node's lists; lock held.
            let (inuse, list) = unsafe { (slab.inuse(), slab.list()) };
            if inuse == 0 {
                // SAFETY: as above, and every object of the slab is now free.
                unsafe { self.slab_emptied(geometry, slab, chain) };
            } else if list != ListKind::Partial || self.slabs_partial.last() != Some(slab) {
                // "Unconditionally move a slab to the end of the partial list on free -
                // maximum time for the other objects to be freed, too." A slab already
                // there (the previous object was of the same slab, the common case of a
                // batch) stays.
                // SAFETY: the slab is on one of this node's lists, then detached; lock held.
                unsafe {
                    self.unlink(slab);
                    self.slabs_partial.push_back(slab);
                }
            }
        }
        refused
    }

    /// `free_block`'s end for a slab whose last object came back: beyond `free_limit` it
    /// leaves the node for `chain`, else it goes to the front of the free list.
    ///
    /// # Safety
    /// `slab` is on one of this node's lists with every object free; the lock is held.
    #[inline]
    unsafe fn slab_emptied(&mut self, geometry: &Geometry, slab: SlabPtr, chain: &mut SlabChain) {
        // SAFETY: the slab is on one of this node's lists (the caller's promise).
        unsafe { self.unlink(slab) };
        if self.free_objects > self.free_limit {
            self.free_objects -= geometry.num as usize;
            // Counted here, slab by slab: the caller's chain may already hold other
            // nodes' slabs (one chain serves a whole teardown).
            self.released += 1;
            self.records.leave(slab);
            // SAFETY: the slab is off every list and out of the registry.
            unsafe { chain.push(slab) };
        } else {
            // SAFETY: the slab was just detached; lock held.
            unsafe { self.slabs_free.push_front(slab) };
        }
    }

    /// The slab the next object comes from: the first partial slab, else the first free
    /// one (which marks the free list touched, so the reaper spares it a round); `None`
    /// when the node must grow.
    fn slab_with_free_object(&mut self) -> Option<SlabPtr> {
        match self.slabs_partial.first() {
            Some(slab) => Some(slab),
            None => {
                self.free_touched = true;
                self.slabs_free.first()
            }
        }
    }

    /// Takes one object from the partial slabs, else the free slabs; `None` when the
    /// node must grow. The core of `cache_alloc_refill`'s loop and of
    /// `__cache_alloc_node`.
    pub(crate) fn take_object(&mut self, geometry: &Geometry) -> Option<*mut u8> {
        let slab = self.slab_with_free_object()?;
        // SAFETY: lock held; the slab is on a partial or free list so it has a free object.
        unsafe {
            self.unlink(slab);
            let obj = slab.get_obj(geometry);
            if slab.is_full() {
                self.slabs_full.push_front(slab);
            } else {
                self.slabs_partial.push_front(slab);
            }
            self.free_objects -= 1;
            Some(obj)
        }
    }

    /// Fills `ac` with up to `batchcount` objects from the slabs (`cache_alloc_refill`
    /// between taking and releasing the list lock, once the barn had no full sheaf).
    pub(crate) fn refill(&mut self, geometry: &Geometry, ac: &mut ArrayCache, batchcount: u32) {
        let batchcount = batchcount.min(ac.room());
        // The kernel's loop: take objects from one slab while it has some, then move
        // it to the full or partial list.
        let mut want = batchcount;
        while want > 0 {
            let Some(slab) = self.slab_with_free_object() else { break };
            // SAFETY: lock held; the slab is on a partial or free list so it has a free
            // object, and get_obj is called only while it is not full.
            unsafe {
                self.unlink(slab);
                while want > 0 && !slab.is_full() {
                    ac.put(slab.get_obj(geometry));
                    self.free_objects -= 1;
                    want -= 1;
                }
                if slab.is_full() {
                    self.slabs_full.push_front(slab);
                } else {
                    self.slabs_partial.push_front(slab);
                }
            }
        }
    }

    /// Takes every free slab off the node (`__node_shrink`, whose kernel version drops
    /// the lock around each `slab_destroy`; here the caller unmaps them after unlocking).
    /// Returns whether slabs with objects remain.
    pub(crate) fn node_shrink(&mut self, geometry: &Geometry, chain: &mut SlabChain) -> bool {
        self.trim_free(geometry, usize::MAX, chain);
        !self.slabs_full.is_empty() || !self.slabs_partial.is_empty()
    }

    /// Takes up to `count` free slabs off the node, oldest first (the reaper's trim).
    pub(crate) fn trim_free(&mut self, geometry: &Geometry, count: usize, chain: &mut SlabChain) {
        for _ in 0..count {
            let Some(slab) = self.slabs_free.last() else { break };
            // SAFETY: lock held; the slab comes off the free list, so it is ours to give.
            unsafe { self.slabs_free.remove(slab) };
            self.free_objects -= geometry.num as usize;
            self.released += 1;
            self.records.leave(slab);
            // SAFETY: the slab is off every list and out of the registry.
            unsafe { chain.push(slab) };
        }
    }

    /// Objects handed out of this node's slabs (the slabs' `inuse` summed).
    pub(crate) fn objects_in_use(&self, geometry: &Geometry) -> usize {
        let slabs = self.slabs_full.len() + self.slabs_partial.len() + self.slabs_free.len();
        slabs * geometry.num as usize - self.free_objects
    }

    /// Net objects out with callers that passed through this node directly.
    pub(crate) fn direct_net_out(&self) -> i64 {
        self.direct_allocs.wrapping_sub(self.direct_frees) as i64
    }
}

/// The kernel's `free_limit` formula: `(1 + nr_cpus_node(node)) * batchcount + num`.
pub(crate) fn free_limit(prepared_cpus: usize, batchcount: u32, num: u32) -> usize {
    (1 + prepared_cpus) * batchcount as usize + num as usize
}

impl KmemCache {
    /// Returns objects to their slabs on `node` under its lock (`free_block`), and counts
    /// any it refuses as corruption (`note_refused`), which `validate` reports.
    ///
    /// # Safety
    /// Every object is a slot start of a live slab of this cache (handed out from it).
    pub(crate) unsafe fn return_to_slabs(
        &self,
        state: &mut NodeState,
        objects: &[*mut u8],
        node: NodeId,
        chain: &mut SlabChain,
    ) {
        // SAFETY: forwarded from the caller.
        let refused = unsafe { state.free_block(&self.geometry, objects, node, chain) };
        self.note_refused(refused);
    }
}

#[cfg(test)]
mod tests;
