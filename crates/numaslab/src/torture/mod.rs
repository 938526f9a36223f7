//! The seed's torture test, generalised: workers allocate, touch and free objects of
//! several caches, handing some to workers on other nodes, while a hotplug thread takes
//! CPUs offline and online, the last CPU of a node included. At the end every object is
//! accounted for and the allocator validated.
//!
//! The seed patch "survived onlining and offlining on a 4 core 2 node Tyan box with a 4
//! dbench process running all the time"; the defaults here are that box and four workers.

mod follow;
mod memory;
mod onoff;
mod pattern;
mod report;
mod worker;

use std::alloc::Layout;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use serde::Serialize;
use slab_core::{Cache, CacheFlags};
use topology::{CpuId, CpuSet, Topology};

pub use self::memory::MemoryBound;
pub use self::onoff::TransitionStats;
pub use self::report::{Check, LatencySummary, Report, Watched};
use self::worker::{Object, Shared, Worker, WorkerPlan};
use crate::{Error, NumaSlab, Result};

/// A fault the torture injects on purpose, so that tests can prove its checks fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// One worker forgets one object instead of freeing it.
    LeakOne,
    /// One worker panics after its first thousand allocations.
    PanicOne,
    /// The first bring-up of the first CPU the hotplug thread may switch fails in a
    /// callback and rolls back, as a refusing driver or kernel would make it.
    FailOneTransition,
    /// The run holds [`HELD_BYTES`] of memory of its own, touched, from start to end, as a
    /// leak outside the allocator would: the memory check must fail.
    HoldMemory,
}

/// What [`Fault::HoldMemory`] holds: more than the bound of any default run.
pub const HELD_BYTES: usize = 96 << 20;

/// Who switches the CPUs during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HotplugDriver {
    /// The torture's own hotplug thread, every `interval`.
    #[default]
    Switch,
    /// Another program: the torture switches nothing and follows, through the hotplug
    /// watcher, the transitions it makes, counting and checking them the same way.
    Follow,
}

/// How a torture run is set up.
#[derive(Debug, Clone)]
pub struct TortureConfig {
    /// How long the workers run.
    pub duration: Duration,
    /// Worker threads, bound to the machine's CPUs in turn, spread over nodes.
    pub workers: usize,
    /// Time between two hotplug steps; zero turns hotplug off.
    pub interval: Duration,
    /// Object sizes, one cache each; each is rounded up to a multiple of 8.
    pub sizes: Vec<usize>,
    /// Creates the caches in debug mode (red zones, poison, misuse detection).
    pub debug: bool,
    /// Seed of every random choice.
    pub seed: u64,
    /// Objects each worker keeps alive at most.
    pub max_live: usize,
    /// Share of frees handed to a worker on another node, in percent.
    pub remote_percent: u32,
    /// CPUs the hotplug thread may switch; `None` for every possible CPU but cpu0.
    pub hotplug_cpus: Option<CpuSet>,
    /// A fault to inject, for tests.
    pub fault: Option<Fault>,
    /// Who switches the CPUs.
    pub hotplug: HotplugDriver,
}

impl Default for TortureConfig {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(10),
            workers: 4,
            interval: Duration::from_millis(20),
            sizes: vec![32, 192, 1024, 4096],
            debug: false,
            seed: 0x5eed,
            max_live: 512,
            remote_percent: 25,
            hotplug_cpus: None,
            fault: None,
            hotplug: HotplugDriver::Switch,
        }
    }
}

/// Live figures a front end can show while the torture runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Allocations and frees so far.
    pub ops: AtomicU64,
    /// Completed transitions so far.
    pub transitions: Arc<AtomicU64>,
    /// Set once the workers are bound and the hotplug thread, or in follow mode the
    /// watcher and the follower, run: from then on a change another program makes is
    /// counted (one made before is only the machine the run starts on).
    pub started: AtomicBool,
}

