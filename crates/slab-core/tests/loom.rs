//! loom models of the hotplug protocol racing the fast path. Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p slab-core --release --test loom`;
//! a normal build compiles this file to nothing.

#![cfg(loom)]

use std::alloc::Layout;
use std::sync::Arc;

use loom::thread;
use slab_core::{Allocator, Cache, CacheFlags};
use topology::FakeTopology;

fn setup(spec: &str) -> (Arc<Allocator>, Arc<Cache>) {
    let allocator = Allocator::new(Arc::new(FakeTopology::from_spec(spec).expect("fake machine")));
    let cache = allocator.create_cache("loom", Layout::new::<u64>(), CacheFlags::NONE).expect("cache");
    // Small arrays keep the state space small; shared 1 keeps a shared array.
    cache.tune(2, 1, 1).expect("tunables");
    (allocator, cache)
}

/// The fast path on CPU 1 races CPU 1's teardown: the object allocated is either from
/// CPU 1's array (detached later with its contents returned) or from the node lists.
#[test]
fn fast_path_races_teardown_of_the_same_cpu() {
    loom::model(|| {
        let (allocator, cache) = setup("2x1");
        let worker = {
            let cache = Arc::clone(&cache);
            thread::spawn(move || {
                let obj = cache.alloc_on(1).expect("alloc");
                // SAFETY: obj is ours, freed once.
                unsafe { cache.free_on(1, obj).expect("free") };
            })
        };
        allocator.cpu_down_prepare(1).expect("down_prepare");
        allocator.cpu_dead(1);
        worker.join().expect("worker");
        assert_eq!(cache.cpu_cache_len(1), 0, "a dead CPU keeps no array");
        allocator.validate().expect("validate");
        let stats = cache.stats();
        assert_eq!(stats.in_use, 0, "the object came back exactly once");
        assert_eq!(stats.active_objs, stats.in_all_cpu_caches() + stats.shared_avail + stats.alien_avail);
    });
}

/// A free of a node-0 object by a thread still holding node 1's (dying) CPU id races node 1
/// losing its last CPU, while node 1's alien cache for node 0 is detached and drained.
#[test]
fn remote_free_races_the_owner_node_losing_its_last_cpu() {
    loom::model(|| {
        let (allocator, cache) = setup("2x2");
        let node0 = cache.alloc_on(0).expect("alloc on node 0");
        let node1 = cache.alloc_on(1).expect("alloc on node 1");
        let addresses = (node0.as_ptr() as usize, node1.as_ptr() as usize);
        let worker = {
            let cache = Arc::clone(&cache);
            thread::spawn(move || {
                let (node0, node1) = addresses;
                // SAFETY: both objects are ours and each is freed once: node 0's from a
                // stale CPU 1 (remote: node 1's alien cache), node 1's from CPU 0 (remote:
                // node 0's alien cache for the dying node).
                unsafe {
                    cache.free_on(1, std::ptr::NonNull::new(node0 as *mut u8).unwrap()).expect("free");
                    cache.free_on(0, std::ptr::NonNull::new(node1 as *mut u8).unwrap()).expect("free");
                }
            })
        };
        allocator.cpu_dead(1);
        worker.join().expect("worker");
        allocator.validate().expect("validate");
        assert_eq!(cache.stats().in_use, 0, "both objects back exactly once");
        assert_eq!(cache.stats().nodes[1].alien_avail, 0, "node 1's alien caches are gone");
        cache.shrink();
        assert_eq!(cache.stats().active_objs, 0);
    });
}

/// CPU 1's bring-up races an allocation by a thread already running on CPU 1.
#[test]
fn prepare_races_an_allocation_on_the_new_cpu() {
    loom::model(|| {
        let (allocator, cache) = setup("2x1");
        allocator.cpu_dead(1);
        let worker = {
            let cache = Arc::clone(&cache);
            thread::spawn(move || {
                let first = cache.alloc_on(1).expect("alloc");
                let second = cache.alloc_on(1).expect("alloc");
                assert_ne!(first, second);
                // SAFETY: ours, freed once each.
                unsafe {
                    cache.free_on(1, first).expect("free");
                    cache.free_on(1, second).expect("free");
                }
            })
        };
        allocator.cpu_up_prepare(1).expect("prepare");
        worker.join().expect("worker");
        allocator.validate().expect("validate");
        let stats = cache.stats();
        assert_eq!(stats.in_use, 0);
        assert!(stats.cpu_cached.iter().any(|&(cpu, _)| cpu == 1), "the array is installed");
    });
}
