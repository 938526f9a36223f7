//! loom models of the hotplug protocol racing the fast path. Run with
//! `RUSTFLAGS="--cfg slab_core_loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p slab-core --release --test loom --target-dir target/loom`;
//! a normal build compiles this file to nothing.

#![cfg(slab_core_loom)]

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::Arc;

use loom::thread;
use slab_core::{Allocator, Cache, CacheFlags, CacheStats};
use topology::FakeTopology;

/// How every teardown model ends: CPU 1 dies (`cpu_dead`) while `threads` run; then the
/// cache accounts for every object (`validate`) and has none out (`what` says which).
fn cpu1_dies_while(
    allocator: &Allocator,
    cache: &Cache,
    threads: Vec<thread::JoinHandle<()>>,
    what: &str,
) -> CacheStats {
    allocator.cpu_dead(1);
    for model_thread in threads {
        model_thread.join().expect("a model thread");
    }
    allocator.validate().expect("validate");
    let stats = cache.stats();
    assert_eq!(stats.in_use, 0, "{what}");
    stats
}

/// Two objects from CPU 1, distinct, then both freed there: what a model's worker does.
fn two_allocs_then_frees_on_cpu1(cache: &Cache) {
    let first = cache.alloc_on(1).expect("alloc");
    let second = cache.alloc_on(1).expect("alloc");
    assert_ne!(first, second);
    // SAFETY: ours, freed once each.
    unsafe {
        cache.free_on(1, first).expect("free");
        cache.free_on(1, second).expect("free");
    }
}

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
        let stats = cpu1_dies_while(&allocator, &cache, vec![worker], "the object came back exactly once");
        assert_eq!(cache.cpu_cache_len(1), 0, "a dead CPU keeps no array");
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
        cpu1_dies_while(&allocator, &cache, vec![worker], "both objects back exactly once");
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
                two_allocs_then_frees_on_cpu1(&cache);
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

/// The barn exchange races the teardown of its node's last CPU and a drain (shrink): CPU
/// 1's full array goes to node 1's barn whole and an empty one comes back whole, while
/// `cpu_dead(1)` detaches the barn and shrink empties it. Every object comes back exactly
/// once, and the barn ends detached.
#[test]
fn barn_exchange_races_the_last_cpus_teardown_and_a_drain() {
    loom::model(|| {
        // Two nodes of one CPU each: CPU 1 is node 1's last CPU. Arrays of 2 and a barn of
        // one sheaf of 2 (shared * batchcount = 1, rounded up).
        let (allocator, cache) = setup("2x2");
        let objects: Vec<usize> =
            (0..3).map(|_| cache.alloc_on(1).expect("alloc").as_ptr() as usize).collect();
        // SAFETY: ours, freed once each: CPU 1's array is full.
        unsafe {
            cache.free_on(1, NonNull::new(objects[0] as *mut u8).unwrap()).expect("free");
            cache.free_on(1, NonNull::new(objects[1] as *mut u8).unwrap()).expect("free");
        }
        let worker = {
            let cache = Arc::clone(&cache);
            let last = objects[2];
            thread::spawn(move || {
                // The full array for the barn's empty sheaf, then (popping the one object
                // pushed) the empty array for the barn's full sheaf.
                // SAFETY: ours, freed once.
                unsafe { cache.free_on(1, NonNull::new(last as *mut u8).unwrap()).expect("free") };
                two_allocs_then_frees_on_cpu1(&cache);
            })
        };
        let drainer = {
            let cache = Arc::clone(&cache);
            thread::spawn(move || {
                cache.shrink();
            })
        };
        let stats =
            cpu1_dies_while(&allocator, &cache, vec![worker, drainer], "every object came back exactly once");
        assert_eq!(stats.nodes[1].shared_avail, None, "node 1's last CPU took the barn's sheaves");
        assert_eq!(stats.in_cpu_caches(1), 0, "a dead CPU keeps no array");
        cache.shrink();
        let stats = cache.stats();
        assert_eq!(stats.active_objs, 0, "all three objects are back in their slabs");
        assert_eq!(stats.nodes[1].num_slabs, 0);
    });
}

/// The remote hand-off races the teardown of the owner node's last CPU and a drain (the
/// reaper): CPUs 0 and 2 (nodes 0 and 2) each free two of node 1's objects, the second
/// free handing the first (a full alien cache of one) to node 1: to its barn whole when
/// the barn's lock is free and it has an empty sheaf, else to its queue with one
/// compare-and-swap. So two hand-offs race each other, `cpu_dead(1)` (which detaches the
/// barn and drains the queue under node 1's lock) and a reaper pass (which drains the
/// queue too). Nothing is lost or stranded: every object is accounted for, and the last
/// drain (shrink) brings them home.
#[test]
fn remote_hand_off_races_the_owner_losing_its_last_cpu_and_a_drain() {
    loom::model(|| {
        // Three nodes of one CPU each: CPU 1 is node 1's last CPU.
        let (allocator, cache) = setup("3x3");
        // Arrays of one, so alien caches of one (a sheaf being filled for the owner's barn),
        // and a barn of one sheaf (shared * batchcount = 1).
        cache.tune(1, 1, 1).expect("tunables");
        let objects: Vec<usize> =
            (0..4).map(|_| cache.alloc_on(1).expect("alloc").as_ptr() as usize).collect();
        let pusher = {
            let cache = Arc::clone(&cache);
            let pair = [objects[0], objects[1]];
            thread::spawn(move || {
                for obj in pair {
                    // SAFETY: ours, freed once each, remotely from CPU 0.
                    unsafe { cache.free_on(0, NonNull::new(obj as *mut u8).unwrap()).expect("free") };
                }
            })
        };
        let pusher_and_reaper = {
            let cache = Arc::clone(&cache);
            let allocator = Arc::clone(&allocator);
            let pair = [objects[2], objects[3]];
            thread::spawn(move || {
                for obj in pair {
                    // SAFETY: ours, freed once each, remotely from CPU 2.
                    unsafe { cache.free_on(2, NonNull::new(obj as *mut u8).unwrap()).expect("free") };
                }
                allocator.reap();
            })
        };
        let stats = cpu1_dies_while(
            &allocator,
            &cache,
            vec![pusher, pusher_and_reaper],
            "all four objects are accounted for, none twice",
        );
        // Each second free waits in its node's alien cache unless the reaper's pass drained
        // it; each first is in the barn or queued unless a drain took it home. The barn went
        // with node 1's last CPU: whatever reached it went home then.
        assert_eq!(stats.nodes[1].shared_avail, None, "node 1's last CPU took its barn");
        assert!(stats.alien_avail <= 2 && stats.nodes[1].remote_avail <= 2);
        assert_eq!(
            stats.nodes[1].active_objs,
            stats.alien_avail + stats.nodes[1].remote_avail,
            "node 1's handed-out objects are exactly those in the alien caches and the queue"
        );
        cache.shrink();
        let stats = cache.stats();
        assert_eq!((stats.nodes[1].remote_avail, stats.alien_avail), (0, 0));
        assert_eq!(stats.active_objs, 0, "all four objects are back in node 1's slabs");
    });
}