/// Runs the torture on `slab` until `config.duration` passes or `stop` is set, then checks
/// every invariant and reports. Every CPU the run took offline is back online when this
/// returns, also when a worker panics.
pub fn run(
    slab: &Arc<NumaSlab>,
    config: &TortureConfig,
    stop: &AtomicBool,
    progress: &Progress,
) -> Result<Report> {
    if config.workers == 0 || config.sizes.is_empty() {
        return Err(Error::Config("the torture needs at least one worker and one object size".into()));
    }
    check_sizes(&config.sizes)?;
    let topology = slab.topology().clone();
    if let Some(cpus) = &config.hotplug_cpus {
        check_hotplug_cpus(&*topology, cpus)?;
    }
    let rss_start = memory::start();
    let held =
        (config.fault == Some(Fault::HoldMemory)).then(|| std::hint::black_box(vec![0x5au8; HELD_BYTES]));
    let shared = Arc::new(Shared::new(topology.clone(), create_caches(slab, config)?, config.fault));
    let plans = plan_workers(&*topology, config)?;
    let following = start_following(slab, config)?;
    let watch_mode = following.as_ref().map(|(watcher, _)| watcher.mode());
    let candidates = hotplug_candidates(&*topology, config);
    let fault_state = match (config.fault, candidates.first()) {
        (Some(Fault::FailOneTransition), Some(cpu)) => Some(fail_first_bring_up(slab, cpu)?),
        _ => None,
    };
    let started = Instant::now();
    let hotplug_stop = AtomicBool::new(false);
    let bound = Barrier::new(plans.len() + 1);
    let (stats, live, watch_stats) = std::thread::scope(|scope| {
        let workers = spawn_workers(scope, &plans, &shared, config, &bound);
        bound.wait();
        let events = following.as_ref().map(|(_, events)| events.clone());
        let hotplug = spawn_hotplug(scope, slab, config, progress, events, candidates, &hotplug_stop);
        progress.started.store(true, Ordering::Release);
        wait_for_end(config, stop, started, progress, &shared, &workers);
        // Hotplug stops first and brings its CPUs back (in follow mode: the watcher stops,
        // then the follower reads what is queued), then the workers stop.
        let watch_stats = following.map(|(watcher, _)| stop_watcher(slab, watcher));
        hotplug_stop.store(true, Ordering::Relaxed);
        let stats = hotplug.map(|handle| handle.join()).transpose();
        shared.stop.store(true, Ordering::Relaxed);
        let live: Vec<_> = workers.into_iter().map(|worker| worker.join()).collect();
        (stats, live, watch_stats)
    });
    let elapsed = started.elapsed();
    if let Some(state) = fault_state {
        slab.hotplug().remove_state_nocalls(state)?;
    }
    let (transitions, live, panicked) = sort_out_panics(stats, live);
    let watched = watch_mode.zip(watch_stats).map(|(mode, stats)| report::Watched::new(mode, stats));
    let run = report::Run { transitions, watched, live, panicked, elapsed, rss_start };
    let report = report::finish(slab, config, &shared, run);
    drop(held);
    Ok(report)
}

/// In follow mode, the watcher that runs the callbacks of the transitions another program
/// makes, and the events the follower reads, subscribed before the watcher starts.
fn start_following(
    slab: &NumaSlab,
    config: &TortureConfig,
) -> Result<Option<(hotplug::Watcher, Receiver<hotplug::Event>)>> {
    Ok(match config.hotplug {
        HotplugDriver::Switch => None,
        HotplugDriver::Follow => {
            let events = slab.hotplug().events();
            let watcher = hotplug::Watcher::start(slab.hotplug())?;
            Some((watcher, events))
        }
    })
}

/// Starts one thread per worker plan; each binds itself to its CPU and waits at `bound`.
fn spawn_workers<'scope>(
    scope: &'scope Scope<'scope, '_>,
    plans: &[WorkerPlan],
    shared: &Arc<Shared>,
    config: &TortureConfig,
    bound: &'scope Barrier,
) -> Vec<ScopedJoinHandle<'scope, Vec<Object>>> {
    let (senders, receivers): (Vec<_>, Vec<_>) =
        plans.iter().map(|_| crossbeam_channel::bounded(inbox_capacity(config))).unzip();
    plans
        .iter()
        .cloned()
        .zip(receivers)
        .map(|(plan, inbox)| {
            let name = format!("torture-worker-{}", plan.index);
            let worker = Worker::new(plan, shared.clone(), inbox, senders.clone());
            std::thread::Builder::new()
                .name(name)
                .spawn_scoped(scope, || worker.run(bound))
                .expect("spawning a torture worker")
        })
        .collect()
}

/// Starts the hotplug thread: the follower of `events` in follow mode, else the thread
/// that switches `candidates` (none when the interval is zero).
fn spawn_hotplug<'scope>(
    scope: &'scope Scope<'scope, '_>,
    slab: &Arc<NumaSlab>,
    config: &TortureConfig,
    progress: &Progress,
    events: Option<Receiver<hotplug::Event>>,
    candidates: CpuSet,
    stop: &'scope AtomicBool,
) -> Option<ScopedJoinHandle<'scope, TransitionStats>> {
    match events {
        Some(events) => {
            let follow = follow::Follow {
                slab: slab.clone(),
                events,
                progress: progress.transitions.clone(),
                online: CpuSet::new(),
            };
            Some(scope.spawn(move || follow.run(stop)))
        }
        None => {
            let onoff = onoff::OnOff {
                slab: slab.clone(),
                candidates,
                interval: config.interval,
                seed: config.seed,
                progress: progress.transitions.clone(),
            };
            (!config.interval.is_zero()).then(|| scope.spawn(move || onoff.run(stop)))
        }
    }
}

