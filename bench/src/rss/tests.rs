use super::{current_rss_bytes, peak_rss_bytes};

/// `Rss:` of `/proc/self/smaps_rollup` (Linux 4.14 and later), bytes.
fn smaps_rss_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap();
    let kib: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("Rss:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[test]
fn current_rss_is_what_the_kernel_says_and_below_the_peak() {
    // Touch 32 MiB so that the figures are far above the noise of the test harness.
    let touched = vec![1u8; 32 << 20];
    let sysinfo = current_rss_bytes().unwrap();
    let kernel = smaps_rss_bytes();
    std::hint::black_box(&touched);
    let (low, high) = (kernel.min(sysinfo), kernel.max(sysinfo));
    assert!(high - low < high / 8, "sysinfo {sysinfo} bytes, smaps_rollup {kernel} bytes");
    assert!(sysinfo <= peak_rss_bytes().unwrap(), "the resident set now exceeds the peak");
}
