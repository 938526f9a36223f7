//! The global allocator itself: bring-up through the bootstrap arena, the seed's
//! metadata hazard made real, the registry growing under its own slabs' growth, threads
//! allocating while they start and exit, and (opt-in) real hotplug of cpu1.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use numaslab::slab_core::kmalloc;
use numaslab::Machinery;

use crate::GLOBAL;

/// Longest a test below may take before it is called a deadlock.
const DEADLINE: Duration = Duration::from_secs(60);

fn machinery() -> &'static Machinery {
    GLOBAL.machinery().expect("the test harness allocated before any test ran")
}

/// Runs `work` on its own thread; a `work` that does not finish within [`DEADLINE`] is
/// a deadlock, and the process is ended (its stuck thread may hold a lock that
/// unwinding or the harness's report would need).
fn within<T: Send + 'static>(what: &'static str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, finished) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = done.send(work());
    });
    match finished.recv_timeout(DEADLINE) {
        Ok(value) => {
            let _ = worker.join();
            value
        }
        Err(_) if worker.is_finished() => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker sent its result before finishing"),
        },
        Err(_) => {
            // Straight to fd 2: the harness's captured output allocates, and the stuck
            // thread may hold what an allocation needs.
            for part in [what, ": no progress within the deadline: deadlock; ending the process\n"] {
                // SAFETY: write(2) reads `part.len()` bytes of a live string.
                unsafe { libc::write(2, part.as_ptr().cast(), part.len()) };
            }
            std::process::abort();
        }
    }
}

/// The lock every test that switches cpu1, or relies on its state, holds.
fn hotplug_lock() -> File {
    let file = File::create("/tmp/numaslab-real-hotplug.lock").expect("create the hotplug lock file");
    // SAFETY: flock(2) on a descriptor we own; blocks until the lock is ours.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(locked, 0, "flock of the hotplug lock file failed");
    file
}

/// Threads allocating and freeing through the global allocator until `stop`.
fn churn(threads: usize, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<u64>> {
    (0..threads)
        .map(|seed| {
            let stop = Arc::clone(stop);
            std::thread::spawn(move || {
                let mut kept: Vec<Vec<u8>> = Vec::new();
                let mut ops = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let size = [24, 100, 500, 3000, 20_000][(ops as usize + seed) % 5];
                    kept.push(vec![seed as u8; size]);
                    if kept.len() > 64 {
                        let old = kept.swap_remove(ops as usize % kept.len());
                        assert!(old.iter().all(|&b| b == seed as u8), "a block changed under its owner");
                    }
                    ops += 1;
                }
                ops
            })
        })
        .collect()
}

#[test]
fn the_first_allocation_brought_numaslab_up_through_the_bootstrap_arena() {
    let machinery = machinery();
    let (bootstrap_bytes, _) = kmalloc::bootstrap_bytes();
    assert!(bootstrap_bytes > 0, "the set-up's own allocations came from the arena");
    let value = Box::new(7u64);
    let ptr = NonNull::from(&*value).cast::<u8>();
    // SAFETY: the box is live and came from the global allocator.
    let node = unsafe { machinery.kmalloc.node_of(ptr) }.expect("a kmalloc pointer");
    assert!(node.is_some(), "a box made after bring-up lives in a slab, not the arena");
    // SAFETY: as above.
    assert_eq!(unsafe { machinery.kmalloc.usable_size(ptr) }.unwrap(), 8, "kmalloc-8");
    let names: Vec<_> = machinery.kmalloc.caches().iter().map(|cache| cache.name().to_owned()).collect();
    assert!(machinery.numaslab.allocator().slabinfo().contains("kmalloc-8 "), "{names:?}");
}

