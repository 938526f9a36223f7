use super::*;

#[test]
fn builtin_descriptions_parse_and_the_seed_box_is_as_the_seed_says() {
    for (name, text) in BUILTIN {
        MachineDescription::parse(name, text).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let seed = MachineDescription::builtin("seed-box").unwrap().unwrap();
    assert_eq!(seed.nodes[&0].cpus.to_string(), "0-1");
    assert_eq!(seed.nodes[&1].cpus.to_string(), "2-3");
    assert_eq!(seed.distance(0, 1), 21);
    assert_eq!(seed.distance(1, 1), LOCAL_DISTANCE);
}

#[test]
fn mistakes_name_the_line() {
    let error =
        MachineDescription::parse("bad", "node 0 cpus 0-1 mem_kb 1\nnode 1 cpus 1-2 mem_kb x\n").unwrap_err();
    assert!(error.to_string().contains("line 2"), "{error}");
    let error =
        MachineDescription::parse("bad", "node 0 cpus 0-1 mem_kb 1\nnode 1 cpus 1-2 mem_kb 1\n").unwrap_err();
    assert!(error.to_string().contains("cpu 1 of node 1 is in another node"), "{error}");
    let error = MachineDescription::parse("bad", "frobnicate 3\n").unwrap_err();
    assert!(error.to_string().contains("unknown statement"), "{error}");
    let error = MachineDescription::parse("bad", "kernel_max 3\nnode 0 cpus 0-7 mem_kb 1\n").unwrap_err();
    assert!(error.to_string().contains("beyond kernel_max"), "{error}");
}

#[test]
fn padded_masks_have_one_word_per_32_possible_cpus() {
    let set: CpuSet = [0, 33].into_iter().collect();
    assert_eq!(padded_mask(&set, 64), "00000002,00000001");
    assert_eq!(padded_mask(&CpuSet::new(), 4), "00000000");
    assert_eq!(IdSet::parse_mask(&padded_mask(&set, 448), ID_LIMIT).unwrap(), set);
}

#[test]
fn distance_node_ids_are_bounded_like_node_statements() {
    // 2^32 would wrap to node 0 if the id were narrowed without a check.
    let text = "node 0 cpus 0 mem_kb 1\nnode 1 cpus 1 mem_kb 1\ndistance 4294967296 1 21\n";
    let error = MachineDescription::parse("bad", text).unwrap_err();
    assert!(error.to_string().contains("line 3: node id 4294967296 is beyond"), "{error}");
}

#[test]
fn file_and_remove_statements_edit_the_written_tree() {
    let text = "node 0 cpus 0-1 mem_kb 1024\n\
                file sys/devices/system/node/node0/distance 10 \\n\\0 # a comment\n\
                file sys/devices/system/cpu/cpu1/online\n\
                remove proc/meminfo\n";
    let description = MachineDescription::parse("edits", text).unwrap();
    assert_eq!(
        description.edits,
        [
            ("sys/devices/system/node/node0/distance".to_owned(), FileEdit::Write("10 \n\0".into())),
            ("sys/devices/system/cpu/cpu1/online".to_owned(), FileEdit::Write(String::new())),
            ("proc/meminfo".to_owned(), FileEdit::Remove),
        ]
    );
    let root = tempfile::tempdir().unwrap();
    description.write_tree(root.path()).unwrap();
    let read = |path: &str| fs::read_to_string(root.path().join(path)).unwrap();
    assert_eq!(read("sys/devices/system/node/node0/distance"), "10 \n\0");
    assert_eq!(read("sys/devices/system/cpu/cpu1/online"), "");
    assert!(!root.path().join("proc/meminfo").exists());
}

#[test]
fn edits_stay_under_the_root_and_escapes_are_known() {
    for (text, wanted) in [
        ("remove ../outside\n", "stays under the root"),
        ("remove /etc/passwd\n", "stays under the root"),
        ("file a/b \\q\n", "unknown escape \\q"),
        ("remove\n", "a path is missing"),
        ("remove a b\n", "unexpected \"b\""),
        ("cgroup_mems 1\n", "cgroup_mems names node 1"),
        ("remove .\n", "names the root itself"),
        ("remove ./.\n", "names the root itself"),
        ("file . x\n", "names the root itself"),
    ] {
        let error = MachineDescription::parse("bad", &format!("node 0 cpus 0 mem_kb 1\n{text}")).unwrap_err();
        assert!(error.to_string().contains(wanted), "{text:?}: {error}");
    }
}

#[test]
fn memory_sizes_must_fit_64_bits_in_bytes_alone_and_together() {
    let max = u64::MAX / 1024;
    let error = MachineDescription::parse("bad", &format!("node 0 cpus 0 mem_kb {}\n", max + 1)).unwrap_err();
    assert!(error.to_string().contains("line 1: mem_kb 18014398509481984: the size in bytes"), "{error}");
    let text = format!("node 0 cpus 0 mem_kb {max}\nnode 1 cpus 1 mem_kb 1\n");
    let error = MachineDescription::parse("bad", &text).unwrap_err();
    assert!(error.to_string().contains("line 2: mem_kb 1: the nodes' total"), "{error}");
    // The largest total there may be is written and read back.
    let text = format!("node 0 cpus 0 mem_kb {}\nnode 1 cpus 1 mem_kb 1\n", max - 1);
    let root = tempfile::tempdir().unwrap();
    MachineDescription::parse("big", &text).unwrap().write_tree(root.path()).unwrap();
    let topo = crate::SysfsTopology::new(root.path()).unwrap();
    assert_eq!(crate::Topology::node_mem_total_kb(&topo, 0), Some(max - 1));
}
