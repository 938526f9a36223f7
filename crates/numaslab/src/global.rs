//! numaslab as the process's allocator: [`NumaSlabAlloc`], a [`GlobalAlloc`] over the
//! kmalloc caches of an allocator built on first use from the live machine.
//!
//! ```no_run
//! #[global_allocator]
//! static ALLOC: numaslab::NumaSlabAlloc = numaslab::NumaSlabAlloc::new();
//! ```
//!
//! Bring-up follows the kernel's `kmem_cache_init`: before the caches exist nothing can
//! come from them, so the allocations of the set-up itself (reading sysfs, building the
//! allocator, its hotplug states and the kmalloc caches) are served by the bootstrap
//! arena (`slab_core::kmalloc::bootstrap_alloc`), and so are those of other threads that
//! arrive meanwhile (they do not wait: nothing can deadlock on the set-up). A
//! thread-local depth counts how deep the calling thread is inside the allocator. Once
//! the caches are up, the allocator's own metadata (array caches, registry tables,
//! error messages) comes from the kmalloc caches like everything else: slab-core keeps
//! the seed's rules (nothing allocated or freed under a lock an allocation takes), which
//! is what makes that safe. Nesting deeper than [`MAX_DEPTH`] goes to the arena, so
//! recursion is bounded whatever happens. A failed allocation returns null.
//!
//! Environment, read once at bring-up: `NUMASLAB_DEBUG=1` makes the caches debug caches
//! (red zones, poison, every free checked; an unknown pointer is reported on stderr and
//! left alone).
//!
//! There is one such allocator per process (every `NumaSlabAlloc` value is a handle to
//! it). It follows `fork` by itself (the `fork` module): bring-up registers the
//! process's `pthread_atfork` handlers, and a forked child retires its parent's caches
//! and brings up its own.
//!
//! Bring-up starts no thread. [`NumaSlabAlloc::follow_hotplug`], called once from the
//! program (the `LD_PRELOAD` library calls it from its constructor), starts the
//! process's `hotplug::Watcher`, so that a CPU another program takes offline has its
//! array caches drained rather than stranded until it returns.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicU8, Ordering};
use std::sync::Arc;

use hotplug::Watcher;
use slab_core::kmalloc::{self, bootstrap_alloc};
use slab_core::{Checking, Kmalloc};
use topology::{FakeTopology, NodeId, SysfsTopology, Topology};

use crate::NumaSlab;

/// How deep a thread may be inside the allocator and still be served by the caches: the
/// caller's allocation (depth 0), the metadata it needs (1), and what that needs in turn.
pub const MAX_DEPTH: u32 = 3;

const UNINIT: u8 = 0;
const INITIALIZING: u8 = 1;
const READY: u8 = 2;

/// The states of [`NumaSlabAlloc::follow_hotplug`]'s watcher.
const NOT_WATCHING: u8 = 0;
const WATCHER_STARTING: u8 = 1;
const WATCHING: u8 = 2;