/// Waits until the run's time is up, `stop` is set or a worker has panicked, publishing
/// the operation count for the progress bar meanwhile.
fn wait_for_end(
    config: &TortureConfig,
    stop: &AtomicBool,
    started: Instant,
    progress: &Progress,
    shared: &Shared,
    workers: &[ScopedJoinHandle<'_, Vec<Object>>],
) {
    while started.elapsed() < config.duration && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20).min(config.duration));
        progress.ops.store(shared.ops.load(Ordering::Relaxed), Ordering::Relaxed);
        if workers.iter().any(|worker| worker.is_finished()) {
            break; // A worker panicked: stop everything and report.
        }
    }
}

/// Stops the follow mode's watcher and returns what it counted.
fn stop_watcher(slab: &NumaSlab, watcher: hotplug::Watcher) -> hotplug::WatchStats {
    let stats = watcher.stop();
    // A change made just before the end may not have been heard of yet: one last look at
    // the machine, whose events the follower still reads.
    let _ = slab.hotplug().reconcile(hotplug::Source::Reconcile);
    stats
}

/// The hotplug thread's statistics, the objects of the workers that finished, and the
/// names of the threads that panicked.
fn sort_out_panics(
    stats: std::thread::Result<Option<TransitionStats>>,
    live: Vec<std::thread::Result<Vec<Object>>>,
) -> (TransitionStats, Vec<Vec<Object>>, Vec<String>) {
    // A panicked hotplug thread restored its CPUs while unwinding (`Restore`), but its
    // statistics are lost; it counts as a panicked thread.
    let (stats, hotplug_panicked) = match stats {
        Ok(stats) => (stats.unwrap_or_default(), false),
        Err(_) => (TransitionStats::default(), true),
    };
    let mut panicked: Vec<String> = live
        .iter()
        .enumerate()
        .filter(|(_, result)| result.is_err())
        .map(|(index, _)| format!("worker {index}"))
        .collect();
    if hotplug_panicked {
        panicked.push("the hotplug thread".into());
    }
    let live = live.into_iter().filter_map(|result| result.ok()).collect();
    (stats, live, panicked)
}

/// Registers a hotplug state whose startup fails once, on `cpu`: the injected
/// [`Fault::FailOneTransition`].
fn fail_first_bring_up(slab: &NumaSlab, cpu: CpuId) -> Result<hotplug::StateId> {
    let fired = AtomicBool::new(false);
    let state = hotplug::State::new("torture:fault").startup(move |up| {
        if up == cpu && !fired.swap(true, Ordering::Relaxed) {
            return Err(hotplug::CallbackError::msg(format!("injected fault: cpu {cpu} refuses to come up")));
        }
        Ok(())
    });
    Ok(slab.hotplug().setup_state_nocalls(hotplug::Slot::OnlineDynamic, state)?)
}

/// How many handed-over objects a worker's inbox holds at most: its own live set. A
/// sender whose peer's inbox is full frees the object itself, so objects in flight never
/// outnumber the objects the workers keep (an unbounded inbox grew by hundreds of
/// thousands of objects, 100-200 MiB, whenever its worker was descheduled for a moment
/// while the others kept allocating and handing over).
pub(crate) fn inbox_capacity(config: &TortureConfig) -> usize {
    config.max_live.max(4)
}

/// Creates one cache per object size.
/// The object size of the cache that serves `size`-byte objects: rounded up to a multiple
/// of 8 bytes (at least 8), and named `torture-<that size>`.
pub fn cache_size(size: usize) -> usize {
    size.max(8).next_multiple_of(8)
}

/// Refuses two sizes served by one cache ([`cache_size`]): each size is one cache of its
/// own, so `32,32` or `33,40` would name one cache twice.
pub fn check_sizes(sizes: &[usize]) -> Result<()> {
    for (at, &size) in sizes.iter().enumerate() {
        if let Some(&earlier) = sizes[..at].iter().find(|&&earlier| cache_size(earlier) == cache_size(size)) {
            return Err(Error::Config(format!(
                "object sizes {earlier} and {size} are both served by one cache of {} bytes \
                 (sizes are rounded up to a multiple of 8); give each size once",
                cache_size(size)
            )));
        }
    }
    Ok(())
}

