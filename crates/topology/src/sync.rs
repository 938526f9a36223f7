//! The one place this crate imports locks and atomics from.
//!
//! The crate's shared state is small: the fake's subscriber list behind a mutex, the
//! virtual CPUs' online bitmap and instance counters as atomics, and the rseq offset
//! looked up once. None of it is a lock-free algorithm worth a loom model, so there is no
//! loom switch here; keeping the imports in one module still shows every piece of shared
//! state at a glance.

pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
pub(crate) use std::sync::{Mutex, MutexGuard, OnceLock};

/// Locks a mutex, ignoring poisoning: the only mutex (the fake's) holds a list of channel
/// senders and nothing done under it can panic halfway through a change.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}
