//! kmalloc: the general caches (`kmalloc`, `kfree`, `krealloc`, `ksize` and
//! `kmalloc_node` of `mm/slab.c`), a ladder of caches by size class from which any
//! [`Layout`] is served, and direct mappings for what is larger.
//!
//! The ladder is the kernel's `kmalloc_sizes.h` up to 256 bytes, with the two in-between
//! classes later kernels keep (8, 16, 32, 64, 96, 128, 192, 256), then eight evenly spaced
//! classes per doubling up to 32 KiB (288, 320, ..., 512, 576, ..., 1k, 1152, ..., 28k, 30k, 32k). The
//! kernel's powers of two suit the kernel's own structures; a C program's requests are
//! often a power of two plus a header (sqlite's 1032- and 4104-byte page buffers), which a
//! power-of-two class serves at nearly twice their size (sqlite's peak resident set under
//! `LD_PRELOAD` was 1.80 times glibc's), four classes per doubling (jemalloc's and
//! mimalloc's spacing) at up to 1.25 times (1.26 times glibc's), and eight at up to 1.125
//! (1.18 times; `docs/benchmarks.md`). Every class is aligned to the largest power of two
//! dividing its size, up to the page (powers of two naturally, the guarantee later
//! kernels give since 5.4; 96 to 32 bytes, 192 to 64, 288 to 32, ...), so a layout is
//! served by the smallest class at least as large and as aligned.
//!
//! Every kmalloc cache has slabs of one size, [`KMALLOC_ORDER`] (128 KiB with 4 KiB pages,
//! the kernel's `MAX_GFP_ORDER` 5), and every other block this module hands out (direct
//! mappings, the bootstrap arena's chunks) starts its `SUPERBLOCK`-aligned block with a
//! header whose first word is a magic number, as a slab's descriptor does. So a pointer
//! of unknown size (`kfree`, C's `free`) finds its owner with one mask and one load: a
//! slab (then its cache by the descriptor's cache id), a direct mapping (`large.rs`), or
//! the bootstrap arena (`bootstrap.rs`). The top class, 32 KiB, is the largest that
//! puts three objects in such a slab (25 % lost to the descriptor's page); larger
//! requests, and alignments above the page, are mapped directly and unmapped on free.

mod bootstrap;
mod large;

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::Arc;

use topology::NodeId;

use crate::allocator::Allocator;
use crate::cache::{Cache, KmemCache};
use crate::error::{Error, Result};
use crate::memory::page_size;
use crate::slab::{SlabOrder, SlabPtr, SLAB_MAGIC};
use crate::CacheFlags;

pub use bootstrap::{bootstrap_alloc, bootstrap_bytes, lock_for_fork, unlock_after_fork};

/// The slab order of every kmalloc cache: `PAGE_SIZE << 5`, the kernel's `MAX_GFP_ORDER`.
pub const KMALLOC_ORDER: u32 = 5;

/// How many classes each doubling above 256 bytes is split into.
const CLASSES_PER_DOUBLING: usize = 8;

/// How many classes there are: the eight small ones, then seven doublings to 32 KiB.
const CLASSES: usize = 8 + 7 * CLASSES_PER_DOUBLING;

/// The size classes, smallest first (`malloc_sizes[]`).
pub const KMALLOC_SIZES: [usize; CLASSES] = ladder();

/// The kernel's classes up to 256 bytes, then [`CLASSES_PER_DOUBLING`] evenly spaced
/// classes in each doubling up to 32 KiB.
const fn ladder() -> [usize; CLASSES] {
    const SMALL: [usize; 8] = [8, 16, 32, 64, 96, 128, 192, 256];
    let mut sizes = [0; CLASSES];
    let mut index = 0;
    while index < SMALL.len() {
        sizes[index] = SMALL[index];
        index += 1;
    }
    let mut base = 256;
    while index < sizes.len() {
        let mut step = 1;
        while step <= CLASSES_PER_DOUBLING {
            sizes[index] = base + step * (base / CLASSES_PER_DOUBLING);
            index += 1;
            step += 1;
        }
        base *= 2;
    }
    sizes
}

