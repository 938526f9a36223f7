//! Array caches (`struct array_cache`): bounded LIFO stacks of object pointers, and the
//! slots that hold them: one per possible CPU (`cachep->array[cpu]`) and one per pair of
//! nodes for the alien caches (`l3->alien[node]`).
//!
//! # The array
//!
//! An [`ArrayCache`] is one block: a 64-byte header and then `limit` entries, a stack of
//! object pointers as the kernel's `ac->entry[]`. The header's first word holds every
//! field a pop or a push changes, so that either commits with one store of that word
//! (which is what a restartable sequence needs, `rseq.rs`):
//!
//! | bits  | field     | meaning                                                      |
//! |-------|-----------|--------------------------------------------------------------|
//! | 0-15  | `avail`   | objects in the array                                         |
//! | 16-30 |           | zero                                                         |
//! | 31    | `touched` | used since the last reap (the reaper then spares it once)    |
//! | 32-63 | `net`     | objects popped minus pushed, wrapping (for `validate`)       |
//!
//! Pops and pushes work at the top, `ac->entry[--ac->avail]` and `ac->entry[ac->avail++]`:
//! the entry's address is the block plus `avail` words, so a sequence's loads form a
//! chain of two (the header word, then the entry). Flushes and reaps free the oldest
//! objects from the bottom and move the rest down, the kernel's `memmove`
//! (`cache_flusharray`, `drain_array`), under the slot lock, once per batch.
//! `avail` has 16 bits: every array holds at most [`MAX_ENTRIES`] objects (`MAX_LIMIT`).
//! A whole array also serves as a sheaf of its node's barn (`barn.rs`): a CPU's array is
//! exchanged for another one there, block for block.
//!
//! # The slot protocol
//!
//! The kernel protects a CPU's array by running on that CPU with interrupts off. User
//! space has two counterparts, chosen once per cache (`FastPath` in `cpu.rs`):
//!
//! - **rseq mode** (the live machine): the CPU's array is published through
//!   [`ArraySlot::published`] and the fast paths pop and push it inside restartable
//!   sequences, with no lock and no atomic instruction (`rseq.rs`). Every other user of
//!   the array (hotplug, tuning, the reaper, drains, `validate`, slabinfo) takes the slot
//!   lock, which in this mode also *stops* the CPU: it unpublishes the array, then waits
//!   with `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, MEMBARRIER_CMD_FLAG_CPU, cpu)`
//!   until no sequence on that CPU can still be using it (rules R2 and R3 of the rseq
//!   design). Releasing the slot publishes whatever array it holds then. A slot with
//!   nothing published needs no fence (the thread that unpublished its last array
//!   fenced before it let go), so slots never published, and detached ones, are taken
//!   with no system call; the CPU's own thread stops its array with one sequence.
//! - **CAS mode** (fixtures, fakes, loom, debug caches, a machine without rseq): each
//!   [`ArraySlot`] has a [`TryLock`]: the fast paths take it with one compare-and-swap and,
//!   finding it taken, go to the slow path instead of waiting.
//!
//! A slot lives as long as its cache; the array inside it comes and goes with CPU
//! hotplug. `None` is the *detached* state: the CPU's array was never prepared, or was
//! detached by `cpu_dead`. Hotplug detaches an array by taking the slot lock (waiting for
//! it, and in rseq mode stopping the CPU), moving the array out, and releasing the lock.
//! From then on the array is owned by the hotplug thread alone: no other thread can reach
//! it, so it can be drained and freed without any use after release. A thread that finds
//! a slot detached is served by the slow path from the node lists: nothing is lost,
//! nothing is used after release.
//!
//! The slot also counts the objects handed out and taken back through it (the arrays'
//! `net`, plus that of the arrays it held before), so that `validate` (which takes every
//! lock) can account for objects that are out with callers.

use std::alloc::Layout;
use std::ptr::NonNull;

use crate::barn::Sheaf;
use crate::rseq::{membarrier_stop_cpu, RseqArea};
use crate::sync::{HeaderWord, Ordering, PublishedPtr, TryLock, UnsafeCell};

/// The most objects an array holds (`avail` has 16 bits; the tunables' `MAX_LIMIT`).
pub(crate) const MAX_ENTRIES: u32 = 1 << 15;

/// `avail`, bits 0-15 of the header word.
pub(crate) const AVAIL_MASK: u64 = 0xffff;
/// The `touched` bit of the header word.
pub(crate) const TOUCHED: u64 = 1 << 31;
/// One unit of `net`, bits 32-63 of the header word.
pub(crate) const NET_ONE: u64 = 1 << 32;

