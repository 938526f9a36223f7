//! `NumaSlab::new` racing a real machine's hotplug: a CPU that changes state between the
//! allocator's reading of the machine and the state machine's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use topology::{CpuId, CpuSet, CpuState, FakeTopology, NodeId, NodeSet, OnlineChange, Topology};

use crate::NumaSlab;

/// The seed box, whose `cpu` is switched to `after` just after the first reading of the
/// online CPUs (the allocator's), as a kernel hotplug would between two readings.
#[derive(Debug)]
struct SwitchedAfterFirstRead {
    machine: FakeTopology,
    cpu: CpuId,
    after: CpuState,
    read: AtomicBool,
}

impl SwitchedAfterFirstRead {
    fn new(cpu: CpuId, before: CpuState, after: CpuState) -> Self {
        let machine = FakeTopology::seed_box();
        machine.set_online(cpu, before).unwrap();
        Self { machine, cpu, after, read: AtomicBool::new(false) }
    }
}

impl Topology for SwitchedAfterFirstRead {
    fn online_cpus(&self) -> topology::Result<CpuSet> {
        let online = self.machine.online_cpus();
        if !self.read.swap(true, Ordering::SeqCst) {
            self.machine.set_online(self.cpu, self.after).unwrap();
        }
        online
    }

    fn name(&self) -> String {
        self.machine.name()
    }
    fn possible_cpus(&self) -> CpuSet {
        self.machine.possible_cpus()
    }
    fn present_cpus(&self) -> CpuSet {
        self.machine.present_cpus()
    }
    fn cpu_node(&self, cpu: CpuId) -> Option<NodeId> {
        self.machine.cpu_node(cpu)
    }
    fn allowed_cpus(&self) -> CpuSet {
        self.machine.allowed_cpus()
    }
    fn possible_nodes(&self) -> NodeSet {
        self.machine.possible_nodes()
    }
    fn online_nodes(&self) -> NodeSet {
        self.machine.online_nodes()
    }
    fn node_cpus(&self, node: NodeId) -> CpuSet {
        self.machine.node_cpus(node)
    }
    fn node_mem_total_kb(&self, node: NodeId) -> Option<u64> {
        self.machine.node_mem_total_kb(node)
    }
    fn distance(&self, from: NodeId, to: NodeId) -> Option<u32> {
        self.machine.distance(from, to)
    }
    fn current_cpu(&self) -> CpuId {
        self.machine.current_cpu()
    }
    fn bind_current_thread(&self, cpu: CpuId) -> topology::Result<()> {
        self.machine.bind_current_thread(cpu)
    }
    fn set_cpu_online(&self, cpu: CpuId, state: CpuState) -> topology::Result<()> {
        self.machine.set_cpu_online(cpu, state)
    }
    fn sysfs_root(&self) -> Option<&std::path::Path> {
        None
    }
    fn subscribe(&self) -> Option<crossbeam_channel::Receiver<OnlineChange>> {
        self.machine.subscribe()
    }
}

#[test]
fn a_cpu_that_comes_online_during_set_up_is_prepared_before_it_is_brought_online() {
    let machine = Arc::new(SwitchedAfterFirstRead::new(3, CpuState::Offline, CpuState::Online));
    let slab = NumaSlab::new(machine).expect("set-up with cpu 3 coming online meanwhile");
    assert!(slab.allocator().prepared_cpus().contains(3), "cpu 3 prepared");
    assert!(slab.hotplug().online_view().contains(3), "and brought online");
    slab.cpu_down(3).expect("and its teardown runs as for any cpu");
    assert!(!slab.allocator().prepared_cpus().contains(3));
}

#[test]
fn a_cpu_that_goes_offline_during_set_up_is_torn_down() {
    let machine = Arc::new(SwitchedAfterFirstRead::new(3, CpuState::Online, CpuState::Offline));
    let slab = NumaSlab::new(machine).expect("set-up with cpu 3 going offline meanwhile");
    assert!(!slab.hotplug().online_view().contains(3));
    assert!(!slab.allocator().prepared_cpus().contains(3), "cpu 3's caches released (CPU_DEAD)");
    slab.cpu_up(3).expect("and it comes up again as any cpu does");
    assert!(slab.allocator().prepared_cpus().contains(3));
}