/// The slab registry's table grows as slabs are added, and its bigger table comes from
/// the kmalloc caches, whose growth adds slabs to that same registry: the table must be
/// grown before the locks a slab is added under are taken (`SlabRegistry::reserve`). Done
/// under them, the first growth into an empty cache (the class of each bigger table, empty
/// until the table reaches it) re-enters the registry's lock and deadlocks.
#[test]
fn the_registry_grows_while_its_own_slabs_grow() {
    within("registry growth", || {
        let mut blocks: Vec<Box<[u8; 4096]>> = Vec::new();
        // 31 objects per 128 KiB slab: 20 000 of them take some 650 slabs.
        for index in 0..20_000usize {
            blocks.push(Box::new([index as u8; 4096]));
        }
        for (index, block) in blocks.iter().enumerate() {
            assert!(block.iter().all(|&b| b == index as u8));
        }
        let class = kmalloc::class_of(std::alloc::Layout::new::<[u8; 4096]>()).expect("a class");
        let stats = machinery().kmalloc.caches()[class].stats();
        assert!(stats.num_slabs >= 600, "kmalloc-4k has {} slabs", stats.num_slabs);
    });
}

/// The seed's hazard: "If the l3 or the array_caches were to come from the same cache
/// being cleared, we hit on badness." Here they do: kmalloc-576's per-CPU arrays (a limit
/// of 54 in 64 slots, 576 bytes with the header) are kmalloc-576 objects. CPU_DEAD for
/// cpu1, run by a thread on cpu1 (a stale CPU id, as user space always has), frees cpu1's
/// array of kmalloc-576 into kmalloc-576 from a CPU whose array is detached, i.e.
/// straight to the node's lists: the seed's rule (free after unlocking) is all that keeps
/// that from taking the node lock the teardown holds. Other threads churn meanwhile; cpu1 is prepared again each round,
/// with arrays that now come from the kmalloc caches.
#[test]
fn cpu_dead_frees_arrays_of_the_cache_it_clears_after_unlocking() {
    let machinery = machinery();
    let topology = machinery.numaslab.topology();
    let _lock = hotplug_lock();
    if !topology.online_cpus().is_ok_and(|online| online.contains(1)) {
        println!("skipped: cpu1 is not online on this machine");
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let churners = churn(2, &stop);
    let cycles = within("cpu_dead of the allocator's own CPU", move || {
        let machinery = self::machinery();
        let allocator = machinery.numaslab.allocator();
        machinery.numaslab.topology().bind_current_thread(1).expect("bind to cpu1");
        let mut cycles = 0;
        for round in 0..200 {
            allocator.cpu_down_prepare(1).expect("cpu1 is known");
            allocator.cpu_dead(1);
            // Allocations with cpu1's arrays gone: served from the node lists.
            let probe: Vec<String> = (0..50).map(|i| format!("round {round} object {i}")).collect();
            assert_eq!(probe[49], format!("round {round} object 49"));
            allocator.cpu_up_prepare(1).expect("cpu1 prepared again");
            allocator.cpu_online(1).expect("cpu1 online again");
            cycles += 1;
        }
        cycles
    });
    stop.store(true, Ordering::Relaxed);
    let ops: u64 = churners.into_iter().map(|thread| thread.join().expect("a churner failed")).sum();
    assert_eq!(cycles, 200);
    assert!(ops > 0);
    assert!(machinery.numaslab.allocator().prepared_cpus().contains(1), "cpu1 is prepared again");
}

thread_local! {
    /// Allocates when its thread exits.
    static LAST_WORDS: RefCell<Option<ExitAllocator>> = const { RefCell::new(None) };
}

static EXIT_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

struct ExitAllocator(u64);

impl Drop for ExitAllocator {
    fn drop(&mut self) {
        let words: HashMap<u64, String> =
            (0..32).map(|i| (i, format!("thread {} word {i}", self.0))).collect();
        if words[&31] == format!("thread {} word 31", self.0) {
            EXIT_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[test]
fn threads_allocate_while_they_start_and_exit() {
    within("threads starting and exiting", || {
        let before = EXIT_ALLOCATIONS.load(Ordering::Relaxed);
        for wave in 0..8u64 {
            let threads: Vec<_> = (0..16u64)
                .map(|index| {
                    std::thread::Builder::new()
                        .name(format!("wave {wave} thread {index}"))
                        .spawn(move || {
                            let id = wave * 100 + index;
                            LAST_WORDS.with(|slot| *slot.borrow_mut() = Some(ExitAllocator(id)));
                            let data: Vec<u64> = (0..1000).map(|i| i * id).collect();
                            data.iter().sum::<u64>()
                        })
                        .expect("spawn")
                })
                .collect();
            for (index, thread) in threads.into_iter().enumerate() {
                let id = wave * 100 + index as u64;
                assert_eq!(thread.join().expect("a thread failed"), id * 999 * 1000 / 2);
            }
        }
        assert_eq!(
            EXIT_ALLOCATIONS.load(Ordering::Relaxed) - before,
            8 * 16,
            "every exiting thread allocated"
        );
    });
}

/// cpu1 really goes offline and online, through the hotplug states of the global
/// allocator's own `NumaSlab`, while threads allocate through it.
#[test]
fn real_hotplug_of_the_cpu_the_allocator_runs_on() {
    let Some(_guard) = crate::real_linux::Cpu1Guard::acquire("real_hotplug_of_the_cpu_the_allocator_runs_on")
    else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let churners = churn(3, &stop);
    let transitions = within("real hotplug under the global allocator", || {
        let numaslab = &machinery().numaslab;
        let mut transitions = 0;
        for _ in 0..5 {
            numaslab.cpu_down(1).expect("cpu1 offline");
            std::thread::sleep(Duration::from_millis(50));
            numaslab.cpu_up(1).expect("cpu1 online");
            std::thread::sleep(Duration::from_millis(50));
            transitions += 2;
        }
        transitions
    });
    stop.store(true, Ordering::Relaxed);
    let ops: u64 = churners.into_iter().map(|thread| thread.join().expect("a churner failed")).sum();
    assert_eq!(transitions, 10);
    assert!(ops > 0);
    assert!(machinery().numaslab.topology().online_cpus().is_ok_and(|online| online.contains(1)));
}

#[test]
fn a_forked_child_of_a_busy_program_allocates_and_exits() {
    // Bring-up registered the fork handlers (GLOBAL is a static): a child whose parent had
    // threads inside the allocator at the fork retires the parent's caches, whose locks
    // they may have held, and brings up its own.
    let stop = Arc::new(AtomicBool::new(false));
    // Batches large enough to take the slow paths (refills, flushes, the node lists and
    // their locks) all the time, so that a fork often finds one of those locks held.
    let workers: Vec<_> = (0..2u8)
        .map(|seed| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut rounds = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let batch: Vec<Vec<u8>> = (0..500).map(|i| vec![seed; i * 61 % 40_000 + 1]).collect();
                    assert!(batch.iter().all(|block| block.iter().all(|&b| b == seed)));
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    let mut inherited: Vec<Vec<u8>> = (0..500).map(|i| vec![i as u8; i * 37 % 5000 + 1]).collect();
    let failed = fork_children(40, || {
        let fresh: Vec<Vec<u8>> = (0..2000).map(|i| vec![7u8; i * 61 % 40_000 + 1]).collect();
        // The parent's blocks are freed too, into the caches the child retired.
        let inherited = std::mem::take(&mut inherited);
        inherited.iter().enumerate().all(|(i, block)| block.iter().all(|&b| b == i as u8))
            && fresh.iter().all(|block| block.iter().all(|&b| b == 7))
    });
    stop.store(true, Ordering::Relaxed);
    workers.into_iter().for_each(|worker| assert!(worker.join().unwrap() > 0));
    assert!(failed.is_empty(), "children failed (status 0xe is SIGALRM: stuck): {failed:?}");
}

/// A child's bring-up reads `NUMASLAB_DEBUG`. Read through `std::env`, it would wait on
/// std's environment lock, which a parent thread inside `set_var` at the fork leaves held
/// in the child for ever (with std's reads: nearly every child stuck).
#[test]
fn a_forked_child_of_a_program_changing_its_environment_allocates_and_exits() {
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|writer| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let name = format!("NUMASLAB_TEST_ENVIRONMENT_WRITER_{writer}");
                let mut writes = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    std::env::set_var(&name, writes.to_string());
                    writes += 1;
                }
                std::env::remove_var(&name);
                writes
            })
        })
        .collect();
    let failed = fork_children(40, || {
        let fresh: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        fresh.iter().enumerate().all(|(i, text)| *text == i.to_string())
    });
    stop.store(true, Ordering::Relaxed);
    writers.into_iter().for_each(|writer| assert!(writer.join().unwrap() > 0));
    assert!(failed.is_empty(), "children failed (status 0xe is SIGALRM: stuck): {failed:?}");
}