/// Byte offsets in [`Block`] that the rseq sequences use (`rseq.rs`): `limit`.
pub(crate) const OFFSET_LIMIT: usize = 12;
/// See [`OFFSET_LIMIT`]: the entries start after the 64-byte header.
pub(crate) const OFFSET_ENTRIES: usize = 64;

/// The header of an array's block; `capacity` entries follow it.
#[repr(C, align(64))]
pub(crate) struct Block {
    /// `avail | touched << 31 | net << 32`, see the module docs. Written by the rseq
    /// sequences with plain stores, hence a std atomic also under loom.
    hdr: HeaderWord,
    /// Entries the block has room for (`limit`, or 1 for a limit of 0).
    capacity: u32,
    /// Capacity in use (`ac->limit`), at most `capacity`.
    limit: u32,
    /// Objects moved per refill or flush (`ac->batchcount`).
    batchcount: u32,
}

const _: () = assert!(std::mem::offset_of!(Block, limit) == OFFSET_LIMIT);
const _: () = assert!(std::mem::size_of::<Block>() == OFFSET_ENTRIES);

/// The kernel's `struct array_cache`, owning its block.
pub(crate) struct ArrayCache {
    block: NonNull<Block>,
}

/// The block of an array could not be allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ArrayAllocFailed;

// SAFETY: the entries are addresses of slab objects; an array is only reached by the
// thread that owns it, under the lock of the slot or node that holds it, or (rseq mode)
// by the sequences of the CPU it is published for, which the slot lock stops first.
unsafe impl Send for ArrayCache {}

impl std::fmt::Debug for ArrayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrayCache")
            .field("avail", &self.avail())
            .field("limit", &self.limit())
            .field("batchcount", &self.batchcount())
            .field("touched", &self.touched())
            .finish()
    }
}

impl ArrayCache {
    /// A new empty array (`alloc_arraycache`). Fails instead of aborting when the memory
    /// cannot be had, so that a CPU bring-up can be refused and rolled back; a `limit`
    /// above [`MAX_ENTRIES`] is refused the same way (the tunables never ask for one).
    pub(crate) fn new(limit: u32, batchcount: u32) -> Result<Self, ArrayAllocFailed> {
        if limit > MAX_ENTRIES {
            return Err(ArrayAllocFailed);
        }
        let capacity = limit.max(1);
        let layout = Self::layout(capacity).ok_or(ArrayAllocFailed)?;
        // SAFETY: the layout has a non-zero size (the header alone is 64 bytes).
        let raw = unsafe { std::alloc::alloc(layout) }.cast::<Block>();
        let block = NonNull::new(raw).ok_or(ArrayAllocFailed)?;
        let header = Block { hdr: HeaderWord::new(0), capacity, limit, batchcount };
        // SAFETY: the block is fresh, aligned to 64 and large enough for the header; the
        // entries are written before they are read (a slot is read only below `avail`).
        unsafe { block.as_ptr().write(header) };
        Ok(Self { block })
    }

    /// The block's layout for `capacity` entries.
    fn layout(capacity: u32) -> Option<Layout> {
        let entries = (capacity as usize).checked_mul(std::mem::size_of::<*mut u8>())?;
        Layout::from_size_align(OFFSET_ENTRIES.checked_add(entries)?, std::mem::align_of::<Block>()).ok()
    }

    #[inline(always)]
    fn header(&self) -> &Block {
        // SAFETY: the block lives as long as self and its header is initialised.
        unsafe { self.block.as_ref() }
    }

    /// The header word. Relaxed: whoever reads it owns the array (slot or node lock,
    /// or a stopped CPU), which ordered every earlier write before this read.
    #[inline(always)]
    fn hdr(&self) -> u64 {
        self.header().hdr.load(Ordering::Relaxed)
    }

    #[inline(always)]
    fn set_hdr(&mut self, hdr: u64) {
        self.header().hdr.store(hdr, Ordering::Relaxed);
    }

    /// The entry at `index`, which must be below the capacity.
    #[inline(always)]
    fn entry(&self, index: u64) -> *mut *mut u8 {
        debug_assert!(index < u64::from(self.header().capacity), "entry {index} of an array");
        // SAFETY: the callers' indexes are below avail or limit, both at most the
        // capacity, so the entry lies inside the block.
        unsafe { self.entry_base().add(index as usize) }
    }

