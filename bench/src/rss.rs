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

/// The process's resident set now, in bytes, as `sysinfo` reads it (`/proc/self/statm`'s
/// resident pages times the page size, on Linux).
pub(crate) fn current_rss_bytes() -> Result<u64> {
    let pid = sysinfo::get_current_pid().map_err(|reason| anyhow::anyhow!("this process's id: {reason}"))?;
    let mut system = sysinfo::System::new();
    system.refresh_processes_specifics(
        sysinfo::ProcessesToUpdate::Some(&[pid]),
        false,
        sysinfo::ProcessRefreshKind::nothing().with_memory(),
    );
    let process = system.process(pid).with_context(|| format!("sysinfo cannot read process {pid}"))?;
    Ok(process.memory())
}

#[cfg(test)]
pub(crate) mod tests;
