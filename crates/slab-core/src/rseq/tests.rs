//! The sequences on one array of our own, on this machine's CPUs. Skipped, saying why,
//! where rseq mode is not available (the CAS fallback is tested everywhere else).

use topology::Topology;

use super::*;
use crate::array_cache::{ArrayCache, SlotFence, OFFSET_ENTRIES, SLOT_NODE, SLOT_PUBLISHED, SLOT_STRIDE};
use crate::sync::{Ordering, PublishedPtr as AtomicPtr};

fn area_or_skip(test: &str) -> Option<RseqArea> {
    let area = RseqArea::detect();
    if area.is_none() {
        eprintln!("{test}: skipped: no rseq mode here (glibc rseq area, membarrier RSEQ, x86_64)");
    }
    area
}

fn fake(n: usize) -> *mut u8 {
    (4096 + n * 64) as *mut u8
}

/// Runs `op` with the calling thread's CPU until it is not a migration or an abort.
fn on_this_cpu<T>(area: RseqArea, mut op: impl FnMut(u32) -> Option<T>) -> T {
    loop {
        let cpu = u32::try_from(area.cpu_id()).expect("a registered thread");
        if let Some(result) = op(cpu) {
            return result;
        }
    }
}

fn pop(area: RseqArea, published: &AtomicPtr<Block>) -> Pop {
    on_this_cpu(area, |cpu| {
        // SAFETY: the cell publishes an array of this test alone, for every CPU.
        match unsafe { area.pop(cpu, published.as_ptr()) } {
            Pop::Miss(Miss::Mismatch | Miss::Aborted) => None,
            other => Some(other),
        }
    })
}

fn push(area: RseqArea, published: &AtomicPtr<Block>, obj: *mut u8) -> Push {
    on_this_cpu(area, |cpu| {
        // SAFETY: as in `pop`.
        match unsafe { area.push(cpu, published.as_ptr(), obj) } {
            Push::Miss(Miss::Mismatch | Miss::Aborted) => None,
            other => Some(other),
        }
    })
}

#[test]
fn push_and_pop_are_lifo_bounded_and_counted() {
    let Some(area) = area_or_skip("push_and_pop_are_lifo_bounded_and_counted") else { return };
    let mut ac = ArrayCache::new(3, 2).unwrap();
    let published = AtomicPtr::new(ac.block());
    assert_eq!(pop(area, &published), Pop::Empty);
    for n in 1..=3 {
        assert_eq!(push(area, &published, fake(n)), Push::Done);
    }
    assert_eq!(push(area, &published, fake(4)), Push::Full);
    for n in (1..=3).rev() {
        assert_eq!(pop(area, &published), Pop::Hit(NonNull::new(fake(n)).unwrap()));
    }
    assert_eq!(pop(area, &published), Pop::Empty);
    published.store(std::ptr::null_mut(), Ordering::Relaxed);
    assert_eq!(ac.net(), 0, "three pushed, three popped");
    assert!(ac.push(fake(7)));
    assert_eq!(ac.net(), u32::MAX, "the Rust side and the sequences share one header");
}

#[test]
fn a_detached_cell_and_another_cpu_are_refused_before_any_store() {
    let Some(area) = area_or_skip("a_detached_cell_and_another_cpu_are_refused_before_any_store") else {
        return;
    };
    let ac = ArrayCache::new(4, 2).unwrap();
    let detached = AtomicPtr::new(std::ptr::null_mut());
    assert_eq!(pop(area, &detached), Pop::Miss(Miss::Detached));
    assert_eq!(push(area, &detached, fake(1)), Push::Miss(Miss::Detached));
    let published = AtomicPtr::new(ac.block());
    // No CPU has this id: the R1 compare fails on every CPU, and nothing is written.
    let elsewhere = u32::MAX - 1;
    // SAFETY: the cell publishes an array of this test alone.
    assert_eq!(unsafe { area.push(elsewhere, published.as_ptr(), fake(1)) }, Push::Miss(Miss::Mismatch));
    // SAFETY: as above.
    assert_eq!(unsafe { area.pop(elsewhere, published.as_ptr()) }, Pop::Miss(Miss::Mismatch));
    published.store(std::ptr::null_mut(), Ordering::Relaxed);
    assert_eq!((ac.avail(), ac.net()), (0, 0));
    assert!(ac.objects().is_empty());
}

