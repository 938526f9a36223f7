//! Memory from the OS: naturally aligned blocks mapped with `mmap`, bound to a NUMA node
//! with `mbind` where that means something, and unmapped with `munmap`.
//!
//! A slab is one block of `PAGE_SIZE << order` bytes aligned to its own size, so that the
//! slab of any object is `address & !(slab_bytes - 1)`: the O(1) lookup that the kernel
//! gets from `virt_to_page(objp)->lru.prev`.

use std::io;
use std::ptr::NonNull;
use std::sync::OnceLock;

/// The kernel's page size (`PAGE_SIZE`): 4 KiB on x86_64, where Linux has no other base
/// page (so the fast frees mask with a constant); asked of the OS once elsewhere
/// (aarch64 kernels run with 4, 16 or 64 KiB pages).
#[inline]
pub(crate) fn page_size() -> usize {
    if cfg!(all(target_arch = "x86_64", target_os = "linux")) {
        return X86_64_PAGE_SIZE;
    }
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no memory-safety preconditions.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if size > 0 && (size as usize).is_power_of_two() {
            size as usize
        } else {
            4096
        }
    })
}

/// x86_64's only base page size.
const X86_64_PAGE_SIZE: usize = 4096;

/// Maps `bytes` (a power of two, at least a page) of anonymous memory aligned to `bytes`.
///
/// A mapping of `bytes` is aligned to a page only, so for larger blocks this maps
/// `2 * bytes - page`, which always holds an aligned block, and unmaps the head and tail
/// around it (the kernel's buddy allocator hands out such blocks directly).
pub(crate) fn map_aligned(bytes: usize) -> io::Result<NonNull<u8>> {
    let page = page_size();
    debug_assert!(bytes.is_power_of_two() && bytes >= page);
    let span = if bytes == page { bytes } else { 2 * bytes - page };
    let start = map_anonymous(span)?;
    let aligned = (start + bytes - 1) & !(bytes - 1);
    // SAFETY: the span was just mapped, and nothing in it is used yet.
    unsafe { keep_only(start, span, aligned, bytes) };
    NonNull::new(aligned as *mut u8).ok_or_else(|| io::Error::other("mmap returned address 0"))
}

/// Maps `span` bytes of anonymous private memory at an address of the kernel's choice.
pub(crate) fn map_anonymous(span: usize) -> io::Result<usize> {
    // SAFETY: an anonymous private mapping at an address of the kernel's choice.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(raw as usize)
}

/// Unmaps the parts of the mapping `[start, start + span)` before `map_base` and past
/// `map_base + map_bytes`.
///
/// # Safety
/// `[start, start + span)` is a mapping of ours that holds
/// `[map_base, map_base + map_bytes)`, and nothing outside that range is in use.
pub(crate) unsafe fn keep_only(start: usize, span: usize, map_base: usize, map_bytes: usize) {
    let head = map_base - start;
    let tail = start + span - (map_base + map_bytes);
    if head > 0 {
        // SAFETY: [start, map_base) is part of the mapping, unused (the caller's promise).
        unsafe { unmap(start as *mut u8, head) };
    }
    if tail > 0 {
        // SAFETY: the tail past map_base + map_bytes is part of the mapping, unused.
        unsafe { unmap((map_base + map_bytes) as *mut u8, tail) };
    }
}

/// Returns a block to the OS.
///
/// # Safety
/// `[ptr, ptr + bytes)` must be a range this module mapped, no longer used by anyone.
pub(crate) unsafe fn unmap(ptr: *mut u8, bytes: usize) {
    // SAFETY: the caller guarantees the range is ours and unused.
    let result = unsafe { libc::munmap(ptr.cast(), bytes) };
    if result != 0 {
        // munmap of a range we mapped fails only on a bug; the memory is then leaked,
        // which is safe, and said so.
        eprintln!(
            "slab-core: munmap({ptr:p}, {bytes}) failed: {}; the block is leaked",
            io::Error::last_os_error()
        );
    }
}

/// Binds a block to one NUMA node (`mbind(MPOL_BIND)`), before its first touch so that
/// its pages are allocated there. Callers log a failure and go on: binding is best effort.
pub(crate) fn bind_to_node(ptr: NonNull<u8>, bytes: usize, node: u32) -> io::Result<()> {
    const MPOL_BIND: libc::c_long = 2;
    let words = node as usize / 64 + 1;
    let mut mask = vec![0u64; words];
    mask[node as usize / 64] |= 1 << (node % 64);
    // The kernel reads `maxnode - 1` bits; pass one more than the bits in the mask.
    let maxnode = (words * 64 + 1) as libc::c_ulong;
    // SAFETY: mbind reads `mask` (valid for `words` words) and changes the policy of our
    // own mapping; it does not touch the memory's content.
    let result = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            ptr.as_ptr() as libc::c_ulong,
            bytes as libc::c_ulong,
            MPOL_BIND,
            mask.as_ptr(),
            maxnode,
            0 as libc::c_ulong,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests;
