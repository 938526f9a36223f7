use std::alloc::Layout;
use std::sync::Arc;

use topology::FakeTopology;

use crate::{Allocator, Cache, CacheFlags, Error, FailPoint};

fn seed_box_cache() -> (Arc<Allocator>, Arc<Cache>) {
    let allocator = Allocator::new(Arc::new(FakeTopology::seed_box()));
    let cache =
        allocator.create_cache("fail", Layout::from_size_align(64, 8).unwrap(), CacheFlags::NONE).unwrap();
    (allocator, cache)
}

#[test]
fn the_nth_growth_fails_once_and_later_ones_succeed() {
    let (_allocator, cache) = seed_box_cache();
    // Node 1 only (CPU 2): each growth makes one slab; the third growth fails.
    cache.fail_nth(FailPoint::Grow, 3).unwrap();
    cache.alloc_node_exact(1).unwrap();
    let per_slab = cache.stats().objperslab;
    let mut held = vec![];
    let mut failed_at = None;
    for i in 0..4 * per_slab {
        match cache.alloc_node_exact(1) {
            Ok(obj) => held.push(obj),
            Err(Error::OutOfMemory { reason, node: 1, .. }) => {
                assert!(reason.contains("injected"), "{reason}");
                failed_at.get_or_insert(i);
            }
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    // One object was taken before the loop, from slab 1: slabs 1 and 2 serve
    // 2 * per_slab - 1 objects in the loop, then the third growth fails.
    assert_eq!(failed_at, Some(2 * per_slab - 1));
    assert_eq!(held.len(), 4 * per_slab - 1, "only one attempt failed");
    assert_eq!(cache.injected_failures(FailPoint::Grow), 1);
    assert_eq!(cache.stats().nodes[1].grown, 4);
    for obj in held {
        // SAFETY: ours, freed once.
        unsafe { cache.free_on(2, obj).unwrap() };
    }
    cache.validate().unwrap();
}

#[test]
fn failing_from_the_nth_lasts_until_cleared() {
    let (_allocator, cache) = seed_box_cache();
    cache.fail_from_nth(FailPoint::Grow, 1).unwrap();
    for _ in 0..3 {
        assert!(matches!(cache.alloc_node_exact(0), Err(Error::OutOfMemory { node: 0, .. })));
        assert!(matches!(cache.alloc_on(0), Err(Error::OutOfMemory { .. })), "every node fails to grow");
    }
    // Each alloc_on tried node 0, then fell back to growing node 1: two attempts.
    assert_eq!(cache.injected_failures(FailPoint::Grow), 3 + 3 * 2);
    cache.clear_failures();
    let obj = cache.alloc_on(0).unwrap();
    // SAFETY: ours.
    unsafe { cache.free_on(0, obj).unwrap() };
    cache.validate().unwrap();
}

#[test]
fn a_zeroth_attempt_is_refused_with_the_cache_and_point_named() {
    let (_allocator, cache) = seed_box_cache();
    let error = cache.fail_nth(FailPoint::Metadata, 0).unwrap_err();
    assert!(matches!(error, Error::InvalidFailure { point: FailPoint::Metadata, .. }));
    let text = error.to_string();
    assert!(text.contains("\"fail\"") && text.contains("array cache allocation"), "{text}");
    assert!(matches!(cache.fail_from_nth(FailPoint::Grow, 0), Err(Error::InvalidFailure { .. })));
}

#[test]
fn a_failed_metadata_allocation_refuses_the_bring_up_and_rolls_it_back() {
    let (allocator, cache) = seed_box_cache();
    allocator.cpu_dead(3);
    let before = cache.stats();
    // CPU 3's bring-up allocates its array first: make that fail.
    cache.fail_nth(FailPoint::Metadata, 1).unwrap();
    let error = allocator.cpu_up_prepare(3).unwrap_err();
    assert!(matches!(error, Error::OutOfMemory { node: 1, .. }), "{error}");
    assert!(!allocator.prepared_cpus().contains(3));
    assert_eq!(cache.stats().cpu_cached, before.cpu_cached, "no array was left behind");
    // The plan is spent: the next bring-up succeeds.
    allocator.cpu_up_prepare(3).unwrap();
    assert!(cache.stats().cpu_cached.iter().any(|&(cpu, _)| cpu == 3));
    cache.validate().unwrap();
}
