//! Workload 3, producer/consumer in the shape of mimalloc-bench's xmalloc-test: one
//! thread only allocates, another only frees what the first allocated. The figure is
//! frees per second.

use std::sync::Barrier;

use anyhow::{anyhow, Context, Result};

use super::{alloc, check_stamps, join, span, spawn_worker, Machine, Measurement, Scale};
use crate::impls::Impl;

/// Objects handed over per message, as xmalloc-test's batches.
const BATCH: usize = 64;
/// Batches in flight at most: the producer waits for the consumer beyond that.
const IN_FLIGHT: usize = 16;

pub(super) fn run<I: Impl>(imp: &I, machine: &Machine, scale: Scale) -> Result<Measurement> {
    let batches: u64 = scale.pick(12_000, 60_000);
    let (full_tx, full_rx) = crossbeam_channel::bounded::<Vec<I::Handle<'_>>>(IN_FLIGHT);
    // Empty vectors travel back so that the harness allocates nothing while timed.
    let (empty_tx, empty_rx) = crossbeam_channel::unbounded::<Vec<I::Handle<'_>>>();
    for _ in 0..=IN_FLIGHT {
        empty_tx.send(Vec::with_capacity(BATCH)).map_err(|_| anyhow!("filling the vector pool"))?;
    }
    let start = Barrier::new(2);
    let (produced, consumed) = std::thread::scope(|scope| {
        let producer = spawn_worker(scope, imp, machine, 0, &start, move || {
            let mut written = 0u64;
            for batch in 0..batches {
                let mut objects = empty_rx.recv().context("the consumer stopped early")?;
                for index in 0..BATCH as u64 {
                    let stamp = batch * BATCH as u64 + index;
                    written = written.wrapping_add(stamp);
                    objects.push(alloc(imp, stamp));
                }
                full_tx.send(objects).map_err(|_| anyhow!("the consumer stopped early"))?;
            }
            Ok(written)
        });
        let consumer = spawn_worker(scope, imp, machine, 1, &start, move || {
            let (mut read, mut freed) = (0u64, 0u64);
            for mut objects in full_rx.iter() {
                for handle in objects.drain(..) {
                    read = read.wrapping_add(imp.stamp(&handle));
                    imp.free(handle);
                    freed += 1;
                }
                // The producer may have finished and dropped its end; nothing to return.
                let _ = empty_tx.send(objects);
            }
            Ok((read, freed))
        });
        Ok::<_, anyhow::Error>((join(producer, "producer")?, join(consumer, "consumer")?))
    })?;
    let elapsed = span([(&produced.begin, &produced.end), (&consumed.begin, &consumed.end)]);
    let (written, (read, freed)) = (produced.value, consumed.value);
    check_stamps("producer/consumer", written, read)?;
    Ok(Measurement { ops: freed, elapsed, detail: String::new() })
}