/// The largest request served by a cache; larger ones are mapped directly.
pub const KMALLOC_MAX_CACHE_SIZE: usize = KMALLOC_SIZES[KMALLOC_SIZES.len() - 1];

const _: () = assert!(KMALLOC_MAX_CACHE_SIZE == 32768);

/// `size_index[]` of later kernels: the class of every size up to 192 bytes, by
/// `(size - 1) / 8`, so the common small requests need no logarithm.
const SIZE_INDEX: [u8; 24] = [0, 1, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6];

/// The class of 256 bytes, the last of the kernel's small ones.
const CLASS_256: usize = 7;

/// The alignment every object of class `index` has: the largest power of two dividing
/// its size (the page at most, which the caller applies).
const fn class_align(index: usize) -> usize {
    let size = KMALLOC_SIZES[index];
    size & size.wrapping_neg()
}

/// How many damaged objects in a row (see [`Kmalloc::alloc`]) an allocation takes and
/// reports before it gives up with the last one's error.
const MAX_DAMAGED_RETRIES: usize = 64;

/// The least alignment of any class ([`class_align`]): every class is a multiple of 8
/// bytes (checked below, at compile time).
const MIN_CLASS_ALIGN: usize = 8;

const _: () = {
    let mut index = 0;
    while index < KMALLOC_SIZES.len() {
        assert!(class_align(index) >= MIN_CLASS_ALIGN, "every kmalloc class is a multiple of 8 bytes");
        index += 1;
    }
};

/// The bytes of one kmalloc slab, and of the block whose header any kmalloc pointer
/// finds by masking.
pub fn superblock_bytes() -> usize {
    page_size() << KMALLOC_ORDER
}

/// The class serving `layout`, or `None` for a direct mapping (`kmalloc_index`).
#[inline]
pub fn class_of(layout: Layout) -> Option<usize> {
    let size = layout.size().max(1);
    if size > KMALLOC_MAX_CACHE_SIZE {
        return None;
    }
    let index = if size <= 192 {
        SIZE_INDEX[(size - 1) / 8] as usize
    } else if size <= 256 {
        CLASS_256
    } else {
        // 2^k < size <= 2^(k+1) is in the doubling of k (k >= 8), and in it the class
        // ceil((size - 2^k) / 2^(k-3)), counted from 1: the three bits of size - 1 after
        // its leading one.
        let k = (usize::BITS - 1 - (size - 1).leading_zeros()) as usize;
        let shift = k - CLASSES_PER_DOUBLING.trailing_zeros() as usize;
        CLASS_256 + 1 + (k - 8) * CLASSES_PER_DOUBLING + (((size - 1) >> shift) & (CLASSES_PER_DOUBLING - 1))
    };
    if layout.align() <= MIN_CLASS_ALIGN {
        // Nearly every request: no class is less aligned than this.
        return Some(index);
    }
    let page = page_size();
    if layout.align() > page {
        return None;
    }
    if layout.align() <= class_align(index).min(page) {
        return Some(index);
    }
    // A stricter alignment: the next class up that is aligned enough (there is one: the
    // classes of 4 KiB and above that are multiples of the page).
    (index + 1..KMALLOC_SIZES.len()).find(|&class| class_align(class).min(page) >= layout.align())
}

/// Whether the caches check every free (red zones, poison, double and foreign frees
/// reported as errors) or trust their callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checking {
    /// Plain caches: the fast paths.
    Trusting,
    /// [`CacheFlags::DEBUG`] caches, and every pointer given to
    /// [`Kmalloc::free_unsized`] probed before it is read.
    Debug,
}

/// Who owns a pointer this module handed out, read from its block's header.
#[derive(Debug, Clone, Copy)]
enum Owner {
    /// An object of the kmalloc cache at this class index.
    Slab(usize),
    /// A direct mapping.
    Large(large::LargeHeader),
    /// A bootstrap arena allocation of this many usable bytes.
    Bootstrap(usize),
}

