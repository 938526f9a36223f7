//! The seven workloads of SPEC section 7, their cases and their sizes.
//!
//! A *case* is one workload with its parameters (batch length, order, remote share,
//! hotplug on or off) at one object size; the driver runs every case for every
//! implementation, each run in its own process.

mod batch;
mod cache_scratch;
mod cross_node;
mod hot_pair;
mod hotplug;
mod larson;
mod producer_consumer;

use std::sync::{Arc, Barrier};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use topology::{CpuId, FakeTopology, SysfsTopology, Topology};

use crate::impls::Impl;

/// How much work each run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scale {
    /// A smoke check: every workload and implementation, one size, little work.
    Quick,
    /// Real figures.
    Full,
}

impl Scale {
    /// Picks the quick or the full figure.
    pub(crate) fn pick<T>(self, quick: T, full: T) -> T {
        match self {
            Scale::Quick => quick,
            Scale::Full => full,
        }
    }
}

/// The order a batch is freed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// Last allocated, first freed.
    Lifo,
    /// First allocated, first freed.
    Fifo,
}

/// Whether the hotplug workload runs its hotplug thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hotplug {
    /// CPUs go offline and online while the workers run.
    On,
    /// The same workers, no hotplug thread.
    Off,
}

/// One workload with its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workload {
    /// 1: allocate then free at once, one thread.
    HotPair,
    /// 2: allocate `n`, then free them in `order`.
    Batch { n: usize, order: Order },
    /// 3: one thread only allocates, another only frees (xmalloc-test).
    ProducerConsumer,
    /// 4: fixed-size larson: random replacement, arrays handed to successor threads.
    Larson,
    /// 5: passive false sharing (cache-scratch).
    CacheScratch,
    /// 6: two threads on two nodes (this machine's CPUs laid out on two nodes, else the
    /// seed box), `remote_percent` of frees remote.
    CrossNode { remote_percent: u32 },
    /// 7: two workers on the seed box, with or without a hotplug thread.
    Hotplug(Hotplug),
}

/// The workload families in report order: (number, title).
pub(crate) const FAMILIES: [(u32, &str); 7] = [
    (1, "hot pair"),
    (2, "batch alloc n then free"),
    (3, "producer/consumer (xmalloc-test)"),
    (4, "fixed-size larson"),
    (5, "passive false sharing (cache-scratch)"),
    (6, "cross-node frees on two nodes"),
    (7, "throughput under CPU hotplug"),
];

impl Workload {
    /// The name used on the command line and in `results.json`; it starts with the
    /// family number.
    pub(crate) fn name(self) -> String {
        match self {
            Workload::HotPair => "1-hot-pair".into(),
            Workload::Batch { n, order: Order::Lifo } => format!("2-batch-lifo-n{n}"),
            Workload::Batch { n, order: Order::Fifo } => format!("2-batch-fifo-n{n}"),
            Workload::ProducerConsumer => "3-producer-consumer".into(),
            Workload::Larson => "4-larson".into(),
            Workload::CacheScratch => "5-cache-scratch".into(),
            Workload::CrossNode { remote_percent } => format!("6-cross-node-remote{remote_percent}"),
            Workload::Hotplug(Hotplug::On) => "7-hotplug-on".into(),
            Workload::Hotplug(Hotplug::Off) => "7-hotplug-off".into(),
        }
    }

    /// The family number (the first digit of the name).
    pub(crate) fn family(self) -> u32 {
        match self {
            Workload::HotPair => 1,
            Workload::Batch { .. } => 2,
            Workload::ProducerConsumer => 3,
            Workload::Larson => 4,
            Workload::CacheScratch => 5,
            Workload::CrossNode { .. } => 6,
            Workload::Hotplug(_) => 7,
        }
    }

