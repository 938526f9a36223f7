//! kmalloc: the class ladder, direct mappings, realloc, usable_size, node targeting, the
//! debug-mode free, and a property test against a model.

use std::alloc::Layout;
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::Arc;

use proptest::prelude::*;
use topology::{FakeTopology, Topology};

use super::*;

fn kmalloc(checking: Checking) -> Kmalloc {
    let allocator = Allocator::new(Arc::new(FakeTopology::seed_box()));
    Kmalloc::new(&allocator, checking).unwrap()
}

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

#[test]
fn class_ladder_is_the_kernels_then_eight_per_doubling() {
    assert_eq!(KMALLOC_SIZES[..9], [8, 16, 32, 64, 96, 128, 192, 256, 288]);
    assert_eq!(KMALLOC_SIZES[KMALLOC_SIZES.len() - 2..], [30720, 32768]);
    let cases = [
        (1, 8, Some(8)),
        (8, 8, Some(8)),
        (9, 8, Some(16)),
        (24, 8, Some(32)),
        (65, 8, Some(96)),
        (96, 8, Some(96)),
        (97, 8, Some(128)),
        (129, 8, Some(192)),
        (193, 8, Some(256)),
        (257, 8, Some(288)),
        (512, 8, Some(512)),
        (513, 8, Some(576)),
        // A power of two and a header: sqlite's page buffers.
        (1032, 8, Some(1152)),
        (4104, 8, Some(4608)),
        (4097, 8, Some(4608)),
        (32768, 8, Some(32768)),
        (32769, 8, None),
        // Alignment moves up to a class aligned enough.
        (8, 16, Some(16)),
        (65, 64, Some(128)),
        (100, 64, Some(128)),
        (129, 64, Some(192)),
        (257, 64, Some(320)),
        (1100, 512, Some(1536)),
        (1, 4096, Some(4096)),
        (5000, 4096, Some(8192)),
        (8, 8192, None),
    ];
    for (size, align, class) in cases {
        assert_eq!(
            class_of(layout(size, align)).map(|index| KMALLOC_SIZES[index]),
            class,
            "{size} bytes, align {align}"
        );
    }
}

/// `class_of` against its definition, for every size and alignment it serves: the
/// smallest class at least as large whose objects are aligned enough.
#[test]
fn class_of_is_the_smallest_class_large_and_aligned_enough() {
    for align in [1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096] {
        for size in 1..=KMALLOC_MAX_CACHE_SIZE + 1 {
            let expected = (0..KMALLOC_SIZES.len())
                .find(|&index| KMALLOC_SIZES[index] >= size && class_align(index).min(page_size()) >= align);
            assert_eq!(class_of(layout(size, align)), expected, "{size} bytes, align {align}");
        }
    }
    for index in 0..KMALLOC_SIZES.len() {
        assert_eq!(KMALLOC_SIZES[index] % class_align(index), 0);
        if index > 0 {
            assert!(KMALLOC_SIZES[index] > KMALLOC_SIZES[index - 1]);
        }
    }
}

#[test]
fn every_class_holds_at_least_three_objects_in_one_slab_size() {
    let kmalloc = kmalloc(Checking::Trusting);
    for cache in kmalloc.caches() {
        let geometry = &cache.kmem().geometry;
        assert_eq!(geometry.slab_bytes, superblock_bytes(), "{}", cache.name());
        assert!(geometry.num >= 3, "{}: {} objects", cache.name(), geometry.num);
        assert_eq!(
            cache.object_size(),
            KMALLOC_SIZES[kmalloc.caches().iter().position(|c| Arc::ptr_eq(c, cache)).unwrap()]
        );
    }
    let names: Vec<&str> = kmalloc.caches().iter().map(|cache| cache.name()).collect();
    assert_eq!(names[..3], ["kmalloc-8", "kmalloc-16", "kmalloc-32"]);
    assert_eq!(names[8..10], ["kmalloc-288", "kmalloc-320"]);
    assert_eq!(names[names.len() - 2..], ["kmalloc-30k", "kmalloc-32k"]);
}