    /// Objects in the array (`ac->avail`).
    #[inline(always)]
    pub(crate) fn avail(&self) -> u32 {
        (self.hdr() & AVAIL_MASK) as u32
    }

    /// Capacity (`ac->limit`).
    #[inline(always)]
    pub(crate) fn limit(&self) -> u32 {
        self.header().limit
    }

    /// Objects moved per refill or flush (`ac->batchcount`).
    pub(crate) fn batchcount(&self) -> u32 {
        self.header().batchcount
    }

    /// Used since the last reap (`ac->touched`).
    pub(crate) fn touched(&self) -> bool {
        self.hdr() & TOUCHED != 0
    }

    /// Sets or clears `touched`.
    pub(crate) fn set_touched(&mut self, touched: bool) {
        let hdr = self.hdr() & !TOUCHED;
        self.set_hdr(if touched { hdr | TOUCHED } else { hdr });
    }

    /// Objects popped minus pushed since the array was made or last left a slot, wrapping.
    pub(crate) fn net(&self) -> u32 {
        (self.hdr() >> 32) as u32
    }

    /// Forgets the count of objects popped and pushed (its slot keeps it).
    fn clear_net(&mut self) {
        let hdr = self.hdr();
        self.set_hdr(hdr & (NET_ONE - 1));
    }

    /// Sets `batchcount` (an array taking another's place keeps its batch size).
    fn set_batchcount(&mut self, batchcount: u32) {
        // SAFETY: the block is ours (`&mut self`) and only the header word is shared with
        // the sequences, which cannot run on an array being exchanged (it is in no slot).
        unsafe { (*self.block.as_ptr()).batchcount = batchcount };
    }

    /// The block, for publishing to the rseq sequences of its CPU.
    pub(crate) fn block(&self) -> *mut Block {
        self.block.as_ptr()
    }

    /// Takes the most recently added object (`ac->entry[--ac->avail]`), counting it out.
    #[inline(always)]
    pub(crate) fn pop(&mut self) -> Option<*mut u8> {
        let hdr = self.hdr();
        let avail = hdr & AVAIL_MASK;
        if avail == 0 {
            return None;
        }
        // SAFETY: the entry is below avail, so it holds an object.
        let obj = unsafe { *self.entry(avail - 1) };
        self.set_hdr(hdr.wrapping_add(NET_ONE).wrapping_sub(1) | TOUCHED);
        Some(obj)
    }

    /// Adds an object if there is room (`ac->entry[ac->avail++] = objp`), counting it in.
    #[inline(always)]
    pub(crate) fn push(&mut self, obj: *mut u8) -> bool {
        let hdr = self.hdr();
        let avail = hdr & AVAIL_MASK;
        if avail >= u64::from(self.limit()) {
            return false;
        }
        // SAFETY: avail < limit <= capacity, so the entry is free and inside the block.
        unsafe { *self.entry(avail) = obj };
        self.set_hdr(hdr.wrapping_sub(NET_ONE).wrapping_add(1));
        true
    }

    /// Adds objects that move between arrays or come from the slabs, not from a caller
    /// (`net` unchanged); returns how many fit.
    fn append(&mut self, objects: impl Iterator<Item = *mut u8>) -> u32 {
        let hdr = self.hdr();
        let mut avail = hdr & AVAIL_MASK;
        for obj in objects {
            if avail >= u64::from(self.limit()) {
                break;
            }
            // SAFETY: avail < limit <= capacity: a free entry inside the block.
            unsafe { *self.entry(avail) = obj };
            avail += 1;
        }
        let added = (avail - (hdr & AVAIL_MASK)) as u32;
        self.set_hdr((hdr & !AVAIL_MASK) | avail);
        added
    }

    /// Room left.
    pub(crate) fn room(&self) -> u32 {
        self.limit() - self.avail()
    }

    /// The objects held, oldest first.
    pub(crate) fn objects(&self) -> &[*mut u8] {
        // SAFETY: entries 0..avail lie inside the block and were written by pushes.
        unsafe { std::slice::from_raw_parts(self.entry_base(), self.avail() as usize) }
    }

    /// The first entry, the bottom of the stack.
    #[inline(always)]
    fn entry_base(&self) -> *mut *mut u8 {
        // SAFETY: the entries start right after the header, inside the block.
        unsafe { self.block.as_ptr().cast::<u8>().add(OFFSET_ENTRIES).cast::<*mut u8>() }
    }

