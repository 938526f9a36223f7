//! [`SysfsTopology`]: the machine as `/sys/devices/system/{cpu,node}` and `/proc` under a
//! root folder describe it.
//!
//! # How the files are read
//!
//! - **Possible CPUs**: `cpu/possible` where it exists; else every CPU the tree names
//!   anywhere: `cpuN` folders, `cpu/present`, and the node lists (a capture without
//!   summary files, such as an old ia64 kernel's, still names every CPU it has there).
//!   With `cpu/possible` present, a `cpuN` folder or a node list naming a CPU outside it
//!   is an error: the kernel never writes that.
//! - **Present CPUs**: `cpu/present`, else the `cpuN` folders.
//! - **Ids** are bounded by `cpu/kernel_max` + 1 where that file exists, else by
//!   [`ID_LIMIT`]; a larger id anywhere is an error.
//! - **A CPU's node**: the node whose `cpulist` (or, on old kernels, hex `cpumap`) names
//!   it, also for CPUs that are possible but have no folder (POWER9 lists all 88 possible
//!   CPUs of a socket, present or not); else a `nodeN` entry (the kernel's symlink) in the
//!   `cpuN` folder, which is how offline node 0's CPUs are known on a machine whose
//!   `node0` folder is gone. A CPU in two nodes' lists is a quirk (below).
//! - **Nodes**: `node/possible` and `node/online`, else the `nodeN` folders. A tree without
//!   a `node/` folder (or with no `nodeN` folder in it) is a kernel without NUMA: one node
//!   0 with every possible CPU, `MemTotal` from `proc/meminfo`, distance 10.
//! - **Memory**: `MemTotal` from `nodeN/meminfo` (`Node N MemTotal: X kB`); a node without
//!   a folder has no known memory (`None`).
//! - **Distances**: `nodeN/distance` lists one entry per online node in id order (the
//!   kernel's `node_read_distance` walks `for_each_online_node`); a row whose length does
//!   not match the online nodes is matched against the possible nodes (captures taken
//!   before a node went offline), and any other length is an error. A pair no row
//!   describes takes the reverse pair's distance if known, else 10 to itself and 20
//!   (`REMOTE_DISTANCE`) to others.
//! - **Online CPUs** are read anew on every call. On the live root: `cpu/online` where it
//!   exists, else each `cpuN/online` file, a CPU whose folder has no `online` file (cpu0 on
//!   x86) being online. On any other root the per-CPU files win over the summary, so that
//!   writing `cpuN/online` in a copied tree is seen even by a writer that did not update
//!   `cpu/online`.
//! - **Allowed CPUs**: online CPUs, restricted by the cpuset or cgroup (see
//!   `sysfs/cgroup.rs`) and, on the live root only, by `sched_getaffinity`.
//! - **Allowed memory nodes**: the memory nodes (online, `MemTotal` > 0), restricted on
//!   the live root by `Mems_allowed_list` in `proc/self/status` (the kernel's own answer,
//!   cpuset included), on other roots by the cpuset or cgroup's `mems`, `cpuset.mems` or
//!   `cpuset.mems.effective` (see `sysfs/cgroup.rs`). Nodes without memory are never
//!   allowed: the kernel's effective `mems` never hold one (`guarantee_online_mems`).
//!
//! The `topology/` folder of each CPU is not needed and not read: offline CPUs lose it.
//!
//! # Quirks
//!
//! Real machines' files hold six things the kernel's own code would not write (all found
//! in hwloc's captures, each reproduced by a `fixtures/quirk-*.machine`), and a memory
//! restriction can contradict the node files. A lenient reading
//! ([`Reading::Lenient`], the default) takes each by the interpretation below and lists it
//! in [`Topology::diagnostics`] with the file, its text and the reading taken; a strict one
//! ([`Reading::Strict`]) refuses the machine with [`Error::Strict`]. Anything else that is
//! missing, unreadable or malformed stays [`Error::Io`] or [`Error::Malformed`] naming the
//! file.
//!
//! - **An empty `cpuN/online`** ([`Quirk::EmptyOnlineFlag`]) says nothing, so it is read as
//!   absent: `cpu/online` decides, else the CPU is online (as for x86's cpu0, which has no
//!   such file). Only `0` and `1` are flags; any other text is malformed.
//! - **An empty `proc/self/cpuset`** ([`Quirk::EmptyCpusetPath`]) names no cpuset, so it is
//!   read as absent: the cgroup comes from `proc/self/cgroup`.
//! - **No `proc/meminfo` on a machine without a `node/` folder** ([`Quirk::NoMeminfo`]):
//!   node 0's memory is unknown (`node_mem_total_kb(0)` is `None`, never a made-up figure).
//!   With a `node/` folder `proc/meminfo` is not read.
//! - **Every node lists the same CPUs** ([`Quirk::AllCpusInEveryNode`]: two or more nodes
//!   have CPUs and all their lists are equal, as firmware with a broken SRAT writes): which
//!   CPU sits where is unknown, so the machine is read as one without NUMA (one node 0 with
//!   every CPU, `MemTotal` from `proc/meminfo`), as hwloc does. The quirk is noted on the
//!   second such list.
//! - **A distance row holding `0`** ([`Quirk::ZeroDistance`]): the firmware gave no
//!   distance, so the whole row is ignored, as if the node had no `distance` file:
//!   distances from it come from the other rows (the reverse pair), else 10 and 20. Any
//!   other value outside 10..=255 is malformed.
//! - **A CPU in two nodes' lists** ([`Quirk::CpuInTwoNodes`], heterogeneous memory: a
//!   high-bandwidth or far-memory node that lists the CPUs near it): each CPU is read as
//!   belonging to the node with the smallest list among those naming it (the most specific
//!   locality, which is the CPU's own socket or die node rather than a memory node
//!   spanning several), the lowest node id on a tie, and is taken off the other lists, so
//!   that every CPU has exactly one node and `node_cpus` partitions the CPUs. The quirk is
//!   noted on each list that lost CPUs, saying what it keeps.
//! - **A memory restriction naming no node with memory** ([`Quirk::NoAllowedMemoryNode`]:
//!   a v1 `cpuset.mems` as written, say, naming only memory-less nodes) cannot be obeyed,
//!   so it is read as no restriction: every memory node is allowed.

