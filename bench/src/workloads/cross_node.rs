//! Workload 6, frees across nodes: one worker on each of two nodes, on this machine's CPUs
//! laid out on two nodes (on a 2-CPU machine node 0 = CPU 0, node 1 = CPU 1), else on the
//! seed box (node 0 = CPUs 0-1, node 1 = CPUs 2-3; workers on CPUs 0 and 2). Each round a
//! worker allocates a batch, sends `remote_percent` of it to the other worker, frees the
//! rest itself and then frees what the other sent. For numaslab those frees reach the
//! other node's slabs through the alien caches; peers, which know no nodes, see the same
//! thread pattern.
//!
//! Each worker also times its four phases (allocating, freeing its own objects, waiting
//! for the other's batch, freeing the other's objects), and the detail reports them per
//! object, so that a reader sees which side of a remote free the time is on.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use super::{alloc, check_stamps, join, span, spawn_worker, Machine, Measurement, Scale};
use crate::impls::Impl;

/// Objects each worker allocates per round.
const BATCH: usize = 1024;

/// Where a worker's time went, summed over its rounds.
#[derive(Debug, Default, Clone, Copy)]
struct Phases {
    /// Allocating the round's batch.
    alloc: Duration,
    /// Sending the remote share and freeing the rest.
    local_free: Duration,
    /// Waiting for the other worker's batch.
    wait: Duration,
    /// Freeing the other worker's objects.
    remote_free: Duration,
}

impl Phases {
    /// Each phase in nanoseconds per object allocated (`objects` in all).
    fn per_object(&self, objects: u64) -> [f64; 4] {
        [self.alloc, self.local_free, self.wait, self.remote_free]
            .map(|phase| phase.as_nanos() as f64 / objects.max(1) as f64)
    }
}

/// The detail line: each phase per object, worker by worker.
fn describe(phases: &[Phases], objects: u64) -> String {
    let per_worker: Vec<[f64; 4]> = phases.iter().map(|p| p.per_object(objects)).collect();
    let names = ["alloc", "local free", "wait", "remote free"];
    let columns: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let values: Vec<String> = per_worker.iter().map(|w| format!("{:.1}", w[index])).collect();
            format!("{name} {}", values.join("/"))
        })
        .collect();
    format!("ns per object, worker 0/1: {}", columns.join(", "))
}

pub(super) fn run<I: Impl>(
    imp: &I,
    machine: &Machine,
    scale: Scale,
    remote_percent: u32,
) -> Result<Measurement> {
    let rounds: u64 = scale.pick(300, 2000);
    let (to_one, from_zero) = crossbeam_channel::unbounded::<Vec<I::Handle<'_>>>();
    let (to_zero, from_one) = crossbeam_channel::unbounded::<Vec<I::Handle<'_>>>();
    let ends = [(to_one, from_one), (to_zero, from_zero)];
    let start = Barrier::new(2);
    let tallies = std::thread::scope(|scope| {
        let workers: Vec<_> = ends
            .into_iter()
            .enumerate()
            .map(|(index, (to_peer, from_peer))| {
                spawn_worker(scope, imp, machine, index, &start, move || {
                    let (mut written, mut read) = (0u64, 0u64);
                    let mut phases = Phases::default();
                    let mut local = Vec::with_capacity(BATCH);
                    let mut outgoing = Vec::with_capacity(BATCH);
                    let mut stamp = (index as u64) << 48;
                    for _ in 0..rounds {
                        let begun = Instant::now();
                        for slot in 0..BATCH {
                            stamp += 1;
                            written = written.wrapping_add(stamp);
                            let handle = alloc(imp, stamp);
                            if (slot % 100) < remote_percent as usize {
                                outgoing.push(handle);
                            } else {
                                local.push(handle);
                            }
                        }
                        let allocated = Instant::now();
                        // Lockstep: one batch each way per round, so neither side runs
                        // ahead and the channels never hold more than a round.
                        to_peer
                            .send(std::mem::take(&mut outgoing))
                            .map_err(|_| anyhow!("the other worker stopped"))?;
                        while let Some(handle) = local.pop() {
                            read = read.wrapping_add(imp.stamp(&handle));
                            imp.free(handle);
                        }
                        let freed = Instant::now();
                        let mut incoming = from_peer.recv().context("the other worker stopped")?;
                        let received = Instant::now();
                        for handle in incoming.drain(..) {
                            read = read.wrapping_add(imp.stamp(&handle));
                            imp.free(handle);
                        }
                        phases.alloc += allocated - begun;
                        phases.local_free += freed - allocated;
                        phases.wait += received - freed;
                        phases.remote_free += received.elapsed();
                        // The drained vector carries the next round's remote objects.
                        outgoing = incoming;
                    }
                    Ok((written, read, phases))
                })
            })
            .collect();
        workers.into_iter().map(|worker| join(worker, "cross-node worker")).collect::<Result<Vec<_>>>()
    })?;
    let elapsed = span(tallies.iter().map(|t| (&t.begin, &t.end)));
    let written = tallies.iter().fold(0u64, |sum, t| sum.wrapping_add(t.value.0));
    let read = tallies.iter().fold(0u64, |sum, t| sum.wrapping_add(t.value.1));
    check_stamps("cross-node", written, read)?;
    let phases: Vec<Phases> = tallies.iter().map(|t| t.value.2).collect();
    let detail = describe(&phases, rounds * BATCH as u64);
    Ok(Measurement { ops: 2 * rounds * BATCH as u64, elapsed, detail })
}
