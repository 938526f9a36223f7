//! Virtual current CPUs for backends that do not run on the machine they describe.
//!
//! Fixture and fake machines cannot ask the kernel where a thread runs, so each thread
//! gets a virtual CPU per topology instance: the one a test bound it to, or, for a thread
//! that never bound itself, the next online CPU in turn. When that CPU goes offline the
//! thread is "migrated", as the kernel's `migrate_tasks` would, to an online CPU of its
//! node or else of the nearest node that has one. A bound thread goes back to its CPU
//! when that CPU comes back online, as on Linux, which keeps the mask a thread asked for
//! with `sched_setaffinity` (`user_cpus_ptr`) and applies it again when the CPU returns
//! (a thread pinned to cpu1 there shows `Cpus_allowed_list: 1` again after cpu1 went
//! offline and online); a thread that never bound itself stays where it was moved.

use std::cell::{Cell, RefCell};

use crate::sync::{AtomicU64, AtomicUsize, Ordering};
use crate::{CpuId, CpuSet, CpuState, Error, NodeId, Result};

static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// A thread's CPU in one topology instance.
#[derive(Debug, Clone, Copy)]
struct Binding {
    instance: u64,
    /// The CPU the thread was bound to, or (for a thread that never bound itself) the
    /// CPU it was given or last moved to.
    home: CpuId,
    /// Whether the thread bound itself to `home` (and goes back there when it can).
    bound: bool,
}

/// Where a thread runs now: its home, or while a bound thread's home is offline, the CPU
/// it was moved to.
#[derive(Debug, Clone, Copy)]
struct Placement {
    instance: u64,
    cpu: CpuId,
    home: CpuId,
}

thread_local! {
    /// This thread's binding in each topology instance it has used.
    static BINDINGS: RefCell<Vec<Binding>> = const { RefCell::new(Vec::new()) };
    /// The placement used last, checked before `BINDINGS`: a thread almost always asks
    /// the same machine, and an allocator asks on every operation. Instance 0 is never
    /// used.
    static LAST: Cell<Placement> = const { Cell::new(Placement { instance: 0, cpu: 0, home: 0 }) };
}

/// The online state and per-thread CPUs of one virtual machine.
#[derive(Debug)]
pub(crate) struct VirtualCpus {
    instance: u64,
    possible: CpuSet,
    /// Online CPUs as a bitmap the fast path reads without a lock.
    online: Vec<AtomicU64>,
    cpu_node: Vec<Option<NodeId>>,
    /// For each node id, the nodes in order of distance (itself first): where a thread
    /// whose CPU went offline is moved.
    node_order: Vec<Vec<NodeId>>,
    node_cpus: Vec<CpuSet>,
    next_default: AtomicUsize,
}

impl VirtualCpus {
    /// A machine with these CPUs, each CPU's node, each node's CPUs, and each node's
    /// nodes in order of distance.
    pub(crate) fn new(
        possible: CpuSet,
        online: &CpuSet,
        cpu_node: Vec<Option<NodeId>>,
        node_cpus: Vec<CpuSet>,
        node_order: Vec<Vec<NodeId>>,
    ) -> Self {
        let words = possible.id_bound().div_ceil(64);
        let this = Self {
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
            possible,
            online: (0..words).map(|_| AtomicU64::new(0)).collect(),
            cpu_node,
            node_order,
            node_cpus,
            next_default: AtomicUsize::new(0),
        };
        this.set_online_set(online);
        this
    }

    /// Replaces the online state (after the fixture read its files).
    pub(crate) fn set_online_set(&self, online: &CpuSet) {
        for (index, word) in self.online.iter().enumerate() {
            let bits = (0..64)
                .filter(|bit| online.contains(index as u32 * 64 + bit))
                .fold(0u64, |acc, bit| acc | 1 << bit);
            word.store(bits, Ordering::Release);
        }
    }

    /// Marks one CPU online or offline.
    pub(crate) fn set_online(&self, cpu: CpuId, state: CpuState) {
        let Some(word) = self.online.get(cpu as usize / 64) else { return };
        match state {
            CpuState::Online => word.fetch_or(1 << (cpu % 64), Ordering::AcqRel),
            CpuState::Offline => word.fetch_and(!(1 << (cpu % 64)), Ordering::AcqRel),
        };
    }

    /// Whether a CPU is online in this machine's cached state.
    pub(crate) fn is_online(&self, cpu: CpuId) -> bool {
        self.online
            .get(cpu as usize / 64)
            .is_some_and(|word| word.load(Ordering::Acquire) & (1 << (cpu % 64)) != 0)
    }

