use super::*;

#[test]
fn defaults_follow_enable_cpucache() {
    let page = page_size();
    let cases = [
        (32, 120),
        (256, 120),
        (257, 54),
        (1024, 54),
        (1025, 24),
        (page, 24),
        (page + 8, 8),
        (131072, 8),
        (131073, 1),
    ];
    for (size, limit) in cases {
        let t = Tunables::defaults(size, true, false);
        assert_eq!(t.limit, limit, "limit for {size}-byte objects");
        assert_eq!(t.batchcount, limit.div_ceil(2), "batchcount for {size}-byte objects");
        assert_eq!(t.shared, if size <= page { DEFAULT_SHARED } else { 0 }, "shared for {size}-byte objects");
    }
    assert_eq!(Tunables::defaults(32, false, false).shared, 0, "no shared array on UP");
    let debug = Tunables::defaults(32, true, true);
    assert_eq!((debug.limit, debug.batchcount), (32, 16), "debug caps the limit at 32");
}

#[test]
fn the_default_barn_keeps_ten_sheaves_as_slubs_does() {
    for size in [8, 64, 192, 256, 257, 1024, 1025, page_size()] {
        let t = Tunables::defaults(size, true, false);
        let sheaves = crate::barn::barn_sheaves(t.limit, t.batchcount, t.shared);
        assert_eq!(sheaves, 10, "the barn of {size}-byte objects (limit {})", t.limit);
    }
}

#[test]
fn check_refuses_what_slabinfo_write_refuses() {
    let ok = Tunables { limit: 10, batchcount: 5, shared: 0 };
    assert_eq!(ok.check("c").unwrap(), ok);
    for (limit, batchcount, shared, words) in [
        (0, 1, 0, "limit must be at least 1"),
        (4, 0, 0, "batchcount must be at least 1"),
        (4, 5, 0, "must not exceed limit"),
        (MAX_LIMIT + 1, 1, 0, "limit must not exceed"),
        (8, 8, u32::MAX, "shared * batchcount"),
    ] {
        let error = Tunables { limit, batchcount, shared }.check("dentry").unwrap_err().to_string();
        assert!(error.contains(words), "{error}");
        assert!(error.contains("dentry"), "the error names the cache: {error}");
    }
}

mod failed_tune {
    use std::alloc::Layout;
    use std::sync::Arc;

    use topology::FakeTopology;

    use crate::{Allocator, CacheFlags, Error, FailPoint, Tunables};

    #[test]
    fn a_barn_that_cannot_be_allocated_fails_the_tune_and_keeps_the_old_tunables() {
        let allocator = Allocator::new(Arc::new(FakeTopology::seed_box()));
        let cache = allocator
            .create_cache("tuned", Layout::from_size_align(64, 8).unwrap(), CacheFlags::NONE)
            .unwrap();
        cache.tune(4, 2, 1).unwrap();
        let old = cache.tunables();
        // do_tune_cpucache allocates the four CPUs' arrays, then node 0's barn sheaves,
        // then node 1's: the fifth allocation is node 0's barn.
        cache.fail_nth(FailPoint::Metadata, 5).unwrap();
        let error = cache.tune(8, 4, 2).unwrap_err();
        assert!(matches!(error, Error::OutOfMemory { node: 0, .. }), "{error}");
        assert_eq!(cache.injected_failures(FailPoint::Metadata), 1);
        assert_eq!(cache.tunables(), old, "the old tunables stay in force");
        let stats = cache.stats();
        assert_eq!((stats.limit, stats.batchcount, stats.sharedfactor), (4, 2, 1));
        assert!(stats.nodes.iter().all(|node| node.shared_avail.is_some()), "every node keeps its barn");
        // The CPU arrays are the old ones too: CPU 0's holds at most the old limit.
        let objects: Vec<_> = (0..20).map(|_| cache.alloc_on(0).unwrap()).collect();
        for &obj in &objects {
            // SAFETY: ours, freed once.
            unsafe { cache.free_on(0, obj).unwrap() };
        }
        assert_eq!(cache.cpu_cache_len(0), 4);
        assert_eq!(cache.stats().nodes[0].shared_avail, Some(4), "the old barn: one sheaf of the old limit");
        cache.validate().unwrap();
        // Nothing planned any more: the same tune now succeeds.
        cache.tune(8, 4, 2).unwrap();
        assert_eq!(cache.tunables(), Tunables { limit: 8, batchcount: 4, shared: 2 });
        cache.validate().unwrap();
    }
}

#[test]
fn limits_bytes_counts_arrays_shared_alien_and_free_limit_in_whole_slabs() {
    use std::alloc::Layout;
    use std::sync::Arc;

    let allocator = crate::Allocator::new(Arc::new(topology::FakeTopology::seed_box()));
    let cache = allocator
        .create_cache("limited", Layout::from_size_align(64, 8).unwrap(), crate::CacheFlags::NONE)
        .unwrap();
    cache.tune(10, 5, 2).unwrap();
    let stats = cache.stats();
    let slab_bytes = stats.pagesperslab * page_size();
    // Per node: 2 CPUs * 10 + a barn of one sheaf of 10 (shared 2 * 5 = 10 objects) + one
    // alien array of 12 + free_limit (1 + 2) * 5 + num.
    let objects = 2 * 10 + 10 + 12 + 3 * 5 + stats.objperslab;
    assert_eq!(cache.limits_bytes(), 2 * objects.div_ceil(stats.objperslab) * slab_bytes);
    assert_eq!(allocator.page_cache_bound_bytes(), 2 * (4 << 20));
    assert_eq!(cache.bytes_per_object(), slab_bytes.div_ceil(stats.objperslab));
    assert!(cache.bytes_per_object() >= 64);
}