/// The general caches of one allocator.
pub struct Kmalloc {
    allocator: Arc<Allocator>,
    /// The cache of each class, by index into [`KMALLOC_SIZES`].
    caches: Box<[Arc<Cache>]>,
    /// The same caches as pointers held in place, so that a class's cache is one load
    /// from the `Kmalloc` (an `Arc<Cache>` in a boxed slice is three). `caches` keeps
    /// them alive.
    kmems: [NonNull<KmemCache>; CLASSES],
    /// Each class's cache id, for the descriptor-to-class lookup.
    ids: Box<[u64]>,
    checking: Checking,
}

impl std::fmt::Debug for Kmalloc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kmalloc")
            .field("classes", &self.caches.len())
            .field("checking", &self.checking)
            .finish()
    }
}

// SAFETY: KmemCache is Send + Sync; `kmems` points at the caches `caches` owns, which
// live as long as the Kmalloc.
unsafe impl Send for Kmalloc {}
// SAFETY: as above.
unsafe impl Sync for Kmalloc {}

impl Kmalloc {
    /// The cache of class `index` (below [`CLASSES`], as [`class_of`] gives it).
    #[inline(always)]
    fn class(&self, index: usize) -> &KmemCache {
        // SAFETY: the pointer is one of `caches`, which live as long as self.
        unsafe { self.kmems[index].as_ref() }
    }

    /// Creates the caches `kmalloc-8` to `kmalloc-32k` in `allocator`
    /// (`kmem_cache_init`'s loop over `malloc_sizes`). Fails if a cache of one of those
    /// names exists already, or memory for one cannot be had; the caches created before
    /// the failure are destroyed again, so that a later call can succeed.
    pub fn new(allocator: &Arc<Allocator>, checking: Checking) -> Result<Kmalloc> {
        let flags = match checking {
            Checking::Trusting => CacheFlags::NONE,
            Checking::Debug => CacheFlags::DEBUG,
        };
        let mut caches = Vec::with_capacity(KMALLOC_SIZES.len());
        for (index, &size) in KMALLOC_SIZES.iter().enumerate() {
            match Self::create_class(allocator, index, size, flags) {
                Ok(cache) => caches.push(cache),
                Err(error) => {
                    // Empty caches, just created: their destruction cannot be refused.
                    for cache in caches.iter().rev() {
                        let _ = allocator.destroy_cache(cache);
                    }
                    return Err(error);
                }
            }
        }
        let ids = caches.iter().map(|cache| cache.kmem().id).collect();
        let kmems = std::array::from_fn(|class| caches[class].kmem_ptr());
        Ok(Kmalloc {
            allocator: Arc::clone(allocator),
            caches: caches.into_boxed_slice(),
            kmems,
            ids,
            checking,
        })
    }

    /// The general cache of class `index`, of `size` bytes.
    fn create_class(
        allocator: &Arc<Allocator>,
        index: usize,
        size: usize,
        flags: CacheFlags,
    ) -> Result<Arc<Cache>> {
        let align = class_align(index).min(page_size());
        let layout = Layout::from_size_align(size, align).map_err(|error| Error::InvalidLayout {
            cache: class_name(size),
            size,
            align,
            reason: error.to_string(),
        })?;
        allocator.create_cache_ordered(&class_name(size), layout, flags, SlabOrder::Fixed(KMALLOC_ORDER))
    }

    /// The allocator the caches belong to.
    pub fn allocator(&self) -> &Arc<Allocator> {
        &self.allocator
    }

    /// The caches, smallest class first.
    pub fn caches(&self) -> &[Arc<Cache>] {
        &self.caches
    }

    /// Whether frees are checked.
    pub fn checking(&self) -> Checking {
        self.checking
    }

