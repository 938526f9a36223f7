//! Every shared hwloc capture read by numaslab and by hwloc itself
//! (`lstopo-no-graphics --input ROOT --of xml --disallowed`), node by node: the online
//! nodes, each node's CPUs and memory, and the allowed CPUs and memory nodes. Where the
//! two readings differ the difference is one of those argued in `docs/topology.md`
//! ("numaslab and hwloc"), and the expected hwloc value is computed from numaslab's by
//! that documented rule, not compared loosely.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use topology::{CpuSet, IdSet, NodeId, NodeSet, SysfsTopology, Topology, ID_LIMIT};

use crate::hwloc_captures;

/// What hwloc says of one capture.
#[derive(Debug)]
struct HwlocReading {
    /// The machine object's `allowed_cpuset` and `allowed_nodeset`.
    allowed_cpus: CpuSet,
    allowed_nodes: NodeSet,
    /// Each NUMA node's `cpuset` and `local_memory` (bytes; absent for none).
    nodes: BTreeMap<NodeId, (CpuSet, Option<u64>)>,
}

/// The `key="value"` attributes of one XML tag.
fn attributes(tag: &str) -> BTreeMap<&str, &str> {
    let mut out = BTreeMap::new();
    let mut rest = tag;
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].rsplit(' ').next().unwrap();
        let value_start = eq + 2;
        let value_end = value_start + rest[value_start..].find('"').unwrap();
        out.insert(key, &rest[value_start..value_end]);
        rest = &rest[value_end + 1..];
    }
    out
}

/// An hwloc bitmap (`0x0000f06f`, `0x00000003,0x0`; an empty word is zero) as a set.
fn hwloc_set(text: &str) -> IdSet {
    let words: Vec<&str> = text.split(',').map(|w| w.strip_prefix("0x").unwrap_or(w)).collect();
    let mask: Vec<&str> = words.iter().map(|w| if w.is_empty() { "0" } else { w }).collect();
    IdSet::parse_mask(&mask.join(","), ID_LIMIT).unwrap_or_else(|e| panic!("hwloc bitmap {text:?}: {e}"))
}

/// Whether hwloc also shows what the process may not use (`--disallowed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disallowed {
    Shown,
    Hidden,
}

