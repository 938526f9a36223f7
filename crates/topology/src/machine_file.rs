//! Machine descriptions: the short text files (`fixtures/NAME.machine`) from which
//! `cargo xtask fixture NAME` writes a sysfs-shaped tree, so that hand-made machines stay
//! small and reviewable.
//!
//! One statement a line; `#` starts a comment:
//!
//! ```text
//! kernel_max 63                     # cpu/kernel_max (default 8191, x86's MAXSMP NR_CPUS - 1)
//! possible 0-7                      # cpu/possible (default: present)
//! present 0-3                       # cpu/present (default: every node's cpus)
//! offline 3                         # present cpus that are offline (default none)
//! no_online_file 0                  # cpus without cpuN/online (default 0, as on x86)
//! node 0 cpus 0-1 mem_kb 4194304    # a node, its cpus (may be empty: "cpus -") and MemTotal
//! distance 0 1 21                   # both ways (default 10 to itself, 20 to others)
//! cgroup_cpus 0-2                   # a cgroup v2 cpuset.cpus.effective restriction
//! cgroup_mems 0,2                   # a cgroup v2 cpuset.mems.effective restriction
//! file sys/devices/system/cpu/cpu1/online      # then write this file (here: empty)
//! file sys/devices/system/node/node1/distance 0\n
//! remove proc/meminfo               # then remove this file or folder
//! ```
//!
//! `file PATH TEXT` and `remove PATH` change the written tree afterwards, in order, to
//! reproduce what a real machine's files hold beyond what the kernel writes (the quirks of
//! `fixtures/quirk-*.machine`). TEXT is the rest of the line, trimmed, with `\n`, `\0`,
//! `\t` and `\\` escapes; PATH is relative and stays under the root.
//!
//! The tree written holds what the kernel writes for such a machine: the summary lists,
//! `cpuN/online` and (for online CPUs only, as the kernel removes it on offline)
//! `cpuN/topology/`, `nodeN/{cpulist,cpumap,meminfo,distance}`, the node summary masks,
//! `proc/meminfo`, `proc/cpuinfo`, `proc/self/{cpuset,cgroup}` and `proc/mounts`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::str::SplitWhitespace;

use crate::{
    CpuId, CpuSet, Error, IdSet, NodeId, NodeSet, Result, ID_LIMIT, LOCAL_DISTANCE, REMOTE_DISTANCE,
};

/// The description of the seed's test box, compiled in so that
/// [`FixtureTopology::seed_box`](crate::FixtureTopology::seed_box) needs no file on disk.
pub const SEED_BOX: &str = include_str!("../../../fixtures/seed-box.machine");

/// The descriptions compiled into the crate, by fixture name.
pub const BUILTIN: &[(&str, &str)] = &[
    ("seed-box", SEED_BOX),
    ("memoryless-node", include_str!("../../../fixtures/memoryless-node.machine")),
    ("cpuless-node", include_str!("../../../fixtures/cpuless-node.machine")),
    ("large-sparse", include_str!("../../../fixtures/large-sparse.machine")),
    ("restricted-mems", include_str!("../../../fixtures/restricted-mems.machine")),
];

/// One node of a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDescription {
    /// The node's CPUs (possibly none).
    pub cpus: CpuSet,
    /// `MemTotal` in kB (0 for a node without memory).
    pub mem_kb: u64,
}

/// A change to the written tree: a file's text, or a file or folder removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileEdit {
    /// Write this text (creating folders as needed).
    Write(String),
    /// Remove the file or folder.
    Remove,
}

/// A machine, as a description file states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineDescription {
    /// `cpu/kernel_max`.
    pub kernel_max: u32,
    /// `cpu/possible`.
    pub possible: CpuSet,
    /// `cpu/present`.
    pub present: CpuSet,
    /// Present CPUs that are offline.
    pub offline: CpuSet,
    /// CPUs with no `cpuN/online` file.
    pub no_online_file: CpuSet,
    /// The nodes by id.
    pub nodes: BTreeMap<NodeId, NodeDescription>,
    /// Distances stated between distinct nodes (both ways).
    pub distances: BTreeMap<(NodeId, NodeId), u32>,
    /// A cgroup v2 restriction of the process's CPUs.
    pub cgroup_cpus: Option<CpuSet>,
    /// A cgroup v2 restriction of the process's memory nodes.
    pub cgroup_mems: Option<NodeSet>,
    /// Changes made to the tree after writing it, in order (path relative to the root).
    pub edits: Vec<(String, FileEdit)>,
}