/// Slots for `cpus` CPU ids, all of `node 0`, all publishing `ac`'s array (one thread uses
/// them, so one array may serve every CPU the thread runs on).
fn slots_publishing(area: RseqArea, ac: &ArrayCache, cpus: u32) -> Vec<CachePadded<ArraySlot>> {
    (0..cpus)
        .map(|cpu| {
            let slot = CachePadded::new(ArraySlot::new(0, SlotFence::Rseq { cpu, area }));
            slot.published.store(ac.block(), Ordering::Relaxed);
            slot
        })
        .collect()
}

/// Runs a sequence on the thread's own CPU until it is not an abort; gives its outcome
/// as `decode` reads it.
fn here<T: PartialEq>(mut op: impl FnMut() -> Here, decode: impl Fn(Here) -> T, aborted: T) -> T {
    loop {
        let outcome = decode(op());
        if outcome != aborted {
            return outcome;
        }
    }
}

#[test]
fn the_sequences_on_the_threads_own_cpu_read_it_and_keep_to_its_node() {
    let Some(area) = area_or_skip("the_sequences_on_the_threads_own_cpu_read_it_and_keep_to_its_node") else {
        return;
    };
    let ac = ArrayCache::new(2, 1).unwrap();
    let possible = topology::SysfsTopology::new("/").expect("this machine's sysfs").possible_cpus();
    let cpus = u32::try_from(possible.id_bound()).unwrap();
    let slots = slots_publishing(area, &ac, cpus);
    let aborted = Push::Miss(Miss::Aborted);
    let push = |obj, node| {
        // SAFETY: the slots of this test alone; every one publishes `ac`, whose objects
        // are of node 0 (a node-1 object is refused before any store).
        here(|| unsafe { area.push_here(&slots, obj, node) }, Here::push, aborted)
    };
    // SAFETY: as for `push`.
    let pop = || here(|| unsafe { area.pop_here(&slots) }, Here::pop, Pop::Miss(Miss::Aborted));

    assert_eq!(pop(), Pop::Empty);
    assert_eq!(push(fake(1), 0), Push::Done);
    assert_eq!(push(fake(2), 1), Push::Remote, "node 1's object never enters node 0's array");
    assert_eq!(push(fake(3), 0), Push::Done);
    assert_eq!(push(fake(4), 0), Push::Full);
    assert!(!ac.touched(), "pushes leave `touched` alone");
    assert_eq!(pop(), Pop::Hit(NonNull::new(fake(3)).unwrap()));
    assert!(ac.touched(), "a pop sets `touched`");
    assert_eq!(pop(), Pop::Hit(NonNull::new(fake(1)).unwrap()));
    assert!(ac.touched(), "and keeps it set");
    assert_eq!(pop(), Pop::Empty);
    assert_eq!((ac.avail(), ac.net()), (0, 0), "two pushed, two popped, nothing else written");

    // No slot for any CPU id: the id check fails before any store.
    // SAFETY: an empty slice has no slot to touch.
    assert_eq!(unsafe { area.push_here(&[], fake(5), 0) }.push(), Push::Miss(Miss::Mismatch));
    // SAFETY: as above.
    assert_eq!(unsafe { area.pop_here(&[]) }.pop(), Pop::Miss(Miss::Mismatch));
    for slot in &slots {
        slot.published.store(std::ptr::null_mut(), Ordering::Relaxed);
    }
    assert_eq!(push(fake(6), 0), Push::Miss(Miss::Detached));
    assert_eq!(pop(), Pop::Miss(Miss::Detached));
    assert!(ac.objects().is_empty());
}

/// The CPUs the calling thread may run on.
fn allowed_cpus() -> Vec<u32> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set for sched_getaffinity to fill.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the set is ours and its size is passed.
    let got = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(got, 0, "sched_getaffinity");
    // SAFETY: CPU_ISSET reads inside the set for ids below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as u32).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu as usize, &set) }).collect()
}

/// Pins the calling thread to `cpus`.
fn pin_self(cpus: &[u32]) {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET stays inside it for the ids
    // `allowed_cpus` gave.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: as above.
        unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    }
    // SAFETY: the set is ours and its size is passed; 0 is the calling thread.
    let set_ok = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(set_ok, 0, "sched_setaffinity({cpus:?})");
}

