//! The cache (`struct kmem_cache`): its allocation and free paths, slab growth, and the
//! public [`Cache`] handle.
//!
//! Allocation: `____cache_alloc` pops the current CPU's array under its slot lock; an
//! empty array goes to the `#[cold]` `cache_alloc_refill`, which exchanges it whole for a
//! full sheaf from the node's barn (`barn.rs`), or under the node's lock takes the remote
//! frees queued for the node (`remote.rs`), else a batch from its partial then free
//! slabs, else grows the node (`cache_grow`) and retries. A CPU whose array is absent (not prepared, or dead) or
//! taken by another thread holding the same CPU id is served straight from the node lists
//! (`__cache_alloc_node`).
//!
//! Free: the object's node is its slab's node. A local free pushes onto the CPU's array; a
//! full array is exchanged whole for an empty sheaf from the barn, or else flushes a batch
//! to the slabs (`cache_flusharray`); a remote free goes straight from the fast path's
//! checks to this node's alien cache for the owner node (`cache_free_alien`), which when
//! full is offered whole to the owner's barn, else handed to the owner's remote-free queue
//! with one atomic operation (`alien_flush_and_push`); absent or contended arrays free
//! straight to the slabs.

use std::alloc::Layout;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::{Arc, Weak};

use crossbeam_utils::CachePadded;
use topology::{CpuId, NodeId};

use crate::allocator::Allocator;
use crate::array_cache::{ArraySlot, SlotFence, SlotGuard};
use crate::cpu::{CpuSource, FastPath};
use crate::error::{Error, Result};
use crate::failslab::{FailPoint, FailSlab};
use crate::fallback::NodeScope;
use crate::machine::Machine;
use crate::memory;
use crate::node::{free_limit, KmemList3, Refused, SlabRecords};
use crate::pages::PageCache;
use crate::registry::SlabRegistry;
use crate::rseq::{Here, Miss, Pop, Push, RseqArea};
use crate::slab::{slab_mask, Geometry, ObjectAlign, RedZoning, SlabChain, SlabOrder, SlabPtr};
use crate::stats::CacheStats;
use crate::sync::{next_cache_id, AtomicBool, AtomicU32, AtomicU64, Ordering};
use crate::tune::{TunableCells, Tunables};
use crate::CacheFlags;

/// The kernel's `BATCHREFILL_LIMIT`: an untouched array refills at most this many objects.
const BATCHREFILL_LIMIT: u32 = 16;

/// rseq mode: how many times a slow path runs a missed sequence again (after a migration
/// or an abort) before it serves the object from the node lists instead.
const RSEQ_ATTEMPTS: usize = 4;

/// What [`KmemCache::alloc_fast`] leaves to its caller.
enum FastAlloc<'a> {
    /// An object from the CPU's array.
    Hit(NonNull<u8>),
    /// The slot is held and its array is empty or detached: refill (`cache_alloc_refill`).
    Empty(SlotGuard<'a>),
    /// Another thread holds the slot: the node lists.
    Busy,
    /// A debug cache or a CPU id without a slot.
    Slow,
}

/// What a refill learnt of the barn's full sheaves before it took the node's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FullSheaves {
    /// It asked, and the barn had none: do not ask again under the lock.
    NoneInBarn,
    /// It did not ask (remote frees were waiting, or the array was not empty).
    NotAsked,
}

/// Pops an object from the held slot's array, counting it as handed out.
#[inline(always)]
fn pop_counted(guard: &mut SlotGuard<'_>) -> Option<*mut u8> {
    guard.with(|data| data.array_mut()?.pop())
}

/// What [`KmemCache::free_fast`] leaves to its caller.
enum FastFree {
    /// The object is on the CPU's array.
    Done,
    /// Another thread holds the slot: the object goes straight to this node's slabs.
    Busy(NodeId),
    /// An object of this cache from another node than the CPU's: the alien cache of
    /// `home` (the CPU's node) for `owner` (the object's).
    Remote { home: NodeId, owner: NodeId },
    /// A debug cache, an unknown CPU id, or a pointer to check.
    Slow,
}

/// What a new cache shares with its allocator and the allocator's other caches.
#[derive(Debug)]
pub(crate) struct SharedParts {
    /// The allocator, for its cache_chain mutex.
    pub(crate) allocator: Weak<Allocator>,
    /// Machine facts.
    pub(crate) machine: Arc<Machine>,
    /// Slabs of every cache of the allocator.
    pub(crate) registry: Arc<SlabRegistry>,
    /// The page-block cache.
    pub(crate) pages: Arc<PageCache>,
}

/// The cache proper (`struct kmem_cache`). Reached through [`Cache`] and typed handles.
///
/// `repr(C, align(64))`: the fields the fast paths read (the CPU source, the per-CPU
/// slots, the id and slab size a free checks, the debug flag) come first and share one
/// cache line.
#[repr(C, align(64))]
pub(crate) struct KmemCache {
    /// Where the current CPU is read (`cpu.rs`), copied from the machine.
    cpu_source: CpuSource,
    /// How the fast paths reach a CPU's array: the machine's mode, CAS for a debug cache.
    pub(crate) fast_path: FastPath,
    /// `cachep->array[cpu]`, indexed by CPU id.
    pub(crate) array: Box<[CachePadded<ArraySlot>]>,
    /// Unique id, written in each slab descriptor to recognise the owner.
    pub(crate) id: u64,
    /// `slab_mask(geometry.slab_bytes)`, beside the other fast-path fields: what the fast
    /// free masks an object's address with to find its descriptor.
    slab_mask: usize,
    /// Debug checks on (red zones, poison, registry-checked frees).
    pub(crate) debug: bool,
    /// The name, as slabinfo prints it.
    pub(crate) name: String,
    /// Creation flags.
    pub(crate) flags: CacheFlags,
    /// Object and slab shape.
    pub(crate) geometry: Geometry,
    /// Machine facts.
    pub(crate) machine: Arc<Machine>,
    /// Slabs of every cache of the allocator.
    pub(crate) registry: Arc<SlabRegistry>,
    /// The allocator's page-block cache: where destroyed slabs' blocks go and grown
    /// slabs' blocks come from before the OS is asked.
    pub(crate) pages: Arc<PageCache>,
    /// The allocator, for its cache_chain mutex (shrink, tune and validate are serialized
    /// against hotplug by it).
    pub(crate) allocator: Weak<Allocator>,
    /// `cachep->nodelists[node]`, indexed by node id, every possible node present.
    pub(crate) nodelists: Box<[CachePadded<KmemList3>]>,
    /// `limit`, `batchcount`, `shared`.
    pub(crate) tunables: TunableCells,
    /// Whether a failed `mbind` was reported already.
    bind_warned: AtomicBool,
    /// Corruption found by `free_block` (objects it refused), for `validate` to report.
    pub(crate) refused: AtomicU32,
    /// rseq mode: sequences the kernel aborted (preemption, migration, signals, stops).
    pub(crate) rseq_aborts: AtomicU64,
    /// rseq mode: sequences that found the thread on another CPU than the one addressed.
    pub(crate) rseq_mismatches: AtomicU64,
    /// Planned allocation failures (`Cache::fail_nth`).
    pub(crate) failslab: FailSlab,
}

// SAFETY: all shared mutable state is behind the slot locks and node locks; slab memory
// is reached through raw pointers under the rules documented in `slab.rs`.
unsafe impl Send for KmemCache {}
// SAFETY: as above.
unsafe impl Sync for KmemCache {}

impl std::fmt::Debug for KmemCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmemCache")
            .field("name", &self.name)
            .field("geometry", &self.geometry)
            .finish_non_exhaustive()
    }
}

