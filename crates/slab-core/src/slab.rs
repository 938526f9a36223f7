//! Slabs: the geometry of a cache's slabs (`cache_estimate`, `calculate_slab_order`,
//! colouring), the slab descriptor kept at the start of each slab (the kernel's on-slab
//! `struct slab` followed by its `kmem_bufctl_t` index free list), and the intrusive slab
//! lists of a node.
//!
//! Layout of one slab, `PAGE_SIZE << gfporder` bytes aligned to its own size:
//!
//! ```text
//! | struct Slab | bufctl[0..num] | pad to align | colour * colour_off | obj 0 | obj 1 | ... | left over |
//! ^ base = obj & !(slab_bytes - 1)                                      ^ s_mem
//! ```
//!
//! The descriptor's identity fields (`magic`, `cache_id`, `nodeid`, `s_mem`) are written
//! once before the slab is published and read without a lock; every other field belongs
//! to the node's `list_lock`. Fields are reached through raw pointers only, never through a
//! `&Slab`, because other threads change the lock-protected fields concurrently with the
//! lock-free reads of the identity fields.

use std::alloc::Layout;
use std::ptr::{addr_of, addr_of_mut, NonNull};

use crate::memory::page_size;

/// The kernel's `kmem_bufctl_t`: the index free list's entry type.
pub(crate) type KmemBufctl = u32;
/// End of a slab's free list (`BUFCTL_END`).
pub(crate) const BUFCTL_END: KmemBufctl = KmemBufctl::MAX;
/// The bufctl of an object that is handed out, i.e. not on the free list. The kernel
/// calls it `BUFCTL_FREE` (its DEBUG build sets it in `slab_get_obj` and checks it in
/// `slab_put_obj` to catch double frees); the name is kept for readers of `mm/slab.c`.
pub(crate) const BUFCTL_FREE: KmemBufctl = KmemBufctl::MAX - 1;
/// Most objects a slab may hold (`SLAB_LIMIT`).
pub(crate) const SLAB_LIMIT: u32 = KmemBufctl::MAX - 2;
/// The kernel's `BYTES_PER_WORD`: objects are at least word-sized and word-aligned.
pub(crate) const BYTES_PER_WORD: usize = std::mem::size_of::<usize>();
/// The largest slab order. The kernel stops at `MAX_GFP_ORDER` 5 (128 KiB); user space
/// allows objects up to a few MiB, and the descriptor is always on-slab here (see
/// [`Geometry::new`]), so the loop may go further.
pub(crate) const MAX_GFP_ORDER: u32 = 10;
/// `cache_line_size()`, the colour step (`cachep->colour_off`) unless `align` is larger.
pub(crate) const CACHE_LINE: usize = 64;
/// A value no slab descriptor holds by chance: checked by `validate`.
pub(crate) const SLAB_MAGIC: u64 = 0x51ab_c0de_2615_0001;

/// Which of a node's lists a slab is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum ListKind {
    /// `slabs_partial`: some objects handed out.
    Partial = 0,
    /// `slabs_full`: every object handed out.
    Full = 1,
    /// `slabs_free`: no object handed out.
    Free = 2,
    /// Off every list: being created or destroyed.
    Detached = 3,
}

/// Whether a cache carries the debug red zones around each object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RedZoning {
    /// Plain objects.
    Plain,
    /// A red-zone word before and after each object (`SLAB_RED_ZONE`).
    Zoned,
}

/// How a cache aligns its objects beyond what their layout asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjectAlign {
    /// The layout's alignment, at least a word.
    Word,
    /// The kernel's `SLAB_HWCACHE_ALIGN` (see [`hwcache_align`]).
    HwCache,
}

/// The alignment `kmem_cache_create` gives a `SLAB_HWCACHE_ALIGN` cache of `size`-byte
/// objects: the cache line, halved while the object fits in half of it, and never below
/// a word (the caller then takes the larger of this and the requested alignment).
pub(crate) fn hwcache_align(size: usize) -> usize {
    let mut ralign = CACHE_LINE;
    while size <= ralign / 2 && ralign / 2 >= BYTES_PER_WORD {
        ralign /= 2;
    }
    ralign
}