thread_local! {
    /// How many allocator calls of this thread are under way. `const`, without a
    /// destructor: readable from a thread's first instruction to its last.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// What bring-up builds: the allocator wired to hotplug, and its kmalloc caches.
#[derive(Debug)]
pub struct Machinery {
    /// The allocator and its hotplug states (start a `hotplug::Watcher` on
    /// `numaslab.hotplug()` to follow the machine).
    pub numaslab: Arc<NumaSlab>,
    /// The general caches.
    pub kmalloc: Kmalloc,
    /// In a forked child, once retired: the machinery retired before it (its parent's
    /// parent's), the next link of the chain [`NumaSlabAlloc`] keeps.
    older: AtomicPtr<Machinery>,
}

/// numaslab's kmalloc as a [`GlobalAlloc`]: declare it as the `#[global_allocator]`;
/// it brings itself up on first use.
///
/// There is one numaslab allocator per process, as there is one kmalloc in a kernel:
/// every value of this type is a handle to it (its state is the process's, not the
/// value's), so a program may name it in as many places as it likes, and the `fork`
/// handlers reach it without a pointer to any value.
#[derive(Debug, Default, Clone, Copy)]
pub struct NumaSlabAlloc {
    _process: (),
}

/// The process's allocator, whichever [`NumaSlabAlloc`] value is used.
struct Process {
    state: AtomicU8,
    machinery: AtomicPtr<Machinery>,
    /// Machinery of the parent processes, in a forked child, the parent's first, each
    /// linked to the one before it (`Machinery::older`): their objects are left alone
    /// (their locks may have been held by threads the child does not have). Every
    /// generation is kept, however long the chain of forks.
    retired: AtomicPtr<Machinery>,
    /// Whether this process follows hotplug ([`NumaSlabAlloc::follow_hotplug`]), and its
    /// watcher, leaked: it runs for the life of the process.
    watch_state: AtomicU8,
    watcher: AtomicPtr<Watcher>,
}

static PROCESS: Process = Process {
    state: AtomicU8::new(UNINIT),
    machinery: AtomicPtr::new(std::ptr::null_mut()),
    retired: AtomicPtr::new(std::ptr::null_mut()),
    watch_state: AtomicU8::new(NOT_WATCHING),
    watcher: AtomicPtr::new(std::ptr::null_mut()),
};

/// Marks the calling thread one level deeper for the life of the guard.
struct Nested(u32);

impl Nested {
    #[inline(always)]
    fn enter() -> Nested {
        let depth = DEPTH.get();
        DEPTH.set(depth + 1);
        Nested(depth)
    }
}

impl Drop for Nested {
    #[inline(always)]
    fn drop(&mut self) {
        DEPTH.set(self.0);
    }
}

impl NumaSlabAlloc {
    /// A handle to the process's allocator, which its first allocation brings up.
    pub const fn new() -> Self {
        Self { _process: () }
    }

    /// Follows CPU hotplug on this machine: brings the allocator up if need be and starts,
    /// once per process, a `hotplug::Watcher` on its hotplug states (uevents, else
    /// polling; see `hotplug::WatchMode::Auto`), so that a CPU taken offline by anyone has
    /// its array caches drained into its node's lists, and one coming online gets its
    /// caches, as the kernel's SLAB does on CPU hotplug. Later calls, from any thread,
    /// return the same watcher; a failed start can be retried. The thread blocks every
    /// signal, so that none meant for the program's threads is delivered to it. A forked
    /// child has no watcher (its parent's thread did not come along) until it calls this
    /// again. Not for use inside an allocation (a `GlobalAlloc` call).
    pub fn follow_hotplug(&self) -> crate::Result<&'static Watcher> {
        let machinery = self.bring_up();
        loop {
            match PROCESS.watch_state.compare_exchange(
                NOT_WATCHING,
                WATCHER_STARTING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(WATCHING) => {
                    if let Some(watcher) = self.watcher() {
                        return Ok(watcher);
                    }
                }
                // Another thread is starting it: wait for its outcome.
                Err(_) => std::thread::yield_now(),
            }
        }
        match with_signals_blocked(|| Watcher::start(machinery.numaslab.hotplug())) {
            Ok(watcher) => {
                let watcher: &'static Watcher = Box::leak(Box::new(watcher));
                PROCESS.watcher.store(std::ptr::from_ref(watcher).cast_mut(), Ordering::Release);
                PROCESS.watch_state.store(WATCHING, Ordering::Release);
                Ok(watcher)
            }
            Err(error) => {
                PROCESS.watch_state.store(NOT_WATCHING, Ordering::Release);
                Err(error.into())
            }
        }
    }

    /// The watcher [`NumaSlabAlloc::follow_hotplug`] started in this process, if any.
    pub fn watcher(&self) -> Option<&'static Watcher> {
        if PROCESS.watch_state.load(Ordering::Acquire) != WATCHING {
            return None;
        }
        // SAFETY: WATCHING is published after the pointer, which is never freed (the
        // watcher is leaked) and only ever replaced by null in a forked child, before
        // the state goes back to NOT_WATCHING.
        unsafe { PROCESS.watcher.load(Ordering::Acquire).as_ref() }
    }

    /// The allocator's parts, once it is up (`None` before its first allocation, and
    /// while it is being brought up).
    ///
    /// One load, on every allocation's path: the pointer is stored (release) only once
    /// the machinery is built, just before the state says READY, and a forked child
    /// clears it before the state goes back.
    #[inline(always)]
    pub fn machinery(&self) -> Option<&'static Machinery> {
        // SAFETY: a non-null pointer is to built machinery, which is never freed.
        unsafe { PROCESS.machinery.load(Ordering::Acquire).as_ref() }
    }

    /// Brings the allocator up now if no allocation did yet, or waits for the thread
    /// bringing it up; returns its parts. Not for use inside an allocation.
    pub fn bring_up(&self) -> &'static Machinery {
        loop {
            let up = {
                let _nested = Nested::enter();
                self.machinery().or_else(|| self.init())
            };
            if let Some(machinery) = up {
                return machinery;
            }
            std::thread::yield_now();
        }
    }

    /// The caches for a call at the thread's current depth, bringing them up first if
    /// need be; `None`: serve from the bootstrap arena.
    #[inline(always)]
    fn caches(&self) -> Option<&'static Kmalloc> {
        if DEPTH.get() >= MAX_DEPTH {
            return None;
        }
        match self.machinery() {
            Some(machinery) => Some(&machinery.kmalloc),
            None => self.init_cold().map(|machinery| &machinery.kmalloc),
        }
    }

    /// Brings the allocator up, unless this call is nested in the bring-up. Cold: only the
    /// allocations made before the machinery is up (the first, and those of the set-up
    /// itself) come here.
    #[cold]
    #[inline(never)]
    fn init_cold(&self) -> Option<&'static Machinery> {
        if DEPTH.get() > 0 {
            // Inside the allocator already: the set-up itself, or a nested call.
            return None;
        }
        let _nested = Nested::enter();
        self.init()
    }

    /// `kmem_cache_init`: one thread builds the machinery; every allocation it (or anyone
    /// else) makes meanwhile is served by the bootstrap arena.
    fn init(&self) -> Option<&'static Machinery> {
        if PROCESS.state.compare_exchange(UNINIT, INITIALIZING, Ordering::AcqRel, Ordering::Acquire).is_err()
        {
            return self.machinery();
        }
        let machinery = Box::new(build());
        fork::follow();
        PROCESS.machinery.store(Box::into_raw(machinery), Ordering::Release);
        PROCESS.state.store(READY, Ordering::Release);
        self.machinery()
    }

    /// `kmalloc_node`: memory for `layout` on `node` (null on failure).
    pub fn alloc_node(&self, layout: Layout, node: NodeId) -> *mut u8 {
        let Some(kmalloc) = self.caches() else { return bootstrap_alloc(layout) };
        let _nested = Nested::enter();
        kmalloc.alloc_node(layout, node).map_or(std::ptr::null_mut(), NonNull::as_ptr)
    }

    /// `ksize`: the bytes usable at `ptr`, 0 for a pointer it does not know (in debug
    /// mode; otherwise such a pointer is undefined behaviour).
    ///
    /// # Safety
    /// `ptr` must come from this allocator and be live.
    pub unsafe fn usable_size(&self, ptr: NonNull<u8>) -> usize {
        let _nested = Nested::enter();
        if let Some(usable) = self.retired_size(ptr) {
            return usable;
        }
        // SAFETY: forwarded to the caller.
        let known = unsafe { kmalloc::usable_size_of(self.machinery().map(|m| &m.kmalloc), ptr) };
        // A fork (from a signal handler of this thread) may have retired the machinery
        // between the look above and this one.
        known.ok().or_else(|| self.retired_size(ptr)).unwrap_or(0)
    }

    /// `realloc` of C: memory for `new_layout` with the first bytes of `ptr`, which may
    /// be of any size (null on failure, `ptr` then untouched).
    ///
    /// # Safety
    /// `ptr` must come from this allocator and be live.
    pub unsafe fn realloc_unsized(&self, ptr: NonNull<u8>, new_layout: Layout) -> *mut u8 {
        if let Some(usable) = self.retired_size(ptr) {
            // SAFETY: a live object of a retired kmalloc, of `usable` bytes.
            return unsafe { self.move_out_of_retired(ptr, usable, new_layout) };
        }
        let kmalloc = self.caches();
        let _nested = Nested::enter();
        // SAFETY: the caller's pointer is live and came from this allocator.
        match unsafe { kmalloc::realloc_of(kmalloc, ptr, new_layout) } {
            Ok(fresh) => fresh.as_ptr(),
            // A fork (from a signal handler of this thread) retired the machinery that
            // owns `ptr` after the look above.
            Err(_) if self.retired_size(ptr).is_some() => {
                drop(_nested);
                // SAFETY: as above.
                unsafe { self.realloc_unsized(ptr, new_layout) }
            }
            Err(error) => {
                // A bad pointer (debug mode finds them) is said, as a bad free is; no
                // memory is quietly a null pointer, as malloc's callers expect.
                if error.is_bad_pointer() {
                    eprintln!(
                        "numaslab: realloc({ptr:p}, {} bytes): {error}; {}",
                        new_layout.size(),
                        consequence(&error)
                    );
                }
                std::ptr::null_mut()
            }
        }
    }

    /// A parent's object copied into fresh memory for `new_layout`, and left where it
    /// is (its caches are retired).
    ///
    /// # Safety
    /// `ptr` is a live object of a retired kmalloc with `usable` bytes.
    unsafe fn move_out_of_retired(&self, ptr: NonNull<u8>, usable: usize, new_layout: Layout) -> *mut u8 {
        // SAFETY: GlobalAlloc::alloc of a valid layout.
        let fresh = unsafe { GlobalAlloc::alloc(self, new_layout) };
        if !fresh.is_null() {
            // SAFETY: both blocks live and distinct, the smaller size copied.
            unsafe { std::ptr::copy_nonoverlapping(ptr.as_ptr(), fresh, usable.min(new_layout.size())) };
        }
        fresh
    }

    /// In a forked child, the usable bytes of `ptr` if it is an object of an ancestor's
    /// retired caches (read from its slab's descriptor: no lock of theirs is taken).
    fn retired_size(&self, ptr: NonNull<u8>) -> Option<usize> {
        let mut machinery = PROCESS.retired.load(Ordering::Acquire);
        while !machinery.is_null() {
            // SAFETY: retired machinery is never freed.
            let retired = unsafe { &*machinery };
            // SAFETY: the caller's pointer came from this allocator, in some generation.
            if let Some(usable) = unsafe { retired.kmalloc.owned_usable_size(ptr) } {
                return Some(usable);
            }
            machinery = retired.older.load(Ordering::Acquire);
        }
        None
    }

    /// The child's step of `fork` (from the handler the `fork` module registers at
    /// bring-up): the child's only thread may find any of the parent's locks held by a
    /// thread that did not come along, so the parent's machinery is retired (its objects
    /// stay valid and readable, their frees are ignored) and the child's next allocation
    /// brings up a fresh one. A child that goes on to `exec`, as most do, loses nothing;
    /// one that runs long keeps the parent's objects it frees.
    fn after_fork_in_child() {
        let old = PROCESS.machinery.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if !old.is_null() {
            Self::retire(old);
        }
        PROCESS.state.store(UNINIT, Ordering::Release);
        // The parent's watcher thread did not come along: it is left (leaked) as it is.
        PROCESS.watch_state.store(NOT_WATCHING, Ordering::Release);
        PROCESS.watcher.store(std::ptr::null_mut(), Ordering::Release);
    }

    /// Keeps a parent's machinery for its objects, at the head of the chain of earlier
    /// generations'. In a forked child's only thread.
    fn retire(machinery: *mut Machinery) {
        // SAFETY: built machinery, never freed; retired once (the process's pointer to
        // it was swapped out).
        unsafe { (*machinery).older.store(PROCESS.retired.load(Ordering::Acquire), Ordering::Release) };
        PROCESS.retired.store(machinery, Ordering::Release);
    }

    /// Returns `ptr`, whatever its size, reporting (not acting on) a pointer it does not
    /// know in debug mode.
    ///
    /// # Safety
    /// Outside debug mode, `ptr` must come from this allocator and be live.
    pub unsafe fn free_unsized(&self, ptr: NonNull<u8>) {
        // SAFETY: forwarded to the caller.
        if unsafe { self.free_cached(ptr, None) } {
            return;
        }
        // SAFETY: forwarded to the caller.
        unsafe { self.free_unsized_nested(ptr) }
    }

    /// [`NumaSlabAlloc::free_unsized`] past the per-CPU array, one level deeper.
    ///
    /// # Safety
    /// As for [`NumaSlabAlloc::free_unsized`].
    #[inline(never)]
    unsafe fn free_unsized_nested(&self, ptr: NonNull<u8>) {
        let _nested = Nested::enter();
        // SAFETY: forwarded to the caller.
        let result = unsafe { kmalloc::free_of(self.machinery().map(|m| &m.kmalloc), ptr, None) };
        if let Err(error) = result {
            if self.retired_size(ptr).is_none() {
                eprintln!("numaslab: free({ptr:p}): {error}; {}", consequence(&error));
            }
        }
    }
}