impl KmemCache {
    /// A cache with empty node lists for every node and detached CPU arrays
    /// (`kmem_cache_create` up to `enable_cpucache`). `prepared_per_node[n]` is the
    /// number of prepared CPUs whose home is node `n`, for `free_limit`.
    pub(crate) fn new(
        name: &str,
        layout: Layout,
        flags: CacheFlags,
        shared: SharedParts,
        prepared_per_node: &[usize],
        slab_order: SlabOrder,
    ) -> Result<Self> {
        let SharedParts { allocator, machine, registry, pages } = shared;
        let debug = flags.contains(CacheFlags::DEBUG);
        let geometry = Self::geometry_for(name, layout, flags, &machine, slab_order)?;
        let tunables = Tunables::defaults(geometry.buffer_size, machine.smp, debug);
        let fast_path = if debug { FastPath::Cas } else { machine.fast_path };
        let id = next_cache_id();
        let array = Self::cpu_slots(&machine, fast_path);
        let nodelists = (0..machine.node_bound)
            .map(|node| {
                let cpus = prepared_per_node.get(node).copied().unwrap_or(0);
                CachePadded::new(KmemList3::new(
                    free_limit(cpus, tunables.batchcount, geometry.num),
                    machine.node_bound,
                    SlabRecords::new(Arc::clone(&registry), id, node as NodeId, geometry.slab_bytes),
                ))
            })
            .collect();
        Ok(Self {
            cpu_source: machine.cpu_source,
            fast_path,
            slab_mask: slab_mask(geometry.slab_bytes),
            id,
            name: name.to_owned(),
            flags,
            debug,
            geometry,
            machine,
            registry,
            pages,
            allocator,
            array,
            nodelists,
            tunables: TunableCells::new(tunables),
            bind_warned: AtomicBool::new(false),
            refused: AtomicU32::new(0),
            rseq_aborts: AtomicU64::new(0),
            rseq_mismatches: AtomicU64::new(0),
            failslab: FailSlab::new(),
        })
    }

    /// The slab geometry for `layout` (`calculate_slab_order`, or the order the caller
    /// fixed), red-zoned in a debug cache; a layout no slab can hold is refused by name.
    fn geometry_for(
        name: &str,
        layout: Layout,
        flags: CacheFlags,
        machine: &Machine,
        slab_order: SlabOrder,
    ) -> Result<Geometry> {
        let red_zoning = if flags.contains(CacheFlags::DEBUG) { RedZoning::Zoned } else { RedZoning::Plain };
        let object_align =
            if flags.contains(CacheFlags::HWCACHE_ALIGN) { ObjectAlign::HwCache } else { ObjectAlign::Word };
        match slab_order {
            SlabOrder::Calculated => {
                Geometry::new(layout, object_align, red_zoning, machine.slab_break_gfp_order)
            }
            SlabOrder::Fixed(gfporder) => Geometry::with_order(layout, object_align, red_zoning, gfporder),
        }
        .map_err(|reason| Error::InvalidLayout {
            cache: name.to_owned(),
            size: layout.size(),
            align: layout.align(),
            reason,
        })
    }

    /// One detached slot per possible CPU (`cachep->array[cpu]`), homed on the CPU's node
    /// with memory and fenced as the cache's fast path requires.
    fn cpu_slots(machine: &Machine, fast_path: FastPath) -> Box<[CachePadded<ArraySlot>]> {
        (0..machine.cpu_bound)
            .map(|cpu| {
                let home = machine.cpu_home[cpu].unwrap_or(machine.memory_nodes[0]);
                let fence = match fast_path {
                    FastPath::Rseq(area) => SlotFence::Rseq { cpu: cpu as CpuId, area },
                    FastPath::Cas => SlotFence::Lock,
                };
                CachePadded::new(ArraySlot::new(home, fence))
            })
            .collect()
    }

    /// The calling thread's CPU (possibly stale: every path is correct whatever it
    /// returns): an inline read of the rseq area on the live machine, the topology's
    /// answer elsewhere (`cpu.rs`).
    #[inline(always)]
    pub(crate) fn current_cpu(&self) -> CpuId {
        match self.cpu_source {
            CpuSource::Rseq(offset) => {
                let cpu = offset.read();
                if cpu >= 0 {
                    cpu as CpuId
                } else {
                    self.topology_cpu()
                }
            }
            CpuSource::Topology => self.topology_cpu(),
        }
    }

    /// The topology's answer: fixtures, fakes, a live machine without rseq, and a thread
    /// whose rseq area is not registered (the topology then falls back to `sched_getcpu`).
    #[inline(never)]
    fn topology_cpu(&self) -> CpuId {
        self.machine.topology.current_cpu()
    }

    /// A node's lists. Every node id below the bound has them.
    #[inline(always)]
    pub(crate) fn l3(&self, node: NodeId) -> &KmemList3 {
        &self.nodelists[node as usize]
    }

    /// The node of a CPU id that may be out of range (a topology's odd answer).
    pub(crate) fn home_or_default(&self, cpu: CpuId) -> NodeId {
        self.array.get(cpu as usize).map_or(self.machine.memory_nodes[0], |slot| slot.node)
    }

    // ---------------------------------------------------------------- allocation

    /// `kmem_cache_alloc` on the calling thread's CPU: in rseq mode one check of the mode
    /// and one sequence inline, which reads the CPU itself ([`KmemCache::pop_here`]); CAS
    /// mode, and a thread whose rseq area is not registered, out of line with the
    /// topology's CPU ([`KmemCache::alloc_on`]).
    #[inline(always)]
    pub(crate) fn alloc_here(&self) -> Result<NonNull<u8>> {
        with_error(|error| match self.fast_path {
            FastPath::Rseq(area) => {
                let here = self.pop_here(area);
                match here.popped() {
                    Some(obj) => Some(obj),
                    None => self.rseq_here_alloc_missed(here, error),
                }
            }
            FastPath::Cas => {
                unlikely();
                self.alloc_elsewhere(error)
            }
        })
    }

    /// One pop sequence on the calling thread's CPU, which the sequence reads from the
    /// rseq area as its first instruction; gives the outcome and that CPU. No call, no
    /// bounds check and no CPU read outside the sequence.
    #[inline(always)]
    fn pop_here(&self, area: RseqArea) -> Here {
        // SAFETY: the cache's own slots, all in rseq mode (the mode is the cache's).
        unsafe { area.pop_here(&self.array) }
    }

    /// What a pop on the thread's own CPU did not do: an empty array, an abort or a
    /// detached array go to [`KmemCache::rseq_alloc_slow`] for the CPU the thread is on
    /// now; a CPU id that is not a slot (a thread whose rseq area is not registered) is
    /// left to the topology ([`KmemCache::alloc_elsewhere`]). Takes no more than fits in
    /// registers, so that the fast path stores nothing for it.
    #[cold]
    #[inline(never)]
    fn rseq_here_alloc_missed(&self, here: Here, error: &mut MaybeUninit<Error>) -> Option<NonNull<u8>> {
        match (self.rseq_slot_cpu(), here.pop()) {
            (Some((area, cpu)), outcome) if outcome != Pop::Miss(Miss::Mismatch) => {
                ok_or_set(self.rseq_alloc_slow(area, cpu, outcome), error)
            }
            _ => self.alloc_elsewhere(error),
        }
    }

    /// rseq mode's area and the calling thread's CPU, if that CPU has a slot: what the
    /// slow paths after a sequence on the thread's own CPU act on (the sequence does not
    /// hand back the CPU it used; the thread may be on another by now, which is as good).
    fn rseq_slot_cpu(&self) -> Option<(RseqArea, CpuId)> {
        let FastPath::Rseq(area) = self.fast_path else { return None };
        let cpu = CpuId::try_from(area.cpu_id()).ok()?;
        ((cpu as usize) < self.array.len()).then_some((area, cpu))
    }

    /// What [`KmemCache::alloc_here`] leaves to the topology, in one call: CAS mode (its
    /// fast path inlined here), and a thread whose rseq area is not registered (its pop
    /// on the topology's CPU misses, and the node lists serve it).
    #[inline(never)]
    fn alloc_elsewhere(&self, error: &mut MaybeUninit<Error>) -> Option<NonNull<u8>> {
        self.alloc_on_or_set(self.current_cpu(), error)
    }

    /// `____cache_alloc` on `cpu`: pop the CPU's array; refill when empty. For callers
    /// that name the CPU; [`KmemCache::alloc_here`] is the common path.
    #[inline(always)]
    pub(crate) fn alloc_on(&self, cpu: CpuId) -> Result<NonNull<u8>> {
        with_error(|error| self.alloc_on_or_set(cpu, error))
    }

    /// [`KmemCache::alloc_on`]'s paths, meeting on a pointer (see [`with_error`]).
    #[inline(always)]
    fn alloc_on_or_set(&self, cpu: CpuId, error: &mut MaybeUninit<Error>) -> Option<NonNull<u8>> {
        match self.fast_path {
            FastPath::Rseq(area) => self.alloc_rseq(area, cpu, error),
            FastPath::Cas => self.alloc_cas(cpu, error),
        }
    }

