use super::*;

fn fake(n: usize) -> *mut u8 {
    (n * 64) as *mut u8
}

fn filled(capacity: u32, from: usize) -> Sheaf {
    let mut sheaf = Sheaf::new(capacity).unwrap();
    while sheaf.push(fake(from + sheaf.len() as usize)) {}
    sheaf
}

fn attached(sheaves: u32, capacity: u32) -> Barn {
    let barn = Barn::new();
    assert!(barn.install(BarnContents::new(sheaves, capacity).unwrap()).is_none());
    barn
}

#[test]
fn a_sheaf_is_a_bounded_lifo() {
    let mut sheaf = Sheaf::new(2).unwrap();
    assert!(sheaf.push(fake(1)) && sheaf.push(fake(2)));
    assert!(!sheaf.push(fake(3)), "a full sheaf refuses");
    assert_eq!(sheaf.objects(), &[fake(1), fake(2)]);
    let mut array = sheaf.into_array();
    assert_eq!(array.pop(), Some(fake(2)));
    assert!(array.push(fake(4)));
    array.remove_oldest(1);
    // Taken out of a slot with its ring turned, a sheaf's objects start at its first entry.
    let sheaf = Sheaf::from_array(array);
    assert_eq!(sheaf.objects(), &[fake(4)]);
}

#[test]
fn barn_size_keeps_the_shared_arrays_objects() {
    assert_eq!(barn_sheaves(120, 60, 8), 4, "8 * 60 objects in sheaves of 120");
    assert_eq!(barn_sheaves(54, 27, 8), 4);
    assert_eq!(barn_sheaves(2, 1, 1), 1, "rounded up");
    assert_eq!(barn_sheaves(120, 60, 0), 0, "shared 0: no barn");
}

#[test]
fn a_detached_barn_refuses_everything() {
    let barn = Barn::new();
    assert!(barn.exchange_full_for_empty(filled(4, 0)).is_err());
    assert!(barn.exchange_empty_for_full(Sheaf::new(4).unwrap()).is_err());
    assert!(barn.exchange_empty_for_full(Sheaf::new(0).unwrap()).is_err(), "capacity 0 is no match");
    assert!(barn.put_empty(Sheaf::new(0).unwrap()).is_err());
    assert_eq!(barn.counts(), BarnCounts::default());
    let spare = barn.install(BarnContents::new(0, 4).unwrap());
    assert!(spare.is_some(), "contents of no sheaves leave the barn detached");
}

#[test]
fn exchanges_move_whole_sheaves_and_keep_the_count() {
    let barn = attached(2, 4);
    assert_eq!(barn.counts(), BarnCounts { attached: true, full_sheaves: 0, empty_sheaves: 2, objects: 0 });
    // Nothing full yet: an empty array is refused and comes back as it was.
    let back = barn.exchange_empty_for_full(Sheaf::new(4).unwrap()).unwrap_err();
    assert_eq!((back.len(), back.capacity()), (0, 4));
    // Two full arrays go in for the two empty sheaves; a third finds no room.
    let empty = barn.exchange_full_for_empty(filled(4, 0)).unwrap();
    assert!(empty.is_empty() && empty.capacity() == 4);
    barn.exchange_full_for_empty(filled(4, 10)).unwrap();
    let refused = barn.exchange_full_for_empty(filled(4, 20)).unwrap_err();
    assert_eq!(refused.objects(), &[fake(20), fake(21), fake(22), fake(23)]);
    assert_eq!(barn.counts(), BarnCounts { attached: true, full_sheaves: 2, empty_sheaves: 0, objects: 8 });
    // The newest full sheaf comes out first, whole.
    let full = barn.exchange_empty_for_full(empty).unwrap();
    assert_eq!(full.objects(), &[fake(10), fake(11), fake(12), fake(13)]);
    assert_eq!(barn.counts(), BarnCounts { attached: true, full_sheaves: 1, empty_sheaves: 1, objects: 4 });
}

#[test]
fn mismatched_or_wrong_state_sheaves_are_refused() {
    let barn = attached(2, 4);
    assert!(barn.exchange_full_for_empty(filled(3, 0)).is_err(), "capacity of another limit");
    assert!(barn.exchange_full_for_empty(Sheaf::new(4).unwrap()).is_err(), "an empty 'full' sheaf");
    barn.exchange_full_for_empty(filled(4, 0)).unwrap();
    assert!(barn.exchange_empty_for_full(filled(4, 8)).is_err(), "an 'empty' sheaf with objects");
    assert!(barn.put_empty(filled(4, 8)).is_err());
    assert!(barn.put_full(Sheaf::new(4).unwrap()).is_err());
    assert!(barn.put_empty(Sheaf::new(4).unwrap()).is_err(), "at its number of sheaves");
    let taken = barn.take_full().unwrap();
    assert!(barn.put_full(filled(3, 0)).is_err(), "capacity of another limit");
    barn.put_full(taken).unwrap();
    assert_eq!(barn.counts().objects, 4);
}

#[test]
fn detach_hands_back_every_sheaf_and_install_takes_only_a_detached_barn() {
    let barn = attached(3, 4);
    barn.exchange_full_for_empty(filled(4, 0)).unwrap();
    let spare = barn.install(BarnContents::new(3, 4).unwrap()).expect("already attached: a spare");
    assert_eq!(spare.objects(), 0);
    let mut contents = barn.detach();
    assert_eq!(contents.objects(), 4);
    assert_eq!(contents.full_sheaves().len(), 1);
    assert_eq!(barn.counts(), BarnCounts::default(), "detached");
    contents.clear_full();
    assert_eq!(contents.objects(), 0);
    assert!(barn.install(contents).is_none(), "the emptied contents go back in");
    assert_eq!(barn.counts(), BarnCounts { attached: true, full_sheaves: 0, empty_sheaves: 3, objects: 0 });
}

#[test]
fn the_reaper_sees_touched_and_takes_the_oldest() {
    let barn = attached(2, 2);
    let empty = barn.exchange_full_for_empty(filled(2, 0)).unwrap();
    let second = barn.exchange_full_for_empty(filled(2, 10)).unwrap();
    assert!(!barn.clear_touched(), "a flush does not touch");
    let full = barn.exchange_empty_for_full(empty).unwrap();
    assert!(barn.clear_touched(), "a refill touches");
    assert!(!barn.clear_touched(), "once");
    assert_eq!(full.objects(), &[fake(10), fake(11)], "the newest for a refill");
    assert!(barn.put_empty(second).is_err(), "two sheaves in the barn already");
    let empty = barn.exchange_full_for_empty(full).unwrap();
    assert_eq!(barn.counts().full_sheaves, 2);
    assert_eq!(barn.take_oldest_full().unwrap().objects(), &[fake(0), fake(1)], "the oldest for the reaper");
    barn.put_empty(empty).unwrap();
    let mut seen = Vec::new();
    barn.for_each_full(|objects| seen.extend_from_slice(objects));
    assert_eq!(seen, vec![fake(10), fake(11)]);
    let old = barn.replace(BarnContents::new(1, 8).unwrap());
    assert_eq!(old.objects(), 2);
    assert_eq!(barn.sheaf_capacity(), 8);
}