mod cgroup;
pub(crate) mod read;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::diagnostic::Notes;
use crate::idset::trim_kernel_text;
use crate::virtual_cpu::{nodes_by_distance, VirtualCpus};
use crate::{
    os, CpuId, CpuSet, CpuState, Diagnostic, Error, NodeId, NodeSet, OnlineChange, Quirk, Reading, Result,
    Topology, ID_LIMIT, LOCAL_DISTANCE, REMOTE_DISTANCE,
};

/// The largest distance a node row may hold: ACPI's SLIT stores distances in a byte.
const MAX_DISTANCE: u32 = 255;

/// Whether the root is the machine this process runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RootKind {
    /// `/`: the kernel's own files; current CPU and affinity come from the kernel.
    Live,
    /// Any other folder: a capture or a fixture copy describing another machine; the
    /// current CPU is virtual and writes to `cpuN/online` also update the summaries.
    Described,
}

/// A machine read from sysfs and procfs files under a root folder.
///
/// Static facts are read once by [`SysfsTopology::new`]; online CPUs are read anew on
/// every [`Topology::online_cpus`] call. See the module documentation for how each file
/// is interpreted.
#[derive(Debug)]
pub struct SysfsTopology {
    root: PathBuf,
    kind: RootKind,
    reading: Reading,
    cpu_dir: PathBuf,
    /// CPU ids are below this: `kernel_max + 1`, or [`ID_LIMIT`].
    cpu_limit: u32,
    possible: CpuSet,
    present: CpuSet,
    /// CPUs that have a `cpuN` folder.
    cpu_folders: CpuSet,
    /// Indexed by CPU id, up to the largest possible CPU.
    cpu_node: Vec<Option<NodeId>>,
    possible_nodes: NodeSet,
    online_nodes: NodeSet,
    /// Indexed by node id, up to the largest possible node.
    node_cpus: Vec<CpuSet>,
    node_mem_kb: BTreeMap<NodeId, u64>,
    /// Indexed by the position of a node in `possible_nodes`.
    distance: Vec<Vec<u32>>,
    restriction: Option<cgroup::Restriction>,
    /// Where the allowed memory nodes were read, if anything restricts them.
    mems_restriction: Option<cgroup::Restriction>,
    /// The memory nodes this process may allocate from.
    allowed_mems: NodeSet,
    /// The virtual current CPUs of a described (not live) machine.
    virtual_cpus: Option<VirtualCpus>,
    /// The quirks read leniently at construction.
    diagnostics: Vec<Diagnostic>,
}

