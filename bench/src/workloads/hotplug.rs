//! Workload 7, throughput while CPUs go offline and online: two workers on the seed box
//! (CPU 1 on node 0, CPU 3 on node 1) allocate batches and free them, while a hotplug
//! thread cycles CPUs 1, 2 and 3 offline and online (node 1's last CPU included; CPU 0
//! stays, as on Linux). The same run without the hotplug thread is the reference.
//!
//! numaslab runs its hotplug callbacks around each change (`cpu_down_prepare`, the
//! change, `cpu_dead`; `cpu_up_prepare`, the change, `cpu_online`), the order the kernel
//! runs them in; peers only see their thread's virtual CPU move, which they ignore.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::Duration;

use anyhow::{Context, Result};
use topology::{CpuId, Topology};

use super::{alloc, check_stamps, join, span, spawn_worker, Hotplug, Machine, Measurement, Scale};
use crate::impls::Impl;

/// Objects per batch each worker allocates and then frees.
const BATCH: usize = 64;
/// The pause between two transitions.
const PAUSE: Duration = Duration::from_micros(200);

/// One step of the hotplug cycle.
#[derive(Debug, Clone, Copy)]
enum Step {
    Down(CpuId),
    Up(CpuId),
}

/// The cycle: CPU 1 (a worker's) out and back; then CPUs 2 and 3, so that node 1 loses
/// its last CPU and a worker is moved to node 0; then both back.
const CYCLE: [Step; 6] = [Step::Down(1), Step::Up(1), Step::Down(2), Step::Down(3), Step::Up(3), Step::Up(2)];

pub(super) fn run<I: Impl>(
    imp: &I,
    machine: &Machine,
    scale: Scale,
    hotplug: Hotplug,
) -> Result<Measurement> {
    let rounds: u64 = scale.pick(10_000, 40_000);
    let workers = 2;
    let done = AtomicBool::new(false);
    let hotplug_threads = usize::from(hotplug == Hotplug::On);
    // The hotplug thread waits too, so that it starts only once every worker is bound.
    let start = Barrier::new(workers + hotplug_threads);
    let topology: &dyn Topology = &*machine.topology;
    let (tallies, transitions) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|index| {
                spawn_worker(scope, imp, machine, index, &start, move || {
                    let (mut written, mut read) = (0u64, 0u64);
                    let mut live = Vec::with_capacity(BATCH);
                    let mut stamp = (index as u64) << 48;
                    for _ in 0..rounds {
                        for _ in 0..BATCH {
                            stamp += 1;
                            written = written.wrapping_add(stamp);
                            live.push(alloc(imp, stamp));
                        }
                        while let Some(handle) = live.pop() {
                            read = read.wrapping_add(imp.stamp(&handle));
                            imp.free(handle);
                        }
                    }
                    Ok((written, read))
                })
            })
            .collect();
        let (done, start) = (&done, &start);
        let hotplugger = (hotplug == Hotplug::On).then(|| {
            scope.spawn(move || {
                start.wait();
                cycle(imp, topology, done)
            })
        });
        let tallies = handles.into_iter().map(|h| join(h, "hotplug worker")).collect::<Result<Vec<_>>>();
        done.store(true, Ordering::Release);
        let transitions = match hotplugger {
            Some(thread) => thread.join().map_err(|_| anyhow::anyhow!("the hotplug thread panicked"))??,
            None => 0,
        };
        Ok::<_, anyhow::Error>((tallies?, transitions))
    })?;
    let elapsed = span(tallies.iter().map(|t| (&t.begin, &t.end)));
    let written = tallies.iter().fold(0u64, |sum, t| sum.wrapping_add(t.value.0));
    let read = tallies.iter().fold(0u64, |sum, t| sum.wrapping_add(t.value.1));
    check_stamps("hotplug", written, read)?;
    let detail = match hotplug {
        Hotplug::On => format!("{transitions} transitions"),
        Hotplug::Off => String::new(),
    };
    Ok(Measurement { ops: workers as u64 * rounds * BATCH as u64, elapsed, detail })
}

/// Runs the cycle until `done`, then brings every CPU it took down back online. Returns
/// the number of transitions made.
fn cycle<I: Impl>(imp: &I, topology: &dyn Topology, done: &AtomicBool) -> Result<u64> {
    let mut transitions = 0u64;
    let mut result = Ok(());
    'outer: while !done.load(Ordering::Acquire) {
        for step in CYCLE {
            if done.load(Ordering::Acquire) {
                break 'outer;
            }
            result = match step {
                Step::Down(cpu) => {
                    imp.cpu_down(topology, cpu).with_context(|| format!("taking cpu {cpu} offline"))
                }
                Step::Up(cpu) => {
                    imp.cpu_up(topology, cpu).with_context(|| format!("bringing cpu {cpu} online"))
                }
            };
            if result.is_err() {
                break 'outer;
            }
            transitions += 1;
            std::thread::sleep(PAUSE);
        }
    }
    // Leave the machine as found, whatever happened above.
    for cpu in [1, 2, 3] {
        let restored = match topology.cpu_online(cpu) {
            Ok(true) => Ok(()),
            Ok(false) => imp.cpu_up(topology, cpu).with_context(|| format!("bringing cpu {cpu} back online")),
            Err(error) => {
                Err(anyhow::Error::new(error).context(format!("reading whether cpu {cpu} is online")))
            }
        };
        if result.is_ok() {
            result = restored;
        }
    }
    result.map(|()| transitions)
}
