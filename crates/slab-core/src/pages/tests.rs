use super::*;
use crate::memory::map_aligned;

fn block(order: u32) -> NonNull<u8> {
    map_aligned(page_size() << order).unwrap()
}

#[test]
fn a_given_block_is_taken_again_for_its_node_and_order_only() {
    let cache = PageCache::new(2, NODE_CACHE_BYTES);
    let b = block(1);
    // SAFETY: a fresh block of order 1, unused.
    unsafe { cache.give(1, 1, b) };
    assert_eq!(cache.take(0, 1), None, "another node never gets node 1's block");
    assert_eq!(cache.take(1, 0), None, "another order never gets it");
    assert_eq!(cache.take(1, 1), Some(b));
    assert_eq!(cache.take(1, 1), None);
    let figures = cache.figures(1);
    assert_eq!((figures.blocks, figures.bytes, figures.reused), (0, 0, 1));
    // SAFETY: taken back, ours; give it to the cache again so that drop unmaps it.
    unsafe { cache.give(1, 1, b) };
    assert_eq!(cache.drain_all(), 1);
}

#[test]
fn blocks_come_back_last_in_first_out_and_keep_their_content_writable() {
    let cache = PageCache::new(1, NODE_CACHE_BYTES);
    let (a, b) = (block(0), block(0));
    // SAFETY: fresh blocks, unused.
    unsafe {
        cache.give(0, 0, a);
        cache.give(0, 0, b);
    }
    let first = cache.take(0, 0).unwrap();
    assert_eq!(first, b, "the most recently freed block first");
    // SAFETY: the block is ours again, a page long.
    unsafe { std::ptr::write_bytes(first.as_ptr(), 0xab, page_size()) };
    assert_eq!(cache.take(0, 0), Some(a));
    // SAFETY: both ours.
    unsafe {
        cache.give(0, 0, a);
        cache.give(0, 0, first);
    }
    assert_eq!(cache.figures(0).blocks, 2);
}

#[test]
fn the_cache_never_holds_more_than_its_bound() {
    let limit = 3 * page_size();
    let cache = PageCache::new(1, limit);
    for _ in 0..5 {
        // SAFETY: fresh blocks, unused.
        unsafe { cache.give(0, 0, block(0)) };
    }
    let figures = cache.figures(0);
    assert_eq!(figures.bytes, limit);
    assert_eq!(figures.blocks, 3);
    assert_eq!(figures.released, 2, "the two blocks beyond the bound went to the OS");
    // SAFETY: a fresh order-1 block does not fit in what is left (nothing).
    unsafe { cache.give(0, 1, block(1)) };
    assert_eq!(cache.figures(0).released, 3);
}

#[test]
fn the_trim_spares_a_used_cache_once_then_halves_it() {
    let cache = PageCache::new(1, NODE_CACHE_BYTES);
    for _ in 0..5 {
        // SAFETY: fresh blocks, unused.
        unsafe { cache.give(0, 0, block(0)) };
    }
    let b = cache.take(0, 0).unwrap();
    // SAFETY: ours again.
    unsafe { cache.give(0, 0, b) };
    assert_eq!(cache.trim(0), 0, "a cache that served a growth is spared once");
    assert_eq!(cache.trim(0), 3, "then half of 5, rounded up");
    assert_eq!(cache.trim(0), 1);
    assert_eq!(cache.trim(0), 1);
    assert_eq!(cache.trim(0), 0);
    assert_eq!(cache.figures(0).blocks, 0);
    assert_eq!(cache.figures(0).released, 5);
}

#[test]
fn drain_returns_every_order_and_unknown_nodes_are_harmless() {
    let cache = PageCache::new(2, NODE_CACHE_BYTES);
    // SAFETY: fresh blocks, unused.
    unsafe {
        cache.give(0, 0, block(0));
        cache.give(0, 2, block(2));
        cache.give(1, 1, block(1));
    }
    assert_eq!(cache.take(7, 0), None);
    assert_eq!(cache.trim(7), 0);
    assert_eq!(cache.drain(7), 0);
    assert_eq!(cache.figures(7), NodeCacheFigures::default());
    assert_eq!(cache.drain(0), 2);
    assert_eq!(cache.figures(0).bytes, 0);
    assert_eq!(cache.figures(1).blocks, 1, "draining node 0 leaves node 1 alone");
    // A block of a node the cache does not know goes straight to the OS.
    // SAFETY: a fresh block, unused.
    unsafe { cache.give(9, 0, block(0)) };
    assert_eq!(cache.drain_all(), 1);
}
