//! Sheaves and a per-node barn (SLUB's `struct slab_sheaf` and `struct node_barn`, Linux
//! 6.18+), in the role the kernel SLAB gave the node's shared array (`l3->shared`).
//!
//! A [`Sheaf`] is a plain owned array of object pointers with a length and a capacity: the
//! storage of a CPU's array taken out whole. A node's [`Barn`] keeps sheaves of that node's
//! objects, full ones and empty ones. When a CPU's array runs empty it is exchanged whole
//! for a full sheaf (`barn_replace_empty_sheaf`); when it runs full it is exchanged whole
//! for an empty one (`barn_replace_full_sheaf`). Either exchange moves two pointers under
//! the barn's own lock, never the node's `list_lock`, and copies no object: the slab lists
//! are touched only when the barn has no full sheaf to give or no empty one to take
//! (`__pcs_replace_empty_main` falling back to `refill_sheaf`).
//!
//! # Lifetime (the seed's rules for `l3->shared`)
//!
//! The [`Barn`] itself (its lock and lists) lives as long as the node's lists: hotplug never
//! frees it. What comes and goes is its *contents*, a [`BarnContents`]: every sheaf the
//! barn may hold, allocated empty before any lock is taken (`cpu_up_prepare`, tuning),
//! installed with [`Barn::install`] under the node's lock when the barn is detached, and
//! taken out whole with [`Barn::detach`] under the node's lock when the node loses its
//! last CPU; the caller returns the full sheaves' objects to the slabs and frees the
//! contents after unlocking. A detached barn holds nothing and refuses every exchange, so
//! a CPU array meeting it goes to the slabs.
//!
//! The barn holds at most `sheaves` sheaves (full and empty together, [`barn_sheaves`]):
//! every exchange gives one back for one taken, and [`Barn::put_empty`] and
//! [`Barn::put_full`] refuse beyond that number, so the lists never grow beyond the room
//! reserved when the contents were allocated and no allocation happens under the lock.
//!
//! # Lock order
//!
//! CPU slot lock, then the node's `list_lock`, then the barn's lock; the barn's lock is
//! held for a few loads and stores and nothing is taken under it.

use crate::array_cache::{ArrayAllocFailed, ArrayCache};
use crate::sync::Lock;

/// An owned array of object pointers (`struct slab_sheaf`): an [`ArrayCache`] in no slot,
/// `len` objects in its first entries, LIFO, at most its capacity. Exchanging a CPU's
/// array for a sheaf swaps the two blocks.
pub(crate) struct Sheaf(ArrayCache);

impl std::fmt::Debug for Sheaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sheaf").field("len", &self.len()).field("capacity", &self.capacity()).finish()
    }
}

impl Sheaf {
    /// An empty sheaf for `capacity` objects (`alloc_empty_sheaf`); fails instead of
    /// aborting when the memory cannot be had.
    pub(crate) fn new(capacity: u32) -> Result<Self, ArrayAllocFailed> {
        Ok(Self(ArrayCache::new(capacity, 1)?))
    }

    /// A CPU's array, taken out of its slot, as a sheaf.
    pub(crate) fn from_array(array: ArrayCache) -> Self {
        Self(array)
    }

    /// The sheaf as an array, to attach to a slot.
    pub(crate) fn into_array(self) -> ArrayCache {
        self.0
    }

    /// Objects held.
    pub(crate) fn len(&self) -> u32 {
        self.0.avail()
    }

    /// Whether it holds no object.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Objects it can hold.
    pub(crate) fn capacity(&self) -> u32 {
        self.0.limit()
    }

    /// The objects, oldest first.
    pub(crate) fn objects(&self) -> &[*mut u8] {
        self.0.objects()
    }

    /// Forgets the objects after the caller has handed them elsewhere.
    pub(crate) fn clear(&mut self) {
        self.0.forget_objects();
    }

    /// Adds an object if there is room.
    #[allow(dead_code, reason = "used by the tests")]
    pub(crate) fn push(&mut self, obj: *mut u8) -> bool {
        self.0.put(obj)
    }
}

/// How many sheaves a node's barn holds for the tunables: as many as hold the kernel's
/// shared array of `shared * batchcount` objects (so that the memory kept per node stays
/// what `shared` has always meant), rounded up; none when `shared` is 0.
pub(crate) fn barn_sheaves(limit: u32, batchcount: u32, shared: u32) -> u32 {
    if shared == 0 || limit == 0 {
        return 0;
    }
    (shared.saturating_mul(batchcount)).div_ceil(limit)
}

/// Every sheaf a barn may hold, allocated together before any lock is taken; also what
/// [`Barn::detach`] hands back.
pub(crate) struct BarnContents {
    full: Vec<Sheaf>,
    empty: Vec<Sheaf>,
    /// The number of sheaves (full and empty) the lists have room for.
    sheaves: usize,
    /// The capacity of every sheaf (the CPU arrays' `limit`).
    sheaf_capacity: u32,
}