/// How a new cache's slab order is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlabOrder {
    /// `calculate_slab_order` with the machine's `slab_break_gfp_order`: object caches.
    Calculated,
    /// This order for every object size: the kmalloc caches (`kmalloc.rs`).
    #[cfg_attr(slab_core_loom, allow(dead_code))]
    Fixed(u32),
}

/// The shape of a cache's objects and slabs, fixed at cache creation.
#[derive(Debug, Clone)]
pub(crate) struct Geometry {
    /// The size asked for (`cachep->obj_size`), rounded up to a word.
    pub(crate) object_size: usize,
    /// Bytes per object slot, red zones included (`cachep->buffer_size`).
    pub(crate) buffer_size: usize,
    /// Offset of the caller's object in its slot (`obj_offset(cachep)`; 0 without red zones).
    pub(crate) obj_offset: usize,
    /// Slab order: a slab is `PAGE_SIZE << gfporder` bytes (`cachep->gfporder`).
    pub(crate) gfporder: u32,
    /// Objects per slab (`cachep->num`).
    pub(crate) num: u32,
    /// `PAGE_SIZE << gfporder`.
    pub(crate) slab_bytes: usize,
    /// Descriptor plus bufctl array, aligned (`cachep->slab_size`).
    pub(crate) slab_size: usize,
    /// Number of colours (`cachep->colour`).
    pub(crate) colour: u32,
    /// Colour step in bytes (`cachep->colour_off`).
    pub(crate) colour_off: usize,
    /// `cachep->reciprocal_buffer_size`: divides an offset by `buffer_size` with a
    /// multiplication (see [`reciprocal`]).
    pub(crate) reciprocal_buffer_size: u64,
}

/// The multiplier that turns a division by `d` into `(n * m) >> 64`, exact for every
/// `n` with `n * d < 2^64` (later kernels' `reciprocal_value` for `obj_to_index`: a
/// hardware division per freed object is most of `free_block`'s cost).
pub(crate) fn reciprocal(d: usize) -> u64 {
    ((1u128 << 64) / d as u128 + 1) as u64
}

/// `n / d` through the reciprocal of `d`; exact while `n * d < 2^64`.
#[inline(always)]
pub(crate) fn reciprocal_divide(n: usize, reciprocal: u64) -> usize {
    ((n as u128 * reciprocal as u128) >> 64) as usize
}

const fn align_up(value: usize, align: usize) -> usize {
    (value + align - 1) & !(align - 1)
}

/// The kernel's `cache_estimate` for an on-slab descriptor: how many objects of `size`
/// fit in a slab of `gfporder` with the descriptor and one bufctl per object, and the
/// bytes left over. Returns `(num, left_over)`.
pub(crate) fn cache_estimate(gfporder: u32, size: usize, align: usize) -> (u32, usize) {
    let wastage = page_size() << gfporder;
    let base = std::mem::size_of::<Slab>();
    let extra = std::mem::size_of::<KmemBufctl>();
    // The kernel's loop: the largest i with i * size + ALIGN(base + i * extra, align) <= wastage.
    let fits = |i: usize| i * size + align_up(base + i * extra, align) <= wastage;
    let mut num = (wastage / (size + extra)).min(SLAB_LIMIT as usize);
    while num > 0 && !fits(num) {
        num -= 1;
    }
    let left_over = if num == 0 { 0 } else { wastage - num * size - align_up(base + num * extra, align) };
    (num as u32, left_over)
}

/// How far [`calculate_slab_order`] may grow a slab of large objects past
/// `slab_break_gfp_order` while its waste is above 1/8: order 3, 32 KiB.
///
/// The kernel stops at `slab_break_gfp_order` (order 1 above 32 MiB of memory) because
/// higher-order pages are hard to find in physical memory, and it can afford to: objects
/// of `PAGE_SIZE / 8` and more have their descriptor off the slab (`CFLGS_OFF_SLAB`), so
/// a page-sized object takes exactly one page. Here the descriptor is always on the slab
/// (the O(1) lookup masks an object's address down to it), which at order 1 leaves room
/// for a single page-sized object in two pages. An off-slab descriptor would need an
/// address-to-descriptor table (the kernel's `struct page`) and a second dependent load
/// on every free; growing the slab instead costs nothing in user space, where an aligned
/// 32 KiB mapping is made like an 8 KiB one: a 4096-byte object then takes 8 pages for 7
/// objects (1.14 pages each instead of 2), a 3000-byte one 4 pages for 5.
pub(crate) const ONSLAB_BREAK_GFP_ORDER: u32 = 3;