    /// `kmalloc`: memory for `layout` on the current CPU's node. Inline, as the cache's
    /// own fast path is: the class lookup (a table read, or nothing for a constant
    /// layout) and that path; a direct mapping is out of line.
    #[inline(always)]
    pub fn alloc(&self, layout: Layout) -> Result<NonNull<u8>> {
        match class_of(layout) {
            Some(index) => match self.class(index).alloc_here() {
                Ok(ptr) => Ok(ptr),
                Err(error) => self.alloc_after(error, || self.class(index).alloc_here()),
            },
            None => large::map(layout, None),
        }
    }

    /// What `kmalloc` does when a class's allocation failed with `error`: damage a debug
    /// cache found ([`Error::is_damage`]: the object repainted and put back) is reported
    /// on stderr, as the kernel's SLAB reports it, and the allocation tried again, so
    /// that a caller such as `malloc` gets memory, not a false out-of-memory. At most
    /// [`MAX_DAMAGED_RETRIES`] times; any other error is the caller's.
    #[cold]
    #[inline(never)]
    fn alloc_after(
        &self,
        mut error: Error,
        mut retry: impl FnMut() -> Result<NonNull<u8>>,
    ) -> Result<NonNull<u8>> {
        for _ in 0..MAX_DAMAGED_RETRIES {
            if !error.is_damage() {
                break;
            }
            eprintln!("slab-core: {error}; the object was repainted and put back, and the allocation is tried again");
            match retry() {
                Ok(ptr) => return Ok(ptr),
                Err(next) => error = next,
            }
        }
        Err(error)
    }

    /// The per-CPU fast path alone: memory for `layout` if one restartable sequence pops
    /// it from the current CPU's array of its class; None, with nothing done, otherwise
    /// (an empty array, a miss, CAS mode, a layout with no class). It takes no lock,
    /// allocates nothing and makes no system call, so a global allocator can serve most
    /// allocations with it before it marks the thread as inside itself for
    /// [`Kmalloc::alloc`], whose slow paths may allocate their own metadata.
    #[inline(always)]
    pub fn alloc_cached(&self, layout: Layout) -> Option<NonNull<u8>> {
        self.class(class_of(layout)?).alloc_cached()
    }

    /// The per-CPU fast free alone, as [`Kmalloc::alloc_cached`] is for allocation: true
    /// when `ptr`, a slab object of the current CPU's node, went onto that CPU's array in
    /// one sequence; false, with nothing done, for [`Kmalloc::free`] or
    /// [`Kmalloc::free_unsized`] to finish (with [`Checking::Debug`] always false, before
    /// anything is read at `ptr`, so that every free is checked). `layout`, when known,
    /// saves reading the class from the slab descriptor.
    ///
    /// # Safety
    /// As for [`Kmalloc::free_unsized`].
    #[inline(always)]
    pub unsafe fn free_cached(&self, ptr: NonNull<u8>, layout: Option<Layout>) -> bool {
        // SAFETY: forwarded to the caller.
        let Some(index) = (unsafe { self.trusted_slab_class(ptr, layout) }) else { return false };
        // SAFETY: forwarded to the caller; free_cached checks the descriptor's cache id
        // against the class's cache before it touches an array.
        unsafe { self.class(index).free_cached(ptr) }
    }

    /// The class of `ptr`, a slab object, on the trusting path both inline frees take:
    /// from `layout` when known, else from the slab descriptor. None with
    /// [`Checking::Debug`] (before anything is read at `ptr`: there any pointer may
    /// arrive, and only the checked path, which probes the header's page, may read its
    /// header), and for a direct mapping or bootstrap memory.
    ///
    /// # Safety
    /// As for [`Kmalloc::free_unsized`].
    #[inline(always)]
    unsafe fn trusted_slab_class(&self, ptr: NonNull<u8>, layout: Option<Layout>) -> Option<usize> {
        if self.checking != Checking::Trusting {
            return None;
        }
        // SAFETY: the caller's pointer came from this module, so the block holding it
        // starts with a header.
        if unsafe { superblock_magic(ptr) } != Some(SLAB_MAGIC) {
            return None;
        }
        match layout {
            Some(layout) => class_of(layout),
            None => SlabPtr::of(header_address(ptr) as *const u8, page_size())
                // SAFETY: the magic says a slab descriptor is at the header address.
                .and_then(|slab| self.class_of_id(unsafe { slab.cache_id() })),
        }
    }

