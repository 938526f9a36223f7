//! Workload 1, the hot pair: allocate one object and free it at once, on one thread.

use std::time::Instant;

use anyhow::Result;

use super::{alloc, on_one_worker, Machine, Measurement, Scale};
use crate::impls::Impl;

pub(super) fn run<I: Impl>(imp: &I, machine: &Machine, scale: Scale) -> Result<Measurement> {
    let iterations: u64 = scale.pick(5_000_000, 20_000_000);
    on_one_worker(imp, machine, || {
        // Warm-up: the first allocations grow the allocator's structures.
        for stamp in 0..iterations / 20 {
            imp.free(alloc(imp, stamp));
        }
        let begin = Instant::now();
        for stamp in 0..iterations {
            imp.free(alloc(imp, stamp));
        }
        let elapsed = begin.elapsed();
        Ok(Measurement { ops: iterations, elapsed, detail: String::new() })
    })
}
