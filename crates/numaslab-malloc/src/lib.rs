//! numaslab as the C library's allocator, for `LD_PRELOAD`:
//!
//! ```text
//! cargo build --release -p numaslab-malloc
//! LD_PRELOAD=target/release/libnumaslab_malloc.so python3 script.py
//! ```
//!
//! `malloc`, `free`, `calloc`, `realloc`, `reallocarray`, `posix_memalign`,
//! `aligned_alloc`, `memalign`, `valloc`, `pvalloc` and `malloc_usable_size` are served
//! by a [`NumaSlabAlloc`] (which is also this library's own Rust allocator), so every
//! allocation of the program, of the C library and of numaslab's own metadata goes
//! through the kmalloc caches, brought up on the first call (through the bootstrap
//! arena: see `numaslab::NumaSlabAlloc`). Every pointer handed out is aligned to 16
//! bytes, as glibc's are.
//!
//! The allocator follows `fork` by itself (the child of a fork retires the parent's
//! caches and brings up its own: see `NumaSlabAlloc`). A constructor, run once the C
//! library is up, registers the watcher's own `pthread_atfork` child handler, starts a
//! `hotplug::Watcher` thread that follows CPU hotplug on the live machine (uevents, else polling; a forked child starts its own at
//! its first allocation, and the thread blocks every signal; a program that closes the
//! watcher's descriptors and reuses their numbers keeps its own files intact, and the
//! watcher opens new ones: see `watch.rs`), and reads the environment:
//!
//! - `NUMASLAB_DEBUG=1`: debug caches; a bad `free` (an unknown pointer, a double free,
//!   an overwritten red zone) is reported on stderr and the pointer left alone; each
//!   descriptor of the watcher's that the program closed or replaced is said on stderr;
//! - `NUMASLAB_SHOW_STATS=1`: slabinfo of the kmalloc caches on stderr at exit, and a
//!   line `numaslab-malloc[PID]: hotplug watcher (uevents): N CPU transitions followed`
//!   (with `, M lost descriptors replaced` after it if the program took any);
//! - `NUMASLAB_WATCH=0`: no hotplug watcher thread, in the process or its children.

mod watch;

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;
use std::ptr::NonNull;

use numaslab::NumaSlabAlloc;

#[global_allocator]
static ALLOC: NumaSlabAlloc = NumaSlabAlloc::new();

/// glibc's `MALLOC_ALIGNMENT` on 64-bit: `2 * sizeof(size_t)`.
const MALLOC_ALIGNMENT: usize = 16;

fn set_errno(code: i32) {
    // SAFETY: __errno_location returns the calling thread's errno.
    unsafe { *libc::__errno_location() = code };
}

/// Memory for `size` bytes aligned to `align` (a power of two), or null with `ENOMEM`.
fn allocate(size: usize, align: usize) -> *mut c_void {
    let Ok(layout) = Layout::from_size_align(size.max(1), align.max(MALLOC_ALIGNMENT)) else {
        set_errno(libc::ENOMEM);
        return std::ptr::null_mut();
    };
    // SAFETY: a non-zero layout.
    let ptr = unsafe { ALLOC.alloc(layout) };
    if ptr.is_null() {
        set_errno(libc::ENOMEM);
    }
    watch::after_allocation(&ALLOC);
    ptr.cast()
}

/// `malloc(3)`.
///
/// # Safety
/// Callable from C at any time.
#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    allocate(size, MALLOC_ALIGNMENT)
}

/// `free(3)`.
///
/// # Safety
/// `ptr` is null or came from this library and is live (in debug mode, any pointer).
#[no_mangle]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    if let Some(ptr) = NonNull::new(ptr.cast::<u8>()) {
        // SAFETY: the caller's promise.
        unsafe { ALLOC.free_unsized(ptr) };
    }
}

/// `calloc(3)`.
///
/// # Safety
/// Callable from C at any time.
#[no_mangle]
pub unsafe extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    let Some(bytes) = count.checked_mul(size) else {
        set_errno(libc::ENOMEM);
        return std::ptr::null_mut();
    };
    let Ok(layout) = Layout::from_size_align(bytes.max(1), MALLOC_ALIGNMENT) else {
        set_errno(libc::ENOMEM);
        return std::ptr::null_mut();
    };
    // SAFETY: a non-zero layout.
    let ptr = unsafe { ALLOC.alloc_zeroed(layout) };
    if ptr.is_null() {
        set_errno(libc::ENOMEM);
    }
    watch::after_allocation(&ALLOC);
    ptr.cast()
}