impl SysfsTopology {
    /// Reads the machine described under `root` (`/` for this machine), reading quirks
    /// leniently ([`Reading::Lenient`]): see [`SysfsTopology::with_reading`].
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        Self::with_reading(root, Reading::Lenient)
    }

    /// Reads the machine described under `root`. A quirk listed in the module
    /// documentation is read by its interpretation and reported in
    /// [`Topology::diagnostics`] ([`Reading::Lenient`]), or refused with
    /// [`Error::Strict`] ([`Reading::Strict`]).
    ///
    /// Errors: [`Error::NotSysfs`] if `root` has no `sys/devices/system/cpu` folder or it
    /// names no CPU; [`Error::Io`] or [`Error::Malformed`] naming the file for anything
    /// missing, unreadable or not what the kernel writes, quirks aside.
    pub fn with_reading(root: impl Into<PathBuf>, reading: Reading) -> Result<Self> {
        let root: PathBuf = root.into();
        let kind = match fs::canonicalize(&root) {
            Ok(path) if path == Path::new("/") => RootKind::Live,
            _ => RootKind::Described,
        };
        Self::with_kind(root, kind, reading)
    }

    /// Reads this machine: the root `/`.
    pub fn detect() -> Result<Self> {
        Self::new("/")
    }

    /// The root folder given to [`SysfsTopology::new`].
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether this reads the live machine (the root is `/`).
    pub fn is_live(&self) -> bool {
        self.kind == RootKind::Live
    }

    /// The cgroup or cpuset file that restricts the allowed CPUs, and its CPUs, if any.
    pub fn cgroup_restriction(&self) -> Option<(&Path, &CpuSet)> {
        self.restriction.as_ref().map(|r| (r.path.as_path(), &r.ids))
    }

    /// The file that restricts the allowed memory nodes (`proc/self/status` on the live
    /// root, a cpuset or cgroup file on others) and the nodes it names, if any.
    pub fn memory_restriction(&self) -> Option<(&Path, &NodeSet)> {
        self.mems_restriction.as_ref().map(|r| (r.path.as_path(), &r.ids))
    }

    fn with_kind(root: PathBuf, kind: RootKind, reading: Reading) -> Result<Self> {
        let mut notes = Notes::new(reading);
        let not_sysfs = |reason: String| Error::NotSysfs { root: root.clone(), reason };
        let cpu_dir = cpu_dir_of(&root)?;
        let cpu_limit = read_cpu_limit(&cpu_dir)?;
        let CpuLists { cpu_folders, possible_file, present } = CpuLists::read(&cpu_dir, cpu_limit)?;
        let present_path = cpu_dir.join("present");

        let nodes =
            NodeFacts::read(&root, &cpu_dir, &cpu_folders, cpu_limit, possible_file.as_ref(), &mut notes)?;
        let possible = match possible_file {
            Some(possible) => possible,
            None => cpu_folders.union(&present).union(&nodes.listed_cpus),
        };
        read::refuse_outside(&present_path, "cpu list", &present, present.difference(&possible), |cpu| {
            format!("cpu{cpu} is present but not possible ({possible})")
        })?;
        if possible.is_empty() {
            return Err(not_sysfs("sys/devices/system/cpu names no cpu".into()));
        }
        let nodes = if nodes.numa { nodes } else { NodeFacts::without_numa(&root, &possible, &mut notes)? };

        let restrictions = cgroup::restrictions(&root, cpu_limit, &mut notes)?;
        let mems_restriction = match kind {
            RootKind::Live => cgroup::process_mems(&root)?,
            RootKind::Described => restrictions.mems,
        };
        let mut topology = Self {
            root,
            kind,
            reading,
            cpu_dir,
            cpu_limit,
            present,
            cpu_folders,
            cpu_node: nodes.cpu_node_table(&possible),
            possible_nodes: nodes.possible,
            online_nodes: nodes.online,
            node_cpus: nodes.node_cpus,
            node_mem_kb: nodes.mem_kb,
            distance: nodes.distance,
            possible,
            restriction: restrictions.cpus,
            mems_restriction,
            allowed_mems: NodeSet::new(),
            virtual_cpus: None,
            diagnostics: Vec::new(),
        };
        topology.allowed_mems = topology.allowed_memory(&mut notes)?;
        // The online files are read on every call; reading them once here finds their
        // quirks (and, when strict, refuses them) at construction.
        topology.read_online_noting(&mut notes)?;
        if kind == RootKind::Described {
            topology.virtual_cpus = Some(topology.new_virtual_cpus()?);
        }
        topology.diagnostics = notes.into_found();
        Ok(topology)
    }

    /// The virtual current CPUs of a described machine, starting from its online files.
    fn new_virtual_cpus(&self) -> Result<VirtualCpus> {
        let online = self.read_online()?;
        let order = nodes_by_distance(&self.possible_nodes, self.node_cpus.len(), |a, b| self.distance(a, b));
        Ok(VirtualCpus::new(
            self.possible.clone(),
            &online,
            self.cpu_node.clone(),
            self.node_cpus.clone(),
            order,
        ))
    }

    /// The memory nodes the restriction allows, or every memory node where nothing
    /// restricts them or the restriction names none (a quirk).
    fn allowed_memory(&self, notes: &mut Notes) -> Result<NodeSet> {
        let memory = self.memory_nodes();
        let Some(restriction) = &self.mems_restriction else { return Ok(memory) };
        let allowed = restriction.ids.intersection(&memory);
        if allowed.is_empty() && !memory.is_empty() {
            let reading = format!("names no node with memory ({memory}): read as no restriction");
            let text = restriction.ids.to_string();
            notes.note(Diagnostic::new(Quirk::NoAllowedMemoryNode, &restriction.path, &text, reading))?;
            return Ok(memory);
        }
        Ok(allowed)
    }

    /// Reads the online CPUs (see the module documentation for the rules).
    fn read_online(&self) -> Result<CpuSet> {
        self.read_online_noting(&mut Notes::new(self.reading))
    }

    /// [`Self::read_online`], recording the quirks it reads in `notes`.
    fn read_online_noting(&self, notes: &mut Notes) -> Result<CpuSet> {
        let summary_path = self.cpu_dir.join("online");
        let summary = read::list(&summary_path, "cpu list", self.cpu_limit)?;
        if self.kind == RootKind::Live {
            // The kernel's answer, now: a CPU hot-added since this topology was read is
            // present and online, though not in `self.present`.
            if let Some(summary) = summary {
                return Ok(summary);
            }
        }
        if let Some(summary) = &summary {
            // The kernel's online mask is a subset of its present mask (a CPU must be
            // present to come up), so a described tree's summary naming another CPU is
            // not what a kernel wrote.
            read::refuse_outside(
                &summary_path,
                "cpu list",
                summary,
                summary.difference(&self.present),
                |cpu| format!("cpu{cpu} is online but not present ({})", self.present),
            )?;
        }
        let mut online = CpuSet::new();
        for cpu in &self.possible {
            let file = self.online_flag(cpu, notes)?;
            let is_online = match (file, &summary) {
                (Some(flag), _) => flag,
                (None, Some(summary)) => summary.contains(cpu),
                (None, None) => self.cpu_folders.contains(cpu),
            };
            if is_online {
                online.insert(cpu);
            }
        }
        Ok(online)
    }

    /// A CPU's `online` file: `Ok(None)` if absent, or empty (a quirk, read as absent).
    fn online_flag(&self, cpu: CpuId, notes: &mut Notes) -> Result<Option<bool>> {
        let path = self.online_file(cpu);
        let Some(text) = read::text(&path, "cpu online flag")? else { return Ok(None) };
        match trim_kernel_text(&text) {
            "0" => Ok(Some(false)),
            "1" => Ok(Some(true)),
            "" => {
                let reading = format!(
                    "says nothing: read as if cpu{cpu} had no online file (cpu/online decides, else it is online)"
                );
                notes.note(Diagnostic::new(Quirk::EmptyOnlineFlag, &path, &text, reading))?;
                Ok(None)
            }
            _ => Err(read::malformed(&path, "cpu online flag", &text, "expected 0 or 1")),
        }
    }

    fn online_file(&self, cpu: CpuId) -> PathBuf {
        self.cpu_dir.join(format!("cpu{cpu}/online"))
    }

    /// Rewrites `cpu/online` and `cpu/offline`, where they exist, to match `online`, as
    /// the kernel keeps them; used on described roots, where nothing else does.
    pub(crate) fn write_summaries(&self, online: &CpuSet) -> Result<()> {
        let offline = self.possible.difference(online);
        for (name, set) in [("online", online), ("offline", &offline)] {
            let path = self.cpu_dir.join(name);
            let current = read::text(&path, "cpu list")?;
            let wanted = format!("{set}\n");
            if current.is_some_and(|text| text != wanted) {
                fs::write(&path, wanted).map_err(|source| Error::Io { path, source })?;
            }
        }
        Ok(())
    }

    fn check_cpu(&self, cpu: CpuId) -> Result<()> {
        if self.possible.contains(cpu) {
            Ok(())
        } else {
            Err(Error::UnknownCpu { cpu, possible: self.possible.to_string() })
        }
    }

    /// The position of a node among the possible nodes: its row in `distance`.
    fn node_index(&self, node: NodeId) -> Option<usize> {
        self.possible_nodes.iter().position(|n| n == node)
    }
}