    /// Parses a name as [`Workload::name`] prints it.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let every = Self::every();
        every.iter().copied().find(|w| w.name() == text).ok_or_else(|| {
            let names: Vec<String> = every.iter().map(|w| w.name()).collect();
            anyhow!("unknown workload {text:?}; expected one of {}", names.join(", "))
        })
    }

    /// Every workload with every parameter the full mode uses.
    pub(crate) fn every() -> Vec<Workload> {
        let mut all = vec![Workload::HotPair];
        for order in [Order::Lifo, Order::Fifo] {
            for n in [25, 100, 400, 1600] {
                all.push(Workload::Batch { n, order });
            }
        }
        all.extend([Workload::ProducerConsumer, Workload::Larson, Workload::CacheScratch]);
        for remote_percent in [0, 50, 100] {
            all.push(Workload::CrossNode { remote_percent });
        }
        all.extend([Workload::Hotplug(Hotplug::Off), Workload::Hotplug(Hotplug::On)]);
        all
    }

    /// The threads doing allocator work (the hotplug thread is not counted).
    pub(crate) fn threads(self) -> usize {
        match self {
            Workload::HotPair | Workload::Batch { .. } => 1,
            _ => 2,
        }
    }

    /// Object sizes in bytes. cache-scratch uses small objects (the original uses 8
    /// bytes or less), where two threads' objects can share a cache line; 64 bytes is
    /// its control.
    pub(crate) fn sizes(self) -> &'static [usize] {
        match self {
            Workload::CacheScratch => &[8, 64],
            _ => &[64, 256],
        }
    }

    /// Whether the quick mode runs this workload (at its first size only).
    fn in_quick(self) -> bool {
        match self {
            Workload::Batch { n, order } => {
                (order, n) == (Order::Lifo, 100) || (order, n) == (Order::Fifo, 400)
            }
            _ => true,
        }
    }

    /// The case's label inside its family's chart and table (without the family).
    pub(crate) fn label(self) -> String {
        match self {
            Workload::Batch { n, order: Order::Lifo } => format!("lifo n={n}"),
            Workload::Batch { n, order: Order::Fifo } => format!("fifo n={n}"),
            Workload::CrossNode { remote_percent } => format!("{remote_percent}% remote"),
            Workload::Hotplug(Hotplug::On) => "hotplug on".into(),
            Workload::Hotplug(Hotplug::Off) => "hotplug off".into(),
            _ => String::new(),
        }
    }

    /// What one operation is, for the report.
    pub(crate) fn op_meaning(self) -> &'static str {
        match self {
            Workload::HotPair | Workload::Batch { .. } => "one allocation and its free",
            Workload::ProducerConsumer => "one free (of an object another thread allocated)",
            Workload::Larson => "one replacement: free a random slot's object, allocate a new one",
            Workload::CacheScratch => "one allocation, its writes, and its free",
            Workload::CrossNode { .. } | Workload::Hotplug(_) => "one allocation and its free",
        }
    }
}

/// One workload at one object size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Case {
    pub(crate) workload: Workload,
    pub(crate) size: usize,
}

/// The cases a mode runs, in report order.
pub(crate) fn plan(scale: Scale) -> Vec<Case> {
    let mut cases = Vec::new();
    for workload in Workload::every() {
        match scale {
            Scale::Full => cases.extend(workload.sizes().iter().map(|&size| Case { workload, size })),
            Scale::Quick if workload.in_quick() => cases.push(Case { workload, size: workload.sizes()[0] }),
            Scale::Quick => {}
        }
    }
    cases
}

/// What one run measured.
#[derive(Debug, Clone)]
pub(crate) struct Measurement {
    /// Operations done in the timed part.
    pub(crate) ops: u64,
    /// Wall time of the timed part.
    pub(crate) elapsed: Duration,
    /// Anything worth printing beside the figures (hotplug transitions, ...).
    pub(crate) detail: String,
}

/// The machine a case runs on: the topology numaslab sees and the CPU each worker binds
/// to (a virtual binding on fake machines).
#[derive(Debug)]
pub(crate) struct Machine {
    pub(crate) topology: Arc<dyn Topology>,
    worker_cpus: Vec<CpuId>,
}