    /// rseq mode's allocation: one pop sequence inline, anything but a hit out of line.
    #[inline(always)]
    fn alloc_rseq(&self, area: RseqArea, cpu: CpuId, error: &mut MaybeUninit<Error>) -> Option<NonNull<u8>> {
        match self.pop_sequence(area, cpu) {
            Some(Pop::Hit(obj)) => Some(obj),
            outcome => self.rseq_alloc_missed(area, cpu, outcome, error),
        }
    }

    /// CAS mode's fast path ([`KmemCache::alloc_fast`]) and what it leaves. Inline only in
    /// the out-of-line callers ([`KmemCache::alloc_elsewhere`]) and in those that name a
    /// CPU, so that the rseq fast path, a check of the mode and one sequence, stays small
    /// enough to inline everywhere; CAS mode pays one call.
    #[inline(always)]
    fn alloc_cas(&self, cpu: CpuId, error: &mut MaybeUninit<Error>) -> Option<NonNull<u8>> {
        let result = match self.alloc_fast(cpu) {
            FastAlloc::Hit(obj) => return Some(obj),
            FastAlloc::Empty(guard) => self.cache_alloc_refill(guard),
            FastAlloc::Busy => self.alloc_contended(cpu),
            FastAlloc::Slow => self.alloc_slow(cpu),
        };
        ok_or_set(result, error)
    }

    /// What an rseq pop that did not hit leaves ([`KmemCache::rseq_alloc_slow`]; a CPU id
    /// without a slot is served as a contended one), as [`KmemCache::alloc_on`] takes it.
    #[cold]
    #[inline(never)]
    fn rseq_alloc_missed(
        &self,
        area: RseqArea,
        cpu: CpuId,
        outcome: Option<Pop>,
        error: &mut MaybeUninit<Error>,
    ) -> Option<NonNull<u8>> {
        let result = match outcome {
            Some(outcome) => self.rseq_alloc_slow(area, cpu, outcome),
            None => self.alloc_contended(cpu),
        };
        ok_or_set(result, error)
    }

    /// One pop sequence on `cpu`'s array; None for a CPU id without a slot.
    #[inline(always)]
    fn pop_sequence(&self, area: RseqArea, cpu: CpuId) -> Option<Pop> {
        let slot = self.array.get(cpu as usize)?;
        // SAFETY: the slot of `cpu`, in a cache whose slots are all in rseq mode.
        Some(unsafe { area.pop(cpu, slot.published.as_ptr()) })
    }

    /// The rseq fast path alone: an object from the calling thread's CPU's array if one
    /// sequence pops it, else None with nothing done (no lock taken, nothing allocated or
    /// counted, no system call, no call to the topology). None always in CAS mode. For
    /// callers that must do something before any slow path runs: a global allocator marks
    /// the thread as inside itself then.
    // kmalloc's, which the loom build leaves out.
    #[cfg(not(slab_core_loom))]
    #[inline(always)]
    pub(crate) fn alloc_cached(&self) -> Option<NonNull<u8>> {
        let FastPath::Rseq(area) = self.fast_path else { return None };
        // A pop that did not hit committed nothing: the caller's full path starts over.
        self.pop_here(area).popped()
    }

    /// What a pop sequence could not do. An empty array is refilled as the kernel does it,
    /// under the slot lock, which in rseq mode stops the CPU first (R2), so that the
    /// barn exchange and the refill are the CAS mode's own (`cache_alloc_refill`); after
    /// a migration or an abort the pop is retried on the CPU the thread is on now (if it
    /// shares the node); a detached or stopped CPU is served from the node lists. Rare:
    /// an array runs empty once per batch, and the kernel aborts a sequence only when it
    /// preempts or signals the thread inside its few instructions.
    #[cold]
    #[inline(never)]
    fn rseq_alloc_slow(&self, area: RseqArea, cpu: CpuId, outcome: Pop) -> Result<NonNull<u8>> {
        let node = self.home_or_default(cpu);
        let (cpu, outcome) = self.rseq_retry(area, node, cpu, outcome, Pop::miss, |cpu| {
            // SAFETY: as in alloc_rseq; rseq_retry gives CPUs that have a slot.
            unsafe { area.pop(cpu, self.array[cpu as usize].published.as_ptr()) }
        });
        match outcome {
            Pop::Hit(obj) => Ok(obj),
            Pop::Empty => self.cache_alloc_refill(self.array[cpu as usize].lock()),
            Pop::Miss(_) => self.alloc_direct(node),
        }
    }

    /// Runs `attempt` again after a migration or an abort, on the CPU the thread is on
    /// now (if its array holds `node`'s objects), at most [`RSEQ_ATTEMPTS`] times; gives
    /// the CPU of the last attempt and its outcome, for the caller to act on. Only the
    /// last outcome is acted on, and every attempt before it missed: a sequence that
    /// committed is never also done another way (an object popped or pushed and then
    /// served or freed through the node lists as well would be handed out twice).
    fn rseq_retry<T: Copy>(
        &self,
        area: RseqArea,
        node: NodeId,
        cpu: CpuId,
        outcome: T,
        miss_of: impl Fn(T) -> Option<Miss>,
        mut attempt: impl FnMut(CpuId) -> T,
    ) -> (CpuId, T) {
        let (mut cpu, mut outcome) = (cpu, outcome);
        for retry in 0..=RSEQ_ATTEMPTS {
            let Some(miss) = miss_of(outcome) else { break };
            let Some(now) = self.rseq_retry_cpu(area, miss, node) else { break };
            if retry == RSEQ_ATTEMPTS {
                break;
            }
            cpu = now;
            outcome = attempt(cpu);
        }
        (cpu, outcome)
    }

    /// Counts an aborted or mismatched sequence (every one, the last included) and gives
    /// the CPU to try next: the one the thread is on now, if its array holds `node`'s
    /// objects. None after a detached array, which is not counted (a stopped CPU stays
    /// stopped for longer than a retry takes).
    fn rseq_retry_cpu(&self, area: RseqArea, miss: Miss, node: NodeId) -> Option<CpuId> {
        let counter = match miss {
            Miss::Detached => return None,
            Miss::Aborted => &self.rseq_aborts,
            Miss::Mismatch => &self.rseq_mismatches,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let now = CpuId::try_from(area.cpu_id()).ok()?;
        (self.array.get(now as usize)?.node == node).then_some(now)
    }

    /// The fast path proper: outside debug mode, one compare-and-swap to take the CPU's
    /// slot, a pop, a store to release it. What it could not do is handed to the caller,
    /// with the slot still held when it was taken (so a miss never costs a second
    /// compare-and-swap, which on a slot contended by another thread would bounce its
    /// cache line once more). The result is two words: the hit stays in registers.
    #[inline(always)]
    fn alloc_fast(&self, cpu: CpuId) -> FastAlloc<'_> {
        if self.debug {
            return FastAlloc::Slow;
        }
        let Some(slot) = self.array.get(cpu as usize) else { return FastAlloc::Slow };
        let Some(mut guard) = slot.try_lock() else { return FastAlloc::Busy };
        match pop_counted(&mut guard) {
            // SAFETY: array entries are object addresses, never null.
            Some(obj) => FastAlloc::Hit(unsafe { NonNull::new_unchecked(obj) }),
            None => FastAlloc::Empty(guard),
        }
    }