impl Topology for SysfsTopology {
    fn name(&self) -> String {
        format!("sysfs:{}", self.root.display())
    }

    fn possible_cpus(&self) -> CpuSet {
        self.possible.clone()
    }

    fn present_cpus(&self) -> CpuSet {
        self.present.clone()
    }

    fn online_cpus(&self) -> Result<CpuSet> {
        let online = self.read_online()?;
        if let Some(cpus) = &self.virtual_cpus {
            cpus.set_online_set(&online);
        }
        Ok(online)
    }

    fn cpu_node(&self, cpu: CpuId) -> Option<NodeId> {
        self.cpu_node.get(cpu as usize).copied().flatten()
    }

    /// Online CPUs restricted by the cgroup and, on the live root, by the calling
    /// thread's affinity. Should the online files become unreadable, the present CPUs
    /// stand in for the online ones (the trait gives no way to report the error here).
    fn allowed_cpus(&self) -> CpuSet {
        let mut allowed = self.online_cpus().unwrap_or_else(|_| self.present.clone());
        if let Some(restriction) = &self.restriction {
            allowed = allowed.intersection(&restriction.ids);
        }
        if self.kind == RootKind::Live {
            if let Ok(affinity) = os::thread_affinity(self.cpu_limit) {
                allowed = allowed.intersection(&affinity);
            }
        }
        allowed
    }

    fn possible_nodes(&self) -> NodeSet {
        self.possible_nodes.clone()
    }

    fn online_nodes(&self) -> NodeSet {
        self.online_nodes.clone()
    }

    fn node_cpus(&self, node: NodeId) -> CpuSet {
        self.node_cpus.get(node as usize).cloned().unwrap_or_default()
    }

    fn node_mem_total_kb(&self, node: NodeId) -> Option<u64> {
        self.node_mem_kb.get(&node).copied()
    }

    fn distance(&self, from: NodeId, to: NodeId) -> Option<u32> {
        Some(self.distance[self.node_index(from)?][self.node_index(to)?])
    }

    /// On the live root: glibc's rseq area where registered, else `sched_getcpu()`; the
    /// answer may be stale the moment it returns. On other roots: the thread's virtual CPU.
    fn current_cpu(&self) -> CpuId {
        match &self.virtual_cpus {
            Some(cpus) => cpus.current(),
            None => os::current_cpu_with_source()
                .map(|(cpu, _)| cpu)
                .unwrap_or_else(|| self.possible.first().unwrap_or(0)),
        }
    }

