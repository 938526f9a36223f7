//! Debug mode (`CacheFlags::DEBUG`, the kernel's `SLAB_RED_ZONE | SLAB_POISON` and
//! DEBUG checks): red zones around every object, poison checked when an object is handed
//! out again, registry-checked frees that report double frees, wrong-cache and foreign
//! pointers as errors, and `validate()`.
//!
//! States of an object slot in debug mode:
//!
//! | where                       | red zones      | body                        |
//! |-----------------------------|----------------|-----------------------------|
//! | free (slab or array cache)  | `RED_INACTIVE` | `POISON_FREE`…`POISON_END`  |
//! | out with a caller           | `RED_ACTIVE`   | the caller's                |
//!
//! A free flips the first red zone from `RED_ACTIVE` to `RED_INACTIVE` with one
//! compare-and-swap, so that of two racing frees of one object exactly one passes.

use std::collections::HashMap;
use std::ptr::NonNull;

use topology::{CpuId, NodeId};

use crate::array_cache::SlotGuard;
use crate::cache::KmemCache;
use crate::error::{Error, RedZoneSide, Result};
use crate::node::NodeState;
use crate::slab::{ListKind, SlabPtr, SLAB_MAGIC};
use crate::sync::{compare_exchange_word, LockGuard};

/// The kernel's `RED_INACTIVE`: the red-zone word of a free object.
pub(crate) const RED_INACTIVE: u64 = 0x09F9_1102_9D74_E35B;
/// The kernel's `RED_ACTIVE`: the red-zone word of an object out with a caller.
pub(crate) const RED_ACTIVE: u64 = 0xD841_56C5_6356_88C0;
/// The kernel's `POISON_INUSE`: the body of an object just handed out.
pub(crate) const POISON_INUSE: u8 = 0x5a;
/// The kernel's `POISON_FREE`: the body of a free object.
pub(crate) const POISON_FREE: u8 = 0x6b;
/// The kernel's `POISON_END`: the last byte of a free object's body.
pub(crate) const POISON_END: u8 = 0xa5;

