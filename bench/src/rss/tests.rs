use super::{current_rss_bytes, peak_rss_bytes};

/// The `KEY: N kB` line of a `/proc` file such as `/proc/meminfo`, in bytes: the kernel's
/// own figure, to check others against.
pub(crate) fn proc_kib_line_bytes(path: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let kib: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} line of kB in {path}"));
    kib * 1024
}

#[test]
fn current_rss_is_what_the_kernel_says_and_below_the_peak() {
    // Touch 32 MiB so that the figures are far above the noise of the test harness.
    let touched = vec![1u8; 32 << 20];
    let sysinfo = current_rss_bytes().unwrap();
    // `Rss` of smaps_rollup: Linux 4.14 and later.
    let kernel = proc_kib_line_bytes("/proc/self/smaps_rollup", "Rss");
    std::hint::black_box(&touched);
    let (low, high) = (kernel.min(sysinfo), kernel.max(sysinfo));
    assert!(high - low < high / 8, "sysinfo {sysinfo} bytes, smaps_rollup {kernel} bytes");
    assert!(sysinfo <= peak_rss_bytes().unwrap(), "the resident set now exceeds the peak");
}
