use super::*;

#[test]
fn seed_box_has_two_nodes_of_two_cpus() {
    let topo = FakeTopology::seed_box();
    assert_eq!(topo.possible_cpus().to_string(), "0-3");
    assert_eq!(topo.node_cpus(0).to_string(), "0-1");
    assert_eq!(topo.node_cpus(1).to_string(), "2-3");
    assert_eq!(topo.cpu_node(3), Some(1));
    assert_eq!(topo.distance(0, 1), Some(REMOTE_DISTANCE));
    assert_eq!(topo.distance(1, 1), Some(LOCAL_DISTANCE));
    assert_eq!(topo.distance(0, 7), None);
    assert_eq!(topo.name(), "fake:4x2");
}

#[test]
fn set_online_notifies_subscribers_and_keeps_the_node() {
    let topo = FakeTopology::seed_box();
    let events = topo.subscribe().unwrap();
    topo.set_online(3, CpuState::Offline).unwrap();
    topo.set_online(3, CpuState::Offline).unwrap(); // no change, no event
    assert_eq!(events.try_recv().unwrap(), OnlineChange { cpu: 3, state: CpuState::Offline });
    assert!(events.try_recv().is_err());
    assert_eq!(topo.online_cpus().unwrap().to_string(), "0-2");
    assert_eq!(topo.cpu_node(3), Some(1), "an offline cpu keeps its node");
    assert!(matches!(topo.set_online(9, CpuState::Online), Err(Error::UnknownCpu { cpu: 9, .. })));
}

#[test]
fn the_last_online_cpu_cannot_go_offline() {
    let topo = FakeTopology::from_spec("2x1").unwrap();
    topo.set_online(0, CpuState::Offline).unwrap();
    let error = topo.set_online(1, CpuState::Offline).unwrap_err();
    assert!(error.to_string().contains("last online cpu"), "{error}");
}

#[test]
fn a_thread_on_an_offline_cpu_moves_to_the_nearest_node() {
    let topo = FakeTopology::builder().nodes(3).cpus_per_node(1).distance(1, 2, 12).build().unwrap();
    topo.bind_current_thread(1).unwrap();
    assert_eq!(topo.current_cpu(), 1);
    topo.set_online(1, CpuState::Offline).unwrap();
    assert_eq!(topo.current_cpu(), 2, "node 2 is nearest to node 1");
    assert!(
        matches!(topo.bind_current_thread(1), Err(Error::CpuOffline { cpu: 1, .. })),
        "binding to an offline cpu is refused"
    );
}

#[test]
fn a_bound_thread_goes_back_to_its_cpu_when_it_comes_back_online() {
    let topo = FakeTopology::seed_box();
    topo.bind_current_thread(3).unwrap();
    topo.set_online(3, CpuState::Offline).unwrap();
    assert_eq!(topo.current_cpu(), 2, "moved within node 1");
    topo.set_online(2, CpuState::Offline).unwrap();
    assert_eq!(topo.current_cpu(), 0, "node 1 has no cpu online: moved to node 0");
    topo.set_online(2, CpuState::Online).unwrap();
    assert_eq!(topo.current_cpu(), 0, "a moved thread stays where it runs while its cpu is away");
    topo.set_online(3, CpuState::Online).unwrap();
    assert_eq!(topo.current_cpu(), 3, "back on the cpu it was bound to, as Linux reapplies the mask");
}

#[test]
fn a_thread_that_never_bound_itself_stays_where_it_was_moved() {
    let topo = std::sync::Arc::new(FakeTopology::seed_box());
    let cpus = std::thread::spawn(move || {
        // Threads that never bound themselves take the online cpus in turn: this one is
        // the first, on cpu 0.
        let first = topo.current_cpu();
        topo.set_online(0, CpuState::Offline).unwrap();
        let moved = topo.current_cpu();
        topo.set_online(0, CpuState::Online).unwrap();
        (first, moved, topo.current_cpu())
    })
    .join()
    .unwrap();
    assert_eq!(cpus, (0, 1, 1));
}

#[test]
fn unbound_threads_take_online_cpus_in_turn() {
    let topo = std::sync::Arc::new(FakeTopology::seed_box());
    let cpus: Vec<CpuId> = (0..4)
        .map(|_| {
            let topo = topo.clone();
            std::thread::spawn(move || topo.current_cpu()).join().unwrap()
        })
        .collect();
    assert_eq!(cpus, vec![0, 1, 2, 3]);
}

#[test]
fn bad_descriptions_are_refused() {
    assert!(FakeTopology::from_spec("4x3").is_err());
    assert!(FakeTopology::from_spec("x2").is_err());
    assert!(FakeTopology::from_spec("0x0").is_err());
    assert!(FakeTopology::builder().nodes(1).memoryless_node(0).build().is_err());
    assert!(FakeTopology::builder().nodes(2).memoryless_node(5).build().is_err());
    assert!(FakeTopology::builder().nodes(2).distance(0, 1, 5).build().is_err());
    assert!(FakeTopology::builder().nodes(100_000).build().is_err());
}

