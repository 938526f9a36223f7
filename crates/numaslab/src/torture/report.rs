//! The torture's checks and its report, as text and as JSON.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_utils::CachePadded;
use serde::Serialize;
use topology::CpuSet;

use super::memory::{self, mib, MemoryBound};
use super::onoff::TransitionStats;
use super::worker::{count_by_cache, free_checked, Object, Shared};
use super::{HotplugDriver, TortureConfig};
use crate::NumaSlab;

/// One invariant the torture checked.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked, in words.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// What was seen.
    pub detail: String,
}

/// Median and maximum of the callback times of completed transitions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencySummary {
    /// Transitions measured.
    pub count: usize,
    /// Median callback time, microseconds.
    pub median_us: u64,
    /// Longest callback time, microseconds.
    pub max_us: u64,
}

impl LatencySummary {
    /// Summarises a list of microsecond figures.
    pub fn of(samples: &[u64]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        Self {
            count: sorted.len(),
            median_us: sorted.get(sorted.len() / 2).copied().unwrap_or(0),
            max_us: sorted.last().copied().unwrap_or(0),
        }
    }
}

/// How a run in follow mode heard of the transitions another program made.
#[derive(Debug, Clone, Serialize)]
pub struct Watched {
    /// The watcher's source: `uevent`, `poll`, `fake` or `reconcile-only`.
    pub mode: String,
    /// Wake-ups by that source.
    pub wakeups: u64,
    /// Reconciles run.
    pub reconciles: u64,
    /// Uevents ignored (forged or malformed).
    pub ignored: u64,
    /// Uevent socket overflows.
    pub overflows: u64,
}

impl Watched {
    /// The watcher's mode and what it counted.
    pub fn new(mode: hotplug::WatchMode, stats: hotplug::WatchStats) -> Self {
        let mode = match mode {
            hotplug::WatchMode::Uevent => "uevent",
            hotplug::WatchMode::Poll => "poll",
            hotplug::WatchMode::Fake => "fake",
            _ => "reconcile-only",
        };
        Self {
            mode: mode.into(),
            wakeups: stats.wakeups,
            reconciles: stats.reconciles,
            ignored: stats.ignored,
            overflows: stats.overflows,
        }
    }
}

/// What a torture run did and whether every check passed.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The machine, as its backend names it.
    pub machine: String,
    /// How the caches' per-CPU fast path ran: `"rseq"` (restartable sequences) or
    /// `"cas"` (the compare-and-swap slot fallback).
    pub fast_path: String,
    /// Wall time the workers ran, seconds.
    pub duration_secs: f64,
    /// Worker threads.
    pub workers: usize,
    /// Allocations plus frees.
    pub ops: u64,
    /// Operations per second.
    pub ops_per_sec: f64,
    /// Frees of objects that another worker allocated.
    pub handed_over: u64,
    /// Who switched the CPUs: the torture (`switch`) or another program (`follow`).
    pub hotplug: HotplugDriver,
    /// In follow mode, how the transitions were heard of.
    pub watched: Option<Watched>,
    /// What the hotplug thread did, or in follow mode what it saw.
    pub transitions: TransitionStats,
    /// Callback times of the transitions.
    pub callback_latency: LatencySummary,
    /// The allocator's slabinfo at the end of the run, before the workers' objects were
    /// freed.
    pub slabinfo: String,
    /// The process's peak resident memory during the run, bytes (`VmHWM`, reset when the
    /// run starts).
    pub peak_rss_bytes: Option<u64>,
    /// What the peak may be at most, part by part (the memory check compares the two).
    pub memory_bound: MemoryBound,
    /// What the objects the workers held at the end take in slabs (their count times
    /// `Cache::bytes_per_object`).
    pub live_bytes_at_end: u64,
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// Whether every check passed.
    pub checks_passed: bool,
}

/// What the run leaves for the checks once every thread has stopped.
pub(super) struct Run {
    /// What the hotplug thread did, or in follow mode what the follower saw.
    pub(super) transitions: TransitionStats,
    /// In follow mode, how the watcher heard of the transitions.
    pub(super) watched: Option<Watched>,
    /// The objects each worker still holds (the workers that did not panic).
    pub(super) live: Vec<Vec<Object>>,
    /// The threads that panicked, by name.
    pub(super) panicked: Vec<String>,
    /// How long the workers ran.
    pub(super) elapsed: Duration,
    /// Resident memory when the run started (`memory::start`).
    pub(super) rss_start: Option<u64>,
}

impl Check {
    fn new(name: &str, passed: bool, detail: String) -> Self {
        Self { name: name.to_owned(), passed, detail }
    }

    /// A check that holds when `problems` is empty: then its detail is `fine`, else the
    /// problems joined.
    fn unless_any(name: &str, problems: &[String], fine: String) -> Self {
        let detail = if problems.is_empty() { fine } else { problems.join("; ") };
        Self::new(name, problems.is_empty(), detail)
    }
}

