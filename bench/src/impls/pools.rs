//! The Rust object pools: lockfree-object-pool, sharded-slab and object-pool, each used
//! through the API its documentation leads with.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;

use lockfree_object_pool::{LinearObjectPool, LinearReusable};
use sharded_slab::Slab;

use super::{allocation_failed, Impl};
use crate::obj::Obj;

/// `lockfree_object_pool::LinearObjectPool` (the crate's fastest pool in its own
/// benchmarks), with a no-op reset; handles borrow the pool.
pub(crate) struct LockfreePool<const W: usize> {
    pool: LinearObjectPool<Obj<W>>,
}

impl<const W: usize> LockfreePool<W> {
    pub(crate) fn new() -> Self {
        Self { pool: LinearObjectPool::new(Obj::uninit, |_| {}) }
    }
}

impl<const W: usize> Impl for LockfreePool<W> {
    type Handle<'a>
        = LinearReusable<'a, Obj<W>>
    where
        Self: 'a;

    #[inline(always)]
    fn alloc(&self, stamp: u64) -> LinearReusable<'_, Obj<W>> {
        let mut handle = self.pool.pull();
        handle.set_stamp(stamp);
        handle
    }

    #[inline(always)]
    fn free<'a>(&'a self, handle: LinearReusable<'a, Obj<W>>) {
        drop(handle);
    }

    #[inline(always)]
    fn stamp(&self, handle: &LinearReusable<'_, Obj<W>>) -> u64 {
        handle.stamp()
    }

    #[inline(always)]
    fn identity(&self, handle: &LinearReusable<'_, Obj<W>>) -> usize {
        std::ptr::from_ref::<Obj<W>>(handle) as usize
    }

    #[inline(always)]
    fn with_words<R>(
        &self,
        handle: &mut LinearReusable<'_, Obj<W>>,
        f: impl FnOnce(&mut [MaybeUninit<u64>]) -> R,
    ) -> R {
        f(&mut handle.words)
    }
}

/// `object_pool::Pool` (a mutex-guarded stack of values), starting empty and growing
/// through its fallback constructor; handles borrow the pool.
pub(crate) struct ObjectPool<const W: usize> {
    pool: object_pool::Pool<Obj<W>>,
}

impl<const W: usize> ObjectPool<W> {
    pub(crate) fn new() -> Self {
        Self { pool: object_pool::Pool::new(0, Obj::uninit) }
    }
}

impl<const W: usize> Impl for ObjectPool<W> {
    type Handle<'a>
        = object_pool::Reusable<'a, Obj<W>>
    where
        Self: 'a;

    #[inline(always)]
    fn alloc(&self, stamp: u64) -> object_pool::Reusable<'_, Obj<W>> {
        let mut handle = self.pool.pull(Obj::uninit);
        handle.set_stamp(stamp);
        handle
    }

    #[inline(always)]
    fn free<'a>(&'a self, handle: object_pool::Reusable<'a, Obj<W>>) {
        drop(handle);
    }

    #[inline(always)]
    fn stamp(&self, handle: &object_pool::Reusable<'_, Obj<W>>) -> u64 {
        handle.stamp()
    }

    /// The value lives inside the handle (the pool moves it in and out), so its address
    /// is the handle's; nothing to elide here but the move, which the pool always does.
    #[inline(always)]
    fn identity(&self, handle: &object_pool::Reusable<'_, Obj<W>>) -> usize {
        handle.stamp() as usize
    }

    #[inline(always)]
    fn with_words<R>(
        &self,
        handle: &mut object_pool::Reusable<'_, Obj<W>>,
        f: impl FnOnce(&mut [MaybeUninit<u64>]) -> R,
    ) -> R {
        f(&mut handle.words)
    }
}

/// A slab entry. sharded-slab hands out shared references only, so the object sits in
/// an `UnsafeCell`; the workloads touch an object only through the one handle (key) that
/// owns it, which is what makes that sound.
struct SlabObj<const W: usize>(UnsafeCell<Obj<W>>);

// SAFETY: an object is accessed only by the thread holding its key (see `SlabObj`); the
// slab itself synchronises insertion and removal.
unsafe impl<const W: usize> Sync for SlabObj<W> {}

/// `sharded_slab::Slab`: `insert` returns a key, `remove` frees it, `get` reaches the
/// object.
pub(crate) struct ShardedSlab<const W: usize> {
    slab: Slab<SlabObj<W>>,
}

/// A key into the slab.
#[derive(Debug)]
pub(crate) struct SlabKey(usize);

impl<const W: usize> ShardedSlab<W> {
    pub(crate) fn new() -> Self {
        Self { slab: Slab::new() }
    }

    #[inline(always)]
    fn object(&self, key: &SlabKey) -> *mut Obj<W> {
        match self.slab.get(key.0) {
            Some(entry) => entry.0.get(),
            None => allocation_failed("sharded-slab", &format_args!("key {} is not in the slab", key.0)),
        }
    }
}

impl<const W: usize> Impl for ShardedSlab<W> {
    type Handle<'a>
        = SlabKey
    where
        Self: 'a;

    #[inline(always)]
    fn alloc(&self, stamp: u64) -> SlabKey {
        let mut object = Obj::uninit();
        object.set_stamp(stamp);
        match self.slab.insert(SlabObj(UnsafeCell::new(object))) {
            Some(key) => SlabKey(key),
            None => allocation_failed("sharded-slab", &"the slab is full"),
        }
    }

    #[inline(always)]
    fn free(&self, handle: SlabKey) {
        if !self.slab.remove(handle.0) {
            allocation_failed("sharded-slab", &format_args!("key {} was not in the slab", handle.0));
        }
    }

    #[inline(always)]
    fn identity(&self, handle: &SlabKey) -> usize {
        handle.0
    }

    #[inline(always)]
    fn stamp(&self, handle: &SlabKey) -> u64 {
        // SAFETY: the entry stays in the slab while we hold its key, and only the key's
        // holder touches the object (see `SlabObj`).
        unsafe { (*self.object(handle)).stamp() }
    }

    #[inline(always)]
    fn with_words<R>(&self, handle: &mut SlabKey, f: impl FnOnce(&mut [MaybeUninit<u64>]) -> R) -> R {
        // SAFETY: as in `stamp`; the `&mut SlabKey` makes this the only access.
        f(unsafe { &mut (*self.object(handle)).words })
    }
}