    /// Debug caches and CPU ids without a slot: the same pop under the slot lock, then the
    /// debug checks, the refill, or the node lists. Rare: debug mode is a diagnostic mode
    /// that pays for its checks anyway, and only a topology's odd answer gives a CPU id
    /// beyond the possible CPUs.
    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, cpu: CpuId) -> Result<NonNull<u8>> {
        if let Some(slot) = self.array.get(cpu as usize) {
            if let Some(mut guard) = slot.try_lock() {
                return match pop_counted(&mut guard) {
                    // SAFETY: array entries are object addresses, never null.
                    Some(obj) if !self.debug => Ok(unsafe { NonNull::new_unchecked(obj) }),
                    Some(obj) => self.debug_alloc_from_slot(guard, obj),
                    None => self.cache_alloc_refill(guard),
                };
            }
        }
        self.alloc_contended(cpu)
    }

    /// A CPU whose slot is taken by another thread, or an unknown CPU id: allocate from
    /// the node lists directly. Rare: a slot is contended only when two threads hold the
    /// same CPU id at once (a stale id after a migration, a fake machine's shared id).
    #[cold]
    #[inline(never)]
    fn alloc_contended(&self, cpu: CpuId) -> Result<NonNull<u8>> {
        self.alloc_direct(self.home_or_default(cpu))
    }

    /// `cache_alloc_refill` (SLUB's `__pcs_replace_empty_main`): the (locked) CPU array is
    /// empty. It is exchanged whole for a full sheaf from the node's barn, with no
    /// `list_lock` and no copy; when remote frees wait for the node, or the barn has no
    /// full sheaf, the node's lock is taken and the array refilled from the remote frees,
    /// else the barn, else the slabs, else the node grows. Then pop. A detached slot is
    /// served from the node lists. Rare: once per `batchcount` allocations at most.
    #[cold]
    #[inline(never)]
    fn cache_alloc_refill(&self, mut guard: SlotGuard<'_>) -> Result<NonNull<u8>> {
        let node = guard.node();
        let l3 = self.l3(node);
        loop {
            let barn = guard.with(|data| {
                if data.array()?.avail() > 0 || !l3.remote.is_empty() {
                    return Some(FullSheaves::NotAsked);
                }
                data.exchange(|empty| l3.barn.exchange_empty_for_full(empty));
                Some(FullSheaves::NoneInBarn)
            });
            let Some(barn) = barn else {
                drop(guard);
                return self.alloc_direct(node);
            };
            if let Some(obj) = pop_counted(&mut guard) {
                return self.hand_out_from_slot(guard, obj);
            }
            self.refill_from_node(&mut guard, barn)?;
            if let Some(obj) = pop_counted(&mut guard) {
                return self.hand_out_from_slot(guard, obj);
            }
            // Still holding the slot: other threads on this CPU id use the slow path
            // meanwhile, and hotplug waits for the growth to finish. A node that cannot
            // grow hands the caller another node's object, past the (local) CPU array.
            if let Err(error) = self.cache_grow(node) {
                drop(guard);
                return self.fallback_alloc(node, error);
            }
        }
    }

    /// The locked half of `cache_alloc_refill`: under the node's `list_lock`, the remote
    /// frees queued for the node go into the array (what does not fit goes back to the
    /// slabs); an array still empty is exchanged with the barn (unless that was just
    /// tried), else refilled from the slabs.
    fn refill_from_node(&self, guard: &mut SlotGuard<'_>, barn: FullSheaves) -> Result<()> {
        let node = guard.node();
        let l3 = self.l3(node);
        let mut chain = SlabChain::default();
        let refused = {
            let mut state = l3.list_lock.lock();
            if state.destroyed {
                return Err(self.destroyed_error());
            }
            let state = &mut *state;
            guard.with(|data| {
                let Some(ac) = data.array_mut() else { return Refused::default() };
                // Remote frees were counted back in where they were freed: put, not push.
                let refused = l3.drain_remote(state, &self.geometry, node, &mut chain, |objects| {
                    ac.extend_from_slice(objects) as usize
                });
                if ac.avail() == 0
                    && !(barn == FullSheaves::NotAsked
                        && data.exchange(|empty| l3.barn.exchange_empty_for_full(empty)))
                {
                    let Some(ac) = data.array_mut() else { return refused };
                    let mut batchcount = ac.batchcount();
                    if !ac.touched() && batchcount > BATCHREFILL_LIMIT {
                        batchcount = BATCHREFILL_LIMIT;
                    }
                    state.refill(&self.geometry, ac, batchcount);
                }
                refused
            })
        };
        self.note_refused(refused);
        self.slabs_destroy(chain);
        Ok(())
    }

    /// An object popped from a slot on a slow path: handed out, after the debug checks in
    /// a debug cache.
    fn hand_out_from_slot(&self, guard: SlotGuard<'_>, obj: *mut u8) -> Result<NonNull<u8>> {
        if self.debug {
            return self.debug_alloc_from_slot(guard, obj);
        }
        // SAFETY: array entries are object addresses, never null.
        Ok(unsafe { NonNull::new_unchecked(obj) })
    }

    /// `__cache_alloc_node`: one object straight from a node's slabs, growing the node
    /// when it has none free, another node's when it cannot grow (`fallback.rs`). Not
    /// `#[cold]`: every allocation for another node than the CPU's comes here. Out of line,
    /// so that the fast paths that fall back to it stay small.
    #[inline(never)]
    pub(crate) fn alloc_direct(&self, node: NodeId) -> Result<NonNull<u8>> {
        self.cache_alloc_node(node, NodeScope::AnyNode)
    }

    /// `kmem_cache_alloc_node`: the CPU's own node goes through the fast path; another
    /// node (or its nearest memory node, for a node without memory) straight to its lists.
    pub(crate) fn alloc_node_on(&self, cpu: CpuId, node: NodeId) -> Result<NonNull<u8>> {
        let target = self.machine.fallback_of(node)?;
        if self.array.get(cpu as usize).is_some_and(|slot| slot.node == target) {
            self.alloc_on(cpu)
        } else {
            self.alloc_direct(target)
        }
    }

    /// `cache_grow`: take a block for `node` from the page cache, else map one (and bind
    /// it to the node), initialise it as a slab, and add it to the node's free list. The
    /// block is found and initialised with no lock held. Rare: once per slab's worth of
    /// objects, and only when no slab of the node has a free one.
    #[cold]
    #[inline(never)]
    pub(crate) fn cache_grow(&self, node: NodeId) -> Result<()> {
        // Only allowed memory nodes hold slabs (`Machine::memory_nodes`), so `mbind` below
        // is never asked for a node this process may not use.
        debug_assert!(self.machine.memory_nodes.contains(&node), "cache_grow for node {node}");
        let colour = {
            let mut l3 = self.l3(node).list_lock.lock();
            if l3.destroyed {
                return Err(self.destroyed_error());
            }
            l3.next_colour(&self.geometry)
        };
        if self.failslab.should_fail(FailPoint::Grow) {
            return Err(self.injected_error(FailPoint::Grow, node, self.geometry.slab_bytes));
        }
        let block = match self.pages.take(node, self.geometry.gfporder) {
            // A cached block of this node was bound to it when first mapped.
            Some(block) => block,
            None => self.map_block(node)?,
        };
        // SAFETY: the block is ours alone (fresh, or out of the page cache), slab_bytes long
        // and aligned to that size; the colour comes from next_colour, below geometry.colour.
        let slab = unsafe { SlabPtr::init(block, &self.geometry, self.id, node, colour) };
        if self.debug {
            // SAFETY: the slab is new and unpublished.
            unsafe { self.init_objects_debug(slab) };
        }
        // The registry makes room for the slab now, before the list lock under which the
        // slab enters it: its table may grow, and growing allocates.
        self.registry.reserve();
        let mut l3 = self.l3(node).list_lock.lock();
        if l3.destroyed {
            drop(l3);
            self.registry.cancel_reservation();
            let mut chain = SlabChain::default();
            // SAFETY: the slab was never published on a list or in the registry; it is
            // ours alone.
            unsafe { chain.push(slab) };
            self.slabs_destroy(chain);
            return Err(self.destroyed_error());
        }
        // SAFETY: a new detached slab of this node, every object free. It enters the
        // registry here, under the lock, together with the lists.
        unsafe { l3.add_grown_slab(&self.geometry, slab) };
        Ok(())
    }

    /// A new block from the OS for a slab of `node`, bound to the node where that means
    /// something (`kmem_getpages` when the page allocator's free lists are empty). Rare:
    /// the per-node page cache serves a slab that comes and goes; this maps when it is
    /// empty, a system call whose cost dwarfs the call's.
    #[cold]
    #[inline(never)]
    fn map_block(&self, node: NodeId) -> Result<NonNull<u8>> {
        let bytes = self.geometry.slab_bytes;
        let block = memory::map_aligned(bytes).map_err(|error| Error::OutOfMemory {
            cache: self.name.clone(),
            node,
            bytes,
            reason: error.to_string(),
        })?;
        if self.machine.numa_binding {
            if let Err(error) = memory::bind_to_node(block, bytes, node) {
                if !self.bind_warned.swap(true, Ordering::Relaxed) {
                    eprintln!(
                        "slab-core: cache {:?}: cannot bind slabs to node {node} (mbind: {error}); \
                         they stay where the kernel puts them",
                        self.name
                    );
                }
            }
        }
        Ok(block)
    }

    /// Returns collected slabs to the page cache of their node (`slabs_destroy` /
    /// `slab_destroy` → `kmem_freepages`); a block the cache has no room for goes to the
    /// OS. Called with no lock held; the slabs left the registry with the lists, under
    /// the node lock (`SlabRecords`). Returns how many slabs left the cache.
    pub(crate) fn slabs_destroy(&self, mut chain: SlabChain) -> usize {
        let mut count = 0;
        while let Some(slab) = chain.pop() {
            // SAFETY: a slab on the chain is still mapped; its node is an identity field.
            let node = unsafe { slab.nodeid() };
            // SAFETY: the slab was taken off every list and out of the registry; nobody
            // can reach it any more; it was mapped for `node` with slab_bytes bytes.
            unsafe { self.pages.give(node, self.geometry.gfporder, NonNull::new_unchecked(slab.base())) };
            count += 1;
        }
        count
    }

    // ---------------------------------------------------------------- free

    /// `kmem_cache_free` on the calling thread's CPU, as [`KmemCache::alloc_here`]
    /// allocates: rseq mode inline, everything else out of line.
    ///
    /// # Safety
    /// As for [`KmemCache::free_on`].
    #[inline(always)]
    pub(crate) unsafe fn free_here(&self, ptr: NonNull<u8>) -> Result<()> {
        match self.fast_path {
            FastPath::Rseq(area) => {
                // SAFETY: forwarded to the caller.
                let Some((here, node)) = (unsafe { self.push_here(area, ptr) }) else {
                    // SAFETY: forwarded to the caller.
                    return unsafe { self.free_elsewhere(ptr) };
                };
                if here.pushed() {
                    return Ok(());
                }
                // SAFETY: forwarded to the caller.
                unsafe { self.rseq_here_free_missed(ptr, node, here) }
            }
            FastPath::Cas => {
                unlikely();
                // SAFETY: forwarded to the caller.
                unsafe { self.free_elsewhere(ptr) }
            }
        }
    }

    /// One push sequence of an object of this cache on the calling thread's CPU, which
    /// the sequence reads, as [`KmemCache::pop_here`] does, and whose node it compares
    /// with the object's; gives the outcome, that CPU and the object's node. None, with
    /// nothing done, for a pointer whose slab is not one of this cache's.
    ///
    /// # Safety
    /// As for [`KmemCache::free_on`]; the cache is in rseq mode.
    #[inline(always)]
    unsafe fn push_here(&self, area: RseqArea, ptr: NonNull<u8>) -> Option<(Here, NodeId)> {
        let obj = ptr.as_ptr();
        // SAFETY: forwarded to the caller.
        let node = unsafe { self.own_object_node(obj) }?;
        // SAFETY: the cache's own slots, all in rseq mode; obj is a handed-out object of
        // `node` (checked above).
        Some((unsafe { area.push_here(&self.array, obj, node) }, node))
    }

    /// What a push of an object of `node` on the thread's own CPU did not do, for the CPU
    /// the thread is on now: an object of another node than that CPU's goes straight to
    /// the alien cache ([`KmemCache::cache_free_alien`], inline here: `push_here` has
    /// checked the object's descriptor, so [`KmemCache::free_slow`]'s checks would only
    /// lengthen every remote free); a full array, an abort or a detached array to
    /// [`KmemCache::rseq_free_slow`]; a CPU id that is not a slot to the topology's path
    /// ([`KmemCache::free_elsewhere`]). Not `#[cold]`: on a NUMA machine every free of
    /// another node's object comes here. Takes no more than fits in registers, as
    /// [`KmemCache::rseq_here_alloc_missed`].
    ///
    /// # Safety
    /// As for [`KmemCache::free_on`].
    #[inline(never)]
    unsafe fn rseq_here_free_missed(&self, ptr: NonNull<u8>, node: NodeId, here: Here) -> Result<()> {
        let outcome = here.push();
        let Some((area, cpu)) = self.rseq_slot_cpu().filter(|_| outcome != Push::Miss(Miss::Mismatch)) else {
            // SAFETY: forwarded to the caller.
            return unsafe { self.free_elsewhere(ptr) };
        };
        let home = self.array[cpu as usize].node;
        if home != node {
            self.cache_free_alien(home, node, ptr.as_ptr());
            return Ok(());
        }
        if outcome == Push::Remote {
            // The thread has moved to a CPU of the object's node since: a local free.
            // SAFETY: forwarded to the caller.
            return unsafe { self.free_slow(cpu, ptr) };
        }
        self.rseq_free_slow(area, cpu, node, ptr.as_ptr(), outcome);
        Ok(())
    }

    /// What [`KmemCache::free_here`] leaves to the topology, in one call: CAS mode (its
    /// fast path inlined here), and a thread whose rseq area is not registered.
    ///
    /// # Safety
    /// As for [`KmemCache::free_on`].
    #[inline(never)]
    unsafe fn free_elsewhere(&self, ptr: NonNull<u8>) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { self.free_on(self.current_cpu(), ptr) }
    }

    /// `kmem_cache_free` on the calling thread's CPU for a caller that cannot return an
    /// error (a typed handle's drop): the same paths as [`KmemCache::free_here`], with
    /// everything but the rseq fast path and its error report out of line, so that no
    /// `Result` (an [`Error`] is several words, with a destructor) lives in the caller's
    /// frame and the free inlines into it as the fast path's few instructions.
    ///
    /// # Safety
    /// As for [`KmemCache::free_on`].
    #[inline(always)]
    pub(crate) unsafe fn free_here_reporting(&self, ptr: NonNull<u8>) {
        match self.fast_path {
            // SAFETY: forwarded to the caller.
            FastPath::Rseq(area) => match unsafe { self.push_here(area, ptr) } {
                Some((here, _)) if here.pushed() => {}
                // SAFETY: forwarded to the caller.
                Some((here, node)) => unsafe { self.rseq_here_free_reporting(ptr, node, here) },
                // SAFETY: forwarded to the caller.
                None => unsafe { self.free_elsewhere_reporting(ptr) },
            },
            FastPath::Cas => {
                unlikely();
                // SAFETY: forwarded to the caller.
                unsafe { self.free_elsewhere_reporting(ptr) }
            }
        }
    }

    /// `kmem_cache_free` on `cpu`. For callers that name the CPU and for the out-of-line
    /// ones; [`KmemCache::free_here`] is the common path.
    ///
    /// # Safety
    /// Outside debug mode, `ptr` must be an object allocated from this cache and not
    /// freed since. In debug mode any pointer is checked first.
    #[inline(always)]
    pub(crate) unsafe fn free_on(&self, cpu: CpuId, ptr: NonNull<u8>) -> Result<()> {
        match self.fast_path {
            // SAFETY: forwarded to the caller.
            FastPath::Rseq(area) => unsafe { self.free_rseq_or_slow(area, cpu, ptr) },
            // SAFETY: forwarded to the caller.
            FastPath::Cas => unsafe { self.free_cas(cpu, ptr) },
        }
    }

    /// rseq mode's free: one push sequence inline; what it does not finish goes to
    /// [`KmemCache::free_slow`].
    ///
    /// # Safety
    /// As for [`KmemCache::free_on`]; the cache is in rseq mode.
    #[inline(always)]
    unsafe fn free_rseq_or_slow(&self, area: RseqArea, cpu: CpuId, ptr: NonNull<u8>) -> Result<()> {
        // SAFETY: forwarded to the caller.
        if unsafe { self.free_rseq(area, cpu, ptr) } {
            return Ok(());
        }
        // SAFETY: forwarded to the caller.
        unsafe { self.free_slow(cpu, ptr) }
    }

    /// CAS mode's free: [`KmemCache::free_fast`], then a contended slot's object straight
    /// to its node's slabs, anything else to the slow path. Inline where
    /// [`KmemCache::alloc_cas`] is: in [`KmemCache::free_elsewhere`], the one call CAS mode
    /// pays, and in the callers that name a CPU.
    ///
    /// # Safety
    /// As for [`KmemCache::free_on`].
    #[inline(always)]
    unsafe fn free_cas(&self, cpu: CpuId, ptr: NonNull<u8>) -> Result<()> {
        // SAFETY: forwarded to the caller.
        match unsafe { self.free_fast(cpu, ptr) } {
            FastFree::Done => Ok(()),
            FastFree::Busy(node) => {
                self.free_direct(node, ptr.as_ptr());
                Ok(())
            }
            FastFree::Remote { home, owner } => {
                self.free_remote(home, owner, ptr.as_ptr());
                Ok(())
            }
            // SAFETY: forwarded to the caller.
            FastFree::Slow => unsafe { self.free_slow(cpu, ptr) },
        }
    }

    /// What [`KmemCache::free_here_reporting`] does not do inline in rseq mode, as
    /// [`KmemCache::rseq_here_free_missed`] does it, with its error printed (see
    /// [`report`]). Rare: everything but the local free to the CPU's array.
    ///
    /// # Safety
    /// As for [`KmemCache::free_on`]; the cache is in rseq mode.
    #[inline(never)]
    unsafe fn rseq_here_free_reporting(&self, ptr: NonNull<u8>, node: NodeId, here: Here) {
        // SAFETY: forwarded to the caller.
        report(unsafe { self.rseq_here_free_missed(ptr, node, here) });
    }

    /// [`KmemCache::free_here_reporting`] in CAS mode, and for a pointer that is not one of
    /// the cache's objects: the topology's CPU and [`KmemCache::free_on`] inlined in one
    /// call, with its error printed (see [`report`]).
    ///
    /// # Safety
    /// As for [`KmemCache::free_on`].
    #[inline(never)]
    unsafe fn free_elsewhere_reporting(&self, ptr: NonNull<u8>) {
        // SAFETY: forwarded to the caller.
        report(unsafe { self.free_on(self.current_cpu(), ptr) });
    }

    /// The checks rseq mode's free on a named CPU makes before it touches an array: an
    /// object of this cache whose node is `cpu`'s. Gives the CPU's slot and the node;
    /// None sends the free to [`KmemCache::free_slow`], which checks and reports
    /// everything again. Never called for a debug cache (rseq mode serves none).
    ///
    /// # Safety
    /// As for [`KmemCache::free_on`].
    #[inline(always)]
    unsafe fn local_slot(&self, cpu: CpuId, obj: *mut u8) -> Option<(&ArraySlot, NodeId)> {
        // SAFETY: forwarded to the caller.
        let nodeid = unsafe { self.own_object_node(obj) }?;
        let slot = self.array.get(cpu as usize)?;
        (slot.node == nodeid).then_some((slot, nodeid))
    }

    /// The node of an object whose slab is this cache's, read from its descriptor; None
    /// for a pointer in the first slab-sized block of memory or in another cache's slab.
    ///
    /// # Safety
    /// As for [`KmemCache::free_on`], outside debug mode.
    #[inline(always)]
    unsafe fn own_object_node(&self, obj: *mut u8) -> Option<NodeId> {
        let slab = SlabPtr::masked(obj, self.slab_mask)?;
        // SAFETY: the caller guarantees obj is one of our objects (or at least one of a
        // cache of this allocator), so a descriptor is mapped at its slab base.
        let (cache_id, nodeid) = unsafe { (slab.cache_id(), slab.nodeid()) };
        (cache_id == self.id).then_some(nodeid)
    }

    /// rseq mode's fast free: a local object is pushed onto the CPU's array in one
    /// sequence; a full array, a migration or an abort go to
    /// [`KmemCache::rseq_free_slow`], which finishes the free. False leaves it to
    /// [`KmemCache::free_slow`] (a remote object, an unknown CPU id, a pointer to check).
    ///
    /// # Safety
    /// As for [`KmemCache::free_on`]; the cache is in rseq mode (so not a debug cache).
    #[inline(always)]
    unsafe fn free_rseq(&self, area: RseqArea, cpu: CpuId, ptr: NonNull<u8>) -> bool {
        // SAFETY: forwarded to the caller.
        match unsafe { self.push_sequence(area, cpu, ptr) } {
            Some((Push::Done, _)) => true,
            Some((outcome, node)) => {
                self.rseq_free_slow(area, cpu, node, ptr.as_ptr(), outcome);
                true
            }
            None => false,
        }
    }

    /// One push sequence of a local object onto `cpu`'s array, with the object's node;
    /// None, with nothing done, for an object [`KmemCache::local_slot`] does not accept.
    ///
    /// # Safety
    /// As for [`KmemCache::free_on`]; the cache is in rseq mode.
    #[inline(always)]
    unsafe fn push_sequence(&self, area: RseqArea, cpu: CpuId, ptr: NonNull<u8>) -> Option<(Push, NodeId)> {
        let obj = ptr.as_ptr();
        // SAFETY: forwarded to the caller.
        let (slot, node) = unsafe { self.local_slot(cpu, obj) }?;
        // SAFETY: the slot of `cpu` in an rseq-mode cache; obj is a handed-out object of
        // its node (checked above).
        Some((unsafe { area.push(cpu, slot.published.as_ptr(), obj) }, node))
    }

    /// The rseq fast free alone, as [`KmemCache::alloc_cached`] is for allocation: true
    /// when one sequence pushed a local object onto the calling thread's CPU's array;
    /// false with nothing done (a full array, a remote object, a miss, CAS mode, an
    /// unregistered thread), for the caller's full path to finish.
    ///
    /// # Safety
    /// As for [`KmemCache::free_on`].
    // kmalloc's, which the loom build leaves out.
    #[cfg(not(slab_core_loom))]
    #[inline(always)]
    pub(crate) unsafe fn free_cached(&self, ptr: NonNull<u8>) -> bool {
        let FastPath::Rseq(area) = self.fast_path else { return false };
        // SAFETY: forwarded to the caller. Only Done commits.
        unsafe { self.push_here(area, ptr) }.is_some_and(|(here, _)| here.pushed())
    }

    /// CAS mode's fast free: outside debug mode, a local object goes onto the CPU's
    /// array under one compare-and-swap (a full array is flushed first, out of line). A
    /// slot held by another thread sends the object straight to its node's slabs
    /// ([`FastFree::Busy`], no second compare-and-swap); another node's object to the
    /// alien cache ([`FastFree::Remote`]); anything else goes to [`KmemCache::free_slow`].
    ///
    /// # Safety
    /// As for [`KmemCache::free_on`].
    #[inline(always)]
    unsafe fn free_fast(&self, cpu: CpuId, ptr: NonNull<u8>) -> FastFree {
        if self.debug {
            return FastFree::Slow;
        }
        let obj = ptr.as_ptr();
        // SAFETY: forwarded to the caller.
        let Some(node) = (unsafe { self.own_object_node(obj) }) else { return FastFree::Slow };
        let Some(slot) = self.array.get(cpu as usize) else { return FastFree::Slow };
        if slot.node != node {
            return FastFree::Remote { home: slot.node, owner: node };
        }
        let Some(guard) = slot.try_lock() else { return FastFree::Busy(node) };
        self.push_or_flush(guard, obj);
        FastFree::Done
    }

    /// What a push sequence could not do: a full array is flushed as the kernel does it,
    /// under the slot lock, which stops the CPU first (`cache_flusharray`, which also
    /// pushes the object); after a migration or an abort the push is retried on the CPU
    /// the thread is on now (if it shares the node); a detached or stopped CPU frees
    /// straight to the slabs. Rare, as for [`KmemCache::rseq_alloc_slow`].
    #[cold]
    #[inline(never)]
    fn rseq_free_slow(&self, area: RseqArea, cpu: CpuId, node: NodeId, obj: *mut u8, outcome: Push) {
        let (cpu, outcome) = self.rseq_retry(area, node, cpu, outcome, Push::miss, |cpu| {
            // SAFETY: the slot of `cpu` (rseq_retry gives slot CPUs) in an rseq-mode
            // cache; obj is a handed-out object of its node.
            unsafe { area.push(cpu, self.array[cpu as usize].published.as_ptr(), obj) }
        });
        match outcome {
            Push::Done => {}
            Push::Full => self.cache_flusharray(self.array[cpu as usize].lock(), obj),
            // A remote object of a retry's CPU (never: rseq_retry keeps to the node).
            Push::Remote => self.cache_free(cpu, obj, node),
            Push::Miss(_) => self.free_direct(node, obj),
        }
    }

    /// Pushes a local object on the held CPU array; a full or detached array goes
    /// through `cache_flusharray`, which releases the slot.
    #[inline(always)]
    fn push_or_flush(&self, mut guard: SlotGuard<'_>, obj: *mut u8) {
        let pushed = guard.with(|data| data.array_mut().is_some_and(|ac| ac.push(obj)));
        if !pushed {
            self.cache_flusharray(guard, obj);
        }
    }

    /// Every free [`KmemCache::free_fast`] did not do: debug mode, errors, remote objects,
    /// unknown or contended CPUs. Not `#[cold]`: on a NUMA machine every free of another
    /// node's object comes here (the alien cache). Out of line, so that the fast free
    /// stays small.
    ///
    /// # Safety
    /// As for [`KmemCache::free_on`].
    #[inline(never)]
    unsafe fn free_slow(&self, cpu: CpuId, ptr: NonNull<u8>) -> Result<()> {
        if self.debug {
            // SAFETY: debug_free checks the pointer against the registry first.
            return unsafe { self.debug_free(cpu, ptr) };
        }
        let obj = ptr.as_ptr();
        let Some(slab) = SlabPtr::masked(obj, self.slab_mask) else {
            return Err(self.foreign_pointer_error(obj as usize));
        };
        // SAFETY: the caller guarantees obj is one of our objects, so a descriptor is
        // mapped at its slab base.
        let (cache_id, nodeid) = unsafe { (slab.cache_id(), slab.nodeid()) };
        if cache_id != self.id {
            return Err(self.wrong_cache_error(obj as usize, cache_id));
        }
        self.cache_free(cpu, obj, nodeid);
        Ok(())
    }

    /// `__cache_free`: the object (a slot start, checks done) goes to the CPU's array
    /// when local, to the alien cache when remote.
    #[inline]
    pub(crate) fn cache_free(&self, cpu: CpuId, obj: *mut u8, nodeid: NodeId) {
        if let Some(slot) = self.array.get(cpu as usize) {
            if slot.node != nodeid {
                return self.cache_free_alien(slot.node, nodeid, obj);
            }
            if let FastPath::Rseq(area) = self.fast_path {
                // SAFETY: as in free_fast.
                let outcome = unsafe { area.push(cpu, slot.published.as_ptr(), obj) };
                return self.rseq_free_slow(area, cpu, nodeid, obj, outcome);
            }
            if let Some(guard) = slot.try_lock() {
                return self.push_or_flush(guard, obj);
            }
        }
        self.free_direct(nodeid, obj);
    }

    /// `cache_flusharray` (SLUB's `barn_replace_full_sheaf`): the CPU array is full (or
    /// detached). A full array is exchanged whole for an empty sheaf from the node's barn,
    /// with no `list_lock` and no copy; only when the barn has no empty sheaf is a batch
    /// freed to the slabs under the lock. Then the object is pushed.
    #[cold]
    #[inline(never)]
    fn cache_flusharray(&self, mut guard: SlotGuard<'_>, obj: *mut u8) {
        let node = guard.node();
        let barn = &self.l3(node).barn;
        let exchanged = guard.with(|data| {
            data.exchange(|full| barn.exchange_full_for_empty(full))
                && data.array_mut().is_some_and(|ac| ac.push(obj))
        });
        if exchanged {
            return;
        }
        let mut chain = SlabChain::default();
        {
            let mut l3 = self.l3(node).list_lock.lock();
            let l3 = &mut *l3;
            let attached = guard.with(|data| {
                let Some(ac) = data.array_mut() else { return false };
                if ac.room() == 0 {
                    let batch = ac.batchcount().min(ac.avail()).max(1) as usize;
                    // SAFETY: array entries are objects of this node handed out of its slabs.
                    unsafe { self.return_to_slabs(l3, &ac.objects()[..batch], node, &mut chain) };
                    ac.remove_oldest(batch as u32);
                }
                let pushed = ac.push(obj);
                debug_assert!(pushed, "a flushed array has room");
                true
            });
            if !attached {
                // SAFETY: obj is an object of this node (checked by the caller).
                unsafe { self.return_to_slabs(l3, &[obj], node, &mut chain) };
                l3.direct_frees = l3.direct_frees.wrapping_add(1);
            }
        }
        drop(guard);
        self.slabs_destroy(chain);
    }

    /// `cache_free_alien`: a remote object goes to this node's alien cache for its owner:
    /// one push under the alien cache's lock. A full alien cache goes to
    /// [`KmemCache::alien_flush_and_push`]; an absent or contended one frees straight to
    /// the owner's slabs. Inline: its callers are themselves out of line.
    #[inline(always)]
    fn cache_free_alien(&self, home: NodeId, owner: NodeId, obj: *mut u8) {
        if let Some(mut guard) = self.l3(home).alien[owner as usize].try_lock() {
            if guard.with(|data| data.array_mut().is_some_and(|ac| ac.push(obj))) {
                return;
            }
            if self.alien_flush_and_push(guard, owner, obj) {
                return;
            }
        }
        self.free_direct(owner, obj);
    }

    /// [`KmemCache::cache_free_alien`] out of line, for CAS mode's free of a remote
    /// object ([`FastFree::Remote`]), which the fast path's checks have already
    /// recognised: one call, where the fast path inlines.
    #[inline(never)]
    fn free_remote(&self, home: NodeId, owner: NodeId, obj: *mut u8) {
        self.cache_free_alien(home, owner, obj);
    }

    /// A full (or detached) alien cache, still held, then the object pushed onto it. A
    /// full one (a sheaf as large as a CPU array, where the owner has a barn) is exchanged
    /// whole for an empty sheaf of the owner's barn, without waiting for its lock
    /// (`Barn::offer_full_for_empty`), for the owner's CPUs to take as they take their own
    /// full sheaves. When the barn cannot take it (no empty sheaf, its lock taken,
    /// detached, a tuning under way) its objects are handed to the owner node's queue of
    /// remote frees with one atomic operation (`remote.rs`), for the owner to drain on its
    /// next refill, allocation or reap; in a debug cache, whose free objects keep their
    /// poison, they go to the owner's slabs under the owner's lock
    /// (`__drain_alien_cache`). False when it is detached or cannot take the object.
    /// `#[cold]`: once per alien cache's worth of remote frees.
    #[cold]
    #[inline(never)]
    fn alien_flush_and_push(&self, mut guard: SlotGuard<'_>, owner: NodeId, obj: *mut u8) -> bool {
        let owner_l3 = self.l3(owner);
        let mut chain = SlabChain::default();
        let done = guard.with(|data| {
            let full = data.array().is_some_and(|ac| ac.avail() == ac.limit());
            if full && !data.exchange(|full| owner_l3.barn.offer_full_for_empty(full)) {
                let Some(ac) = data.array_mut() else { return false };
                if self.debug {
                    let mut l3 = owner_l3.list_lock.lock();
                    // SAFETY: alien entries are handed-out objects of `owner`.
                    unsafe { self.return_to_slabs(&mut l3, ac.objects(), owner, &mut chain) };
                } else {
                    // SAFETY: alien entries are handed-out objects of `owner`, freed
                    // by their callers, each once, word-sized and word-aligned at least.
                    unsafe { owner_l3.remote.push_batch(ac.objects()) };
                }
                ac.remove_oldest(ac.avail());
            }
            data.array_mut().is_some_and(|ac| ac.push(obj))
        });
        drop(guard);
        self.slabs_destroy(chain);
        done
    }

    /// One object straight back to its node's slabs. Not `#[cold]`: every free that finds
    /// its CPU's slot contended, detached or stopped, and every alien cache that cannot
    /// take the object, comes here. Out of line, so that those paths stay small.
    #[inline(never)]
    pub(crate) fn free_direct(&self, node: NodeId, obj: *mut u8) {
        let mut chain = SlabChain::default();
        {
            let mut l3 = self.l3(node).list_lock.lock();
            l3.direct_frees = l3.direct_frees.wrapping_add(1);
            // SAFETY: obj is a handed-out object of `node`, checked by the caller.
            unsafe { self.return_to_slabs(&mut l3, &[obj], node, &mut chain) };
        }
        self.slabs_destroy(chain);
    }

    /// Records objects `free_block` refused (memory corruption or a double free that
    /// reached the slabs outside debug mode).
    pub(crate) fn note_refused(&self, refused: Refused) {
        if refused.any() {
            self.refused.fetch_add((refused.already_free + refused.wrong_node) as u32, Ordering::Relaxed);
        }
    }

    /// The error for a pointer that lies in no slab. Rare: a caller's bug.
    #[cold]
    #[inline(never)]
    pub(crate) fn foreign_pointer_error(&self, ptr: usize) -> Error {
        Error::ForeignPointer { cache: self.name.clone(), ptr }
    }

    /// The error for a free of another cache's object. Rare: a caller's bug.
    #[cold]
    #[inline(never)]
    pub(crate) fn wrong_cache_error(&self, ptr: usize, owner_id: u64) -> Error {
        Error::WrongCache { cache: self.name.clone(), owner: self.registry.cache_name(owner_id), ptr }
    }

    /// The error for any operation on a destroyed cache. Rare: a caller's bug, or a race
    /// with its own `destroy_cache`.
    #[cold]
    pub(crate) fn destroyed_error(&self) -> Error {
        Error::CacheDestroyed { cache: self.name.clone() }
    }

    /// The node of an object, through the registry (safe for any pointer).
    pub(crate) fn node_of(&self, ptr: *const u8) -> Option<NodeId> {
        let base = ptr as usize & !(self.geometry.slab_bytes - 1);
        let owner = *self.registry.slabs.read().get(&base)?;
        (owner.cache_id == self.id && owner.slab_bytes == self.geometry.slab_bytes).then_some(owner.node)
    }

    /// Objects in a CPU's array (0 when detached).
    pub(crate) fn cpu_cache_len(&self, cpu: CpuId) -> usize {
        self.array
            .get(cpu as usize)
            .map_or(0, |slot| slot.lock().with(|data| data.array().map_or(0, |ac| ac.avail() as usize)))
    }
}