    /// `kmalloc_node`: memory for `layout` on `node` (or the nearest node with memory).
    pub fn alloc_node(&self, layout: Layout, node: NodeId) -> Result<NonNull<u8>> {
        match class_of(layout) {
            Some(index) => {
                let class = &self.caches[index];
                class.alloc_node(node).or_else(|error| self.alloc_after(error, || class.alloc_node(node)))
            }
            None => {
                let target = self.allocator.machine.fallback_of(node)?;
                let bind = self.allocator.machine.numa_binding.then_some(target);
                large::map(layout, bind)
            }
        }
    }

    /// `kzalloc`: zeroed memory for `layout`.
    pub fn alloc_zeroed(&self, layout: Layout) -> Result<NonNull<u8>> {
        let ptr = self.alloc(layout)?;
        // A fresh direct mapping is zero already.
        if class_of(layout).is_some() {
            // SAFETY: the object holds at least layout.size() bytes and is ours.
            unsafe { ptr.as_ptr().write_bytes(0, layout.size()) };
        }
        Ok(ptr)
    }

    /// `kfree`: returns memory from any of this module's allocation functions, whatever
    /// its size; with [`Checking::Debug`], any pointer (an unknown one is an error, and
    /// nothing is written).
    ///
    /// # Safety
    /// With [`Checking::Trusting`], `ptr` must come from this `Kmalloc` (or the bootstrap
    /// arena) and not have been freed since.
    pub unsafe fn free_unsized(&self, ptr: NonNull<u8>) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { free_of(Some(self), ptr, None) }
    }

    /// Returns memory allocated for `layout` (the layout saves the header's class
    /// lookup; where the memory came from is still read from its header, since the
    /// bootstrap arena serves any layout).
    ///
    /// # Safety
    /// As for [`Kmalloc::free_unsized`].
    #[inline]
    pub unsafe fn free(&self, ptr: NonNull<u8>, layout: Layout) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { free_of(Some(self), ptr, Some(layout)) }
    }

    /// `ksize`: the bytes usable at `ptr` (at least what was asked).
    ///
    /// # Safety
    /// As for [`Kmalloc::free_unsized`], and `ptr` not freed.
    pub unsafe fn usable_size(&self, ptr: NonNull<u8>) -> Result<usize> {
        // SAFETY: forwarded to the caller.
        unsafe { usable_size_of(Some(self), ptr) }
    }

    /// `krealloc`: memory for `new_layout` holding the first bytes of `ptr` (as many as
    /// both hold). Stays in place when the new layout's class is the object's class, or
    /// when a direct mapping has room and is not more than twice too large; else
    /// allocates, copies and frees. On error this call has not freed `ptr` (a live
    /// allocation stays allocated and untouched; a bad pointer, which debug mode finds,
    /// is left alone); a free that reports an overflow has freed it, and the move is
    /// done (reported on stderr).
    ///
    /// # Safety
    /// As for [`Kmalloc::usable_size`].
    pub unsafe fn realloc(&self, ptr: NonNull<u8>, new_layout: Layout) -> Result<NonNull<u8>> {
        // SAFETY: forwarded to the caller.
        unsafe { realloc_of(Some(self), ptr, new_layout) }
    }

    /// The node of the memory at `ptr`: its slab's node, or the node a direct mapping
    /// was bound to (`None`: unbound, or a bootstrap allocation).
    ///
    /// # Safety
    /// As for [`Kmalloc::usable_size`].
    pub unsafe fn node_of(&self, ptr: NonNull<u8>) -> Result<Option<NodeId>> {
        // SAFETY: forwarded to the caller.
        Ok(match unsafe { owner(Some(self), ptr)? } {
            Owner::Slab(index) => self.caches[index].node_of(ptr),
            Owner::Large(header) => header.node(),
            Owner::Bootstrap(_) => None,
        })
    }

    /// Whether `ptr` is an object of one of these caches (read from its slab's descriptor,
    /// no lock taken): a forked child's allocator recognises its parent's objects by it.
    ///
    /// # Safety
    /// `ptr` must come from some kmalloc (or the bootstrap arena) and be live.
    pub unsafe fn owns(&self, ptr: NonNull<u8>) -> bool {
        // SAFETY: forwarded to the caller.
        unsafe { self.owned_usable_size(ptr) }.is_some()
    }

    /// The usable bytes of `ptr` if it is an object of one of these caches, from its
    /// slab's descriptor alone, as [`Kmalloc::owns`] reads it: no lock is taken, in debug
    /// mode too, so that a forked child may ask it of its parent's caches, whose locks a
    /// thread it does not have may hold. None for anything else.
    ///
    /// # Safety
    /// As for [`Kmalloc::owns`].
    pub unsafe fn owned_usable_size(&self, ptr: NonNull<u8>) -> Option<usize> {
        // SAFETY: forwarded to the caller.
        if unsafe { superblock_magic(ptr) } != Some(SLAB_MAGIC) {
            return None;
        }
        // SAFETY: a slab descriptor is at the header address.
        let id =
            unsafe { SlabPtr::of(header_address(ptr) as *const u8, page_size()).map(|slab| slab.cache_id()) };
        id.and_then(|id| self.class_of_id(id)).map(|class| self.caches[class].object_size())
    }

    /// The class whose cache has id `id`.
    #[inline]
    fn class_of_id(&self, id: u64) -> Option<usize> {
        // The caches were created one after another, so their ids are usually
        // consecutive; another thread's cache creation can interleave, hence the search.
        let guess = id.wrapping_sub(self.ids[0]) as usize;
        if self.ids.get(guess) == Some(&id) {
            return Some(guess);
        }
        self.ids.iter().position(|&known| known == id)
    }
}