/// Every lock of a cache, held for one consistent picture of it.
struct AllLocks<'a> {
    /// Each CPU's slot, by CPU.
    cpus: Vec<(usize, SlotGuard<'a>)>,
    /// Each alien slot, by the node that holds it.
    aliens: Vec<(usize, SlotGuard<'a>)>,
    /// Each node's `list_lock`, by node.
    nodes: Vec<LockGuard<'a, NodeState>>,
}

impl KmemCache {
    fn redzone1(&self, obj: *mut u8) -> *mut u64 {
        obj.wrapping_add(self.geometry.obj_offset - 8).cast()
    }

    fn redzone2(&self, obj: *mut u8) -> *mut u64 {
        obj.wrapping_add(self.geometry.redzone2_offset()).cast()
    }

    fn body(&self, obj: *mut u8) -> *mut u8 {
        obj.wrapping_add(self.geometry.obj_offset)
    }

    /// Paints a slot as free (`poison_obj(POISON_FREE)` and inactive red zones).
    ///
    /// # Safety
    /// `obj` is a slot of this cache that no other thread touches.
    unsafe fn paint_free(&self, obj: *mut u8) {
        // SAFETY: the slot is ours, buffer_size long, with both red zones inside it.
        unsafe {
            self.paint_free_body(obj);
            self.redzone1(obj).write(RED_INACTIVE);
        }
    }

    /// Paints the body and the trailing red zone free; the leading red zone is left to
    /// the caller (the free path has already flipped it with a compare-and-swap, and a
    /// racing erroneous free may be reading it).
    ///
    /// # Safety
    /// `obj` is a slot of this cache whose body no other thread touches.
    unsafe fn paint_free_body(&self, obj: *mut u8) {
        let size = self.geometry.object_size;
        // SAFETY: the slot is ours, buffer_size long, with the red zone inside it.
        unsafe {
            std::ptr::write_bytes(self.body(obj), POISON_FREE, size);
            self.body(obj).add(size - 1).write(POISON_END);
            self.redzone2(obj).write(RED_INACTIVE);
        }
    }

    /// Debug part of `cache_init_objs`: every slot of a new slab painted free.
    ///
    /// # Safety
    /// `slab` is a new slab of this cache not yet published.
    pub(crate) unsafe fn init_objects_debug(&self, slab: SlabPtr) {
        for index in 0..self.geometry.num {
            // SAFETY: index < num; the slab is ours alone.
            unsafe { self.paint_free(slab.index_to_obj(&self.geometry, index)) };
        }
    }

    /// `check_poison_obj` and the red-zone checks of an object about to be handed out.
    ///
    /// # Safety
    /// `obj` is a free slot of this cache owned by the caller (popped under a lock).
    unsafe fn check_free_slot(&self, obj: *mut u8) -> Result<()> {
        let user = self.body(obj) as usize;
        for (side, zone) in
            [(RedZoneSide::Before, self.redzone1(obj)), (RedZoneSide::After, self.redzone2(obj))]
        {
            // SAFETY: the slot is ours and both red zones lie inside it.
            let found = unsafe { zone.read() };
            if found != RED_INACTIVE {
                return Err(Error::RedZone { cache: self.name.clone(), ptr: user, side, found });
            }
        }
        let size = self.geometry.object_size;
        // SAFETY: the slot is ours; its body is `object_size` bytes from `body(obj)`.
        let body = unsafe { std::slice::from_raw_parts(self.body(obj), size) };
        for (offset, &found) in body.iter().enumerate() {
            let expected = if offset == size - 1 { POISON_END } else { POISON_FREE };
            if found != expected {
                return Err(Error::Poisoned { cache: self.name.clone(), ptr: user, offset, found, expected });
            }
        }
        Ok(())
    }

    /// `cache_alloc_debugcheck_after`: red zones active, body `POISON_INUSE`.
    ///
    /// # Safety
    /// As for `check_free_slot`, and the check passed.
    unsafe fn mark_handed_out(&self, obj: *mut u8) -> NonNull<u8> {
        // SAFETY: the slot is ours.
        unsafe {
            std::ptr::write_bytes(self.body(obj), POISON_INUSE, self.geometry.object_size);
            self.redzone2(obj).write(RED_ACTIVE);
            // The first zone last, atomically: a stray racing free of this address must
            // see either the inactive or the active word, never a torn one.
            let _ = compare_exchange_word(self.redzone1(obj), RED_INACTIVE, RED_ACTIVE);
            NonNull::new_unchecked(self.body(obj))
        }
    }

    /// The debug end of the fast path: the object popped from the (still locked) CPU
    /// array is checked; a damaged one is repainted, put back, and reported. Cold: only
    /// debug caches (`CacheFlags::DEBUG`) come here, and they trade speed for checks;
    /// out of line, it keeps the other caches' fast path small.
    #[cold]
    #[inline(never)]
    pub(crate) fn debug_alloc_from_slot(
        &self,
        mut guard: SlotGuard<'_>,
        obj: *mut u8,
    ) -> Result<NonNull<u8>> {
        // SAFETY: popped under the slot lock: the slot is ours.
        match unsafe { self.check_free_slot(obj) } {
            // SAFETY: as above, and the check passed.
            Ok(()) => Ok(unsafe { self.mark_handed_out(obj) }),
            Err(error) => {
                // SAFETY: still ours.
                unsafe { self.paint_free(obj) };
                guard.with(|data| {
                    if let Some(ac) = data.array_mut() {
                        ac.push(obj);
                    }
                });
                Err(error)
            }
        }
    }

    /// The debug end of a direct allocation from the node lists. Cold: only debug caches
    /// come here, and only when the array cannot serve.
    #[cold]
    #[inline(never)]
    pub(crate) fn debug_alloc_direct(&self, node: NodeId, obj: *mut u8) -> Result<NonNull<u8>> {
        // SAFETY: taken from the slab under the node lock: the slot is ours.
        match unsafe { self.check_free_slot(obj) } {
            // SAFETY: as above, and the check passed.
            Ok(()) => Ok(unsafe { self.mark_handed_out(obj) }),
            Err(error) => {
                // SAFETY: still ours.
                unsafe { self.paint_free(obj) };
                self.free_direct(node, obj);
                Err(error)
            }
        }
    }

    /// The debug free: the pointer is checked against the registry before any of its
    /// memory is read, then as a slot of the slab, then its red zones; only a pointer
    /// that passes everything is freed (`cache_free_debugcheck`).
    ///
    /// # Safety
    /// None beyond the cache's: any pointer is accepted and checked.
    ///
    /// Cold: only debug caches free through here, and they trade speed for checks.
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn debug_free(&self, cpu: CpuId, ptr: NonNull<u8>) -> Result<()> {
        let (obj, nodeid, overflow) = self.with_checked_slot(ptr, |slab, obj| {
            // SAFETY: obj is a slot start of a slab the lock keeps mapped, so both red
            // zones are inside the slot.
            unsafe {
                self.check_out(ptr, compare_exchange_word(self.redzone1(obj), RED_ACTIVE, RED_INACTIVE))
            }?;
            // SAFETY: the trailing red zone and the body lie inside the slot, which the
            // compare-and-swap just made ours; the descriptor is mapped under the lock.
            Ok(unsafe {
                let found = self.redzone2(obj).read();
                self.paint_free_body(obj);
                (obj, slab.nodeid(), (found != RED_ACTIVE).then_some(found))
            })
        })?;
        self.cache_free(cpu, obj, nodeid);
        match overflow {
            // The object was out and is now freed; its trailing zone had been overwritten.
            Some(found) => Err(Error::RedZone {
                cache: self.name.clone(),
                ptr: ptr.as_ptr() as usize,
                side: RedZoneSide::After,
                found,
            }),
            None => Ok(()),
        }
    }

    /// The checks of [`KmemCache::debug_free`] without the free: `Ok` if `ptr` is an
    /// object of this cache that is out with a caller (for a `realloc` that keeps the
    /// object where it is); its errors are the free's.
    ///
    /// # Safety
    /// None beyond the cache's: any pointer is accepted and checked.
    // kmalloc's, which the loom build leaves out.
    #[cfg(not(slab_core_loom))]
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn debug_check_out(&self, ptr: NonNull<u8>) -> Result<()> {
        self.with_checked_slot(ptr, |_, obj| {
            // SAFETY: as in debug_free. A compare-and-swap that writes what it finds: an
            // atomic read of a word a racing free may be flipping.
            unsafe { self.check_out(ptr, compare_exchange_word(self.redzone1(obj), RED_ACTIVE, RED_ACTIVE)) }
        })
    }

    /// Runs `check` on the slot of `ptr` under the registry's read lock (which keeps the
    /// slab mapped: slabs leave the registry under the write lock before they are
    /// unmapped), once the pointer is known to be an object's start in one of this
    /// cache's slabs: checked against the registry before any of its memory is read,
    /// then as a slot of its slab.
    fn with_checked_slot<T>(
        &self,
        ptr: NonNull<u8>,
        check: impl FnOnce(SlabPtr, *mut u8) -> Result<T>,
    ) -> Result<T> {
        let user = ptr.as_ptr() as usize;
        let registry = self.registry.slabs.read();
        let base = user & !(self.geometry.slab_bytes - 1);
        let registered = registry
            .get(&base)
            .is_some_and(|owner| owner.cache_id == self.id && owner.slab_bytes == self.geometry.slab_bytes);
        if !registered {
            drop(registry);
            return Err(self.unowned_pointer_error(user));
        }
        let slab =
            SlabPtr::of(ptr.as_ptr(), self.geometry.slab_bytes).expect("a registered slab is not at 0");
        let obj = ptr.as_ptr().wrapping_sub(self.geometry.obj_offset);
        // SAFETY: the slab is registered to this cache and mapped while we hold the lock.
        if let Err(reason) = unsafe { slab.obj_to_index(&self.geometry, obj) } {
            return Err(Error::NotAnObject { cache: self.name.clone(), ptr: user, reason });
        }
        check(slab, obj)
    }

    /// What the leading red zone of `ptr`'s slot says, as a compare-and-swap from
    /// `RED_ACTIVE` found it: `Ok` for an object out with a caller; a double free for a
    /// free one; an overwritten zone otherwise (whether the object is out or free cannot
    /// be told, so it is left alone, and reported).
    fn check_out(&self, ptr: NonNull<u8>, zone: std::result::Result<u64, u64>) -> Result<()> {
        let user = ptr.as_ptr() as usize;
        match zone {
            Ok(_) => Ok(()),
            Err(RED_INACTIVE) => Err(Error::DoubleFree { cache: self.name.clone(), ptr: user }),
            Err(found) => {
                Err(Error::RedZone { cache: self.name.clone(), ptr: user, side: RedZoneSide::Before, found })
            }
        }
    }

    /// The error for a pointer not in this cache's slabs: another cache's object, or
    /// foreign. Cold: only a caller's bad free comes here.
    #[cold]
    fn unowned_pointer_error(&self, ptr: usize) -> Error {
        match self.registry.find(ptr) {
            Some(owner) if owner.cache_id != self.id => self.wrong_cache_error(ptr, owner.cache_id),
            _ => Error::ForeignPointer { cache: self.name.clone(), ptr },
        }
    }

    /// `Cache::validate`, serialized against hotplug and tuning by the cache_chain mutex.
    pub(crate) fn validate(&self) -> Result<()> {
        let allocator = self.allocator.upgrade();
        let _chain = allocator.as_ref().map(|allocator| allocator.chain.lock());
        self.validate_locked()
    }

    /// Checks every object is accounted for exactly once and every slab is on its own
    /// node's right list. Takes every lock of the cache (CPU slots, then alien slots,
    /// then node lists, then each barn's in turn: the lock order of the fast paths), so
    /// the picture is consistent even while other threads allocate and free: a barn
    /// changes only under a CPU slot lock or the cache_chain mutex, and a remote-free
    /// queue grows only under an alien slot lock and shrinks only under its node's lock.
    pub(crate) fn validate_locked(&self) -> Result<()> {
        let refused = self.refused.load(crate::sync::Ordering::Relaxed);
        if refused > 0 {
            return Err(self.corrupted(format!(
                "{refused} objects were refused by free_block (double free or corruption)"
            )));
        }
        let mut locks = self.lock_all();
        let mut cached = HashMap::new();
        let outstanding = self.account_cached(&mut locks, &mut cached)?;
        let in_use = self.account_slabs(&locks.nodes)?;
        if outstanding < 0 {
            return Err(self.corrupted(format!("more objects freed than allocated ({outstanding})")));
        }
        if in_use != cached.len() + outstanding as usize {
            return Err(self.corrupted(format!(
                "{in_use} objects handed out of the slabs, but {} cached + {outstanding} out with callers",
                cached.len()
            )));
        }
        Ok(())
    }

    /// The cache's corruption error for `reason`.
    fn corrupted(&self, reason: String) -> Error {
        Error::Corrupted { cache: self.name.clone(), reason }
    }

    /// Takes every lock of the cache in the fast paths' order: CPU slots, alien slots,
    /// node lists.
    fn lock_all(&self) -> AllLocks<'_> {
        let cpus = self.array.iter().enumerate().map(|(cpu, slot)| (cpu, slot.lock())).collect();
        let aliens = self
            .nodelists
            .iter()
            .enumerate()
            .flat_map(|(node, l3)| l3.alien.iter().map(move |slot| (node, slot.lock())))
            .collect();
        let nodes = self.nodelists.iter().map(|l3| l3.list_lock.lock()).collect();
        AllLocks { cpus, aliens, nodes }
    }

    /// Records every cached object (CPU arrays, alien caches, barns, remote frees) in
    /// `cached` by where it sits, each checked as a handed-out slot of the right node and
    /// found once; returns how many objects are out with callers.
    fn account_cached(&self, locks: &mut AllLocks<'_>, cached: &mut HashMap<usize, String>) -> Result<i64> {
        // The slots' counts wrap at 32 bits; their sum is exact below 2^31 objects out.
        let mut slots_net: u32 = 0;
        for (cpu, guard) in locks.cpus.iter_mut() {
            let place = format!("cpu {cpu}'s array");
            slots_net = slots_net.wrapping_add(self.account_slot(guard, cached, &place)?);
        }
        for (holder, guard) in locks.aliens.iter_mut() {
            let place = format!("node {holder}'s alien cache for node {}", guard.node());
            slots_net = slots_net.wrapping_add(self.account_slot(guard, cached, &place)?);
        }
        let mut outstanding = i64::from(slots_net as i32);
        for (node, state) in locks.nodes.iter().enumerate() {
            outstanding += state.direct_net_out();
            self.account_node_caches(node, state, cached)?;
        }
        Ok(outstanding)
    }

    /// Records the objects of one CPU or alien slot; returns the slot's net count out.
    fn account_slot(
        &self,
        guard: &mut SlotGuard<'_>,
        cached: &mut HashMap<usize, String>,
        place: &str,
    ) -> Result<u32> {
        let node = guard.node();
        guard.with(|data| -> Result<u32> {
            for &obj in data.array_mut().map_or(&[][..], |ac| ac.objects()) {
                self.record_cached(cached, obj, node, place.to_owned())?;
            }
            Ok(data.net_out())
        })
    }

    /// Records the objects of `node`'s barn and remote-free queue.
    fn account_node_caches(
        &self,
        node: usize,
        state: &NodeState,
        cached: &mut HashMap<usize, String>,
    ) -> Result<()> {
        let l3 = &self.nodelists[node];
        let mut result = Ok(());
        l3.barn.for_each_full(|objects| {
            for &obj in objects {
                if result.is_ok() {
                    result = self.record_cached(cached, obj, node as NodeId, format!("node {node}'s barn"));
                }
            }
        });
        result?;
        let mut result = Ok(());
        let complete = l3.walk_remote(state, &self.geometry, |obj| {
            result = self.record_cached(cached, obj, node as NodeId, format!("node {node}'s remote frees"));
            result.is_ok()
        });
        result?;
        if !complete {
            return Err(self.corrupted(format!(
                "node {node}'s remote frees hold more objects than the node handed out (a double free)"
            )));
        }
        Ok(())
    }

    /// Checks one cached object and records where it sits; an object found twice is
    /// corruption.
    fn record_cached(
        &self,
        cached: &mut HashMap<usize, String>,
        obj: *mut u8,
        node: NodeId,
        place: String,
    ) -> Result<()> {
        self.check_cached_object(obj, node, &place)?;
        if let Some(first) = cached.insert(obj as usize, place.clone()) {
            return Err(self.corrupted(format!("object {obj:p} is cached twice: in {first} and in {place}")));
        }
        Ok(())
    }

    /// Checks every slab: on its own node's lists, on the list its use calls for, free
    /// list sound, free objects intact in debug mode; each node's counters agree with its
    /// lists and the registry with all of them. Returns the objects handed out of slabs.
    fn account_slabs(&self, nodes: &[LockGuard<'_, NodeState>]) -> Result<usize> {
        let mut in_use = 0usize;
        let mut slabs = 0usize;
        for (node, state) in nodes.iter().enumerate() {
            let (node_slabs, used) = self.account_node_slabs(node as NodeId, state)?;
            slabs += node_slabs;
            in_use += used;
        }
        let registered =
            self.registry.slabs.read().values().filter(|owner| owner.cache_id == self.id).count();
        if registered != slabs {
            return Err(
                self.corrupted(format!("{slabs} slabs on the lists but {registered} in the registry"))
            );
        }
        Ok(in_use)
    }

    /// Checks one node's slabs against its counters; returns its slab count and the
    /// objects handed out of them.
    fn account_node_slabs(&self, node: NodeId, state: &NodeState) -> Result<(usize, usize)> {
        let (mut slabs, mut in_use, mut free_objects) = (0usize, 0usize, 0usize);
        for (kind, list) in [
            (ListKind::Partial, &state.slabs_partial),
            (ListKind::Full, &state.slabs_full),
            (ListKind::Free, &state.slabs_free),
        ] {
            // SAFETY: we hold this node's lock.
            for slab in unsafe { list.iter() } {
                slabs += 1;
                let (used, free) = self.check_slab(slab, node, kind)?;
                in_use += used;
                free_objects += free;
            }
        }
        if free_objects != state.free_objects {
            return Err(self.corrupted(format!(
                "node {node}: free_objects is {} but its slabs hold {free_objects} free objects",
                state.free_objects
            )));
        }
        if state.grown.wrapping_sub(state.released) != slabs as u64 {
            return Err(self.corrupted(format!(
                "node {node}: grown {} - released {} != {slabs} slabs on its lists",
                state.grown, state.released
            )));
        }
        Ok((slabs, in_use))
    }

    /// Checks one cached object: in a live slab of this cache on `node`, a slot start,
    /// marked handed out, and in debug mode painted free.
    fn check_cached_object(&self, obj: *mut u8, node: NodeId, place: &str) -> Result<()> {
        let Some(slab) = SlabPtr::of(obj, self.geometry.slab_bytes) else {
            return Err(self.corrupted(format!("{place} holds a null object")));
        };
        let registered = self.registry.slabs.read().get(&(slab.base() as usize)).map(|owner| owner.cache_id);
        if registered != Some(self.id) {
            return Err(self.corrupted(format!("{place} holds {obj:p}, which is in no slab of this cache")));
        }
        // SAFETY: the slab is registered to this cache, so mapped; the caller holds every
        // lock of the cache.
        unsafe {
            if slab.nodeid() != node {
                return Err(self.corrupted(format!("{place} holds {obj:p} of node {}", slab.nodeid())));
            }
            let index = slab
                .obj_to_index(&self.geometry, obj)
                .map_err(|reason| self.corrupted(format!("{place}: {obj:p}: {reason}")))?;
            if !slab.is_handed_out(index) {
                return Err(
                    self.corrupted(format!("{place} holds {obj:p}, which is also on its slab's free list"))
                );
            }
            if self.debug {
                self.check_free_slot(obj)?;
            }
        }
        Ok(())
    }

    /// Checks one slab on `node`'s `kind` list; returns (objects handed out, free).
    fn check_slab(&self, slab: SlabPtr, node: NodeId, kind: ListKind) -> Result<(usize, usize)> {
        let base = slab.base();
        // SAFETY: the slab is on a list of this cache whose lock the caller holds, so its
        // descriptor is mapped and nobody changes it (the reads below rely on the same).
        if unsafe { slab.magic() != SLAB_MAGIC || slab.cache_id() != self.id } {
            return Err(self.corrupted(format!("slab {base:p} on node {node} has a foreign descriptor")));
        }
        // SAFETY: as above; the descriptor is this cache's.
        let (nodeid, list, used) = unsafe { (slab.nodeid(), slab.list(), slab.inuse() as usize) };
        if nodeid != node {
            return Err(self.corrupted(format!("slab {base:p} of node {nodeid} sits on node {node}'s lists")));
        }
        if list != kind {
            return Err(self.corrupted(format!("slab {base:p} on the {kind:?} list says {list:?}")));
        }
        // SAFETY: as above.
        let free = unsafe { slab.free_indices(&self.geometry) }
            .map_err(|reason| self.corrupted(format!("slab {base:p}: {reason}")))?;
        let expected = match kind {
            ListKind::Full => used == self.geometry.num as usize,
            ListKind::Partial => used > 0 && used < self.geometry.num as usize,
            ListKind::Free => used == 0,
            ListKind::Detached => false,
        };
        if !expected {
            return Err(
                self.corrupted(format!("slab {base:p} with {used} objects in use sits on the {kind:?} list"))
            );
        }
        if self.debug {
            for &index in &free {
                // SAFETY: `index` is a free slot of this slab, which the caller's lock
                // keeps free while it checks.
                unsafe { self.check_free_slot(slab.index_to_obj(&self.geometry, index)) }?;
            }
        }
        Ok((used, free.len()))
    }
}