    /// The cached online CPUs.
    pub(crate) fn online_set(&self) -> CpuSet {
        self.possible.iter().filter(|&cpu| self.is_online(cpu)).collect()
    }

    /// Binds the calling thread to an online CPU.
    pub(crate) fn bind(&self, cpu: CpuId) -> Result<()> {
        if !self.possible.contains(cpu) {
            return Err(Error::UnknownCpu { cpu, possible: self.possible.to_string() });
        }
        if !self.is_online(cpu) {
            return Err(Error::CpuOffline { cpu, operation: "binding a thread" });
        }
        self.store(Binding { instance: self.instance, home: cpu, bound: true });
        Ok(())
    }

    /// The calling thread's virtual CPU: its home, or while a bound thread's home is
    /// offline an online CPU it is moved to (once its placement went offline).
    pub(crate) fn current(&self) -> CpuId {
        let last = LAST.with(Cell::get);
        if last.instance == self.instance
            && self.is_online(last.cpu)
            && (last.cpu == last.home || !self.is_online(last.home))
        {
            return last.cpu;
        }
        self.current_slow()
    }

    /// `current` when the last placement is another machine's, went offline, or is away
    /// from a home that came back. Cold: a thread comes here once per machine it runs on
    /// and twice around each hotplug of its CPU, and otherwise finds its placement valid.
    #[cold]
    #[inline(never)]
    fn current_slow(&self) -> CpuId {
        let binding =
            BINDINGS.with(|cell| cell.borrow().iter().find(|b| b.instance == self.instance).copied());
        let Some(binding) = binding else {
            let cpu = self.default_cpu();
            self.store(Binding { instance: self.instance, home: cpu, bound: false });
            return cpu;
        };
        if self.is_online(binding.home) {
            self.place(binding.home, binding.home);
            return binding.home;
        }
        let moved = self.migration_target(binding.home);
        if binding.bound {
            self.place(moved, binding.home);
        } else {
            self.store(Binding { home: moved, ..binding });
        }
        moved
    }

    /// The next online CPU in turn for a thread that never bound itself: once per thread
    /// and machine, off the path of [`VirtualCpus::current`]'s common case.
    #[cold]
    #[inline(never)]
    fn default_cpu(&self) -> CpuId {
        let online = self.online_set();
        let count = online.len().max(1);
        let turn = self.next_default.fetch_add(1, Ordering::Relaxed) % count;
        online.iter().nth(turn).or_else(|| self.possible.first()).unwrap_or(0)
    }

    /// An online CPU of the nearest node that has one, for a thread on offline `cpu`: only
    /// after a hotplug, off the path of [`VirtualCpus::current`]'s common case.
    #[cold]
    #[inline(never)]
    fn migration_target(&self, cpu: CpuId) -> CpuId {
        let node = self.cpu_node.get(cpu as usize).copied().flatten();
        let order = node.and_then(|node| self.node_order.get(node as usize));
        for &candidate_node in order.into_iter().flatten() {
            let cpus = &self.node_cpus[candidate_node as usize];
            if let Some(online) = cpus.iter().find(|&c| self.is_online(c)) {
                return online;
            }
        }
        self.online_set().first().unwrap_or(cpu)
    }

    /// Records the thread's binding in this machine, and places it at its home.
    fn store(&self, binding: Binding) {
        self.place(binding.home, binding.home);
        BINDINGS.with(|cell| {
            let mut bindings = cell.borrow_mut();
            match bindings.iter_mut().find(|b| b.instance == self.instance) {
                Some(known) => *known = binding,
                None => bindings.push(binding),
            }
        });
    }

    /// Records where the thread runs now in this machine.
    fn place(&self, cpu: CpuId, home: CpuId) {
        LAST.with(|last| last.set(Placement { instance: self.instance, cpu, home }));
    }
}

/// Each node's nodes in order of distance (itself first, ties by id), for migration.
pub(crate) fn nodes_by_distance(
    nodes: &CpuSet,
    bound: usize,
    distance: impl Fn(NodeId, NodeId) -> Option<u32>,
) -> Vec<Vec<NodeId>> {
    (0..bound as u32)
        .map(|from| {
            let mut order: Vec<NodeId> = nodes.iter().collect();
            order
                .sort_by_key(|&to| (if to == from { 0 } else { distance(from, to).unwrap_or(u32::MAX) }, to));
            order
        })
        .collect()
}