/// [`Kmalloc::free`] for a caller that may have no caches yet (a global allocator being
/// brought up frees bootstrap and directly mapped memory before its caches exist).
/// `layout`, when known, saves the class lookup of a slab object.
///
/// # Safety
/// As for [`Kmalloc::free_unsized`]; without caches, `ptr` must come from the bootstrap
/// arena or a direct mapping.
#[inline(always)]
pub unsafe fn free_of(kmalloc: Option<&Kmalloc>, ptr: NonNull<u8>, layout: Option<Layout>) -> Result<()> {
    if let (Some(kmalloc), Some(layout)) = (kmalloc, layout) {
        // SAFETY: forwarded to the caller.
        if let Some(index) = unsafe { kmalloc.trusted_slab_class(ptr, Some(layout)) } {
            // SAFETY: a slab object allocated for this layout is of the layout's class.
            return unsafe { kmalloc.class(index).free_here(ptr) };
        }
    }
    // SAFETY: forwarded to the caller.
    unsafe { free_by_owner(kmalloc, ptr) }
}

/// What [`free_of`] does not do inline: a free without its layout, a checked free, a
/// direct mapping or bootstrap memory, each found from the block's header.
///
/// # Safety
/// As for [`free_of`].
#[inline(never)]
unsafe fn free_by_owner(kmalloc: Option<&Kmalloc>, ptr: NonNull<u8>) -> Result<()> {
    // SAFETY: forwarded to the caller.
    match unsafe { owner(kmalloc, ptr)? } {
        Owner::Slab(index) => match kmalloc {
            // SAFETY: the descriptor says the object is this cache's.
            Some(kmalloc) => unsafe { kmalloc.caches[index].free(ptr) },
            None => Err(Error::ForeignPointer { cache: "kmalloc".to_owned(), ptr: ptr.as_ptr() as usize }),
        },
        // SAFETY: the header says this is a live direct mapping starting at ptr.
        Owner::Large(header) => unsafe { large::unmap(ptr, header) },
        Owner::Bootstrap(_) => {
            bootstrap::release(ptr);
            Ok(())
        }
    }
}

