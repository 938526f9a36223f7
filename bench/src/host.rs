//! The machine a run was measured on, for the report's head, from `sysinfo`: CPU model
//! and count, memory, kernel and operating system. Recorded by the driver in `run.json`,
//! so that a report redrawn elsewhere still names the machine of the figures.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

/// Facts about the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Host {
    /// The CPU model (`model name` of `/proc/cpuinfo` on Linux).
    pub(crate) cpu_model: String,
    /// Logical CPUs the operating system knows.
    pub(crate) cpus: usize,
    /// Physical memory, bytes.
    pub(crate) memory_bytes: u64,
    /// The kernel's release, such as `6.18.0`.
    pub(crate) kernel: String,
    /// The operating system, such as `Linux 12 Debian GNU/Linux`.
    pub(crate) os: String,
    /// What one uncontended `lock cmpxchg` plus a releasing store cost here, ns (the CAS
    /// slot protocol's price per operation). Hosts of one machine kind differ most in
    /// this (2.3 ns on one, 9.4 ns on another), so it tells a reader which host a table
    /// came from. Absent in runs recorded before it was measured.
    #[serde(default)]
    pub(crate) cas_ns: Option<f64>,
    /// What one plain load plus store of the same word cost, ns, for comparison.
    #[serde(default)]
    pub(crate) load_store_ns: Option<f64>,
}

impl Host {
    /// Reads the facts of this machine; a fact the system does not give is `unknown`.
    pub(crate) fn this_machine() -> Host {
        let system = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        );
        let unknown = || "unknown".to_owned();
        Host {
            cpu_model: system
                .cpus()
                .first()
                .map(|cpu| cpu.brand().trim().to_owned())
                .filter(|brand| !brand.is_empty())
                .unwrap_or_else(unknown),
            cpus: system.cpus().len(),
            memory_bytes: system.total_memory(),
            kernel: System::kernel_version().unwrap_or_else(unknown),
            os: System::long_os_version().unwrap_or_else(unknown),
            cas_ns: Some(median_ns(cas_and_release)),
            load_store_ns: Some(median_ns(load_and_store)),
        }
    }

    /// One line for the report's head.
    pub(crate) fn summary(&self) -> String {
        let costs = match (self.cas_ns, self.load_store_ns) {
            (Some(cas), Some(plain)) => {
                format!("; uncontended lock cmpxchg + release store {cas:.2} ns, plain load + store {plain:.2} ns")
            }
            _ => String::new(),
        };
        format!(
            "{} CPUs, {}, {:.1} GiB, kernel {}, {}{costs}",
            self.cpus,
            self.cpu_model,
            self.memory_bytes as f64 / f64::from(1u32 << 30),
            self.kernel,
            self.os
        )
    }
}

/// Operations per timed round of [`median_ns`].
const ROUND_OPS: u32 = 1_000_000;

/// The median over 9 rounds of `op`'s cost per call, ns.
fn median_ns(op: fn(&AtomicU64, u64)) -> f64 {
    let word = AtomicU64::new(0);
    let mut rounds: Vec<f64> = (0..9)
        .map(|_| {
            let start = Instant::now();
            for i in 0..u64::from(ROUND_OPS) {
                op(black_box(&word), i);
            }
            start.elapsed().as_secs_f64() * 1e9 / f64::from(ROUND_OPS)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

/// The CAS slot protocol's lock and unlock: `lock cmpxchg`, then a releasing store.
#[inline(never)]
fn cas_and_release(word: &AtomicU64, _: u64) {
    let _ = word.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed);
    word.store(0, Ordering::Release);
}

/// A plain load and store of the word (what an rseq commit costs beside its loads).
#[inline(never)]
fn load_and_store(word: &AtomicU64, i: u64) {
    let value = word.load(Ordering::Relaxed);
    word.store(value.wrapping_add(i), Ordering::Relaxed);
}

#[cfg(test)]
mod tests;
