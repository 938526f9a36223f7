//! Workload 4, fixed-size larson: each thread owns an array of slots and replaces a
//! random slot's object again and again; after a number of replacements it hands the
//! array to a successor thread it starts and exits, as in Larson and Krishnan's server
//! simulation (mimalloc-bench's `larson`), with one object size.

use std::sync::Barrier;
use std::thread::Scope;
use std::time::Instant;

use anyhow::{bail, Result};
use crossbeam_channel::Sender;

use super::{alloc, check_stamps, span, spawn_worker, Machine, Measurement, Rng, Scale};
use crate::impls::Impl;

/// What one generation did.
#[derive(Debug)]
struct Tally {
    ops: u64,
    written: u64,
    read: u64,
    begin: Instant,
    end: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Params {
    slots: usize,
    replacements: u64,
    generations: u32,
}

pub(super) fn run<I: Impl>(imp: &I, machine: &Machine, scale: Scale) -> Result<Measurement> {
    let params = Params {
        // mimalloc-bench runs larson with 5000 chunks per thread.
        slots: 5000,
        replacements: scale.pick(50_000, 100_000),
        generations: scale.pick(3, 10),
    };
    let threads = 2;
    let start = Barrier::new(threads);
    let successor_start = Barrier::new(1);
    let (tx, rx) = crossbeam_channel::unbounded::<Result<Tally>>();
    let tallies = std::thread::scope(|scope| {
        for index in 0..threads {
            generation(
                scope,
                imp,
                machine,
                &start,
                &successor_start,
                index,
                0,
                Vec::new(),
                params,
                tx.clone(),
            );
        }
        drop(tx);
        rx.iter().collect::<Result<Vec<Tally>>>()
    })?;
    let expected = threads * params.generations as usize;
    if tallies.len() != expected {
        bail!("only {} of {expected} larson generations reported: a thread failed to start", tallies.len());
    }
    let written = tallies.iter().fold(0u64, |sum, t| sum.wrapping_add(t.written));
    let read = tallies.iter().fold(0u64, |sum, t| sum.wrapping_add(t.read));
    check_stamps("larson", written, read)?;
    let elapsed = span(tallies.iter().map(|t| (&t.begin, &t.end)));
    Ok(Measurement { ops: tallies.iter().map(|t| t.ops).sum(), elapsed, detail: String::new() })
}

/// Starts generation `number` of thread chain `index` with the array of its predecessor
/// (empty for the first), which fills it, replaces, and starts its own successor.
#[allow(clippy::too_many_arguments)]
fn generation<'scope, 'env, I: Impl>(
    scope: &'scope Scope<'scope, 'env>,
    imp: &'env I,
    machine: &'env Machine,
    start: &'env Barrier,
    successor_start: &'env Barrier,
    index: usize,
    number: u32,
    mut slots: Vec<I::Handle<'env>>,
    params: Params,
    report: Sender<Result<Tally>>,
) {
    spawn_worker(scope, imp, machine, index, start, move || {
        let now = Instant::now();
        let mut tally = Tally { ops: 0, written: 0, read: 0, begin: now, end: now };
        let mut stamp = ((index as u64) << 48) | (u64::from(number) << 32);
        let mut next_stamp = |tally: &mut Tally| {
            stamp += 1;
            tally.written = tally.written.wrapping_add(stamp);
            stamp
        };
        while slots.len() < params.slots {
            let stamp = next_stamp(&mut tally);
            slots.push(alloc(imp, stamp));
            tally.ops += 1;
        }
        let mut rng = Rng::new(((index as u64) << 32) | u64::from(number));
        for _ in 0..params.replacements {
            let slot = rng.below(params.slots);
            let stamp = next_stamp(&mut tally);
            let old = std::mem::replace(&mut slots[slot], alloc(imp, stamp));
            tally.read = tally.read.wrapping_add(imp.stamp(&old));
            imp.free(old);
            tally.ops += 1;
        }
        if number + 1 < params.generations {
            generation(
                scope,
                imp,
                machine,
                successor_start,
                successor_start,
                index,
                number + 1,
                slots,
                params,
                report.clone(),
            );
        } else {
            for old in slots.drain(..) {
                tally.read = tally.read.wrapping_add(imp.stamp(&old));
                imp.free(old);
            }
        }
        tally.end = Instant::now();
        // The collector outlives every generation; a failed send means it gave up.
        let _ = report.send(Ok(tally));
        Ok(())
    });
}
