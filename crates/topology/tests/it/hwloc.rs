//! Every hwloc capture read by the sysfs backend, compared with the raw facts of its
//! `expected.json`, and with the backend's documented interpretation where they differ.

use std::path::Path;

use serde_json::Value;
use topology::{CpuSet, IdSet, NodeSet, SysfsTopology, Topology, ID_LIMIT};

use crate::hwloc_captures;

fn set(value: &Value) -> CpuSet {
    IdSet::parse_list(value.as_str().expect("a list string"), ID_LIMIT).expect("a valid list")
}

fn id_array(value: &Value) -> NodeSet {
    value.as_array().expect("an array").iter().map(|v| v.as_u64().expect("an id") as u32).collect()
}

/// The allowed CPUs that the README says each capture's cgroup restricts to (all online
/// CPUs where it says nothing).
fn documented_allowed(name: &str) -> Option<&'static str> {
    match name {
        // cgroup v1 cpuset 0-6,12-15, and cpu4 is offline.
        "16amd64-8n2c-cpusets" => Some("0-3,5-6,12-15"),
        // cgroup v2 job step restricted to 0-5.
        "32amd64-4s2n4c-cgroup2" => Some("0-5"),
        _ => None,
    }
}

/// The allowed memory nodes that the README says each capture's cpuset restricts to (all
/// memory nodes where it says nothing).
fn documented_allowed_mems(name: &str) -> Option<&'static str> {
    match name {
        // cgroup v1 cpuset mems 1-4.
        "16amd64-8n2c-cpusets" => Some("1-4"),
        // cgroup v2 cpuset.mems.effective 0-5.
        "32amd64-4s2n4c-cgroup2" => Some("0-5"),
        _ => None,
    }
}

#[test]
fn every_capture_agrees_with_its_expected_json() {
    let Some(dir) = hwloc_captures() else { return };
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for capture in entries.iter().filter(|p| p.join("expected.json").is_file()) {
        check_capture(capture);
        checked += 1;
    }
    assert!(checked >= 10, "expected the ten captures in {}, found {checked}", dir.display());
}

fn check_capture(capture: &Path) {
    let name = capture.file_name().unwrap().to_string_lossy().into_owned();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(capture.join("expected.json")).unwrap()).unwrap();
    let topo = SysfsTopology::new(capture.join("fsroot")).unwrap_or_else(|e| panic!("{name}: {e}"));
    let context = |what: &str| format!("{name}: {what}");

    // CPUs.
    let folders = set(&expected["cpu_dirs"]);
    let summary = &expected["cpu_summary_files"];
    let online = topo.online_cpus().unwrap();
    assert_eq!(online, set(&expected["online_cpus"]), "{}", context("online cpus"));
    let node_listed: CpuSet = expected["nodes"]
        .as_object()
        .unwrap()
        .values()
        .fold(CpuSet::new(), |acc, node| acc.union(&set(&node["cpus"])));
    match &summary["possible"] {
        Value::Null => {
            // Documented: without cpu/possible, every cpu the tree names is possible.
            assert_eq!(topo.possible_cpus(), folders.union(&node_listed), "{}", context("derived possible"));
        }
        possible => assert_eq!(topo.possible_cpus(), set(possible), "{}", context("possible")),
    }
    match &summary["present"] {
        Value::Null => assert_eq!(topo.present_cpus(), folders, "{}", context("present from folders")),
        present => assert_eq!(topo.present_cpus(), set(present), "{}", context("present")),
    }
    if let Value::String(_) = &summary["online"] {
        assert_eq!(online, set(&summary["online"]), "{}", context("online summary"));
    }
    if let Value::String(_) = &summary["offline"] {
        // The backend has no "offline" fact of its own: offline = possible - online. Every
        // cpu the file calls offline is that; the file may say less (POWER9's is empty
        // though possible is wider than online).
        let offline = topo.possible_cpus().difference(&online);
        assert!(set(&summary["offline"]).is_subset(&offline), "{}", context("offline summary"));
    }
    let zero = set(&expected["cpus_with_online_0"]);
    assert!(zero.intersection(&online).is_empty(), "{}", context("cpus whose online file says 0"));
    assert!(folders.is_subset(&topo.possible_cpus()), "{}", context("folders are possible"));

    // Nodes.
    let node_summary = &expected["node_summary_files"];
    let nodes = expected["nodes"].as_object().unwrap();
    let described: NodeSet = nodes.keys().map(|k| k.parse::<u32>().unwrap()).collect();
    if expected["numa_dir_present"] == Value::Bool(false) {
        assert_eq!(topo.possible_nodes().to_string(), "0", "{}", context("non-NUMA node 0"));
    }
    match &node_summary["possible"] {
        Value::Null => {
            assert_eq!(topo.possible_nodes(), described, "{}", context("possible nodes from folders"))
        }
        possible => assert_eq!(topo.possible_nodes(), set(possible), "{}", context("possible nodes")),
    }
    match &node_summary["online"] {
        Value::Null => assert_eq!(topo.online_nodes(), described, "{}", context("online nodes from folders")),
        online => assert_eq!(topo.online_nodes(), set(online), "{}", context("online nodes")),
    }
    for (id, node) in nodes {
        let id: u32 = id.parse().unwrap();
        let cpus = set(&node["cpus"]);
        assert_eq!(topo.node_cpus(id), cpus, "{}", context(&format!("node {id} cpus")));
        for cpu in &cpus {
            // Documented: a node list wins, also for cpus without a folder.
            assert_eq!(topo.cpu_node(cpu), Some(id), "{}", context(&format!("cpu {cpu} node")));
        }
        assert_eq!(
            topo.node_mem_total_kb(id),
            node["mem_total_kb"].as_u64(),
            "{}",
            context(&format!("node {id} MemTotal"))
        );
        let row: Vec<u32> =
            node["distance"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as u32).collect();
        // Documented: a row lists the online nodes, else (a stale capture) the possible ones.
        let columns =
            if row.len() == topo.online_nodes().len() { topo.online_nodes() } else { topo.possible_nodes() };
        assert_eq!(row.len(), columns.len(), "{}", context(&format!("node {id} distance row length")));
        for (to, &distance) in columns.iter().zip(&row) {
            assert_eq!(topo.distance(id, to), Some(distance), "{}", context(&format!("distance {id}->{to}")));
        }
    }
    let cpuless = id_array(&expected["cpuless_nodes"]);
    let memoryless = id_array(&expected["memoryless_nodes"]);
    assert_eq!(topo.cpuless_nodes().intersection(&described), cpuless, "{}", context("cpu-less nodes"));
    assert_eq!(
        topo.memoryless_nodes().intersection(&described),
        memoryless,
        "{}",
        context("memory-less nodes")
    );

    // Every possible cpu of a described node list has its node; allowed is within online.
    let allowed = topo.allowed_cpus();
    assert!(allowed.is_subset(&online), "{}", context("allowed within online"));
    let want = documented_allowed(&name).map_or_else(|| online.clone(), |list| list.parse().unwrap());
    assert_eq!(allowed, want, "{}", context("allowed cpus"));
    let memory = topo.memory_nodes();
    let want = documented_allowed_mems(&name).map_or_else(|| memory.clone(), |list| list.parse().unwrap());
    assert_eq!(topo.allowed_memory_nodes(), want, "{}", context("allowed memory nodes"));
    assert_eq!(topo.diagnostics(), Vec::new(), "{}", context("no quirk in the shared captures"));
    assert!(!topo.is_live());
}

