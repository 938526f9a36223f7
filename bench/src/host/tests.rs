use super::Host;

#[test]
fn this_machine_agrees_with_the_kernel() {
    let host = Host::this_machine();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    // The process may be confined to fewer CPUs than the machine has, never to more.
    assert!(host.cpus >= cpus && cpus > 0, "{host:?}, {cpus} CPUs usable");
    let total = crate::rss::tests::proc_kib_line_bytes("/proc/meminfo", "MemTotal");
    assert_eq!(host.memory_bytes, total, "{host:?}");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(host.kernel, release.trim(), "{host:?}");
    assert!(host.summary().starts_with(&format!("{} CPUs, ", host.cpus)), "{}", host.summary());
}
