//! Memory figures of the running process.

use anyhow::{bail, Context, Result};

/// The process's peak resident set so far (`getrusage`'s `ru_maxrss`), in bytes.
pub(crate) fn peak_rss_bytes() -> Result<u64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable `rusage`; RUSAGE_SELF is always accepted.
    let status = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if status != 0 {
        bail!("getrusage failed: {}", std::io::Error::last_os_error());
    }
    // SAFETY: getrusage succeeded, so it filled the struct (and it was zeroed before).
    let usage = unsafe { usage.assume_init() };
    // Linux reports kilobytes.
    Ok(u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024)
}

/// The process's resident set now (second field of `/proc/self/statm`), in bytes.
pub(crate) fn current_rss_bytes() -> Result<u64> {
    let path = "/proc/self/statm";
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let pages: u64 =
        text.split_whitespace().nth(1).and_then(|field| field.parse().ok()).with_context(|| {
            format!("{path}: expected the resident page count as second field, found {text:?}")
        })?;
    // SAFETY: sysconf has no preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(pages * u64::try_from(page_size).unwrap_or(4096))
}