/// The kernel's `calculate_slab_order`: the smallest order that holds an object, grown
/// while the internal fragmentation is above 1/8 of the slab and the order is below
/// `slab_break_gfp_order`; for objects of `PAGE_SIZE / 8` and more (those whose
/// descriptor the kernel keeps off the slab) on a machine whose break order is not 0,
/// below [`ONSLAB_BREAK_GFP_ORDER`]. Returns `(gfporder, num, left_over)`; `num` is 0
/// when no order up to [`MAX_GFP_ORDER`] holds one object.
pub(crate) fn calculate_slab_order(
    size: usize,
    align: usize,
    slab_break_gfp_order: u32,
) -> (u32, u32, usize) {
    let slab_break_gfp_order = if slab_break_gfp_order > 0 && size >= page_size() / 8 {
        slab_break_gfp_order.max(ONSLAB_BREAK_GFP_ORDER)
    } else {
        slab_break_gfp_order
    };
    let mut best = (0, 0, 0);
    for gfporder in 0..=MAX_GFP_ORDER {
        let (num, left_over) = cache_estimate(gfporder, size, align);
        if num == 0 {
            continue;
        }
        best = (gfporder, num, left_over);
        // "Large number of objects is good, but very large slabs are currently bad for
        // the gfp()s."
        if gfporder >= slab_break_gfp_order {
            break;
        }
        // "Acceptable internal fragmentation?"
        if left_over * 8 <= page_size() << gfporder {
            break;
        }
    }
    best
}

impl Geometry {
    /// The geometry of a cache of `layout` objects, as `kmem_cache_create` computes it:
    /// word-rounded size, word or hardware cache line alignment (`SLAB_HWCACHE_ALIGN`),
    /// red zones in debug mode, then the slab order.
    ///
    /// Every object is aligned: the slab base is aligned to the slab size, the descriptor
    /// and bufctl array are padded to the alignment (`slab_size`), the colour offset is a
    /// multiple of `colour_off` (the cache line or the alignment, whichever is larger),
    /// and `buffer_size` is a multiple of the alignment.
    ///
    /// Unlike the kernel, the descriptor is always on the slab (the kernel puts it off-slab
    /// for objects of `PAGE_SIZE / 8` and more): the O(1) object-to-slab lookup masks the
    /// object's address down to the slab's start, where the descriptor must be.
    pub(crate) fn new(
        layout: Layout,
        object_align: ObjectAlign,
        red_zoning: RedZoning,
        slab_break_gfp_order: u32,
    ) -> Result<Self, String> {
        Self::build(layout, object_align, red_zoning, MAX_GFP_ORDER, |size, align| {
            calculate_slab_order(size, align, slab_break_gfp_order)
        })
    }

    /// As [`Geometry::new`], with every slab of order `gfporder` whatever the object size:
    /// the kmalloc caches share one slab size, so that a pointer of unknown size finds its
    /// slab by one mask (`kmalloc.rs`).
    #[cfg_attr(slab_core_loom, allow(dead_code))]
    pub(crate) fn with_order(
        layout: Layout,
        object_align: ObjectAlign,
        red_zoning: RedZoning,
        gfporder: u32,
    ) -> Result<Self, String> {
        Self::build(layout, object_align, red_zoning, gfporder, |size, align| {
            let (num, left_over) = cache_estimate(gfporder, size, align);
            (gfporder, num, left_over)
        })
    }

