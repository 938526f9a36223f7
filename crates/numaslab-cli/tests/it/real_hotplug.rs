//! The facade on the real machine (opt-in): cpu1 goes offline and online behind the
//! allocator's back, the watcher hears the kernel's uevents and runs the slab callbacks in
//! order, cpu1's array cache is drained, and no object of a cache under load is lost.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use numaslab::hotplug::{wait_for_event, Event, EventKind, Outcome, Source, Watcher};
use numaslab::slab_core::{Cache, CacheFlags};
use numaslab::topology::{SysfsTopology, Topology};
use numaslab::NumaSlab;

use crate::support::RealCpu1;

const CPU1_ONLINE: &str = "/sys/devices/system/cpu/cpu1/online";

/// A pointer a worker holds; sent back to the test at the end.
struct Held(NonNull<u8>);

// SAFETY: the worker that holds the only record of an object owns its memory.
unsafe impl Send for Held {}

/// Allocates and frees on `cpu` until `stop`, keeping up to 64 objects; returns what it
/// still holds.
fn load(
    slab: Arc<NumaSlab>,
    cache: Arc<Cache>,
    cpu: u32,
    stop: Arc<AtomicBool>,
    counts: Arc<[AtomicU64; 2]>,
) -> Vec<Held> {
    let _ = slab.topology().bind_current_thread(cpu);
    let mut held = Vec::new();
    let mut step = 0u64;
    while !stop.load(Ordering::Relaxed) {
        step += 1;
        if held.len() < 64 && step % 3 != 0 {
            let ptr = cache.alloc().expect("allocation under load");
            // SAFETY: 64 writable bytes were just handed out at `ptr`.
            unsafe { ptr.as_ptr().write_bytes(0xa5, 64) };
            counts[0].fetch_add(1, Ordering::Relaxed);
            held.push(Held(ptr));
        } else if let Some(Held(ptr)) = held.pop() {
            // SAFETY: `ptr` came from this cache and is freed once: its record is gone.
            unsafe { cache.free(ptr) }.expect("free under load");
            counts[1].fetch_add(1, Ordering::Relaxed);
        }
    }
    held
}

fn transition_finished(events: &crossbeam_channel::Receiver<Event>, cpu: u32) -> Vec<Event> {
    let mut seen = Vec::new();
    let finished = wait_for_event(events, Duration::from_secs(20), |event| {
        seen.push(event.clone());
        matches!(event.kind, EventKind::TransitionFinished { cpu: c, outcome: Outcome::Completed, .. } if c == cpu)
    });
    assert!(finished.is_some(), "no finished transition of cpu {cpu} within 20 s: {seen:#?}");
    seen
}

/// The state names entered or left on `cpu`, in order.
fn states(events: &[Event], cpu: u32) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match &event.kind {
            EventKind::StateEntered { cpu: c, state, .. } if *c == cpu => Some(format!("enter {state}")),
            EventKind::StateLeft { cpu: c, state, .. } if *c == cpu => Some(format!("leave {state}")),
            _ => None,
        })
        .collect()
}

#[test]
fn real_cpu1_offline_and_online_through_uevents_under_load() {
    let Some(_cpu1) = RealCpu1::acquire() else { return };
    let topology: Arc<dyn Topology> = Arc::new(SysfsTopology::detect().unwrap());
    let slab = NumaSlab::new(topology).unwrap();
    let cache = slab
        .allocator()
        .create_cache("real-hotplug", Layout::from_size_align(64, 8).unwrap(), CacheFlags::DEBUG)
        .unwrap();
    let events = slab.hotplug().events();
    let watcher = Watcher::start(slab.hotplug()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let workers: Vec<_> = [0u32, 1]
        .into_iter()
        .map(|cpu| {
            let (slab, cache, stop, counts) = (slab.clone(), cache.clone(), stop.clone(), counts.clone());
            std::thread::spawn(move || load(slab, cache, cpu, stop, counts))
        })
        .collect();
    // Wait until cpu1's array cache holds objects, so that teardown has something to drain.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.cpu_cache_len(1) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(cache.cpu_cache_len(1) > 0, "cpu1's array cache never filled");

    std::fs::write(CPU1_ONLINE, "0").unwrap();
    let down = transition_finished(&events, 1);
    assert!(down.iter().any(|e| e.source == Source::Uevent && e.cpu() == Some(1)), "uevent: {down:#?}");
    assert_eq!(states(&down, 1), ["leave slab:online", "leave slab:prepare"], "teardowns descend");
    assert_eq!(cache.cpu_cache_len(1), 0, "cpu1's array cache was drained");

    std::fs::write(CPU1_ONLINE, "1").unwrap();
    let up = transition_finished(&events, 1);
    assert!(up.iter().any(|e| e.source == Source::Uevent && e.cpu() == Some(1)), "uevent: {up:#?}");
    assert_eq!(states(&up, 1), ["enter slab:prepare", "enter slab:online"], "startups ascend");

    stop.store(true, Ordering::Relaxed);
    let held: Vec<Held> = workers.into_iter().flat_map(|worker| worker.join().unwrap()).collect();
    let (allocated, freed) = (counts[0].load(Ordering::Relaxed), counts[1].load(Ordering::Relaxed));
    assert_eq!(allocated, freed + held.len() as u64, "every object is freed or held");
    assert_eq!(cache.stats().in_use, held.len(), "the allocator agrees on the objects out");
    for Held(ptr) in held {
        // SAFETY: each held pointer came from this cache and is freed once here.
        unsafe { cache.free(ptr) }.unwrap();
    }
    slab.allocator().validate().unwrap();
    slab.allocator().destroy_cache(&cache).unwrap();
    watcher.stop();
}
