//! Workload 5, passive false sharing in the shape of Hoard's cache-scratch: one thread
//! allocates an object for each worker, each worker frees its object and then, over and
//! over, allocates an object, writes it many times and frees it. An allocator that hands
//! a worker memory in a cache line another worker's object lives in makes the writes
//! bounce the line between cores.

use std::hint::black_box;
use std::sync::Barrier;

use anyhow::Result;

use super::{alloc, join, on_one_worker, span, spawn_worker, Machine, Measurement, Scale};
use crate::impls::Impl;

pub(super) fn run<I: Impl>(imp: &I, machine: &Machine, scale: Scale) -> Result<Measurement> {
    let threads = 2;
    let iterations: u64 = scale.pick(100, 1000);
    let repetitions: u64 = scale.pick(20_000, 50_000);
    // The objects the workers start with, allocated together by one thread so that they
    // are neighbours in memory.
    let initial =
        on_one_worker(imp, machine, || Ok((0..threads as u64).map(|i| alloc(imp, i)).collect::<Vec<_>>()))?;
    let start = Barrier::new(threads);
    let timings = std::thread::scope(|scope| {
        let workers: Vec<_> = initial
            .into_iter()
            .enumerate()
            .map(|(index, first)| {
                spawn_worker(scope, imp, machine, index, &start, move || {
                    imp.free(first);
                    for iteration in 0..iterations {
                        let mut object = alloc(imp, iteration);
                        imp.with_words(&mut object, |words| scratch(words, repetitions));
                        imp.free(object);
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().map(|worker| join(worker, "cache-scratch worker")).collect::<Result<Vec<_>>>()
    })?;
    let elapsed = span(timings.iter().map(|t| (&t.begin, &t.end)));
    Ok(Measurement { ops: threads as u64 * iterations, elapsed, detail: String::new() })
}

/// Writes every word of the object and reads it back, `repetitions` times; volatile so
/// that each write reaches the cache line as cache-scratch's byte loop does.
#[inline(never)]
fn scratch(words: &mut [std::mem::MaybeUninit<u64>], repetitions: u64) {
    for repetition in 0..repetitions {
        for (index, word) in words.iter_mut().enumerate() {
            let pointer = word.as_mut_ptr();
            // SAFETY: `pointer` is a valid, aligned, exclusively borrowed word; it is
            // written before it is read.
            unsafe {
                std::ptr::write_volatile(pointer, repetition + index as u64);
                black_box(std::ptr::read_volatile(pointer));
            }
        }
    }
}
