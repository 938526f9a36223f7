//! Remote frees without the owner's lock: each node's queue of batches of its objects
//! freed on other nodes.
//!
//! The alien cache keeps its meaning (a free of another node's object never enters the
//! local array; it collects in this node's alien cache for the owner), but a full alien
//! cache no longer takes the owner's `list_lock` to `free_block` its objects
//! (`__drain_alien_cache`): its objects are copied into a batch and the batch is spliced
//! onto the owner node's [`RemoteFrees`] with one compare-and-swap. This is snmalloc's
//! batched remote message and mimalloc's `xthread_free` list, per node: producers push
//! lock-free, and the owner takes the whole queue with one swap ([`RemoteFrees::take_all`])
//! when it next refills a CPU array, allocates from its slabs, or is reaped, shrunk or
//! destroyed; so a node without CPUs still has its queue drained and nothing is stranded.
//!
//! # The protocol
//!
//! - A push builds its batches privately, links them, and publishes the chain with a
//!   release compare-and-swap of the head: a batch is immutable from then on.
//! - Every take and every walk of the queue happens under the owner node's `list_lock`
//!   (the `unsafe` contract of [`RemoteFrees::take_all`] and [`RemoteFrees::for_each`]),
//!   so a walk never meets a batch freed under it, and a take never races another take.
//!   Pushes need no lock and may race both: a walk sees the chain as of its acquire load
//!   of the head, a take gets everything published before its swap.
//! - There is no pop of a single batch, so the head never comes back to a value a pusher
//!   read earlier while the batch it names was freed and reused (no ABA).

use std::alloc::Layout;
use std::ptr;

use crate::sync::{AtomicPtr, Ordering};

/// Objects per batch: the kernel's alien array size (`alloc_alien_cache`'s 12), so a full
/// alien cache is one batch.
pub(crate) const REMOTE_BATCH: usize = 12;

/// One batch (a snmalloc "message"): up to [`REMOTE_BATCH`] objects and the link to the
/// batch pushed before it.
struct RemoteBatch {
    next: *mut RemoteBatch,
    len: usize,
    objects: [*mut u8; REMOTE_BATCH],
}

/// The memory for a batch could not be had; the caller frees the objects another way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NoBatchMemory;

/// A node's queue of remote frees. See the module documentation.
pub(crate) struct RemoteFrees {
    head: AtomicPtr<RemoteBatch>,
}

// SAFETY: the batches are reached through the atomic head under the protocol above; the
// objects in them are slab addresses.
unsafe impl Send for RemoteFrees {}
// SAFETY: as above.
unsafe impl Sync for RemoteFrees {}

impl std::fmt::Debug for RemoteFrees {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteFrees").field("is_empty", &self.is_empty()).finish()
    }
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

    /// Hands `objects` to the owner: copied into batches of up to [`REMOTE_BATCH`], linked
    /// privately, and spliced onto the queue with one compare-and-swap (retried only if
    /// another push won the race). Nothing is queued when the batch memory cannot be had.
    pub(crate) fn push_batch(&self, objects: &[*mut u8]) -> Result<(), NoBatchMemory> {
        if objects.is_empty() {
            return Ok(());
        }
        let (first, last) = build_chain(objects)?;
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: `last` is ours until the exchange below publishes it.
            unsafe { (*last).next = head };
            match self.head.compare_exchange_weak(head, first, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(current) => head = current,
            }
        }
    }

    /// Takes every batch with one swap.
    ///
    /// # Safety
    /// The caller holds the lock that serializes every take and walk of this queue: the
    /// owner node's `list_lock`.
    pub(crate) unsafe fn take_all(&self) -> BatchList {
        if self.is_empty() {
            return BatchList { head: ptr::null_mut() };
        }
        BatchList { head: self.head.swap(ptr::null_mut(), Ordering::Acquire) }
    }

    /// Runs `f` on the objects of every batch queued as of now (validation, figures).
    ///
    /// # Safety
    /// As for [`RemoteFrees::take_all`]: no take can free a batch during the walk.
    pub(crate) unsafe fn for_each(&self, mut f: impl FnMut(&[*mut u8])) {
        let mut batch = self.head.load(Ordering::Acquire);
        while !batch.is_null() {
            // SAFETY: a published batch is immutable and, by the caller's lock, not freed
            // while we walk; the acquire load of the head orders its contents before us.
            let (objects, next) = unsafe { (&(&(*batch).objects)[..(*batch).len], (*batch).next) };
            f(objects);
            batch = next;
        }
    }

    /// Objects queued as of now.
    ///
    /// # Safety
    /// As for [`RemoteFrees::for_each`].
    pub(crate) unsafe fn count(&self) -> usize {
        let mut count = 0;
        // SAFETY: forwarded to the caller.
        unsafe { self.for_each(|objects| count += objects.len()) };
        count
    }
}