#[test]
fn a_second_ladder_in_one_allocator_is_refused() {
    let kmalloc = kmalloc(Checking::Trusting);
    let error = Kmalloc::new(kmalloc.allocator(), Checking::Trusting).unwrap_err();
    assert!(error.to_string().contains("kmalloc-8"), "{error}");
}

#[test]
fn large_requests_are_mapped_and_unmapped() {
    let kmalloc = kmalloc(Checking::Trusting);
    for (size, align) in [(40_000, 8), (1 << 20, 16), (100, 8192), (300_000, 1 << 18)] {
        let ptr = kmalloc.alloc(layout(size, align)).unwrap();
        assert_eq!(ptr.as_ptr() as usize % align, 0);
        // SAFETY: ptr is live.
        let usable = unsafe { kmalloc.usable_size(ptr) }.unwrap();
        assert!(usable >= size, "{usable} < {size}");
        // SAFETY: the mapping holds `usable` bytes.
        unsafe { ptr.as_ptr().write_bytes(0xa5, usable) };
        // SAFETY: ptr is live and ours.
        unsafe { kmalloc.free_unsized(ptr) }.unwrap();
        assert!(!large::is_mapped(ptr.as_ptr() as usize), "the memory went back to the OS");
    }
}

#[test]
fn realloc_stays_in_place_within_a_class() {
    let kmalloc = kmalloc(Checking::Trusting);
    let ptr = kmalloc.alloc(layout(70, 8)).unwrap();
    // SAFETY: 70 bytes are ours.
    unsafe { ptr.as_ptr().write_bytes(7, 70) };
    // SAFETY: ptr is live.
    let same = unsafe { kmalloc.realloc(ptr, layout(96, 8)) }.unwrap();
    assert_eq!(same, ptr, "70 and 96 bytes are both kmalloc-96");
    // SAFETY: ptr is live.
    let moved = unsafe { kmalloc.realloc(ptr, layout(200, 8)) }.unwrap();
    assert_ne!(moved, ptr);
    // SAFETY: the first 70 bytes were copied.
    assert!(unsafe { std::slice::from_raw_parts(moved.as_ptr(), 70) }.iter().all(|&b| b == 7));
    // SAFETY: moved is live.
    let large = unsafe { kmalloc.realloc(moved, layout(100_000, 8)) }.unwrap();
    // SAFETY: large is live.
    let grown = unsafe { kmalloc.realloc(large, layout(100_001, 8)) }.unwrap();
    assert_eq!(grown, large, "a direct mapping with room stays");
    // SAFETY: grown is live.
    assert!(unsafe { std::slice::from_raw_parts(grown.as_ptr(), 70) }.iter().all(|&b| b == 7));
    // SAFETY: grown is live.
    unsafe { kmalloc.free_unsized(grown) }.unwrap();
}

#[test]
fn node_targeted_allocations_land_on_their_node() {
    let kmalloc = kmalloc(Checking::Trusting);
    for node in [0, 1] {
        let ptr = kmalloc.alloc_node(layout(64, 8), node).unwrap();
        // SAFETY: ptr is live.
        assert_eq!(unsafe { kmalloc.node_of(ptr) }.unwrap(), Some(node));
        // SAFETY: ptr is live.
        unsafe { kmalloc.free(ptr, layout(64, 8)) }.unwrap();
    }
}

#[test]
fn debug_mode_reports_unknown_and_double_frees_without_writing() {
    let kmalloc = kmalloc(Checking::Debug);
    let mut local = [0u64; 4];
    let stack = NonNull::new(local.as_mut_ptr().cast::<u8>()).unwrap();
    // SAFETY: debug mode probes any pointer.
    let error = unsafe { kmalloc.free_unsized(stack) }.unwrap_err();
    assert!(matches!(error, Error::ForeignPointer { .. }), "{error}");
    assert_eq!(local, [0; 4]);
    let unmapped = NonNull::new(0x10_0000_0000usize as *mut u8).unwrap();
    // SAFETY: as above.
    assert!(unsafe { kmalloc.free_unsized(unmapped) }.is_err());
    let ptr = kmalloc.alloc(layout(32, 8)).unwrap();
    // SAFETY: ptr is live.
    unsafe { kmalloc.free_unsized(ptr) }.unwrap();
    // SAFETY: debug mode checks a second free.
    let error = unsafe { kmalloc.free_unsized(ptr) }.unwrap_err();
    assert!(matches!(error, Error::DoubleFree { .. }), "{error}");
    let inside = NonNull::new(kmalloc.alloc(layout(64, 8)).unwrap().as_ptr().wrapping_add(8)).unwrap();
    // SAFETY: as above.
    assert!(unsafe { kmalloc.free_unsized(inside) }.is_err(), "a pointer into an object");
}