/// Forks `rounds` children one after another; each runs `child` (killed by SIGALRM if it
/// takes 10 s) and exits 0 if it returned true. Returns a line for each child that did not.
/// `child` runs only in children, so what it takes from the parent's state each child
/// takes from its own copy.
fn fork_children(rounds: usize, mut child: impl FnMut() -> bool) -> Vec<String> {
    let mut failed = Vec::new();
    for round in 0..rounds {
        // SAFETY: the child only runs `child` (which allocates and frees) and ends with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: alarm(2) has no preconditions; a stuck child is killed by it.
            unsafe { libc::alarm(10) };
            let passed = child();
            // SAFETY: ends the child at once, running nothing of the parent's.
            unsafe { libc::_exit(if passed { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            failed.push(format!("round {round}: status {status:#x}"));
        }
    }
    failed
}

#[test]
fn a_deep_fork_chain_keeps_every_generations_objects() {
    // Generation g allocates an object holding g and forks generation g + 1, which waits
    // for nothing but its own child; the last one checks every ancestor's object. (This
    // process has threads, so every child retires its parent's caches: 19 retired.)
    const GENERATIONS: usize = 20;
    // SAFETY: every process of the chain only allocates, forks, waits and ends with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: alarm(2) has no preconditions; a stuck chain is killed by it.
        unsafe { libc::alarm(60) };
        let mut objects: Vec<*mut u8> = Vec::new();
        for generation in 0..GENERATIONS {
            let block = Box::into_raw(Box::new([generation as u8; 100])).cast::<u8>();
            objects.push(block);
            if generation + 1 == GENERATIONS {
                break;
            }
            // SAFETY: as above.
            let child = unsafe { libc::fork() };
            if child != 0 {
                let mut status = 0;
                // SAFETY: waits for our own child, then ends with its status.
                unsafe {
                    libc::waitpid(child, &mut status, 0);
                    libc::_exit(if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 100 });
                }
            }
        }
        // Every object reads and moves, the first generation's as the last's.
        let mut wrong = 0;
        for (generation, &block) in objects.iter().enumerate() {
            // SAFETY: block is live.
            let usable = unsafe { GLOBAL.usable_size(NonNull::new(block).unwrap()) };
            let layout = std::alloc::Layout::new::<[u8; 100]>();
            // SAFETY: live, 100 bytes; realloc copies a retired object out.
            let moved = unsafe { std::alloc::GlobalAlloc::realloc(&GLOBAL, block, layout, 300) };
            // SAFETY: moved holds the first byte copied.
            wrong +=
                usize::from(usable < 100 || moved.is_null() || unsafe { moved.read() } != generation as u8);
        }
        // SAFETY: ends the chain's last process at once.
        unsafe { libc::_exit(wrong as i32) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "the chain was killed: status {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "objects handled wrongly at the chain's end");
}

/// `validate` holds every lock of a cache while it looks; here the caches it checks are
/// those its own allocations would come from, so it must allocate nothing under them (an
/// allocation that misses its CPU's array waits on the node lock validate holds).
#[test]
fn validate_of_the_process_allocator_finishes_while_threads_allocate() {
    let stop = Arc::new(AtomicBool::new(false));
    let workers = churn(2, &stop);
    // Live objects of every size the checks' own records would take.
    let kept: Vec<Vec<u8>> = (0..5000).map(|i| vec![3u8; 1 + i * 7 % 3000]).collect();
    let outcome = within("validate", || {
        let machinery = machinery();
        let whole = machinery.numaslab.allocator().validate();
        let each: Vec<_> = machinery.kmalloc.caches().iter().map(|cache| cache.validate()).collect();
        (whole, each)
    });
    stop.store(true, Ordering::Relaxed);
    workers.into_iter().for_each(|worker| assert!(worker.join().unwrap() > 0));
    assert!(kept.iter().all(|block| block.iter().all(|&b| b == 3)));
    let (whole, each) = outcome;
    assert!(whole.is_ok(), "{whole:?}");
    assert!(each.iter().all(Result::is_ok), "{each:?}");
}
