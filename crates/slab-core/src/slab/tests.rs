use super::*;

fn geometry(size: usize, align: usize, red_zoning: RedZoning) -> Geometry {
    Geometry::new(Layout::from_size_align(size, align).unwrap(), ObjectAlign::Word, red_zoning, 1).unwrap()
}

#[test]
fn cache_estimate_matches_the_kernel_loop() {
    // The kernel's loop, literally, against the closed form used here.
    for size in [8usize, 24, 64, 100, 192, 512, 1000, 3000, 4096, 9000] {
        for align in [8usize, 64] {
            for order in 0..4 {
                let wastage = page_size() << order;
                let base = std::mem::size_of::<Slab>();
                let aligned = |v: usize| (v + align - 1) & !(align - 1);
                let mut i = 0;
                while i * size + aligned(base + i * 4) <= wastage {
                    i += 1;
                }
                i = i.saturating_sub(1);
                let (num, left_over) = cache_estimate(order, size, align);
                assert_eq!(num as usize, i, "size {size} align {align} order {order}");
                if num > 0 {
                    assert_eq!(left_over, wastage - i * size - aligned(base + i * 4));
                }
            }
        }
    }
}

#[test]
fn slab_order_grows_until_fragmentation_is_acceptable() {
    // 64-byte objects fit a page with little waste: order 0.
    let small = geometry(64, 8, RedZoning::Plain);
    assert_eq!(small.gfporder, 0);
    assert_eq!(small.num as usize, (page_size() - 64) / 68);
    // A page-sized object with the descriptor on the slab: one in two pages would waste
    // half, so the slab grows past the break order to 8 pages holding 7.
    let page_object = geometry(page_size(), 8, RedZoning::Plain);
    assert_eq!(page_object.gfporder, ONSLAB_BREAK_GFP_ORDER);
    assert_eq!(page_object.num, 7);
    let (_, left_over) = cache_estimate(page_object.gfporder, page_object.buffer_size, 8);
    assert!(left_over * 8 <= page_object.slab_bytes, "at most 1/8 wasted");
    // With slab_break_gfp_order 0 (a small machine) the first order that holds an object wins.
    let (order, num, _) = calculate_slab_order(3000, 8, 0);
    assert_eq!((order, num), (0, 1));
    // With 1, 3000-byte objects leave too much over at orders 0 and 1 and take order 2.
    let (order, num, _) = calculate_slab_order(3000, 8, 1);
    assert_eq!((order, num), (2, 5));
    // Objects below PAGE_SIZE / 8 keep the kernel's break order.
    let (order, _, _) = calculate_slab_order(page_size() / 8 - 8, 8, 1);
    assert!(order <= 1);
    // Larger objects stop at the extended break even when the waste stays high.
    let (order, num, _) = calculate_slab_order(5 * page_size() / 2, 8, 1);
    assert!(order <= ONSLAB_BREAK_GFP_ORDER && num >= 1, "order {order} num {num}");
}

#[test]
fn colours_come_from_the_left_over_space() {
    let g = geometry(200, 8, RedZoning::Plain);
    let (_, left_over) = cache_estimate(g.gfporder, g.buffer_size, 8);
    assert_eq!(g.colour_off, CACHE_LINE);
    assert_eq!(g.colour as usize, left_over / CACHE_LINE);
    let wide = geometry(256, 128, RedZoning::Plain);
    assert_eq!(wide.colour_off, 128, "colour_off is at least the alignment");
}

#[test]
fn red_zones_widen_the_slot_and_keep_alignment() {
    let plain = geometry(24, 8, RedZoning::Plain);
    let zoned = geometry(24, 8, RedZoning::Zoned);
    assert_eq!(plain.buffer_size, 24);
    assert_eq!(zoned.buffer_size, 40);
    assert_eq!(zoned.obj_offset, 8);
    assert_eq!(zoned.redzone2_offset(), 32);
    let aligned = geometry(24, 64, RedZoning::Zoned);
    assert_eq!(aligned.obj_offset, 64);
    assert_eq!(aligned.buffer_size % 64, 0);
}

#[test]
fn impossible_layouts_are_refused_with_a_reason() {
    let too_aligned = Geometry::new(
        Layout::from_size_align(8, page_size() * 2).unwrap(),
        ObjectAlign::Word,
        RedZoning::Plain,
        1,
    );
    assert!(too_aligned.unwrap_err().contains("alignment"));
    let too_big = Geometry::new(
        Layout::from_size_align(page_size() << (MAX_GFP_ORDER + 1), 8).unwrap(),
        ObjectAlign::Word,
        RedZoning::Plain,
        1,
    );
    assert!(too_big.unwrap_err().contains("does not fit"));
}