/// Checks every invariant, frees what the workers still hold, destroys the caches and
/// builds the report.
pub(super) fn finish(slab: &Arc<NumaSlab>, config: &TortureConfig, shared: &Shared, run: Run) -> Report {
    let Run { transitions, watched, live, panicked, elapsed, rss_start } = run;
    let held = count_by_cache(&live, shared.caches.len());
    let topology = slab.topology();
    let online = topology.online_cpus().unwrap_or_default();
    let mut checks = vec![
        threads_finished(config, &panicked),
        no_corrupted_pattern(shared),
        every_request_served(shared),
        objects_conserved(shared, &held),
        in_use_matches_held(shared, &held),
        nothing_stranded(slab, shared, &transitions, &online),
        transitions_completed(&transitions),
        cpus_back_online(config, &transitions, &online),
    ];

    let slabinfo = slab.allocator().slabinfo();
    // The memory figures, while the caches and the workers' objects are still there.
    let memory_bound = MemoryBound::of(slab, config, &shared.caches, rss_start);
    let live_bytes_at_end: u64 =
        shared.caches.iter().zip(&held).map(|(cache, &count)| count * cache.bytes_per_object() as u64).sum();
    let peak_rss_bytes = memory::peak_rss_bytes();
    for object in live.into_iter().flatten() {
        free_checked(shared, object);
    }
    checks.push(validated(slab, shared));
    checks.push(caches_destroyed(slab, shared));
    checks.push(memory::check(peak_rss_bytes, &memory_bound, live_bytes_at_end));

    let ops = sum(&shared.allocated) + sum(&shared.freed);
    let secs = elapsed.as_secs_f64().max(1e-9);
    let checks_passed = checks.iter().all(|check| check.passed);
    Report {
        machine: topology.name(),
        fast_path: slab.allocator().fast_path().as_str().to_owned(),
        duration_secs: secs,
        workers: config.workers,
        ops,
        ops_per_sec: ops as f64 / secs,
        handed_over: shared.handed_over.load(Ordering::Relaxed),
        hotplug: config.hotplug,
        watched,
        callback_latency: LatencySummary::of(&transitions.callback_us),
        transitions,
        slabinfo,
        peak_rss_bytes,
        memory_bound,
        live_bytes_at_end,
        checks,
        checks_passed,
    }
}

/// The sum of per-cache counters.
fn sum(counts: &[CachePadded<AtomicU64>]) -> u64 {
    counts.iter().map(|count| count.load(Ordering::Relaxed)).sum()
}

fn threads_finished(config: &TortureConfig, panicked: &[String]) -> Check {
    let fine = match config.hotplug {
        HotplugDriver::Switch => format!("{} workers and the hotplug thread", config.workers),
        HotplugDriver::Follow => format!("{} workers and the follower", config.workers),
    };
    let detail = if panicked.is_empty() { fine } else { format!("panicked: {}", panicked.join(", ")) };
    Check::new("every thread finished", panicked.is_empty(), detail)
}

fn no_corrupted_pattern(shared: &Shared) -> Check {
    let corrupted = shared.corrupted.load(Ordering::Relaxed);
    Check::new("no worker saw a corrupted pattern", corrupted == 0, format!("{corrupted} corrupted objects"))
}

fn every_request_served(shared: &Shared) -> Check {
    let errors = shared.errors.load(Ordering::Relaxed);
    let first = shared.first_error.lock().unwrap_or_else(|poison| poison.into_inner()).clone();
    let detail = match first {
        Some(first) => format!("{errors} errors, the first: {first}"),
        None => "no errors".into(),
    };
    Check::new("the allocator served every request", errors == 0, detail)
}

/// Conservation: each object allocated was freed exactly once or is still held.
fn objects_conserved(shared: &Shared, held: &[u64]) -> Check {
    let mut lost = Vec::new();
    for (index, cache) in shared.caches.iter().enumerate() {
        let allocated = shared.allocated[index].load(Ordering::Relaxed);
        let freed = shared.freed[index].load(Ordering::Relaxed);
        if allocated != freed + held[index] {
            lost.push(format!(
                "{}: {allocated} allocated, {freed} freed, {} held",
                cache.name(),
                held[index]
            ));
        }
    }
    Check::unless_any(
        "every object allocated is freed exactly once or still held",
        &lost,
        format!("{} objects allocated, all accounted for", sum(&shared.allocated)),
    )
}

fn in_use_matches_held(shared: &Shared, held: &[u64]) -> Check {
    let mut mismatched = Vec::new();
    for (index, cache) in shared.caches.iter().enumerate() {
        let in_use = cache.stats().in_use as u64;
        if in_use != held[index] {
            mismatched.push(format!(
                "{}: allocator counts {in_use} in use, workers hold {}",
                cache.name(),
                held[index]
            ));
        }
    }
    Check::unless_any(
        "the allocator's in-use count matches the objects held",
        &mismatched,
        format!("{} objects held", held.iter().sum::<u64>()),
    )
}