    /// The common part of [`Geometry::new`] and [`Geometry::with_order`]; `order_of` picks
    /// `(gfporder, num, left_over)` for a slot size and alignment, `num` 0 when no slab
    /// up to `largest_order` holds one.
    fn build(
        layout: Layout,
        object_align: ObjectAlign,
        red_zoning: RedZoning,
        largest_order: u32,
        order_of: impl FnOnce(usize, usize) -> (u32, u32, usize),
    ) -> Result<Self, String> {
        let page = page_size();
        if layout.align() > page {
            return Err(format!("alignment above the page size ({page}) is not supported"));
        }
        let object_size = align_up(layout.size().max(1), BYTES_PER_WORD);
        let ralign = match object_align {
            ObjectAlign::Word => BYTES_PER_WORD,
            ObjectAlign::HwCache => hwcache_align(object_size),
        };
        let align = layout.align().max(ralign);
        let (obj_offset, slot) = match red_zoning {
            RedZoning::Plain => (0, object_size),
            // A word before the object (ending at an aligned offset) and one after it.
            RedZoning::Zoned => {
                let offset = align_up(BYTES_PER_WORD, align);
                (offset, offset + object_size + BYTES_PER_WORD)
            }
        };
        let buffer_size = align_up(slot, align);
        let (gfporder, num, left_over) = order_of(buffer_size, align);
        if num == 0 {
            return Err(format!(
                "an object slot of {buffer_size} bytes does not fit the largest slab ({} bytes)",
                page << largest_order
            ));
        }
        let colour_off = CACHE_LINE.max(align);
        Ok(Self {
            object_size,
            buffer_size,
            obj_offset,
            gfporder,
            num,
            slab_bytes: page << gfporder,
            slab_size: align_up(
                std::mem::size_of::<Slab>() + num as usize * std::mem::size_of::<KmemBufctl>(),
                align,
            ),
            colour: (left_over / colour_off) as u32,
            colour_off,
            reciprocal_buffer_size: reciprocal(buffer_size),
        })
    }

    /// Pages per slab, as slabinfo prints it.
    pub(crate) fn pages_per_slab(&self) -> usize {
        1 << self.gfporder
    }

    /// Offset of the second red zone in an object slot.
    pub(crate) fn redzone2_offset(&self) -> usize {
        self.obj_offset + self.object_size
    }
}

/// The slab descriptor (`struct slab`), at the start of each slab.
#[repr(C)]
pub(crate) struct Slab {
    magic: u64,
    cache_id: u64,
    nodeid: u32,
    list: ListKind,
    inuse: u32,
    free: KmemBufctl,
    prev: *mut Slab,
    next: *mut Slab,
    s_mem: *mut u8,
    colouroff: usize,
}

/// What masks an object address down to its slab's base: slabs are `slab_bytes` long (a
/// power of two) and aligned to it.
#[inline(always)]
pub(crate) const fn slab_mask(slab_bytes: usize) -> usize {
    !(slab_bytes - 1)
}

/// A pointer to a slab descriptor. Copy, compared by address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlabPtr(NonNull<Slab>);

// SAFETY: a SlabPtr is an address; what may be done through it is governed by the
// node's list_lock, as each method's safety contract says.
unsafe impl Send for SlabPtr {}

impl SlabPtr {
    /// The slab an object address falls in: its address masked down to the slab size
    /// (`virt_to_slab`). Pure arithmetic; whether a slab is there is the caller's business.
    #[inline(always)]
    pub(crate) fn of(obj: *const u8, slab_bytes: usize) -> Option<SlabPtr> {
        Self::masked(obj, slab_mask(slab_bytes))
    }

    /// [`SlabPtr::of`] with the mask of [`slab_mask`] worked out already: one `and`, for
    /// the fast free.
    #[inline(always)]
    pub(crate) fn masked(obj: *const u8, mask: usize) -> Option<SlabPtr> {
        NonNull::new((obj as usize & mask) as *mut Slab).map(SlabPtr)
    }

    /// The slab's first byte.
    pub(crate) fn base(self) -> *mut u8 {
        self.0.as_ptr().cast()
    }

