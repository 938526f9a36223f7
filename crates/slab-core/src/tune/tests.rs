use super::*;

#[test]
fn defaults_follow_enable_cpucache() {
    let page = page_size();
    let cases = [
        (32, 120),
        (256, 120),
        (257, 54),
        (1024, 54),
        (1025, 24),
        (page, 24),
        (page + 8, 8),
        (131072, 8),
        (131073, 1),
    ];
    for (size, limit) in cases {
        let t = Tunables::defaults(size, true, false);
        assert_eq!(t.limit, limit, "limit for {size}-byte objects");
        assert_eq!(t.batchcount, limit.div_ceil(2), "batchcount for {size}-byte objects");
        assert_eq!(t.shared, if size <= page { 8 } else { 0 }, "shared for {size}-byte objects");
    }
    assert_eq!(Tunables::defaults(32, false, false).shared, 0, "no shared array on UP");
    let debug = Tunables::defaults(32, true, true);
    assert_eq!((debug.limit, debug.batchcount), (32, 16), "debug caps the limit at 32");
}

#[test]
fn check_refuses_what_slabinfo_write_refuses() {
    let ok = Tunables { limit: 10, batchcount: 5, shared: 0 };
    assert_eq!(ok.check("c").unwrap(), ok);
    for (limit, batchcount, shared, words) in [
        (0, 1, 0, "limit must be at least 1"),
        (4, 0, 0, "batchcount must be at least 1"),
        (4, 5, 0, "must not exceed limit"),
        (MAX_LIMIT + 1, 1, 0, "limit must not exceed"),
        (8, 8, u32::MAX, "shared * batchcount"),
    ] {
        let error = Tunables { limit, batchcount, shared }.check("dentry").unwrap_err().to_string();
        assert!(error.contains(words), "{error}");
        assert!(error.contains("dentry"), "the error names the cache: {error}");
    }
}
