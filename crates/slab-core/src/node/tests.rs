use super::*;
use crate::memory::{map_aligned, unmap};
use crate::slab::{ObjectAlign, RedZoning};
use std::alloc::Layout;
use std::sync::Arc;

struct Fixture {
    geometry: Geometry,
    state: NodeState,
    slabs: Vec<SlabPtr>,
}

impl Fixture {
    fn new(slabs: usize, free_limit: usize) -> Self {
        let geometry =
            Geometry::new(Layout::from_size_align(256, 8).unwrap(), ObjectAlign::Word, RedZoning::Plain, 1)
                .unwrap();
        let records = SlabRecords::new(Arc::new(SlabRegistry::new()), 1, 0, geometry.slab_bytes);
        let mut state = NodeState::new(free_limit, records);
        let mut list = Vec::new();
        for _ in 0..slabs {
            let block = map_aligned(geometry.slab_bytes).unwrap();
            // SAFETY: fresh block; lock-free test owns the state.
            let slab = unsafe { SlabPtr::init(block, &geometry, 1, 0, 0) };
            // SAFETY: new detached slab of node 0.
            unsafe { state.add_grown_slab(&geometry, slab) };
            list.push(slab);
        }
        Self { geometry, state, slabs: list }
    }

    fn release(&self, mut chain: SlabChain) {
        while let Some(slab) = chain.pop() {
            // SAFETY: the slab left the lists; nobody uses it.
            unsafe { unmap(slab.base(), self.geometry.slab_bytes) };
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let mut chain = SlabChain::default();
        // Objects still handed out are simply unmapped with their slab.
        // SAFETY: test teardown; the state is ours.
        unsafe {
            for list in
                [&mut self.state.slabs_partial, &mut self.state.slabs_full, &mut self.state.slabs_free]
            {
                while let Some(slab) = list.first() {
                    list.remove(slab);
                    chain.push(slab);
                }
            }
        }
        self.release(chain);
    }
}

#[test]
fn take_object_prefers_partial_slabs_and_tracks_lists() {
    let mut f = Fixture::new(2, 1000);
    let num = f.geometry.num as usize;
    let first = f.state.take_object(&f.geometry).unwrap();
    assert!(f.state.free_touched, "taking from a free slab touches the free list");
    assert_eq!((f.state.slabs_partial.len(), f.state.slabs_free.len()), (1, 1));
    let second = f.state.take_object(&f.geometry).unwrap();
    assert_eq!(
        SlabPtr::of(first, f.geometry.slab_bytes),
        SlabPtr::of(second, f.geometry.slab_bytes),
        "partial first"
    );
    assert_eq!(f.state.free_objects, 2 * num - 2);
    for _ in 2..num {
        f.state.take_object(&f.geometry).unwrap();
    }
    assert_eq!((f.state.slabs_full.len(), f.state.slabs_partial.len()), (1, 0));
    assert_eq!(f.state.objects_in_use(&f.geometry), num);
}

#[test]
fn free_block_releases_empty_slabs_beyond_free_limit() {
    let mut f = Fixture::new(3, 0);
    let num = f.geometry.num as usize;
    let objects: Vec<*mut u8> = (0..num + 1).map(|_| f.state.take_object(&f.geometry).unwrap()).collect();
    let mut chain = SlabChain::default();
    // free_limit 0: the first slab to empty goes back to the OS at once.
    // SAFETY: these objects were handed out of this node's slabs.
    let refused = unsafe { f.state.free_block(&f.geometry, &objects, 0, &mut chain) };
    assert!(!refused.any());
    assert!(chain.len() >= 1, "an empty slab beyond free_limit is released");
    assert_eq!(f.state.objects_in_use(&f.geometry), 0);
    f.release(chain);
    f.slabs.clear();
}

#[test]
fn free_block_refuses_double_frees_and_foreign_nodes() {
    let mut f = Fixture::new(1, 1000);
    let obj = f.state.take_object(&f.geometry).unwrap();
    let mut chain = SlabChain::default();
    // SAFETY: obj was handed out of this node.
    unsafe {
        assert!(!f.state.free_block(&f.geometry, &[obj], 0, &mut chain).any());
        let again = f.state.free_block(&f.geometry, &[obj], 0, &mut chain);
        assert_eq!(again.already_free, 1);
        let other = f.state.free_block(&f.geometry, &[obj], 1, &mut chain);
        assert_eq!(other.wrong_node, 1);
    }
    assert_eq!(f.state.free_objects, f.geometry.num as usize);
}

#[test]
fn refill_takes_a_batch_from_the_slabs() {
    let mut f = Fixture::new(1, 1000);
    let mut ac = ArrayCache::new(10, 5).unwrap();
    f.state.refill(&f.geometry, &mut ac, 5);
    assert_eq!(ac.avail(), 5);
    f.state.refill(&f.geometry, &mut ac, 7);
    assert_eq!(ac.avail(), 10, "bounded by the array's room");
    assert_eq!(f.state.free_objects, f.geometry.num as usize - 10);
}

#[test]
fn drain_remote_keeps_what_the_taker_takes_and_frees_the_rest() {
    let mut f = Fixture::new(1, 1000);
    let records = SlabRecords::new(Arc::new(SlabRegistry::new()), 1, 0, f.geometry.slab_bytes);
    let l3 = KmemList3::new(1000, 1, records);
    let objects: Vec<_> = (0..5).map(|_| f.state.take_object(&f.geometry).unwrap()).collect();
    // SAFETY: handed-out objects of the fixture's slab, given once each.
    unsafe {
        l3.remote.push_batch(&objects[..3]);
        l3.remote.push_batch(&objects[3..]);
    }
    let mut queued = 0;
    assert!(l3.walk_remote(&f.state, &f.geometry, |_| {
        queued += 1;
        true
    }));
    assert_eq!(queued, 5);
    let mut chain = SlabChain::default();
    let mut kept = Vec::new();
    let refused = l3.drain_remote(&mut f.state, &f.geometry, 0, &mut chain, |chunk| {
        // Keep the first two (the newest batch).
        kept.extend_from_slice(&chunk[..2]);
        2
    });
    assert!(!refused.any());
    assert!(l3.remote.is_empty());
    assert_eq!(kept, objects[3..].to_vec());
    assert_eq!(f.state.free_objects, f.geometry.num as usize - 2, "three went back to the slab");
    f.release(chain);
}

#[test]
fn node_shrink_takes_every_free_slab() {
    let mut f = Fixture::new(3, 1000);
    let _held = f.state.take_object(&f.geometry).unwrap();
    let mut chain = SlabChain::default();
    assert!(f.state.node_shrink(&f.geometry, &mut chain), "a partial slab remains");
    assert_eq!(chain.len(), 2);
    assert_eq!(f.state.free_objects, f.geometry.num as usize - 1);
    f.release(chain);
    let mut chain = SlabChain::default();
    f.state.trim_free(&f.geometry, 5, &mut chain);
    assert_eq!(chain.len(), 0);
}

#[test]
fn free_limit_is_the_kernel_formula() {
    assert_eq!(free_limit(2, 60, 30), 3 * 60 + 30);
    assert_eq!(free_limit(0, 1, 1), 2);
}

#[test]
fn free_block_moves_a_slab_to_the_partial_tail_once_and_leaves_refused_ones_in_place() {
    let mut f = Fixture::new(2, 1000);
    let num = f.geometry.num as usize;
    // Fill the first slab (full list) and take two objects of the second (partial).
    let first: Vec<_> = (0..num).map(|_| f.state.take_object(&f.geometry).unwrap()).collect();
    let second: Vec<_> = (0..2).map(|_| f.state.take_object(&f.geometry).unwrap()).collect();
    let slab_of = |obj: *mut u8| SlabPtr::of(obj, f.geometry.slab_bytes).unwrap();
    assert_eq!((f.state.slabs_full.len(), f.state.slabs_partial.len()), (1, 1));
    let mut chain = SlabChain::default();
    // SAFETY: objects handed out of this node's slabs; each freed once, then one twice.
    unsafe {
        // A full slab's object: the slab moves to the partial tail.
        assert!(!f.state.free_block(&f.geometry, &first[..2], 0, &mut chain).any());
        assert_eq!(f.state.slabs_partial.last(), Some(slab_of(first[0])));
        assert_eq!(f.state.slabs_partial.first(), Some(slab_of(second[0])));
        assert_eq!((f.state.slabs_full.len(), f.state.slabs_partial.len()), (0, 2));
        // The other slab's object moves that slab to the tail in turn.
        assert!(!f.state.free_block(&f.geometry, &second[..1], 0, &mut chain).any());
        assert_eq!(f.state.slabs_partial.last(), Some(slab_of(second[0])));
        // A double free changes nothing, not even the order.
        assert_eq!(f.state.free_block(&f.geometry, &first[..1], 0, &mut chain).already_free, 1);
        assert_eq!(f.state.slabs_partial.last(), Some(slab_of(second[0])));
        assert_eq!(f.state.slabs_partial.len(), 2);
        // Emptying a slab puts it on the free list.
        assert!(!f.state.free_block(&f.geometry, &second[1..], 0, &mut chain).any());
        assert_eq!((f.state.slabs_partial.len(), f.state.slabs_free.len()), (1, 1));
        assert!(!f.state.free_block(&f.geometry, &first[2..], 0, &mut chain).any());
    }
    assert_eq!(chain.len(), 0);
    assert_eq!((f.state.slabs_partial.len(), f.state.slabs_free.len()), (0, 2));
    assert_eq!(f.state.free_objects, 2 * num);
}

#[test]
fn free_block_counts_only_the_slabs_it_adds_to_a_shared_chain() {
    let mut f = Fixture::new(2, 0);
    let num = f.geometry.num as usize;
    let objects: Vec<*mut u8> = (0..2 * num).map(|_| f.state.take_object(&f.geometry).unwrap()).collect();
    let mut chain = SlabChain::default();
    // SAFETY: objects handed out of this node's slabs, each freed once.
    unsafe {
        f.state.free_block(&f.geometry, &objects[..num], 0, &mut chain);
        assert_eq!((chain.len(), f.state.released), (1, 1));
        // The chain already holds a slab (another node's, in a teardown): the second call
        // is charged its own slab only.
        f.state.free_block(&f.geometry, &objects[num..], 0, &mut chain);
    }
    assert_eq!((chain.len(), f.state.released), (2, 2));
    assert_eq!(f.state.grown - f.state.released, 0);
    f.release(chain);
    f.slabs.clear();
}
