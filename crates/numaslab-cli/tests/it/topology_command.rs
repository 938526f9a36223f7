//! `numaslab topology` on this machine, on each own fixture, on a fake, and on every
//! hwloc capture, in text and JSON, checked against the backend read in-process.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use topology::{FakeTopology, FixtureTopology, SysfsTopology, Topology};

fn numaslab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_numaslab")).args(args).output().expect("the binary runs")
}

fn success(args: &[&str]) -> String {
    let output = numaslab(args);
    assert!(
        output.status.success(),
        "numaslab {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs text and JSON forms and checks both against `expected`.
fn check(args: &[&str], expected: &dyn Topology) {
    let text = success(args);
    check_text(&text, expected);
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let json: Value = serde_json::from_str(&success(&json_args)).expect("valid JSON");
    check_json(&json, expected);
}

fn check_text(text: &str, expected: &dyn Topology) {
    let online_nodes = expected.online_nodes();
    assert!(text.contains(&format!("available: {} nodes ({online_nodes})", online_nodes.len())), "{text}");
    for node in &expected.possible_nodes() {
        let cpus: Vec<String> = expected.node_cpus(node).iter().map(|c| c.to_string()).collect();
        let state = if online_nodes.contains(node) { "" } else { " (offline)" };
        assert!(
            text.contains(&format!("node {node}{state} cpus: {}\n", cpus.join(" "))),
            "node {node}: {text}"
        );
        if let Some(kb) = expected.node_mem_total_kb(node) {
            assert!(text.contains(&format!("node {node}{state} size: {} MB\n", kb / 1024)), "{text}");
        }
    }
    assert!(text.contains("node distances:\n"), "{text}");
    assert!(text.contains(&format!("possible cpus: {}\n", expected.possible_cpus())), "{text}");
    assert!(text.contains(&format!("online cpus: {}\n", expected.online_cpus().unwrap())), "{text}");
    assert!(text.contains("offline cpus: "), "{text}");
    assert!(text.contains("allowed cpus: "), "{text}");
    let mems = expected.allowed_memory_nodes();
    let mems_text = if mems.is_empty() { "(none)".to_owned() } else { mems.to_string() };
    assert!(text.contains(&format!("allowed memory nodes: {mems_text}\n")), "{text}");
    let diagnostics = expected.diagnostics();
    if diagnostics.is_empty() {
        assert!(text.contains("diagnostics: (none)\n"), "{text}");
    }
    for diagnostic in &diagnostics {
        assert!(text.contains(&format!("  {diagnostic}\n")), "{text}");
    }
}

fn check_json(json: &Value, expected: &dyn Topology) {
    assert_eq!(json["possible_cpus"], expected.possible_cpus().to_string());
    assert_eq!(json["present_cpus"], expected.present_cpus().to_string());
    assert_eq!(json["online_cpus"], expected.online_cpus().unwrap().to_string());
    assert_eq!(json["online_nodes"], expected.online_nodes().to_string());
    let nodes = json["nodes"].as_object().expect("nodes is an object");
    let possible_nodes: Vec<u32> = expected.possible_nodes().iter().collect();
    assert_eq!(nodes.len(), possible_nodes.len());
    for &node in &possible_nodes {
        let entry = &nodes[&node.to_string()];
        assert_eq!(entry["cpus"], expected.node_cpus(node).to_string(), "node {node}");
        assert_eq!(entry["mem_total_kb"].as_u64(), expected.node_mem_total_kb(node), "node {node}");
        let row: Vec<Option<u32>> = possible_nodes.iter().map(|&to| expected.distance(node, to)).collect();
        let printed: Vec<Option<u32>> =
            entry["distance"].as_array().unwrap().iter().map(|d| d.as_u64().map(|d| d as u32)).collect();
        assert_eq!(printed, row, "node {node} distances");
    }
    let ids = |key: &str| -> Vec<u32> {
        json[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} is an array"))
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect()
    };
    assert_eq!(ids("cpuless_nodes"), expected.cpuless_nodes().iter().collect::<Vec<_>>());
    assert_eq!(ids("memoryless_nodes"), expected.memoryless_nodes().iter().collect::<Vec<_>>());
    let allowed: topology::CpuSet = json["allowed_cpus"].as_str().unwrap().parse().unwrap();
    assert!(allowed.is_subset(&expected.online_cpus().unwrap()));
    assert_eq!(json["allowed_memory_nodes"], expected.allowed_memory_nodes().to_string());
    let diagnostics = json["diagnostics"].as_array().expect("diagnostics is an array");
    assert_eq!(diagnostics.len(), expected.diagnostics().len());
    for (printed, diagnostic) in diagnostics.iter().zip(expected.diagnostics()) {
        assert_eq!(printed["quirk"], diagnostic.quirk.as_str());
        assert_eq!(printed["path"], diagnostic.path.to_str().unwrap());
        assert_eq!(printed["text"], diagnostic.text);
        assert_eq!(printed["reading"], diagnostic.reading);
    }
}

#[test]
fn this_machine() {
    let live = SysfsTopology::detect().unwrap();
    check(&["topology"], &live);
    check(&["topology", "--root", "/"], &live);
}

#[test]
fn each_own_fixture_by_name_and_by_path() {
    for name in
        ["seed-box", "memoryless-node", "cpuless-node", "large-sparse", "restricted-mems", "this-machine"]
    {
        let expected = FixtureTopology::load(name).unwrap();
        check(&["topology", "--fixture", name], &expected);
        let path = workspace().join("fixtures").join(name);
        check(&["topology", "--fixture", path.to_str().unwrap()], &expected);
        // --root reads the committed tree directly, without copying it.
        check(&["topology", "--root", path.to_str().unwrap()], &SysfsTopology::new(&path).unwrap());
    }
}

#[test]
fn quirk_fixtures_print_their_diagnostics_and_strict_refuses_them() {
    for name in [
        "quirk-empty-online",
        "quirk-empty-cpuset",
        "quirk-no-meminfo",
        "quirk-buggy-numa",
        "quirk-zero-distance",
        "quirk-cpu-in-two-nodes",
    ] {
        let path = workspace().join("fixtures").join(name);
        let expected = SysfsTopology::new(&path).unwrap();
        assert_eq!(expected.diagnostics().len(), 1, "{name}");
        check(&["topology", "--root", path.to_str().unwrap()], &expected);
        let output = numaslab(&["topology", "--strict", "--root", path.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(1), "{name}: --strict refuses");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let diagnostic = &expected.diagnostics()[0];
        assert!(stderr.contains(&diagnostic.to_string()), "{name}: {stderr}");
        assert!(output.stdout.is_empty(), "{name}: nothing printed on refusal");
    }
    // A machine without quirks passes --strict.
    let text = success(&["topology", "--strict", "--fixture", "seed-box"]);
    assert!(text.contains("diagnostics: (none)\n"), "{text}");
}

#[test]
fn restricted_memory_nodes_are_shown() {
    let text = success(&["topology", "--fixture", "restricted-mems"]);
    assert!(text.contains("allowed memory nodes: 0,2\n"), "{text}");
    let json: Value =
        serde_json::from_str(&success(&["topology", "--fixture", "restricted-mems", "--json"])).unwrap();
    assert_eq!(json["allowed_memory_nodes"], "0,2");
}

#[test]
fn seed_box_text_looks_like_numactl() {
    let text = success(&["topology", "--fixture", "seed-box"]);
    assert!(text.contains("available: 2 nodes (0-1)\n"), "{text}");
    assert!(text.contains("node 0 cpus: 0 1\nnode 0 size: 4096 MB\n"), "{text}");
    assert!(text.contains("node 1 cpus: 2 3\nnode 1 size: 4096 MB\n"), "{text}");
    assert!(text.contains("node distances:\nnode   0   1\n  0:  10  21\n  1:  21  10\n"), "{text}");
    assert!(text.contains("offline cpus: (none)\n"), "{text}");
}

#[test]
fn a_fake_machine() {
    check(&["topology", "--fake", "8x2"], &FakeTopology::from_spec("8x2").unwrap());
}

#[test]
fn every_hwloc_capture() {
    let dir = std::env::var_os("NUMASLAB_HWLOC_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/fixtures/hwloc"));
    if !dir.is_dir() {
        eprintln!("skipped: no hwloc captures at {} (set NUMASLAB_HWLOC_FIXTURES)", dir.display());
        return;
    }
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let root = entry.unwrap().path().join("fsroot");
        if !root.is_dir() {
            continue;
        }
        check(&["topology", "--root", root.to_str().unwrap()], &SysfsTopology::new(&root).unwrap());
        count += 1;
    }
    assert!(count >= 10, "expected ten captures in {}", dir.display());
}

#[test]
fn bad_arguments_and_bad_roots_are_clear_errors() {
    let missing = Path::new("/nonexistent/numaslab-root");
    let output = numaslab(&["topology", "--root", missing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/numaslab-root") && stderr.contains("not a sysfs tree"), "{stderr}");

    let output = numaslab(&["topology", "--fixture", "no-such-fixture"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no-such-fixture"));

    let output = numaslab(&["topology", "--fake", "4x2", "--fixture", "seed-box"]);
    assert_eq!(output.status.code(), Some(2), "clap refuses conflicting backends");
    let output = numaslab(&["topology", "--fake", "3x2"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("3x2"));
}
