//! The machine as numaslab sees it.
//!
//! [`Topology`] describes one machine: its CPUs (possible, present, online, allowed to this
//! process), its NUMA nodes (CPUs, memory, distances) and the calling thread's current CPU.
//! Three backends implement it:
//!
//! - [`SysfsTopology`]: reads `/sys/devices/system/{cpu,node}` and `/proc` under any root
//!   folder (`/` for the live machine, a capture's `fsroot` for tests);
//! - [`FixtureTopology`]: a machine from the project's `fixtures/`, on a private mutable
//!   copy so that writing `cpuN/online` there changes what it reports;
//! - [`FakeTopology`]: built in code, online state changed by a method call.
//!
//! This crate knows nothing of slabs or hotplug callbacks; it only describes and, where
//! the backend allows, changes which CPUs are online.

mod diagnostic;
mod error;
mod fake;
#[cfg(feature = "fixture")]
mod fixture;
mod idset;
pub mod machine_file;
mod os;
mod sync;
mod sysfs;
mod virtual_cpu;

use std::fmt;
use std::path::{Path, PathBuf};

pub use crate::diagnostic::{Diagnostic, Quirk, Reading};
pub use crate::error::{Error, ParseError, Result};
pub use crate::fake::{FakeBuilder, FakeTopology};
#[cfg(feature = "fixture")]
pub use crate::fixture::{FixtureTopology, FIXTURES_DIR_ENV};
pub use crate::idset::{CpuSet, IdSet, Iter, NodeSet, ID_LIMIT};
pub use crate::os::{
    current_cpu_with_source, rseq_area_size, rseq_cpu_id_offset, rseq_current_cpu, sched_getcpu,
    CurrentCpuSource, RseqCpuIdOffset,
};
pub use crate::sysfs::read::open_attribute;
pub use crate::sysfs::SysfsTopology;

/// A CPU id, as the kernel numbers them (`cpuN`).
pub type CpuId = u32;
/// A NUMA node id, as the kernel numbers them (`nodeN`).
pub type NodeId = u32;

/// The distance the kernel reports from a node to itself (`LOCAL_DISTANCE`).
pub const LOCAL_DISTANCE: u32 = 10;
/// The distance the kernel assumes between two distinct nodes when nothing better is
/// known (`REMOTE_DISTANCE`).
pub const REMOTE_DISTANCE: u32 = 20;

/// A change of one CPU's online state, as a backend that can announce it directly (the
/// fake) sends it to its subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnlineChange {
    /// The CPU that changed.
    pub cpu: CpuId,
    /// Its new state.
    pub state: CpuState,
}

/// Whether a CPU is online; an enum rather than a `bool` so that calls read plainly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "lowercase"))]
pub enum CpuState {
    /// The CPU runs tasks.
    Online,
    /// The CPU is present but runs nothing.
    Offline,
}

impl CpuState {
    /// `"online"` or `"offline"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CpuState::Online => "online",
            CpuState::Offline => "offline",
        }
    }
}

impl fmt::Display for CpuState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One machine's CPUs and NUMA nodes.
///
/// Static facts (possible and present CPUs, each CPU's node, nodes, memory, distances) are
/// read once when the backend is built, and errors in them are reported then. The online
/// state is live: [`Topology::online_cpus`] reads it anew on every call where the backend
/// has files to read.
///
/// The trait is object-safe; users hold an `Arc<dyn Topology>`.
pub trait Topology: Send + Sync + fmt::Debug {
    /// A short description of the backend and machine, such as `sysfs:/`,
    /// `fixture:seed-box` or `fake:4x2`.
    fn name(&self) -> String;

    /// CPUs that may ever be online (`cpu/possible`). Never empty.
    fn possible_cpus(&self) -> CpuSet;

    /// CPUs that are physically there (`cpu/present`); a subset of the possible CPUs.
    fn present_cpus(&self) -> CpuSet;

    /// CPUs online now. Read anew on each call; the answer may be stale the moment it
    /// returns. Errors only when the backend's files cannot be read or parsed.
    fn online_cpus(&self) -> Result<CpuSet>;

    /// The node a CPU belongs to, also while the CPU is offline; `None` for a CPU that is
    /// not possible or whose node the machine does not say.
    fn cpu_node(&self, cpu: CpuId) -> Option<NodeId>;

    /// The CPUs this process may run on: online CPUs, restricted by the process's
    /// affinity and by its cpuset or cgroup (v1 and v2).
    fn allowed_cpus(&self) -> CpuSet;

    /// Nodes that may ever be online (`node/possible`). Never empty: a kernel without NUMA
    /// has node 0.
    fn possible_nodes(&self) -> NodeSet;

    /// Nodes online now (`node/online`).
    fn online_nodes(&self) -> NodeSet;

    /// Every CPU of a node, offline CPUs included; empty for a CPU-less or unknown node.
    fn node_cpus(&self, node: NodeId) -> CpuSet;

    /// A node's `MemTotal` in kB: `Some(0)` for a node without memory, `None` for a node
    /// the machine does not describe.
    fn node_mem_total_kb(&self, node: NodeId) -> Option<u64>;

    /// The distance from one node to another as in `nodeN/distance` (10 = local), `None`
    /// where either node is unknown.
    fn distance(&self, from: NodeId, to: NodeId) -> Option<u32>;

    /// The CPU the calling thread runs on. On real Linux this is the kernel's answer
    /// (glibc's rseq area, else `sched_getcpu`) and may be stale the moment it is read:
    /// callers must be correct whatever it returns. Fixture and fake backends return the
    /// thread's virtual CPU (see [`Topology::bind_current_thread`]), moved to an online
    /// CPU of the nearest node once its CPU went offline, and for a bound thread back to
    /// its CPU once that is online again (as Linux reapplies a `sched_setaffinity` mask).
    fn current_cpu(&self) -> CpuId;

