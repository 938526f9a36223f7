//! allocator-api2's [`Allocator`] for a cache and for kmalloc, so that
//! `allocator_api2::boxed::Box::new_in`, `allocator_api2::vec::Vec::new_in` and
//! hashbrown's allocator parameter take memory from numaslab.
//!
//! `&Cache` serves the layouts its objects hold (a size up to the object size, an
//! alignment its objects have) and refuses others with [`AllocError`]; `&Kmalloc` serves
//! any layout, growing and shrinking in place within a size class. Zero-sized requests
//! get a dangling, aligned pointer and are never freed, as the trait allows.

use std::alloc::Layout;
use std::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator};

use crate::cache::Cache;
use crate::kmalloc::Kmalloc;

/// A dangling pointer aligned for `layout`: the memory of a zero-sized request.
fn dangling(layout: Layout) -> NonNull<[u8]> {
    // SAFETY: an alignment is a non-zero power of two.
    let ptr = unsafe { NonNull::new_unchecked(layout.align() as *mut u8) };
    NonNull::slice_from_raw_parts(ptr, 0)
}

// SAFETY: memory comes from the cache's slabs and stays valid until it is given back
// through `deallocate`; a `&Cache` copy frees into the same cache; a refused layout is
// `AllocError`, never a block too small or misaligned.
unsafe impl Allocator for &Cache {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(dangling(layout));
        }
        if layout.size() > self.object_size() {
            return Err(AllocError);
        }
        let ptr = self.alloc().map_err(|_| AllocError)?;
        if ptr.as_ptr() as usize % layout.align() != 0 {
            // SAFETY: ptr was just allocated from this cache.
            let _ = unsafe { self.free(ptr) };
            return Err(AllocError);
        }
        Ok(NonNull::slice_from_raw_parts(ptr, self.object_size()))
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        // SAFETY: the trait's contract: ptr was allocated by this cache and is live.
        if let Err(error) = unsafe { self.free(ptr) } {
            eprintln!("slab-core: {error}");
        }
    }
}

// SAFETY: memory comes from the kmalloc caches or a direct mapping and stays valid until
// given back through `deallocate` (or moved by `grow`/`shrink`, which copy the contents).
unsafe impl Allocator for &Kmalloc {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(dangling(layout));
        }
        let ptr = Kmalloc::alloc(self, layout).map_err(|_| AllocError)?;
        Ok(NonNull::slice_from_raw_parts(ptr, layout.size()))
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        // SAFETY: the trait's contract: ptr was allocated here for `layout` and is live.
        if let Err(error) = unsafe { Kmalloc::free(self, ptr, layout) } {
            eprintln!("slab-core: {error}");
        }
    }

    unsafe fn grow(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded to the trait's contract.
        unsafe { self.resize(ptr, old, new) }
    }

    unsafe fn shrink(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded to the trait's contract.
        unsafe { self.resize(ptr, old, new) }
    }
}

impl Kmalloc {
    /// `grow` and `shrink`: `krealloc`, in place within a class.
    ///
    /// # Safety
    /// `ptr` is live, allocated here for `old`.
    unsafe fn resize(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if old.size() == 0 || new.size() == 0 {
            let fresh = <&Kmalloc as Allocator>::allocate(&self, new)?;
            // SAFETY: both live, the smaller size copied; a zero-sized old block is dangling
            // and copies nothing.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    ptr.as_ptr(),
                    fresh.cast::<u8>().as_ptr(),
                    old.size().min(new.size()),
                );
                <&Kmalloc as Allocator>::deallocate(&self, ptr, old);
            }
            return Ok(fresh);
        }
        // SAFETY: forwarded to the caller.
        let fresh = unsafe { self.realloc(ptr, new) }.map_err(|_| AllocError)?;
        Ok(NonNull::slice_from_raw_parts(fresh, new.size()))
    }
}

#[cfg(test)]
mod tests;