impl Machine {
    /// The machine for a workload: for the cross-node workload, this machine's CPUs laid
    /// out on two nodes ([`Machine::two_nodes_on_live_cpus`]), else the seed box; for the
    /// hotplug workload the seed box (4 CPUs, 2 nodes, virtual bindings), whose CPUs the
    /// workload switches; else this machine as sysfs describes it. Worker `i` is pinned to
    /// the `i`-th allowed CPU, for every implementation alike. Where sysfs cannot be read,
    /// a one-node fake with as many CPUs stands in.
    pub(crate) fn for_workload(workload: Workload) -> Result<Self> {
        match workload {
            Workload::CrossNode { .. } => Ok(Self::two_nodes_on_live_cpus().unwrap_or_else(|reason| {
                eprintln!("note: {reason}; the cross-node workload runs on the seed box's virtual cpus");
                // Node 0 = CPUs 0-1, node 1 = CPUs 2-3.
                Self::seed_box(vec![0, 2])
            })),
            // The hotplug thread never takes CPU 0 offline; workers sit on CPUs it does.
            Workload::Hotplug(_) => Ok(Self::seed_box(vec![1, 3])),
            _ => {
                match SysfsTopology::detect() {
                    Ok(live) => {
                        let worker_cpus: Vec<CpuId> = live.allowed_cpus().iter().collect();
                        if worker_cpus.is_empty() {
                            bail!("{}: this process may run on no CPU", live.name());
                        }
                        Ok(Self { topology: Arc::new(live), worker_cpus })
                    }
                    Err(error) => {
                        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                        eprintln!("note: sysfs unreadable ({error}); a fake one-node machine of {cpus} CPUs stands in");
                        let spec = format!("{cpus}x1");
                        let topology = FakeTopology::from_spec(&spec)
                            .with_context(|| format!("building a fake machine {spec}"))?;
                        Ok(Self { topology: Arc::new(topology), worker_cpus: (0..cpus as CpuId).collect() })
                    }
                }
            }
        }
    }

    /// This machine's possible CPUs split into two nodes of equal halves
    /// (`FakeBuilder::on_live_cpus`: the CPUs, the pinning and numaslab's fast path are
    /// the live machine's, the nodes are the fake's), with a worker on the first CPU of
    /// each node; why not, where the CPUs cannot be split so or the workers' CPUs are not
    /// online and allowed.
    fn two_nodes_on_live_cpus() -> Result<Self> {
        let live = SysfsTopology::detect().context("reading this machine's sysfs")?;
        let cpus = live.possible_cpus().len();
        if cpus < 2 || cpus % 2 != 0 {
            bail!("this machine's {cpus} possible cpus do not split into two equal nodes");
        }
        let topology = FakeTopology::builder()
            .nodes(2)
            .cpus_per_node(cpus / 2)
            .on_live_cpus()
            .build()
            .context("laying this machine's cpus out on two nodes")?;
        let usable = live.allowed_cpus().intersection(&live.online_cpus()?);
        let worker_cpus = (0..2)
            .map(|node| {
                let cpu = topology.node_cpus(node).first();
                cpu.filter(|&cpu| usable.contains(cpu)).ok_or_else(|| {
                    anyhow!("node {node}'s first cpu ({cpu:?}) is not online and allowed ({usable})")
                })
            })
            .collect::<Result<Vec<CpuId>>>()?;
        Ok(Self { topology: Arc::new(topology), worker_cpus })
    }

    fn seed_box(worker_cpus: Vec<CpuId>) -> Self {
        Self { topology: Arc::new(FakeTopology::seed_box()), worker_cpus }
    }

    /// The CPU worker `index` binds to.
    pub(crate) fn worker_cpu(&self, index: usize) -> CpuId {
        self.worker_cpus[index % self.worker_cpus.len()]
    }
}

