//! The torture workers: allocate, touch, keep, hand over and free objects.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use crossbeam_utils::CachePadded;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use slab_core::Cache;
use topology::{CpuId, NodeId, Topology};

use super::pattern;
use super::Fault;

/// One object a worker holds: where it is, which cache it came from and its pattern tag.
#[derive(Debug)]
pub(crate) struct Object {
    ptr: NonNull<u8>,
    cache: usize,
    tag: u64,
}

// SAFETY: an `Object` is the sole record of an allocated slot; whoever holds it owns the
// slot's memory, which the allocator hands out for use from any thread.
unsafe impl Send for Object {}

/// What every worker shares: the caches, the per-cache counters and the stop protocol.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) topology: Arc<dyn Topology>,
    pub(crate) caches: Vec<Arc<Cache>>,
    /// Objects allocated from each cache, by all workers.
    pub(crate) allocated: Vec<CachePadded<AtomicU64>>,
    /// Objects freed to each cache, by all workers.
    pub(crate) freed: Vec<CachePadded<AtomicU64>>,
    /// Frees of an object allocated by another worker.
    pub(crate) handed_over: AtomicU64,
    /// Objects whose pattern was wrong when checked.
    pub(crate) corrupted: AtomicU64,
    /// Allocations that failed and frees that the allocator refused, with the first message.
    pub(crate) errors: AtomicU64,
    pub(crate) first_error: std::sync::Mutex<Option<String>>,
    /// Operations done, for the progress bar: each worker adds in batches.
    pub(crate) ops: CachePadded<AtomicU64>,
    /// Set when the workers must stop allocating and handing over.
    pub(crate) stop: std::sync::atomic::AtomicBool,
    /// Workers that stopped handing objects over; once all have, inboxes drain for good.
    pub(crate) stopped_sending: AtomicUsize,
    pub(crate) fault: Option<Fault>,
}

impl Shared {
    /// The shared state of workers on `caches`, every counter at zero.
    pub(crate) fn new(topology: Arc<dyn Topology>, caches: Vec<Arc<Cache>>, fault: Option<Fault>) -> Self {
        let zeroes = || caches.iter().map(|_| CachePadded::new(AtomicU64::new(0))).collect();
        Self {
            topology,
            allocated: zeroes(),
            freed: zeroes(),
            caches,
            handed_over: AtomicU64::new(0),
            corrupted: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_error: std::sync::Mutex::new(None),
            ops: CachePadded::new(AtomicU64::new(0)),
            stop: std::sync::atomic::AtomicBool::new(false),
            stopped_sending: AtomicUsize::new(0),
            fault,
        }
    }

    fn record_error(&self, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|poison| poison.into_inner());
        first.get_or_insert(message);
    }
}

/// Counts its worker as having stopped sending when dropped, on return or unwind.
struct AnnounceStop(Arc<Shared>);

impl Drop for AnnounceStop {
    fn drop(&mut self) {
        self.0.stopped_sending.fetch_add(1, Ordering::AcqRel);
    }
}

/// How one worker behaves.
#[derive(Debug, Clone)]
pub(crate) struct WorkerPlan {
    pub(crate) index: usize,
    pub(crate) cpu: CpuId,
    /// Workers to hand objects to: those on other nodes, or any other worker on a
    /// machine with one node.
    pub(crate) peers: Vec<usize>,
    pub(crate) max_live: usize,
    /// Share of frees handed to a peer, in percent.
    pub(crate) remote_percent: u32,
    pub(crate) nodes: Vec<NodeId>,
    pub(crate) seed: u64,
}

/// A running worker's state.
pub(crate) struct Worker {
    plan: WorkerPlan,
    shared: Arc<Shared>,
    inbox: Receiver<Object>,
    outboxes: Vec<Sender<Object>>,
    live: Vec<Object>,
    rng: SmallRng,
    sequence: u64,
    leaked: bool,
}

impl Worker {
    pub(crate) fn new(
        plan: WorkerPlan,
        shared: Arc<Shared>,
        inbox: Receiver<Object>,
        outboxes: Vec<Sender<Object>>,
    ) -> Self {
        let rng = SmallRng::seed_from_u64(plan.seed);
        Self { plan, shared, inbox, outboxes, live: Vec::new(), rng, sequence: 0, leaked: false }
    }

    /// Binds to its CPU, waits at `bound` until every worker is bound (the hotplug
    /// thread starts only then, so no CPU goes offline under a worker that is binding),
    /// runs until told to stop, then drains the inbox; returns the objects still held.
    pub(crate) fn run(mut self, bound: &Barrier) -> Vec<Object> {
        let binding = self.shared.topology.bind_current_thread(self.plan.cpu);
        bound.wait();
        // Announces the stop also if this worker panics, so the others' drain ends.
        let announce = AnnounceStop(self.shared.clone());
        if let Err(error) = binding {
            self.shared.record_error(format!(
                "worker {} cannot bind to cpu {}: {error}",
                self.plan.index, self.plan.cpu
            ));
        }
        while !self.shared.stop.load(Ordering::Relaxed) {
            for _ in 0..64 {
                self.step();
            }
            self.drain_inbox();
            self.shared.ops.fetch_add(64, Ordering::Relaxed);
        }
        // Stop protocol: announce that nothing more will be sent, then drain until every
        // worker has announced the same and the inbox is empty.
        drop(announce);
        loop {
            let all_stopped = self.shared.stopped_sending.load(Ordering::Acquire) == self.outboxes.len();
            self.drain_inbox();
            if all_stopped && self.inbox.is_empty() {
                break;
            }
            std::thread::yield_now();
        }
        self.live
    }

