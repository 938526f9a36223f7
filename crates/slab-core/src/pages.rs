//! The page-block cache beneath the slab layer: for each node and slab order, the blocks
//! that slabs gave back, kept for that node's next `cache_grow` instead of a
//! `munmap`/`mmap` pair.
//!
//! In the kernel, `slab_destroy` hands pages to the page allocator (`free_pages`), whose
//! per-CPU page lists and buddy free lists keep them for the next `alloc_pages`: freeing
//! and growing a slab costs no more than list operations. Here the OS is the only page
//! allocator, and `munmap`/`mmap` are system calls (with a TLB shootdown for the unmap),
//! so this cache plays the part of those free lists: `KmemCache::slabs_destroy` gives
//! blocks to it, `KmemCache::cache_grow` takes from it first, and only the reaper's trim
//! (`Allocator::reap`, the background reaper), `Cache::shrink`, cache destruction and the
//! allocator's drop return blocks to the OS.
//!
//! Blocks are node-bound: a block cached for node N was mapped (and `mbind`-ed) for node
//! N and is only handed out again for node N. Blocks are linked through their first word
//! (the memory is ours and unused while cached), so the cache never allocates. Each
//! node's lists have their own lock, a leaf: nothing else is taken under it, and blocks
//! leave the cache under it but are unmapped only after it is released (no system call,
//! and nothing returned to the OS, while a lock is held).

use std::ptr::NonNull;

use crossbeam_utils::CachePadded;

use crate::memory;
use crate::memory::page_size;
use crate::slab::MAX_GFP_ORDER;
use crate::sync::Lock;

/// The most bytes a node keeps cached; a block that would go beyond goes to the OS.
///
/// The kernel's per-CPU page lists hold up to `pcp->high` pages per CPU (in 2.6.15,
/// `6 * batch` with `batch` about a quarter of a MiB of pages: some 750 KiB per CPU and
/// zone), so a node of four to eight CPUs keeps 3-6 MiB of free pages ready for slabs
/// before the buddy lists are even touched. 4 MiB per node is that order of magnitude:
/// 1024 one-page slabs or 512 two-page ones, many times the `free_limit` of a default
/// cache (`(1 + cpus) * batchcount + num` objects: 6 two-page slabs of 64-byte objects
/// on a four-CPU node), so a burst of frees followed by a burst of allocations of a few
/// MiB is served without a system call, while what the cache can pin beyond the caches'
/// own free slabs stays small next to the peak RSS of any workload that fills it.
pub(crate) const NODE_CACHE_BYTES: usize = 4 << 20;

/// Slab orders the cache keeps lists for.
const ORDERS: usize = MAX_GFP_ORDER as usize + 1;

/// One order's blocks on one node: a LIFO stack (the most recently freed block, the
/// likeliest to be warm in the caches, is reused first).
#[derive(Debug, Clone, Copy)]
struct FreeArea {
    head: *mut u8,
    count: usize,
}

impl FreeArea {
    const EMPTY: FreeArea = FreeArea { head: std::ptr::null_mut(), count: 0 };
}

/// A node's cached blocks (the kernel's `zone->free_area[order]`), under the node's lock.
#[derive(Debug)]
struct NodeBlocks {
    areas: [FreeArea; ORDERS],
    /// Bytes cached on the node, every order.
    bytes: usize,
    /// A block was taken since the last trim: the reaper then spares the cache once, as
    /// `cache_reap` spares a node whose free slabs were used (`l3->free_touched`).
    touched: bool,
    /// Blocks handed out from the cache since the allocator was made.
    reused: u64,
    /// Blocks returned to the OS from the cache (trimmed, drained, or over the bound).
    released: u64,
}

// SAFETY: the raw pointers are addresses of blocks the cache owns; they are reached only
// under the node's lock.
unsafe impl Send for NodeBlocks {}