/// What became of the pointer a free or realloc reported `error` for.
fn consequence(error: &slab_core::Error) -> &'static str {
    if error.object_freed() {
        "the object was freed"
    } else {
        "the pointer is left alone"
    }
}

/// Runs `f` with every signal blocked in the calling thread (glibc keeps the two it
/// needs for cancellation and `setxid` unblocked), so that a thread it starts begins
/// with them all blocked; the caller's mask is restored after.
fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: sigset_t is plain data, valid zeroed; sigfillset initialises it.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both sets are valid for writing; pthread_sigmask affects this thread only.
    let blocked = unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old) == 0
    };
    let result = f();
    if blocked {
        // SAFETY: old is the mask read above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    }
    result
}

/// Whether `NUMASLAB_DEBUG` asks for debug caches (set, not empty, not `0`). Read with the
/// C library's `getenv`, not `std::env`: std's reads take a process-wide lock, which a
/// forked child bringing up its own caches may have inherited held by a thread it does
/// not have (a parent thread inside `set_var` at the fork), and would wait on for ever.
fn debug_requested() -> bool {
    // SAFETY: a NUL-terminated name; getenv returns null or a NUL-terminated string,
    // read at once. Bring-up runs at a process's first allocation, before it has threads
    // as a rule, or in a forked child's only thread; a thread changing the environment
    // at that moment is the race std's lock exists for, and C's setenv never took it.
    let value = unsafe { libc::getenv(c"NUMASLAB_DEBUG".as_ptr()) };
    if value.is_null() {
        return false;
    }
    // SAFETY: as above: a live NUL-terminated string.
    let value = unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes();
    !value.is_empty() && value != b"0"
}