/// A cache of fixed-size objects. Created by [`Allocator::create_cache`]; shared as
/// `Arc<Cache>`.
///
/// The cache proper lives behind a pointer so that it can outlive this handle: when the
/// last `Arc<Cache>` goes while objects are still out (a typed [`crate::Handle`] does not
/// hold the `Arc`), the slabs and bookkeeping are leaked rather than freed, so that those
/// objects stay valid until they are dropped.
pub struct Cache {
    kmem: NonNull<KmemCache>,
}

// SAFETY: KmemCache is Send + Sync; Cache only points at it.
unsafe impl Send for Cache {}
// SAFETY: as above.
unsafe impl Sync for Cache {}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("name", &self.name()).field("object_size", &self.object_size()).finish()
    }
}

impl Cache {
    /// Wraps a new cache.
    pub(crate) fn new(kmem: KmemCache) -> Self {
        Self { kmem: NonNull::from(Box::leak(Box::new(kmem))) }
    }

    /// The cache proper.
    #[inline(always)]
    pub(crate) fn kmem(&self) -> &KmemCache {
        // SAFETY: the KmemCache is freed only in Cache::drop, never while self lives.
        unsafe { self.kmem.as_ref() }
    }

    /// A pointer to the cache proper, for typed handles.
    pub(crate) fn kmem_ptr(&self) -> NonNull<KmemCache> {
        self.kmem
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.kmem().name
    }