/// [`Kmalloc::usable_size`] for a caller that may have no caches yet.
///
/// # Safety
/// As for [`free_of`], and `ptr` live.
pub unsafe fn usable_size_of(kmalloc: Option<&Kmalloc>, ptr: NonNull<u8>) -> Result<usize> {
    // SAFETY: forwarded to the caller.
    Ok(match unsafe { owner(kmalloc, ptr)? } {
        Owner::Slab(index) => kmalloc.map_or(0, |kmalloc| kmalloc.caches[index].object_size()),
        Owner::Large(header) => header.usable(ptr),
        Owner::Bootstrap(usable) => usable,
    })
}

/// [`Kmalloc::realloc`] for a caller that may have no caches yet (the new memory then
/// comes from the bootstrap arena).
///
/// # Safety
/// As for [`usable_size_of`].
pub unsafe fn realloc_of(
    kmalloc: Option<&Kmalloc>,
    ptr: NonNull<u8>,
    new_layout: Layout,
) -> Result<NonNull<u8>> {
    // SAFETY: forwarded to the caller.
    let owner = unsafe { owner(kmalloc, ptr)? };
    let aligned = ptr.as_ptr() as usize % new_layout.align() == 0;
    let usable = match owner {
        Owner::Slab(index) => {
            if aligned && class_of(new_layout) == Some(index) {
                // In place; a debug cache still checks that the object is out (a freed
                // one is a use after free, reported as the free would report it).
                if let Some(kmalloc) = kmalloc.filter(|kmalloc| kmalloc.checking == Checking::Debug) {
                    // SAFETY: a debug cache checks any pointer before it reads it.
                    unsafe { kmalloc.class(index).debug_check_out(ptr) }?;
                }
                return Ok(ptr);
            }
            kmalloc.map_or(0, |kmalloc| kmalloc.caches[index].object_size())
        }
        Owner::Large(header) => {
            let usable = header.usable(ptr);
            let size = new_layout.size();
            if aligned && class_of(new_layout).is_none() && size <= usable && size > usable / 2 {
                return Ok(ptr);
            }
            usable
        }
        Owner::Bootstrap(usable) => usable,
    };
    let fresh = match kmalloc {
        Some(kmalloc) => kmalloc.alloc(new_layout)?,
        None => NonNull::new(bootstrap_alloc(new_layout)).ok_or_else(|| Error::OutOfMemory {
            cache: "kmalloc-bootstrap".to_owned(),
            node: 0,
            bytes: new_layout.size(),
            reason: "the bootstrap arena could not map a chunk".to_owned(),
        })?,
    };
    // SAFETY: both blocks are live, distinct, and hold at least the bytes copied.
    unsafe { std::ptr::copy_nonoverlapping(ptr.as_ptr(), fresh.as_ptr(), usable.min(new_layout.size())) };
    // SAFETY: ptr is the caller's live allocation, no longer needed.
    match unsafe { free_of(kmalloc, ptr, None) } {
        Ok(()) => Ok(fresh),
        // Freed all the same (an overflow, reported): the bytes have moved.
        Err(error) if error.object_freed() => {
            eprintln!("slab-core: {error}; the object was freed, its bytes moved to {fresh:p}");
            Ok(fresh)
        }
        // The pointer is left alone; the copy goes, and the caller hears of the pointer.
        Err(error) => {
            // SAFETY: fresh came from this module a moment ago and nothing else has it.
            if let Err(also) = unsafe { free_of(kmalloc, fresh, Some(new_layout)) } {
                eprintln!("slab-core: realloc: the copy {fresh:p} cannot be freed: {also}");
            }
            Err(error)
        }
    }
}

