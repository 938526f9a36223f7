use super::*;

#[test]
fn distance_rows_accept_kernel_text_and_refuse_garbage() {
    let path = Path::new("node0/distance");
    assert_eq!(parse_distance_row(path, "10 21\n\0").unwrap(), Some(vec![10, 21]));
    assert!(parse_distance_row(path, "\n").unwrap_err().to_string().contains("empty"));
    let error = parse_distance_row(path, "10 abc").unwrap_err();
    assert!(error.to_string().contains("\"abc\""), "{error}");
    assert!(parse_distance_row(path, "10 4000").is_err());
    assert!(parse_distance_row(path, "10 5").is_err(), "below 10 and not 0");
}

#[test]
fn a_row_holding_zero_is_unusable_not_malformed() {
    let path = Path::new("node0/distance");
    assert_eq!(parse_distance_row(path, "0\n").unwrap(), None);
    assert_eq!(parse_distance_row(path, "10 0 21").unwrap(), None);
    assert!(parse_distance_row(path, "0 x").is_err(), "garbage stays an error");
}

fn list(node: NodeId, cpus: &str) -> (NodeId, NodeList) {
    (node, NodeList { path: PathBuf::from(format!("node{node}/cpulist")), cpus: cpus.parse().unwrap() })
}

#[test]
fn a_cpu_in_two_lists_goes_to_the_smallest_then_the_lowest_node() {
    let lists = BTreeMap::from([list(0, "0-3"), list(1, "2-5"), list(2, "4-5"), list(3, "6-7")]);
    let mut facts = NodeFacts { node_cpus: vec![CpuSet::new(); 4], ..NodeFacts::default() };
    let mut notes = Notes::new(Reading::Lenient);
    facts.give_each_cpu_one_node(&lists, &mut notes).unwrap();
    // cpus 2-3: node 0 (4 cpus) ties node 1 (4 cpus): the lower id. cpus 4-5: node 2 (2 cpus).
    let cpus: Vec<String> = facts.node_cpus.iter().map(|c| c.to_string()).collect();
    assert_eq!(cpus, ["0-3", "", "4-5", "6-7"]);
    let found = notes.into_found();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, Path::new("node1/cpulist"));
    assert_eq!(found[0].text, "2-5");

    let mut strict = Notes::new(Reading::Strict);
    assert!(matches!(facts.give_each_cpu_one_node(&lists, &mut strict), Err(Error::Strict(_))));
}

#[test]
fn buggy_numa_needs_two_identical_lists_and_nothing_else() {
    let mut notes = Notes::new(Reading::Lenient);
    let same = BTreeMap::from([list(0, "0-7"), list(1, "0-7"), list(2, "")]);
    assert!(all_cpus_in_every_node(&same, &mut notes).unwrap());
    let one = BTreeMap::from([list(0, "0-7"), list(1, "")]);
    assert!(!all_cpus_in_every_node(&one, &mut notes).unwrap(), "one node with cpus is plain");
    let differ = BTreeMap::from([list(0, "0-7"), list(1, "0-6")]);
    assert!(!all_cpus_in_every_node(&differ, &mut notes).unwrap());
    assert_eq!(notes.into_found().len(), 1);
}