/// Builds the allocator on the live machine (a one-CPU fake if sysfs cannot be read,
/// said on stderr) and its kmalloc caches.
fn build() -> Machinery {
    let checking = if debug_requested() { Checking::Debug } else { Checking::Trusting };
    let topology: Arc<dyn Topology> = match SysfsTopology::detect() {
        Ok(live) => Arc::new(live),
        Err(error) => {
            eprintln!("numaslab: cannot read this machine ({error}); running as one CPU on one node");
            Arc::new(fallback_machine())
        }
    };
    let numaslab = match NumaSlab::new(topology) {
        Ok(numaslab) => numaslab,
        Err(error) => {
            eprintln!(
                "numaslab: cannot set up hotplug on this machine ({error}); running as one CPU on one node"
            );
            NumaSlab::new(Arc::new(fallback_machine())).unwrap_or_else(|_| std::process::abort())
        }
    };
    let kmalloc = Kmalloc::new(numaslab.allocator(), checking).unwrap_or_else(|error| {
        eprintln!("numaslab: cannot create the kmalloc caches: {error}");
        std::process::abort()
    });
    Machinery { numaslab, kmalloc, older: AtomicPtr::new(std::ptr::null_mut()) }
}

/// One CPU on one node: the machine assumed when the live one cannot be read.
fn fallback_machine() -> FakeTopology {
    FakeTopology::builder().nodes(1).cpus_per_node(1).build().unwrap_or_else(|_| std::process::abort())
}

