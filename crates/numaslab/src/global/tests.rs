//! A `NumaSlabAlloc` that is not the process's allocator (the test binary keeps glibc's):
//! bring-up on the live machine, the layouts it serves, and frees of every kind of block.

use std::alloc::{GlobalAlloc, Layout};
use std::ptr::NonNull;

use super::*;

static ALLOC: NumaSlabAlloc = NumaSlabAlloc::new();

#[test]
fn brings_itself_up_on_first_use_and_serves_every_layout() {
    let layouts = [(1, 1), (24, 8), (100, 16), (4096, 4096), (70_000, 8), (10, 1 << 16)];
    let blocks: Vec<_> = layouts
        .iter()
        .map(|&(size, align)| {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: a non-zero layout.
            let ptr = unsafe { ALLOC.alloc_zeroed(layout) };
            assert!(!ptr.is_null(), "{size} bytes");
            assert_eq!(ptr as usize % align, 0);
            // SAFETY: the block holds `size` bytes, zeroed.
            assert!(unsafe { std::slice::from_raw_parts(ptr, size) }.iter().all(|&b| b == 0));
            (ptr, layout)
        })
        .collect();
    // The other tests of this binary share `ALLOC` and may be bringing it up right now
    // (their allocations are then served by the bootstrap arena, as these were): wait for
    // whichever thread does it.
    let machinery = ALLOC.bring_up();
    assert!(ALLOC.machinery().is_some(), "up once bring_up returns");
    assert_eq!(machinery.kmalloc.caches().len(), kmalloc::KMALLOC_SIZES.len());
    for (ptr, layout) in blocks {
        // SAFETY: the block is live; realloc keeps its first bytes.
        let grown = unsafe { ALLOC.realloc(ptr, layout, layout.size() * 3) };
        assert!(!grown.is_null());
        // SAFETY: grown is live.
        assert!(unsafe { ALLOC.usable_size(NonNull::new(grown).unwrap()) } >= layout.size() * 3);
        // SAFETY: grown is live with the new size.
        unsafe { ALLOC.dealloc(grown, Layout::from_size_align(layout.size() * 3, layout.align()).unwrap()) };
    }
}

#[test]
fn bootstrap_memory_is_freed_through_the_allocator() {
    let layout = Layout::from_size_align(48, 8).unwrap();
    let early = NonNull::new(bootstrap_alloc(layout)).unwrap();
    ALLOC.bring_up();
    // SAFETY: early is live.
    assert_eq!(unsafe { ALLOC.usable_size(early) }, 48);
    // SAFETY: early came from the arena, which the allocator's free recognises.
    let moved = unsafe { ALLOC.realloc(early.as_ptr(), layout, 5000) };
    assert!(!moved.is_null());
    // SAFETY: moved is live.
    unsafe { ALLOC.dealloc(moved, Layout::from_size_align(5000, 8).unwrap()) };
}

#[test]
fn an_impossible_request_is_null_not_a_panic() {
    let layout = Layout::from_size_align(isize::MAX as usize - 4096, 8).unwrap();
    // SAFETY: a non-zero layout.
    assert!(unsafe { ALLOC.alloc(layout) }.is_null());
}