impl std::fmt::Debug for BarnContents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BarnContents")
            .field("full", &self.full.len())
            .field("empty", &self.empty.len())
            .field("sheaves", &self.sheaves)
            .field("sheaf_capacity", &self.sheaf_capacity)
            .finish()
    }
}

impl BarnContents {
    /// `sheaves` empty sheaves of `sheaf_capacity` objects, with room in both lists for all
    /// of them (`barn_init` plus the empty sheaves SLUB allocates on demand).
    pub(crate) fn new(sheaves: u32, sheaf_capacity: u32) -> Result<Self, ArrayAllocFailed> {
        let sheaves = sheaves as usize;
        let mut full = Vec::new();
        full.try_reserve_exact(sheaves).map_err(|_| ArrayAllocFailed)?;
        let mut empty = Vec::new();
        empty.try_reserve_exact(sheaves).map_err(|_| ArrayAllocFailed)?;
        for _ in 0..sheaves {
            empty.push(Sheaf::new(sheaf_capacity)?);
        }
        Ok(Self { full, empty, sheaves, sheaf_capacity })
    }

    /// Nothing: a detached barn's contents.
    const fn none() -> Self {
        Self { full: Vec::new(), empty: Vec::new(), sheaves: 0, sheaf_capacity: 0 }
    }

    /// The sheaves with objects.
    pub(crate) fn full_sheaves(&self) -> &[Sheaf] {
        &self.full
    }

    /// Objects in the full sheaves.
    pub(crate) fn objects(&self) -> usize {
        self.full.iter().map(|sheaf| sheaf.len() as usize).sum()
    }

    /// Empties every full sheaf after the caller has returned its objects to the slabs,
    /// so that the contents can be installed again or dropped without losing track.
    pub(crate) fn clear_full(&mut self) {
        for mut sheaf in self.full.drain(..) {
            sheaf.clear();
            self.empty.push(sheaf);
        }
    }

    fn is_detached(&self) -> bool {
        self.sheaves == 0
    }

    fn has_room(&self) -> bool {
        self.full.len() + self.empty.len() < self.sheaves
    }
}

/// A barn's figures, for slabinfo and the structured stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct BarnCounts {
    /// Whether the barn has contents (the node has a prepared CPU and `shared` > 0).
    pub(crate) attached: bool,
    /// Sheaves with objects.
    pub(crate) full_sheaves: usize,
    /// Sheaves without.
    pub(crate) empty_sheaves: usize,
    /// Objects in the full sheaves (slabinfo's `sharedavail`).
    pub(crate) objects: usize,
}

/// What the barn's lock protects.
#[derive(Debug)]
struct BarnState {
    contents: BarnContents,
    /// A CPU took a full sheaf since the last reap: the reaper then spares the barn once
    /// (the shared array's `touched`).
    touched: bool,
}

/// A node's barn (`struct node_barn`). See the module documentation.
#[derive(Debug)]
pub(crate) struct Barn {
    state: Lock<BarnState>,
}

impl Barn {
    /// A detached barn: no sheaves until [`Barn::install`].
    pub(crate) fn new() -> Self {
        Self { state: Lock::new(BarnState { contents: BarnContents::none(), touched: false }) }
    }

    /// Installs `contents` if the barn is detached; otherwise hands them back as spares,
    /// for the caller to free after unlocking. Called under the node's lock.
    pub(crate) fn install(&self, contents: BarnContents) -> Option<BarnContents> {
        let mut state = self.state.lock();
        if state.contents.is_detached() && !contents.is_detached() {
            state.contents = contents;
            state.touched = false;
            None
        } else {
            Some(contents)
        }
    }

    /// Takes every sheaf out, leaving the barn detached. Called under the node's lock; the
    /// caller returns the full sheaves' objects to the slabs and frees the contents.
    pub(crate) fn detach(&self) -> BarnContents {
        std::mem::replace(&mut self.state.lock().contents, BarnContents::none())
    }

    /// Detaches the barn and installs `contents` in one step (tuning). Returns the old
    /// contents, which the caller drains and frees as after [`Barn::detach`].
    pub(crate) fn replace(&self, contents: BarnContents) -> BarnContents {
        let mut state = self.state.lock();
        state.touched = false;
        std::mem::replace(&mut state.contents, contents)
    }

    /// An empty CPU array's storage for a full sheaf (`barn_replace_empty_sheaf`). Refused,
    /// with `empty` handed back, when the barn has no full sheaf, when `empty` holds
    /// objects, or when its capacity is not the barn's (a tuning in progress).
    pub(crate) fn exchange_empty_for_full(&self, empty: Sheaf) -> Result<Sheaf, Sheaf> {
        let mut state = self.state.lock();
        let contents = &mut state.contents;
        if !empty.is_empty() || empty.capacity() != contents.sheaf_capacity {
            return Err(empty);
        }
        let Some(full) = contents.full.pop() else { return Err(empty) };
        contents.empty.push(empty);
        state.touched = true;
        Ok(full)
    }