    fn bind_current_thread(&self, cpu: CpuId) -> Result<()> {
        self.check_cpu(cpu)?;
        match &self.virtual_cpus {
            Some(cpus) => cpus.bind(cpu),
            None => os::bind_thread(cpu, self.cpu_limit).map_err(|source| Error::Affinity { cpu, source }),
        }
    }

    fn set_cpu_online(&self, cpu: CpuId, state: CpuState) -> Result<()> {
        self.check_cpu(cpu)?;
        let path = self.online_file(cpu);
        if !self.cpu_dir.join(format!("cpu{cpu}")).is_dir() {
            return Err(Error::NotHotpluggable {
                cpu,
                reason: format!("cpu{cpu} is not present (no folder)"),
            });
        }
        if !path.exists() {
            return Err(Error::NotHotpluggable {
                cpu,
                reason: format!("{} does not exist: the kernel does not allow it", path.display()),
            });
        }
        let mut online = self.read_online()?;
        let last_online = state == CpuState::Offline && online.contains(cpu) && online.len() == 1;
        if self.kind == RootKind::Described && last_online {
            // The kernel refuses this too (`cpu_down` returns EBUSY for the last CPU).
            return Err(Error::NotHotpluggable { cpu, reason: "it is the last online cpu".into() });
        }
        let text = match state {
            CpuState::Online => "1",
            CpuState::Offline => "0",
        };
        write_existing(&path, text).map_err(|source| Error::SetOnline {
            cpu,
            state: state.as_str(),
            path: path.clone(),
            source,
        })?;
        if self.kind == RootKind::Described {
            match state {
                CpuState::Online => online.insert(cpu),
                CpuState::Offline => online.remove(cpu),
            };
            self.write_summaries(&online)?;
            if let Some(cpus) = &self.virtual_cpus {
                cpus.set_online(cpu, state);
            }
        }
        Ok(())
    }

    fn sysfs_root(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn subscribe(&self) -> Option<crossbeam_channel::Receiver<OnlineChange>> {
        None
    }

    fn allowed_memory_nodes(&self) -> NodeSet {
        self.allowed_mems.clone()
    }

    fn diagnostics(&self) -> Vec<Diagnostic> {
        self.diagnostics.clone()
    }
}

/// The bound on CPU ids: `cpu/kernel_max` + 1 where that file exists, else [`ID_LIMIT`].
fn read_cpu_limit(cpu_dir: &Path) -> Result<u32> {
    let path = cpu_dir.join("kernel_max");
    match read::number(&path, "kernel_max")? {
        Some(max) if max < u64::from(ID_LIMIT) => Ok(max as u32 + 1),
        Some(max) => Err(read::malformed(
            &path,
            "kernel_max",
            &max.to_string(),
            format!("beyond the limit of {ID_LIMIT} cpu ids"),
        )),
        None => Ok(ID_LIMIT),
    }
}

/// Writes `text` to a file that must already exist, as sysfs attributes do.
fn write_existing(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new().write(true).truncate(true).open(path)?;
    file.write_all(text.as_bytes())
}

/// One `nodeN/distance` file: where it is, its text for errors, and its distances.
#[derive(Debug)]
struct DistanceRow {
    path: PathBuf,
    text: String,
    distances: Vec<u32>,
}

/// What the `node/` folder says.
#[derive(Debug, Default)]
struct NodeFacts {
    /// Whether a `node/` folder with at least one `nodeN` folder exists.
    numa: bool,
    possible: NodeSet,
    online: NodeSet,
    /// Indexed by node id.
    node_cpus: Vec<CpuSet>,
    /// Every CPU some node list names.
    listed_cpus: CpuSet,
    /// CPUs known only from a `nodeN` entry in their `cpuN` folder.
    linked: BTreeMap<CpuId, NodeId>,
    mem_kb: BTreeMap<NodeId, u64>,
    /// Indexed by position in `possible`.
    distance: Vec<Vec<u32>>,
}

impl NodeFacts {
    fn read(
        root: &Path,
        cpu_dir: &Path,
        cpu_folders: &CpuSet,
        cpu_limit: u32,
        possible_cpus: Option<&CpuSet>,
        notes: &mut Notes,
    ) -> Result<Self> {
        let node_dir = root.join("sys/devices/system/node");
        if !node_dir.is_dir() {
            return Ok(Self::default());
        }
        let folders = read::numbered_entries(&node_dir, "node", ID_LIMIT, "node folder name")?;
        if folders.is_empty() {
            return Ok(Self::default());
        }
        let possible_path = node_dir.join("possible");
        let possible = read::list(&possible_path, "node list", ID_LIMIT)?.unwrap_or_else(|| folders.clone());
        read::refuse_outside(
            &possible_path,
            "node list",
            &possible,
            folders.difference(&possible),
            |node| format!("node{node} has a folder but is not possible"),
        )?;
        let online_path = node_dir.join("online");
        let online = read::list(&online_path, "node list", ID_LIMIT)?.unwrap_or_else(|| folders.clone());
        read::refuse_outside(&online_path, "node list", &online, online.difference(&possible), |node| {
            format!("node{node} is online but not possible ({possible})")
        })?;

        let bound = possible.id_bound();
        let mut facts =
            Self { numa: true, node_cpus: vec![CpuSet::new(); bound], possible, online, ..Self::default() };
        let mut rows = BTreeMap::new();
        let mut lists = BTreeMap::new();
        for node in &folders {
            let folder = node_dir.join(format!("node{node}"));
            let (list, row) = facts.read_node_folder(&folder, node, cpu_limit, possible_cpus, notes)?;
            lists.insert(node, list);
            if let Some(row) = row {
                rows.insert(node, row);
            }
        }
        if all_cpus_in_every_node(&lists, notes)? {
            return Ok(Self::default());
        }
        facts.give_each_cpu_one_node(&lists, notes)?;
        facts.read_cpu_links(cpu_dir, cpu_folders, &folders)?;
        facts.distance = facts.distance_matrix(&rows)?;
        Ok(facts)
    }