impl MachineDescription {
    /// The compiled-in description of a fixture, if there is one.
    pub fn builtin(name: &str) -> Option<Result<Self>> {
        BUILTIN.iter().find(|(builtin, _)| *builtin == name).map(|(_, text)| Self::parse(name, text))
    }

    /// Parses a description; `name` is used in errors.
    pub fn parse(name: &str, text: &str) -> Result<Self> {
        let invalid = |reason: String| Error::Fixture { name: name.to_owned(), reason };
        let mut statements = Statements::new();
        for (index, raw) in text.lines().enumerate() {
            statements.read_line(raw).map_err(|reason| invalid(format!("line {}: {reason}", index + 1)))?;
        }
        statements.finish().map_err(invalid)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.possible.last().is_some_and(|last| last > self.kernel_max) {
            return Err(format!("possible cpus {} go beyond kernel_max {}", self.possible, self.kernel_max));
        }
        if let Some(cpu) = self.present.difference(&self.possible).first() {
            return Err(format!("cpu {cpu} is present but not possible"));
        }
        for (id, node) in &self.nodes {
            if let Some(cpu) = node.cpus.difference(&self.possible).first() {
                return Err(format!("cpu {cpu} of node {id} is not possible"));
            }
        }
        if let Some(cpu) = self.offline.difference(&self.present).first() {
            return Err(format!("offline cpu {cpu} is not present"));
        }
        if let Some(cpu) = self.no_online_file.intersection(&self.offline).first() {
            return Err(format!("cpu {cpu} has no online file, so it cannot be offline"));
        }
        if self.online().is_empty() {
            return Err("no cpu is online".into());
        }
        if let Some(node) = self.cgroup_mems.iter().flatten().find(|node| !self.nodes.contains_key(node)) {
            return Err(format!("cgroup_mems names node {node}, which is not described"));
        }
        if let Some(&(a, b)) =
            self.distances.keys().find(|(a, b)| !self.nodes.contains_key(a) || !self.nodes.contains_key(b))
        {
            return Err(format!("distance between nodes {a} and {b}: both must be described"));
        }
        Ok(())
    }

    /// The online CPUs: present and not offline.
    pub fn online(&self) -> CpuSet {
        self.present.difference(&self.offline)
    }

    /// The distance between two described nodes.
    pub fn distance(&self, from: NodeId, to: NodeId) -> u32 {
        match self.distances.get(&(from, to)) {
            Some(&d) => d,
            None if from == to => LOCAL_DISTANCE,
            None => REMOTE_DISTANCE,
        }
    }

    /// The node a CPU belongs to.
    pub fn cpu_node(&self, cpu: CpuId) -> Option<NodeId> {
        self.nodes.iter().find(|(_, node)| node.cpus.contains(cpu)).map(|(&id, _)| id)
    }

    /// Writes the machine's tree under `root` (which must exist and should be empty).
    pub fn write_tree(&self, root: &Path) -> Result<()> {
        let online = self.online();
        let mut files: Vec<(String, String)> = Vec::new();
        self.cpu_files(&online, &mut files);
        self.node_files(&online, &mut files);
        self.proc_and_cgroup_files(&online, &mut files);
        for (relative, text) in files {
            write_file(&root.join(relative), &text)?;
        }
        self.apply_edits(root)
    }

    /// `sys/devices/system/cpu`: the summary lists, each present CPU's `online` file and,
    /// for online CPUs, where it sits.
    fn cpu_files(&self, online: &CpuSet, files: &mut Vec<(String, String)>) {
        let mut file = |path: String, text: String| files.push((path, text));
        let cpu = "sys/devices/system/cpu";
        file(format!("{cpu}/kernel_max"), format!("{}\n", self.kernel_max));
        file(format!("{cpu}/possible"), format!("{}\n", self.possible));
        file(format!("{cpu}/present"), format!("{}\n", self.present));
        file(format!("{cpu}/online"), format!("{online}\n"));
        file(format!("{cpu}/offline"), format!("{}\n", self.possible.difference(online)));
        for id in &self.present {
            if !self.no_online_file.contains(id) {
                file(format!("{cpu}/cpu{id}/online"), format!("{}\n", u8::from(online.contains(id))));
            }
            if !online.contains(id) {
                continue;
            }
            let node = self.cpu_node(id);
            let siblings =
                node.map_or_else(|| CpuSet::from_iter([id]), |n| self.nodes[&n].cpus.intersection(online));
            // Only the two files that say where the CPU sits; nothing reads more, and large
            // machines stay a few hundred files.
            let core = siblings.iter().position(|c| c == id).unwrap_or(0);
            let topology = format!("{cpu}/cpu{id}/topology");
            file(format!("{topology}/physical_package_id"), format!("{}\n", node.unwrap_or(0)));
            file(format!("{topology}/core_id"), format!("{core}\n"));
        }
    }