fn lstopo(root: &Path, disallowed: Disallowed) -> HwlocReading {
    let mut command = Command::new("lstopo-no-graphics");
    command.arg("--input").arg(root).args(["--of", "xml"]);
    if disallowed == Disallowed::Shown {
        command.arg("--disallowed");
    }
    let output = command.output().expect("lstopo-no-graphics runs");
    assert!(
        output.status.success(),
        "lstopo {}: {}",
        root.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let xml = String::from_utf8(output.stdout).unwrap();
    let mut machine = None;
    let mut nodes = BTreeMap::new();
    for line in xml.lines().map(str::trim).filter(|l| l.starts_with("<object ")) {
        let attrs = attributes(line);
        match attrs["type"] {
            "Machine" if machine.is_none() => {
                machine = Some((hwloc_set(attrs["allowed_cpuset"]), hwloc_set(attrs["allowed_nodeset"])))
            }
            "NUMANode" => {
                let id: NodeId = attrs["os_index"].parse().unwrap();
                let memory = attrs.get("local_memory").map(|m| m.parse().unwrap());
                nodes.insert(id, (hwloc_set(attrs["cpuset"]), memory));
            }
            _ => {}
        }
    }
    let (allowed_cpus, allowed_nodes) = machine.expect("a Machine object");
    HwlocReading { allowed_cpus, allowed_nodes, nodes }
}

/// The nodes named in `nodeN/accessA/initiators` (entries `nodeM`), if the folder exists.
fn initiators(root: &Path, node: NodeId, access: u32) -> Option<NodeSet> {
    let folder = root.join(format!("sys/devices/system/node/node{node}/access{access}/initiators"));
    let entries = std::fs::read_dir(folder).ok()?;
    Some(
        entries
            .filter_map(|e| e.unwrap().file_name().to_str()?.strip_prefix("node")?.parse().ok())
            .filter(|&m| m != node)
            .collect(),
    )
}

/// The CPUs hwloc gives a node: its online CPUs (hwloc has no offline CPU in a node, and
/// none that lacks a folder); for a node without CPUs, its locality: the online CPUs of
/// the nodes its `access0/initiators` name (`access1`, the CPU initiators, on a machine
/// with generic initiators), else of the other nodes at the strictly smallest distance
/// (none when every other node is as far, or when a node is no farther than itself).
fn hwloc_cpus(topo: &SysfsTopology, root: &Path, node: NodeId) -> CpuSet {
    let online = topo.online_cpus().unwrap();
    let own = |n: NodeId| topo.node_cpus(n).intersection(&online);
    if !topo.node_cpus(node).is_empty() {
        return own(node);
    }
    let generic = std::fs::read_to_string(root.join("sys/devices/system/node/has_generic_initiator"))
        .map(|text| !text.trim_matches(|c: char| c.is_whitespace() || c == '\0').is_empty())
        .unwrap_or(false);
    if let Some(near) = initiators(root, node, if generic { 1 } else { 0 }) {
        return near.iter().fold(CpuSet::new(), |acc, n| acc.union(&own(n)));
    }
    let others: Vec<NodeId> = topo.online_nodes().iter().filter(|&n| n != node).collect();
    let distance = |to: NodeId| topo.distance(node, to).unwrap();
    let Some(min) = others.iter().map(|&n| distance(n)).min() else { return CpuSet::new() };
    let nearest: Vec<NodeId> = others.iter().copied().filter(|&n| distance(n) == min).collect();
    if min <= distance(node) || nearest.len() == others.len() {
        return CpuSet::new();
    }
    nearest.iter().fold(CpuSet::new(), |acc, &n| acc.union(&own(n)))
}

#[test]
fn every_capture_agrees_with_hwloc_or_differs_as_documented() {
    let Some(dir) = hwloc_captures() else { return };
    match Command::new("lstopo-no-graphics").arg("--version").output() {
        Ok(output) if output.status.success() => {
            eprintln!("comparing with {}", String::from_utf8_lossy(&output.stdout).trim())
        }
        _ => {
            eprintln!(
                "skipped: lstopo-no-graphics is not installed (Debian package hwloc; .ci/run installs it)"
            );
            return;
        }
    }
    let mut captures: Vec<_> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path().join("fsroot")).collect();
    captures.retain(|root| root.is_dir());
    captures.sort();
    assert!(captures.len() >= 10, "expected the ten captures in {}", dir.display());
    for root in &captures {
        let name = root.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
        let topo = SysfsTopology::new(root).unwrap_or_else(|e| panic!("{name}: {e}"));
        let hwloc = lstopo(root, Disallowed::Shown);
        let nodes: NodeSet = hwloc.nodes.keys().copied().collect();
        assert_eq!(nodes, topo.online_nodes(), "{name}: hwloc shows the online nodes");
        for (&node, (cpus, memory)) in &hwloc.nodes {
            assert_eq!(*cpus, hwloc_cpus(&topo, root, node), "{name}: node {node} cpus");
            let kb = topo.node_mem_total_kb(node).unwrap_or_else(|| panic!("{name}: node {node} memory"));
            assert_eq!(memory.unwrap_or(0), kb * 1024, "{name}: node {node} MemTotal vs local_memory");
        }
        assert_eq!(hwloc.allowed_cpus, topo.allowed_cpus(), "{name}: allowed cpus");
        // hwloc's allowed nodes are numaslab's allowed memory nodes plus, where no cpuset
        // restricts them, the nodes without memory (which no allocation can use).
        let mut allowed = topo.allowed_memory_nodes();
        if topo.memory_restriction().is_none() {
            allowed = allowed.union(&topo.memoryless_nodes());
        }
        assert_eq!(hwloc.allowed_nodes, allowed, "{name}: allowed nodes");
        // hwloc's plain reading hides the rest: it shows exactly those nodes.
        let plain = lstopo(root, Disallowed::Hidden);
        assert_eq!(
            plain.nodes.keys().copied().collect::<NodeSet>(),
            allowed,
            "{name}: nodes shown by default"
        );
    }
}

#[test]
fn hwloc_bitmaps_parse() {
    assert_eq!(hwloc_set("0x0000f06f").to_string(), "0-3,5-6,12-15");
    assert_eq!(hwloc_set("0x00000001,0x0").to_string(), "32");
    assert_eq!(hwloc_set("0x00000001,,0x00000002").to_string(), "1,64");
    let tag = r#"<object type="NUMANode" os_index="3" cpuset="0x0" local_memory="42">"#;
    let attrs = attributes(tag);
    assert_eq!((attrs["type"], attrs["os_index"], attrs["local_memory"]), ("NUMANode", "3", "42"));
}

/// numaslab reads no `accessN/initiators`: `docs/topology.md` argues that the distance
/// matrix is enough, because the allocator only asks "which memory node serves this
/// CPU's node". On the one capture with initiators, the memory node the distances pick
/// for each node with CPUs is one whose CPU initiators (`access1`) name that node.
#[test]
fn the_distances_pick_the_memory_node_the_initiators_name() {
    let Some(dir) = hwloc_captures() else { return };
    let root = dir.join("fakememinitiators-1np2c+1npp+gi/fsroot");
    let topo = SysfsTopology::new(&root).unwrap();
    let with_cpus: Vec<NodeId> =
        topo.online_nodes().iter().filter(|&n| !topo.node_cpus(n).is_empty()).collect();
    assert_eq!(with_cpus, [0, 1, 2, 3], "the capture's cpu nodes, all without memory");
    for node in with_cpus {
        assert!(!topo.has_memory(node));
        let memory = topo.nearest_memory_node(node).unwrap();
        let near =
            initiators(&root, memory, 1).unwrap_or_else(|| panic!("node{memory} has access1/initiators"));
        assert!(near.contains(node), "node {node} -> node {memory}, whose cpu initiators are {near}");
    }
}
