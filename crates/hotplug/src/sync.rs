//! The one place this crate imports locks and atomics from.
//!
//! The crate has no lock-free algorithm to model: its shared state sits behind mutexes
//! (the transition lock, the owner of that lock, the CPU records, the armed faults, the
//! observers) but for independent atomics (the event sequence number, and the watcher's
//! stop flag, mode and port), and its watcher is an OS thread blocked in poll(2) or on a
//! channel. So there is no loom switch here; the ordering guarantees come from the one
//! transition lock.

pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
pub(crate) use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, ignoring poisoning: every callback runs under `catch_unwind`, so a
/// panic never leaves the protected state half changed.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}