    fn step(&mut self) {
        if self.shared.fault == Some(Fault::PanicOne) && self.plan.index == 0 && self.sequence >= 1000 {
            panic!("injected fault: torture worker 0 panics");
        }
        let fill = self.live.len();
        let allocate = if fill < self.plan.max_live / 4 {
            true
        } else if fill >= self.plan.max_live {
            false
        } else {
            self.rng.gen_bool(0.5)
        };
        if allocate {
            self.allocate();
        } else {
            let index = self.rng.gen_range(0..fill);
            let object = self.live.swap_remove(index);
            self.release(object);
        }
    }

    fn allocate(&mut self) {
        let cache = self.rng.gen_range(0..self.shared.caches.len());
        // One allocation in ten names a node, to exercise node-targeted allocation and its
        // fallback to the nearest node with memory.
        let result = if self.rng.gen_ratio(1, 10) && !self.plan.nodes.is_empty() {
            let node = self.plan.nodes[self.rng.gen_range(0..self.plan.nodes.len())];
            self.shared.caches[cache].alloc_node(node)
        } else {
            self.shared.caches[cache].alloc()
        };
        match result {
            Ok(ptr) => {
                self.shared.allocated[cache].fetch_add(1, Ordering::Relaxed);
                self.sequence += 1;
                let tag = pattern::tag(self.plan.index, self.sequence, cache);
                // SAFETY: the cache handed out `object_size` bytes at `ptr`, aligned to 8
                // (every torture cache is created with that alignment).
                unsafe { pattern::write(ptr.as_ptr().cast(), self.words(cache), tag) };
                self.live.push(Object { ptr, cache, tag });
            }
            Err(error) => self
                .shared
                .record_error(format!("allocation from {}: {error}", self.shared.caches[cache].name())),
        }
    }

    /// Frees an object here or hands it to a peer, after checking its pattern.
    fn release(&mut self, object: Object) {
        if !self.plan.peers.is_empty() && self.rng.gen_ratio(self.plan.remote_percent, 100) {
            let peer = self.plan.peers[self.rng.gen_range(0..self.plan.peers.len())];
            // A full inbox means its worker is behind (off its CPU, most likely: the
            // workers usually outnumber the cores): give it the CPU once, then free the
            // object here if it is still full, so that objects in flight stay bounded.
            let object = match self.outboxes[peer].try_send(object) {
                Err(TrySendError::Full(object)) => {
                    std::thread::yield_now();
                    self.outboxes[peer].try_send(object)
                }
                other => other,
            };
            if let Err(returned) = object {
                self.free(returned.into_inner());
            }
            return;
        }
        if matches!(self.shared.fault, Some(Fault::LeakOne)) && self.plan.index == 0 && !self.leaked {
            // Test-only fault: forget one object, as a buggy caller would. The checks
            // must notice that it is neither freed nor held.
            // The record goes out of scope here and the slot is never freed.
            self.leaked = true;
            return;
        }
        self.free(object);
    }

    fn drain_inbox(&mut self) {
        while let Ok(object) = self.inbox.try_recv() {
            self.shared.handed_over.fetch_add(1, Ordering::Relaxed);
            self.free(object);
        }
    }

    fn free(&self, object: Object) {
        free_checked(&self.shared, object);
    }

    fn words(&self, cache: usize) -> usize {
        self.shared.caches[cache].object_size() / 8
    }
}

/// Checks an object's pattern, then returns it to its cache and counts it.
pub(crate) fn free_checked(shared: &Shared, object: Object) {
    let cache = &shared.caches[object.cache];
    let words = cache.object_size() / 8;
    // SAFETY: the object is live and ours; its cache's object size covers `words` words.
    if let Err(word) = unsafe { pattern::check(object.ptr.as_ptr().cast(), words, object.tag) } {
        shared.corrupted.fetch_add(1, Ordering::Relaxed);
        shared.record_error(format!("object {:p} of {} corrupted at word {word}", object.ptr, cache.name()));
    }
    // SAFETY: `ptr` came from this cache's `alloc` and is freed exactly once: the only
    // record of it is the `Object` consumed here.
    match unsafe { cache.free(object.ptr) } {
        Ok(()) => {
            shared.freed[object.cache].fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => shared.record_error(format!("free to {}: {error}", cache.name())),
    }
}

/// How many objects each cache's workers hold, per cache index.
pub(crate) fn count_by_cache(live: &[Vec<Object>], caches: usize) -> Vec<u64> {
    let mut counts = vec![0u64; caches];
    live.iter().flatten().for_each(|object| counts[object.cache] += 1);
    counts
}
