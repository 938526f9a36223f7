//! Bad use of the raw API in debug mode is reported, and the cache keeps working.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::{Arc, Barrier};

use slab_core::{Allocator, Cache, CacheFlags, Error, RedZoneSide};
use topology::FakeTopology;

fn setup(flags: CacheFlags) -> (Arc<Allocator>, Arc<Cache>, Arc<Cache>) {
    let allocator = Allocator::new(Arc::new(FakeTopology::seed_box()));
    let layout = Layout::from_size_align(32, 8).unwrap();
    let a = allocator.create_cache("misuse-a", layout, flags).unwrap();
    let b = allocator.create_cache("misuse-b", Layout::from_size_align(96, 8).unwrap(), flags).unwrap();
    (allocator, a, b)
}

fn still_works(allocator: &Allocator, cache: &Cache) {
    let objects: Vec<_> = (0..300).map(|i| cache.alloc_on(i % 4).unwrap()).collect();
    for (i, obj) in objects.into_iter().enumerate() {
        // SAFETY: ours, freed once.
        unsafe { cache.free_on((i as u32 + 1) % 4, obj).unwrap() };
    }
    allocator.validate().unwrap();
    assert_eq!(cache.stats().in_use, 0);
}

#[test]
fn double_free_is_reported() {
    let (allocator, a, _) = setup(CacheFlags::DEBUG);
    let obj = a.alloc().unwrap();
    // SAFETY: debug mode checks every pointer.
    unsafe {
        a.free(obj).unwrap();
        let error = a.free(obj).unwrap_err();
        assert!(matches!(error, Error::DoubleFree { .. }), "{error}");
        assert!(error.to_string().contains("misuse-a"));
    }
    still_works(&allocator, &a);
}

#[test]
fn free_into_the_wrong_cache_is_reported_and_the_object_stays_valid() {
    let (allocator, a, b) = setup(CacheFlags::DEBUG);
    let theirs = b.alloc().unwrap();
    // SAFETY: debug mode checks every pointer.
    unsafe {
        match a.free(theirs) {
            Err(Error::WrongCache { cache, owner, .. }) => {
                assert_eq!((cache.as_str(), owner.as_str()), ("misuse-a", "misuse-b"))
            }
            other => panic!("expected WrongCache, got {other:?}"),
        }
        b.free(theirs).unwrap();
    }
    still_works(&allocator, &a);
    still_works(&allocator, &b);
}

#[test]
fn foreign_pointers_are_reported_without_being_read() {
    let (allocator, a, _) = setup(CacheFlags::DEBUG);
    let boxed = Box::new([0u64; 4]);
    let mut stack = 0u64;
    let foreign = [
        NonNull::from(&*boxed).cast::<u8>(),
        NonNull::from(&mut stack).cast::<u8>(),
        // Unmapped memory: the registry refuses it before any read.
        NonNull::new(0x1000 as *mut u8).unwrap(),
        NonNull::new(usize::MAX as *mut u8).unwrap(),
    ];
    for ptr in foreign {
        // SAFETY: debug mode checks every pointer before reading it.
        let error = unsafe { a.free(ptr) }.unwrap_err();
        assert!(matches!(error, Error::ForeignPointer { .. }), "{ptr:p}: {error}");
        assert_eq!(a.node_of(ptr), None);
    }
    still_works(&allocator, &a);
}

#[test]
fn pointers_into_objects_and_overflows_are_reported() {
    let (allocator, a, _) = setup(CacheFlags::DEBUG);
    let obj = a.alloc().unwrap();
    // SAFETY: debug mode checks every pointer; the writes stay inside the slot.
    unsafe {
        assert!(matches!(
            a.free(NonNull::new_unchecked(obj.as_ptr().add(4))),
            Err(Error::NotAnObject { .. })
        ));
        obj.as_ptr().add(32).write(0xff);
        assert!(matches!(a.free(obj), Err(Error::RedZone { side: RedZoneSide::After, .. })));
        // The object was freed despite the overflow report.
        assert!(matches!(a.free(obj), Err(Error::DoubleFree { .. })));
    }
    still_works(&allocator, &a);
}

#[test]
fn racing_double_frees_let_exactly_one_through() {
    let (allocator, a, _) = setup(CacheFlags::DEBUG);
    for _ in 0..50 {
        let obj = a.alloc().unwrap().as_ptr() as usize;
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2u32)
            .map(|cpu| {
                let (a, barrier) = (a.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    // SAFETY: debug mode checks every pointer; one of the two frees is a
                    // double free and must be refused.
                    unsafe { a.free_on(cpu * 2, NonNull::new(obj as *mut u8).unwrap()) }.is_ok()
                })
            })
            .collect();
        let passed = threads.into_iter().filter(|_| true).map(|t| t.join().unwrap()).filter(|&ok| ok).count();
        assert_eq!(passed, 1, "exactly one of two racing frees passes");
    }
    still_works(&allocator, &a);
}

#[test]
fn without_debug_a_wrong_cache_free_is_still_refused() {
    let (allocator, a, b) = setup(CacheFlags::NONE);
    assert_eq!(a.slab_bytes(), b.slab_bytes(), "what the promise of a refusal needs");
    let theirs = b.alloc().unwrap();
    // SAFETY: theirs is a live object of a cache of this allocator with slabs of the same
    // size; the non-debug free reads its slab descriptor and refuses it.
    unsafe {
        assert!(matches!(a.free(theirs), Err(Error::WrongCache { .. })));
        b.free(theirs).unwrap();
    }
    still_works(&allocator, &a);
}