    /// `sys/devices/system/node`: the summary masks and each node's folder.
    fn node_files(&self, online: &CpuSet, files: &mut Vec<(String, String)>) {
        let mut file = |path: String, text: String| files.push((path, text));
        let node = "sys/devices/system/node";
        let node_ids: NodeSet = self.nodes.keys().copied().collect();
        let with_cpus: NodeSet = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.cpus.intersection(online).is_empty())
            .map(|(&id, _)| id)
            .collect();
        let with_memory: NodeSet =
            self.nodes.iter().filter(|(_, n)| n.mem_kb > 0).map(|(&id, _)| id).collect();
        file(format!("{node}/possible"), format!("{node_ids}\n"));
        file(format!("{node}/online"), format!("{node_ids}\n"));
        file(format!("{node}/has_cpu"), format!("{with_cpus}\n"));
        file(format!("{node}/has_memory"), format!("{with_memory}\n"));
        file(format!("{node}/has_normal_memory"), format!("{with_memory}\n"));
        let mask_bits = self.possible.last().map_or(32, |last| last + 1);
        for (&id, description) in &self.nodes {
            let folder = format!("{node}/node{id}");
            file(format!("{folder}/cpulist"), format!("{}\n", description.cpus));
            file(format!("{folder}/cpumap"), format!("{}\n", padded_mask(&description.cpus, mask_bits)));
            file(format!("{folder}/meminfo"), node_meminfo(id, description.mem_kb));
            let row: Vec<String> = node_ids.iter().map(|to| self.distance(id, to).to_string()).collect();
            file(format!("{folder}/distance"), format!("{}\n", row.join(" ")));
        }
    }

    /// `proc`'s files, and the cgroup restrictions if any.
    fn proc_and_cgroup_files(&self, online: &CpuSet, files: &mut Vec<(String, String)>) {
        let mut file = |path: &str, text: String| files.push((path.to_owned(), text));
        let total_kb: u64 = self.nodes.values().map(|n| n.mem_kb).sum();
        file("proc/meminfo", proc_meminfo(total_kb));
        file("proc/cpuinfo", online.iter().map(|id| format!("processor\t: {id}\n\n")).collect());
        file("proc/self/cpuset", "/\n".into());
        file("proc/self/cgroup", "0::/\n".into());
        file(
            "proc/mounts",
            "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n\
             proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n\
             cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"
                .into(),
        );
        if let Some(cpus) = &self.cgroup_cpus {
            file("sys/fs/cgroup/cpuset.cpus.effective", format!("{cpus}\n"));
        }
        if let Some(mems) = &self.cgroup_mems {
            file("sys/fs/cgroup/cpuset.mems.effective", format!("{mems}\n"));
        }
    }

    /// The `file` and `remove` statements, in order, on the written tree.
    fn apply_edits(&self, root: &Path) -> Result<()> {
        for (relative, edit) in &self.edits {
            let path = root.join(relative);
            let io = |source| Error::Io { path: path.clone(), source };
            match edit {
                FileEdit::Write(text) => write_file(&path, text)?,
                FileEdit::Remove if path.is_dir() => fs::remove_dir_all(&path).map_err(io)?,
                FileEdit::Remove => fs::remove_file(&path).map_err(io)?,
            }
        }
        Ok(())
    }
}

/// Writes a file, creating its folders.
fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|source| Error::Io { path: parent.to_path_buf(), source })?;
    }
    fs::write(path, text).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

/// The PATH of a `file` or `remove` statement: relative, without `..`.
/// A description as the statements read so far state it; what none stated is `None`
/// or its default.
struct Statements {
    kernel_max: u32,
    possible: Option<CpuSet>,
    present: Option<CpuSet>,
    offline: CpuSet,
    no_online_file: CpuSet,
    nodes: BTreeMap<NodeId, NodeDescription>,
    distances: BTreeMap<(NodeId, NodeId), u32>,
    cgroup_cpus: Option<CpuSet>,
    cgroup_mems: Option<NodeSet>,
    edits: Vec<(String, FileEdit)>,
}

