//! Allocation-failure injection for tests (the kernel's failslab and `fail-nth`,
//! `Documentation/fault-injection/fault-injection.rst`): a caller makes the n-th grow or
//! metadata allocation of a cache fail, so that its own error paths (and the allocator's:
//! node fallback, a refused bring-up rolled back, a refused `tune`) can be tested
//! deterministically, without exhausting the machine's memory.
//!
//! An injected failure is reported exactly as a real one is: [`Error::OutOfMemory`], whose
//! reason says it was injected. It never panics and never leaves the cache inconsistent.
//!
//! Each [`FailPoint`] of a cache has a countdown under a small lock; an `armed` flag in
//! front of it keeps the cost of an unarmed point to one relaxed load on paths that are
//! already slow (a slab growth, an array allocation).

use topology::NodeId;

use crate::array_cache::ArrayCache;
use crate::barn::BarnContents;
use crate::cache::{Cache, KmemCache};
use crate::error::{Error, Result};
use crate::sync::{AtomicBool, Lock, Ordering};

/// The batchcount of an array that is never refilled by batches (an alien array): the kernel's `alloc_arraycache(node, entries, 0xbaadf00d)`.
pub(crate) const UNUSED_BATCHCOUNT: u32 = 0xbaad_f00d;

/// Where an injected failure strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailPoint {
    /// A slab growth (`cache_grow`'s page allocation, `kmem_getpages`): the node's
    /// allocation then falls back to another node's free objects, unless the caller asked
    /// for that node only ([`crate::Cache::alloc_node_exact`]).
    Grow,
    /// A metadata allocation (`alloc_arraycache`, `alloc_barn`): a CPU's or an alien array
    /// cache or a node's barn sheaves, allocated by CPU bring-up (`cpu_up_prepare`, also for a new cache)
    /// and by [`crate::Cache::tune`].
    Metadata,
}

impl FailPoint {
    const ALL: [FailPoint; 2] = [FailPoint::Grow, FailPoint::Metadata];

    fn index(self) -> usize {
        match self {
            FailPoint::Grow => 0,
            FailPoint::Metadata => 1,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            FailPoint::Grow => "slab growth",
            FailPoint::Metadata => "array cache allocation",
        }
    }
}

impl std::fmt::Display for FailPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// Which attempts at an armed point fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// Only the n-th attempt (`fail-nth`).
    Once,
    /// The n-th attempt and every one after it, until cleared.
    From,
}

/// One point's plan and figures.
#[derive(Debug, Default)]
struct PointState {
    /// Attempts still to pass before one fails; meaningful while armed.
    countdown: u64,
    /// What happens after the first failure; `None` when the point is not armed.
    repeat: Option<Repeat>,
    /// Failures injected at this point so far.
    injected: u64,
}

/// The fail points of one cache.
#[derive(Debug)]
pub(crate) struct FailSlab {
    armed: [AtomicBool; 2],
    points: [Lock<PointState>; 2],
}

impl FailSlab {
    /// No failure planned.
    pub(crate) fn new() -> Self {
        Self {
            armed: [AtomicBool::new(false), AtomicBool::new(false)],
            points: [Lock::new(PointState::default()), Lock::new(PointState::default())],
        }
    }

    fn plan(&self, point: FailPoint, nth: u64, repeat: Option<Repeat>) {
        let mut state = self.points[point.index()].lock();
        state.countdown = nth.saturating_sub(1);
        state.repeat = repeat;
        self.armed[point.index()].store(repeat.is_some(), Ordering::Release);
    }

    /// Whether this attempt at `point` must fail; counts the attempt.
    #[inline]
    pub(crate) fn should_fail(&self, point: FailPoint) -> bool {
        if !self.armed[point.index()].load(Ordering::Acquire) {
            return false;
        }
        self.count_attempt(point)
    }

    /// Counts an attempt at an armed point and says whether it fails. Cold: a point is
    /// armed only while a user's test injects failures (`Cache::fail_nth`).
    #[cold]
    #[inline(never)]
    fn count_attempt(&self, point: FailPoint) -> bool {
        let mut state = self.points[point.index()].lock();
        let Some(repeat) = state.repeat else { return false };
        if state.countdown > 0 {
            state.countdown -= 1;
            return false;
        }
        state.injected += 1;
        if repeat == Repeat::Once {
            state.repeat = None;
            self.armed[point.index()].store(false, Ordering::Release);
        }
        true
    }

    fn injected(&self, point: FailPoint) -> u64 {
        self.points[point.index()].lock().injected
    }
}

/// The error of a point's nth of 0.
fn zero_nth(cache: &str, point: FailPoint) -> Error {
    Error::InvalidFailure {
        cache: cache.to_owned(),
        point,
        reason: "attempts are counted from 1 (the next attempt)".into(),
    }
}