    /// Reads one `nodeN` folder: its CPU list (whose CPUs must be possible), its memory,
    /// and its distance row if it has a usable one.
    fn read_node_folder(
        &mut self,
        folder: &Path,
        node: NodeId,
        cpu_limit: u32,
        possible_cpus: Option<&CpuSet>,
        notes: &mut Notes,
    ) -> Result<(NodeList, Option<DistanceRow>)> {
        let (list_path, cpus) = node_cpu_list(folder, cpu_limit)?;
        if let Some(possible) = possible_cpus {
            read::refuse_outside(&list_path, "cpu list", &cpus, cpus.difference(possible), |cpu| {
                format!("cpu{cpu} is not a possible cpu")
            })?;
        }
        self.listed_cpus = self.listed_cpus.union(&cpus);
        self.mem_kb.insert(node, node_mem_total(&folder.join("meminfo"), node)?);
        let list = NodeList { path: list_path, cpus };
        let path = folder.join("distance");
        let Some(text) = read::text(&path, "distance row")? else { return Ok((list, None)) };
        let Some(distances) = parse_distance_row(&path, &text)? else {
            let reading = format!(
                "0 is no distance: the row is ignored; distances from node{node} come from the other \
                 nodes' rows, else 10 to itself and 20 to others"
            );
            notes.note(Diagnostic::new(Quirk::ZeroDistance, &path, &text, reading))?;
            return Ok((list, None));
        };
        Ok((list, Some(DistanceRow { path, text, distances })))
    }

    /// Sets each node's CPUs from the lists, so that each CPU has one node: a CPU that
    /// several lists name (heterogeneous memory) goes to the node with the smallest list,
    /// the lowest id on a tie, and is taken off the other lists with a diagnostic.
    fn give_each_cpu_one_node(
        &mut self,
        lists: &BTreeMap<NodeId, NodeList>,
        notes: &mut Notes,
    ) -> Result<()> {
        let owner = |cpu: CpuId| {
            lists
                .iter()
                .filter(|(_, list)| list.cpus.contains(cpu))
                .min_by_key(|(&node, list)| (list.cpus.len(), node))
                .map(|(&node, _)| node)
        };
        for (&node, list) in lists {
            let taken: CpuSet = list.cpus.iter().filter(|&cpu| owner(cpu) != Some(node)).collect();
            if let Some(first) = taken.first() {
                let other = owner(first).unwrap_or(node);
                let kept = list.cpus.difference(&taken);
                let kept = if kept.is_empty() { "no cpu".to_owned() } else { format!("cpus {kept}") };
                let reading = format!(
                    "cpus {taken} are also in smaller node lists (cpu{first} in node{other}'s): each cpu is \
                     read as the node's with the smallest list (the lowest id on a tie); node{node} keeps {kept}"
                );
                notes.note(Diagnostic::new(
                    Quirk::CpuInTwoNodes,
                    &list.path,
                    &list.cpus.to_string(),
                    reading,
                ))?;
            }
            self.node_cpus[node as usize] = list.cpus.difference(&taken);
        }
        Ok(())
    }

    /// For CPUs that no node list names, the kernel's `cpuN/nodeM` link: how offline
    /// node 0's CPUs are known on a machine whose `node0` folder is gone.
    fn read_cpu_links(&mut self, cpu_dir: &Path, cpu_folders: &CpuSet, node_folders: &NodeSet) -> Result<()> {
        for cpu in cpu_folders.difference(&self.listed_cpus).iter() {
            let cpu_folder = cpu_dir.join(format!("cpu{cpu}"));
            let links = read::numbered_entries(&cpu_folder, "node", ID_LIMIT, "cpu node link")?;
            let Some(node) = links.first() else { continue };
            if !self.possible.contains(node) || links.len() > 1 {
                return Err(read::malformed(
                    &cpu_folder,
                    "cpu node link",
                    &links.to_string(),
                    format!("expected one link to a possible node ({})", self.possible),
                ));
            }
            self.linked.insert(cpu, node);
            if !node_folders.contains(node) {
                self.node_cpus[node as usize].insert(cpu);
            }
        }
        Ok(())
    }