#[test]
fn interpretations_the_readme_calls_out() {
    let Some(dir) = hwloc_captures() else { return };
    // POWER9: node 0 lists cpus 0-87 though only 0-15 have folders; they are possible but
    // not present, and keep their node.
    let nvidia = SysfsTopology::new(dir.join("nvidiagpunumanodes/fsroot")).unwrap();
    assert_eq!(nvidia.present_cpus().to_string(), "0-15,88-103");
    assert_eq!(nvidia.cpu_node(50), Some(0));
    assert_eq!(nvidia.nearest_memory_node(250), Some(250));
    // Offline node 0: its CPUs are known from the cpuN/node0 links, it has no memory
    // figure, and its distance to node 1 comes from node 1's row.
    let offline = SysfsTopology::new(dir.join("offline-cpu0-node0/fsroot")).unwrap();
    assert_eq!(offline.cpu_node(0), Some(0));
    assert_eq!(offline.cpu_node(4), Some(0));
    assert_eq!(offline.node_cpus(0).to_string(), "0,2,4,6,8,10,12,14,16,18,20,22");
    assert_eq!(offline.node_mem_total_kb(0), None);
    assert_eq!(offline.distance(0, 1), Some(21));
    // ia64 without summary files: possible from the folders, online from the folders.
    let ia64 = SysfsTopology::new(dir.join("256ia64-64n2s2c/fsroot")).unwrap();
    assert_eq!(ia64.possible_cpus().to_string(), "0-255");
    assert_eq!(ia64.possible_nodes().len(), 64);
    // The restriction names the file it came from.
    let cgroup2 = SysfsTopology::new(dir.join("32amd64-4s2n4c-cgroup2/fsroot")).unwrap();
    let (path, cpus) = cgroup2.cgroup_restriction().unwrap();
    assert!(
        path.ends_with("cgroup/unified/uid_2008/job_15389/step_0/cpuset.cpus.effective"),
        "{}",
        path.display()
    );
    assert_eq!(cpus.to_string(), "0-5");
    let (path, nodes) = cgroup2.memory_restriction().unwrap();
    assert!(path.ends_with("step_0/cpuset.mems.effective"), "{}", path.display());
    assert_eq!(nodes.to_string(), "0-5");
    let cpusets = SysfsTopology::new(dir.join("16amd64-8n2c-cpusets/fsroot")).unwrap();
    let (path, nodes) = cpusets.memory_restriction().unwrap();
    assert!(path.ends_with("dev/cpuset/dummy/mems"), "{}", path.display());
    assert_eq!(nodes.to_string(), "1-4");
}
