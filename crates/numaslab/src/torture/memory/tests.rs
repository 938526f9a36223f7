use super::*;

fn bound() -> MemoryBound {
    MemoryBound {
        start_bytes: Some(5 << 20),
        limits_bytes: 3 << 20,
        page_cache_bytes: 8 << 20,
        live_bytes: 18 << 20,
        allowance_bytes: RUN_ALLOWANCE_BYTES,
    }
}

#[test]
fn the_bound_is_the_sum_of_its_parts() {
    assert_eq!(bound().total_bytes(), (5 + 3 + 8 + 18 + 4) << 20);
    let unknown_start = MemoryBound { start_bytes: None, ..bound() };
    assert_eq!(unknown_start.total_bytes(), (3 + 8 + 18 + 4) << 20);
    assert!(unknown_start.describe().contains("start unknown"), "{}", unknown_start.describe());
}

#[test]
fn a_peak_within_the_bound_passes_and_one_beyond_fails_naming_both() {
    let within = check(Some(12 << 20), &bound(), 2 << 20);
    assert!(within.passed, "{}", within.detail);
    assert!(within.detail.contains("peak 12.0 MiB <= bound 38.0 MiB"), "{}", within.detail);
    assert!(within.detail.contains("live at the end 2.0 MiB"), "{}", within.detail);
    let at = check(Some(bound().total_bytes()), &bound(), 0);
    assert!(at.passed, "the bound itself is allowed");
    let beyond = check(Some(196 << 20), &bound(), 2 << 20);
    assert!(!beyond.passed);
    assert!(beyond.detail.contains("peak 196.0 MiB exceeds bound 38.0 MiB"), "{}", beyond.detail);
    assert!(beyond.detail.contains("live set 18.0"), "the parts are named: {}", beyond.detail);
}

#[test]
fn without_a_measured_peak_the_check_says_so() {
    let unknown = check(None, &bound(), 0);
    assert!(unknown.passed);
    assert!(unknown.detail.contains("not measured"), "{}", unknown.detail);
}

#[test]
fn the_run_reads_its_own_rss_on_linux() {
    let _serial = crate::torture::tests::one_at_a_time();
    let start = start().expect("VmRSS on Linux");
    let peak = peak_rss_bytes().expect("VmHWM on Linux");
    assert!(start > 0 && peak > 0);
    // clear_refs reset the peak to about the current RSS: touch 16 MiB and see it rise.
    let block = vec![1u8; 16 << 20];
    std::hint::black_box(&block);
    assert!(peak_rss_bytes().unwrap() >= peak + (12 << 20), "the peak follows what the run touches");
}