    /// Forgets every object after the caller has handed them elsewhere (`net` and
    /// `touched` unchanged).
    pub(crate) fn forget_objects(&mut self) {
        let hdr = self.hdr();
        self.set_hdr(hdr & !AVAIL_MASK);
    }

    /// Drops the `count` oldest objects from the array after the caller has handed them
    /// elsewhere, moving the rest down (the kernel's `memmove` after `free_block`).
    pub(crate) fn remove_oldest(&mut self, count: u32) {
        let hdr = self.hdr();
        let avail = hdr & AVAIL_MASK;
        let count = u64::from(count).min(avail);
        let kept = (avail - count) as usize;
        let base = self.entry_base();
        // SAFETY: both runs lie inside entries 0..avail of the block, which is ours
        // (`&mut self`); `copy` allows them to overlap.
        unsafe { std::ptr::copy(base.add(count as usize), base, kept) };
        self.set_hdr((hdr & !AVAIL_MASK) | kept as u64);
    }

    /// Adds an object that comes from the slabs or another array, not from a caller
    /// (not counted in); `false` when full.
    pub(crate) fn put(&mut self, obj: *mut u8) -> bool {
        self.append(std::iter::once(obj)) == 1
    }

    /// Appends objects that come from the slabs or another array (not counted in);
    /// returns how many fit.
    pub(crate) fn extend_from_slice(&mut self, objects: &[*mut u8]) -> u32 {
        self.append(objects.iter().copied())
    }
}

impl Drop for ArrayCache {
    fn drop(&mut self) {
        // The layout was valid when the block was allocated in `new`.
        let Some(layout) = Self::layout(self.header().capacity) else { return };
        #[cfg(test)]
        if quarantine::keep(self.block.cast(), layout.size()) {
            return;
        }
        // SAFETY: the block was allocated in `new` with this layout and is ours alone.
        unsafe { std::alloc::dealloc(self.block.as_ptr().cast(), layout) };
    }
}

/// The test build's canary for R3 (an array is freed only after its CPU was stopped):
/// while a test has the quarantine on, dropped arrays are poisoned and kept instead of
/// freed, so that a sequence writing to one too late (a commit or a speculative push)
/// changes memory that [`quarantine::check`] finds changed.
#[cfg(test)]
pub(crate) mod quarantine {
    use std::ptr::NonNull;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    /// The byte every kept block is filled with.
    const POISON: u8 = 0x5a;

    static ON: AtomicBool = AtomicBool::new(false);
    static KEPT: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

    /// Starts keeping dropped arrays (for the rest of the test binary's life).
    pub(crate) fn start() {
        ON.store(true, Ordering::SeqCst);
    }

    /// Poisons and keeps a dropped block if the quarantine is on.
    pub(super) fn keep(block: NonNull<u8>, size: usize) -> bool {
        if !ON.load(Ordering::SeqCst) {
            return false;
        }
        // SAFETY: the block is the dropped array's own, `size` bytes, and nobody may
        // write it any more (that is what the canary checks).
        unsafe { std::ptr::write_bytes(block.as_ptr(), POISON, size) };
        KEPT.lock().unwrap_or_else(|poison| poison.into_inner()).push((block.as_ptr() as usize, size));
        true
    }

    /// How many blocks are kept, or the first one written after it was dropped.
    pub(crate) fn check() -> Result<usize, String> {
        let kept = KEPT.lock().unwrap_or_else(|poison| poison.into_inner());
        for &(address, size) in kept.iter() {
            // SAFETY: kept blocks are never freed; the check only reads them.
            let bytes = unsafe { std::slice::from_raw_parts(address as *const u8, size) };
            if let Some(offset) = bytes.iter().position(|&byte| byte != POISON) {
                return Err(format!("a dropped array at {address:#x} was written at byte {offset}"));
            }
        }
        Ok(kept.len())
    }
}

/// What a slot protects: its array (absent when detached) and the count of objects out
/// through arrays it held before.
#[derive(Debug, Default)]
pub(crate) struct SlotData {
    /// The array cache; `None` when detached or never prepared.
    array: Option<ArrayCache>,
    /// The `net` of arrays taken out of this slot, wrapping.
    retired_net: u32,
}

impl SlotData {
    /// The array, if attached.
    #[inline(always)]
    pub(crate) fn array(&self) -> Option<&ArrayCache> {
        self.array.as_ref()
    }