impl NodeBlocks {
    fn new() -> Self {
        Self { areas: [FreeArea::EMPTY; ORDERS], bytes: 0, touched: false, reused: 0, released: 0 }
    }

    /// Pushes a block.
    ///
    /// # Safety
    /// `block` is a mapped, writable block of `page_size() << order` bytes that nobody
    /// uses any more, aligned to its size.
    unsafe fn push(&mut self, order: usize, block: NonNull<u8>) {
        let area = &mut self.areas[order];
        // SAFETY: the block is ours, writable and aligned to at least a page; its first
        // word holds the link while it is cached.
        unsafe { block.as_ptr().cast::<*mut u8>().write(area.head) };
        area.head = block.as_ptr();
        area.count += 1;
        self.bytes += page_size() << order;
    }

    /// Pops the most recently pushed block of `order`.
    fn pop(&mut self, order: usize) -> Option<NonNull<u8>> {
        let area = &mut self.areas[order];
        let block = NonNull::new(area.head)?;
        // SAFETY: a cached block's first word is its link, written by `push`.
        area.head = unsafe { block.as_ptr().cast::<*mut u8>().read() };
        area.count -= 1;
        self.bytes -= page_size() << order;
        Some(block)
    }

    /// Takes up to `count` blocks of `order` out, the most recently pushed first, into
    /// `out`.
    fn take_into(&mut self, order: usize, count: usize, out: &mut Released) {
        for _ in 0..count {
            let Some(block) = self.pop(order) else { break };
            // SAFETY: the block just left the cache: it is ours alone.
            unsafe { out.push(order, block) };
            self.released += 1;
        }
    }
}

/// Blocks taken out of the cache, to be unmapped once its lock is released; linked
/// through their first word as in the cache, so collecting them never allocates.
#[derive(Debug)]
struct Released {
    heads: [*mut u8; ORDERS],
    count: usize,
}

impl Released {
    fn new() -> Self {
        Self { heads: [std::ptr::null_mut(); ORDERS], count: 0 }
    }

    /// # Safety
    /// As for [`NodeBlocks::push`].
    unsafe fn push(&mut self, order: usize, block: NonNull<u8>) {
        // SAFETY: forwarded: the block is ours, writable and aligned.
        unsafe { block.as_ptr().cast::<*mut u8>().write(self.heads[order]) };
        self.heads[order] = block.as_ptr();
        self.count += 1;
    }

    /// Returns every collected block to the OS. Called with no lock held.
    fn unmap(self) -> usize {
        for (order, &head) in self.heads.iter().enumerate() {
            let mut next = head;
            while let Some(block) = NonNull::new(next) {
                // SAFETY: the link was written by `push`; the block is still mapped.
                next = unsafe { block.as_ptr().cast::<*mut u8>().read() };
                // SAFETY: the block left the cache and nobody else knows it.
                unsafe { memory::unmap(block.as_ptr(), page_size() << order) };
            }
        }
        self.count
    }
}

/// What a node's cache holds, for statistics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct NodeCacheFigures {
    /// Blocks cached.
    pub(crate) blocks: usize,
    /// Bytes cached.
    pub(crate) bytes: usize,
    /// Blocks handed out again from the cache so far.
    pub(crate) reused: u64,
    /// Blocks returned to the OS from the cache so far.
    pub(crate) released: u64,
}

/// The cache of every node of one allocator, shared by all its caches (as the page
/// allocator is shared by every slab cache): a block freed by one cache serves the next
/// growth of any cache of the same slab order on the same node.
#[derive(Debug)]
pub(crate) struct PageCache {
    nodes: Box<[CachePadded<Lock<NodeBlocks>>]>,
    /// Bytes each node may keep ([`NODE_CACHE_BYTES`] outside tests).
    limit: usize,
}

