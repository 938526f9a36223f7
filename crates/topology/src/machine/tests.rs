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
