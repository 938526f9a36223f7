//! The malloc family: glibc, mimalloc, jemalloc, snmalloc and rpmalloc, and numaslab's
//! own `GlobalAlloc`, `numaslab::NumaSlabAlloc`.
//!
//! A binary has one `#[global_allocator]`, so the harness calls each allocator through its
//! `GlobalAlloc` impl directly (`MiMalloc.alloc(layout)`), which is exactly the function
//! `Box::new` reaches when that allocator is the global one, minus the `__rust_alloc`
//! shim. The harness's own bookkeeping (vectors, channels) stays on glibc for every
//! implementation alike. glibc is `std::alloc::System`, what `Box` uses by default.

use std::alloc::{GlobalAlloc, Layout, System};
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ptr::NonNull;

use super::{allocation_failed, Impl};
use crate::obj::Obj;

/// An allocator reachable through `GlobalAlloc`, with the per-thread set-up some need.
pub(crate) trait MallocApi: GlobalAlloc + Sync {
    /// The implementation's name, for error messages.
    const NAME: &'static str;
    /// Makes the allocator usable on the calling thread.
    fn thread_start(&self) {}
    /// Releases the calling thread's state.
    fn thread_end(&self) {}
}

impl MallocApi for System {
    const NAME: &'static str = "glibc";
}

/// numaslab as a `#[global_allocator]` would run it: brought up on its first allocation
/// from the live machine, whatever machine the workload describes (so on the two-node
/// workloads it sees one node, as the other `GlobalAlloc` peers do), with its depth mark
/// and bring-up check.
impl MallocApi for numaslab::NumaSlabAlloc {
    const NAME: &'static str = "numaslab-global";
}

#[cfg(feature = "mimalloc")]
impl MallocApi for mimalloc::MiMalloc {
    const NAME: &'static str = "mimalloc";
}

#[cfg(feature = "jemalloc")]
impl MallocApi for tikv_jemallocator::Jemalloc {
    const NAME: &'static str = "jemalloc";
}

#[cfg(feature = "snmalloc")]
impl MallocApi for snmalloc_rs::SnMalloc {
    const NAME: &'static str = "snmalloc";
}

/// rpmalloc needs `rpmalloc_initialize` once and `rpmalloc_thread_initialize` on every
/// thread before use, as its README says. The C sources rpmalloc-sys compiles also do
/// both by themselves on Linux (a constructor, and an interposed `pthread_create`); the
/// explicit calls keep the harness correct should a build not.
#[cfg(feature = "rpmalloc")]
impl MallocApi for rpmalloc::RpMalloc {
    const NAME: &'static str = "rpmalloc";

    fn thread_start(&self) {
        // SAFETY: plain C call; safe to repeat on a thread that is already initialised.
        unsafe { rpmalloc_sys::rpmalloc_thread_initialize() };
    }

    fn thread_end(&self) {
        // SAFETY: the thread frees no more rpmalloc memory after this (the workloads
        // call it last); objects it allocated may still be freed by other threads,
        // which rpmalloc supports after a thread finalised.
        unsafe { rpmalloc_sys::rpmalloc_thread_finalize() };
    }
}

/// A raw object pointer that may cross threads.
#[derive(Debug)]
pub(crate) struct RawObj<const W: usize>(NonNull<Obj<W>>);

// SAFETY: the pointer is an exclusive reference to one live object; the allocators under
// test all allow an object to be freed on another thread than the one that allocated it.
unsafe impl<const W: usize> Send for RawObj<W> {}

impl<const W: usize> RawObj<W> {
    /// Wraps a freshly allocated object and writes its stamp.
    ///
    /// # Safety
    /// `ptr` points to `size_of::<Obj<W>>()` writable bytes, aligned for `Obj<W>`, that
    /// nothing else uses.
    #[inline(always)]
    pub(crate) unsafe fn new(ptr: NonNull<Obj<W>>, stamp: u64) -> Self {
        // SAFETY: the caller guarantees the memory is valid and ours; word 0 is in it.
        unsafe { ptr.cast::<u64>().write(stamp) };
        Self(ptr)
    }

