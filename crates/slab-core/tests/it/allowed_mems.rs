//! Allowed memory nodes (a cpuset's `mems`): a node outside them gets no slabs, node-
//! targeted allocation falls back to the nearest allowed node with memory, and the CPUs
//! of a disallowed node allocate from that node too.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::Arc;

use slab_core::{Allocator, Cache, CacheFlags, Error};
use topology::{FakeTopology, FixtureTopology, NodeSet, Topology};

fn cache_on(topology: Arc<dyn Topology>) -> (Arc<Allocator>, Arc<Cache>) {
    let allocator = Allocator::new(topology);
    let cache = allocator
        .create_cache("allowed-mems", Layout::from_size_align(64, 8).unwrap(), CacheFlags::NONE)
        .unwrap();
    (allocator, cache)
}

/// Allocates `count` objects with `alloc`, checks each comes from `node`, frees them.
fn all_from(cache: &Cache, count: usize, node: u32, alloc: impl Fn() -> NonNull<u8>, what: &str) {
    let objects: Vec<NonNull<u8>> = (0..count).map(|_| alloc()).collect();
    for &object in &objects {
        assert_eq!(cache.node_of(object), Some(node), "{what}");
    }
    for object in objects {
        // SAFETY: each object came from this cache's alloc and is freed once.
        unsafe { cache.free(object) }.unwrap();
    }
}

#[test]
fn a_disallowed_node_gets_no_slabs_on_the_restricted_fixture() {
    // Nodes 0-2 have memory; the cgroup allows 0 and 2; node 1 is nearer to node 2.
    let fixture = FixtureTopology::load("restricted-mems").unwrap();
    assert_eq!(fixture.allowed_memory_nodes().to_string(), "0,2");
    let (allocator, cache) = cache_on(Arc::new(fixture));
    // Enough objects to need several slabs, so that growth happens for each target.
    let count = 3 * cache.stats().objperslab;
    all_from(&cache, count, 2, || cache.alloc_node(1).unwrap(), "alloc_node(1) falls back to node 2");
    all_from(&cache, count, 0, || cache.alloc_node(0).unwrap(), "alloc_node(0) stays on node 0");
    all_from(&cache, count, 2, || cache.alloc_node(2).unwrap(), "alloc_node(2) stays on node 2");
    for cpu in [2, 3] {
        all_from(&cache, count, 2, || cache.alloc_on(cpu).unwrap(), "node 1's cpus allocate from node 2");
    }
    all_from(&cache, count, 0, || cache.alloc_on(0).unwrap(), "node 0's cpus allocate from node 0");
    // Node 1 alone cannot serve: it is refused, naming where alloc_node would go.
    let error = cache.alloc_node_exact(1).unwrap_err();
    assert!(matches!(error, Error::NodeNotAllowed { node: 1, nearest: 2 }), "{error}");
    assert!(error.to_string().contains("not an allowed memory node"), "{error}");
    all_from(&cache, count, 2, || cache.alloc_node_exact(2).unwrap(), "alloc_node_exact(2)");
    allocator.validate().unwrap();
}

#[test]
fn a_fake_restriction_is_honoured_by_distance() {
    // Four nodes; node 3 is nearest to node 1 (12) and allowed; nodes 1 and 2 are not.
    let nodes: NodeSet = "0,3".parse().unwrap();
    let fake = FakeTopology::builder()
        .nodes(4)
        .cpus_per_node(1)
        .distance(1, 3, 12)
        .distance(2, 0, 12)
        .allowed_memory_nodes(nodes)
        .build()
        .unwrap();
    let (allocator, cache) = cache_on(Arc::new(fake));
    let count = 2 * cache.stats().objperslab;
    all_from(&cache, count, 3, || cache.alloc_node(1).unwrap(), "node 1 -> node 3");
    all_from(&cache, count, 0, || cache.alloc_node(2).unwrap(), "node 2 -> node 0");
    all_from(&cache, count, 3, || cache.alloc_on(1).unwrap(), "cpu 1 (node 1) -> node 3");
    all_from(&cache, count, 0, || cache.alloc_on(2).unwrap(), "cpu 2 (node 2) -> node 0");
    allocator.validate().unwrap();
}