impl Cache {
    /// Makes the `nth` attempt at `point` from now on fail, once (the kernel's `fail-nth`:
    /// 1 is the next attempt). Attempts are counted per cache, by every thread, in the
    /// order they happen; with one thread allocating, the failure is deterministic.
    /// A new plan replaces the point's previous one. `nth` 0 is
    /// [`Error::InvalidFailure`].
    ///
    /// ```
    /// # use std::alloc::Layout;
    /// # use std::sync::Arc;
    /// use slab_core::{Allocator, CacheFlags, Error, FailPoint};
    ///
    /// let allocator = Allocator::new(Arc::new(topology::FakeTopology::seed_box()));
    /// let cache = allocator.create_cache("conn", Layout::new::<[u64; 8]>(), CacheFlags::NONE)?;
    /// cache.fail_nth(FailPoint::Grow, 1)?;
    /// // The cache has no slab yet: node 0 must grow, and that growth fails. (Without
    /// // `_exact`, the allocation would fall back to node 1.)
    /// assert!(matches!(cache.alloc_node_exact(0), Err(Error::OutOfMemory { node: 0, .. })));
    /// let obj = cache.alloc_node_exact(0)?; // the plan is spent: this growth succeeds
    /// assert_eq!(cache.injected_failures(FailPoint::Grow), 1);
    /// // SAFETY: obj came from this cache and is freed once.
    /// unsafe { cache.free(obj)? };
    /// # Ok::<(), Error>(())
    /// ```
    pub fn fail_nth(&self, point: FailPoint, nth: u64) -> Result<()> {
        self.kmem().fail_nth(point, nth)
    }

    /// Makes the `nth` attempt at `point` from now on and every later one fail, until
    /// [`Cache::clear_failures`] (the kernel's failslab with `times` -1): a node that
    /// cannot grow at all, a machine out of memory. `nth` 0 is [`Error::InvalidFailure`].
    pub fn fail_from_nth(&self, point: FailPoint, nth: u64) -> Result<()> {
        self.kmem().fail_from_nth(point, nth)
    }

    /// Cancels every planned failure of this cache.
    pub fn clear_failures(&self) {
        self.kmem().clear_failures();
    }

    /// How many failures were injected at `point` so far.
    pub fn injected_failures(&self, point: FailPoint) -> u64 {
        self.kmem().failslab.injected(point)
    }
}

impl KmemCache {
    /// `Cache::fail_nth`.
    pub(crate) fn fail_nth(&self, point: FailPoint, nth: u64) -> Result<()> {
        if nth == 0 {
            return Err(zero_nth(&self.name, point));
        }
        self.failslab.plan(point, nth, Some(Repeat::Once));
        Ok(())
    }

    /// `Cache::fail_from_nth`.
    pub(crate) fn fail_from_nth(&self, point: FailPoint, nth: u64) -> Result<()> {
        if nth == 0 {
            return Err(zero_nth(&self.name, point));
        }
        self.failslab.plan(point, nth, Some(Repeat::From));
        Ok(())
    }

    /// `Cache::clear_failures`.
    pub(crate) fn clear_failures(&self) {
        for point in FailPoint::ALL {
            self.failslab.plan(point, 0, None);
        }
    }

    /// The error of an injected failure at `point` for memory of `node`.
    pub(crate) fn injected_error(&self, point: FailPoint, node: NodeId, bytes: usize) -> Error {
        Error::OutOfMemory {
            cache: self.name.clone(),
            node,
            bytes,
            reason: format!("injected failure of a {point} (Cache::fail_nth)"),
        }
    }

    /// `alloc_arraycache`: an array cache of `entries` objects for `node`, through the
    /// [`FailPoint::Metadata`] point; a refused allocation is [`Error::OutOfMemory`].
    pub(crate) fn alloc_arraycache(&self, node: NodeId, entries: u32, batchcount: u32) -> Result<ArrayCache> {
        let bytes = entries as usize * std::mem::size_of::<*mut u8>();
        if self.failslab.should_fail(FailPoint::Metadata) {
            return Err(self.injected_error(FailPoint::Metadata, node, bytes));
        }
        ArrayCache::new(entries, batchcount).map_err(|_| Error::OutOfMemory {
            cache: self.name.clone(),
            node,
            bytes,
            reason: "the array cache could not be allocated".into(),
        })
    }

    /// The sheaves of a node's barn (`sheaves` of `limit` objects each, in the shared
    /// array's place), through the [`FailPoint::Metadata`] point as one allocation.
    pub(crate) fn alloc_barn(&self, node: NodeId, sheaves: u32, limit: u32) -> Result<BarnContents> {
        let bytes = sheaves as usize * limit as usize * std::mem::size_of::<*mut u8>();
        if self.failslab.should_fail(FailPoint::Metadata) {
            return Err(self.injected_error(FailPoint::Metadata, node, bytes));
        }
        BarnContents::new(sheaves, limit).map_err(|_| Error::OutOfMemory {
            cache: self.name.clone(),
            node,
            bytes,
            reason: "the barn's sheaves could not be allocated".into(),
        })
    }
}

#[cfg(test)]
mod tests;