impl Statements {
    fn new() -> Self {
        Self {
            kernel_max: 8191,
            possible: None,
            present: None,
            offline: CpuSet::new(),
            no_online_file: CpuSet::first_n(1),
            nodes: BTreeMap::new(),
            distances: BTreeMap::new(),
            cgroup_cpus: None,
            cgroup_mems: None,
            edits: Vec::new(),
        }
    }

    /// Reads one line: a statement, a comment or nothing.
    fn read_line(&mut self, raw: &str) -> std::result::Result<(), String> {
        let content = raw.split('#').next().unwrap_or("");
        let mut words = content.split_whitespace();
        let Some(keyword) = words.next() else { return Ok(()) };
        match keyword {
            "kernel_max" => self.kernel_max = kernel_max(words.next())?,
            "possible" => self.possible = Some(id_list(words.next())?),
            "present" => self.present = Some(id_list(words.next())?),
            "offline" => self.offline = id_list(words.next())?,
            "no_online_file" => self.no_online_file = id_list(words.next())?,
            "cgroup_cpus" => self.cgroup_cpus = Some(id_list(words.next())?),
            "cgroup_mems" => self.cgroup_mems = Some(id_list(words.next())?),
            "file" | "remove" => {
                let path = relative_path(words.next())?;
                let edit = if keyword == "remove" {
                    FileEdit::Remove
                } else {
                    // The text is the rest of the line, spaces included.
                    let rest = content.trim_start()[keyword.len()..].trim_start()[path.len()..].trim();
                    words = "".split_whitespace();
                    FileEdit::Write(unescape(rest)?)
                };
                self.edits.push((path.to_owned(), edit));
            }
            "node" => self.node(&mut words)?,
            "distance" => self.distance(&mut words)?,
            other => return Err(format!("unknown statement {other:?}")),
        }
        match words.next() {
            Some(extra) => Err(format!("unexpected {extra:?}")),
            None => Ok(()),
        }
    }

    /// `node N cpus LIST mem_kb KB`.
    fn node(&mut self, words: &mut SplitWhitespace<'_>) -> std::result::Result<(), String> {
        let id = node_id(words.next())?;
        if words.next() != Some("cpus") {
            return Err("expected `node N cpus LIST mem_kb KB`".into());
        }
        let cpus = id_list(words.next())?;
        if words.next() != Some("mem_kb") {
            return Err("expected `node N cpus LIST mem_kb KB`".into());
        }
        let mem_kb = number(words.next())?;
        if self.nodes.contains_key(&id) {
            return Err(format!("node {id} is described twice"));
        }
        if mem_kb > MAX_TOTAL_KB {
            return Err(format!("mem_kb {mem_kb}: the size in bytes does not fit 64 bits"));
        }
        let total = self.nodes.values().map(|node| node.mem_kb).sum::<u64>() + mem_kb;
        if total > MAX_TOTAL_KB {
            return Err(format!("mem_kb {mem_kb}: the nodes' total in bytes does not fit 64 bits"));
        }
        self.nodes.insert(id, NodeDescription { cpus, mem_kb });
        Ok(())
    }

    /// `distance A B D`, stated both ways.
    fn distance(&mut self, words: &mut SplitWhitespace<'_>) -> std::result::Result<(), String> {
        let (a, b) = (node_id(words.next())?, node_id(words.next())?);
        let d = number(words.next())?;
        if a == b || !(u64::from(LOCAL_DISTANCE) + 1..=255).contains(&d) {
            return Err("expected `distance A B D` with A != B and D in 11..=255".into());
        }
        // The range check above keeps `d` within u32.
        let d = d as u32;
        self.distances.insert((a, b), d);
        self.distances.insert((b, a), d);
        Ok(())
    }

    /// The description, with `present` defaulting to every node's CPUs and `possible` to
    /// `present`, once it is consistent.
    fn finish(self) -> std::result::Result<MachineDescription, String> {
        if self.nodes.is_empty() {
            return Err("no node is described".into());
        }
        let mut node_cpus = CpuSet::new();
        for (id, node) in &self.nodes {
            if let Some(cpu) = node.cpus.intersection(&node_cpus).first() {
                return Err(format!("cpu {cpu} of node {id} is in another node too"));
            }
            node_cpus = node_cpus.union(&node.cpus);
        }
        let present = self.present.unwrap_or(node_cpus);
        let possible = self.possible.unwrap_or_else(|| present.clone());
        let description = MachineDescription {
            kernel_max: self.kernel_max,
            possible,
            present,
            offline: self.offline,
            no_online_file: self.no_online_file,
            nodes: self.nodes,
            distances: self.distances,
            cgroup_cpus: self.cgroup_cpus,
            cgroup_mems: self.cgroup_mems,
            edits: self.edits,
        };
        description.check()?;
        Ok(description)
    }
}