    /// Writes a new slab's descriptor and threads every object on its free list
    /// (`alloc_slabmgmt` + the bufctl part of `cache_init_objs`).
    ///
    /// # Safety
    /// `base` must be a fresh, writable, unshared block of `geometry.slab_bytes` bytes
    /// aligned to that size, and `colour < geometry.colour` or `colour == 0`.
    pub(crate) unsafe fn init(
        base: NonNull<u8>,
        geometry: &Geometry,
        cache_id: u64,
        nodeid: u32,
        colour: u32,
    ) -> SlabPtr {
        let colouroff = colour as usize * geometry.colour_off;
        let slab = base.cast::<Slab>().as_ptr();
        // SAFETY: the caller gives us the whole fresh block; the descriptor, the bufctl
        // array and colouring fit in it by construction of the geometry.
        unsafe {
            slab.write(Slab {
                magic: SLAB_MAGIC,
                cache_id,
                nodeid,
                list: ListKind::Detached,
                inuse: 0,
                free: 0,
                prev: std::ptr::null_mut(),
                next: std::ptr::null_mut(),
                s_mem: base.as_ptr().add(colouroff + geometry.slab_size),
                colouroff,
            });
            let bufctl = Self::bufctl_base(slab);
            for index in 0..geometry.num {
                let next = if index + 1 == geometry.num { BUFCTL_END } else { index + 1 };
                bufctl.add(index as usize).write(next);
            }
            SlabPtr(NonNull::new_unchecked(slab))
        }
    }

    /// # Safety
    /// `slab` must point to a slab descriptor.
    unsafe fn bufctl_base(slab: *mut Slab) -> *mut KmemBufctl {
        // SAFETY: the bufctl array follows the descriptor (`slab_bufctl`).
        unsafe { slab.add(1).cast::<KmemBufctl>() }
    }

    /// The descriptor's magic number.
    ///
    /// # Safety
    /// A slab descriptor must be mapped at this address.
    pub(crate) unsafe fn magic(self) -> u64 {
        // SAFETY: identity fields are immutable once the slab is published.
        unsafe { addr_of!((*self.0.as_ptr()).magic).read() }
    }

    /// The id of the cache owning the slab.
    ///
    /// # Safety
    /// A slab descriptor must be mapped at this address.
    #[inline(always)]
    pub(crate) unsafe fn cache_id(self) -> u64 {
        // SAFETY: identity fields are immutable once the slab is published.
        unsafe { addr_of!((*self.0.as_ptr()).cache_id).read() }
    }

    /// The node the slab's memory belongs to (`slabp->nodeid`).
    ///
    /// # Safety
    /// A slab descriptor must be mapped at this address.
    #[inline(always)]
    pub(crate) unsafe fn nodeid(self) -> u32 {
        // SAFETY: identity fields are immutable once the slab is published.
        unsafe { addr_of!((*self.0.as_ptr()).nodeid).read() }
    }

    /// The first object (`slabp->s_mem`).
    ///
    /// # Safety
    /// A slab descriptor must be mapped at this address.
    pub(crate) unsafe fn s_mem(self) -> *mut u8 {
        // SAFETY: identity fields are immutable once the slab is published.
        unsafe { addr_of!((*self.0.as_ptr()).s_mem).read() }
    }

    /// The object slot at `index` (`index_to_obj`).
    ///
    /// # Safety
    /// A slab descriptor must be mapped here and `index < geometry.num`.
    pub(crate) unsafe fn index_to_obj(self, geometry: &Geometry, index: u32) -> *mut u8 {
        // SAFETY: the slot lies within the slab by the caller's bound on index.
        unsafe { self.s_mem().add(index as usize * geometry.buffer_size) }
    }

    /// The index of the object slot starting at `obj` (`obj_to_index`), or why `obj` is
    /// not the start of one of this slab's slots.
    ///
    /// # Safety
    /// A slab descriptor must be mapped at this address.
    pub(crate) unsafe fn obj_to_index(self, geometry: &Geometry, obj: *const u8) -> Result<u32, Misfit> {
        // SAFETY: forwarded.
        let s_mem = unsafe { self.s_mem() } as usize;
        let address = obj as usize;
        if address < s_mem {
            return Err(Misfit::InHeader { first_object: s_mem });
        }
        let offset = address - s_mem;
        let index = offset / geometry.buffer_size;
        if index >= geometry.num as usize {
            return Err(Misfit::PastLast { slab: self.base() as usize });
        }
        if offset % geometry.buffer_size != 0 {
            return Err(Misfit::Inside { bytes: offset % geometry.buffer_size });
        }
        Ok(index as u32)
    }