/// `realloc(3)`: null is `malloc`, size 0 frees and returns null (as glibc does).
///
/// # Safety
/// `ptr` is null or came from this library and is live.
#[no_mangle]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    let Some(old) = NonNull::new(ptr.cast::<u8>()) else { return allocate(size, MALLOC_ALIGNMENT) };
    if size == 0 {
        // SAFETY: the caller's promise.
        unsafe { free(ptr) };
        return std::ptr::null_mut();
    }
    let Ok(layout) = Layout::from_size_align(size, MALLOC_ALIGNMENT) else {
        set_errno(libc::ENOMEM);
        return std::ptr::null_mut();
    };
    // SAFETY: the caller's promise.
    let fresh = unsafe { ALLOC.realloc_unsized(old, layout) };
    if fresh.is_null() {
        set_errno(libc::ENOMEM);
    }
    watch::after_allocation(&ALLOC);
    fresh.cast()
}

/// `reallocarray(3)`.
///
/// # Safety
/// As for [`realloc`].
#[no_mangle]
pub unsafe extern "C" fn reallocarray(ptr: *mut c_void, count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        // SAFETY: the caller's promise.
        Some(bytes) => unsafe { realloc(ptr, bytes) },
        None => {
            set_errno(libc::ENOMEM);
            std::ptr::null_mut()
        }
    }
}

/// `posix_memalign(3)`: `EINVAL` unless `align` is a power of two multiple of the
/// pointer size.
///
/// # Safety
/// `memptr` must be writable.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(memptr: *mut *mut c_void, align: usize, size: usize) -> i32 {
    if !align.is_power_of_two() || align % std::mem::size_of::<*mut c_void>() != 0 {
        return libc::EINVAL;
    }
    let ptr = allocate(size, align);
    if ptr.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller's promise.
    unsafe { memptr.write(ptr) };
    0
}

/// `aligned_alloc(3)`: `EINVAL` and null unless `align` is a power of two.
///
/// # Safety
/// Callable from C at any time.
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return std::ptr::null_mut();
    }
    allocate(size, align)
}

/// `memalign(3)`: an alignment that is not a power of two is rounded up to one, as
/// glibc does.
///
/// # Safety
/// Callable from C at any time.
#[no_mangle]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    match align.checked_next_power_of_two() {
        Some(align) => allocate(size, align),
        None => {
            set_errno(libc::EINVAL);
            std::ptr::null_mut()
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page > 0 {
        page as usize
    } else {
        4096
    }
}

/// `valloc(3)`: page-aligned.
///
/// # Safety
/// Callable from C at any time.
#[no_mangle]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    allocate(size, page_size())
}

/// `pvalloc(3)`: page-aligned, the size rounded up to whole pages.
///
/// # Safety
/// Callable from C at any time.
#[no_mangle]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = page_size();
    match size.max(1).checked_next_multiple_of(page) {
        Some(bytes) => allocate(bytes, page),
        None => {
            set_errno(libc::ENOMEM);
            std::ptr::null_mut()
        }
    }
}

/// `malloc_usable_size(3)`: 0 for null.
///
/// # Safety
/// `ptr` is null or came from this library and is live.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
    match NonNull::new(ptr.cast::<u8>()) {
        // SAFETY: the caller's promise.
        Some(ptr) => unsafe { ALLOC.usable_size(ptr) },
        None => 0,
    }
}

/// The watcher's part of a fork's child (the allocator's is `NumaSlabAlloc`'s own).
extern "C" fn fork_child() {
    watch::fork_child();
}

extern "C" fn show_stats() {
    if let Some(machinery) = ALLOC.machinery() {
        eprint!("{}", machinery.numaslab.allocator().slabinfo());
    }
    say(&format!("numaslab-malloc[{}]: {}", std::process::id(), watch::report(&ALLOC)));
}

/// Writes `line` and a newline to stderr in one write(2), so that a line of the
/// watcher's thread and one of the program's never interleave (`eprintln!` writes its
/// pieces one by one).
pub(crate) fn say(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

pub(crate) fn env_is(name: &str, value: &str) -> bool {
    std::env::var_os(name).is_some_and(|found| found == value)
}

/// The library's constructor (`.init_array`): runs after the C library is up, before
/// the program's `main`.
extern "C" fn start() {
    // SAFETY: the handler is a plain function that stays loaded with the library.
    unsafe { libc::pthread_atfork(None, None, Some(fork_child)) };
    ALLOC.bring_up();
    if env_is("NUMASLAB_SHOW_STATS", "1") {
        // SAFETY: show_stats is a plain function that stays loaded with the library.
        unsafe { libc::atexit(show_stats) };
    }
    if !env_is("NUMASLAB_WATCH", "0") {
        watch::want();
        watch::start(&ALLOC);
    }
}

#[used]
#[link_section = ".init_array"]
static START: extern "C" fn() = start;