#[test]
fn the_sequences_on_the_threads_own_cpu_address_that_cpus_slot() {
    let Some(area) = area_or_skip("the_sequences_on_the_threads_own_cpu_address_that_cpus_slot") else {
        return;
    };
    let allowed = allowed_cpus();
    let bound = allowed.iter().max().map_or(0, |&cpu| cpu + 1);
    let arrays: Vec<ArrayCache> = (0..bound).map(|_| ArrayCache::new(4, 2).unwrap()).collect();
    let slots: Vec<CachePadded<ArraySlot>> = arrays
        .iter()
        .zip(0..)
        .map(|(ac, cpu)| {
            let slot = CachePadded::new(ArraySlot::new(0, SlotFence::Rseq { cpu, area }));
            slot.published.store(ac.block(), Ordering::Relaxed);
            slot
        })
        .collect();
    for &cpu in &allowed {
        pin_self(&[cpu]);
        // SAFETY: the slots of this test alone, each publishing its own array of node 0.
        let pushed = here(
            || unsafe { area.push_here(&slots, fake(cpu as usize), 0) },
            Here::push,
            Push::Miss(Miss::Aborted),
        );
        let holders: Vec<usize> =
            arrays.iter().enumerate().filter(|(_, ac)| ac.avail() > 0).map(|(n, _)| n).collect();
        // SAFETY: as above.
        let popped = here(|| unsafe { area.pop_here(&slots) }, Here::pop, Pop::Miss(Miss::Aborted));
        assert_eq!(pushed, Push::Done);
        assert_eq!(holders, [cpu as usize], "a thread on CPU {cpu} pushes onto CPU {cpu}'s array alone");
        assert_eq!(popped, Pop::Hit(NonNull::new(fake(cpu as usize)).unwrap()));
    }
    pin_self(&allowed);
    for slot in &slots {
        slot.published.store(std::ptr::null_mut(), Ordering::Relaxed);
    }
}

#[test]
fn the_slot_layout_is_the_one_the_sequences_address() {
    let Some(area) = area_or_skip("the_slot_layout_is_the_one_the_sequences_address") else { return };
    let ac = ArrayCache::new(2, 1).unwrap();
    let slots = slots_publishing(area, &ac, 3);
    let base = slots.as_ptr() as usize;
    for (index, slot) in slots.iter().enumerate() {
        assert_eq!(std::ptr::from_ref(&slot.published) as usize, base + index * SLOT_STRIDE + SLOT_PUBLISHED);
        assert_eq!(std::ptr::from_ref(&slot.node) as usize, base + index * SLOT_STRIDE + SLOT_NODE);
    }
    for slot in &slots {
        slot.published.store(std::ptr::null_mut(), Ordering::Relaxed);
    }
}

#[test]
fn the_sequences_keep_to_their_block() {
    // The header is 64 bytes and the entries follow it, as the sequences address them.
    assert_eq!(OFFSET_ENTRIES, 64);
    assert_eq!(std::mem::align_of::<Block>(), 64);
}

extern "C" {
    #[link_name = "__start___rseq_cs"]
    static RSEQ_CS_START: [u64; 0];
    #[link_name = "__stop___rseq_cs"]
    static RSEQ_CS_STOP: [u64; 0];
}

/// Every `struct rseq_cs` this build emitted: 32-byte aligned, version and flags 0,
/// the abort address outside `[start, start + length)`, and glibc's signature in the four
/// bytes before it (what the kernel checks at the first preemption, killing the process
/// on a mismatch).
#[test]
fn every_descriptor_in_the_rseq_cs_section_is_well_formed() {
    // Make sure the sequences are linked into this test binary.
    let _ = push_and_pop_are_lifo_bounded_and_counted as fn();
    // SAFETY: the linker defines both symbols at the bounds of the `__rseq_cs` section,
    // which holds only descriptors (32 bytes each, 32-byte aligned).
    let (start, stop) = unsafe { (RSEQ_CS_START.as_ptr() as usize, RSEQ_CS_STOP.as_ptr() as usize) };
    assert!(stop > start, "the __rseq_cs section is empty");
    assert_eq!(start % 32, 0, "descriptors are 32-byte aligned");
    assert_eq!((stop - start) % 32, 0, "the section holds whole descriptors");
    let count = (stop - start) / 32;
    assert!(count >= 2, "pop and push each emit one at least ({count} found)");
    for index in 0..count {
        let descriptor = (start + index * 32) as *const u64;
        // SAFETY: inside the section, aligned; each word was written by the assembler
        // (and relocated by the loader).
        let [version_flags, begin, length, abort] = unsafe { [0, 1, 2, 3].map(|word| *descriptor.add(word)) };
        assert_eq!(version_flags, 0, "descriptor {index}: version and flags must be 0");
        assert!(length > 0, "descriptor {index}: empty critical section");
        assert!(abort < begin || abort >= begin + length, "descriptor {index}: abort inside the section");
        // SAFETY: the abort address is in our text; the 4 bytes before it are the
        // signature the sequences place there.
        let signature = unsafe { std::ptr::read_unaligned((abort - 4) as *const u32) };
        assert_eq!(signature, RSEQ_SIG, "descriptor {index}: the signature before the abort address");
    }
}