    /// Objects handed out of this slab (`slabp->inuse`).
    ///
    /// # Safety
    /// The caller holds the list_lock of the slab's node.
    pub(crate) unsafe fn inuse(self) -> u32 {
        // SAFETY: lock-protected field, the caller holds the lock.
        unsafe { (*self.0.as_ptr()).inuse }
    }

    /// The list this slab is on.
    ///
    /// # Safety
    /// The caller holds the list_lock of the slab's node.
    pub(crate) unsafe fn list(self) -> ListKind {
        // SAFETY: lock-protected field, the caller holds the lock.
        unsafe { (*self.0.as_ptr()).list }
    }

    /// Whether no object is left on the free list (`slabp->free == BUFCTL_END`).
    ///
    /// # Safety
    /// The caller holds the list_lock of the slab's node.
    pub(crate) unsafe fn is_full(self) -> bool {
        // SAFETY: lock-protected field, the caller holds the lock.
        unsafe { (*self.0.as_ptr()).free == BUFCTL_END }
    }

    /// Takes the first free object (`slab_get_obj`).
    ///
    /// # Safety
    /// The caller holds the list_lock of the slab's node and the slab has a free object.
    pub(crate) unsafe fn get_obj(self, geometry: &Geometry) -> *mut u8 {
        let slab = self.0.as_ptr();
        // SAFETY: the caller holds the lock and there is a free object, so `free` is a
        // valid index and its bufctl entry is in the array.
        unsafe {
            let index = (*slab).free;
            debug_assert!(index < geometry.num);
            let bufctl = Self::bufctl_base(slab).add(index as usize);
            (*slab).free = bufctl.read();
            bufctl.write(BUFCTL_FREE);
            (*slab).inuse += 1;
            self.index_to_obj(geometry, index)
        }
    }

    /// Puts an object back on the free list (`slab_put_obj`). Returns `false`, changing
    /// nothing, when the object is already on it (a double free that reached the slab)
    /// or lies beyond the slab's objects.
    ///
    /// # Safety
    /// The caller holds the list_lock of the slab's node and `obj` is a slot start of
    /// this slab (the paths that take pointers from callers check that first).
    pub(crate) unsafe fn put_obj(self, geometry: &Geometry, obj: *const u8) -> bool {
        let slab = self.0.as_ptr();
        // SAFETY: the caller holds the lock, so the descriptor is live.
        let offset = (obj as usize).wrapping_sub(unsafe { self.s_mem() } as usize);
        let index = reciprocal_divide(offset, geometry.reciprocal_buffer_size);
        if index >= geometry.num as usize {
            return false;
        }
        let index = index as u32;
        // SAFETY: the caller holds the lock; `index < num`, so its bufctl entry is in the
        // array.
        unsafe {
            let bufctl = Self::bufctl_base(slab).add(index as usize);
            if bufctl.read() != BUFCTL_FREE {
                return false;
            }
            bufctl.write((*slab).free);
            (*slab).free = index;
            (*slab).inuse -= 1;
        }
        true
    }

    /// Whether the slot at `index` is handed out (its bufctl is `BUFCTL_FREE`).
    ///
    /// # Safety
    /// The caller holds the list_lock and `index < geometry.num`.
    pub(crate) unsafe fn is_handed_out(self, index: u32) -> bool {
        // SAFETY: in bounds by contract, lock held.
        unsafe { Self::bufctl_base(self.0.as_ptr()).add(index as usize).read() == BUFCTL_FREE }
    }

