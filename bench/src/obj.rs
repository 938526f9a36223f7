//! The object every implementation hands out: `W` machine words, left uninitialised.
//!
//! Typed pools take their value by move, malloc-style allocators hand out raw bytes. So
//! that both pay for the same work, the value is uninitialised (moving it costs nothing)
//! and every implementation writes one stamp word at allocation; the workloads read it
//! back before freeing to check that no two live objects share memory.

use std::mem::MaybeUninit;

/// An object of `W` words (`8 * W` bytes, 8-byte aligned).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Obj<const W: usize> {
    /// The object's memory; word 0 holds the stamp once allocated.
    pub(crate) words: [MaybeUninit<u64>; W],
}

impl<const W: usize> Obj<W> {
    /// A value with undefined contents, free to move.
    #[inline(always)]
    pub(crate) fn uninit() -> Self {
        Self { words: [MaybeUninit::uninit(); W] }
    }

    /// Writes the stamp word.
    #[inline(always)]
    pub(crate) fn set_stamp(&mut self, stamp: u64) {
        self.words[0].write(stamp);
    }

    /// Reads the stamp word.
    #[inline(always)]
    pub(crate) fn stamp(&self) -> u64 {
        // SAFETY: every implementation writes word 0 in `alloc` before handing the
        // object out, and `W >= 1` for every size the harness uses.
        unsafe { self.words[0].assume_init() }
    }
}
