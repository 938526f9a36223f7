use std::sync::Arc;

use super::*;

#[test]
fn topology_is_object_safe_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + ?Sized>() {}
    assert_send_sync::<dyn Topology>();
    let fake: Arc<dyn Topology> = Arc::new(FakeTopology::builder().build().unwrap());
    assert_eq!(fake.possible_cpus().len(), 1);
}

#[test]
fn provided_methods_follow_the_described_machine() {
    // Node 1 has CPUs but no memory, node 2 has memory but no CPUs; node 1 is nearer to
    // node 2 than to node 0.
    let topo = FakeTopology::builder()
        .nodes(2)
        .cpus_per_node(2)
        .memoryless_node(1)
        .cpuless_nodes(1)
        .distance(1, 2, 15)
        .build()
        .unwrap();
    assert_eq!(topo.memoryless_nodes().to_string(), "1");
    assert_eq!(topo.cpuless_nodes().to_string(), "2");
    assert_eq!(topo.memory_nodes().to_string(), "0,2");
    assert_eq!(topo.nearest_memory_node(1), Some(2));
    assert_eq!(topo.nearest_memory_node(0), Some(0));
    assert_eq!(topo.cpu_id_bound(), 4);
    assert_eq!(topo.node_id_bound(), 3);
}

#[test]
fn the_topology_says_whether_it_is_live_and_which_cpus_it_can_switch() {
    let fake = FakeTopology::builder().nodes(1).cpus_per_node(2).build().unwrap();
    assert!(!fake.is_live());
    assert_eq!(fake.cpu_online_file(1), None);
    assert!(fake.can_switch_cpu(0) && fake.can_switch_cpu(1), "the fake switches every present CPU");
    assert!(!fake.can_switch_cpu(2), "cpu2 is not present");

    let seed = FixtureTopology::seed_box().unwrap();
    let root = seed.sysfs_root().unwrap().to_owned();
    assert!(!seed.is_live());
    assert_eq!(seed.cpu_online_file(3), Some(root.join("sys/devices/system/cpu/cpu3/online")));
    assert!(!seed.can_switch_cpu(0), "the seed box's cpu0 has no online file");
    assert!(seed.can_switch_cpu(3));
    assert!(!seed.can_switch_cpu(4), "cpu4 is not present");

    let live = SysfsTopology::detect().unwrap();
    assert!(live.is_live());
    assert_eq!(
        live.cpu_online_file(0),
        Some(std::path::PathBuf::from("/sys/devices/system/cpu/cpu0/online"))
    );
}
