use std::alloc::Layout;
use std::sync::Arc;

use topology::FakeTopology;

use crate::{Allocator, CacheFlags, Error};

fn setup() -> (Arc<Allocator>, Arc<crate::Cache>) {
    let allocator = Allocator::new(Arc::new(FakeTopology::seed_box()));
    let cache =
        allocator.create_cache("hp", Layout::from_size_align(64, 8).unwrap(), CacheFlags::NONE).unwrap();
    (allocator, cache)
}

#[test]
fn dead_cpu_returns_its_objects_and_the_node_keeps_its_lists() {
    let (allocator, cache) = setup();
    let objects: Vec<_> = (0..20).map(|_| cache.alloc_on(2).unwrap()).collect();
    for &o in &objects {
        // SAFETY: each object is ours and freed once.
        unsafe { cache.free_on(2, o).unwrap() };
    }
    assert!(cache.cpu_cache_len(2) > 0);
    allocator.cpu_dead(2);
    assert_eq!(cache.cpu_cache_len(2), 0);
    let stats = cache.stats();
    assert_eq!(stats.nodes[1].shared_avail, Some(0), "CPU 3 still up: node 1 keeps its shared array");
    cache.validate().unwrap();
    allocator.cpu_dead(3);
    let stats = cache.stats();
    assert_eq!(stats.nodes[1].shared_avail, None, "the node's last CPU took the shared array with it");
    assert_eq!(stats.nodes[1].num_slabs, 0, "the second pass shrank the node's free slabs");
    // The node lists live on: node 1 memory can still be allocated from another CPU.
    let remote = cache.alloc_node(1).unwrap();
    assert_eq!(cache.node_of(remote), Some(1));
    // SAFETY: ours; freed from node 0, whose alien cache for node 1 is still attached.
    unsafe { cache.free_on(0, remote).unwrap() };
    cache.validate().unwrap();
}

#[test]
fn the_last_cpu_of_a_node_drains_its_alien_caches() {
    let (allocator, cache) = setup();
    let node0: Vec<_> = (0..5).map(|_| cache.alloc_on(0).unwrap()).collect();
    // Freed on node 1: they wait in node 1's alien cache for node 0.
    for &o in &node0 {
        // SAFETY: each object is ours and freed once.
        unsafe { cache.free_on(3, o).unwrap() };
    }
    assert_eq!(cache.stats().nodes[1].alien_avail, 5);
    allocator.cpu_dead(2);
    assert_eq!(cache.stats().nodes[1].alien_avail, 5, "not the last CPU: the alien cache stays");
    allocator.cpu_dead(3);
    assert_eq!(cache.stats().nodes[1].alien_avail, 0, "drained to node 0 after the lock");
    assert_eq!(cache.stats().in_use, 0);
    cache.validate().unwrap();
}

#[test]
fn up_after_down_restores_arrays_shared_and_alien() {
    let (allocator, cache) = setup();
    allocator.cpu_dead(2);
    allocator.cpu_dead(3);
    allocator.cpu_up_prepare(3).unwrap();
    allocator.cpu_online(3).unwrap();
    let stats = cache.stats();
    assert_eq!(stats.nodes[1].shared_avail, Some(0));
    assert!(stats.cpu_cached.iter().any(|&(cpu, _)| cpu == 3));
    let obj = cache.alloc_on(0).unwrap();
    // SAFETY: ours; a remote free lands in node 1's fresh alien cache.
    unsafe { cache.free_on(3, obj).unwrap() };
    assert_eq!(cache.stats().nodes[1].alien_avail, 1);
    assert_eq!(cache.stats().nodes[1].free_limit, (1 + 1) * 60 + cache.stats().objperslab);
    cache.validate().unwrap();
}

#[test]
fn canceled_bring_up_undoes_prepare_and_tolerates_none() {
    let (allocator, cache) = setup();
    allocator.cpu_dead(2);
    allocator.cpu_dead(3);
    allocator.cpu_up_canceled(3);
    allocator.cpu_up_canceled(3);
    allocator.cpu_up_prepare(2).unwrap();
    assert!(cache.stats().cpu_cached.iter().any(|&(cpu, _)| cpu == 2));
    allocator.cpu_up_canceled(2);
    let stats = cache.stats();
    assert!(!stats.cpu_cached.iter().any(|&(cpu, _)| cpu == 2));
    assert_eq!(stats.nodes[1].shared_avail, None);
    assert!(matches!(allocator.cpu_online(2), Err(Error::NotPrepared { cpu: 2 })));
    cache.validate().unwrap();
}

#[test]
fn online_down_prepare_and_down_failed_drive_reap_work() {
    let (allocator, _cache) = setup();
    allocator.cpu_down_prepare(1).unwrap();
    assert!(!allocator.chain.lock().reaping.contains(1));
    allocator.cpu_down_failed(1);
    assert!(allocator.chain.lock().reaping.contains(1));
    assert!(matches!(allocator.cpu_up_prepare(77), Err(Error::UnknownCpu { cpu: 77, .. })));
    assert!(matches!(allocator.cpu_down_prepare(77), Err(Error::UnknownCpu { .. })));
    allocator.cpu_dead(77);
}

#[test]
fn caches_created_while_a_node_is_down_get_no_arrays_there() {
    let (allocator, _) = setup();
    allocator.cpu_dead(2);
    allocator.cpu_dead(3);
    let late = allocator.create_cache("late", Layout::new::<u64>(), CacheFlags::NONE).unwrap();
    let stats = late.stats();
    assert_eq!(stats.nodes[1].shared_avail, None);
    assert_eq!(stats.cpu_cached.iter().map(|c| c.0).collect::<Vec<_>>(), vec![0, 1]);
    allocator.cpu_up_prepare(2).unwrap();
    assert_eq!(late.stats().nodes[1].shared_avail, Some(0));
}

/// Each node's slab counters agree with its lists: grown - released = slabs it has.
fn assert_slabs_accounted(cache: &crate::Cache, when: &str) {
    for node in cache.stats().nodes {
        assert_eq!(
            node.grown as i64 - node.released as i64,
            node.num_slabs as i64,
            "{when}: node {}: grown {} - released {} != num_slabs {}",
            node.node,
            node.grown,
            node.released,
            node.num_slabs
        );
    }
}

#[test]
fn a_release_chain_across_nodes_charges_each_slab_to_its_own_node() {
    let (allocator, cache) = setup();
    // Node 1 fills many slabs of its own, which its last CPU's teardown empties beyond the
    // node's free limit; node 0's objects wait in node 1's alien cache meanwhile, so the
    // same teardown then drains them to node 0 with node 1's slabs already on the chain.
    let node1: Vec<_> = (0..3000).map(|_| cache.alloc_on(2).unwrap()).collect();
    let node0: Vec<_> = (0..5).map(|_| cache.alloc_on(0).unwrap()).collect();
    for &o in &node1 {
        // SAFETY: each object is ours and freed once.
        unsafe { cache.free_on(2, o).unwrap() };
    }
    for &o in &node0 {
        // SAFETY: each object is ours and freed once.
        unsafe { cache.free_on(3, o).unwrap() };
    }
    assert_slabs_accounted(&cache, "before the teardown");
    allocator.cpu_dead(2);
    assert_slabs_accounted(&cache, "after cpu 2 went down");
    allocator.cpu_dead(3);
    assert_slabs_accounted(&cache, "after node 1's last cpu went down");
    cache.shrink();
    assert_slabs_accounted(&cache, "after shrink");
    cache.validate().unwrap();
}