    /// The object's address.
    #[inline(always)]
    pub(crate) fn ptr(&self) -> NonNull<Obj<W>> {
        self.0
    }

    #[inline(always)]
    pub(crate) fn stamp(&self) -> u64 {
        // SAFETY: the object is live and its word 0 was written in `new`.
        unsafe { self.0.cast::<u64>().read() }
    }

    #[inline(always)]
    pub(crate) fn words(&mut self) -> &mut [MaybeUninit<u64>] {
        // SAFETY: the object is live, `W` words long, and this handle is its only owner;
        // `MaybeUninit` words have no validity requirement.
        unsafe { &mut (*self.0.as_ptr()).words }
    }
}

/// An allocator of the malloc family, used for objects of `W` words.
#[derive(Debug)]
pub(crate) struct Malloc<A, const W: usize> {
    allocator: A,
    _object: PhantomData<Obj<W>>,
}

impl<A: MallocApi, const W: usize> Malloc<A, W> {
    const LAYOUT: Layout = Layout::new::<Obj<W>>();

    /// The allocator, after one allocation and free on the calling thread: a program's
    /// allocator has served its runtime's start-up allocations before `main`, so each
    /// allocator's own initialisation (numaslab's bring-up from sysfs, jemalloc's
    /// `malloc_init`, mimalloc's process init) is not timed as part of a workload.
    pub(crate) fn new(allocator: A) -> Self {
        // SAFETY: the layout has a non-zero size; the pointer is freed with it at once.
        unsafe {
            let warm_up = allocator.alloc(Self::LAYOUT);
            if !warm_up.is_null() {
                allocator.dealloc(warm_up, Self::LAYOUT);
            }
        }
        Self { allocator, _object: PhantomData }
    }
}

impl<A: MallocApi, const W: usize> Impl for Malloc<A, W> {
    type Handle<'a>
        = RawObj<W>
    where
        Self: 'a;

    #[inline(always)]
    fn alloc(&self, stamp: u64) -> RawObj<W> {
        // SAFETY: the layout has a non-zero size (W >= 1).
        let ptr = unsafe { self.allocator.alloc(Self::LAYOUT) };
        let Some(ptr) = NonNull::new(ptr.cast::<Obj<W>>()) else {
            allocation_failed(A::NAME, &"the allocator returned null")
        };
        // SAFETY: a fresh allocation of `LAYOUT`, owned by nobody else.
        unsafe { RawObj::new(ptr, stamp) }
    }

    #[inline(always)]
    fn free(&self, handle: RawObj<W>) {
        // SAFETY: the pointer came from `alloc` on this allocator with the same layout
        // and the handle, its only owner, is consumed here.
        unsafe { self.allocator.dealloc(handle.ptr().as_ptr().cast(), Self::LAYOUT) }
    }

    #[inline(always)]
    fn stamp(&self, handle: &RawObj<W>) -> u64 {
        handle.stamp()
    }

    #[inline(always)]
    fn identity(&self, handle: &RawObj<W>) -> usize {
        handle.ptr().as_ptr() as usize
    }

    #[inline(always)]
    fn with_words<R>(&self, handle: &mut RawObj<W>, f: impl FnOnce(&mut [MaybeUninit<u64>]) -> R) -> R {
        f(handle.words())
    }

    fn thread_start(&self) {
        self.allocator.thread_start();
    }

    fn thread_end(&self) {
        self.allocator.thread_end();
    }
}

/// rpmalloc's process-wide set-up, before its first use; it also sets up the calling
/// thread.
#[cfg(feature = "rpmalloc")]
pub(crate) fn rpmalloc_process_start() {
    // SAFETY: plain C call, made once on the main thread before any other rpmalloc use.
    unsafe {
        rpmalloc_sys::rpmalloc_initialize();
    }
}