    /// The array, if attached, for changes.
    #[inline(always)]
    pub(crate) fn array_mut(&mut self) -> Option<&mut ArrayCache> {
        self.array.as_mut()
    }

    /// Whether an array is attached.
    pub(crate) fn is_attached(&self) -> bool {
        self.array.is_some()
    }

    /// Detaches the array, keeping its count of objects out here (the array leaves with
    /// a count of 0: it may serve another slot next, as a sheaf does).
    pub(crate) fn take(&mut self) -> Option<ArrayCache> {
        let mut array = self.array.take()?;
        self.retired_net = self.retired_net.wrapping_add(array.net());
        array.clear_net();
        Some(array)
    }

    /// Exchanges the attached array whole (a sheaf, SLUB's `pcs->main`) through `f`, which
    /// gets it with its objects and gives back the array to use from now on: another
    /// sheaf, or the same one refused. The new array keeps the old one's `batchcount` and
    /// starts `touched`. Returns whether `f` gave another; `false` when detached.
    pub(crate) fn exchange(&mut self, f: impl FnOnce(Sheaf) -> Result<Sheaf, Sheaf>) -> bool {
        let Some(array) = self.take() else { return false };
        let batchcount = array.batchcount();
        let (exchanged, sheaf) = match f(Sheaf::from_array(array)) {
            Ok(sheaf) => (true, sheaf),
            Err(sheaf) => (false, sheaf),
        };
        let mut array = sheaf.into_array();
        array.clear_net();
        if exchanged {
            array.set_batchcount(batchcount);
            array.set_touched(true);
        }
        self.array = Some(array);
        exchanged
    }

    /// Attaches `array` where none is; gives it back otherwise.
    pub(crate) fn install(&mut self, array: ArrayCache) -> Option<ArrayCache> {
        if self.array.is_some() {
            return Some(array);
        }
        self.array = Some(array);
        None
    }

    /// Attaches `array` in place of the current one, returned detached.
    pub(crate) fn replace(&mut self, array: ArrayCache) -> Option<ArrayCache> {
        let old = self.take();
        self.array = Some(array);
        old
    }

    /// Objects handed out minus taken back through this slot (may be negative: objects
    /// travel between CPUs), as a wrapping 32-bit count that `validate` sums: the sum is
    /// exact while fewer than 2^31 objects are out.
    pub(crate) fn net_out(&self) -> u32 {
        self.retired_net.wrapping_add(self.array.as_ref().map_or(0, ArrayCache::net))
    }
}

/// How a slot's users exclude its fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotFence {
    /// The fast path takes the slot lock too (CAS mode, and every alien slot).
    Lock,
    /// The fast path runs in restartable sequences on this CPU: taking the slot stops the
    /// CPU (unpublish, then membarrier), releasing it publishes the array again.
    Rseq {
        /// The CPU the slot belongs to.
        cpu: u32,
        /// The calling threads' rseq area, for a stop by the CPU's own thread.
        area: RseqArea,
    },
}

/// A lockable home for an array cache: `cachep->array[cpu]` or `l3->alien[node]`.
pub(crate) struct ArraySlot {
    /// In rseq mode, the block of the attached array while the slot is not taken; null
    /// while detached or taken. The only field the rseq sequences read.
    pub(crate) published: PublishedPtr<Block>,
    lock: TryLock,
    fence: SlotFence,
    /// For a CPU slot, the CPU's node with memory (`numa_node_id()`, or the nearest
    /// memory node for a CPU of a memory-less node); for an alien slot, the node the
    /// objects belong to. Fixed at creation.
    pub(crate) node: u32,
    data: UnsafeCell<SlotData>,
}

// SAFETY: `data` is only reached under `lock` (see `SlotGuard`); `node` and `fence` are
// immutable; `published` is an atomic.
unsafe impl Sync for ArraySlot {}

/// How the sequences on the calling thread's own CPU (`rseq.rs`, `pop_here` and
/// `push_here`) find its slot in a cache's `Box<[CachePadded<ArraySlot>]>`: slot `cpu`
/// starts `cpu * SLOT_STRIDE` bytes in (a `CachePadded` holds its value at offset 0,
/// checked by a test in `rseq`), and its `published` and `node` lie at these offsets.
pub(crate) const SLOT_STRIDE: usize = std::mem::size_of::<crossbeam_utils::CachePadded<ArraySlot>>();
/// See [`SLOT_STRIDE`].
pub(crate) const SLOT_PUBLISHED: usize = std::mem::offset_of!(ArraySlot, published);
/// See [`SLOT_STRIDE`].
pub(crate) const SLOT_NODE: usize = std::mem::offset_of!(ArraySlot, node);