/// Runs one case on one implementation.
pub(crate) fn run<I: Impl>(imp: &I, machine: &Machine, case: Case, scale: Scale) -> Result<Measurement> {
    match case.workload {
        Workload::HotPair => hot_pair::run(imp, machine, scale),
        Workload::Batch { n, order } => batch::run(imp, machine, scale, n, order),
        Workload::ProducerConsumer => producer_consumer::run(imp, machine, scale),
        Workload::Larson => larson::run(imp, machine, scale),
        Workload::CacheScratch => cache_scratch::run(imp, machine, scale),
        Workload::CrossNode { remote_percent } => cross_node::run(imp, machine, scale, remote_percent),
        Workload::Hotplug(hotplug) => hotplug::run(imp, machine, scale, hotplug),
    }
}

/// What a worker returned, with when it passed the start barrier and when it finished.
/// Workers time themselves: on a busy two-core machine the main thread may be scheduled
/// long after the workers started, or finished.
#[derive(Debug)]
struct Timed<T> {
    value: T,
    begin: Instant,
    end: Instant,
}

/// From the first worker's start to the last one's end.
fn span<'a>(timings: impl IntoIterator<Item = (&'a Instant, &'a Instant)>) -> Duration {
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    for (&begin, &end) in timings {
        first = Some(first.map_or(begin, |f| f.min(begin)));
        last = Some(last.map_or(end, |l| l.max(end)));
    }
    match (first, last) {
        (Some(first), Some(last)) => last.saturating_duration_since(first),
        _ => Duration::ZERO,
    }
}

/// Spawns worker `index`: bound to its CPU, the implementation's thread set-up done, then
/// waiting on `start` so that every worker begins together; it times its work.
fn spawn_worker<'scope, 'env, I: Impl, T: Send + 'scope>(
    scope: &'scope Scope<'scope, 'env>,
    imp: &'env I,
    machine: &'env Machine,
    index: usize,
    start: &'env Barrier,
    work: impl FnOnce() -> Result<T> + Send + 'scope,
) -> ScopedJoinHandle<'scope, Result<Timed<T>>> {
    scope.spawn(move || {
        let cpu = machine.worker_cpu(index);
        let bound = machine
            .topology
            .bind_current_thread(cpu)
            .with_context(|| format!("binding worker {index} to cpu {cpu}"));
        imp.thread_start();
        start.wait();
        let begin = Instant::now();
        let result = bound.and_then(|()| work());
        let end = Instant::now();
        imp.thread_end();
        result.map(|value| Timed { value, begin, end })
    })
}

/// Joins a worker, turning a panic into an error.
fn join<T>(handle: ScopedJoinHandle<'_, Result<T>>, what: &str) -> Result<T> {
    match handle.join() {
        Ok(result) => result,
        Err(_) => bail!("the {what} thread panicked"),
    }
}

/// Runs `work` on one bound worker thread and returns what it returns.
fn on_one_worker<I: Impl, T: Send>(
    imp: &I,
    machine: &Machine,
    work: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    let start = Barrier::new(1);
    std::thread::scope(|scope| join(spawn_worker(scope, imp, machine, 0, &start, work), "worker"))
        .map(|t| t.value)
}

/// Allocates through `imp`, showing the object's address to the optimiser as used: LLVM
/// knows some allocators' entry points and would otherwise remove an allocation whose
/// object is freed unused (it did, for jemalloc and snmalloc, in the hotplug workload).
/// Only the address goes through `black_box`, not the handle: a 16-byte handle pushed
/// through memory as two 8-byte stores and read back as one 16-byte load stalls store
/// forwarding, a cost of the harness, not of the implementation.
#[inline(always)]
fn alloc<I: Impl>(imp: &I, stamp: u64) -> I::Handle<'_> {
    let handle = imp.alloc(stamp);
    std::hint::black_box(imp.identity(&handle));
    handle
}

/// Checks the stamps read back before freeing against the stamps written.
fn check_stamps(what: &str, written: u64, read: u64) -> Result<()> {
    if written != read {
        bail!("{what}: stamps read back before free (sum {read}) differ from those written (sum {written}): two live objects shared memory");
    }
    Ok(())
}

/// A xorshift64* generator: cheap, deterministic, good enough to pick slots.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    #[inline(always)]
    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as usize % bound
    }
}
