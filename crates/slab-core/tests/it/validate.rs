//! `validate()` while other threads allocate, free, grow and shrink: the docs promise a
//! consistent answer under concurrency, so a sound cache must pass every time.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use slab_core::{Allocator, CacheFlags};
use topology::FakeTopology;

/// The checker validates at least this often, and until the workers together have done
/// [`ROUNDS`] rounds of growing and releasing, whichever comes last.
const VALIDATIONS: usize = 200;
/// Rounds of the workers (each allocates a few slabs' worth and frees it all).
const ROUNDS: usize = 3000;

#[test]
fn validate_is_consistent_while_other_threads_grow_and_release_slabs() {
    let allocator = Allocator::new(Arc::new(FakeTopology::seed_box()));
    let cache = allocator
        .create_cache("validated", Layout::from_size_align(512, 8).unwrap(), CacheFlags::NONE)
        .unwrap();
    // Small arrays and no shared array: nearly every batch reaches the slabs, so slabs are
    // grown and released (beyond free_limit) all the time.
    cache.tune(2, 1, 0).unwrap();
    let stop = AtomicBool::new(false);
    let rounds = AtomicUsize::new(0);
    let start = Barrier::new(5);
    std::thread::scope(|scope| {
        for cpu in 0..3u32 {
            let (cache, stop, start, rounds) = (&cache, &stop, &start, &rounds);
            scope.spawn(move || {
                start.wait();
                let mut held: Vec<NonNull<u8>> = Vec::new();
                let mut round = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    rounds.fetch_add(1, Ordering::Relaxed);
                    // Grow by a few slabs' worth, then free it all: slabs come and go.
                    for _ in 0..64 + (round % 7) * 16 {
                        held.push(cache.alloc_on(cpu).unwrap());
                    }
                    for obj in held.drain(..) {
                        // SAFETY: each object came from this cache and is freed once; the
                        // freeing CPU alternates nodes so that alien caches see traffic.
                        unsafe { cache.free_on(if round % 2 == 0 { cpu } else { 3 - cpu }, obj).unwrap() };
                    }
                }
            });
        }
        let (cache, stop, start) = (&cache, &stop, &start);
        scope.spawn(move || {
            start.wait();
            while !stop.load(Ordering::Relaxed) {
                cache.shrink();
                std::thread::yield_now();
            }
        });
        start.wait();
        let mut failure = None;
        let mut validations = 0;
        while validations < VALIDATIONS || rounds.load(Ordering::Relaxed) < ROUNDS {
            validations += 1;
            if let Err(error) = cache.validate() {
                failure = Some(format!("validation {validations}: {error}"));
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        if let Some(failure) = failure {
            panic!("{failure}");
        }
    });
    cache.validate().unwrap();
    assert_eq!(cache.stats().in_use, 0);
}