impl PageCache {
    /// An empty cache for node ids below `node_bound`, keeping at most `limit` bytes per node.
    pub(crate) fn new(node_bound: usize, limit: usize) -> Self {
        Self {
            nodes: (0..node_bound.max(1)).map(|_| CachePadded::new(Lock::new(NodeBlocks::new()))).collect(),
            limit,
        }
    }

    fn node(&self, node: u32) -> Option<&Lock<NodeBlocks>> {
        self.nodes.get(node as usize).map(|lock| &**lock)
    }

    /// A cached block of `node` of `PAGE_SIZE << order` bytes, if any (the fast part of
    /// `alloc_pages_node`). The block's content is whatever its last slab left.
    pub(crate) fn take(&self, node: u32, order: u32) -> Option<NonNull<u8>> {
        let mut blocks = self.node(node)?.lock();
        let block = blocks.pop(order as usize)?;
        blocks.touched = true;
        blocks.reused += 1;
        Some(block)
    }

    /// Gives a block of `node` back (`free_pages`): cached when the node's cache has room,
    /// else returned to the OS after the lock is released. Called with no lock held.
    ///
    /// # Safety
    /// `block` was mapped by [`memory::map_aligned`] for `node`, is `PAGE_SIZE << order`
    /// bytes, and nobody uses it any more (it is out of every list and of the registry).
    pub(crate) unsafe fn give(&self, node: u32, order: u32, block: NonNull<u8>) {
        let bytes = page_size() << order;
        if let Some(lock) = self.node(node) {
            let mut blocks = lock.lock();
            if blocks.bytes + bytes <= self.limit && (order as usize) < ORDERS {
                // SAFETY: forwarded from the caller.
                unsafe { blocks.push(order as usize, block) };
                return;
            }
            blocks.released += 1;
        }
        // SAFETY: the block is ours alone (caller's contract); no lock is held here.
        unsafe { memory::unmap(block.as_ptr(), bytes) };
    }

    /// The reaper's trim of one node: a node whose cache served a growth since the last
    /// trim is spared once (its blocks are in use as a working set); otherwise half of
    /// each order's blocks, rounded up, go back to the OS, so an idle allocator's cache
    /// decays to nothing in a few passes. Returns how many blocks went back.
    pub(crate) fn trim(&self, node: u32) -> usize {
        let Some(lock) = self.node(node) else { return 0 };
        let mut released = Released::new();
        {
            let mut blocks = lock.lock();
            if std::mem::replace(&mut blocks.touched, false) {
                return 0;
            }
            for order in 0..ORDERS {
                let count = blocks.areas[order].count.div_ceil(2);
                blocks.take_into(order, count, &mut released);
            }
        }
        released.unmap()
    }

    /// Returns every cached block of `node` to the OS (`Cache::shrink`, cache
    /// destruction, the allocator's drop). Returns how many blocks went back.
    pub(crate) fn drain(&self, node: u32) -> usize {
        let Some(lock) = self.node(node) else { return 0 };
        let mut released = Released::new();
        {
            let mut blocks = lock.lock();
            blocks.touched = false;
            for order in 0..ORDERS {
                let count = blocks.areas[order].count;
                blocks.take_into(order, count, &mut released);
            }
        }
        released.unmap()
    }

    /// [`PageCache::drain`] of every node.
    pub(crate) fn drain_all(&self) -> usize {
        (0..self.nodes.len() as u32).map(|node| self.drain(node)).sum()
    }

    /// What `node`'s cache holds.
    pub(crate) fn figures(&self, node: u32) -> NodeCacheFigures {
        self.node(node).map_or_else(NodeCacheFigures::default, |lock| {
            let blocks = lock.lock();
            NodeCacheFigures {
                blocks: blocks.areas.iter().map(|area| area.count).sum(),
                bytes: blocks.bytes,
                reused: blocks.reused,
                released: blocks.released,
            }
        })
    }
}

impl Drop for PageCache {
    fn drop(&mut self) {
        self.drain_all();
    }
}

#[cfg(test)]
mod tests;