fn create_caches(slab: &NumaSlab, config: &TortureConfig) -> Result<Vec<Arc<Cache>>> {
    let flags = if config.debug { CacheFlags::DEBUG } else { CacheFlags::NONE };
    config
        .sizes
        .iter()
        .map(|&size| {
            let size = cache_size(size);
            let layout = Layout::from_size_align(size, 8)
                .map_err(|_| Error::Config(format!("object size {size} is too large")))?;
            Ok(slab.allocator().create_cache(&format!("torture-{size}"), layout, flags)?)
        })
        .collect()
}

/// Binds workers to allowed online CPUs, alternating nodes so that cross-node frees have
/// somewhere to go, and gives each its peers on other nodes.
fn plan_workers(topology: &dyn Topology, config: &TortureConfig) -> Result<Vec<WorkerPlan>> {
    let mut allowed = topology.allowed_cpus();
    if allowed.is_empty() {
        allowed = topology.online_cpus()?;
    }
    let mut by_node: Vec<Vec<CpuId>> = Vec::new();
    for node in topology.online_nodes().iter() {
        let cpus: Vec<CpuId> = topology.node_cpus(node).intersection(&allowed).iter().collect();
        if !cpus.is_empty() {
            by_node.push(cpus);
        }
    }
    let depth = by_node.iter().map(Vec::len).max().unwrap_or(0);
    let order: Vec<CpuId> =
        (0..depth).flat_map(|i| by_node.iter().filter_map(move |cpus| cpus.get(i).copied())).collect();
    if order.is_empty() {
        return Err(Error::Config(format!("{} has no CPU this process may run on", topology.name())));
    }
    let cpus: Vec<CpuId> = (0..config.workers).map(|i| order[i % order.len()]).collect();
    let node_of = |cpu: CpuId| topology.cpu_node(cpu);
    let nodes: Vec<_> = topology.online_nodes().iter().collect();
    Ok((0..config.workers)
        .map(|index| {
            let remote: Vec<usize> =
                (0..config.workers).filter(|&other| node_of(cpus[other]) != node_of(cpus[index])).collect();
            let peers = if remote.is_empty() {
                (0..config.workers).filter(|&other| other != index).collect()
            } else {
                remote
            };
            WorkerPlan {
                index,
                cpu: cpus[index],
                peers,
                max_live: config.max_live.max(4),
                remote_percent: config.remote_percent.min(100),
                nodes: nodes.clone(),
                seed: config.seed.wrapping_add(index as u64 * 0x9e37_79b9),
            }
        })
        .collect())
}

/// The CPUs the hotplug thread may switch: as configured, else every switchable CPU but
/// cpu0 (which real machines usually cannot take offline).
fn hotplug_candidates(topology: &dyn Topology, config: &TortureConfig) -> CpuSet {
    match &config.hotplug_cpus {
        Some(cpus) => cpus.clone(),
        None => {
            let mut candidates = switchable_cpus(topology);
            candidates.remove(0);
            candidates
        }
    }
}

/// The CPUs of `topology` that can be taken offline and brought online: every present
/// CPU of a backend without a sysfs tree (the fake), else the present CPUs that have a
/// `cpuN/online` file (the kernel gives none to a CPU it cannot unplug, often cpu0).
pub fn switchable_cpus(topology: &dyn Topology) -> CpuSet {
    topology.present_cpus().iter().filter(|&cpu| topology.can_switch_cpu(cpu)).collect()
}

/// Refuses a set of CPUs to switch of which some do not exist or cannot be switched,
/// naming them, so that a run does not start only to fail its transitions.
pub fn check_hotplug_cpus(topology: &dyn Topology, cpus: &CpuSet) -> Result<()> {
    let present = topology.present_cpus();
    let missing = cpus.difference(&present);
    let fixed = cpus.intersection(&present).difference(&switchable_cpus(topology));
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("cpu {missing} does not exist on {} (present: {present})", topology.name()));
    }
    if !fixed.is_empty() {
        problems.push(format!("cpu {fixed} cannot be switched (no cpuN/online file)"));
    }
    if problems.is_empty() {
        return Ok(());
    }
    let switchable = list_or_none(&switchable_cpus(topology));
    Err(Error::Config(format!("{}; switchable: {switchable}", problems.join("; "))))
}

fn list_or_none(cpus: &CpuSet) -> String {
    if cpus.is_empty() {
        "none".into()
    } else {
        cpus.to_string()
    }
}

#[cfg(test)]
mod tests;
