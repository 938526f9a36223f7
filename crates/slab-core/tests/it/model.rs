//! Random sequences of alloc / free / remote free / tune / shrink / reap / CPU down and
//! up, with injected allocation failures (`Cache::fail_nth`), against a simple model on
//! the fake seed box. After every step: `validate()`, the model's live count equals the
//! caches' `in_use`, and no live address is handed out twice; every object keeps the tag
//! written into it until it is freed. An allocation fails only with an injected
//! `OutOfMemory`, serves another node only when a growth failed, and a refused tune or
//! bring-up changes nothing.

use std::alloc::Layout;
use std::collections::HashSet;
use std::ptr::NonNull;
use std::sync::Arc;

use proptest::prelude::*;
use slab_core::{Allocator, Cache, CacheFlags, Error, FailPoint};
use topology::{CpuState, FakeTopology};

#[derive(Debug, Clone)]
enum Op {
    Alloc { cache: usize, cpu: u32 },
    AllocNode { cache: usize, node: u32 },
    Free { pick: usize, cpu: u32 },
    Tune { cache: usize, limit: u32, batchcount: u32, shared: u32 },
    Shrink { cache: usize },
    Reap,
    CpuDown { cpu: u32 },
    CpuUp { cpu: u32 },
    AllocExact { cache: usize, node: u32 },
    FailGrow { cache: usize, nth: u64, lasting: bool },
    FailMetadata { cache: usize, nth: u64 },
    ClearFailures { cache: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2usize, 0..5u32).prop_map(|(cache, cpu)| Op::Alloc { cache, cpu }),
        2 => (0..2usize, 0..3u32).prop_map(|(cache, node)| Op::AllocNode { cache, node }),
        6 => (any::<usize>(), 0..4u32).prop_map(|(pick, cpu)| Op::Free { pick, cpu }),
        1 => (0..2usize, 0..12u32, 0..12u32, 0..3u32)
            .prop_map(|(cache, limit, batchcount, shared)| Op::Tune { cache, limit, batchcount, shared }),
        1 => (0..2usize).prop_map(|cache| Op::Shrink { cache }),
        1 => Just(Op::Reap),
        1 => (1..4u32).prop_map(|cpu| Op::CpuDown { cpu }),
        1 => (1..4u32).prop_map(|cpu| Op::CpuUp { cpu }),
        1 => (0..2usize, 0..2u32).prop_map(|(cache, node)| Op::AllocExact { cache, node }),
        1 => (0..2usize, 1..4u64, any::<bool>()).prop_map(|(cache, nth, lasting)| Op::FailGrow { cache, nth, lasting }),
        1 => (0..2usize, 1..6u64).prop_map(|(cache, nth)| Op::FailMetadata { cache, nth }),
        1 => (0..2usize).prop_map(|cache| Op::ClearFailures { cache }),
    ]
}

struct Live {
    cache: usize,
    ptr: NonNull<u8>,
    tag: u64,
}

struct Harness {
    topology: Arc<FakeTopology>,
    allocator: Arc<Allocator>,
    caches: Vec<Arc<Cache>>,
    live: Vec<Live>,
    addresses: HashSet<usize>,
    next_tag: u64,
}

impl Harness {
    fn new() -> Self {
        let topology = Arc::new(FakeTopology::seed_box());
        let allocator = Allocator::new(topology.clone());
        let caches = vec![
            allocator
                .create_cache("model-debug", Layout::from_size_align(48, 8).unwrap(), CacheFlags::DEBUG)
                .unwrap(),
            allocator
                .create_cache("model-plain", Layout::from_size_align(200, 8).unwrap(), CacheFlags::NONE)
                .unwrap(),
        ];
        Self { topology, allocator, caches, live: Vec::new(), addresses: HashSet::new(), next_tag: 1 }
    }