/// No object may sit in the array cache of a CPU that is offline.
fn nothing_stranded(
    slab: &NumaSlab,
    shared: &Shared,
    transitions: &TransitionStats,
    online: &CpuSet,
) -> Check {
    let mut stranded: Vec<String> = transitions
        .stranded
        .iter()
        .map(|(cpu, count)| format!("cpu {cpu}: {count} objects right after going offline"))
        .collect();
    for cpu in slab.topology().possible_cpus().difference(online).iter() {
        let count: usize = shared.caches.iter().map(|cache| cache.cpu_cache_len(cpu)).sum();
        if count > 0 {
            stranded.push(format!("cpu {cpu}: {count} objects at the end"));
        }
    }
    Check::unless_any(
        "no object is left in the cache of an offline CPU",
        &stranded,
        format!("{} offline transitions checked", transitions.offline),
    )
}

fn transitions_completed(transitions: &TransitionStats) -> Check {
    let detail = if transitions.failed == 0 {
        format!("{} of {} transitions completed", transitions.done, transitions.attempted)
    } else {
        format!(
            "{} of {} failed: {}",
            transitions.failed,
            transitions.attempted,
            transitions.errors.join("; ")
        )
    };
    Check::new("every hotplug transition completed", transitions.failed == 0, detail)
}

fn cpus_back_online(config: &TortureConfig, transitions: &TransitionStats, online: &CpuSet) -> Check {
    let not_restored = &transitions.not_restored;
    let detail = if !not_restored.is_empty() {
        format!("{not_restored:?}")
    } else if config.hotplug == HotplugDriver::Follow {
        format!("the run switched no CPU itself; online at the end: {online}")
    } else {
        format!("online at the end: {online}")
    };
    Check::new("every CPU taken offline is back online", not_restored.is_empty(), detail)
}

fn validated(slab: &NumaSlab, shared: &Shared) -> Check {
    let validation = slab.allocator().validate();
    let detail = match &validation {
        Ok(()) => format!("{} caches validated", shared.caches.len()),
        Err(error) => error.to_string(),
    };
    Check::new("validate() accounts for every object and slab", validation.is_ok(), detail)
}

fn caches_destroyed(slab: &NumaSlab, shared: &Shared) -> Check {
    let refused: Vec<String> = shared
        .caches
        .iter()
        .filter_map(|cache| slab.allocator().destroy_cache(cache).err())
        .map(|error| error.to_string())
        .collect();
    Check::unless_any(
        "every cache is empty and destroyed at the end",
        &refused,
        format!("{} caches destroyed", shared.caches.len()),
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.transitions;
        writeln!(f, "numaslab torture on {} (fast path: {})", self.machine, self.fast_path)?;
        writeln!(
            f,
            "  {} workers, {:.1} s: {} operations, {:.0} ops/s, {} handed to another worker",
            self.workers, self.duration_secs, self.ops, self.ops_per_sec, self.handed_over
        )?;
        let (label, tried) = match self.hotplug {
            HotplugDriver::Switch => ("transitions", "attempted"),
            HotplugDriver::Follow => ("transitions made by another program", "seen"),
        };
        writeln!(
            f,
            "  {label}: {} {tried}, {} done ({} offline, {} online), {} failed; a node lost its last CPU {} times",
            t.attempted, t.done, t.offline, t.online, t.failed, t.nodes_emptied
        )?;
        if let Some(watched) = &self.watched {
            writeln!(
                f,
                "  followed by {}: {} wake-ups, {} reconciles, {} uevents ignored, {} overflows",
                watched.mode, watched.wakeups, watched.reconciles, watched.ignored, watched.overflows
            )?;
        }
        writeln!(
            f,
            "  callback latency: median {} us, max {} us over {} transitions",
            self.callback_latency.median_us, self.callback_latency.max_us, self.callback_latency.count
        )?;
        for error in &t.errors {
            writeln!(f, "  transition error: {error}")?;
        }
        let peak =
            self.peak_rss_bytes.map_or_else(|| "unknown".to_owned(), |bytes| format!("{} MiB", mib(bytes)));
        writeln!(f, "  peak RSS: {peak}, live set at the end {} MiB", mib(self.live_bytes_at_end))?;
        writeln!(f, "  memory bound: {}", self.memory_bound.describe())?;
        writeln!(f, "\nslabinfo at the end of the run:")?;
        let mut table = String::new();
        for line in self.slabinfo.lines() {
            let _ = writeln!(table, "  {line}");
        }
        f.write_str(&table)?;
        writeln!(f, "\nchecks:")?;
        for check in &self.checks {
            writeln!(f, "  [{}] {}: {}", if check.passed { "ok" } else { "FAIL" }, check.name, check.detail)?;
        }
        writeln!(f, "\n{}", if self.checks_passed { "all checks passed" } else { "CHECKS FAILED" })
    }
}
