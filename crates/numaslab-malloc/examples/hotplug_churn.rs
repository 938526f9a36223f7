//! A multi-threaded Rust program for numaslab-malloc's tests, run under `LD_PRELOAD`: its
//! standard library allocates through the C library's `malloc`, which is then
//! numaslab's. Until its standard input closes (or two minutes pass):
//!
//! - four workers allocate blocks of many sizes (mostly small, one in eight up to 70 000
//!   bytes, which are mapped directly), fill each with a pattern, check it before freeing
//!   it, and hand one block in sixteen to the next worker, which checks and frees it on
//!   another thread than the one that allocated it;
//! - the main thread starts and joins short-lived threads that build and check a map of
//!   strings, so threads start and exit throughout;
//! - a monitor reads cpu1's `online` file and counts the times it found cpu1 offline.
//!
//! It prints `served by numaslab-malloc` (the library is mapped), `nothing lost` (every
//! block held its pattern when it was checked), `cpu1 seen offline` if the monitor saw
//! it, and exits 0; a damaged block prints `CORRUPTED` and exits 1. With `--fork` the
//! work is done by a forked child (the parent waits, and exits as the child did), so that
//! a child's own allocator follows the hotplug.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const WORKERS: u64 = 4;
const KEEP: usize = 256;
const CPU1_ONLINE: &str = "/sys/devices/system/cpu/cpu1/online";
/// How long the program runs at most if its standard input never closes.
const LIMIT: Duration = Duration::from_secs(120);

/// What the threads found.
#[derive(Default)]
struct Tally {
    corrupted: AtomicU64,
    operations: AtomicU64,
    offline_seen: AtomicU64,
}

/// A block and the byte it was filled with.
struct Block {
    bytes: Box<[u8]>,
    fill: u8,
}

impl Block {
    fn new(size: usize, fill: u8) -> Block {
        Block { bytes: vec![fill; size].into_boxed_slice(), fill }
    }

    fn intact(&self) -> bool {
        self.bytes.iter().all(|&byte| byte == self.fill)
    }
}

/// A linear congruential generator (the C program's), enough to vary sizes and slots.
fn next(seed: &mut u32) -> u32 {
    *seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
    *seed >> 8
}

fn worker(
    id: u64,
    stop: &AtomicBool,
    tally: &Tally,
    inbox: mpsc::Receiver<Block>,
    outbox: mpsc::Sender<Block>,
) {
    let mut kept: Vec<Option<Block>> = (0..KEEP).map(|_| None).collect();
    let mut seed = (id as u32).wrapping_mul(2_654_435_761);
    let check = |block: Block| {
        if !block.intact() {
            tally.corrupted.fetch_add(1, Ordering::Relaxed);
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let slot = next(&mut seed) as usize % KEEP;
        let draw = next(&mut seed);
        let size = 1 + (draw >> 4) as usize % if draw & 7 == 0 { 70_000 } else { 600 };
        let fresh = Block::new(size, (slot as u64 + id) as u8);
        if let Some(old) = kept[slot].replace(fresh) {
            if draw % 16 == 0 {
                // Freed by the next worker (or here, if it is gone).
                if let Err(mpsc::SendError(old)) = outbox.send(old) {
                    check(old);
                }
            } else {
                check(old);
            }
        }
        while let Ok(handed) = inbox.try_recv() {
            check(handed);
        }
        tally.operations.fetch_add(1, Ordering::Relaxed);
    }
    kept.into_iter().flatten().for_each(check);
    drop(outbox);
    // Whatever the previous worker still sends before it stops.
    inbox.into_iter().for_each(check);
}

/// Threads that start, allocate a little, check it and exit.
fn short_lived(round: u64, tally: &Tally) {
    let words: HashMap<u64, String> = (0..64).map(|i| (i, format!("round {round} word {i}"))).collect();
    let intact = (0..64).all(|i| words[&i] == format!("round {round} word {i}"));
    if !intact {
        tally.corrupted.fetch_add(1, Ordering::Relaxed);
    }
}

fn monitor(stop: &AtomicBool, tally: &Tally) {
    while !stop.load(Ordering::Relaxed) {
        if std::fs::read_to_string(CPU1_ONLINE).is_ok_and(|state| state.trim() == "0") {
            tally.offline_seen.fetch_add(1, Ordering::Relaxed);
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn run() -> i32 {
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    // Standard input closing is the signal to stop.
    let closed = Arc::new(AtomicBool::new(false));
    {
        let closed = Arc::clone(&closed);
        thread::spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            closed.store(true, Ordering::Relaxed);
        });
    }
    // A ring: worker i frees what worker i - 1 hands it.
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..WORKERS).map(|_| mpsc::channel()).unzip();
    let mut threads = Vec::new();
    for (id, inbox) in (0..WORKERS).zip(receivers) {
        let outbox = senders[((id + 1) % WORKERS) as usize].clone();
        let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
        threads.push(thread::spawn(move || worker(id, &stop, &tally, inbox, outbox)));
    }
    drop(senders);
    {
        let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
        threads.push(thread::spawn(move || monitor(&stop, &tally)));
    }
    let started = Instant::now();
    let mut round = 0;
    while !closed.load(Ordering::Relaxed) && started.elapsed() < LIMIT {
        let batch: Vec<_> = (0..4)
            .map(|_| {
                let tally = Arc::clone(&tally);
                thread::spawn(move || short_lived(round, &tally))
            })
            .collect();
        batch.into_iter().for_each(|thread| thread.join().expect("a short-lived thread panicked"));
        round += 1;
    }
    stop.store(true, Ordering::Relaxed);
    threads.into_iter().for_each(|thread| thread.join().expect("a worker panicked"));
    let mapped = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    if mapped.contains("libnumaslab_malloc") {
        println!("served by numaslab-malloc");
    }
    let corrupted = tally.corrupted.load(Ordering::Relaxed);
    let operations = tally.operations.load(Ordering::Relaxed);
    eprintln!("{operations} operations, {round} rounds of short-lived threads, {corrupted} damaged");
    if corrupted != 0 || operations == 0 || round == 0 {
        println!("CORRUPTED");
        return 1;
    }
    println!("nothing lost");
    if tally.offline_seen.load(Ordering::Relaxed) > 0 {
        println!("cpu1 seen offline");
    }
    0
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--fork") {
        // SAFETY: no thread of this program runs yet (a preloaded allocator's watcher may:
        // the child brings up its own allocator); the child runs the program and exits.
        match unsafe { libc::fork() } {
            -1 => {
                eprintln!("fork failed: {}", std::io::Error::last_os_error());
                std::process::exit(2);
            }
            0 => std::process::exit(run()),
            child => {
                let mut status = 0;
                // SAFETY: waits for our own child, writing its status.
                if unsafe { libc::waitpid(child, &mut status, 0) } != child {
                    eprintln!("waitpid failed: {}", std::io::Error::last_os_error());
                    std::process::exit(2);
                }
                std::process::exit(if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 3 });
            }
        }
    }
    std::process::exit(run());
}
