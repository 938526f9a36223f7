//! The machine a run was measured on, for the report's head, from `sysinfo`: CPU model
//! and count, memory, kernel and operating system. Recorded by the driver in `run.json`,
//! so that a report redrawn elsewhere still names the machine of the figures.

use serde::{Deserialize, Serialize};
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

/// Facts about the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Host {
    /// The CPU model (`model name` of `/proc/cpuinfo` on Linux).
    pub(crate) cpu_model: String,
    /// Logical CPUs the operating system knows.
    pub(crate) cpus: usize,
    /// Physical memory, bytes.
    pub(crate) memory_bytes: u64,
    /// The kernel's release, such as `6.18.0`.
    pub(crate) kernel: String,
    /// The operating system, such as `Linux 12 Debian GNU/Linux`.
    pub(crate) os: String,
}

impl Host {
    /// Reads the facts of this machine; a fact the system does not give is `unknown`.
    pub(crate) fn this_machine() -> Host {
        let system = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        );
        let unknown = || "unknown".to_owned();
        Host {
            cpu_model: system
                .cpus()
                .first()
                .map(|cpu| cpu.brand().trim().to_owned())
                .filter(|brand| !brand.is_empty())
                .unwrap_or_else(unknown),
            cpus: system.cpus().len(),
            memory_bytes: system.total_memory(),
            kernel: System::kernel_version().unwrap_or_else(unknown),
            os: System::long_os_version().unwrap_or_else(unknown),
        }
    }

    /// One line for the report's head.
    pub(crate) fn summary(&self) -> String {
        format!(
            "{} CPUs, {}, {:.1} GiB, kernel {}, {}",
            self.cpus,
            self.cpu_model,
            self.memory_bytes as f64 / f64::from(1u32 << 30),
            self.kernel,
            self.os
        )
    }
}

#[cfg(test)]
mod tests;
