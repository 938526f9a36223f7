//! Direct mappings: requests above the top size class, or aligned above the page, get
//! their own mapping from the OS (later kernels' `kmalloc_large`), unmapped on free.
//!
//! The page before the memory holds a [`LargeHeader`]. A mapping for an alignment up to
//! the page starts on a superblock boundary, so that the header is where a kmalloc
//! pointer's mask looks (the memory then starts one page in); one for a larger alignment
//! puts its memory on a boundary of that alignment (and at least a superblock), and the
//! header in the page before, where `header_address` looks for superblock-aligned
//! pointers.

use std::alloc::Layout;
use std::ptr::NonNull;

use topology::NodeId;

use super::superblock_bytes;
use crate::error::{Error, Result};
use crate::memory::{self, page_size};

/// The first word of a direct mapping's header.
pub(crate) const LARGE_MAGIC: u64 = 0x1a46_e0b1_0c4d_0002;

/// A node id meaning "not bound".
const NO_NODE: u64 = u64::MAX;

/// The header of a direct mapping, in the page before its memory.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(crate) struct LargeHeader {
    magic: u64,
    /// Where the mapping starts (it may start before the header's page).
    map_base: usize,
    /// The mapping's bytes.
    map_bytes: usize,
    /// The memory's first byte: what was handed out.
    memory: usize,
    /// The node the mapping was bound to, or [`NO_NODE`].
    node: u64,
}

impl LargeHeader {
    /// Reads the header at `address`.
    ///
    /// # Safety
    /// A header written by [`map`] must be at `address`.
    pub(crate) unsafe fn read(address: usize) -> LargeHeader {
        // SAFETY: the caller's promise; headers are written once and never change.
        unsafe { (address as *const LargeHeader).read() }
    }

    /// Whether `ptr` is this mapping's memory (not a pointer into it).
    pub(crate) fn starts(&self, ptr: NonNull<u8>) -> bool {
        self.memory == ptr.as_ptr() as usize
    }

    /// The bytes from `ptr` to the mapping's end.
    pub(crate) fn usable(&self, ptr: NonNull<u8>) -> usize {
        self.map_base + self.map_bytes - ptr.as_ptr() as usize
    }

    /// The node the mapping was bound to.
    pub(crate) fn node(&self) -> Option<NodeId> {
        (self.node != NO_NODE).then_some(self.node as NodeId)
    }
}

/// Maps memory for `layout`, bound to `node` when given.
/// Out of line: the slab classes inline their fast path around this call.
#[inline(never)]
pub(crate) fn map(layout: Layout, node: Option<NodeId>) -> Result<NonNull<u8>> {
    let page = page_size();
    let superblock = superblock_bytes();
    let fail = |reason: String| Error::OutOfMemory {
        cache: "kmalloc-large".to_owned(),
        node: node.unwrap_or(0),
        bytes: layout.size(),
        reason,
    };
    let size = layout
        .size()
        .max(1)
        .checked_next_multiple_of(page)
        .ok_or_else(|| fail("size overflow".to_owned()))?;
    // Memory aligned to `boundary` at `offset` past the boundary.
    let (boundary, offset) =
        if layout.align() <= page { (superblock, page) } else { (layout.align().max(superblock), 0) };
    let span = size
        .checked_add(page)
        .and_then(|bytes| bytes.checked_add(boundary))
        .ok_or_else(|| fail("size overflow".to_owned()))?;
    let start = memory::map_anonymous(span).map_err(|error| fail(error.to_string()))?;
    // The first boundary with a page free before the memory.
    let memory = (start + page - offset).next_multiple_of(boundary) + offset;
    let map_base = memory - page;
    let map_bytes = page + size;
    // SAFETY: the span was just mapped, and nothing in it is used yet.
    unsafe { memory::keep_only(start, span, map_base, map_bytes) };
    if let Some(node) = node {
        // SAFETY: map_base is the start of our fresh mapping.
        let base = unsafe { NonNull::new_unchecked(map_base as *mut u8) };
        // Best effort, as for slabs: the memory stays where the kernel puts it.
        let _ = memory::bind_to_node(base, map_bytes, node);
    }
    let header = LargeHeader {
        magic: LARGE_MAGIC,
        map_base,
        map_bytes,
        memory,
        node: node.map_or(NO_NODE, u64::from),
    };
    // SAFETY: the header's page is the first page of the fresh mapping, ours alone.
    unsafe { ((memory - page) as *mut LargeHeader).write(header) };
    // SAFETY: memory lies in the mapping, above address 0.
    Ok(unsafe { NonNull::new_unchecked(memory as *mut u8) })
}

/// Unmaps a direct mapping.
///
/// # Safety
/// `header` must be the header of the live mapping whose memory is `ptr`, and nobody may
/// use the memory any more.
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, header: LargeHeader) -> Result<()> {
    debug_assert!(header.starts(ptr));
    // SAFETY: the caller's promise: the whole mapping is ours to return.
    unsafe { memory::unmap(header.map_base as *mut u8, header.map_bytes) };
    Ok(())
}

/// Whether the page holding `address` is mapped (`mincore` answers `ENOMEM` for an
/// unmapped one): debug mode probes a header before reading it.
pub(crate) fn is_mapped(address: usize) -> bool {
    let page = page_size();
    let mut residency = 0u8;
    // SAFETY: mincore writes one byte for the one page asked about; it reads nothing.
    let result = unsafe { libc::mincore((address & !(page - 1)) as *mut libc::c_void, page, &mut residency) };
    result == 0
}