    /// Binds the calling thread to a CPU: real affinity on Linux (`sched_setaffinity`), a
    /// virtual binding on fixtures and fakes. Errors if the CPU is unknown or offline.
    fn bind_current_thread(&self, cpu: CpuId) -> Result<()>;

    /// Takes a CPU offline or brings it online: writes `cpuN/online` under the root
    /// (real Linux as root, or a fixture copy) or changes the fake's state. Errors name
    /// the CPU and what the kernel or backend said; a CPU without an `online` file (cpu0)
    /// is [`Error::NotHotpluggable`].
    fn set_cpu_online(&self, cpu: CpuId, state: CpuState) -> Result<()>;

    /// The root folder whose `sys/devices/system/cpu` holds the `online` files, for
    /// backends that have one (sysfs and fixtures): the hotplug poller watches it.
    fn sysfs_root(&self) -> Option<&Path>;

    /// A channel of online changes for backends that announce them directly (the fake);
    /// `None` for backends whose changes are found by reading files.
    fn subscribe(&self) -> Option<crossbeam_channel::Receiver<OnlineChange>>;

    /// The nodes with memory that this process may allocate from: the kernel's
    /// `Mems_allowed` (its cpuset's effective memory nodes, never a node without memory).
    /// The live root reads `Mems_allowed_list` in `/proc/self/status`; other roots read the
    /// cpuset or cgroup files (`mems`, `cpuset.mems`, `cpuset.mems.effective`) found as
    /// for [`Topology::allowed_cpus`]. Where nothing restricts them (and by default), every
    /// memory node. Never empty on a machine that has a node with memory.
    fn allowed_memory_nodes(&self) -> NodeSet {
        self.memory_nodes()
    }

    /// Each quirk of the machine's files that the backend read by a documented
    /// interpretation instead of refusing the machine (see [`Reading`]), in the order
    /// found. Empty for a machine the kernel could have written, and by default (backends
    /// built in code have no files to be odd).
    fn diagnostics(&self) -> Vec<Diagnostic> {
        Vec::new()
    }

    /// Whether this is the running machine itself, read from `/`: only then does
    /// [`Topology::current_cpu`] come from the kernel, a CPU switch is real hotplug, and
    /// the kernel's uevents tell of the changes.
    fn is_live(&self) -> bool {
        self.sysfs_root() == Some(Path::new("/"))
    }

    /// Whether the CPU ids are the running kernel's and a thread runs where
    /// [`Topology::current_cpu`] says: the live machine, and a fake built
    /// [`on_live_cpus`](crate::FakeBuilder::on_live_cpus). Only then may the kernel's
    /// own per-CPU facilities (rseq's `cpu_id`, `membarrier` aimed at one CPU) stand for
    /// this topology's CPUs.
    fn cpus_are_live(&self) -> bool {
        self.is_live()
    }

    /// The file that switches `cpu`, `sys/devices/system/cpu/cpuN/online` under the
    /// [`Topology::sysfs_root`]; `None` for backends without a sysfs tree (the fake). The
    /// file need not exist: the kernel writes none for a CPU it cannot unplug (often
    /// cpu0).
    fn cpu_online_file(&self, cpu: CpuId) -> Option<PathBuf> {
        self.sysfs_root().map(|root| root.join(format!("sys/devices/system/cpu/cpu{cpu}/online")))
    }

    /// Whether `cpu` can be taken offline and brought online: a present CPU of a backend
    /// without a sysfs tree (the fake), else a present CPU that has its `online` file.
    fn can_switch_cpu(&self, cpu: CpuId) -> bool {
        self.present_cpus().contains(cpu) && self.cpu_online_file(cpu).is_none_or(|file| file.is_file())
    }

    /// Whether a CPU is online now.
    fn cpu_online(&self, cpu: CpuId) -> Result<bool> {
        Ok(self.online_cpus()?.contains(cpu))
    }

    /// Whether a node has memory.
    fn has_memory(&self, node: NodeId) -> bool {
        self.node_mem_total_kb(node).is_some_and(|kb| kb > 0)
    }

    /// Online nodes with memory.
    fn memory_nodes(&self) -> NodeSet {
        self.online_nodes().iter().filter(|&node| self.has_memory(node)).collect()
    }

    /// Online nodes without memory (they may have CPUs).
    fn memoryless_nodes(&self) -> NodeSet {
        self.online_nodes().iter().filter(|&node| !self.has_memory(node)).collect()
    }

    /// Online nodes without CPUs (they may have memory).
    fn cpuless_nodes(&self) -> NodeSet {
        self.online_nodes().iter().filter(|&node| self.node_cpus(node).is_empty()).collect()
    }

    /// The node with memory nearest to `node`: `node` itself if it has memory, else the
    /// online memory node at the smallest distance, the lowest id on a tie. `None` only
    /// when no node has memory.
    fn nearest_memory_node(&self, node: NodeId) -> Option<NodeId> {
        if self.has_memory(node) {
            return Some(node);
        }
        self.memory_nodes()
            .iter()
            .min_by_key(|&candidate| (self.distance(node, candidate).unwrap_or(u32::MAX), candidate))
    }

    /// The largest possible CPU id plus one: the length of a per-CPU table.
    fn cpu_id_bound(&self) -> usize {
        self.possible_cpus().id_bound()
    }

    /// The largest possible node id plus one: the length of a per-node table.
    fn node_id_bound(&self) -> usize {
        self.possible_nodes().id_bound()
    }
}

#[cfg(test)]
mod tests;
