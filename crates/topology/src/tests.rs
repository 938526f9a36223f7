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
