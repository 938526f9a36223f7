//! The rseq slow paths' retry loop, on this machine's CPUs. Skipped, saying why, where
//! rseq mode is not available.

use std::cell::Cell;
use std::sync::Arc;

use topology::{SysfsTopology, Topology};

use super::RSEQ_ATTEMPTS;
use crate::rseq::{Miss, Pop};
use crate::{Allocator, CacheFlags, FastPathMode};

fn rseq_cache(test: &str) -> Option<(Arc<Allocator>, Arc<crate::Cache>)> {
    let live: Arc<dyn Topology> = Arc::new(SysfsTopology::detect().expect("this machine's topology"));
    let allocator = Allocator::with_fast_path(live, FastPathMode::Rseq);
    if allocator.fast_path() != FastPathMode::Rseq {
        eprintln!("{test}: skipped: this machine runs the CAS fallback (no rseq area or membarrier RSEQ)");
        return None;
    }
    let cache =
        allocator.create_cache("retry-64", std::alloc::Layout::new::<[u64; 8]>(), CacheFlags::NONE).unwrap();
    Some((allocator, cache))
}

/// A fake object address (never dereferenced).
fn object() -> std::ptr::NonNull<u8> {
    std::ptr::NonNull::new(0x10_0000 as *mut u8).unwrap()
}

#[test]
fn the_outcome_of_the_last_attempt_is_the_one_returned_even_when_it_hits() {
    let Some((allocator, cache)) = rseq_cache("retry_last_hit") else { return };
    let kmem = cache.kmem();
    let area = match kmem.fast_path {
        super::FastPath::Rseq(area) => area,
        super::FastPath::Cas => unreachable!("checked above"),
    };
    let node = kmem.home_or_default(0);
    // Every attempt but the last misses; the last one commits. Acting on anything but
    // that last outcome would hand the object out twice (or free it twice).
    let attempts = Cell::new(0);
    let (_, outcome) = kmem.rseq_retry(area, node, 0, Pop::Miss(Miss::Aborted), Pop::miss, |_| {
        attempts.set(attempts.get() + 1);
        if attempts.get() == RSEQ_ATTEMPTS {
            Pop::Hit(object())
        } else {
            Pop::Miss(Miss::Aborted)
        }
    });
    assert_eq!(attempts.get(), RSEQ_ATTEMPTS);
    assert_eq!(outcome, Pop::Hit(object()));
    drop(cache);
    drop(allocator);
}

#[test]
fn retries_stop_at_the_first_outcome_that_reached_the_array_and_after_a_detached_one() {
    let Some((_allocator, cache)) = rseq_cache("retry_stops") else { return };
    let kmem = cache.kmem();
    let super::FastPath::Rseq(area) = kmem.fast_path else { unreachable!("checked above") };
    let node = kmem.home_or_default(0);
    let attempts = Cell::new(0);
    let (_, outcome) = kmem.rseq_retry(area, node, 0, Pop::Miss(Miss::Mismatch), Pop::miss, |_| {
        attempts.set(attempts.get() + 1);
        Pop::Empty
    });
    assert_eq!((attempts.get(), outcome), (1, Pop::Empty));
    let (_, outcome) = kmem.rseq_retry(area, node, 0, Pop::Miss(Miss::Detached), Pop::miss, |_| {
        attempts.set(attempts.get() + 1);
        Pop::Hit(object())
    });
    assert_eq!((attempts.get(), outcome), (1, Pop::Miss(Miss::Detached)), "a stopped CPU is not retried");
    let before = kmem.rseq_aborts.load(crate::sync::Ordering::Relaxed);
    let (_, outcome) =
        kmem.rseq_retry(area, node, 0, Pop::Miss(Miss::Aborted), Pop::miss, |_| Pop::Miss(Miss::Aborted));
    assert_eq!(outcome, Pop::Miss(Miss::Aborted));
    let counted = kmem.rseq_aborts.load(crate::sync::Ordering::Relaxed) - before;
    assert_eq!(
        counted,
        RSEQ_ATTEMPTS as u64 + 1,
        "the first outcome and every retry missed, and each is counted"
    );
}

/// The fences this thread has issued so far.
fn fences() -> u64 {
    crate::rseq::FENCES.with(Cell::get)
}

#[test]
fn taking_a_slot_fences_its_cpu_only_when_an_array_is_published_there() {
    let Some((allocator, _cache)) = rseq_cache("fence_only_when_published") else { return };
    let live = SysfsTopology::detect().expect("this machine's topology");
    let online: Vec<_> = live.online_cpus().expect("the online CPUs").iter().collect();
    let [home, other, ..] = online[..] else {
        eprintln!("fence_only_when_published: skipped: needs two online CPUs, this machine has {online:?}");
        return;
    };
    // On `home`, so that `other` is never this thread's own CPU (whose array the thread
    // stops with its own sequence, no fence).
    live.bind_current_thread(home).expect("binding the test thread");
    let before = fences();
    let cache =
        allocator.create_cache("fence-64", std::alloc::Layout::new::<[u64; 8]>(), CacheFlags::NONE).unwrap();
    assert_eq!(fences() - before, 0, "a new cache's slots had nothing published: installing needs no fence");
    let slot = &cache.kmem().array[other as usize];
    let before = fences();
    drop(slot.lock());
    assert_eq!(fences() - before, 1, "cpu {other}'s published array is stopped with one fence");
    let before = fences();
    let mut guard = slot.lock();
    let detached = guard.with(|data| data.take()).expect("an online CPU has an array");
    drop(guard);
    assert_eq!(fences() - before, 1, "published again when the first guard let go");
    let before = fences();
    drop(slot.lock());
    assert_eq!(fences() - before, 0, "nothing published once the array is detached");
    let mut guard = slot.lock();
    assert!(guard.with(|data| data.install(detached)).is_none(), "the array goes back where it was");
}

#[test]
fn an_rseq_allocation_that_cannot_grow_returns_the_error_of_its_slow_path() {
    let Some((_allocator, cache)) = rseq_cache("rseq_alloc_error") else { return };
    // A new cache's arrays are empty: the first pop misses, the refill must grow, and
    // every growth fails.
    cache.fail_from_nth(crate::FailPoint::Grow, 1).unwrap();
    match cache.alloc() {
        Err(crate::Error::OutOfMemory { reason, .. }) => assert!(reason.contains("injected"), "{reason}"),
        other => panic!("expected the injected growth failure, got {other:?}"),
    }
    cache.clear_failures();
    let obj = cache.alloc().expect("growth works again");
    // SAFETY: just allocated from this cache, freed once.
    unsafe { cache.free(obj) }.unwrap();
}
