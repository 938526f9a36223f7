//! Remote frees without the owner's lock: each node's queue of its objects freed on other
//! nodes, pushed in batches.
//!
//! The alien cache keeps its meaning (a free of another node's object never enters the
//! local array; it collects in this node's alien cache for the owner), but a full alien
//! cache no longer takes the owner's `list_lock` to `free_block` its objects
//! (`__drain_alien_cache`): its objects are linked into a chain and the chain is spliced
//! onto the owner node's [`RemoteFrees`] with one compare-and-swap. This is snmalloc's
//! batched remote message and mimalloc's `xthread_free` list, per node: producers push
//! lock-free, and the owner takes the whole queue with one swap ([`RemoteFrees::take_all`])
//! when it next refills a CPU array, allocates from its slabs, or is reaped, shrunk or
//! destroyed; so a node without CPUs still has its queue drained and nothing is stranded.
//!
//! # The list lives in the objects
//!
//! Like SLUB's and mimalloc's free lists, the queue is linked through the first word of
//! each queued object (objects are at least a word and word-aligned: `BYTES_PER_WORD`), so
//! a hand-off allocates nothing: nothing can fail, and nothing is allocated or freed under
//! any lock (a kmalloc cache's allocation could need that lock). A queued object is free
//! memory the queue owns; writing its first word is what any free list does. Debug caches
//! keep their objects' poison intact and do not use the queue.
//!
//! # The protocol
//!
//! - A push links its objects privately, then publishes the chain with a release
//!   compare-and-swap of the head; links are not written again until the objects are
//!   taken.
//! - Every take and every walk happens under the owner node's `list_lock` (the `unsafe`
//!   contract of [`RemoteFrees::take_all`] and [`RemoteFrees::walk`]), so a walk never
//!   meets an object taken and reused under it, and a take never races another take.
//!   Pushes need no lock and may race both: a walk sees the chain as of its acquire load
//!   of the head, a take gets everything published before its swap.
//! - There is no pop of a single object, so the head never comes back to a value a pusher
//!   read earlier with a different list behind it (no ABA).
//! - Walks are bounded by the caller (the objects the node has handed out): a list made
//!   circular by a double free outside debug mode ends the walk, reported as corruption,
//!   instead of looping under the lock.

use std::ptr;

use crate::sync::{AtomicPtr, Ordering};

/// Objects handed to a drain's callback at a time (a stack buffer of this many pointers).
const DRAIN_CHUNK: usize = 32;

/// A node's queue of remote frees. See the module documentation.
pub(crate) struct RemoteFrees {
    /// The most recently pushed object; each object's first word points at the next.
    head: AtomicPtr<u8>,
}

impl std::fmt::Debug for RemoteFrees {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteFrees").field("is_empty", &self.is_empty()).finish()
    }
}

/// The link word at the start of a queued object.
///
/// # Safety
/// `obj` is a queued (or being queued) object: word-aligned, at least a word long, owned
/// by the queue or the caller.
unsafe fn link(obj: *mut u8) -> *mut *mut u8 {
    obj.cast::<*mut u8>()
}

impl RemoteFrees {
    /// An empty queue.
    pub(crate) fn new() -> Self {
        Self { head: AtomicPtr::new(ptr::null_mut()) }
    }

    /// Whether the queue looked empty: a hint for the owner's paths, which skip the take
    /// when it says so (a batch pushed meanwhile waits for the next look).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.head.load(Ordering::Relaxed).is_null()
    }

    /// Hands `objects` to the owner: linked in order and spliced onto the queue with one
    /// compare-and-swap (retried only if another push won the race).
    ///
    /// # Safety
    /// Every object is a handed-out object of the owner node that nobody uses any more
    /// (freed by its caller, in no array), word-aligned and at least a word long, and none
    /// is given twice; the queue owns them from now on.
    pub(crate) unsafe fn push_batch(&self, objects: &[*mut u8]) {
        let (Some(&first), Some(&last)) = (objects.first(), objects.last()) else { return };
        for pair in objects.windows(2) {
            // SAFETY: the objects are ours (the caller's contract) and not yet published.
            unsafe { link(pair[0]).write(pair[1]) };
        }
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: `last` is ours until the exchange below publishes it.
            unsafe { link(last).write(head) };
            match self.head.compare_exchange_weak(head, first, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(current) => head = current,
            }
        }
    }

    /// Takes every queued object with one swap.
    ///
    /// # Safety
    /// The caller holds the lock that serializes every take and walk of this queue: the
    /// owner node's `list_lock`.
    pub(crate) unsafe fn take_all(&self) -> ObjectList {
        if self.is_empty() {
            return ObjectList { head: ptr::null_mut() };
        }
        ObjectList { head: self.head.swap(ptr::null_mut(), Ordering::Acquire) }
    }

    /// Runs `f` on every object queued as of now, newest first, at most `bound` of them,
    /// while `f` returns true. `f` sees each object before its link is read, so a checking
    /// `f` (validation) stops the walk at an object that is not one. Returns whether the
    /// walk reached the end of the list.
    ///
    /// # Safety
    /// As for [`RemoteFrees::take_all`]: no take can hand a queued object out during the
    /// walk. Every object `f` accepts must be a live slab object (it is read).
    pub(crate) unsafe fn walk(&self, bound: usize, f: impl FnMut(*mut u8) -> bool) -> bool {
        let head = self.head.load(Ordering::Acquire);
        // SAFETY: forwarded; the acquire load orders the pushers' links before our reads.
        unsafe { walk_from(head, bound, f) }
    }
}

/// Walks a list from `head`: see [`RemoteFrees::walk`].
///
/// # Safety
/// The list from `head` is owned or protected by the caller; every object `f` accepts
/// is readable.
unsafe fn walk_from(mut obj: *mut u8, bound: usize, mut f: impl FnMut(*mut u8) -> bool) -> bool {
    let mut seen = 0;
    while !obj.is_null() {
        if seen == bound || !f(obj) {
            return false;
        }
        seen += 1;
        // SAFETY: a queued object, accepted by `f`, readable (the caller's contract).
        obj = unsafe { link(obj).read() };
    }
    true
}

/// Objects taken off a queue, owned by the taker (newest first). Dropping it undrained
/// loses track of its objects (they stay handed out of their slabs).
pub(crate) struct ObjectList {
    head: *mut u8,
}

impl std::fmt::Debug for ObjectList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectList").field("is_empty", &self.head.is_null()).finish()
    }
}

impl ObjectList {
    /// Whether nothing was taken.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// Hands the objects to `f` in chunks of up to 32, at most `bound` objects in all;
    /// the objects are the caller's from then on. Returns whether the list ended within
    /// `bound` (false: a list longer than any node's objects, made circular by a double
    /// free; the rest is abandoned, and the caller reports it).
    pub(crate) fn drain(self, bound: usize, mut f: impl FnMut(&[*mut u8])) -> bool {
        let mut chunk = [ptr::null_mut(); DRAIN_CHUNK];
        let mut len = 0;
        // SAFETY: the list was taken with the queue's swap: its objects are ours, linked
        // by the pushes, and each link is read before `f` may reuse the object.
        let complete = unsafe {
            walk_from(self.head, bound, |obj| {
                if len == DRAIN_CHUNK {
                    f(&chunk);
                    len = 0;
                }
                chunk[len] = obj;
                len += 1;
                true
            })
        };
        f(&chunk[..len]);
        complete
    }
}

#[cfg(test)]
mod tests;
