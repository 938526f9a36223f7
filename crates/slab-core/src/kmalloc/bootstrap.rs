//! The bootstrap arena: memory for the allocations made before the kmalloc caches exist
//! (a global allocator's own set-up: reading the machine, building the allocator and its
//! caches) and for allocations nested too deep inside the allocator. The kernel's
//! `kmem_cache_init` uses static arrays (`initarray_cache`, `initkmem_list3`) for the
//! same reason.
//!
//! The arena is a chain of superblock-aligned chunks mapped from the OS (a static array
//! would need the loader to honour a 128 KiB section alignment, which glibc's does not
//! always do for a preloaded library). Each chunk starts with [`ARENA_MAGIC`], so a free
//! of an arena pointer is recognised by the same mask as a slab's; allocation bumps a
//! pointer under a spin lock that guards no allocation, only `mmap`. Memory is never
//! reused: the arena serves set-up, which happens once, and rare deep nesting; a free is
//! counted, and the chunk stays.

use std::alloc::Layout;
use std::ptr::NonNull;

use super::{large, superblock_bytes};
use crate::memory;
use crate::sync::{AtomicBool, AtomicUsize, Ordering};

/// The first word of a bootstrap chunk.
pub(crate) const ARENA_MAGIC: u64 = 0xb007_57a9_a7e4_0003;

/// A chunk's header, at its start.
#[repr(C)]
struct ChunkHeader {
    magic: u64,
    /// The bytes handed out in this chunk, header included (what `usable` checks
    /// against, without the arena lock: hence an atomic).
    top: AtomicUsize,
}

/// Bytes before each allocation: its usable size.
const PREFIX: usize = 16;

/// The arena: the current chunk and its bump offset, under `busy`.
struct Arena {
    busy: AtomicBool,
    chunk: AtomicUsize,
    handed_out: AtomicUsize,
    released: AtomicUsize,
}

static ARENA: Arena = Arena {
    busy: AtomicBool::new(false),
    chunk: AtomicUsize::new(0),
    handed_out: AtomicUsize::new(0),
    released: AtomicUsize::new(0),
};

/// Memory for `layout` from the bootstrap arena (a direct mapping when it is larger than
/// a chunk holds); null when the OS has no memory. Safe to call from inside any
/// allocator path: it allocates nothing and takes no lock but its own.
pub fn bootstrap_alloc(layout: Layout) -> *mut u8 {
    let chunk_bytes = superblock_bytes();
    let align = layout.align().max(PREFIX);
    if layout.size() + align + PREFIX + std::mem::size_of::<ChunkHeader>() > chunk_bytes / 4 {
        return large::map(layout, None).map_or(std::ptr::null_mut(), NonNull::as_ptr);
    }
    while ARENA.busy.swap(true, Ordering::Acquire) {
        std::hint::spin_loop();
    }
    let result = bump(layout.size(), align, chunk_bytes);
    ARENA.busy.store(false, Ordering::Release);
    if !result.is_null() {
        ARENA.handed_out.fetch_add(layout.size(), Ordering::Relaxed);
    }
    result
}

/// The bump under the arena's lock.
fn bump(size: usize, align: usize, chunk_bytes: usize) -> *mut u8 {
    for _ in 0..2 {
        let chunk = ARENA.chunk.load(Ordering::Relaxed);
        if chunk != 0 {
            let header = chunk as *mut ChunkHeader;
            // SAFETY: the chunk is mapped and its header written; the arena lock is held.
            let top = unsafe { (*header).top.load(Ordering::Relaxed) };
            let memory = (chunk + top + PREFIX).next_multiple_of(align);
            if memory + size <= chunk + chunk_bytes {
                // SAFETY: [memory - PREFIX, memory + size) lies in the chunk, unused so far.
                unsafe {
                    ((memory - PREFIX) as *mut usize).write(size);
                    (*header).top.store(memory + size - chunk, Ordering::Release);
                }
                return memory as *mut u8;
            }
        }
        let Ok(fresh) = memory::map_aligned(chunk_bytes) else { return std::ptr::null_mut() };
        // SAFETY: a fresh chunk, ours alone.
        unsafe {
            fresh.as_ptr().cast::<ChunkHeader>().write(ChunkHeader {
                magic: ARENA_MAGIC,
                top: AtomicUsize::new(std::mem::size_of::<ChunkHeader>()),
            })
        };
        ARENA.chunk.store(fresh.as_ptr() as usize, Ordering::Relaxed);
    }
    std::ptr::null_mut()
}

/// The usable bytes of an arena allocation, or `None` if `ptr` is not one.
///
/// # Safety
/// `ptr`'s superblock must start with a bootstrap chunk header.
pub(crate) unsafe fn usable(ptr: NonNull<u8>) -> Option<usize> {
    let address = ptr.as_ptr() as usize;
    let chunk = address & !(superblock_bytes() - 1);
    // SAFETY: the caller's promise: a chunk header is at `chunk`. `top` only grows; a
    // racing bump makes it larger, never smaller than a handed-out allocation's end.
    let top = unsafe { (*(chunk as *const ChunkHeader)).top.load(Ordering::Acquire) };
    if address < chunk + std::mem::size_of::<ChunkHeader>() + PREFIX || address >= chunk + top {
        return None;
    }
    // SAFETY: handed-out memory has its size just before it.
    Some(unsafe { ((address - PREFIX) as *const usize).read() })
}

/// Counts a free of arena memory; the memory stays in the arena.
pub(crate) fn release(_ptr: NonNull<u8>) {
    ARENA.released.fetch_add(1, Ordering::Relaxed);
}

/// Takes the arena's lock before `fork`, so that the child never inherits it held by a
/// thread it does not have (a `pthread_atfork` prepare handler).
pub fn lock_for_fork() {
    while ARENA.busy.swap(true, Ordering::Acquire) {
        std::hint::spin_loop();
    }
}

/// Releases the lock [`lock_for_fork`] took, in the parent and in the child.
pub fn unlock_after_fork() {
    ARENA.busy.store(false, Ordering::Release);
}

/// Bytes handed out by the arena so far, and how many of its allocations were freed.
pub fn bootstrap_bytes() -> (usize, usize) {
    (ARENA.handed_out.load(Ordering::Relaxed), ARENA.released.load(Ordering::Relaxed))
}