/// A slab in a real block, freed at the end.
struct TestSlab {
    geometry: Geometry,
    slab: SlabPtr,
}

impl TestSlab {
    fn new(size: usize, colour: u32) -> Self {
        let geometry = geometry(size, 8, RedZoning::Plain);
        let block = crate::memory::map_aligned(geometry.slab_bytes).unwrap();
        // SAFETY: a fresh block of the right size and alignment.
        let slab = unsafe { SlabPtr::init(block, &geometry, 7, 1, colour) };
        Self { geometry, slab }
    }
}

impl Drop for TestSlab {
    fn drop(&mut self) {
        // SAFETY: the block is ours and no longer used.
        unsafe { crate::memory::unmap(self.slab.base(), self.geometry.slab_bytes) };
    }
}

#[test]
fn objects_come_out_in_order_and_go_back_lifo() {
    let t = TestSlab::new(64, 0);
    let (g, slab) = (&t.geometry, t.slab);
    // SAFETY: single-threaded test: we are the lock holder.
    unsafe {
        assert_eq!((slab.magic(), slab.cache_id(), slab.nodeid()), (SLAB_MAGIC, 7, 1));
        let first = slab.get_obj(g);
        let second = slab.get_obj(g);
        assert_eq!(first, slab.s_mem());
        assert_eq!(second as usize - first as usize, g.buffer_size);
        assert_eq!(slab.inuse(), 2);
        assert_eq!(SlabPtr::of(second, g.slab_bytes), Some(slab), "O(1) lookup by masking");
        assert!(slab.put_obj(g, first));
        assert!(!slab.put_obj(g, first), "a second put of the same object is refused");
        assert_eq!(slab.get_obj(g), first, "the free list is LIFO");
        let (mut seen, mut free) = (Vec::new(), Vec::new());
        slab.free_indices_into(g, &mut seen, &mut free).unwrap();
        assert_eq!(free.len(), g.num as usize - 2);
    }
}

#[test]
fn every_object_can_be_taken_and_the_slab_is_full() {
    let t = TestSlab::new(128, 0);
    let (g, slab) = (&t.geometry, t.slab);
    // SAFETY: single-threaded test.
    unsafe {
        let objects: Vec<_> = (0..g.num).map(|_| slab.get_obj(g)).collect();
        assert!(slab.is_full());
        assert!(objects.iter().all(|&o| o as usize + g.buffer_size <= slab.base() as usize + g.slab_bytes));
        let unique: std::collections::HashSet<_> = objects.iter().collect();
        assert_eq!(unique.len(), objects.len());
        objects.iter().for_each(|&o| assert!(slab.put_obj(g, o)));
        assert_eq!(slab.inuse(), 0);
    }
}

#[test]
fn colour_shifts_the_first_object() {
    let g = geometry(200, 8, RedZoning::Plain);
    assert!(g.colour >= 2, "200-byte objects leave room for colours");
    let plain = TestSlab::new(200, 0);
    let coloured = TestSlab::new(200, 1);
    // SAFETY: descriptors are mapped.
    unsafe {
        let shift = (coloured.slab.s_mem() as usize - coloured.slab.base() as usize)
            - (plain.slab.s_mem() as usize - plain.slab.base() as usize);
        assert_eq!(shift, g.colour_off);
    }
}

#[test]
fn obj_to_index_names_what_is_wrong() {
    let t = TestSlab::new(64, 0);
    // SAFETY: the descriptor is mapped.
    unsafe {
        let s_mem = t.slab.s_mem();
        assert_eq!(t.slab.obj_to_index(&t.geometry, s_mem.add(64)).unwrap(), 1);
        assert!(t
            .slab
            .obj_to_index(&t.geometry, s_mem.add(3))
            .unwrap_err()
            .to_string()
            .contains("into an object"));
        assert!(t.slab.obj_to_index(&t.geometry, t.slab.base()).unwrap_err().to_string().contains("header"));
    }
}