/// The per-CPU arrays, tried first by every allocation and free: one restartable
/// sequence, which cannot recurse (it takes no lock, allocates no metadata and makes no
/// system call), so it runs before the depth mark and the bring-up check; whatever it
/// cannot do goes through the `_nested` paths, which mark the thread one level deeper.
impl NumaSlabAlloc {
    /// Memory for `layout` from the current CPU's array, if one sequence pops it.
    #[inline(always)]
    fn alloc_cached(&self, layout: Layout) -> Option<NonNull<u8>> {
        self.machinery()?.kmalloc.alloc_cached(layout)
    }

    /// Whether one sequence put `ptr` on the current CPU's array (nothing done if not).
    ///
    /// # Safety
    /// `ptr` came from this allocator (with `layout`, when given) and is live.
    #[inline(always)]
    unsafe fn free_cached(&self, ptr: NonNull<u8>, layout: Option<Layout>) -> bool {
        // SAFETY: forwarded to the caller; free_cached is false in debug mode, where
        // every free is checked by the nested path.
        self.machinery().is_some_and(|m| unsafe { m.kmalloc.free_cached(ptr, layout) })
    }

    /// [`GlobalAlloc::alloc`] past the per-CPU array, one level deeper.
    #[inline(never)]
    fn alloc_nested(&self, layout: Layout) -> *mut u8 {
        let Some(kmalloc) = self.caches() else { return bootstrap_alloc(layout) };
        let _nested = Nested::enter();
        kmalloc.alloc(layout).map_or(std::ptr::null_mut(), NonNull::as_ptr)
    }

