//! Hot alloc/free pair and batch alloc-then-free through the typed cache, side by side
//! with mimalloc's `Box` of the same size (mimalloc is this binary's global allocator).
//!
//! Run: `cargo bench -p slab-core --bench alloc`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::measurement::WallTime;
use criterion::{criterion_main, BatchSize, BenchmarkGroup, Criterion};
use slab_core::{Allocator, CacheFlags, TypedCache};
use topology::{FakeTopology, SysfsTopology, Topology};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A 64-byte object.
type Object = [u64; 8];

const BATCH: usize = 1000;

fn machine() -> Arc<dyn Topology> {
    match SysfsTopology::detect() {
        Ok(topology) => Arc::new(topology),
        Err(error) => {
            eprintln!("live topology unavailable ({error}); benchmarking on a one-CPU fake machine");
            Arc::new(FakeTopology::builder().build().expect("one cpu, one node"))
        }
    }
}

fn pair(c: &mut Criterion) {
    let allocator = Allocator::new(machine());
    let typed = allocator.create_typed::<Object>("bench-pair", CacheFlags::NONE).expect("cache");
    let cache = Arc::clone(typed.cache());
    let mut group = c.benchmark_group("alloc_free_pair_64B");
    group.bench_function("slab_typed", |b| b.iter(|| drop(black_box(typed.alloc([1; 8]).expect("alloc")))));
    group.bench_function("slab_raw", |b| {
        b.iter(|| {
            let ptr = cache.alloc().expect("alloc");
            // SAFETY: ptr was just allocated from this cache.
            unsafe { cache.free(black_box(ptr)).expect("free") };
        })
    });
    // The same pair with the CPU given, to show what asking the topology costs.
    group.bench_function("slab_raw_cpu_given", |b| {
        b.iter(|| {
            let ptr = cache.alloc_on(0).expect("alloc");
            // SAFETY: ptr was just allocated from this cache.
            unsafe { cache.free_on(0, black_box(ptr)).expect("free") };
        })
    });
    group.bench_function("mimalloc_box", |b| b.iter(|| drop(black_box(Box::new([1u64; 8])))));
    group.finish();
}

/// A batch of typed allocations, then their drops.
fn typed_batch(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, cache: &TypedCache<Object>) {
    group.bench_function(name, |b| {
        b.iter_batched_ref(
            || Vec::with_capacity(BATCH),
            |held| {
                for i in 0..BATCH {
                    held.push(cache.alloc([i as u64; 8]).expect("alloc"));
                }
                held.clear();
            },
            BatchSize::SmallInput,
        )
    });
}

fn batch(c: &mut Criterion) {
    let allocator = Allocator::new(machine());
    let typed = allocator.create_typed::<Object>("bench-batch", CacheFlags::NONE).expect("cache");
    let mut group = c.benchmark_group("batch_1000_alloc_then_free_64B");
    typed_batch(&mut group, "slab_typed", &typed);
    // With the default tunables (limit 120) a batch of 1000 goes through the shared array
    // and the slabs, and empty slabs beyond free_limit go back to the OS as in the kernel;
    // with a limit above the batch, every object stays in the CPU's array.
    let roomy = allocator.create_typed::<Object>("bench-batch-limit-1024", CacheFlags::NONE).expect("cache");
    roomy.cache().tune(1024, 512, 8).expect("tunables");
    typed_batch(&mut group, "slab_typed_limit_1024", &roomy);
    let raw = Arc::clone(typed.cache());
    group.bench_function("slab_raw", |b| {
        b.iter_batched_ref(
            || Vec::with_capacity(BATCH),
            |held| {
                for _ in 0..BATCH {
                    held.push(raw.alloc().expect("alloc"));
                }
                for ptr in held.drain(..) {
                    // SAFETY: every pointer was just allocated from this cache, freed once.
                    unsafe { raw.free(ptr).expect("free") };
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("mimalloc_box", |b| {
        b.iter_batched_ref(
            || Vec::with_capacity(BATCH),
            |held| {
                for i in 0..BATCH {
                    held.push(Box::new([i as u64; 8]));
                }
                held.clear();
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// criterion's generated group function, which has no doc comment of its own.
mod group {
    #![allow(missing_docs, unreachable_pub)]
    use super::{batch, pair};
    use criterion::criterion_group;

    criterion_group!(benches, pair, batch);
}

criterion_main!(group::benches);