    /// The object size asked for at creation.
    pub fn object_size(&self) -> usize {
        self.kmem().geometry.object_size
    }

    /// The bytes of each of its slabs (a power of two; slabinfo's `pagesperslab` pages).
    pub fn slab_bytes(&self) -> usize {
        self.kmem().geometry.slab_bytes
    }

    /// The flags given at creation.
    pub fn flags(&self) -> CacheFlags {
        self.kmem().flags
    }

    /// An object from the current CPU's node (`kmem_cache_alloc`).
    #[inline(always)]
    pub fn alloc(&self) -> Result<NonNull<u8>> {
        self.kmem().alloc_here()
    }

    /// An object as if the calling thread ran on `cpu`: for callers that know their CPU
    /// (and for tests and models). Any CPU id is accepted: one without a prepared array
    /// is served from its node's lists.
    #[inline]
    pub fn alloc_on(&self, cpu: CpuId) -> Result<NonNull<u8>> {
        self.kmem().alloc_on(cpu)
    }

    /// An object from `node`, or from the nearest node with memory when `node` has none
    /// (`kmem_cache_alloc_node`).
    pub fn alloc_node(&self, node: NodeId) -> Result<NonNull<u8>> {
        let kmem = self.kmem();
        kmem.alloc_node_on(kmem.current_cpu(), node)
    }