/// An id list (`0-3,8`), or `-` for none.
fn id_list(word: Option<&str>) -> std::result::Result<CpuSet, String> {
    match word {
        Some("-") => Ok(CpuSet::new()),
        Some(word) => IdSet::parse_list(word, ID_LIMIT).map_err(|e| e.to_string()),
        None => Err("an id list is missing".into()),
    }
}

/// The most memory a description may give its nodes together, in kB: `proc/meminfo`'s
/// total in bytes must fit 64 bits, as the sysfs reader requires of every size.
const MAX_TOTAL_KB: u64 = u64::MAX / 1024;

fn number(word: Option<&str>) -> std::result::Result<u64, String> {
    word.and_then(|w| w.parse().ok()).ok_or_else(|| format!("{word:?} is not a number"))
}

fn node_id(word: Option<&str>) -> std::result::Result<NodeId, String> {
    let id = number(word)?;
    NodeId::try_from(id)
        .ok()
        .filter(|&id| id < ID_LIMIT)
        .ok_or_else(|| format!("node id {id} is beyond {ID_LIMIT}"))
}

fn kernel_max(word: Option<&str>) -> std::result::Result<u32, String> {
    u32::try_from(number(word)?)
        .ok()
        .filter(|&max| max < ID_LIMIT)
        .ok_or_else(|| format!("kernel_max must be below {ID_LIMIT}"))
}

/// A `file` or `remove` statement's path: relative, never climbing (`..`), and naming
/// something below the root, not the root itself (`.`, which `remove` would empty).
fn relative_path(word: Option<&str>) -> std::result::Result<&str, String> {
    use std::path::Component;
    let path = word.ok_or("a path is missing")?;
    let parts: Vec<Component<'_>> = Path::new(path).components().collect();
    if parts.iter().any(|part| !matches!(part, Component::Normal(_) | Component::CurDir)) {
        return Err(format!("{path:?} must be a relative path that stays under the root"));
    }
    if !parts.iter().any(|part| matches!(part, Component::Normal(_))) {
        return Err(format!("{path:?} names the root itself, not a file or folder under it"));
    }
    Ok(path)
}

/// The TEXT of a `file` statement with its escapes (`\n`, `\0`, `\t`, `\\`) replaced.
fn unescape(text: &str) -> std::result::Result<String, String> {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('0') => out.push('\0'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            other => {
                return Err(format!(
                    "unknown escape \\{} in {text:?}",
                    other.map_or(String::new(), String::from)
                ))
            }
        }
    }
    Ok(out)
}

/// The kernel's hex mask form padded to `bits` bits: 8-digit words, most significant first.
fn padded_mask(set: &CpuSet, bits: u32) -> String {
    let words = bits.div_ceil(32).max(1);
    let mut out = String::new();
    for word in (0..words).rev() {
        let value = (0..32).filter(|bit| set.contains(word * 32 + bit)).fold(0u32, |acc, bit| acc | 1 << bit);
        let _ = write!(out, "{}{value:08x}", if out.is_empty() { "" } else { "," });
    }
    out
}

/// `nodeN/meminfo` as the kernel's `node_read_meminfo` starts it.
fn node_meminfo(node: NodeId, mem_kb: u64) -> String {
    let free = mem_kb / 2;
    format!(
        "Node {node} MemTotal:       {mem_kb} kB\nNode {node} MemFree:        {free} kB\nNode {node} MemUsed:        {} kB\n",
        mem_kb - free
    )
}

/// `proc/meminfo` with the fields procfs-core requires.
fn proc_meminfo(total_kb: u64) -> String {
    let free = total_kb / 2;
    let mut text =
        format!("MemTotal:       {total_kb} kB\nMemFree:        {free} kB\nMemAvailable:   {free} kB\n");
    for field in [
        "Buffers",
        "Cached",
        "SwapCached",
        "Active",
        "Inactive",
        "SwapTotal",
        "SwapFree",
        "Dirty",
        "Writeback",
        "Mapped",
        "Slab",
        "Committed_AS",
        "VmallocTotal",
        "VmallocUsed",
        "VmallocChunk",
    ] {
        let _ = writeln!(text, "{:<16}0 kB", format!("{field}:"));
    }
    text
}

#[cfg(test)]
mod tests;
