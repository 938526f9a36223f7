//! The pattern a torture worker writes into each object and checks before freeing it.
//!
//! Every 8-byte word of an object holds `tag ^ word_index * GOLDEN`, where the tag names
//! the worker, the object's sequence number and its cache. A word that reads otherwise
//! means that someone else wrote into the object while it was out: two owners of one
//! slot, a use after free, or a free list threaded through a live object.

/// The 64-bit golden ratio, to spread word indexes over the whole word.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// Builds the tag of an object from who allocated it and when.
pub(crate) fn tag(worker: usize, sequence: u64, cache: usize) -> u64 {
    (worker as u64) << 56 | (cache as u64 & 0xff) << 48 | (sequence & 0xffff_ffff_ffff)
}

/// Fills `words` 8-byte words at `object` with the pattern of `tag`.
///
/// # Safety
/// `object` must be valid for writes of `words * 8` bytes and aligned to 8.
pub(crate) unsafe fn write(object: *mut u64, words: usize, tag: u64) {
    for index in 0..words {
        // SAFETY: the caller guarantees `words` aligned words are writable at `object`.
        unsafe { object.add(index).write_volatile(tag ^ (index as u64).wrapping_mul(GOLDEN)) };
    }
}

/// Checks the pattern of `tag` in `words` words at `object`; returns the index of the
/// first word that differs.
///
/// # Safety
/// `object` must be valid for reads of `words * 8` bytes and aligned to 8.
pub(crate) unsafe fn check(object: *const u64, words: usize, tag: u64) -> Result<(), usize> {
    for index in 0..words {
        // SAFETY: the caller guarantees `words` aligned words are readable at `object`.
        let word = unsafe { object.add(index).read_volatile() };
        if word != tag ^ (index as u64).wrapping_mul(GOLDEN) {
            return Err(index);
        }
    }
    Ok(())
}
