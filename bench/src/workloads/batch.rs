//! Workload 2, batches: allocate `n` objects, then free them last-in-first-out or
//! first-in-first-out, on one thread.

use std::hint::black_box;
use std::time::Instant;

use anyhow::Result;

use super::{alloc, check_stamps, on_one_worker, Machine, Measurement, Order, Scale};
use crate::impls::Impl;

pub(super) fn run<I: Impl>(
    imp: &I,
    machine: &Machine,
    scale: Scale,
    n: usize,
    order: Order,
) -> Result<Measurement> {
    let total: u64 = scale.pick(3_000_000, 10_000_000);
    let rounds = (total / n as u64).max(1);
    on_one_worker(imp, machine, || {
        let mut live = Vec::with_capacity(n);
        let (mut written, mut read) = (0u64, 0u64);
        let mut round = |round: u64, written: &mut u64, read: &mut u64| {
            for index in 0..n as u64 {
                let stamp = round * n as u64 + index;
                *written = written.wrapping_add(stamp);
                live.push(alloc(imp, stamp));
            }
            black_box(&mut live);
            match order {
                Order::Lifo => {
                    while let Some(handle) = live.pop() {
                        *read = read.wrapping_add(imp.stamp(&handle));
                        imp.free(handle);
                    }
                }
                Order::Fifo => {
                    for handle in live.drain(..) {
                        *read = read.wrapping_add(imp.stamp(&handle));
                        imp.free(handle);
                    }
                }
            }
        };
        // Warm-up: a tenth of the rounds, at least one.
        for warm in 0..(rounds / 10).max(1) {
            round(warm, &mut written, &mut read);
        }
        let begin = Instant::now();
        for index in 0..rounds {
            round(index, &mut written, &mut read);
        }
        let elapsed = begin.elapsed();
        check_stamps("batch", written, read)?;
        Ok(Measurement { ops: rounds * n as u64, elapsed, detail: String::new() })
    })
}
