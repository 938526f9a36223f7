//! allocator-api2 collections over a numaslab cache and over kmalloc.

use std::alloc::Layout;
use std::sync::Arc;

use allocator_api2::alloc::Allocator as _;
use allocator_api2::boxed::Box;
use allocator_api2::vec::Vec;
use topology::FakeTopology;

use crate::kmalloc::{Checking, Kmalloc};
use crate::{Allocator, Cache, CacheFlags};

/// Objects handed out and not given back: slabinfo's active objects less those waiting in
/// per-CPU, shared and alien arrays.
fn outstanding(cache: &Cache) -> usize {
    let stats = cache.stats();
    let cached: usize = stats.cpu_cached.iter().map(|&(_, count)| count).sum();
    stats.active_objs - cached - stats.shared_avail - stats.alien_avail
}

#[test]
fn boxes_and_vectors_in_an_object_cache() {
    let allocator = Allocator::new(Arc::new(FakeTopology::seed_box()));
    let cache = allocator.create_cache("api2", Layout::new::<[u64; 8]>(), CacheFlags::NONE).unwrap();
    let boxes: std::vec::Vec<_> = (0..500u64).map(|i| Box::new_in([i; 8], &*cache)).collect();
    assert_eq!(outstanding(&cache), 500);
    assert!(boxes.iter().enumerate().all(|(i, b)| **b == [i as u64; 8]));
    let mut small = Vec::with_capacity_in(8, &*cache);
    small.extend(0..8u64);
    assert_eq!(small.iter().sum::<u64>(), 28);
    drop(boxes);
    drop(small);
    assert_eq!(outstanding(&cache), 0, "every object went back to the cache");
    // A layout the cache cannot hold is refused, not served short.
    assert!((&*cache).allocate(Layout::new::<[u64; 9]>()).is_err());
    assert!((&*cache).allocate(Layout::from_size_align(64, 4096).unwrap()).is_err());
    cache.validate().unwrap();
}

#[test]
fn vectors_and_hash_maps_in_kmalloc() {
    let allocator = Allocator::new(Arc::new(FakeTopology::seed_box()));
    let kmalloc = Kmalloc::new(&allocator, Checking::Debug).unwrap();
    let mut numbers = Vec::new_in(&kmalloc);
    for i in 0..100_000u64 {
        numbers.push(i);
    }
    assert_eq!(numbers.iter().sum::<u64>(), 100_000 * 99_999 / 2);
    numbers.truncate(10);
    numbers.shrink_to_fit();
    assert_eq!(&numbers[..], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let mut map = hashbrown::HashMap::new_in(&kmalloc);
    for i in 0..10_000u32 {
        map.insert(i, i.to_string());
    }
    assert_eq!(map.len(), 10_000);
    assert_eq!(map[&4321], "4321");
    let boxed = Box::new_in([7u8; 100_000], &kmalloc);
    assert!(boxed.iter().all(|&b| b == 7));
    let zero = Box::new_in((), &kmalloc);
    drop((numbers, map, boxed, zero));
    let in_use: usize = kmalloc.caches().iter().map(|cache| outstanding(cache)).sum();
    assert_eq!(in_use, 0, "everything went back");
    allocator.validate().unwrap();
}
