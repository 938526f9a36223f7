//! The allocator: the cache chain (`cache_chain` and `cache_chain_mutex`), cache
//! creation and destruction, the CPU hotplug entry points (`cpuup_callback`'s cases),
//! reaping and the background reaper.

use std::alloc::Layout;
use std::sync::{Arc, Weak};
use std::time::Duration;

use topology::{CpuId, CpuSet, NodeId, Topology};

use crate::cache::{Cache, KmemCache, SharedParts};
use crate::cpu::{FastPath, FastPathMode};
use crate::error::{Error, Result};
use crate::machine::Machine;
use crate::pages::{PageCache, NODE_CACHE_BYTES};
use crate::reap::{DrainMode, NodePass};
use crate::registry::SlabRegistry;
use crate::slab::SlabOrder;
use crate::stats::SLABINFO_HEADER;
use crate::sync::Lock;
use crate::typed::TypedCache;
use crate::CacheFlags;

/// The longest cache name (slabinfo's first column is 17 wide; the kernel has no limit,
/// this keeps names readable).
const MAX_NAME: usize = 64;

/// What the cache_chain mutex protects.
#[derive(Debug, Default)]
pub(crate) struct ChainState {
    /// `cache_chain`.
    pub(crate) caches: Vec<Arc<Cache>>,
    /// CPUs whose `cpu_up_prepare` ran and whose `cpu_dead` has not: the allocator's own
    /// view, not the topology's online mask (which changes before the callbacks run).
    pub(crate) prepared: CpuSet,
    /// CPUs whose reap work is started (`cpu_online` to `cpu_down_prepare`).
    pub(crate) reaping: CpuSet,
}

impl ChainState {
    /// Prepared CPUs whose home is `node`.
    fn prepared_on(&self, machine: &Machine, node: NodeId) -> usize {
        self.prepared.iter().filter(|&cpu| machine.home_of(cpu).ok() == Some(node)).count()
    }

    fn prepared_per_node(&self, machine: &Machine) -> Vec<usize> {
        (0..machine.node_bound as NodeId).map(|node| self.prepared_on(machine, node)).collect()
    }
}

/// The background reaper thread.
#[derive(Debug)]
struct Reaper {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// The slab allocator of one machine: owns the cache chain.
pub struct Allocator {
    pub(crate) machine: Arc<Machine>,
    pub(crate) registry: Arc<SlabRegistry>,
    /// The page-block cache beneath every cache's slabs.
    pub(crate) pages: Arc<PageCache>,
    /// `cache_chain` under `cache_chain_mutex`.
    pub(crate) chain: Lock<ChainState>,
    reaper: Lock<Option<Reaper>>,
}

impl std::fmt::Debug for Allocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Allocator").field("topology", &self.machine.topology.name()).finish_non_exhaustive()
    }
}

impl Allocator {
    /// An allocator for the machine `topology` describes, with every CPU online now
    /// prepared and started (`cpu_up_prepare` + `cpu_online`). A machine whose topology
    /// lists no node with memory is served from its first node.
    pub fn new(topology: Arc<dyn Topology>) -> Arc<Allocator> {
        Self::with_fast_path(topology, FastPathMode::Rseq)
    }

    /// As [`Allocator::new`], asking for a fast path: [`FastPathMode::Cas`] always gets
    /// the CAS slot protocol (to compare the two, or to rule restartable sequences out);
    /// [`FastPathMode::Rseq`] gets it where the machine allows, the CAS protocol
    /// elsewhere. [`Allocator::fast_path`] says which one runs.
    pub fn with_fast_path(topology: Arc<dyn Topology>, mode: FastPathMode) -> Arc<Allocator> {
        let online = topology.online_cpus().unwrap_or_else(|_| topology.possible_cpus());
        let mut machine = Machine::new(topology);
        if mode == FastPathMode::Cas {
            machine.fast_path = FastPath::Cas;
        }
        let pages = Arc::new(PageCache::new(machine.node_bound, NODE_CACHE_BYTES));
        let allocator = Arc::new(Allocator {
            machine: Arc::new(machine),
            registry: Arc::new(SlabRegistry::new()),
            pages,
            chain: Lock::new(ChainState::default()),
            reaper: Lock::new(None),
        });
        for cpu in online.iter() {
            // No cache exists yet: preparing only records the CPU; it cannot fail for a
            // CPU the topology lists.
            if allocator.cpu_up_prepare(cpu).is_ok() {
                let _ = allocator.cpu_online(cpu);
            }
        }
        allocator
    }