#[test]
fn lists_link_and_unlink_anywhere() {
    let slabs: Vec<TestSlab> = (0..3).map(|_| TestSlab::new(64, 0)).collect();
    let mut list = SlabList::new(ListKind::Partial);
    // SAFETY: single-threaded; slabs are live and detached.
    unsafe {
        list.push_back(slabs[0].slab);
        list.push_back(slabs[1].slab);
        list.push_front(slabs[2].slab);
        let order: Vec<_> = list.iter().collect();
        assert_eq!(order, vec![slabs[2].slab, slabs[0].slab, slabs[1].slab]);
        assert_eq!(slabs[0].slab.list(), ListKind::Partial);
        list.remove(slabs[0].slab);
        assert_eq!(list.iter().collect::<Vec<_>>(), vec![slabs[2].slab, slabs[1].slab]);
        assert_eq!(slabs[0].slab.list(), ListKind::Detached);
        assert_eq!((list.first(), list.last(), list.len()), (Some(slabs[2].slab), Some(slabs[1].slab), 2));
        list.remove(slabs[2].slab);
        list.remove(slabs[1].slab);
        assert!(list.is_empty() && list.first().is_none() && list.last().is_none());
        let mut chain = SlabChain::default();
        chain.push(slabs[0].slab);
        chain.push(slabs[1].slab);
        assert_eq!(chain.len(), 2);
        assert_eq!(chain.pop(), Some(slabs[1].slab));
        assert_eq!(chain.pop(), Some(slabs[0].slab));
        assert_eq!(chain.pop(), None);
    }
}

#[test]
fn reciprocal_division_is_exact_for_slab_offsets() {
    for d in [8usize, 24, 40, 56, 64, 72, 100, 192, 200, 4096, 4104, 65536, 1 << 21] {
        let m = reciprocal(d);
        let max = page_size() << MAX_GFP_ORDER;
        let mut n = 0;
        while n < max {
            for probe in [n, n + 1, n + d - 1, n + d] {
                assert_eq!(reciprocal_divide(probe, m), probe / d, "{probe} / {d}");
            }
            n += d * 7 + 3;
        }
    }
}

#[test]
fn hwcache_align_halves_the_cache_line_while_the_object_fits_in_half() {
    // kmem_cache_create: ralign = cache_line_size(); while (size <= ralign / 2) ralign /= 2;
    for (size, expected) in [(8, 8), (16, 16), (24, 32), (32, 32), (33, 64), (64, 64), (100, 64), (4096, 64)]
    {
        assert_eq!(hwcache_align(size), expected, "{size}-byte objects");
    }
    let hw = |size: usize, align: usize, red_zoning| {
        Geometry::new(Layout::from_size_align(size, align).unwrap(), ObjectAlign::HwCache, red_zoning, 1)
            .unwrap()
    };
    assert_eq!(hw(24, 8, RedZoning::Plain).buffer_size, 32, "24 bytes are padded to their alignment");
    assert_eq!(hw(8, 8, RedZoning::Plain).buffer_size, 8, "word-sized objects are not padded");
    assert_eq!(hw(40, 8, RedZoning::Plain).buffer_size, 64);
    assert_eq!(hw(64, 128, RedZoning::Plain).buffer_size, 128, "a larger requested alignment wins");
    assert_eq!(geometry(24, 8, RedZoning::Plain).buffer_size, 24, "without the flag, word alignment");
    let zoned = hw(64, 8, RedZoning::Zoned);
    assert_eq!((zoned.obj_offset, zoned.buffer_size), (64, 192), "red zones keep the object aligned");
}

#[test]
fn hwcache_aligned_objects_are_aligned_in_every_colour() {
    for (size, align) in [(64usize, 64usize), (32, 32), (200, 64), (24, 32)] {
        let geometry = Geometry::new(
            Layout::from_size_align(size, 8).unwrap(),
            ObjectAlign::HwCache,
            RedZoning::Plain,
            1,
        )
        .unwrap();
        let (num, left_over) = cache_estimate(geometry.gfporder, geometry.buffer_size, align);
        assert_eq!((geometry.num, geometry.colour as usize), (num, left_over / geometry.colour_off));
        assert_eq!(geometry.slab_size % align, 0, "{size}: the objects start aligned after the descriptor");
        for colour in 0..geometry.colour.max(1) {
            let block = crate::memory::map_aligned(geometry.slab_bytes).unwrap();
            // SAFETY: a fresh block of the right size and alignment; colour < geometry.colour.
            let slab = unsafe { SlabPtr::init(block, &geometry, 7, 0, colour) };
            // SAFETY: single-threaded test: we are the lock holder; the block is ours.
            unsafe {
                let objects: Vec<_> = (0..geometry.num).map(|_| slab.get_obj(&geometry)).collect();
                for &obj in &objects {
                    assert_eq!(obj as usize % align, 0, "{size}-byte object in colour {colour}");
                    assert!(
                        obj as usize + geometry.buffer_size <= slab.base() as usize + geometry.slab_bytes
                    );
                }
                crate::memory::unmap(slab.base(), geometry.slab_bytes);
            }
        }
    }
}