/// Objects handed out and not freed, over every class.
fn in_use(kmalloc: &Kmalloc) -> usize {
    kmalloc.caches().iter().map(|cache| cache.stats().in_use).sum()
}

#[test]
fn a_debug_allocation_that_finds_a_write_after_free_reports_it_and_gives_memory() {
    let kmalloc = kmalloc(Checking::Debug);
    let ptr = kmalloc.alloc(layout(100, 8)).unwrap();
    // SAFETY: ptr is live.
    unsafe { kmalloc.free_unsized(ptr) }.unwrap();
    // A write after free: the class's next allocation takes this object and finds its
    // poison changed.
    // SAFETY: the freed object's memory stays mapped in its slab (a use-after-free the
    // debug cache is there to catch).
    unsafe { ptr.as_ptr().add(5).write(1) };
    let again = kmalloc.alloc(layout(100, 8)).expect("memory, not a false out-of-memory");
    assert_eq!(in_use(&kmalloc), 1);
    // SAFETY: again is live.
    unsafe { kmalloc.free_unsized(again) }.unwrap();
    assert_eq!(in_use(&kmalloc), 0);
    kmalloc.caches().iter().for_each(|cache| cache.validate().unwrap());
}

#[test]
fn a_debug_realloc_moves_an_overflowed_object_and_leaves_a_bad_pointer_alone() {
    let kmalloc = kmalloc(Checking::Debug);
    let ptr = kmalloc.alloc(layout(100, 8)).unwrap();
    // SAFETY: ptr is live.
    let usable = unsafe { kmalloc.usable_size(ptr) }.unwrap();
    // An overflow over the trailing red zone.
    // SAFETY: the red zone follows the object inside its slot.
    unsafe { ptr.as_ptr().write_bytes(7, usable + 8) };
    // SAFETY: ptr is live; the free inside realloc reports the overflow and frees it.
    let moved = unsafe { kmalloc.realloc(ptr, layout(1000, 8)) }.expect("the bytes move");
    // SAFETY: moved holds at least `usable` bytes, copied.
    assert!(unsafe { std::slice::from_raw_parts(moved.as_ptr(), usable) }.iter().all(|&b| b == 7));
    assert_eq!(in_use(&kmalloc), 1, "the overflowed object was freed, the new one is out");

    // A pointer freed already, realloc'd within its class: nothing moves, and it is
    // reported as a free would report it.
    let stale = kmalloc.alloc(layout(100, 8)).unwrap();
    // SAFETY: stale is live.
    unsafe { kmalloc.free_unsized(stale) }.unwrap();
    // SAFETY: debug mode checks the pointer.
    let error = unsafe { kmalloc.realloc(stale, layout(120, 8)) }.unwrap_err();
    assert!(matches!(error, Error::DoubleFree { .. }), "{error}");
    // A live one stays where it is.
    let live = kmalloc.alloc(layout(100, 8)).unwrap();
    // SAFETY: live is live.
    assert_eq!(unsafe { kmalloc.realloc(live, layout(120, 8)) }.unwrap(), live);
    // SAFETY: live is live.
    unsafe { kmalloc.free_unsized(live) }.unwrap();

    // A pointer freed already: realloc fails, and neither its copy nor the pointer stays.
    let freed = kmalloc.alloc(layout(100, 8)).unwrap();
    // SAFETY: freed is live.
    unsafe { kmalloc.free_unsized(freed) }.unwrap();
    // SAFETY: debug mode checks the pointer realloc frees.
    let error = unsafe { kmalloc.realloc(freed, layout(1000, 8)) }.unwrap_err();
    assert!(matches!(error, Error::DoubleFree { .. }) && error.is_bad_pointer(), "{error}");
    assert_eq!(in_use(&kmalloc), 1, "the copy realloc made is freed again");
    // SAFETY: moved is live.
    unsafe { kmalloc.free_unsized(moved) }.unwrap();
    assert_eq!(in_use(&kmalloc), 0);
}

