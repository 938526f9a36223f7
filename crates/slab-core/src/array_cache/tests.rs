use super::*;

fn fake(n: usize) -> *mut u8 {
    (n * 64) as *mut u8
}

#[test]
fn push_pop_is_lifo_and_bounded() {
    let mut ac = ArrayCache::new(3, 2).unwrap();
    assert!(ac.push(fake(1)) && ac.push(fake(2)) && ac.push(fake(3)));
    assert!(!ac.push(fake(4)), "a full array refuses");
    assert_eq!(ac.pop(), Some(fake(3)));
    assert!(ac.touched());
    assert_eq!(ac.pop(), Some(fake(2)));
    assert_eq!(ac.pop(), Some(fake(1)));
    assert_eq!(ac.pop(), None);
}

#[test]
fn remove_oldest_keeps_the_newest_in_order() {
    let mut ac = ArrayCache::new(5, 2).unwrap();
    (1..=5).for_each(|n| assert!(ac.push(fake(n))));
    ac.remove_oldest(2);
    assert_eq!(ac.objects(), &[fake(3), fake(4), fake(5)]);
    ac.remove_oldest(10);
    assert_eq!(ac.avail(), 0);
}

#[test]
fn flushes_move_the_newest_down_and_objects_come_out_oldest_first() {
    // Two flushes of the oldest objects, with pushes between them: what is kept moves to
    // the bottom of the array each time (the kernel's memmove).
    let mut ac = ArrayCache::new(3, 2).unwrap();
    (1..=3).for_each(|n| assert!(ac.push(fake(n))));
    ac.remove_oldest(2);
    (4..=5).for_each(|n| assert!(ac.push(fake(n))));
    ac.remove_oldest(1);
    assert!(ac.push(fake(6)));
    assert_eq!(ac.avail(), 3);
    assert_eq!(ac.objects(), &[fake(4), fake(5), fake(6)]);
    assert_eq!(ac.pop(), Some(fake(6)), "still LIFO after the moves");
}

#[test]
fn net_counts_pushes_and_pops_but_not_refills_and_flushes() {
    let mut ac = ArrayCache::new(8, 4).unwrap();
    assert_eq!(ac.extend_from_slice(&[fake(1), fake(2), fake(3)]), 3);
    assert!(ac.put(fake(4)));
    assert_eq!(ac.net(), 0, "objects from the slabs are not handed out");
    ac.pop();
    ac.pop();
    assert!(ac.push(fake(9)));
    assert_eq!(ac.net(), 1, "two popped, one pushed");
    ac.remove_oldest(1);
    assert_eq!(ac.net(), 1, "a flush leaves net alone");
    assert!(!ac.touched() || ac.net() == 1);
}

#[test]
fn an_array_beyond_the_header_s_16_bits_is_refused() {
    assert!(ArrayCache::new(MAX_ENTRIES, 1).is_ok());
    assert_eq!(ArrayCache::new(MAX_ENTRIES + 1, 1).unwrap_err(), ArrayAllocFailed);
}

#[test]
fn a_slot_is_exclusive_and_counts_across_arrays() {
    let slot = ArraySlot::new(1, SlotFence::Lock);
    let mut guard = slot.try_lock().expect("free slot");
    assert!(slot.try_lock().is_none(), "a held slot refuses a second taker");
    guard.with(|data| {
        assert!(data.install(ArrayCache::new(4, 1).unwrap()).is_none());
        let ac = data.array_mut().unwrap();
        ac.extend_from_slice(&[fake(1), fake(2), fake(3)]);
        (0..3).for_each(|_| assert!(ac.pop().is_some()));
        assert!(ac.push(fake(1)));
        // A replaced array keeps its count in the slot.
        let old = data.replace(ArrayCache::new(4, 1).unwrap()).unwrap();
        assert_eq!((old.net(), data.net_out()), (0, 2), "the slot keeps the count, not the array");
        assert!(data.array_mut().unwrap().push(fake(2)));
    });
    assert_eq!(guard.node(), 1);
    drop(guard);
    let mut guard = slot.lock();
    assert_eq!(guard.with(|data| data.net_out()), 1);
    assert!(
        guard.with(|data| data.install(ArrayCache::new(2, 1).unwrap())).is_some(),
        "an attached slot gives a second array back"
    );
    assert!(slot.published.load(Ordering::Relaxed).is_null(), "a lock-mode slot publishes nothing");
}

#[test]
fn exchange_swaps_the_block_whole_and_keeps_the_count_in_the_slot() {
    let slot = ArraySlot::new(0, SlotFence::Lock);
    let mut guard = slot.lock();
    guard.with(|data| {
        assert!(!data.exchange(Ok), "a detached slot exchanges nothing");
        assert!(data.install(ArrayCache::new(3, 2).unwrap()).is_none());
        let ac = data.array_mut().unwrap();
        assert!(ac.extend_from_slice(&[fake(1), fake(2), fake(3)]) == 3);
        assert!(ac.pop().is_some(), "one handed out");
        assert!(ac.push(fake(3)));
        ac.pop();
        let mut given = None;
        let exchanged = data.exchange(|full| {
            given = Some(full.objects().to_vec());
            Ok(Sheaf::new(3).unwrap())
        });
        assert!(exchanged);
        assert_eq!(given.unwrap(), vec![fake(1), fake(2)]);
        let ac = data.array_mut().unwrap();
        assert_eq!((ac.avail(), ac.limit(), ac.batchcount(), ac.net()), (0, 3, 2, 0));
        assert!(ac.touched(), "an exchanged array starts touched");
        assert!(ac.push(fake(9)));
        // A refused exchange leaves the array as it was.
        assert!(!data.exchange(Err));
        assert_eq!(data.array_mut().unwrap().objects(), &[fake(9)]);
        assert_eq!(data.net_out(), 0, "two popped, two pushed, across the exchange");
    });
}