impl Drop for RemoteFrees {
    fn drop(&mut self) {
        // The cache is going: its slabs go with it, so the objects need no free; the
        // batches' memory is ours to release.
        // SAFETY: `&mut self`: no other thread can push, take or walk.
        drop(unsafe { self.take_all() });
    }
}

/// The batches for `objects`, linked first to last; returns (first, last).
fn build_chain(objects: &[*mut u8]) -> Result<(*mut RemoteBatch, *mut RemoteBatch), NoBatchMemory> {
    let mut first: *mut RemoteBatch = ptr::null_mut();
    let mut last: *mut RemoteBatch = ptr::null_mut();
    for chunk in objects.chunks(REMOTE_BATCH) {
        let Some(batch) = alloc_batch(chunk) else {
            // SAFETY: the chain so far is private and made by alloc_batch.
            unsafe { free_batches(first, |_| {}) };
            return Err(NoBatchMemory);
        };
        if last.is_null() {
            first = batch;
        } else {
            // SAFETY: `last` is a batch of this private chain.
            unsafe { (*last).next = batch };
        }
        last = batch;
    }
    Ok((first, last))
}

/// One batch holding `chunk` (at most [`REMOTE_BATCH`] objects), unlinked; `None` when the
/// memory cannot be had (the global allocator's null, instead of `Box::new`'s abort).
fn alloc_batch(chunk: &[*mut u8]) -> Option<*mut RemoteBatch> {
    debug_assert!(chunk.len() <= REMOTE_BATCH);
    let layout = Layout::new::<RemoteBatch>();
    // SAFETY: the layout has a non-zero size.
    let batch = unsafe { std::alloc::alloc(layout) }.cast::<RemoteBatch>();
    if batch.is_null() {
        return None;
    }
    let mut objects = [ptr::null_mut(); REMOTE_BATCH];
    objects[..chunk.len()].copy_from_slice(chunk);
    // SAFETY: fresh memory of the batch's layout.
    unsafe { batch.write(RemoteBatch { next: ptr::null_mut(), len: chunk.len(), objects }) };
    Some(batch)
}

/// Batches taken off a queue, owned by the taker (newest batch first).
pub(crate) struct BatchList {
    head: *mut RemoteBatch,
}

impl std::fmt::Debug for BatchList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchList").field("is_empty", &self.head.is_null()).finish()
    }
}

impl BatchList {
    /// Whether no batch was taken.
    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// Hands each batch's objects to `f`, freeing the batches. The objects are the
    /// caller's from then on: whatever `f` does not keep must go back to the slabs.
    pub(crate) fn drain(mut self, f: impl FnMut(&[*mut u8])) {
        let head = std::mem::replace(&mut self.head, ptr::null_mut());
        // SAFETY: the list owned these batches; it holds none from here.
        unsafe { free_batches(head, f) };
    }
}

impl Drop for BatchList {
    fn drop(&mut self) {
        // Only the batches' memory: a list dropped undrained loses track of its objects,
        // which only a cache being freed whole (RemoteFrees::drop) may do.
        let head = std::mem::replace(&mut self.head, ptr::null_mut());
        // SAFETY: as in drain.
        unsafe { free_batches(head, |_| {}) };
    }
}

/// Hands each batch's objects to `f` and frees the batch, from `head` on.
///
/// # Safety
/// The chain from `head` is owned by the caller (taken with the queue's swap or never
/// published) and every batch in it was written by [`alloc_batch`].
unsafe fn free_batches(mut head: *mut RemoteBatch, mut f: impl FnMut(&[*mut u8])) {
    while !head.is_null() {
        let batch = head;
        // SAFETY: owned by the caller, written by alloc_batch, freed once here.
        unsafe {
            head = (*batch).next;
            f(&(&(*batch).objects)[..(*batch).len]);
            std::alloc::dealloc(batch.cast(), Layout::new::<RemoteBatch>());
        }
    }
}

#[cfg(test)]
mod tests;
