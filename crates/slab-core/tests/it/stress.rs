//! The seed's test, in miniature: four workers on the seed box allocate, write, pass
//! objects to a worker on the other node and free what they receive, while CPUs 2 and 3
//! (all of node 1) and CPU 1 go down and up again and again. Debug mode on; at the end
//! every object is accounted for and `validate()` passes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use slab_core::{Allocator, CacheFlags, Handle};
use topology::{CpuState, FakeTopology, Topology};

/// A message: who made it and a checksum of its payload.
type Payload = [u64; 6];

fn stamp(worker: u64, seq: u64) -> Payload {
    [worker, seq, worker ^ seq, !seq, seq.wrapping_mul(31), 0xfeed]
}

#[test]
fn four_workers_cross_node_frees_and_hotplug() {
    let topology = Arc::new(FakeTopology::seed_box());
    let allocator = Allocator::new(topology.clone());
    let typed = allocator.create_typed::<Payload>("stress", CacheFlags::DEBUG).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let allocated = Arc::new(AtomicU64::new(0));
    let freed = Arc::new(AtomicU64::new(0));
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..4).map(|_| mpsc::channel::<Handle<Payload>>()).unzip();
    let bound = Arc::new(Barrier::new(5));
    let mut workers = Vec::new();
    for (worker, receiver) in receivers.into_iter().enumerate() {
        // Worker w sends to the worker on the other node: 0<->2, 1<->3.
        let peer = senders[(worker + 2) % 4].clone();
        let (typed, topology, stop, allocated, freed, bound) =
            (typed.clone(), topology.clone(), stop.clone(), allocated.clone(), freed.clone(), bound.clone());
        workers.push(std::thread::spawn(move || {
            topology.bind_current_thread(worker as u32).unwrap();
            bound.wait();
            let mut held: Vec<Handle<Payload>> = Vec::new();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..32 {
                    seq += 1;
                    held.push(typed.alloc(stamp(worker as u64, seq)).unwrap());
                    allocated.fetch_add(1, Ordering::Relaxed);
                }
                // Every other object crosses nodes; the rest are freed locally.
                for (index, handle) in held.drain(..).enumerate() {
                    assert_eq!(*handle, stamp(handle[0], handle[1]), "payload changed");
                    if index % 2 == 0 {
                        let _ = peer.send(handle);
                    } else {
                        drop(handle);
                        freed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                while let Ok(handle) = receiver.try_recv() {
                    assert_eq!(*handle, stamp(handle[0], handle[1]), "payload changed in flight");
                    drop(handle);
                    freed.fetch_add(1, Ordering::Relaxed);
                }
            }
            (receiver, peer)
        }));
    }
    drop(senders);
    bound.wait();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut transitions = 0;
    while Instant::now() < deadline {
        for cpu in [2, 3, 1] {
            topology.set_online(cpu, CpuState::Offline).unwrap();
            allocator.cpu_down_prepare(cpu).unwrap();
            allocator.cpu_dead(cpu);
            assert_eq!(typed.cache().cpu_cache_len(cpu), 0, "cpu {cpu} is down with objects cached");
            transitions += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        allocator.reap();
        for cpu in [1, 2, 3] {
            topology.set_online(cpu, CpuState::Online).unwrap();
            allocator.cpu_up_prepare(cpu).unwrap();
            allocator.cpu_online(cpu).unwrap();
            transitions += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let ends: Vec<_> = workers.into_iter().map(|w| w.join().expect("worker panicked")).collect();
    // Drain what is still in flight, then close the channels.
    for (receiver, peer) in ends {
        drop(peer);
        while let Ok(handle) = receiver.try_recv() {
            drop(handle);
            freed.fetch_add(1, Ordering::Relaxed);
        }
    }
    let (allocated, freed) = (allocated.load(Ordering::Relaxed), freed.load(Ordering::Relaxed));
    assert!(transitions >= 6, "the hotplug thread made progress");
    assert!(allocated > 1000, "the workers made progress ({allocated} objects)");
    assert_eq!(allocated, freed, "every object allocated was freed once");
    allocator.validate().unwrap();
    let stats = typed.cache().stats();
    assert_eq!(stats.in_use, 0, "no object lost or duplicated");
    println!(
        "stress: {allocated} objects, {transitions} transitions, {} slabs, {} grown",
        stats.num_slabs,
        stats.nodes.iter().map(|n| n.grown).sum::<u64>()
    );
    allocator.destroy_cache(typed.cache()).unwrap();
}
