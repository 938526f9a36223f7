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

use std::ptr::NonNull;

use topology::{CpuId, NodeId};

use crate::array_cache::SlotGuard;
use crate::cache::KmemCache;
use crate::error::{Error, RedZoneSide, Result};
use crate::slab::SlabPtr;
use crate::sync::compare_exchange_word;

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

/// A free object's red zone or poison found changed.
#[derive(Debug, Clone, Copy)]
enum Damage {
    RedZone { side: RedZoneSide, found: u64 },
    Poison { offset: usize, found: u8, expected: u8 },
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
        // SAFETY: forwarded to the caller.
        match unsafe { self.free_slot_damage(obj) } {
            Some(damage) => Err(self.damage_error(self.body(obj) as usize, damage)),
            None => Ok(()),
        }
    }

    /// What [`KmemCache::check_free_slot`] finds wrong, as plain data (for `validate`,
    /// which may not allocate under its locks).
    ///
    /// # Safety
    /// As for [`KmemCache::check_free_slot`].
    unsafe fn free_slot_damage(&self, obj: *mut u8) -> Option<Damage> {
        for (side, zone) in
            [(RedZoneSide::Before, self.redzone1(obj)), (RedZoneSide::After, self.redzone2(obj))]
        {
            // SAFETY: the slot is ours and both red zones lie inside it.
            let found = unsafe { zone.read() };
            if found != RED_INACTIVE {
                return Some(Damage::RedZone { side, found });
            }
        }
        let size = self.geometry.object_size;
        // SAFETY: the slot is ours; its body is `object_size` bytes from `body(obj)`.
        let body = unsafe { std::slice::from_raw_parts(self.body(obj), size) };
        body.iter().enumerate().find_map(|(offset, &found)| {
            let expected = if offset == size - 1 { POISON_END } else { POISON_FREE };
            (found != expected).then_some(Damage::Poison { offset, found, expected })
        })
    }

    /// The error for `damage` found in the free object at `ptr` (its body's address).
    fn damage_error(&self, ptr: usize, damage: Damage) -> Error {
        let cache = self.name.clone();
        match damage {
            Damage::RedZone { side, found } => Error::RedZone { cache, ptr, side, found },
            Damage::Poison { offset, found, expected } => {
                Error::Poisoned { cache, ptr, offset, found, expected }
            }
        }
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

    /// `Ok` when `ptr` is the start of an object of one of this cache's slabs; else the
    /// error a debug free of it gives (another cache's, foreign, not an object's start).
    /// Kmalloc's (its pointer checks), left out of the loom build, as kmalloc is.
    #[cfg(not(slab_core_loom))]
    pub(crate) fn check_object_start(&self, ptr: NonNull<u8>) -> Result<()> {
        self.with_checked_slot(ptr, |_, _| Ok(()))
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
            return Err(Error::NotAnObject {
                cache: self.name.clone(),
                ptr: user,
                reason: reason.to_string(),
            });
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
}

mod validate;