    /// A full CPU array's storage for an empty sheaf (`barn_replace_full_sheaf`). Refused,
    /// with `full` handed back, when the barn has no empty sheaf, when `full` holds no
    /// object, or when its capacity is not the barn's.
    pub(crate) fn exchange_full_for_empty(&self, full: Sheaf) -> Result<Sheaf, Sheaf> {
        Self::full_for_empty(&mut self.state.lock(), full)
    }

    /// [`Barn::exchange_full_for_empty`] for another node's alien cache, which must not
    /// wait: refused also when the barn's lock is taken. One compare-and-swap takes the
    /// lock, so a remote batch reaches its owner's barn with one atomic operation and
    /// never waits on the owner.
    pub(crate) fn offer_full_for_empty(&self, full: Sheaf) -> Result<Sheaf, Sheaf> {
        match self.state.try_lock() {
            Some(mut state) => Self::full_for_empty(&mut state, full),
            None => Err(full),
        }
    }

    fn full_for_empty(state: &mut BarnState, full: Sheaf) -> Result<Sheaf, Sheaf> {
        let contents = &mut state.contents;
        if full.is_empty() || full.capacity() != contents.sheaf_capacity {
            return Err(full);
        }
        let Some(empty) = contents.empty.pop() else { return Err(full) };
        contents.full.push(full);
        Ok(empty)
    }

    /// The most recently added full sheaf, if any (`barn_get_full_sheaf`).
    #[allow(dead_code, reason = "API for the restartable-sequence fast path's slow paths; used by the tests")]
    pub(crate) fn take_full(&self) -> Option<Sheaf> {
        let mut state = self.state.lock();
        let full = state.contents.full.pop()?;
        state.touched = true;
        Some(full)
    }

    /// The oldest full sheaf, if any: what the reaper returns to the slabs first.
    pub(crate) fn take_oldest_full(&self) -> Option<Sheaf> {
        let mut state = self.state.lock();
        let contents = &mut state.contents;
        if contents.full.is_empty() {
            return None;
        }
        Some(contents.full.remove(0))
    }

    /// Gives an empty sheaf back (`barn_put_empty_sheaf`); refused when it holds objects,
    /// its capacity is not the barn's, or the barn is at its number of sheaves (then the
    /// caller frees it).
    pub(crate) fn put_empty(&self, sheaf: Sheaf) -> Result<(), Sheaf> {
        let mut state = self.state.lock();
        let contents = &mut state.contents;
        if !sheaf.is_empty() || sheaf.capacity() != contents.sheaf_capacity || !contents.has_room() {
            return Err(sheaf);
        }
        contents.empty.push(sheaf);
        Ok(())
    }

    /// Gives a sheaf with objects to the barn (`barn_put_full_sheaf`); refused as
    /// [`Barn::put_empty`] is, and when it holds no object.
    #[allow(dead_code, reason = "API for the restartable-sequence fast path's slow paths; used by the tests")]
    pub(crate) fn put_full(&self, sheaf: Sheaf) -> Result<(), Sheaf> {
        let mut state = self.state.lock();
        let contents = &mut state.contents;
        if sheaf.is_empty() || sheaf.capacity() != contents.sheaf_capacity || !contents.has_room() {
            return Err(sheaf);
        }
        contents.full.push(sheaf);
        Ok(())
    }

    /// Clears the `touched` mark, returning whether it was set (the reaper spares a
    /// touched barn once, as the kernel spares a touched shared array).
    pub(crate) fn clear_touched(&self) -> bool {
        std::mem::replace(&mut self.state.lock().touched, false)
    }

    /// The capacity of the barn's sheaves; 0 when detached.
    #[allow(dead_code, reason = "API for the restartable-sequence fast path's slow paths; used by the tests")]
    pub(crate) fn sheaf_capacity(&self) -> u32 {
        self.state.lock().contents.sheaf_capacity
    }

    /// The barn's figures.
    pub(crate) fn counts(&self) -> BarnCounts {
        let state = self.state.lock();
        let contents = &state.contents;
        BarnCounts {
            attached: !contents.is_detached(),
            full_sheaves: contents.full.len(),
            empty_sheaves: contents.empty.len(),
            objects: contents.objects(),
        }
    }

    /// Runs `f` on each full sheaf's objects, under the barn's lock (validation).
    pub(crate) fn for_each_full(&self, mut f: impl FnMut(&[*mut u8])) {
        let state = self.state.lock();
        for sheaf in state.contents.full.iter() {
            f(sheaf.objects());
        }
    }
}

#[cfg(test)]
mod tests;