    /// The topology the allocator was built on.
    pub fn topology(&self) -> &Arc<dyn Topology> {
        &self.machine.topology
    }

    /// How its caches' per-CPU fast path runs: [`FastPathMode::Rseq`] on the live machine
    /// where restartable sequences and `membarrier` serve, [`FastPathMode::Cas`] elsewhere.
    /// Fixed for the allocator's life; a [`CacheFlags::DEBUG`] cache always uses the CAS
    /// slot protocol, whose slow path does the debug checks.
    pub fn fast_path(&self) -> FastPathMode {
        self.machine.fast_path.mode()
    }

    /// Creates a cache of `layout` objects (`kmem_cache_create`), with array caches for
    /// every prepared CPU and shared and alien caches for their nodes.
    pub fn create_cache(
        self: &Arc<Self>,
        name: &str,
        layout: Layout,
        flags: CacheFlags,
    ) -> Result<Arc<Cache>> {
        self.create_cache_ordered(name, layout, flags, SlabOrder::Calculated)
    }

    /// [`Allocator::create_cache`] with the slab order chosen by `slab_order` (the kmalloc
    /// caches all take one order).
    pub(crate) fn create_cache_ordered(
        self: &Arc<Self>,
        name: &str,
        layout: Layout,
        flags: CacheFlags,
        slab_order: SlabOrder,
    ) -> Result<Arc<Cache>> {
        let invalid = |reason: &str| Error::InvalidName { name: name.to_owned(), reason: reason.to_owned() };
        if name.is_empty() {
            return Err(invalid("a cache needs a name"));
        }
        if name.len() > MAX_NAME {
            return Err(invalid(&format!("longer than {MAX_NAME} bytes")));
        }
        if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("slabinfo columns cannot hold whitespace or control characters"));
        }
        let mut chain = self.chain.lock();
        if chain.caches.iter().any(|cache| cache.name() == name) {
            return Err(invalid("a cache of that name exists"));
        }
        let kmem = KmemCache::new(
            name,
            layout,
            flags,
            SharedParts {
                allocator: Arc::downgrade(self),
                machine: Arc::clone(&self.machine),
                registry: Arc::clone(&self.registry),
                pages: Arc::clone(&self.pages),
            },
            &chain.prepared_per_node(&self.machine),
            slab_order,
        )?;
        // The Cache owns the KmemCache from here: an error below drops it, freeing
        // whatever arrays were installed.
        let cache = Arc::new(Cache::new(kmem));
        self.registry.name_cache(cache.kmem().id, name);
        let per_node = chain.prepared_per_node(&self.machine);
        for cpu in chain.prepared.iter() {
            let home = self.machine.home_of(cpu)?;
            cache.kmem().cpu_up_prepare(cpu, home, per_node[home as usize])?;
        }
        chain.caches.push(Arc::clone(&cache));
        Ok(cache)
    }

    /// Creates a cache of `T` values. Its objects are aligned to the hardware cache line
    /// ([`CacheFlags::HWCACHE_ALIGN`] is added to `flags`), as the kernel's kmalloc caches
    /// are: a typed pool's values are what its users touch, so a value of up to a cache
    /// line never straddles two and two CPUs' values of a line or more never share one.
    pub fn create_typed<T: Send>(self: &Arc<Self>, name: &str, flags: CacheFlags) -> Result<TypedCache<T>> {
        let flags = flags | CacheFlags::HWCACHE_ALIGN;
        Ok(TypedCache::new(self.create_cache(name, Layout::new::<T>(), flags)?))
    }

    /// Destroys a cache (`kmem_cache_destroy`): drains every array (alien caches before
    /// shared ones) and returns every slab to the OS. Refuses with
    /// [`Error::ObjectsInUse`] while objects are out, and the cache then keeps working.
    pub fn destroy_cache(&self, cache: &Arc<Cache>) -> Result<()> {
        let mut chain = self.chain.lock();
        let Some(index) = chain.caches.iter().position(|c| Arc::ptr_eq(c, cache)) else {
            // A cache of this allocator that is not in its chain was destroyed already.
            if std::ptr::eq(cache.kmem().allocator.as_ptr(), self) {
                return Err(cache.kmem().destroyed_error());
            }
            return Err(Error::NotInChain { cache: cache.name().to_owned() });
        };
        let kmem = cache.kmem();
        // Mark first, so that no slab can be grown, then detach every array: the fast
        // paths then reach the node lists, which refuse.
        kmem.set_destroyed(true);
        kmem.drain_cpu_caches(DrainMode::Detach);
        let count = kmem.objects_in_slabs_in_use();
        if count > 0 {
            kmem.set_destroyed(false);
            let per_node = chain.prepared_per_node(&self.machine);
            for cpu in chain.prepared.iter() {
                let home = self.machine.home_of(cpu)?;
                kmem.cpu_up_prepare(cpu, home, per_node[home as usize])?;
            }
            return Err(Error::ObjectsInUse { cache: cache.name().to_owned(), count });
        }
        kmem.release_all_slabs();
        chain.caches.remove(index);
        Ok(())
    }

    /// The caches, in creation order.
    pub fn caches(&self) -> Vec<Arc<Cache>> {
        self.chain.lock().caches.clone()
    }

    /// CPU_UP_PREPARE: for every cache, the CPU's array cache, and its node's shared and
    /// alien caches where absent. On failure what this call installed is undone before
    /// the error returns (and `cpu_up_canceled` may still be called: it tolerates that).
    pub fn cpu_up_prepare(&self, cpu: CpuId) -> Result<()> {
        let home = self.machine.home_of(cpu)?;
        let mut chain = self.chain.lock();
        let others = chain
            .prepared
            .iter()
            .filter(|&c| c != cpu)
            .filter(|&c| self.machine.home_of(c).ok() == Some(home))
            .count();
        for cache in chain.caches.iter() {
            if let Err(error) = cache.kmem().cpu_up_prepare(cpu, home, others + 1) {
                chain.prepared.remove(cpu);
                self.teardown(&chain, cpu, home);
                return Err(error);
            }
        }
        chain.prepared.insert(cpu);
        Ok(())
    }

    /// CPU_ONLINE: starts the CPU's reap work.
    pub fn cpu_online(&self, cpu: CpuId) -> Result<()> {
        self.machine.home_of(cpu)?;
        let mut chain = self.chain.lock();
        if !chain.prepared.contains(cpu) {
            return Err(Error::NotPrepared { cpu });
        }
        chain.reaping.insert(cpu);
        Ok(())
    }

    /// CPU_UP_CANCELED: undoes `cpu_up_prepare` (the kernel falls through to CPU_DEAD's
    /// code). Tolerates a prepare that never ran or failed half-way.
    pub fn cpu_up_canceled(&self, cpu: CpuId) {
        self.cpu_dead(cpu);
    }

    /// CPU_DOWN_PREPARE: stops the CPU's reap work.
    pub fn cpu_down_prepare(&self, cpu: CpuId) -> Result<()> {
        self.machine.home_of(cpu)?;
        self.chain.lock().reaping.remove(cpu);
        Ok(())
    }

    /// CPU_DOWN_FAILED: restarts the CPU's reap work.
    pub fn cpu_down_failed(&self, cpu: CpuId) {
        let mut chain = self.chain.lock();
        if chain.prepared.contains(cpu) {
            chain.reaping.insert(cpu);
        }
    }

    /// CPU_DEAD: for every cache, the CPU's array detached and drained to the slabs; the
    /// node's shared and alien caches detached, drained and freed if it was the node's
    /// last prepared CPU; then a second pass shrinking the node's free slabs. Node lists
    /// are never freed. An unknown or never prepared CPU is a no-op.
    pub fn cpu_dead(&self, cpu: CpuId) {
        let Ok(home) = self.machine.home_of(cpu) else { return };
        let mut chain = self.chain.lock();
        chain.prepared.remove(cpu);
        chain.reaping.remove(cpu);
        self.teardown(&chain, cpu, home);
    }

    /// Both passes of CPU_DEAD for a CPU already removed from `prepared`.
    fn teardown(&self, chain: &ChainState, cpu: CpuId, home: NodeId) {
        let remaining = chain.prepared_on(&self.machine, home);
        for cache in chain.caches.iter() {
            cache.kmem().cpu_dead(cpu, home, remaining);
        }
        for cache in chain.caches.iter() {
            cache.kmem().shrink_node(home);
        }
    }

    /// One pass of `cache_reap` over every cache: for each CPU whose reap work is
    /// started, its node's alien caches and its array; then every node's queued remote
    /// frees, untouched barn sheaves and surplus free slabs; then the page cache's trim, which returns blocks to the
    /// OS (see `PageCache::trim`).
    pub fn reap(&self) {
        let chain = self.chain.lock();
        self.reap_locked(&chain, NodePass::Now);
    }

    fn reap_locked(&self, chain: &ChainState, pass: NodePass) {
        for cache in chain.caches.iter() {
            let kmem = cache.kmem();
            for cpu in chain.reaping.iter() {
                kmem.reap_cpu(cpu);
            }
            for &node in self.machine.memory_nodes.iter() {
                kmem.reap_node(node, pass);
            }
        }
        for &node in self.machine.memory_nodes.iter() {
            self.pages.trim(node);
        }
    }

    /// Starts (or restarts) a background thread that reaps every `interval`, with the
    /// node-level work every second interval (the kernel's 2 s per CPU and 4 s per node).
    /// Like `cache_reap`, a pass is skipped when the cache_chain mutex is busy.
    pub fn start_reaper(self: &Arc<Self>, interval: Duration) {
        self.stop_reaper();
        let (stop, wake) = std::sync::mpsc::channel::<()>();
        let weak: Weak<Allocator> = Arc::downgrade(self);
        let thread = std::thread::Builder::new().name("slab-reaper".into()).spawn(move || loop {
            match wake.recv_timeout(interval) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let Some(allocator) = weak.upgrade() else { return };
                    let chain = allocator.chain.try_lock();
                    if let Some(chain) = chain.as_deref() {
                        allocator.reap_locked(chain, NodePass::Due(interval * 2));
                    }
                    drop(chain);
                }
                _ => return,
            }
        });
        match thread {
            Ok(thread) => *self.reaper.lock() = Some(Reaper { stop, thread }),
            Err(error) => eprintln!("slab-core: cannot start the reaper thread: {error}"),
        }
    }

    /// Stops the background reaper, waiting for its current pass to end.
    pub fn stop_reaper(&self) {
        let reaper = self.reaper.lock().take();
        if let Some(Reaper { stop, thread }) = reaper {
            drop(stop);
            // The reaper itself may drop the last Arc<Allocator>; it cannot wait for itself.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }

    /// Whether the background reaper runs.
    pub fn reaper_running(&self) -> bool {
        self.reaper.lock().as_ref().is_some_and(|reaper| !reaper.thread.is_finished())
    }

    /// `/proc/slabinfo`: the 2.1 header and one line per cache.
    pub fn slabinfo(&self) -> String {
        let mut text = String::from(SLABINFO_HEADER);
        text.push('\n');
        for cache in self.caches() {
            text.push_str(&cache.stats().slabinfo_line());
            text.push('\n');
        }
        text
    }

    /// Validates every cache, under the cache_chain mutex.
    pub fn validate(&self) -> Result<()> {
        let chain = self.chain.lock();
        chain.caches.iter().try_for_each(|cache| cache.kmem().validate_locked())
    }

    /// Bytes of slab blocks cached for `node` beneath the caches (freed slabs kept for the
    /// node's next growth instead of going back to the OS; at most 4 MiB per node, returned
    /// to the OS by the reaper's trim, `Cache::shrink` and cache destruction). 0 for a
    /// node the machine does not have.
    pub fn page_cache_bytes(&self, node: NodeId) -> usize {
        self.pages.figures(node).bytes
    }

    /// The most bytes the page-block cache may keep, over every memory node (4 MiB a
    /// node: see [`Allocator::page_cache_bytes`]).
    pub fn page_cache_bound_bytes(&self) -> usize {
        self.machine.memory_nodes.len() * NODE_CACHE_BYTES
    }

    /// CPUs prepared (the allocator's own view of which CPUs are up).
    pub fn prepared_cpus(&self) -> CpuSet {
        self.chain.lock().prepared.clone()
    }
}

impl Drop for Allocator {
    fn drop(&mut self) {
        self.stop_reaper();
        // Caches leaked with objects out keep the page cache alive: give its blocks back now.
        self.pages.drain_all();
    }
}

#[cfg(test)]
mod tests;
