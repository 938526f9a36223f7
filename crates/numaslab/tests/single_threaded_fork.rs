//! `fork` in a process that has only ever had one thread, with numaslab as its allocator:
//! the child keeps its parent's caches (no bring-up of its own, nothing retired), down a
//! chain of forks deeper than the retired parents a child remembers; once the process
//! has had a second thread, a child retires them and brings up its own. A fork whose
//! thread holds the bootstrap arena's lock (from a signal handler that interrupted it)
//! goes through.
//!
//! Its own binary without libtest's harness (`harness = false`), whose threads would make
//! every process of the test multi-threaded.

use std::alloc::{GlobalAlloc, Layout};
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: numaslab::NumaSlabAlloc = numaslab::NumaSlabAlloc::new();

/// Generations of the chain: more than the 8 retired parents a child remembers.
const GENERATIONS: u8 = 12;

fn machinery_address() -> usize {
    GLOBAL.machinery().map_or(0, |machinery| machinery as *const numaslab::Machinery as usize)
}

/// Forks, runs `child` in the child (ended by SIGALRM after 60 s) and returns the child's
/// exit status, or a text saying how it ended otherwise.
fn in_child(child: impl FnOnce() -> u8) -> Result<u8, String> {
    // SAFETY: the child only allocates, forks, waits and ends with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err("fork failed".into());
    }
    if pid == 0 {
        // SAFETY: alarm(2) has no preconditions; a stuck child is killed by it.
        unsafe { libc::alarm(60) };
        let status = child();
        // SAFETY: ends the child at once, running nothing of the parent's.
        unsafe { libc::_exit(i32::from(status)) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err("waitpid failed".into());
    }
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status) as u8)
    } else {
        Err(format!("the child ended with wait status {status:#x} (0xe: SIGALRM, stuck)"))
    }
}

/// Generation `generation` of the chain: checks it still has the first generation's
/// machinery, allocates its object, and forks the next; the last one moves and frees
/// every generation's object. 0 if all went well, else the first failure's code.
fn generation(first: usize, generation: u8, mut objects: Vec<*mut u8>) -> u8 {
    if machinery_address() != first {
        return 10 + generation;
    }
    let object = Box::into_raw(Box::new([generation; 100])).cast::<u8>();
    objects.push(object);
    if generation + 1 < GENERATIONS {
        return in_child(move || self::generation(first, generation + 1, objects)).unwrap_or(100);
    }
    let old = Layout::new::<[u8; 100]>();
    for (owner, &object) in objects.iter().enumerate() {
        // SAFETY: `object` is a live [u8; 100] box's, allocated by `GLOBAL` in this chain.
        let moved = unsafe { GLOBAL.realloc(object, old, 300) };
        if moved.is_null() {
            return 40 + owner as u8;
        }
        // SAFETY: `moved` holds 300 bytes, the first 100 of them the old object's.
        let bytes = unsafe { std::slice::from_raw_parts(moved, 100) };
        let intact = bytes.iter().all(|&byte| byte == owner as u8);
        // SAFETY: allocated just above with 300 bytes and `old`'s alignment.
        unsafe { GLOBAL.dealloc(moved, Layout::from_size_align(300, old.align()).unwrap()) };
        if !intact {
            return 70 + owner as u8;
        }
    }
    0
}

fn main() -> ExitCode {
    drop(Box::new(1u64));
    let first = machinery_address();
    // SAFETY: dlsym only looks a NUL-terminated name up in the loaded objects.
    let flag = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__libc_single_threaded".as_ptr()) };
    if flag.is_null() {
        println!("skipped: this C library has no __libc_single_threaded, so every fork is followed");
        return ExitCode::SUCCESS;
    }
    // SAFETY: glibc's `char __libc_single_threaded`, live for the process.
    if unsafe { *flag.cast::<u8>() } == 0 {
        eprintln!("FAILED: the process has a second thread before the test made one");
        return ExitCode::FAILURE;
    }
    let chain = in_child(|| generation(first, 0, Vec::new()));
    let chain_passed = chain == Ok(0);
    println!(
        "a chain of {GENERATIONS} single-threaded forks: {}",
        match &chain {
            Ok(0) =>
                "every child kept the first machinery, and moved and freed every generation's object".into(),
            Ok(code @ 10..=39) => format!("generation {} brought up its own machinery", code - 10),
            Ok(code @ 40..=69) => format!("the object of generation {} could not be moved", code - 40),
            Ok(code @ 70..=99) => format!("the object of generation {} changed", code - 70),
            Ok(code) => format!("exit status {code}"),
            Err(text) => text.clone(),
        }
    );

    // A fork from a signal handler that interrupted the bootstrap arena, as the handlers
    // see it: the arena's lock held by the forking thread itself. Taking it would wait for
    // ever (SIGALRM ends the test then).
    // SAFETY: alarm(2) has no preconditions.
    unsafe { libc::alarm(60) };
    numaslab::slab_core::kmalloc::lock_for_fork();
    let interrupted = in_child(|| 0);
    numaslab::slab_core::kmalloc::unlock_after_fork();
    // SAFETY: as above; cancels the alarm.
    unsafe { libc::alarm(0) };
    let interrupted_passed = interrupted == Ok(0);
    println!(
        "a fork with the arena's lock held by the forking thread: {}",
        match &interrupted {
            Ok(0) => "went through".into(),
            Ok(code) => format!("exit status {code}"),
            Err(text) => text.clone(),
        }
    );

    std::thread::spawn(|| drop(vec![0u8; 64])).join().expect("a thread that allocates");
    let multi = in_child(|| {
        drop(Box::new(2u64));
        u8::from(machinery_address() == first)
    });
    let multi_passed = multi == Ok(0);
    println!(
        "a fork after a second thread: {}",
        match &multi {
            Ok(0) => "the child retired its parent's machinery".into(),
            Ok(_) => "the child kept its parent's machinery".into(),
            Err(text) => text.clone(),
        }
    );
    if chain_passed && interrupted_passed && multi_passed {
        ExitCode::SUCCESS
    } else {
        eprintln!("FAILED");
        ExitCode::FAILURE
    }
}
