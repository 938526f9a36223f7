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
    assert!(ac.touched);
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
    assert_eq!(ac.avail, 0);
}

#[test]
fn a_slot_is_exclusive_and_counts() {
    let slot = ArraySlot::new(1);
    let mut guard = slot.try_lock().expect("free slot");
    assert!(slot.try_lock().is_none(), "a held slot refuses a second taker");
    guard.with(|data| {
        data.array = Some(ArrayCache::new(2, 1).unwrap());
        data.allocs += 3;
        data.frees += 1;
    });
    assert_eq!(guard.node(), 1);
    drop(guard);
    let mut guard = slot.lock();
    assert_eq!(guard.with(|data| data.net_out()), 2);
}

#[test]
fn exchange_swaps_the_storage_whole() {
    let mut ac = ArrayCache::new(3, 2).unwrap();
    (1..=3).for_each(|n| assert!(ac.push(fake(n))));
    let mut given = None;
    let exchanged = ac.exchange(|full| {
        given = Some(full.objects().to_vec());
        Ok(Sheaf::new(3).unwrap())
    });
    assert!(exchanged);
    assert_eq!(given.unwrap(), vec![fake(1), fake(2), fake(3)]);
    assert_eq!((ac.avail, ac.limit, ac.batchcount), (0, 3, 2));
    assert!(ac.push(fake(9)));
    // A refused exchange leaves the array as it was.
    assert!(!ac.exchange(Err));
    assert_eq!(ac.objects(), &[fake(9)]);
    assert_eq!(ac.limit, 3);
}