    /// A kernel without NUMA: node 0 holds every possible CPU and all of `MemTotal`, or an
    /// unknown amount of memory (a quirk) where `proc/meminfo` is missing.
    fn without_numa(root: &Path, possible_cpus: &CpuSet, notes: &mut Notes) -> Result<Self> {
        let meminfo = root.join("proc/meminfo");
        let mut mem_kb = BTreeMap::new();
        match read::text(&meminfo, "meminfo")? {
            Some(text) => {
                mem_kb.insert(0, proc_mem_total(&meminfo, &text)?);
            }
            None => {
                let reading = "missing on a machine without a node/ folder: node 0's memory is unknown";
                notes.note(Diagnostic::new(Quirk::NoMeminfo, &meminfo, "", reading))?;
            }
        }
        Ok(Self {
            numa: false,
            possible: NodeSet::first_n(1),
            online: NodeSet::first_n(1),
            node_cpus: vec![possible_cpus.clone()],
            listed_cpus: possible_cpus.clone(),
            linked: BTreeMap::new(),
            mem_kb,
            distance: vec![vec![LOCAL_DISTANCE]],
        })
    }

    fn cpu_node_table(&self, possible_cpus: &CpuSet) -> Vec<Option<NodeId>> {
        let bound = possible_cpus.id_bound();
        let mut table = vec![None; bound];
        for (node, cpus) in self.node_cpus.iter().enumerate() {
            for cpu in cpus.iter().filter(|&cpu| (cpu as usize) < bound) {
                table[cpu as usize] = Some(node as NodeId);
            }
        }
        for (&cpu, &node) in &self.linked {
            if let Some(slot) = table.get_mut(cpu as usize) {
                slot.get_or_insert(node);
            }
        }
        table
    }

    /// The distance matrix over the possible nodes from the rows that exist.
    fn distance_matrix(&self, rows: &BTreeMap<NodeId, DistanceRow>) -> Result<Vec<Vec<u32>>> {
        let mut known: BTreeMap<(NodeId, NodeId), u32> = BTreeMap::new();
        for (&from, DistanceRow { path, text, distances: row }) in rows {
            let columns = if row.len() == self.online.len() {
                &self.online
            } else if row.len() == self.possible.len() {
                &self.possible
            } else {
                return Err(read::malformed(
                    path,
                    "distance row",
                    text,
                    format!(
                        "{} entries, but there are {} online nodes ({}) and {} possible nodes ({})",
                        row.len(),
                        self.online.len(),
                        self.online,
                        self.possible.len(),
                        self.possible
                    ),
                ));
            };
            for (to, &distance) in columns.iter().zip(row) {
                known.insert((from, to), distance);
            }
        }
        let nodes: Vec<NodeId> = self.possible.iter().collect();
        Ok(nodes
            .iter()
            .map(|&from| {
                nodes
                    .iter()
                    .map(|&to| {
                        known
                            .get(&(from, to))
                            .or_else(|| known.get(&(to, from)))
                            .copied()
                            .unwrap_or(if from == to { LOCAL_DISTANCE } else { REMOTE_DISTANCE })
                    })
                    .collect()
            })
            .collect())
    }
}

/// A node's CPUs: `cpulist`, else the hex `cpumap` of older kernels.
fn node_cpu_list(folder: &Path, cpu_limit: u32) -> Result<(PathBuf, CpuSet)> {
    let list_path = folder.join("cpulist");
    if let Some(cpus) = read::list(&list_path, "cpu list", cpu_limit)? {
        return Ok((list_path, cpus));
    }
    let map_path = folder.join("cpumap");
    let cpus = read::mask(&map_path, "cpu mask", cpu_limit)?;
    cpus.map(|cpus| (map_path, cpus)).ok_or_else(|| Error::Io {
        path: folder.join("cpulist"),
        source: io::Error::new(io::ErrorKind::NotFound, "neither cpulist nor cpumap exists"),
    })
}

/// `MemTotal` of a node, from `Node N MemTotal: X kB` in `nodeN/meminfo`.
fn node_mem_total(path: &Path, node: NodeId) -> Result<u64> {
    let text = read::required_text(path, "node meminfo")?;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("Node") {
            continue;
        }
        let (Some(id), Some("MemTotal:"), Some(value), unit) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            continue;
        };
        if id != node.to_string() {
            return Err(read::malformed(path, "node meminfo", line, format!("expected node {node}")));
        }
        if unit != Some("kB") {
            return Err(read::malformed(path, "node meminfo", line, "expected a size in kB"));
        }
        let kb: u64 =
            value.parse().map_err(|_| read::malformed(path, "node meminfo", line, "size is not a number"))?;
        // As for proc/meminfo: the size in bytes must fit 64 bits.
        if kb > u64::MAX / 1024 {
            return Err(read::malformed(path, "node meminfo", line, "size in bytes does not fit 64 bits"));
        }
        return Ok(kb);
    }
    Err(read::malformed(path, "node meminfo", &text, format!("no \"Node {node} MemTotal:\" line")))
}