    fn record(&mut self, cache: usize, ptr: NonNull<u8>) -> Result<(), TestCaseError> {
        prop_assert!(self.addresses.insert(ptr.as_ptr() as usize), "address {ptr:p} handed out twice");
        let tag = self.next_tag;
        self.next_tag += 1;
        // SAFETY: a fresh object of at least 48 bytes, ours.
        unsafe { ptr.as_ptr().cast::<u64>().write(tag) };
        self.live.push(Live { cache, ptr, tag });
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Alloc { cache, cpu } => {
                let result = self.caches[cache].alloc_on(cpu);
                if let Some(ptr) = self.accept(cache, result)? {
                    self.record(cache, ptr)?;
                }
            }
            Op::AllocNode { cache, node } => {
                let grow_failures = self.caches[cache].injected_failures(FailPoint::Grow);
                match self.caches[cache].alloc_node(node) {
                    Err(Error::UnknownNode { .. }) => prop_assert_eq!(node, 2),
                    result => {
                        if let Some(ptr) = self.accept(cache, result)? {
                            // Another node only when this node's growth failed (fallback).
                            if self.caches[cache].injected_failures(FailPoint::Grow) == grow_failures {
                                prop_assert_eq!(self.caches[cache].node_of(ptr), Some(node));
                            }
                            self.record(cache, ptr)?;
                        }
                    }
                }
            }
            Op::AllocExact { cache, node } => {
                let result = self.caches[cache].alloc_node_exact(node);
                if let Some(ptr) = self.accept(cache, result)? {
                    prop_assert_eq!(self.caches[cache].node_of(ptr), Some(node), "exact never falls back");
                    self.record(cache, ptr)?;
                }
            }
            Op::FailGrow { cache, nth, lasting } => {
                let point = FailPoint::Grow;
                if lasting {
                    self.caches[cache].fail_from_nth(point, nth).unwrap();
                } else {
                    self.caches[cache].fail_nth(point, nth).unwrap();
                }
            }
            Op::FailMetadata { cache, nth } => self.caches[cache].fail_nth(FailPoint::Metadata, nth).unwrap(),
            Op::ClearFailures { cache } => self.caches[cache].clear_failures(),
            Op::Free { pick, cpu } => {
                if !self.live.is_empty() {
                    let live = self.live.swap_remove(pick % self.live.len());
                    // SAFETY: the tag word is inside the live object.
                    let tag = unsafe { live.ptr.as_ptr().cast::<u64>().read() };
                    prop_assert_eq!(tag, live.tag, "object {:p} changed while live", live.ptr);
                    self.addresses.remove(&(live.ptr.as_ptr() as usize));
                    // SAFETY: live and from this cache; freed once.
                    unsafe { self.caches[live.cache].free_on(cpu, live.ptr).unwrap() };
                }
            }
            Op::Tune { cache, limit, batchcount, shared } => {
                let before = self.caches[cache].tunables();
                let result = self.caches[cache].tune(limit, batchcount, shared);
                if limit == 0 || batchcount == 0 || batchcount > limit {
                    let refused = matches!(result, Err(Error::InvalidTunables { .. }));
                    prop_assert!(refused, "tune({}, {}, {}) gave {:?}", limit, batchcount, shared, result);
                } else if let Err(error) = result {
                    prop_assert!(injected(&error), "tune: {}", error);
                    prop_assert_eq!(self.caches[cache].tunables(), before, "a refused tune changes nothing");
                } else {
                    prop_assert_eq!(self.caches[cache].tunables().limit, limit);
                }
            }
            Op::Shrink { cache } => {
                self.caches[cache].shrink();
                prop_assert_eq!(
                    self.caches[cache].stats().num_slabs,
                    self.caches[cache].stats().active_slabs
                );
            }
            Op::Reap => self.allocator.reap(),
            Op::CpuDown { cpu } => {
                if self.topology.set_online(cpu, CpuState::Offline).is_ok() {
                    self.allocator.cpu_down_prepare(cpu).unwrap();
                    self.allocator.cpu_dead(cpu);
                    for cache in &self.caches {
                        prop_assert_eq!(
                            cache.cpu_cache_len(cpu),
                            0,
                            "cpu {} went down with objects cached",
                            cpu
                        );
                    }
                }
            }
            Op::CpuUp { cpu } => {
                self.topology.set_online(cpu, CpuState::Online).unwrap();
                match self.allocator.cpu_up_prepare(cpu) {
                    Ok(()) => self.allocator.cpu_online(cpu).unwrap(),
                    // A refused bring-up rolls back, as the hotplug state machine does.
                    Err(error) => {
                        prop_assert!(injected(&error), "cpu_up_prepare({}): {}", cpu, error);
                        if !self.allocator.prepared_cpus().contains(cpu) {
                            self.topology.set_online(cpu, CpuState::Offline).unwrap();
                        }
                    }
                }
            }
        }
        self.check()
    }

    /// An allocation's result: the object, or `None` for an injected shortage (no other
    /// error is acceptable).
    fn accept(
        &self,
        cache: usize,
        result: Result<NonNull<u8>, Error>,
    ) -> Result<Option<NonNull<u8>>, TestCaseError> {
        match result {
            Ok(ptr) => Ok(Some(ptr)),
            Err(error) if injected(&error) => {
                prop_assert!(self.caches[cache].injected_failures(FailPoint::Grow) > 0, "{}", error);
                Ok(None)
            }
            Err(error) => Err(TestCaseError::fail(error.to_string())),
        }
    }

    fn check(&self) -> Result<(), TestCaseError> {
        self.allocator.validate().map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (index, cache) in self.caches.iter().enumerate() {
            let expected = self.live.iter().filter(|l| l.cache == index).count();
            prop_assert_eq!(cache.stats().in_use, expected, "cache {} in_use", cache.name());
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), TestCaseError> {
        while let Some(live) = self.live.pop() {
            // SAFETY: live, ours, freed once.
            unsafe { self.caches[live.cache].free_on(0, live.ptr).unwrap() };
        }
        self.check()?;
        for cache in &self.caches {
            self.allocator.destroy_cache(cache).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        Ok(())
    }
}

/// Whether an error is an injected allocation failure.
fn injected(error: &Error) -> bool {
    matches!(error, Error::OutOfMemory { reason, .. } if reason.contains("injected"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_conserve_every_object(ops in proptest::collection::vec(op(), 1..120)) {
        let mut harness = Harness::new();
        for op in &ops {
            harness.step(op)?;
        }
        harness.finish()?;
    }
}