    /// Walks the free list into `free` (the free indices) or says what is wrong with it
    /// (an index out of range, a loop, a count that disagrees with `inuse`). For
    /// `validate`, which holds locks an allocation may need: `seen` and `free` are the
    /// caller's, with room for `num` entries each, so nothing is allocated here.
    ///
    /// # Safety
    /// The caller holds the list_lock of the slab's node.
    pub(crate) unsafe fn free_indices_into(
        self,
        geometry: &Geometry,
        seen: &mut Vec<bool>,
        free: &mut Vec<u32>,
    ) -> Result<(), FreeListFault> {
        let slab = self.0.as_ptr();
        // SAFETY: lock held, so the bufctl array is stable; every index read is below
        // `num` (checked before each read below), inside the array.
        let entry = |index: u32| unsafe { Self::bufctl_base(slab).add(index as usize).read() };
        // SAFETY: lock held; `slab` points to a descriptor (the caller's guarantee).
        let (first, inuse) = unsafe { ((*slab).free, (*slab).inuse) };
        let num = geometry.num;
        seen.clear();
        seen.resize(num as usize, false);
        free.clear();
        let mut index = first;
        while index != BUFCTL_END {
            if index >= num {
                return Err(FreeListFault::OutOfRange { index, num });
            }
            if std::mem::replace(&mut seen[index as usize], true) {
                return Err(FreeListFault::Loop { index });
            }
            free.push(index);
            index = entry(index);
        }
        if inuse as usize + free.len() != num as usize {
            return Err(FreeListFault::Count { inuse, free: free.len(), num });
        }
        for index in 0..num {
            let entry = entry(index);
            if !seen[index as usize] && entry != BUFCTL_FREE {
                return Err(FreeListFault::Unmarked { index, entry });
            }
        }
        Ok(())
    }
}

/// One of a node's slab lists (`slabs_partial`, `slabs_full`, `slabs_free`): intrusive,
/// doubly linked through the descriptors. Every method requires the node's list_lock,
/// which is what `&mut SlabList` inside the locked node state stands for.
#[derive(Debug)]
pub(crate) struct SlabList {
    kind: ListKind,
    head: *mut Slab,
    tail: *mut Slab,
    len: usize,
}

// SAFETY: the list is only reached through the node's lock, which orders all access.
unsafe impl Send for SlabList {}

impl SlabList {
    /// An empty list of the given kind.
    pub(crate) const fn new(kind: ListKind) -> Self {
        Self { kind, head: std::ptr::null_mut(), tail: std::ptr::null_mut(), len: 0 }
    }

    /// Number of slabs on the list.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether the list is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first slab (`list.next`).
    pub(crate) fn first(&self) -> Option<SlabPtr> {
        NonNull::new(self.head).map(SlabPtr)
    }

    /// The last slab (`list.prev`).
    pub(crate) fn last(&self) -> Option<SlabPtr> {
        NonNull::new(self.tail).map(SlabPtr)
    }

    /// Adds a detached slab at the front (`list_add`).
    ///
    /// # Safety
    /// `slab` is a live, detached slab of the node whose lock the caller holds.
    pub(crate) unsafe fn push_front(&mut self, slab: SlabPtr) {
        let s = slab.0.as_ptr();
        // SAFETY: lock held; s and the current head are live descriptors.
        unsafe {
            debug_assert_eq!((*s).list, ListKind::Detached);
            (*s).prev = std::ptr::null_mut();
            (*s).next = self.head;
            // Raw field writes: no `&mut Slab` to a neighbour, which the unlocked fast
            // free may be reading.
            if self.head.is_null() {
                self.tail = s;
            } else {
                (*self.head).prev = s;
            }
            self.head = s;
            (*s).list = self.kind;
        }
        self.len += 1;
    }

    /// Adds a detached slab at the back (`list_add_tail`).
    ///
    /// # Safety
    /// `slab` is a live, detached slab of the node whose lock the caller holds.
    pub(crate) unsafe fn push_back(&mut self, slab: SlabPtr) {
        let s = slab.0.as_ptr();
        // SAFETY: lock held; s and the current tail are live descriptors.
        unsafe {
            debug_assert_eq!((*s).list, ListKind::Detached);
            (*s).next = std::ptr::null_mut();
            (*s).prev = self.tail;
            if self.tail.is_null() {
                self.head = s;
            } else {
                (*self.tail).next = s;
            }
            self.tail = s;
            (*s).list = self.kind;
        }
        self.len += 1;
    }

