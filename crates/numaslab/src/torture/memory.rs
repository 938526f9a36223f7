//! The torture's memory check: the process's peak resident memory (`VmHWM`) during the
//! run against a bound derived from the configuration (`docs/torture.md`, "Memory"):
//!
//! ```text
//! bound = RSS at the start of the run
//!       + the caches' limits       (sum of Cache::limits_bytes)
//!       + the page-block cache     (Allocator::page_cache_bound_bytes: 4 MiB a node)
//!       + the live set             (workers * (max_live + inbox capacity) * the largest
//!                                   Cache::bytes_per_object)
//!       + an allowance             (RUN_ALLOWANCE_BYTES: stacks, metadata, queues)
//! ```

use std::sync::Arc;

use serde::Serialize;
use slab_core::Cache;

use super::report::Check;
use super::{inbox_capacity, TortureConfig};
use crate::NumaSlab;

/// What the run allocates beside slabs and the page-block cache, rounded up: six threads'
/// stacks as far as they are touched, the workers' live vectors and inboxes (24-byte
/// records), the array caches' entry tables (8 bytes per entry, some 60 KiB for the
/// default caches on the seed box), the hotplug state machine's records and the report's
/// text, and the malloc arenas of the threads that hold them.
pub(crate) const RUN_ALLOWANCE_BYTES: u64 = 4 << 20;

/// The memory a run may use at its peak, part by part.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MemoryBound {
    /// Resident memory when the run started, before its caches existed (`VmRSS`): the
    /// program, its libraries and what it did before; `None` where `/proc` is absent.
    pub start_bytes: Option<u64>,
    /// What the caches' limits let them keep with no object out (`Cache::limits_bytes`,
    /// summed over the caches).
    pub limits_bytes: u64,
    /// What the allocator's page-block cache may keep over every memory node.
    pub page_cache_bytes: u64,
    /// The live set at its largest: every worker holding `max_live` objects with as many
    /// in its inbox, all of the largest cache (`Cache::bytes_per_object`).
    pub live_bytes: u64,
    /// [`RUN_ALLOWANCE_BYTES`].
    pub allowance_bytes: u64,
}

impl MemoryBound {
    /// The bound for `config` on `slab`, with the torture's `caches` still alive.
    pub(crate) fn of(
        slab: &NumaSlab,
        config: &TortureConfig,
        caches: &[Arc<Cache>],
        start: Option<u64>,
    ) -> Self {
        let per_worker = (config.max_live.max(4) + inbox_capacity(config)) as u64;
        let largest = caches.iter().map(|cache| cache.bytes_per_object()).max().unwrap_or(0) as u64;
        Self {
            start_bytes: start,
            limits_bytes: caches.iter().map(|cache| cache.limits_bytes() as u64).sum(),
            page_cache_bytes: slab.allocator().page_cache_bound_bytes() as u64,
            live_bytes: config.workers as u64 * per_worker * largest,
            allowance_bytes: RUN_ALLOWANCE_BYTES,
        }
    }

    /// The sum of the parts (the start counted as 0 where unknown).
    pub fn total_bytes(&self) -> u64 {
        self.start_bytes.unwrap_or(0)
            + self.limits_bytes
            + self.page_cache_bytes
            + self.live_bytes
            + self.allowance_bytes
    }

    /// The parts in words, in MiB.
    pub fn describe(&self) -> String {
        let start = self.start_bytes.map_or_else(|| "unknown".to_owned(), mib);
        format!(
            "{} MiB = start {start} + caches' limits {} + page cache {} + live set {} + allowance {}",
            mib(self.total_bytes()),
            mib(self.limits_bytes),
            mib(self.page_cache_bytes),
            mib(self.live_bytes),
            mib(self.allowance_bytes),
        )
    }
}

/// Bytes as MiB with one decimal.
pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1 << 20) as f64)
}

/// Starts the run's memory accounting: resets the process's peak RSS to its current RSS
/// (`5` to `/proc/self/clear_refs`, Linux 4.0 and later), so that `VmHWM` at the end is
/// the run's own peak, and returns the RSS now. Best effort: without `/proc` the peak is
/// the process's since it started, and the start unknown.
pub(crate) fn start() -> Option<u64> {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status().and_then(|status| status.vmrss).map(|kb| kb * 1024)
}

/// The process's peak resident set (`VmHWM`), in bytes.
pub(crate) fn peak_rss_bytes() -> Option<u64> {
    status().and_then(|status| status.vmhwm).map(|kb| kb * 1024)
}

fn status() -> Option<procfs_core::process::Status> {
    use procfs_core::FromRead;
    procfs_core::process::Status::from_file("/proc/self/status").ok()
}

/// The check: the peak stays within the bound. Without a measured peak there is nothing
/// to compare, and the check says so instead of failing.
pub(crate) fn check(peak: Option<u64>, bound: &MemoryBound, live_at_end: u64) -> Check {
    let name = "peak RSS stays within the memory bound".to_owned();
    let Some(peak) = peak else {
        return Check { name, passed: true, detail: "VmHWM is unavailable here: not measured".into() };
    };
    let passed = peak <= bound.total_bytes();
    let relation = if passed { "<=" } else { "exceeds" };
    Check {
        name,
        passed,
        detail: format!(
            "peak {} MiB {relation} bound {}; live at the end {} MiB",
            mib(peak),
            bound.describe(),
            mib(live_at_end)
        ),
    }
}

#[cfg(test)]
mod tests;