    /// Returns an object (`kmem_cache_free`) on the current CPU.
    ///
    /// # Safety
    /// Outside debug mode, `ptr` must come from this cache's `alloc*` and not have been
    /// freed since. The free reads the descriptor at the base of the pointer's slab, as
    /// this cache's slab size places it: an object of another cache of the same allocator
    /// and the same slab size ([`Cache::slab_bytes`]) is found there and reported as
    /// [`Error::WrongCache`]; anything else, another cache's object of another slab size
    /// included, is undefined behaviour (it may crash, or be taken). In debug mode
    /// ([`CacheFlags::DEBUG`]) every pointer is checked before use and misuse (double
    /// free, another cache's object, a foreign pointer, a pointer into an object) is
    /// reported as an error, leaving the cache working.
    #[inline(always)]
    pub unsafe fn free(&self, ptr: NonNull<u8>) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { self.kmem().free_here(ptr) }
    }

    /// Returns an object as if the calling thread ran on `cpu`.
    ///
    /// # Safety
    /// As for [`Cache::free`].
    #[inline]
    pub unsafe fn free_on(&self, cpu: CpuId, ptr: NonNull<u8>) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { self.kmem().free_on(cpu, ptr) }
    }

    /// Changes `limit`, `batchcount` and `shared` (`do_tune_cpucache`), refusing invalid
    /// values with [`Error::InvalidTunables`].
    pub fn tune(&self, limit: u32, batchcount: u32, shared: u32) -> Result<()> {
        self.kmem().tune(limit, batchcount, shared)
    }

    /// The current tunables.
    pub fn tunables(&self) -> Tunables {
        self.kmem().tunables.get()
    }

    /// Drains every array cache to the slabs and returns all free slabs to the OS
    /// (`kmem_cache_shrink`); returns how many slabs went back.
    pub fn shrink(&self) -> usize {
        self.kmem().shrink()
    }

    /// Checks the cache's bookkeeping: every object accounted for exactly once (per-CPU
    /// arrays + barns' sheaves + alien arrays + remote-free queues + slab free lists + out
    /// with callers = total), every slab on
    /// its own node's lists and list, and in debug mode red zones and poison intact.
    pub fn validate(&self) -> Result<()> {
        self.kmem().validate()
    }

    /// Counts and slabinfo figures.
    pub fn stats(&self) -> CacheStats {
        self.kmem().stats()
    }

    /// The node of an object of this cache, in O(1); `None` for any pointer that is not
    /// in one of this cache's slabs.
    pub fn node_of(&self, ptr: NonNull<u8>) -> Option<NodeId> {
        self.kmem().node_of(ptr.as_ptr())
    }

    /// Objects in a CPU's array cache (0 when it has none).
    pub fn cpu_cache_len(&self, cpu: CpuId) -> usize {
        self.kmem().cpu_cache_len(cpu)
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        // The last Arc<Cache> is gone: nobody can allocate any more; typed handles may
        // still hold objects. Free everything only if no object is out.
        if self.kmem().release_if_unused() {
            // SAFETY: the KmemCache was leaked from a Box in Cache::new, no object of it
            // is out, and this was the last handle to it.
            drop(unsafe { Box::from_raw(self.kmem.as_ptr()) });
        }
    }
}