impl std::fmt::Debug for ArraySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArraySlot")
            .field("node", &self.node)
            .field("fence", &self.fence)
            .finish_non_exhaustive()
    }
}

impl ArraySlot {
    /// A detached slot for `node`.
    pub(crate) fn new(node: u32, fence: SlotFence) -> Self {
        Self {
            published: PublishedPtr::new(std::ptr::null_mut()),
            lock: TryLock::new(),
            fence,
            node,
            data: UnsafeCell::new(SlotData::default()),
        }
    }

    /// Takes the slot if it is free: the CAS fast paths' single compare-and-swap. In rseq
    /// mode the CPU is stopped as by [`ArraySlot::lock`].
    #[inline(always)]
    pub(crate) fn try_lock(&self) -> Option<SlotGuard<'_>> {
        if self.lock.try_lock() {
            self.stop();
            Some(SlotGuard { slot: self })
        } else {
            None
        }
    }

    /// Takes the slot, waiting for the thread that holds it. Slow paths only. In rseq
    /// mode the CPU is stopped before this returns: no sequence can use its array until
    /// the guard is dropped.
    pub(crate) fn lock(&self) -> SlotGuard<'_> {
        self.lock.lock();
        self.stop();
        SlotGuard { slot: self }
    }

    /// R2: unpublish, then fence the CPU, so that every sequence that could still see
    /// the array has committed or aborted. Called with the slot lock held; also when the
    /// CPU is offline (the fence then returns at once: the offline was the fence).
    #[inline(always)]
    fn stop(&self) {
        if let SlotFence::Rseq { cpu, area } = self.fence {
            self.stop_rseq(cpu, area);
        }
    }

    /// [`ArraySlot::stop`] in rseq mode. Out of line: only slow paths take an rseq-mode
    /// slot (a refill, a flush, hotplug, tune, reap), and the CAS fast paths that take
    /// slots inline [`ArraySlot::try_lock`].
    #[inline(never)]
    fn stop_rseq(&self, cpu: u32, area: RseqArea) {
        // The CPU's own thread (a refill, a flush) stops it with one sequence.
        // SAFETY: the slot's own cell, and its lock is held.
        if unsafe { area.unpublish_own(cpu, self.published.as_ptr()) } {
            return;
        }
        if self.published.swap(std::ptr::null_mut(), Ordering::SeqCst).is_null() {
            // Nothing to stop: whoever unpublished the last array did it under this lock
            // and fenced before letting go (here, or with the CPU's own sequence), and
            // every sequence since has read null. A slot never published (every slot at
            // bring-up, a CPU prepared but not yet online) costs no system call.
            return;
        }
        membarrier_stop_cpu(cpu);
    }

    /// Publishes the attached array again (release: the sequences see every write made
    /// while the CPU was stopped). Called with the slot lock held, just before unlocking.
    #[inline(always)]
    fn start(&self, data: &SlotData) {
        if let SlotFence::Rseq { .. } = self.fence {
            let block = data.array().map_or(std::ptr::null_mut(), ArrayCache::block);
            self.published.store(block, Ordering::Release);
        }
    }
}

/// Exclusive access to a slot's data; releases the slot when dropped.
pub(crate) struct SlotGuard<'a> {
    slot: &'a ArraySlot,
}

impl SlotGuard<'_> {
    /// Runs `f` on the slot's data. `&mut self` keeps calls from nesting.
    #[inline(always)]
    pub(crate) fn with<R>(&mut self, f: impl FnOnce(&mut SlotData) -> R) -> R {
        // SAFETY: the guard holds the slot lock (and in rseq mode the CPU is stopped), so
        // this is the only access to the data; `&mut self` prevents a second `&mut` from
        // this guard while the first lives.
        self.slot.data.with_mut(|data| f(unsafe { &mut *data }))
    }

    /// The slot's node.
    #[inline(always)]
    pub(crate) fn node(&self) -> u32 {
        self.slot.node
    }
}

impl Drop for SlotGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: the guard still holds the lock; a shared look at the data.
        self.slot.data.with_mut(|data| self.slot.start(unsafe { &*data }));
        self.slot.lock.unlock();
    }
}

impl std::fmt::Debug for SlotGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotGuard").field("node", &self.slot.node).finish()
    }
}

#[cfg(test)]
mod tests;