    /// [`GlobalAlloc::dealloc`] past the per-CPU array, one level deeper.
    ///
    /// # Safety
    /// As for [`GlobalAlloc::dealloc`].
    #[inline(never)]
    unsafe fn dealloc_nested(&self, ptr: NonNull<u8>, layout: Layout) {
        let _nested = Nested::enter();
        let kmalloc = self.machinery().map(|m| &m.kmalloc);
        // SAFETY: the caller's pointer came from this allocator with this layout.
        let result = unsafe { kmalloc::free_of(kmalloc, ptr, Some(layout)) };
        if let Err(error) = result {
            if self.retired_size(ptr).is_none() {
                eprintln!(
                    "numaslab: dealloc({ptr:p}, {} bytes): {error}; {}",
                    layout.size(),
                    consequence(&error)
                );
            }
        }
    }
}

// SAFETY: every method returns memory for the layout asked or null, never unwinds
// (slab-core's paths return errors), and frees only what this allocator handed out.
unsafe impl GlobalAlloc for NumaSlabAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.alloc_cached(layout) {
            Some(ptr) => ptr.as_ptr(),
            None => self.alloc_nested(layout),
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let Some(kmalloc) = self.caches() else {
            // Arena memory is fresh from the OS, or a direct mapping: zero already.
            return bootstrap_alloc(layout);
        };
        let _nested = Nested::enter();
        kmalloc.alloc_zeroed(layout).map_or(std::ptr::null_mut(), NonNull::as_ptr)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: GlobalAlloc never frees null.
        let ptr = unsafe { NonNull::new_unchecked(ptr) };
        // SAFETY: the caller's pointer came from this allocator with this layout.
        if !unsafe { self.free_cached(ptr, Some(layout)) } {
            // SAFETY: as above.
            unsafe { self.dealloc_nested(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc never reallocates null.
        let ptr = unsafe { NonNull::new_unchecked(ptr) };
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        // SAFETY: the caller's pointer is live and came from this allocator.
        unsafe { self.realloc_unsized(ptr, new_layout) }
    }
}

mod fork;
#[cfg(test)]
mod tests;