#[test]
fn bootstrap_memory_is_freed_through_kmalloc() {
    let kmalloc = kmalloc(Checking::Debug);
    let ptr = NonNull::new(bootstrap_alloc(layout(100, 64))).unwrap();
    assert_eq!(ptr.as_ptr() as usize % 64, 0);
    // SAFETY: ptr is live.
    assert_eq!(unsafe { kmalloc.usable_size(ptr) }.unwrap(), 100);
    // SAFETY: ptr is live.
    let moved = unsafe { kmalloc.realloc(ptr, layout(300, 8)) }.unwrap();
    // SAFETY: moved is live.
    unsafe { kmalloc.free_unsized(moved) }.unwrap();
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Step {
    Alloc { size: usize, align_shift: u32, node: Option<NodeId> },
    Realloc { pick: usize, size: usize },
    Free { pick: usize },
}

fn step() -> impl Strategy<Value = Step> {
    let size = prop_oneof![1usize..=256, 257usize..=40_000, 40_001usize..=200_000];
    prop_oneof![
        4 => (size.clone(), 0u32..=13, prop::option::of(0u32..2))
            .prop_map(|(size, align_shift, node)| Step::Alloc { size, align_shift, node }),
        2 => (any::<usize>(), size).prop_map(|(pick, size)| Step::Realloc { pick, size }),
        2 => any::<usize>().prop_map(|pick| Step::Free { pick }),
    ]
}

fn fill(ptr: NonNull<u8>, len: usize, seed: u8) {
    // SAFETY: the caller's block holds len bytes.
    unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr(), len) }
        .iter_mut()
        .enumerate()
        .for_each(|(i, byte)| *byte = seed.wrapping_add(i as u8));
}

fn holds(ptr: NonNull<u8>, len: usize, seed: u8) -> bool {
    // SAFETY: the caller's block holds len bytes.
    unsafe { std::slice::from_raw_parts(ptr.as_ptr(), len) }
        .iter()
        .enumerate()
        .all(|(i, &byte)| byte == seed.wrapping_add(i as u8))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Against a model (a map of live blocks to their size, alignment and fill seed):
    /// every block is aligned, holds at least its size, keeps its contents across
    /// realloc, and never overlaps another live block.
    #[test]
    fn kmalloc_matches_its_model(steps in prop::collection::vec(step(), 1..60), debug in any::<bool>()) {
        let kmalloc = kmalloc(if debug { Checking::Debug } else { Checking::Trusting });
        let mut live: Vec<(NonNull<u8>, usize, usize, u8)> = Vec::new();
        for (n, step) in steps.into_iter().enumerate() {
            let seed = n as u8;
            match step {
                Step::Alloc { size, align_shift, node } => {
                    let layout = layout(size, 1 << align_shift);
                    let ptr = match node {
                        Some(node) => kmalloc.alloc_node(layout, node).unwrap(),
                        None => kmalloc.alloc(layout).unwrap(),
                    };
                    prop_assert_eq!(ptr.as_ptr() as usize % layout.align(), 0);
                    // SAFETY: ptr is live.
                    let usable = unsafe { kmalloc.usable_size(ptr) }.unwrap();
                    prop_assert!(usable >= size, "usable {} < {}", usable, size);
                    fill(ptr, size, seed);
                    live.push((ptr, size, layout.align(), seed));
                }
                Step::Realloc { pick, size } if !live.is_empty() => {
                    let index = pick % live.len();
                    let (ptr, old, align, old_seed) = live[index];
                    // SAFETY: ptr is live.
                    let fresh = unsafe { kmalloc.realloc(ptr, layout(size, align)) }.unwrap();
                    prop_assert_eq!(fresh.as_ptr() as usize % align, 0);
                    prop_assert!(holds(fresh, old.min(size), old_seed), "contents lost across realloc");
                    // SAFETY: fresh is live.
                    let usable = unsafe { kmalloc.usable_size(fresh) }.unwrap();
                    prop_assert!(usable >= size, "usable {} < {}", usable, size);
                    fill(fresh, size, seed);
                    live[index] = (fresh, size, align, seed);
                }
                Step::Free { pick } if !live.is_empty() => {
                    let (ptr, size, align, seed) = live.swap_remove(pick % live.len());
                    prop_assert!(holds(ptr, size, seed), "a block was overwritten");
                    // SAFETY: ptr is live.
                    unsafe { kmalloc.free(ptr, layout(size, align)) }.unwrap();
                }
                _ => {}
            }
        }
        let mut ends: HashMap<usize, usize> = HashMap::new();
        for &(ptr, size, _, seed) in &live {
            prop_assert!(holds(ptr, size, seed), "a block was overwritten");
            ends.insert(ptr.as_ptr() as usize, size);
        }
        let mut starts: Vec<_> = ends.into_iter().collect();
        starts.sort();
        for pair in starts.windows(2) {
            prop_assert!(pair[0].0 + pair[0].1 <= pair[1].0, "live blocks overlap");
        }
        for (ptr, _, _, _) in live {
            // SAFETY: ptr is live.
            unsafe { kmalloc.free_unsized(ptr) }.unwrap();
        }
        kmalloc.allocator().validate().unwrap();
    }
}

