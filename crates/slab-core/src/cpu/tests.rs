use std::sync::Arc;

use topology::{FakeTopology, SysfsTopology, Topology};

use super::*;

#[test]
fn fakes_and_fixtures_ask_their_topology() {
    let fake = FakeTopology::seed_box();
    assert_eq!(CpuSource::for_topology(&fake), CpuSource::Topology);
    fake.bind_current_thread(3).unwrap();
    let allocator = crate::Allocator::new(Arc::new(fake));
    let cache =
        allocator.create_cache("c", std::alloc::Layout::new::<u64>(), crate::CacheFlags::NONE).unwrap();
    let obj = cache.alloc().unwrap();
    assert_eq!(cache.node_of(obj), Some(1), "the virtual CPU 3 of node 1 is used");
    // SAFETY: ours, freed once.
    unsafe { cache.free(obj).unwrap() };
    assert_eq!(cache.cpu_cache_len(3), 16, "the free went to CPU 3's array too");
}

#[test]
fn the_live_machine_reads_rseq_inline_where_glibc_registered_it() {
    let Ok(live) = SysfsTopology::detect() else {
        println!("skipped: the live topology cannot be read here");
        return;
    };
    let source = CpuSource::for_topology(&live);
    let Some(_) = topology::rseq_current_cpu() else {
        println!("skipped: no rseq area registered by glibc (or --cfg numaslab_force_getcpu)");
        assert_eq!(source, CpuSource::Topology);
        return;
    };
    let CpuSource::Rseq(offset) = source else { panic!("rseq is registered but not used: {source:?}") };
    // The thread may migrate between two reads: retry until both agree.
    let agreed = (0..1000).any(|_| {
        let inline = offset.read();
        inline >= 0 && Some(inline as u32) == topology::rseq_current_cpu()
    });
    assert!(agreed, "the inline read never matched the topology crate's rseq read");
    assert!((offset.read() as u32) < live.cpu_id_bound() as u32);
}
