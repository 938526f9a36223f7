//! Typed caches: [`TypedCache<T>`] hands out [`Handle<T>`]s that drop their value and
//! return the slot when dropped.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Arc;

use topology::NodeId;

use crate::cache::{Cache, KmemCache};
use crate::error::Result;

/// A cache of `T` values. Cheap to clone (an `Arc` inside).
pub struct TypedCache<T> {
    cache: Arc<Cache>,
    kmem: NonNull<KmemCache>,
    _marker: PhantomData<fn() -> T>,
}

// SAFETY: the cache proper is Send + Sync; values cross threads only inside handles,
// which are Send only when T is.
unsafe impl<T> Send for TypedCache<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for TypedCache<T> {}

impl<T> Clone for TypedCache<T> {
    fn clone(&self) -> Self {
        Self { cache: Arc::clone(&self.cache), kmem: self.kmem, _marker: PhantomData }
    }
}

impl<T> std::fmt::Debug for TypedCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedCache").field("cache", &self.cache).finish()
    }
}

impl<T: Send> TypedCache<T> {
    /// Wraps a cache created with `Layout::new::<T>()`.
    pub(crate) fn new(cache: Arc<Cache>) -> Self {
        let kmem = cache.kmem_ptr();
        Self { cache, kmem, _marker: PhantomData }
    }

    #[inline(always)]
    fn kmem(&self) -> &KmemCache {
        // SAFETY: self.cache keeps the cache proper alive.
        unsafe { self.kmem.as_ref() }
    }

    /// Moves `value` into `object` and hands it out.
    ///
    /// # Safety
    /// `object` was just allocated from this cache, so it has `T`'s layout and is ours
    /// alone.
    #[inline(always)]
    unsafe fn fill(&self, object: NonNull<u8>, value: T) -> Handle<T> {
        let ptr = object.cast::<T>();
        // SAFETY: a fresh object of T's layout, ours alone (the caller's promise).
        unsafe { ptr.as_ptr().write(value) };
        Handle { ptr, kmem: self.kmem, _marker: PhantomData }
    }

    /// Moves `value` into an object from the current CPU's node.
    #[inline(always)]
    pub fn alloc(&self, value: T) -> Result<Handle<T>> {
        let object = self.kmem().alloc_here()?;
        // SAFETY: just allocated from this cache.
        Ok(unsafe { self.fill(object, value) })
    }

    /// Moves `value` into an object from `node` (or its nearest memory node).
    pub fn alloc_node(&self, node: NodeId, value: T) -> Result<Handle<T>> {
        let kmem = self.kmem();
        let object = kmem.alloc_node_on(kmem.current_cpu(), node)?;
        // SAFETY: just allocated from this cache.
        Ok(unsafe { self.fill(object, value) })
    }

    /// Moves `value` into an object from `node` and no other ([`Cache::alloc_node_exact`]).
    pub fn alloc_node_exact(&self, node: NodeId, value: T) -> Result<Handle<T>> {
        let object = self.cache.alloc_node_exact(node)?;
        // SAFETY: just allocated from this cache.
        Ok(unsafe { self.fill(object, value) })
    }

    /// The untyped cache.
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }
}

/// A `T` in a slab object. Dropping it drops the `T` and frees the object on the
/// current CPU.
///
/// A handle does not keep an `Arc` to its cache (that would cost two atomic operations on
/// a shared counter per object); the cache keeps itself alive instead while objects are
/// out: `destroy_cache` refuses, and the drop of the last `Arc<Cache>` leaks the cache
/// rather than free memory that handles still use.
pub struct Handle<T> {
    ptr: NonNull<T>,
    kmem: NonNull<KmemCache>,
    _marker: PhantomData<T>,
}

// SAFETY: a handle owns its T; moving it moves the T.
unsafe impl<T: Send> Send for Handle<T> {}
// SAFETY: shared access to a handle is shared access to its T.
unsafe impl<T: Sync> Sync for Handle<T> {}

impl<T> Handle<T> {
    /// Gives up the handle without freeing: the object stays allocated until
    /// [`Handle::from_raw`] takes it back.
    pub fn into_raw(self) -> NonNull<T> {
        let ptr = self.ptr;
        std::mem::forget(self);
        ptr
    }

    /// Takes back an object given up by [`Handle::into_raw`].
    ///
    /// # Safety
    /// `ptr` must come from `into_raw` of a handle of `cache` (or a clone of it), and be
    /// taken back at most once.
    pub unsafe fn from_raw(cache: &TypedCache<T>, ptr: NonNull<T>) -> Self {
        Self { ptr, kmem: cache.kmem, _marker: PhantomData }
    }
}

impl<T> Deref for Handle<T> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: the handle owns an initialised T.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for Handle<T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the handle owns an initialised T, uniquely.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for Handle<T> {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: the cache proper outlives every object out (see the type's docs).
        let kmem = unsafe { self.kmem.as_ref() };
        // SAFETY: we own the T and drop it once; the object came from this cache. A drop
        // cannot return an error: `free_here_reporting` prints one from its cold slow path, so
        // the drop inlines into its callers as the free's fast path.
        unsafe {
            std::ptr::drop_in_place(self.ptr.as_ptr());
            kmem.free_here_reporting(self.ptr.cast());
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Handle").field(&**self).finish()
    }
}