/// kmalloc on this machine in rseq mode, the calling thread bound to its first allowed
/// CPU (so that the CPU array a test fills is the one it reads back); None, saying why,
/// where rseq mode is not available.
fn rseq_kmalloc(test: &str, checking: Checking) -> Option<Kmalloc> {
    let live = topology::SysfsTopology::detect().expect("this machine's topology");
    let cpu = live.allowed_cpus().first().expect("an allowed cpu");
    live.bind_current_thread(cpu).expect("binding the test thread");
    let allocator = Allocator::with_fast_path(Arc::new(live), crate::FastPathMode::Rseq);
    if allocator.fast_path() != crate::FastPathMode::Rseq {
        eprintln!("{test}: skipped: this machine runs the CAS fallback (no rseq area or membarrier RSEQ)");
        return None;
    }
    Some(Kmalloc::new(&allocator, checking).unwrap())
}

#[test]
fn the_cached_paths_touch_only_the_cpus_array() {
    let Some(kmalloc) = rseq_kmalloc("the_cached_paths_touch_only_the_cpus_array", Checking::Trusting) else {
        return;
    };
    let small = layout(64, 8);
    let cache = &kmalloc.caches()[class_of(small).unwrap()];
    assert_eq!(kmalloc.alloc_cached(small), None, "a new cache's arrays are empty");
    assert_eq!(cache.stats().num_slabs, 0, "and finding that grew nothing");

    let object = kmalloc.alloc(small).unwrap();
    // SAFETY: `object` is a live allocation of `small`; the last call gives a layout of
    // another class, which the descriptor's cache id refuses before anything is written.
    unsafe {
        assert!(kmalloc.free_cached(object, Some(small)), "a local object goes onto the array");
        assert_eq!(kmalloc.alloc_cached(small), Some(object), "and comes back off its top");
        assert!(kmalloc.free_cached(object, None), "without a layout, the class is the descriptor's");
        assert_eq!(kmalloc.alloc_cached(small), Some(object));
        assert!(!kmalloc.free_cached(object, Some(layout(128, 8))), "another class's cache refuses it");
    }

    let big = layout(1 << 20, 8);
    let mapped = kmalloc.alloc(big).unwrap();
    // SAFETY: a live direct mapping of `big`.
    unsafe {
        assert!(!kmalloc.free_cached(mapped, Some(big)), "a direct mapping is left to the full path");
        assert!(!kmalloc.free_cached(mapped, None));
        kmalloc.free(mapped, big).unwrap();
        kmalloc.free(object, small).unwrap();
    }
    kmalloc.allocator().validate().unwrap();
}

