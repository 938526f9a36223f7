//! Unit tests of the allocation and free paths, tuning, reaping, stats and debug mode.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::Arc;

use topology::{CpuState, FakeTopology};

use crate::{Allocator, CacheFlags, Error, DEFAULT_SHARED};

fn seed_box() -> (Arc<FakeTopology>, Arc<Allocator>) {
    let topology = Arc::new(FakeTopology::seed_box());
    let allocator = Allocator::new(topology.clone());
    (topology, allocator)
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

#[test]
fn new_prepares_every_online_cpu() {
    let (_, allocator) = seed_box();
    assert_eq!(allocator.prepared_cpus().iter().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    let cache = allocator.create_cache("c", layout(64), CacheFlags::NONE).unwrap();
    let stats = cache.stats();
    assert_eq!(stats.cpu_cached.len(), 4, "every prepared CPU has an array");
    assert!(stats.nodes.iter().all(|n| n.shared_avail == Some(0)), "both nodes have a shared array");
    assert_eq!((stats.limit, stats.batchcount, stats.sharedfactor), (120, 60, DEFAULT_SHARED));
}

#[test]
fn fast_path_is_lifo_per_cpu_and_local() {
    let (_, allocator) = seed_box();
    let cache = allocator.create_cache("c", layout(64), CacheFlags::NONE).unwrap();
    let a = cache.alloc_on(2).unwrap();
    assert_eq!(cache.node_of(a), Some(1), "CPU 2 is on node 1");
    assert_eq!(cache.cpu_cache_len(2), 15, "a cold refill takes BATCHREFILL_LIMIT objects, one handed out");
    // SAFETY: a is ours.
    unsafe { cache.free_on(2, a).unwrap() };
    assert_eq!(cache.cpu_cache_len(2), 16);
    assert_eq!(cache.alloc_on(2).unwrap(), a, "LIFO");
    // SAFETY: a is ours.
    unsafe { cache.free_on(2, a).unwrap() };
    cache.validate().unwrap();
}

#[test]
fn remote_frees_go_through_the_alien_cache_in_batches() {
    let (_, allocator) = seed_box();
    let cache = allocator.create_cache("c", layout(64), CacheFlags::NONE).unwrap();
    // With barns, an alien array is a sheaf: as large as a CPU array.
    let alien = cache.tunables().limit as usize;
    let objects: Vec<_> = (0..alien + 1).map(|_| cache.alloc_on(2).unwrap()).collect();
    for (i, &obj) in objects.iter().enumerate() {
        // SAFETY: ours, freed once, on CPU 0 of node 0.
        unsafe { cache.free_on(0, obj).unwrap() };
        let stats = cache.stats();
        // The alien cache holds `alien`; the next free hands it to node 1 first.
        assert_eq!(stats.alien_avail, if i < alien { i + 1 } else { 1 }, "after {} remote frees", i + 1);
        if i % 16 == 0 || i >= alien - 1 {
            cache.validate().unwrap();
        }
    }
    assert_eq!(cache.stats().in_use, 0);
}

#[test]
fn overflow_goes_to_the_barn_whole_then_to_the_slabs() {
    let (_, allocator) = seed_box();
    let cache = allocator.create_cache("c", layout(64), CacheFlags::NONE).unwrap();
    // One sheaf of 4 in each barn (shared * batchcount = 2 objects, rounded up).
    cache.tune(4, 2, 1).unwrap();
    let objects: Vec<_> = (0..10).map(|_| cache.alloc_on(0).unwrap()).collect();
    for &obj in &objects[..5] {
        // SAFETY: ours.
        unsafe { cache.free_on(0, obj).unwrap() };
    }
    let stats = cache.stats();
    assert_eq!(stats.in_cpu_caches(0), 1, "the full array went to the barn whole; the fifth is pushed");
    assert_eq!(stats.nodes[0].shared_avail, Some(4));
    assert_eq!((stats.nodes[0].barn_full_sheaves, stats.nodes[0].barn_empty_sheaves), (1, 0));
    let free_before = stats.nodes[0].free_objects;
    for &obj in &objects[5..] {
        // SAFETY: ours.
        unsafe { cache.free_on(0, obj).unwrap() };
    }
    let stats = cache.stats();
    assert_eq!(stats.in_cpu_caches(0), 4);
    assert_eq!(stats.nodes[0].shared_avail, Some(4), "no room in the barn");
    assert_eq!(stats.nodes[0].free_objects, free_before + 2, "a batch went to the slabs");
    assert_eq!(stats.in_use, 0);
    cache.validate().unwrap();
}

#[test]
fn refill_takes_a_full_sheaf_from_the_barn_whole() {
    let (_, allocator) = seed_box();
    let cache = allocator.create_cache("c", layout(64), CacheFlags::NONE).unwrap();
    // Two sheaves of 4 in each barn.
    cache.tune(4, 2, 4).unwrap();
    let objects: Vec<_> = (0..8).map(|_| cache.alloc_on(0).unwrap()).collect();
    for &o in &objects {
        // SAFETY: each object is ours and freed once.
        unsafe { cache.free_on(0, o).unwrap() };
    }
    let stats = cache.stats();
    assert_eq!(stats.nodes[0].shared_avail, Some(4));
    assert_eq!((stats.nodes[0].barn_full_sheaves, stats.nodes[0].barn_empty_sheaves), (1, 1));
    let free_before = stats.nodes[0].free_objects;
    // CPU 1 (same node) takes the full sheaf, all four objects at once.
    let got = cache.alloc_on(1).unwrap();
    assert!(objects[..4].contains(&got), "the array CPU 0 gave to the barn");
    let stats = cache.stats();
    assert_eq!(stats.in_cpu_caches(1), 3);
    assert_eq!(stats.nodes[0].shared_avail, Some(0));
    assert_eq!((stats.nodes[0].barn_full_sheaves, stats.nodes[0].barn_empty_sheaves), (0, 2));
    assert_eq!(stats.nodes[0].free_objects, free_before, "the slabs were not touched");
    // SAFETY: ours.
    unsafe { cache.free_on(1, got).unwrap() };
    cache.validate().unwrap();
}

#[test]
fn a_full_alien_cache_reaches_its_owners_barn_whole_and_the_owner_reuses_it() {
    let (_, allocator) = seed_box();
    let cache = allocator.create_cache("c", layout(64), CacheFlags::NONE).unwrap();
    let alien = cache.tunables().limit as usize;
    let sheaves = {
        let node = &cache.stats().nodes[1];
        node.barn_full_sheaves + node.barn_empty_sheaves
    };
    assert!(sheaves > 0, "node 1 has a barn");
    // One sheaf's worth per empty sheaf of node 1's barn, then one more and one object.
    let objects: Vec<_> = (0..(sheaves + 1) * alien + 1).map(|_| cache.alloc_on(2).unwrap()).collect();
    let free_before = cache.stats().nodes[1].free_objects;
    for &obj in &objects[..sheaves * alien + 1] {
        // SAFETY: ours, freed once, on CPU 0 of node 0.
        unsafe { cache.free_on(0, obj).unwrap() };
    }
    let stats = cache.stats();
    assert_eq!(
        stats.nodes[1].shared_avail,
        Some(sheaves * alien),
        "each full alien cache went to the barn whole"
    );
    assert_eq!((stats.nodes[1].barn_full_sheaves, stats.nodes[1].barn_empty_sheaves), (sheaves, 0));
    assert_eq!(stats.nodes[1].remote_avail, 0);
    assert_eq!(stats.nodes[1].free_objects, free_before, "node 1's slabs were not touched");
    assert_eq!(stats.alien_avail, 1);
    cache.validate().unwrap();
    // The barn has no empty sheaf left: the next full alien cache goes to node 1's queue.
    for &obj in &objects[sheaves * alien + 1..] {
        // SAFETY: as above.
        unsafe { cache.free_on(0, obj).unwrap() };
    }
    let stats = cache.stats();
    assert_eq!(stats.nodes[1].remote_avail, alien, "handed over whole, without the owner's lock");
    assert_eq!(stats.nodes[1].free_objects, free_before);
    assert_eq!(stats.in_use, 0);
    cache.validate().unwrap();
    // CPU 3's first refill (its array is empty) takes the queue into its array.
    let got = cache.alloc_on(3).unwrap();
    assert!(objects.contains(&got));
    let stats = cache.stats();
    assert_eq!(stats.nodes[1].remote_avail, 0);
    assert_eq!(stats.in_cpu_caches(3), alien - 1);
    // CPU 3's next refill takes a full sheaf from the barn.
    let taken: Vec<_> = (0..alien).map(|_| cache.alloc_on(3).unwrap()).collect();
    let stats = cache.stats();
    assert_eq!(stats.nodes[1].barn_full_sheaves, sheaves - 1);
    assert_eq!(stats.in_cpu_caches(3), alien - 1);
    assert_eq!(stats.nodes[1].free_objects, free_before, "still no object through the slabs");
    for obj in taken.into_iter().chain([got]) {
        // SAFETY: ours.
        unsafe { cache.free_on(3, obj).unwrap() };
    }
    cache.validate().unwrap();
}

#[test]
fn remote_frees_of_a_node_without_cpus_are_drained_by_allocation_reap_and_shrink() {
    let (_, allocator) = seed_box();
    let cache = allocator.create_cache("c", layout(64), CacheFlags::NONE).unwrap();
    let hand_over = |count: usize| {
        let objects: Vec<_> = (0..count).map(|_| cache.alloc_node(1).unwrap()).collect();
        for &obj in &objects {
            // SAFETY: ours, freed once, on CPU 0 of node 0.
            unsafe { cache.free_on(0, obj).unwrap() };
        }
    };
    let alien = cache.tunables().limit as usize;
    allocator.cpu_dead(2);
    allocator.cpu_dead(3);
    // Alien overflow with no CPU on the owner node (so no barn): the batch waits in node
    // 1's queue.
    hand_over(alien + 1);
    assert_eq!(cache.stats().nodes[1].remote_avail, alien);
    cache.validate().unwrap();
    // The next allocation on node 1 drains it to the slabs.
    let obj = cache.alloc_node(1).unwrap();
    assert_eq!(cache.stats().nodes[1].remote_avail, 0);
    // SAFETY: ours.
    unsafe { cache.free_on(0, obj).unwrap() };
    hand_over(alien);
    assert_eq!(cache.stats().nodes[1].remote_avail, alien);
    allocator.reap();
    assert_eq!(cache.stats().nodes[1].remote_avail, 0, "the reaper drains it");
    hand_over(2 * alien);
    assert!(cache.stats().nodes[1].remote_avail > 0);
    cache.shrink();
    let stats = cache.stats();
    assert_eq!(stats.nodes[1].remote_avail, 0, "shrink drains it");
    assert_eq!(stats.nodes[1].active_objs, 0, "and every object reached its slab");
    cache.validate().unwrap();
    // Shrink emptied the alien cache too: `alien` fill it, the next hands it over.
    hand_over(alien + 1);
    assert_eq!(cache.stats().nodes[1].remote_avail, alien);
    allocator.destroy_cache(&cache).expect("destroy after remote frees drains the queues first");
}

#[test]
fn alloc_node_targets_a_node_and_falls_back_for_memoryless_nodes() {
    let topology = Arc::new(
        FakeTopology::builder()
            .nodes(3)
            .cpus_per_node(1)
            .memoryless_node(2)
            .distance(2, 1, 15)
            .build()
            .unwrap(),
    );
    let allocator = Allocator::new(topology);
    let cache = allocator.create_cache("c", layout(32), CacheFlags::NONE).unwrap();
    let on1 = cache.alloc_node(1).unwrap();
    assert_eq!(cache.node_of(on1), Some(1));
    let on2 = cache.alloc_node(2).unwrap();
    assert_eq!(cache.node_of(on2), Some(1), "node 2 has no memory; node 1 is nearest");
    let from_cpu2 = cache.alloc_on(2).unwrap();
    assert_eq!(cache.node_of(from_cpu2), Some(1), "CPUs of a memory-less node allocate from the nearest");
    assert!(matches!(cache.alloc_node(9), Err(Error::UnknownNode { node: 9, .. })));
    for obj in [on1, on2, from_cpu2] {
        // SAFETY: ours.
        unsafe { cache.free_on(0, obj).unwrap() };
    }
    cache.validate().unwrap();
    assert_eq!(cache.stats().in_use, 0);
}

#[test]
fn detached_and_unknown_cpus_use_the_slow_path() {
    let (_, allocator) = seed_box();
    let cache = allocator.create_cache("c", layout(64), CacheFlags::NONE).unwrap();
    allocator.cpu_dead(3);
    assert_eq!(cache.cpu_cache_len(3), 0);
    let obj = cache.alloc_on(3).unwrap();
    assert_eq!(cache.node_of(obj), Some(1));
    // SAFETY: ours.
    unsafe { cache.free_on(3, obj).unwrap() };
    let far = cache.alloc_on(999).unwrap();
    // SAFETY: ours.
    unsafe { cache.free_on(999, far).unwrap() };
    assert_eq!(cache.cpu_cache_len(3), 0, "no array appears for a dead CPU");
    cache.validate().unwrap();
    assert_eq!(cache.stats().in_use, 0);
}

#[test]
fn a_held_cpu_slot_sends_others_to_the_slow_path() {
    let (_, allocator) = seed_box();
    let cache = allocator.create_cache("c", layout(64), CacheFlags::NONE).unwrap();
    let slot = &cache.kmem().array[0];
    let guard = slot.try_lock().unwrap();
    let obj = cache.alloc_on(0).unwrap();
    // SAFETY: ours.
    unsafe { cache.free_on(0, obj).unwrap() };
    drop(guard);
    assert_eq!(cache.cpu_cache_len(0), 0, "nothing went through the held array");
    cache.validate().unwrap();
}

#[test]
fn tune_refuses_invalid_values_and_applies_valid_ones() {
    let (_, allocator) = seed_box();
    let cache = allocator.create_cache("c", layout(64), CacheFlags::NONE).unwrap();
    let held: Vec<_> = (0..5).map(|_| cache.alloc_on(0).unwrap()).collect();
    assert!(matches!(cache.tune(0, 1, 0), Err(Error::InvalidTunables { .. })));
    assert!(matches!(cache.tune(4, 8, 0), Err(Error::InvalidTunables { .. })));
    cache.tune(16, 4, 0).unwrap();
    let t = cache.tunables();
    assert_eq!((t.limit, t.batchcount, t.shared), (16, 4, 0));
    let stats = cache.stats();
    assert!(stats.nodes.iter().all(|n| n.shared_avail.is_none()), "shared 0 removes the shared arrays");
    assert!(allocator.slabinfo().contains("tunables   16    4    0"), "{}", allocator.slabinfo());
    for &o in &held {
        // SAFETY: each object is ours and freed once.
        unsafe { cache.free_on(0, o).unwrap() };
    }
    cache.validate().unwrap();
}

#[test]
fn shrink_returns_free_slabs_and_reap_trims_untouched_arrays() {
    let (_, allocator) = seed_box();
    let cache = allocator.create_cache("c", layout(512), CacheFlags::NONE).unwrap();
    let objects: Vec<_> = (0..200).map(|_| cache.alloc_on(0).unwrap()).collect();
    for &o in &objects {
        // SAFETY: each object is ours and freed once.
        unsafe { cache.free_on(0, o).unwrap() };
    }
    let before = cache.stats().in_cpu_caches(0);
    assert!(before > 0);
    allocator.reap();
    assert_eq!(cache.stats().in_cpu_caches(0), before, "a touched array is spared once");
    allocator.reap();
    assert!(cache.stats().in_cpu_caches(0) < before, "then trimmed");
    let released = cache.shrink();
    assert!(released > 0);
    let stats = cache.stats();
    assert_eq!((stats.num_slabs, stats.in_all_cpu_caches()), (0, 0));
    cache.validate().unwrap();
}

#[test]
fn destroy_refuses_while_objects_are_out_and_keeps_working() {
    let (_, allocator) = seed_box();
    let cache = allocator.create_cache("c", layout(64), CacheFlags::NONE).unwrap();
    let obj = cache.alloc_on(1).unwrap();
    match allocator.destroy_cache(&cache) {
        Err(Error::ObjectsInUse { cache, count }) => assert_eq!((cache.as_str(), count), ("c", 1)),
        other => panic!("expected ObjectsInUse, got {other:?}"),
    }
    let again = cache.alloc_on(1).unwrap();
    assert!(cache.cpu_cache_len(1) > 0, "arrays are back after the refused destroy");
    // SAFETY: ours.
    unsafe {
        cache.free_on(1, obj).unwrap();
        cache.free_on(2, again).unwrap();
    }
    cache.validate().unwrap();
    allocator.destroy_cache(&cache).unwrap();
    assert!(allocator.caches().is_empty());
    assert!(matches!(cache.alloc_on(0), Err(Error::CacheDestroyed { .. })));
    assert!(matches!(allocator.destroy_cache(&cache), Err(Error::CacheDestroyed { .. })));
    let (_, other) = seed_box();
    let theirs = other.create_cache("theirs", layout(64), CacheFlags::NONE).unwrap();
    assert!(matches!(allocator.destroy_cache(&theirs), Err(Error::NotInChain { .. })));
}

#[test]
fn names_are_checked() {
    let (_, allocator) = seed_box();
    allocator.create_cache("dup", layout(8), CacheFlags::NONE).unwrap();
    for bad in ["", "dup", "two words", &"x".repeat(65)] {
        assert!(
            matches!(
                allocator.create_cache(bad, layout(8), CacheFlags::NONE),
                Err(Error::InvalidName { .. })
            ),
            "{bad:?}"
        );
    }
    let too_big = allocator.create_cache("big", layout(64 << 20), CacheFlags::NONE);
    assert!(matches!(too_big, Err(Error::InvalidLayout { .. })));
}

#[test]
fn slabinfo_has_the_2_1_format() {
    let (_, allocator) = seed_box();
    let cache = allocator.create_cache("kmalloc-64", layout(64), CacheFlags::NONE).unwrap();
    let obj = cache.alloc_on(0).unwrap();
    let text = allocator.slabinfo();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("slabinfo - version: 2.1"));
    assert!(lines.next().unwrap().starts_with("# name            <active_objs> <num_objs> <objsize>"));
    let line = lines.next().unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let stats = cache.stats();
    assert_eq!(fields[0], "kmalloc-64");
    assert_eq!(fields[1].parse::<usize>().unwrap(), stats.active_objs);
    assert_eq!(fields[3], "64");
    assert_eq!(fields[5], "1");
    assert_eq!(&fields[6..8], &[":", "tunables"]);
    assert_eq!(&fields[11..13], &[":", "slabdata"]);
    assert_eq!(fields[13].parse::<usize>().unwrap(), 1, "one active slab");
    // SAFETY: ours.
    unsafe { cache.free_on(0, obj).unwrap() };
}

#[test]
fn typed_handles_free_on_drop() {
    let (_, allocator) = seed_box();
    let typed = allocator.create_typed::<[u64; 4]>("typed", CacheFlags::DEBUG).unwrap();
    let mut handle = typed.alloc([1, 2, 3, 4]).unwrap();
    handle[0] = 9;
    assert_eq!(*handle, [9, 2, 3, 4]);
    let raw = handle.into_raw();
    assert_eq!(typed.cache().stats().in_use, 1);
    // SAFETY: raw came from into_raw of this cache.
    let back = unsafe { crate::Handle::from_raw(&typed, raw) };
    drop(back);
    assert_eq!(typed.cache().stats().in_use, 0);
    let on_node = typed.alloc_node(1, [0; 4]).unwrap();
    assert_eq!(typed.cache().node_of(NonNull::from(&*on_node).cast()), Some(1));
    drop(on_node);
    typed.cache().validate().unwrap();
}

#[test]
fn debug_mode_reports_misuse_and_keeps_working() {
    let (_, allocator) = seed_box();
    let cache = allocator.create_cache("dbg", layout(40), CacheFlags::DEBUG).unwrap();
    let other = allocator.create_cache("other", layout(40), CacheFlags::DEBUG).unwrap();
    let obj = cache.alloc_on(0).unwrap();
    // SAFETY: debug mode checks every pointer.
    unsafe {
        cache.free_on(0, obj).unwrap();
        assert!(matches!(cache.free_on(0, obj), Err(Error::DoubleFree { .. })));
        let theirs = other.alloc_on(0).unwrap();
        match cache.free_on(0, theirs) {
            Err(Error::WrongCache { owner, .. }) => assert_eq!(owner, "other"),
            e => panic!("expected WrongCache, got {e:?}"),
        }
        let mut local = 0u64;
        assert!(matches!(
            cache.free_on(0, NonNull::from(&mut local).cast()),
            Err(Error::ForeignPointer { .. })
        ));
        let inside = cache.alloc_on(0).unwrap();
        assert!(matches!(cache.free_on(0, inside.add(8)), Err(Error::NotAnObject { .. })));
        // Overflow: the trailing red zone is caught at free, and the object is freed.
        inside.as_ptr().add(40).write(0);
        assert!(matches!(
            cache.free_on(0, inside),
            Err(Error::RedZone { side: crate::RedZoneSide::After, .. })
        ));
        // Write after free: caught when the object is handed out again.
        let victim = cache.alloc_on(1).unwrap();
        cache.free_on(1, victim).unwrap();
        victim.as_ptr().write(1);
        assert!(matches!(cache.validate(), Err(Error::Poisoned { .. })));
        assert!(matches!(cache.alloc_on(1), Err(Error::Poisoned { offset: 0, found: 1, .. })));
        let fine = cache.alloc_on(1).unwrap();
        assert_eq!(fine, victim, "repainted and handed out again");
        assert_eq!(fine.as_ptr().read(), crate::debug::POISON_INUSE);
        cache.free_on(1, fine).unwrap();
        other.free_on(0, theirs).unwrap();
    }
    cache.validate().unwrap();
    other.validate().unwrap();
    assert_eq!(cache.stats().in_use, 0);
}

#[test]
fn dropping_the_last_cache_handle_with_objects_out_keeps_them_valid() {
    let (_, allocator) = seed_box();
    let typed = allocator.create_typed::<u64>("leaky", CacheFlags::NONE).unwrap();
    let handle = typed.alloc(7).unwrap();
    drop(typed);
    drop(allocator);
    assert_eq!(*handle, 7);
    drop(handle);
}

#[test]
fn the_reaper_runs_and_stops() {
    let (topology, allocator) = seed_box();
    let cache = allocator.create_cache("reaped", layout(64), CacheFlags::NONE).unwrap();
    let objects: Vec<_> = (0..100).map(|_| cache.alloc_on(0).unwrap()).collect();
    for &o in &objects {
        // SAFETY: each object is ours and freed once.
        unsafe { cache.free_on(0, o).unwrap() };
    }
    let before = cache.cpu_cache_len(0);
    allocator.start_reaper(std::time::Duration::from_millis(5));
    assert!(allocator.reaper_running());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while cache.cpu_cache_len(0) >= before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(cache.cpu_cache_len(0) < before, "the background reaper trimmed CPU 0's array");
    allocator.stop_reaper();
    assert!(!allocator.reaper_running());
    let _ = topology.set_online(1, CpuState::Offline);
    cache.validate().unwrap();
}

/// Allocates `count` objects on `cpu` and frees them all there.
fn churn(cache: &crate::Cache, cpu: u32, count: usize) {
    let objects: Vec<_> = (0..count).map(|_| cache.alloc_on(cpu).unwrap()).collect();
    for &o in &objects {
        // SAFETY: each object is ours and freed once.
        unsafe { cache.free_on(cpu, o).unwrap() };
    }
}

#[test]
fn freed_slabs_wait_in_the_node_page_cache_and_serve_the_next_growth() {
    let (_, allocator) = seed_box();
    let cache = allocator.create_cache("c", layout(64), CacheFlags::NONE).unwrap();
    churn(&cache, 0, 3000);
    let stats = cache.stats();
    assert!(stats.nodes[0].released > 0, "slabs beyond free_limit left the cache");
    let cached = allocator.pages.figures(0);
    assert_eq!(cached.blocks as u64, stats.nodes[0].released, "every released slab's block is cached");
    let slab_bytes = stats.pagesperslab * crate::memory::page_size();
    assert_eq!(allocator.page_cache_bytes(0), cached.blocks * slab_bytes);
    assert_eq!(allocator.page_cache_bytes(1), 0, "node 1 freed nothing");
    cache.validate().unwrap();

    churn(&cache, 0, 3000);
    let again = allocator.pages.figures(0);
    assert!(again.reused >= cached.blocks as u64, "the second round grew from the cache: {again:?}");
    assert_eq!(again.released, 0, "no block went to the OS while churning within the bound");
    assert_eq!(allocator.pages.figures(1).reused, 0);
    cache.validate().unwrap();
}

#[test]
fn cached_blocks_stay_bound_to_their_node() {
    let (_, allocator) = seed_box();
    let cache = allocator.create_cache("c", layout(64), CacheFlags::NONE).unwrap();
    churn(&cache, 2, 3000);
    let node1 = allocator.pages.figures(1);
    assert!(node1.blocks > 0);
    churn(&cache, 0, 3000);
    assert_eq!(allocator.pages.figures(1), node1, "node 0's growth never takes node 1's blocks");
    assert_eq!(allocator.pages.figures(0).reused, 0);
    // Every slab on node 1's lists is a slab of node 1: validate checks it.
    churn(&cache, 3, 3000);
    assert!(allocator.pages.figures(1).reused > 0);
    cache.validate().unwrap();
}

#[test]
fn the_page_cache_is_bounded_and_trimmed_by_the_reaper() {
    let (_, allocator) = seed_box();
    let cache = allocator.create_cache("c", layout(4096), CacheFlags::NONE).unwrap();
    // 12 MiB of objects, three times the bound.
    churn(&cache, 0, 3072);
    let cached = allocator.pages.figures(0);
    assert!(cached.bytes <= crate::pages::NODE_CACHE_BYTES, "{cached:?}");
    assert!(cached.released > 0, "blocks over the bound went to the OS");
    // Nothing took from the page cache since it filled: the first pass halves it (while
    // the cache's own reap may add a few free slabs to it).
    let full = allocator.page_cache_bytes(0);
    allocator.reap();
    let halved = allocator.page_cache_bytes(0);
    assert!(halved <= full.div_ceil(2) + 4 * 32768, "the first pass halves it: {full} -> {halved}");
    assert!(halved < full);
    let mut passes = 1;
    while allocator.page_cache_bytes(0) > 0 {
        allocator.reap();
        passes += 1;
        assert!(passes < 60, "the reaper never emptied the cache");
    }
    cache.validate().unwrap();
}

#[test]
fn shrink_and_destroy_return_cached_blocks_to_the_os() {
    let (_, allocator) = seed_box();
    let cache = allocator.create_cache("c", layout(64), CacheFlags::NONE).unwrap();
    churn(&cache, 0, 3000);
    churn(&cache, 2, 3000);
    assert!(allocator.page_cache_bytes(0) > 0 && allocator.page_cache_bytes(1) > 0);
    let slabs = cache.stats().num_slabs;
    assert_eq!(cache.shrink(), slabs, "shrink counts every slab it freed");
    assert_eq!((allocator.page_cache_bytes(0), allocator.page_cache_bytes(1)), (0, 0));
    assert_eq!(cache.stats().num_slabs, 0);

    churn(&cache, 1, 3000);
    assert!(allocator.page_cache_bytes(0) > 0);
    allocator.destroy_cache(&cache).unwrap();
    assert_eq!(allocator.page_cache_bytes(0), 0);
    assert_eq!(allocator.page_cache_bytes(9), 0, "an unknown node has nothing");
}

#[test]
fn page_sized_objects_take_seven_in_eight_pages_and_keep_the_o1_lookup() {
    let (_, allocator) = seed_box();
    let cache = allocator.create_cache("c", layout(4096), CacheFlags::NONE).unwrap();
    let stats = cache.stats();
    assert_eq!((stats.objperslab, stats.pagesperslab), (7, 8));
    let objects: Vec<_> = (0..15).map(|_| cache.alloc_on(2).unwrap()).collect();
    for &o in &objects {
        assert_eq!(cache.node_of(o), Some(1));
        let offset = o.as_ptr() as usize & (8 * crate::memory::page_size() - 1);
        assert!(offset > 0, "no object lies at the slab's start, where its descriptor is");
    }
    for &o in &objects {
        // SAFETY: ours, freed once, remotely on CPU 0 for half of them.
        unsafe { cache.free_on(if o.as_ptr() as usize % 3 == 0 { 0 } else { 2 }, o).unwrap() };
    }
    cache.validate().unwrap();
}

#[test]
fn hwcache_align_places_every_object_on_its_alignment() {
    let (_, allocator) = seed_box();
    for (size, align) in [(64usize, 64usize), (32, 32)] {
        let flags = CacheFlags::HWCACHE_ALIGN;
        let cache = allocator.create_cache(&format!("hw-{size}"), layout(size), flags).unwrap();
        assert!(cache.flags().contains(CacheFlags::HWCACHE_ALIGN));
        // Enough objects for several slabs, so that several colours are used, on both nodes.
        let objects: Vec<_> =
            (0..2000).map(|i| cache.alloc_on(if i % 2 == 0 { 0 } else { 2 }).unwrap()).collect();
        assert!(cache.stats().active_slabs > 2);
        for obj in &objects {
            assert_eq!(obj.as_ptr() as usize % align, 0, "{size}-byte object at {obj:p}");
        }
        for obj in objects {
            // SAFETY: each object is ours and freed once.
            unsafe { cache.free_on(0, obj).unwrap() };
        }
        cache.validate().unwrap();
    }
    // Without the flag a 24-byte object takes 24 bytes; with it, 32 (slabinfo's objsize).
    let packed = allocator.create_cache("packed-24", layout(24), CacheFlags::NONE).unwrap();
    let aligned = allocator.create_cache("aligned-24", layout(24), CacheFlags::HWCACHE_ALIGN).unwrap();
    assert_eq!((packed.stats().objsize, aligned.stats().objsize), (24, 32));
    assert!(allocator.slabinfo().lines().any(|line| line.starts_with("aligned-24") && line.contains(" 32 ")));
}

#[test]
fn typed_caches_are_cache_line_aligned() {
    let (_, allocator) = seed_box();
    let line = allocator.create_typed::<[u64; 8]>("typed-64", CacheFlags::NONE).unwrap();
    let half = allocator.create_typed::<[u64; 4]>("typed-32", CacheFlags::NONE).unwrap();
    assert!(line.cache().flags().contains(CacheFlags::HWCACHE_ALIGN));
    let lines: Vec<_> = (0..1000).map(|i| line.alloc([i; 8]).unwrap()).collect();
    let halves: Vec<_> = (0..1000).map(|i| half.alloc([i; 4]).unwrap()).collect();
    assert!(lines.iter().all(|h| (&**h as *const [u64; 8] as usize) % 64 == 0));
    assert!(halves.iter().all(|h| (&**h as *const [u64; 4] as usize) % 32 == 0));
    assert_eq!((line.cache().stats().objsize, half.cache().stats().objsize), (64, 32));
}

#[test]
fn frees_into_a_node_without_a_barn_reach_the_slabs() {
    // The kernel's "free into a node with no shared array": shared 0 leaves every barn
    // detached, and a full array flushes a batch to the slabs.
    let (_, allocator) = seed_box();
    let cache = allocator.create_cache("c", layout(64), CacheFlags::NONE).unwrap();
    cache.tune(4, 2, 0).unwrap();
    assert!(cache.stats().nodes.iter().all(|node| node.shared_avail.is_none()), "no barn anywhere");
    let local: Vec<_> = (0..10).map(|_| cache.alloc_on(0).unwrap()).collect();
    let remote: Vec<_> = (0..30).map(|_| cache.alloc_on(2).unwrap()).collect();
    for &obj in local.iter().chain(&remote) {
        // SAFETY: ours, freed once each, on CPU 0 (node 0): node 1's objects are remote.
        unsafe { cache.free_on(0, obj).unwrap() };
    }
    let stats = cache.stats();
    assert_eq!(stats.in_cpu_caches(0), 4, "the array flushed batches to the slabs");
    assert_eq!(stats.shared_avail, 0);
    assert!(stats.nodes[1].remote_avail > 0, "remote frees queue without a barn");
    assert_eq!(stats.in_use, 0);
    cache.validate().unwrap();
    // A refill on node 1 takes the queue into its CPU array: no barn is needed for that.
    let obj = cache.alloc_on(3).unwrap();
    assert!(remote.contains(&obj));
    assert_eq!(cache.stats().nodes[1].remote_avail, 0);
    // SAFETY: ours.
    unsafe { cache.free_on(3, obj).unwrap() };
    cache.validate().unwrap();
}

#[test]
fn a_debug_cache_hands_full_alien_caches_to_the_barn_and_else_frees_them_under_the_owners_lock() {
    let (_, allocator) = seed_box();
    let cache = allocator.create_cache("c", layout(64), CacheFlags::DEBUG).unwrap();
    // One sheaf of 4 per barn, alien arrays of 4.
    cache.tune(4, 2, 1).unwrap();
    let objects: Vec<_> = (0..9).map(|_| cache.alloc_on(2).unwrap()).collect();
    let free_before = cache.stats().nodes[1].free_objects;
    for &obj in &objects[..5] {
        // SAFETY: ours, freed once each, on CPU 0 of node 0.
        unsafe { cache.free_on(0, obj).unwrap() };
    }
    let stats = cache.stats();
    assert_eq!(stats.nodes[1].shared_avail, Some(4), "the full alien cache went to the barn whole");
    assert_eq!(stats.alien_avail, 1);
    cache.validate().unwrap();
    for &obj in &objects[5..] {
        // SAFETY: as above.
        unsafe { cache.free_on(0, obj).unwrap() };
    }
    let stats = cache.stats();
    assert_eq!(stats.nodes[1].remote_avail, 0, "poisoned objects get no link written");
    assert_eq!(stats.nodes[1].free_objects, free_before + 4, "the barn was full: to the slabs");
    assert_eq!(stats.alien_avail, 1);
    cache.validate().unwrap();
}

#[test]
fn the_reaper_trims_an_untouched_barn_and_spares_a_touched_one_once() {
    let (_, allocator) = seed_box();
    let cache = allocator.create_cache("c", layout(64), CacheFlags::NONE).unwrap();
    // Four sheaves of 4 per barn (shared * batchcount = 16 objects).
    cache.tune(4, 2, 8).unwrap();
    let objects: Vec<_> = (0..20).map(|_| cache.alloc_on(0).unwrap()).collect();
    for &obj in &objects {
        // SAFETY: ours, freed once each.
        unsafe { cache.free_on(0, obj).unwrap() };
    }
    let barn = |cache: &crate::Cache| {
        let node = &cache.stats().nodes[0];
        (node.shared_avail, node.barn_full_sheaves, node.barn_empty_sheaves)
    };
    assert_eq!(barn(&cache), (Some(16), 4, 0), "four full arrays went to the barn whole");
    allocator.reap();
    assert_eq!(barn(&cache), (Some(12), 3, 1), "untouched: a fifth of its sheaves (one) to the slabs");
    let taken = cache.alloc_on(1).unwrap();
    assert_eq!(barn(&cache), (Some(8), 2, 2), "CPU 1 took a full sheaf");
    allocator.reap();
    assert_eq!(barn(&cache), (Some(8), 2, 2), "touched: spared once");
    allocator.reap();
    assert_eq!(barn(&cache), (Some(4), 1, 3));
    // SAFETY: ours.
    unsafe { cache.free_on(1, taken).unwrap() };
    cache.validate().unwrap();
}

#[test]
fn validate_accounts_for_more_cached_objects_than_its_first_room() {
    // validate reserves room for the objects it finds before it locks; with more cached
    // than that, it counts them and looks again with room for all.
    let (_, allocator) = seed_box();
    let cache = allocator.create_cache("many", layout(64), CacheFlags::NONE).unwrap();
    cache.tune(4000, 2000, 0).unwrap();
    let objects: Vec<_> = (0..3000).map(|_| cache.alloc_on(0).unwrap()).collect();
    for &obj in &objects {
        // SAFETY: each object is ours and freed once.
        unsafe { cache.free_on(0, obj).unwrap() };
    }
    // All 3000 in cpu 0's array (a limit of 4000 never flushes), three times the room.
    cache.validate().unwrap();
    allocator.validate().unwrap();
}

#[test]
fn validate_names_both_places_of_an_object_cached_twice() {
    let (_, allocator) = seed_box();
    let cache = allocator.create_cache("twice", layout(64), CacheFlags::NONE).unwrap();
    let obj = cache.alloc_on(0).unwrap();
    // SAFETY: a deliberate double free outside debug mode (undefined for a user; here
    // the object is only cached twice, in cpu 0's and cpu 1's arrays, and never used).
    unsafe {
        cache.free_on(0, obj).unwrap();
        cache.free_on(1, obj).unwrap();
    }
    match cache.validate() {
        Err(Error::Corrupted { reason, .. }) => {
            assert!(reason.contains("is cached twice: in cpu 0's array and in cpu 1's array"), "{reason}")
        }
        other => panic!("expected the object cached twice, got {other:?}"),
    }
}
