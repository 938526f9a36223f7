//! The six quirks that real machines' files hold (found in hwloc's captures), each in a
//! fixture of its own (`fixtures/quirk-*.machine`): read leniently by its documented
//! interpretation with a diagnostic naming the file and its text, refused when strict.

use std::path::Path;

use topology::{Diagnostic, Error, FixtureTopology, Quirk, Reading, SysfsTopology, Topology};

use crate::workspace;

/// Loads `fixtures/NAME/` leniently, checks that it has exactly one diagnostic, of
/// `quirk`, for the file at `file` (relative to the root) quoting `text`, and that a
/// strict reading refuses the same tree with that diagnostic. Returns the topology.
fn lenient_and_strict(name: &str, quirk: Quirk, file: &str, text: &str) -> FixtureTopology {
    let topo = FixtureTopology::load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let diagnostics = topo.diagnostics();
    assert_eq!(diagnostics.len(), 1, "{name}: {diagnostics:?}");
    check_diagnostic(&diagnostics[0], topo.copy_root(), quirk, file, text);

    let tree = workspace().join("fixtures").join(name);
    match SysfsTopology::with_reading(&tree, Reading::Strict) {
        Err(error @ Error::Strict(_)) => {
            let Error::Strict(diagnostic) = &error else { unreachable!() };
            check_diagnostic(diagnostic, &tree, quirk, file, text);
            assert!(error.to_string().contains(&tree.join(file).display().to_string()), "{error}");
        }
        other => panic!("{name}: expected a strict refusal, got {other:?}"),
    }
    topo
}

fn check_diagnostic(diagnostic: &Diagnostic, root: &Path, quirk: Quirk, file: &str, text: &str) {
    assert_eq!(diagnostic.quirk, quirk, "{diagnostic}");
    assert_eq!(diagnostic.path, root.join(file), "{diagnostic}");
    assert_eq!(diagnostic.text, text, "{diagnostic}");
    assert!(!diagnostic.reading.is_empty());
}

#[test]
fn an_empty_online_file_reads_as_absent() {
    let topo = lenient_and_strict(
        "quirk-empty-online",
        Quirk::EmptyOnlineFlag,
        "sys/devices/system/cpu/cpu0/online",
        "",
    );
    assert_eq!(topo.online_cpus().unwrap().to_string(), "0-3", "cpu/online names cpu0");
}

#[test]
fn an_empty_cpuset_path_falls_back_to_the_cgroup_file() {
    let topo = lenient_and_strict("quirk-empty-cpuset", Quirk::EmptyCpusetPath, "proc/self/cpuset", "");
    assert_eq!(topo.allowed_cpus().to_string(), "0-2", "from proc/self/cgroup's 0::/ and cgroup v2");
    let (path, _) = topo.sysfs().cgroup_restriction().unwrap();
    assert!(path.ends_with("sys/fs/cgroup/cpuset.cpus.effective"), "{}", path.display());
}

#[test]
fn no_meminfo_without_numa_leaves_the_memory_unknown() {
    let topo = lenient_and_strict("quirk-no-meminfo", Quirk::NoMeminfo, "proc/meminfo", "");
    assert_eq!(topo.possible_nodes().to_string(), "0");
    assert_eq!(topo.node_cpus(0).to_string(), "0-3");
    assert_eq!(topo.node_mem_total_kb(0), None, "unknown, not zero");
}

#[test]
fn all_cpus_in_every_node_reads_as_one_node() {
    let topo = lenient_and_strict(
        "quirk-buggy-numa",
        Quirk::AllCpusInEveryNode,
        "sys/devices/system/node/node1/cpulist",
        "0-7",
    );
    assert_eq!(topo.possible_nodes().to_string(), "0");
    assert_eq!(topo.online_nodes().to_string(), "0");
    assert_eq!(topo.node_cpus(0).to_string(), "0-7");
    assert_eq!(topo.node_mem_total_kb(0), Some(8 * 2097152), "proc/meminfo's MemTotal");
    assert_eq!(topo.cpu_node(7), Some(0));
    assert_eq!(topo.distance(0, 0), Some(10));
    assert_eq!(topo.distance(0, 1), None, "node 1 is not read");
}

#[test]
fn a_zero_distance_row_is_ignored() {
    let topo = lenient_and_strict(
        "quirk-zero-distance",
        Quirk::ZeroDistance,
        "sys/devices/system/node/node1/distance",
        "0\n",
    );
    assert_eq!(topo.distance(1, 0), Some(21), "from node 0's row");
    assert_eq!(topo.distance(1, 1), Some(10));
    assert_eq!(topo.possible_nodes().to_string(), "0-1");
}

#[test]
fn a_cpu_in_two_nodes_goes_to_the_smaller_list() {
    let topo = lenient_and_strict(
        "quirk-cpu-in-two-nodes",
        Quirk::CpuInTwoNodes,
        "sys/devices/system/node/node2/cpulist",
        "0-3",
    );
    assert_eq!(topo.node_cpus(0).to_string(), "0-1");
    assert_eq!(topo.node_cpus(1).to_string(), "2-3");
    assert!(topo.node_cpus(2).is_empty());
    assert_eq!(topo.cpu_node(3), Some(1));
    assert_eq!(topo.cpuless_nodes().to_string(), "2");
    assert!(topo.diagnostics()[0].reading.contains("node2 keeps no cpu"), "{}", topo.diagnostics()[0]);
}

#[test]
fn a_memory_restriction_naming_no_memory_node_reads_as_none() {
    // Built on the restricted-mems fixture, whose cgroup allows nodes 0 and 2: a cpuset
    // naming only node 7, which the machine does not have, cannot be obeyed.
    let topo = FixtureTopology::load("restricted-mems").unwrap();
    let file = topo.copy_root().join("sys/fs/cgroup/cpuset.mems.effective");
    std::fs::write(&file, "7\n").unwrap();
    let reread = SysfsTopology::new(topo.copy_root()).unwrap();
    assert_eq!(reread.allowed_memory_nodes().to_string(), "0-2");
    let diagnostics = reread.diagnostics();
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    check_diagnostic(
        &diagnostics[0],
        topo.copy_root(),
        Quirk::NoAllowedMemoryNode,
        "sys/fs/cgroup/cpuset.mems.effective",
        "7",
    );
    let strict = SysfsTopology::with_reading(topo.copy_root(), Reading::Strict);
    assert!(matches!(&strict, Err(Error::Strict(d)) if d.quirk == Quirk::NoAllowedMemoryNode), "{strict:?}");
}

#[test]
fn machines_without_quirks_have_no_diagnostics() {
    for name in
        ["seed-box", "cpuless-node", "memoryless-node", "large-sparse", "restricted-mems", "this-machine"]
    {
        let topo = FixtureTopology::load(name).unwrap();
        assert_eq!(topo.diagnostics(), Vec::new(), "{name}");
        let tree = workspace().join("fixtures").join(name);
        if tree.is_dir() {
            SysfsTopology::with_reading(&tree, Reading::Strict).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
