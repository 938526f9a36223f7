//! rseq mode under everything that can interrupt a sequence at once, on this machine:
//! more threads than CPUs, forced migrations every few tens of microseconds, signals at a
//! high rate whose handler allocates and frees, and other threads tuning, reaping,
//! shrinking and validating the cache (each of which stops CPUs). Every object carries an
//! ownership flag, so an object handed out twice or freed twice is seen; dropped arrays
//! are kept poisoned (the quarantine), so a late write into one is seen.
//! With `--cfg numaslab_rseq_inject` every sequence spins before its commit, and the test
//! also requires that aborts and CPU mismatches really happened.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use topology::{FakeTopology, SysfsTopology, Topology};

use crate::array_cache::quarantine;
use crate::{Allocator, Cache, CacheFlags, FastPathMode};

/// The cache the signal handler uses: of an allocator of its own, so that a handler never
/// waits for a lock that the thread it interrupted holds.
static HANDLER_CACHE: OnceLock<(Arc<Allocator>, Arc<Cache>)> = OnceLock::new();
static HANDLED: AtomicU64 = AtomicU64::new(0);
static HANDLER_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Allocates, writes and frees one object: nested sequences on the interrupted CPU.
extern "C" fn on_signal(_: libc::c_int) {
    let Some((_, cache)) = HANDLER_CACHE.get() else { return };
    match cache.alloc() {
        Ok(obj) => {
            // SAFETY: a fresh object of at least 8 bytes, ours until freed.
            unsafe { obj.as_ptr().write_volatile(0xa5) };
            // SAFETY: allocated from this cache just now, freed once.
            if unsafe { cache.free(obj) }.is_err() {
                HANDLER_ERRORS.fetch_add(1, Ordering::Relaxed);
            }
            HANDLED.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => {
            HANDLER_ERRORS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn install_handler() {
    // SAFETY: a zeroed sigaction with a plain handler, SA_RESTART, and an empty mask is
    // valid; the handler only touches the allocator and atomics.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()), 0);
    }
}

/// The CPU the calling thread is on, as `sched_getcpu` says.
fn this_cpu() -> u32 {
    // SAFETY: sched_getcpu has no preconditions.
    u32::try_from(unsafe { libc::sched_getcpu() }).expect("sched_getcpu")
}

/// Pins thread `tid` to `cpus` (`sched_setaffinity` on another thread).
fn pin(tid: libc::pid_t, cpus: &[u32]) {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET stays inside it for ids below
    // CPU_SETSIZE (this machine's are).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu as usize, &mut set);
        }
        // A thread that has just exited refuses; the next round pins the others.
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The objects' size: `[u64; 8]`.
const OBJECT_BYTES: usize = 64;

/// One object's ownership flag, in its last byte: 1 while handed out.
fn flag(obj: std::ptr::NonNull<u8>) -> &'static AtomicU8 {
    // SAFETY: the object is `OBJECT_BYTES` long. Outside debug mode the allocator writes
    // into a free object only its first word (the remote-free queue's link), so the last
    // byte keeps its value across a free and the next allocation (the slabs are never
    // unmapped while the test holds the cache: only empty slabs leave, and their flags
    // are 0).
    unsafe { AtomicU8::from_ptr(obj.as_ptr().add(OBJECT_BYTES - 1)) }
}

/// The handler's cache: of an allocator of its own on the live machine, warmed so that
/// it never grows (no system call or global allocation from inside a handler).
fn install_handler_cache(live: &Arc<dyn Topology>) {
    let handler_allocator = Allocator::new(Arc::clone(live));
    let handler_cache = handler_allocator
        .create_cache("handler-16", std::alloc::Layout::new::<[u64; 2]>(), CacheFlags::NONE)
        .unwrap();
    let warm: Vec<_> = (0..256).map(|_| handler_cache.alloc().unwrap()).collect();
    // SAFETY: each was allocated from this cache above and is freed once.
    warm.into_iter().for_each(|obj| unsafe { handler_cache.free(obj).unwrap() });
    assert!(HANDLER_CACHE.set((handler_allocator, handler_cache)).is_ok());
    install_handler();
}

/// The current CPU, read as a caller of `alloc_on`/`free_on` reads it. In the injection
/// build, every 32nd read is followed by a yield, which the disturber's affinity changes
/// turn into migrations before the sequence runs: mismatches then happen on every run, not
/// only when a migration falls into the few instructions between the read and the call.
fn read_cpu_then_pause() -> u32 {
    thread_local! {
        static READS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    let cpu = this_cpu();
    if cfg!(numaslab_rseq_inject) && READS.with(|reads| reads.replace(reads.get().wrapping_add(1))) % 32 == 0
    {
        std::thread::yield_now();
    }
    cpu
}

/// The stress runs twice: on the live machine, and on its CPUs laid out one node per
/// CPU, where a free after a migration or a hand-off is a remote free (the alien caches,
/// the barn offer and the remote-free queue, all from inside rseq mode).
#[test]
fn stress_with_migrations_signals_and_remote_stops_loses_and_duplicates_nothing() {
    let live: Arc<dyn Topology> = Arc::new(SysfsTopology::detect().expect("this machine's topology"));
    if Allocator::new(Arc::clone(&live)).fast_path() != FastPathMode::Rseq {
        eprintln!("skipped: this machine runs the CAS fallback (no rseq area or membarrier RSEQ)");
        return;
    }
    quarantine::start();
    install_handler_cache(&live);
    stress(Arc::clone(&live));
    let cpus = live.possible_cpus().len();
    let split = match FakeTopology::builder().nodes(cpus).cpus_per_node(1).on_live_cpus().build() {
        Ok(split) => split,
        Err(error) => {
            eprintln!(
                "the run on a node per cpu skipped: this machine's cpus cannot be laid out so: {error}"
            );
            return;
        }
    };
    let grown = stress(Arc::new(split));
    for cpu in live.online_cpus().unwrap().iter() {
        let node_grew = grown.iter().any(|&(node, slabs)| node == cpu && slabs > 0);
        assert!(node_grew, "node {cpu}, cpu {cpu}'s alone, served allocations: {grown:?}");
    }
}

/// Runs the workers, the disturber and the remote users for three seconds on `topology`
/// and checks that nothing was lost or duplicated; returns the slabs each node grew.
fn stress(topology: Arc<dyn Topology>) -> Vec<(topology::NodeId, u64)> {
    let allocator = Allocator::new(Arc::clone(&topology));
    assert_eq!(allocator.fast_path(), FastPathMode::Rseq, "{}", topology.name());
    let cpus: Vec<u32> = topology.online_cpus().expect("the online CPUs").iter().collect();
    let cache = allocator
        .create_cache("stress-64", std::alloc::Layout::new::<[u64; OBJECT_BYTES / 8]>(), CacheFlags::NONE)
        .unwrap();
    HANDLED.store(0, Ordering::Relaxed);

    let workers = 4 * cpus.len().max(2);
    let stop = Arc::new(AtomicBool::new(false));
    let duplicates = Arc::new(AtomicUsize::new(0));
    let ops = Arc::new(AtomicU64::new(0));
    let handoff: Arc<Mutex<Vec<usize>>> = Arc::new(Mutex::new(Vec::new()));
    let tids: Arc<Mutex<Vec<(libc::pid_t, libc::pthread_t)>>> = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(3);

    let worker_threads: Vec<_> = (0..workers)
        .map(|index| {
            let (cache, stop, duplicates, ops, handoff, tids) = (
                Arc::clone(&cache),
                Arc::clone(&stop),
                Arc::clone(&duplicates),
                Arc::clone(&ops),
                Arc::clone(&handoff),
                Arc::clone(&tids),
            );
            std::thread::spawn(move || {
                // SAFETY: gettid and pthread_self have no preconditions.
                let me = unsafe { (libc::gettid(), libc::pthread_self()) };
                tids.lock().unwrap().push(me);
                let mut held = Vec::with_capacity(256);
                let mut round = index;
                // Half the workers name the CPU they read just before each call, so that
                // migrations between that read and the sequence really happen.
                let named = index % 2 == 1;
                while !stop.load(Ordering::Relaxed) {
                    round = round.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    for _ in 0..1 + (round >> 33) % 200 {
                        let obj = if named { cache.alloc_on(read_cpu_then_pause()) } else { cache.alloc() };
                        let obj = obj.expect("an object");
                        if flag(obj).swap(1, Ordering::AcqRel) != 0 {
                            duplicates.fetch_add(1, Ordering::Relaxed);
                        }
                        held.push(obj);
                    }
                    // A quarter goes to another thread to free (frees on other CPUs).
                    let give = held.len() / 4;
                    handoff.lock().unwrap().extend(held.drain(..give).map(|obj| obj.as_ptr() as usize));
                    let taken: Vec<usize> = std::mem::take(&mut *handoff.lock().unwrap());
                    let taken =
                        taken.into_iter().map(|address| std::ptr::NonNull::new(address as *mut u8).unwrap());
                    for obj in held.drain(..).chain(taken) {
                        if flag(obj).swap(0, Ordering::AcqRel) != 1 {
                            duplicates.fetch_add(1, Ordering::Relaxed);
                        }
                        // SAFETY: allocated from this cache, freed once (the flag says so).
                        let freed = unsafe {
                            if named {
                                cache.free_on(read_cpu_then_pause(), obj)
                            } else {
                                cache.free(obj)
                            }
                        };
                        freed.expect("a free");
                        ops.fetch_add(2, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    // Migrations every ~30 us and a signal to some worker every ~20 us.
    let disturber = {
        let (stop, tids, cpus) = (Arc::clone(&stop), Arc::clone(&tids), cpus.clone());
        std::thread::spawn(move || {
            let mut round = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let threads = tids.lock().unwrap().clone();
                for (n, &(tid, thread)) in threads.iter().enumerate() {
                    let choice = (round + n) % (cpus.len() + 1);
                    if choice == cpus.len() {
                        pin(tid, &cpus);
                    } else {
                        pin(tid, &cpus[choice..=choice]);
                    }
                    if (round + n) % 2 == 0 {
                        // SAFETY: the thread is alive until `stop` (joined after this one).
                        unsafe { libc::pthread_kill(thread, libc::SIGUSR1) };
                    }
                }
                round += 1;
                std::thread::sleep(Duration::from_micros(25));
            }
        })
    };

    // Remote users of every CPU's array: tune, reap, shrink and validate, in turn.
    let mut validated = 0;
    let mut turn = 0u32;
    while Instant::now() < deadline {
        match turn % 4 {
            0 => {
                let limit = [1, 8, 120, 31][(turn / 4 % 4) as usize];
                cache.tune(limit, limit.div_ceil(2), 8).expect("valid tunables");
            }
            1 => allocator.reap(),
            2 => {
                cache.shrink();
            }
            _ => {
                cache.validate().expect("validate() under load");
                validated += 1;
            }
        }
        turn += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    disturber.join().unwrap();
    for worker in worker_threads {
        worker.join().unwrap();
    }
    for address in std::mem::take(&mut *handoff.lock().unwrap()) {
        let obj = std::ptr::NonNull::new(address as *mut u8).unwrap();
        assert_eq!(flag(obj).swap(0, Ordering::AcqRel), 1);
        // SAFETY: handed over and not freed yet.
        unsafe { cache.free(obj) }.unwrap();
    }

    let stats = cache.stats();
    let kept = quarantine::check().expect("no array was written after it was dropped");
    eprintln!(
        "{}: {} ops by {workers} threads, {validated} validations, {} signals handled, {} aborts, {} mismatches, {kept} arrays kept in quarantine",
        topology.name(),
        ops.load(Ordering::Relaxed),
        HANDLED.load(Ordering::Relaxed),
        stats.fast_path_aborts,
        stats.fast_path_mismatches,
    );
    assert_eq!(duplicates.load(Ordering::Relaxed), 0, "an object was handed out or freed twice");
    assert_eq!(HANDLER_ERRORS.load(Ordering::Relaxed), 0, "the signal handler's allocations failed");
    assert!(validated >= 3, "validate ran while the workers ran");
    assert!(HANDLED.load(Ordering::Relaxed) > 0, "signals reached the workers");
    assert_eq!(stats.in_use, 0, "every object came back: {stats:?}");
    cache.validate().unwrap();
    assert!(kept > 0, "tuning replaced arrays, so some were dropped into the quarantine");
    if cfg!(numaslab_rseq_inject) {
        assert!(stats.fast_path_aborts > 0, "the injected spins were preempted: aborts happened");
        assert!(
            stats.fast_path_mismatches > 0,
            "migrations between reading the CPU and a sequence for that CPU (alloc_on, free_on)"
        );
    }
    let grown = stats.nodes.iter().map(|node| (node.node, node.grown)).collect();
    allocator.destroy_cache(&cache).unwrap();
    grown
}