/// Reads who owns `ptr` from its block's header; in debug mode, the header's page is
/// probed first and a slab is checked against the registry. Without caches, a slab
/// object is an unknown pointer.
///
/// # Safety
/// Outside debug mode, `ptr` must come from `kmalloc` (or, without caches, a direct
/// mapping) or the bootstrap arena, and be live.
unsafe fn owner(kmalloc: Option<&Kmalloc>, ptr: NonNull<u8>) -> Result<Owner> {
    let address = ptr.as_ptr() as usize;
    let unknown = || Error::ForeignPointer { cache: "kmalloc".to_owned(), ptr: address };
    let checking = kmalloc.map_or(Checking::Trusting, |kmalloc| kmalloc.checking);
    let header = header_address(ptr);
    if checking == Checking::Debug && !large::is_mapped(header) {
        return Err(unknown());
    }
    // SAFETY: the header's page is mapped: a live pointer of this module (the caller's
    // promise) or probed just now.
    let magic = unsafe { (header as *const u64).read() };
    match magic {
        SLAB_MAGIC => {
            let Some(kmalloc) = kmalloc else { return Err(unknown()) };
            // SAFETY: a slab descriptor is at the header address.
            let cache_id =
                unsafe { SlabPtr::of(header as *const u8, page_size()).map(|slab| slab.cache_id()) };
            let index = cache_id.and_then(|id| kmalloc.class_of_id(id)).ok_or_else(unknown)?;
            if checking == Checking::Debug {
                // In a slab of this class (by the registry), and an object's start.
                kmalloc.class(index).check_object_start(ptr)?;
            }
            Ok(Owner::Slab(index))
        }
        large::LARGE_MAGIC => {
            // SAFETY: a direct mapping's header is at the header address.
            let header = unsafe { large::LargeHeader::read(header) };
            if !header.starts(ptr) {
                return Err(unknown());
            }
            Ok(Owner::Large(header))
        }
        bootstrap::ARENA_MAGIC => {
            // SAFETY: the magic says a bootstrap chunk starts here.
            unsafe { bootstrap::usable(ptr) }.map(Owner::Bootstrap).ok_or_else(unknown)
        }
        _ => Err(unknown()),
    }
}

/// `kmalloc-8` .. `kmalloc-960`, `kmalloc-1k`, `kmalloc-1152`, ..., `kmalloc-32k`: a
/// whole number of KiB as later kernels name it in slabinfo, anything else in bytes.
fn class_name(size: usize) -> String {
    if size >= 1024 && size % 1024 == 0 {
        format!("kmalloc-{}k", size / 1024)
    } else {
        format!("kmalloc-{size}")
    }
}

/// Where the header of the block holding `ptr` is: the superblock start, or for a
/// superblock-aligned pointer (only a direct mapping aligned to a superblock or more
/// starts there: a slab's first bytes are its descriptor) the page before it.
#[inline(always)]
fn header_address(ptr: NonNull<u8>) -> usize {
    let address = ptr.as_ptr() as usize;
    // A power of two (the page size is one), so a mask, not a division.
    let superblock = superblock_bytes();
    if address & (superblock - 1) == 0 {
        address - page_size()
    } else {
        address & !(superblock - 1)
    }
}

/// The magic number at the start of the block holding `ptr`.
///
/// # Safety
/// `ptr` must come from this module and be live.
#[inline(always)]
unsafe fn superblock_magic(ptr: NonNull<u8>) -> Option<u64> {
    let address = ptr.as_ptr() as usize;
    let mask = superblock_bytes() - 1;
    if address & mask == 0 {
        return None;
    }
    // SAFETY: the caller's pointer is in a live block, which starts with a header: at
    // the superblock boundary below it (`header_address` of a pointer not on one).
    Some(unsafe { ((address & !mask) as *const u64).read() })
}

#[cfg(test)]
mod tests;
