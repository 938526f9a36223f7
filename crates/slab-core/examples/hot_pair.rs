//! A profiling aid: runs the hot alloc/free pair (and a batch of 1000 allocations then
//! frees) of 64-byte objects through the typed cache on the live machine, so that a
//! profiler sees little else. Where `perf` has no hardware counters, count instructions
//! per operation with callgrind:
//!
//! ```text
//! cargo build --release -p slab-core --example hot_pair
//! valgrind --tool=callgrind --toggle-collect='hot_pair::pairs' target/release/examples/hot_pair pair 100000
//! ```
//!
//! and divide the instructions of `hot_pair::pairs` by the count. Modes: `pair` (the
//! default), `batch` (1000 allocations then 1000 frees, per round), `box` (the pair
//! through glibc's malloc, for reference).

use std::hint::black_box;
use std::sync::Arc;

use slab_core::{Allocator, CacheFlags, TypedCache};
use topology::{FakeTopology, SysfsTopology, Topology};

/// A 64-byte object.
type Object = [u64; 8];

#[inline(never)]
fn pairs(cache: &TypedCache<Object>, count: u64) {
    for i in 0..count {
        drop(black_box(cache.alloc([i; 8]).expect("alloc")));
    }
}

/// The same pair through `Box` (the system allocator, glibc's malloc), for reference.
#[inline(never)]
fn boxes(count: u64) {
    for i in 0..count {
        drop(black_box(Box::new([i; 8])));
    }
}

#[inline(never)]
fn batches(cache: &TypedCache<Object>, count: u64) {
    let mut held = Vec::with_capacity(1000);
    for i in 0..count {
        for j in 0..1000 {
            held.push(cache.alloc([i ^ j; 8]).expect("alloc"));
        }
        held.clear();
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "pair".into());
    let count: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    let topology: Arc<dyn Topology> = match SysfsTopology::detect() {
        Ok(topology) => Arc::new(topology),
        Err(error) => {
            eprintln!("live topology unavailable ({error}); using a one-CPU fake machine");
            Arc::new(FakeTopology::builder().build().expect("one cpu, one node"))
        }
    };
    let allocator = Allocator::new(topology);
    let cache = allocator.create_typed::<Object>("hot-pair", CacheFlags::NONE).expect("cache");
    // Warm up: the first refill and growth are not what is measured.
    pairs(&cache, 1000);
    let start = std::time::Instant::now();
    match what.as_str() {
        "batch" => batches(&cache, count),
        "box" => boxes(count),
        _ => pairs(&cache, count),
    }
    let elapsed = start.elapsed();
    println!("{what} x {count}: {:.2} ns each", elapsed.as_nanos() as f64 / count as f64);
}