#[test]
fn the_cached_paths_leave_every_debug_free_to_the_checks() {
    let test = "the_cached_paths_leave_every_debug_free_to_the_checks";
    let Some(kmalloc) = rseq_kmalloc(test, Checking::Debug) else { return };
    let small = layout(64, 8);
    let object = kmalloc.alloc(small).unwrap();
    // SAFETY: a live allocation of `small`.
    assert!(!unsafe { kmalloc.free_cached(object, Some(small)) }, "a debug free is always checked");
    assert_eq!(kmalloc.alloc_cached(small), None, "debug caches run no sequences");
    // SAFETY: as above.
    unsafe { kmalloc.free(object, small).unwrap() };
    // SAFETY: freed just now: debug mode reports the second free and writes nothing.
    assert!(unsafe { kmalloc.free(object, small) }.is_err());
    // A pointer whose header would lie in unmapped memory: reading it would fault.
    let unmapped = NonNull::new(0x10_0000_0040usize as *mut u8).unwrap();
    // SAFETY: debug mode reads nothing at a pointer before the checked path probes it.
    unsafe {
        assert!(!kmalloc.free_cached(unmapped, None));
        assert!(!kmalloc.free_cached(unmapped, Some(small)));
        assert!(kmalloc.free_unsized(unmapped).is_err());
    }
}

#[test]
fn a_failed_new_leaves_no_caches_behind_and_can_be_retried() {
    let allocator = Allocator::new(Arc::new(FakeTopology::seed_box()));
    let clash = allocator.create_cache("kmalloc-1k", layout(64, 8), CacheFlags::NONE).unwrap();
    let refused = Kmalloc::new(&allocator, Checking::Trusting).expect_err("a cache of that name exists");
    assert!(refused.to_string().contains("kmalloc-1k"), "{refused}");
    let names: Vec<_> = allocator.caches().iter().map(|cache| cache.name().to_owned()).collect();
    assert_eq!(names, ["kmalloc-1k"], "the classes created before the clash are gone");
    allocator.destroy_cache(&clash).unwrap();
    let kmalloc = Kmalloc::new(&allocator, Checking::Trusting).unwrap();
    assert_eq!(kmalloc.caches().len(), CLASSES);
    allocator.validate().unwrap();
}

#[test]
fn in_debug_mode_usable_size_and_node_of_refuse_a_pointer_into_an_object() {
    let kmalloc = kmalloc(Checking::Debug);
    let object = kmalloc.alloc(layout(64, 8)).unwrap();
    // SAFETY: debug mode checks every pointer before it reads the object.
    unsafe {
        assert_eq!(kmalloc.usable_size(object).unwrap(), 64);
        let inside = object.add(40);
        let refused = kmalloc.usable_size(inside).unwrap_err();
        assert!(matches!(refused, Error::NotAnObject { .. }), "{refused}");
        assert!(matches!(kmalloc.node_of(inside), Err(Error::NotAnObject { .. })));
        assert!(matches!(kmalloc.free_unsized(inside), Err(Error::NotAnObject { .. })));
        kmalloc.free(object, layout(64, 8)).unwrap();
    }
}

#[test]
fn owned_usable_size_takes_no_lock_in_debug_mode() {
    // What a forked child asks of its parent's retired caches, whose registry lock a
    // thread it does not have may hold: here this thread holds it for writing.
    let kmalloc = kmalloc(Checking::Debug);
    let object = kmalloc.alloc(layout(100, 8)).unwrap();
    let class = class_of(layout(100, 8)).unwrap();
    {
        let _held = kmalloc.allocator.registry.slabs.write();
        // SAFETY: a live object of this kmalloc.
        assert_eq!(unsafe { kmalloc.owned_usable_size(object) }, Some(kmalloc.caches()[class].object_size()));
    }
    // SAFETY: as above, freed once.
    unsafe { kmalloc.free(object, layout(100, 8)).unwrap() };
}