/// An allocation whose paths meet on a pointer, not on a `Result`: `paths` gives the
/// object, or None after writing the error aside. Were the slow paths to return a
/// `Result` (larger than two registers, so it travels through memory), every hit of a
/// caller that inlines the fast path would store its `Result` to the stack and load it
/// back.
#[inline(always)]
fn with_error(paths: impl FnOnce(&mut MaybeUninit<Error>) -> Option<NonNull<u8>>) -> Result<NonNull<u8>> {
    let mut error = MaybeUninit::uninit();
    let obj = paths(&mut error);
    // SAFETY: every path that gives None wrote the error first (`ok_or_set`).
    obj.ok_or_else(|| unsafe { error.assume_init() })
}

/// The object of `result`, or None with its error written to `error`: how the out-of-line
/// allocation paths hand back to [`with_error`].
#[inline(always)]
fn ok_or_set(result: Result<NonNull<u8>>, error: &mut MaybeUninit<Error>) -> Option<NonNull<u8>> {
    result.map_err(|e| error.write(e)).ok()
}

/// Marks the path that calls it as the unlikely one (stable Rust's stand-in for
/// `std::hint::cold_path`, newer than this crate's minimum Rust): the fast paths' CAS-mode
/// arm, so that the compiler lays out rseq mode's sequence as the fall-through. CAS mode
/// pays one taken jump before the call it pays anyway.
#[cold]
#[inline(always)]
fn unlikely() {}

/// Prints a free's error like the kernel's printk, for callers that cannot return it (a
/// typed handle's drop); only a debug cache finds one there (a red zone overwritten
/// through unsafe code).
fn report(result: Result<()>) {
    if let Err(error) = result {
        eprintln!("slab-core: {error}");
    }
}

#[cfg(test)]
mod tests;
