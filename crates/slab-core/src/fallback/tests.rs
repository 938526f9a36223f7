use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::Arc;

use topology::FakeTopology;

use crate::reap::DrainMode;
use crate::{Allocator, Cache, CacheFlags, Error, FailPoint};

fn cache_on(topology: FakeTopology) -> (Arc<Allocator>, Arc<Cache>) {
    let allocator = Allocator::new(Arc::new(topology));
    let cache = allocator
        .create_cache("fallback", Layout::from_size_align(64, 8).unwrap(), CacheFlags::NONE)
        .unwrap();
    (allocator, cache)
}

/// One slab's worth of objects taken from `node`'s lists and freed, then every array
/// drained (`drain_cpu_caches`): the node has one slab of free objects on its lists (within
/// its free limit) and no object out.
fn give_free_objects(cache: &Cache, node: u32) {
    let objects: Vec<NonNull<u8>> =
        (0..cache.stats().objperslab).map(|_| cache.alloc_node_exact(node).unwrap()).collect();
    for obj in objects {
        // SAFETY: ours, freed once.
        unsafe { cache.free(obj).unwrap() };
    }
    cache.kmem().drain_cpu_caches(DrainMode::Empty);
}

#[test]
fn a_node_that_cannot_grow_takes_another_nodes_free_object() {
    let (_allocator, cache) = cache_on(FakeTopology::seed_box());
    give_free_objects(&cache, 0);
    let before = cache.stats().nodes[0].free_objects;
    assert!(before > 0);
    cache.fail_from_nth(FailPoint::Grow, 1).unwrap();
    let obj = cache.alloc_node(1).unwrap();
    assert_eq!(cache.node_of(obj), Some(0), "node 1 could not grow: node 0's free object");
    assert_eq!(cache.stats().nodes[0].free_objects, before - 1);
    assert_eq!(cache.stats().nodes[1].num_slabs, 0);
    // SAFETY: ours.
    unsafe { cache.free_on(2, obj).unwrap() };
    cache.validate().unwrap();
}

#[test]
fn a_cpu_whose_node_cannot_grow_gets_a_remote_object_past_its_array() {
    let (_allocator, cache) = cache_on(FakeTopology::seed_box());
    give_free_objects(&cache, 0);
    cache.fail_from_nth(FailPoint::Grow, 1).unwrap();
    // CPU 2 is on node 1: its refill finds nothing and its growth fails.
    let obj = cache.alloc_on(2).unwrap();
    assert_eq!(cache.node_of(obj), Some(0));
    assert_eq!(cache.cpu_cache_len(2), 0, "no remote object enters the CPU's array");
    // SAFETY: ours; a remote free from CPU 2, through node 1's alien cache.
    unsafe { cache.free_on(2, obj).unwrap() };
    assert_eq!(cache.stats().nodes[1].alien_avail, 1);
    cache.validate().unwrap();
}

#[test]
fn the_nearest_node_with_free_objects_serves_first() {
    // Node 0's neighbours: node 2 at 15, node 1 at 30, node 3 at 40 (the default 20
    // between the others).
    let topology = FakeTopology::builder()
        .nodes(4)
        .distance(0, 1, 30)
        .distance(0, 2, 15)
        .distance(0, 3, 40)
        .build()
        .unwrap();
    let (_allocator, cache) = cache_on(topology);
    for node in [1, 2, 3] {
        give_free_objects(&cache, node);
    }
    cache.fail_from_nth(FailPoint::Grow, 1).unwrap();
    let per_slab = cache.stats().objperslab;
    let objects: Vec<NonNull<u8>> = (0..3 * per_slab).map(|_| cache.alloc_node(0).unwrap()).collect();
    let nodes: Vec<u32> = objects.iter().map(|&obj| cache.node_of(obj).unwrap()).collect();
    let expected: Vec<u32> = [2, 1, 3].iter().flat_map(|&node| std::iter::repeat_n(node, per_slab)).collect();
    assert_eq!(nodes, expected, "nearest first: node 2, then 1, then 3");
    assert!(matches!(cache.alloc_node(0), Err(Error::OutOfMemory { node: 0, .. })), "no node has any left");
    for obj in objects {
        // SAFETY: ours, freed once.
        unsafe { cache.free_on(0, obj).unwrap() };
    }
    cache.validate().unwrap();
}

#[test]
fn with_no_free_object_anywhere_the_nearest_node_that_can_grow_serves() {
    let (_allocator, cache) = cache_on(FakeTopology::seed_box());
    // The first growth (node 1's) fails; node 0's, the fallback's, succeeds.
    cache.fail_nth(FailPoint::Grow, 1).unwrap();
    let obj = cache.alloc_node(1).unwrap();
    assert_eq!(cache.node_of(obj), Some(0));
    assert_eq!(cache.stats().nodes[0].grown, 1);
    assert_eq!(cache.injected_failures(FailPoint::Grow), 1);
    // SAFETY: ours.
    unsafe { cache.free_on(0, obj).unwrap() };
    cache.validate().unwrap();
}

#[test]
fn this_node_only_never_falls_back() {
    let (_allocator, cache) = cache_on(FakeTopology::seed_box());
    give_free_objects(&cache, 0);
    cache.fail_from_nth(FailPoint::Grow, 1).unwrap();
    let error = cache.alloc_node_exact(1).unwrap_err();
    assert!(matches!(error, Error::OutOfMemory { node: 1, .. }), "{error}");
    assert_eq!(cache.stats().in_use, 0, "node 0's objects stay where they are");
    cache.clear_failures();
    let obj = cache.alloc_node_exact(1).unwrap();
    assert_eq!(cache.node_of(obj), Some(1));
    // SAFETY: ours.
    unsafe { cache.free_on(2, obj).unwrap() };
    cache.validate().unwrap();
}

#[test]
fn this_node_only_names_a_node_without_memory_and_an_impossible_one() {
    let topology = FakeTopology::builder().nodes(2).memoryless_node(1).build().unwrap();
    let (_allocator, cache) = cache_on(topology);
    let error = cache.alloc_node_exact(1).unwrap_err();
    assert!(matches!(error, Error::NodeWithoutMemory { node: 1, nearest: 0 }), "{error}");
    assert!(error.to_string().contains("node 1 has no memory"), "{error}");
    assert!(matches!(cache.alloc_node_exact(9), Err(Error::UnknownNode { node: 9, .. })));
}

#[test]
fn a_destroyed_cache_does_not_fall_back() {
    let (allocator, cache) = cache_on(FakeTopology::seed_box());
    allocator.destroy_cache(&cache).unwrap();
    assert!(matches!(cache.alloc_node(1), Err(Error::CacheDestroyed { .. })));
    assert!(matches!(cache.alloc_on(2), Err(Error::CacheDestroyed { .. })));
}