    /// Unlinks a slab that is on this list (`list_del`).
    ///
    /// # Safety
    /// `slab` is on this list and the caller holds the node's lock.
    pub(crate) unsafe fn remove(&mut self, slab: SlabPtr) {
        let s = slab.0.as_ptr();
        // SAFETY: lock held; s is on this list so its neighbours are live descriptors.
        unsafe {
            debug_assert_eq!((*s).list, self.kind);
            let (prev, next) = ((*s).prev, (*s).next);
            if prev.is_null() {
                self.head = next;
            } else {
                (*prev).next = next;
            }
            if next.is_null() {
                self.tail = prev;
            } else {
                (*next).prev = prev;
            }
            (*s).prev = std::ptr::null_mut();
            (*s).next = std::ptr::null_mut();
            (*s).list = ListKind::Detached;
        }
        self.len -= 1;
    }

    /// The slabs on the list, front to back.
    ///
    /// # Safety
    /// The caller holds the node's lock for as long as it uses the iterator.
    pub(crate) unsafe fn iter(&self) -> impl Iterator<Item = SlabPtr> + '_ {
        let mut next = self.head;
        std::iter::from_fn(move || {
            let current = NonNull::new(next)?;
            // SAFETY: lock held by contract; current is a live descriptor on this list.
            next = unsafe { (*current.as_ptr()).next };
            Some(SlabPtr(current))
        })
    }
}

/// Slabs taken off the node lists to be returned to the OS once no lock is held (the
/// later kernels' `slabs_destroy(cachep, &list)`), linked through their descriptors so
/// that collecting them never allocates.
#[derive(Debug, Default)]
pub(crate) struct SlabChain {
    head: Option<SlabPtr>,
    len: usize,
}

impl SlabChain {
    /// Adds a detached slab.
    ///
    /// # Safety
    /// `slab` is detached from every list and owned by the caller from now on.
    pub(crate) unsafe fn push(&mut self, slab: SlabPtr) {
        let s = slab.0.as_ptr();
        // SAFETY: the slab is detached and ours; its `next` link is free to reuse.
        unsafe { addr_of_mut!((*s).next).write(self.head.map_or(std::ptr::null_mut(), |h| h.0.as_ptr())) };
        self.head = Some(slab);
        self.len += 1;
    }

    /// Number of slabs collected.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Takes the next slab.
    pub(crate) fn pop(&mut self) -> Option<SlabPtr> {
        let slab = self.head?;
        // SAFETY: slabs on the chain are owned by it and still mapped.
        self.head = NonNull::new(unsafe { addr_of!((*slab.0.as_ptr()).next).read() }).map(SlabPtr);
        self.len -= 1;
        Some(slab)
    }
}

/// Why an address is not the start of one of a slab's object slots
/// ([`SlabPtr::obj_to_index`]); plain data, so that it can be had under a lock where
/// nothing may be allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Misfit {
    /// Before the first object, in the slab's header.
    InHeader { first_object: usize },
    /// After the last object.
    PastLast { slab: usize },
    /// Inside an object, `bytes` past its start.
    Inside { bytes: usize },
}

impl std::fmt::Display for Misfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Misfit::InHeader { first_object } => {
                write!(f, "it lies in the slab header, before the first object at {first_object:#x}")
            }
            Misfit::PastLast { slab } => write!(f, "it lies after the last object of the slab at {slab:#x}"),
            Misfit::Inside { bytes } => write!(f, "it is {bytes} bytes into an object"),
        }
    }
}

/// What is wrong with a slab's free list ([`SlabPtr::free_indices_into`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FreeListFault {
    OutOfRange { index: u32, num: u32 },
    Loop { index: u32 },
    Count { inuse: u32, free: usize, num: u32 },
    Unmarked { index: u32, entry: u32 },
}

impl std::fmt::Display for FreeListFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            FreeListFault::OutOfRange { index, num } => {
                write!(f, "free list holds index {index} beyond {num} objects")
            }
            FreeListFault::Loop { index } => write!(f, "free list loops at index {index}"),
            FreeListFault::Count { inuse, free, num } => {
                write!(f, "inuse {inuse} + {free} free != {num} objects")
            }
            FreeListFault::Unmarked { index, entry } => {
                write!(f, "object {index} is neither free nor marked handed out (bufctl {entry})")
            }
        }
    }
}

#[cfg(test)]
mod tests;