#[test]
fn naming_a_memoryless_node_twice_is_the_same_machine() {
    let topo = FakeTopology::builder().nodes(2).memoryless_node(0).memoryless_node(0).build().unwrap();
    assert_eq!(topo.memoryless_nodes().to_string(), "0");
    assert_eq!(topo.nearest_memory_node(0), Some(1));
}

#[test]
fn allowed_memory_nodes_default_to_the_memory_nodes_and_can_be_restricted() {
    let topo = FakeTopology::builder().nodes(3).memoryless_node(1).build().unwrap();
    assert_eq!(topo.allowed_memory_nodes().to_string(), "0,2");
    let nodes = |list: &str| -> NodeSet { list.parse().unwrap() };
    let topo = FakeTopology::builder().nodes(3).allowed_memory_nodes(nodes("1-2")).build().unwrap();
    assert_eq!(topo.allowed_memory_nodes().to_string(), "1-2");
    // A memory-less node is never allowed, and a restriction must leave one memory node.
    let topo = FakeTopology::builder().nodes(3).memoryless_node(1).allowed_memory_nodes(nodes("1-2"));
    assert_eq!(topo.build().unwrap().allowed_memory_nodes().to_string(), "2");
    let error = FakeTopology::builder().nodes(2).memoryless_node(1).allowed_memory_nodes(nodes("1")).build();
    assert!(
        matches!(&error, Err(Error::InvalidFake(reason)) if reason.contains("none has memory")),
        "{error:?}"
    );
    let error = FakeTopology::builder().nodes(2).allowed_memory_nodes(nodes("0,5")).build();
    assert!(matches!(&error, Err(Error::InvalidFake(reason)) if reason.contains("0,5")), "{error:?}");
}

/// The live machine's possible CPUs, one node each, on its CPUs.
fn one_node_per_live_cpu() -> (FakeTopology, SysfsTopology) {
    let live = SysfsTopology::detect().expect("this machine's sysfs");
    let cpus = live.possible_cpus().len();
    let fake = FakeTopology::builder().nodes(cpus).cpus_per_node(1).on_live_cpus().build().unwrap();
    (fake, live)
}

#[test]
fn a_fake_on_the_live_cpus_binds_and_reads_them_from_the_kernel() {
    let (fake, live) = one_node_per_live_cpu();
    assert!(fake.cpus_are_live() && !fake.is_live(), "its cpus are the kernel's, its nodes are not");
    assert!(!FakeTopology::seed_box().cpus_are_live());
    assert_eq!(fake.possible_cpus(), live.possible_cpus());
    assert_eq!(fake.online_cpus().unwrap(), live.online_cpus().unwrap());
    let cpu = live.allowed_cpus().last().expect("this process may run somewhere");
    assert_eq!(fake.cpu_node(cpu), Some(cpu), "cpu {cpu} is alone on its node");
    std::thread::scope(|scope| {
        scope.spawn(|| {
            fake.bind_current_thread(cpu).unwrap();
            let mask = os::thread_affinity(live.possible_cpus().id_bound() as u32).unwrap();
            assert_eq!(mask.iter().collect::<Vec<_>>(), [cpu], "pinned for real");
            assert_eq!(os::sched_getcpu(), Some(cpu), "running there");
            assert_eq!(fake.current_cpu(), cpu);
            assert_eq!(fake.allowed_cpus().iter().collect::<Vec<_>>(), [cpu], "the thread's affinity");
        });
    });
    let unknown = live.possible_cpus().id_bound() as CpuId;
    assert!(matches!(fake.bind_current_thread(unknown), Err(Error::UnknownCpu { .. })));
}

#[test]
fn a_fake_on_the_live_cpus_leaves_switching_them_to_the_kernel() {
    let (fake, live) = one_node_per_live_cpu();
    let cpu = live.possible_cpus().last().unwrap();
    let error = fake.set_cpu_online(cpu, CpuState::Offline).unwrap_err();
    assert!(matches!(error, Error::NotHotpluggable { .. }), "{error}");
    assert!(error.to_string().contains("only the kernel switches"), "{error}");
    assert_eq!(fake.online_cpus().unwrap(), live.online_cpus().unwrap(), "nothing changed");
}

#[test]
fn a_fake_on_the_live_cpus_must_have_exactly_the_kernels_cpus() {
    let cpus = SysfsTopology::detect().unwrap().possible_cpus().len();
    let error = FakeTopology::builder().nodes(cpus + 1).on_live_cpus().build().unwrap_err();
    assert!(error.to_string().contains("not the running machine's possible cpus"), "{error}");
    let virtual_fake = FakeTopology::builder().nodes(cpus + 1).build().unwrap();
    assert!(!virtual_fake.cpus_are_live());
}