/// `MemTotal` in kB from `proc/meminfo`'s `text`, parsed by procfs-core.
fn proc_mem_total(path: &Path, text: &str) -> Result<u64> {
    use procfs_core::FromBufRead;
    // procfs-core multiplies each value by its unit without checking for overflow;
    // refuse such values first so that garbage is an error, not a panic.
    for line in text.lines() {
        let mut words = line.split_whitespace().skip(1);
        let (Some(value), unit) = (words.next(), words.next()) else { continue };
        let scale: u64 = match unit {
            None | Some("B") => 1,
            Some("kB" | "KB" | "KiB" | "kiB") => 1 << 10,
            Some(_) => 1 << 30,
        };
        if value.parse::<u64>().ok().and_then(|v| v.checked_mul(scale)).is_none() {
            return Err(read::malformed(
                path,
                "meminfo",
                line,
                "value is not a number of bytes that fits 64 bits",
            ));
        }
    }
    let meminfo = procfs_core::Meminfo::from_buf_read(io::Cursor::new(text.as_bytes()))
        .map_err(|error| read::malformed(path, "meminfo", text, error.to_string()))?;
    Ok(meminfo.mem_total / 1024)
}

/// A `nodeN/distance` row: distances separated by spaces, each 10 to 255; `Ok(None)` for
/// a row holding a `0` among such distances (a quirk: the firmware gave no distance).
fn parse_distance_row(path: &Path, text: &str) -> Result<Option<Vec<u32>>> {
    let body = trim_kernel_text(text);
    if body.is_empty() {
        return Err(read::malformed(path, "distance row", text, "the row is empty"));
    }
    let mut zero = false;
    let mut row = Vec::new();
    for word in body.split_whitespace() {
        match word.parse::<u32>() {
            Ok(0) => zero = true,
            Ok(d) if (LOCAL_DISTANCE..=MAX_DISTANCE).contains(&d) => row.push(d),
            _ => {
                return Err(read::malformed(
                    path,
                    "distance row",
                    text,
                    format!("{word:?} is not a distance from {LOCAL_DISTANCE} to {MAX_DISTANCE}"),
                ))
            }
        }
    }
    Ok((!zero).then_some(row))
}

/// Whether every node that has CPUs lists the same CPUs, and there are at least two: the
/// firmware's NUMA facts are unusable ("buggy NUMA"), and the machine is read as one
/// without NUMA, as hwloc does. Notes the quirk on the second such list.
fn all_cpus_in_every_node(lists: &BTreeMap<NodeId, NodeList>, notes: &mut Notes) -> Result<bool> {
    let with_cpus: Vec<(&NodeId, &NodeList)> =
        lists.iter().filter(|(_, list)| !list.cpus.is_empty()).collect();
    let [(_, list), (_, second), ..] = with_cpus.as_slice() else { return Ok(false) };
    if with_cpus.iter().any(|(_, other)| other.cpus != list.cpus) {
        return Ok(false);
    }
    let nodes: NodeSet = with_cpus.iter().map(|(&node, _)| node).collect();
    let reading = format!(
        "nodes {nodes} each list cpus {}: the NUMA facts are unusable; read as a \
         machine without NUMA (one node 0 with every cpu, MemTotal from proc/meminfo), as hwloc does",
        list.cpus
    );
    notes.note(Diagnostic::new(
        Quirk::AllCpusInEveryNode,
        &second.path,
        &second.cpus.to_string(),
        reading,
    ))?;
    Ok(true)
}

/// One node's CPU list as its file gave it.
#[derive(Debug)]
struct NodeList {
    /// The `cpulist` or `cpumap` file.
    path: PathBuf,
    cpus: CpuSet,
}

/// The root's `sys/devices/system/cpu`, once the root is a folder that has one.
fn cpu_dir_of(root: &Path) -> Result<PathBuf> {
    let not_sysfs = |reason: String| Error::NotSysfs { root: root.to_owned(), reason };
    match fs::metadata(root) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(not_sysfs("it is not a folder".into())),
        Err(error) => return Err(not_sysfs(format!("it cannot be opened: {error}"))),
    }
    let cpu_dir = root.join("sys/devices/system/cpu");
    if !cpu_dir.is_dir() {
        return Err(not_sysfs("it has no sys/devices/system/cpu folder".into()));
    }
    Ok(cpu_dir)
}

/// What `sys/devices/system/cpu` lists before the nodes are read.
struct CpuLists {
    /// The `cpuN` folders.
    cpu_folders: CpuSet,
    /// `possible`, if the file exists.
    possible_file: Option<CpuSet>,
    /// `present`, or the folders where the file is missing.
    present: CpuSet,
}

impl CpuLists {
    /// Reads the folders and the two lists, refusing a folder of a CPU that `possible`
    /// leaves out.
    fn read(cpu_dir: &Path, cpu_limit: u32) -> Result<Self> {
        let cpu_folders = read::numbered_entries(cpu_dir, "cpu", cpu_limit, "cpu folder name")?;
        let possible_path = cpu_dir.join("possible");
        let possible_file = read::list(&possible_path, "cpu list", cpu_limit)?;
        let present = read::list(&cpu_dir.join("present"), "cpu list", cpu_limit)?
            .unwrap_or_else(|| cpu_folders.clone());
        if let Some(possible) = &possible_file {
            read::refuse_outside(
                &possible_path,
                "cpu list",
                possible,
                cpu_folders.difference(possible),
                |cpu| format!("cpu{cpu} has a folder but is not possible"),
            )?;
        }
        Ok(Self { cpu_folders, possible_file, present })
    }
}

#[cfg(test)]
mod tests;
