//! Integration tests of the topology crate: the sysfs reader against real captures, the
//! project's fixtures, bad input, and the live machine.

mod bad_input;
mod fixtures;
mod hwloc;
mod live;
mod lstopo;
mod quirks;

use std::path::PathBuf;

/// The workspace root.
fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shared hwloc captures: `$NUMASLAB_HWLOC_FIXTURES`, else `../shared/fixtures/hwloc`
/// beside the workspace; `None` (after printing why) where absent.
fn hwloc_captures() -> Option<PathBuf> {
    let dir = std::env::var_os("NUMASLAB_HWLOC_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/fixtures/hwloc"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipped: no hwloc captures at {} (set NUMASLAB_HWLOC_FIXTURES)", dir.display());
        None
    }
}
