//! `numaslab watch` end to end: a copy of a fixture tree whose `online` files a test
//! writes, followed by polling or found by periodic reconciles; the text output; forged,
//! unrelated and overflowed uevents in a network namespace of the test's own (as root);
//! and (opt-in, as root) the real machine through uevents.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{self, AddressFamily, SendFlags, SocketFlags, SocketType};
use rustix::process::{kill_process, Pid, Signal};
use serde_json::Value;

use crate::support::RealCpu1;

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A private copy of the seed box's tree, whose `online` files a test writes.
fn seed_box_copy() -> tempfile::TempDir {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&workspace.join("fixtures/seed-box"), dir.path());
    dir
}

fn online_file(root: &Path, cpu: u32) -> std::path::PathBuf {
    root.join(format!("sys/devices/system/cpu/cpu{cpu}/online"))
}

/// Starts `numaslab watch` with `args`; returns the child and a channel of its lines.
fn spawn(args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_numaslab"))
        .arg("watch")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary runs");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Starts `numaslab watch --json` with `args`; returns the child and a channel of its
/// records, each checked to carry a `time` that is RFC 3339 UTC with milliseconds.
fn watch(args: &[&str]) -> (Child, mpsc::Receiver<Value>) {
    let (child, lines) = spawn(&[&["--json"][..], args].concat());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in lines {
            let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
            let time = value["time"].as_str().unwrap_or_else(|| panic!("no time in {line}"));
            assert_recent_rfc3339_millis(time);
            if tx.send(value).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// `time` is `YYYY-MM-DDTHH:MM:SS.mmmZ` and within a minute of now.
fn assert_recent_rfc3339_millis(time: &str) {
    let shape = time.len() == 24 && time.ends_with('Z') && time.as_bytes()[19] == b'.';
    assert!(shape, "not RFC 3339 UTC with milliseconds: {time:?}");
    let at = humantime::parse_rfc3339(time).unwrap_or_else(|e| panic!("{time:?}: {e}"));
    let off = SystemTime::now().duration_since(at).unwrap_or_else(|e| e.duration());
    assert!(off < Duration::from_secs(60), "{time} is {off:?} from now");
}

/// The next record for which `wanted` holds, skipping others; panics after 10 s.
fn next(records: &mpsc::Receiver<Value>, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    loop {
        let record =
            records.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("no {what} within 10 s"));
        if wanted(&record) {
            return record;
        }
    }
}

fn next_transition(records: &mpsc::Receiver<Value>, cpu: u64, event: &str) -> Value {
    next(records, &format!("cpu {cpu} {event}"), |record| {
        record["record"] == "transition" && record["cpu"] == cpu && record["event"] == event
    })
}

/// Every record until the process ends (its `--duration` runs out).
fn rest(child: &mut Child, records: mpsc::Receiver<Value>) -> Vec<Value> {
    assert!(child.wait().unwrap().success());
    records.iter().collect()
}

#[test]
fn watch_follows_a_fixture_tree_by_polling() {
    let dir = seed_box_copy();
    let root = dir.path().to_str().unwrap();
    let (mut child, records) = watch(&["--root", root, "--duration", "4"]);
    let start = records.recv_timeout(Duration::from_secs(10)).expect("a first record");
    assert_eq!(start["record"], "start", "{start}");
    assert_eq!(start["backend"], "sysfs", "{start}");
    assert_eq!(start["root"], root, "{start}");
    assert_eq!(start["events"], "poll", "{start}");
    assert_eq!(start["poll_interval_ms"], 100, "{start}");
    assert_eq!(start["reconcile_interval_ms"], 1000, "{start}");
    std::fs::write(online_file(dir.path(), 3), "0\n").unwrap();
    let line = next_transition(&records, 3, "offline");
    assert_eq!(line["source"], "poll");
    assert!(line["callbacks_us"].is_u64(), "{line}");
    std::fs::write(online_file(dir.path(), 3), "1\n").unwrap();
    let line = next_transition(&records, 3, "online");
    assert_eq!(line["source"], "poll");
    let rest = rest(&mut child, records);
    let kinds: Vec<&str> = rest.iter().filter_map(|record| record["record"].as_str()).collect();
    assert!(
        !kinds.iter().any(|kind| ["wakeup", "ignored", "forged", "overflow"].contains(kind)),
        "{kinds:?}"
    );
    let stopped = rest.last().expect("a last record");
    assert_eq!(stopped["record"], "stopped", "{stopped}");
    assert!(stopped["wakeups"].as_u64() >= Some(2), "{stopped}");
}

#[test]
fn a_change_no_source_announced_is_found_by_a_periodic_reconcile() {
    // Uevents on a copy of a tree: nothing announces a write to the copy's files, so only
    // the periodic reconcile finds it, and says so.
    let dir = seed_box_copy();
    let root = dir.path().to_str().unwrap();
    let (mut child, records) =
        watch(&["--root", root, "--source", "uevent", "--reconcile-interval", "200ms", "--duration", "3"]);
    let start = records.recv_timeout(Duration::from_secs(10)).expect("a first record");
    assert_eq!(start["events"], "uevent", "{start}");
    assert!(start["uevent_port"].is_u64(), "{start}");
    assert_eq!(start["poll_interval_ms"], Value::Null, "{start}");
    assert_eq!(start["reconcile_interval_ms"], 200, "{start}");
    std::fs::write(online_file(dir.path(), 2), "0\n").unwrap();
    let line = next_transition(&records, 2, "offline");
    assert_eq!(line["source"], "reconcile", "{line}");
    std::fs::write(online_file(dir.path(), 2), "1\n").unwrap();
    let line = next_transition(&records, 2, "online");
    assert_eq!(line["source"], "reconcile", "{line}");
    rest(&mut child, records);
}

#[test]
fn the_text_output_has_a_time_on_every_line_and_no_debug_text() {
    let dir = seed_box_copy();
    let root = dir.path().to_str().unwrap();
    let (mut child, lines) = spawn(&["--root", root, "--source", "poll", "--verbose", "--duration", "3"]);
    let first = lines.recv_timeout(Duration::from_secs(10)).expect("a first line");
    std::fs::write(online_file(dir.path(), 3), "0\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(online_file(dir.path(), 2), "garbage\n").unwrap();
    assert!(child.wait().unwrap().success());
    let lines: Vec<String> = std::iter::once(first).chain(lines.iter()).collect();
    let text = lines.join("\n");
    for line in lines.iter().filter(|line| !line.starts_with("  ")) {
        let (time, _) = line.split_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        assert_recent_rfc3339_millis(time);
    }
    let (_, first) = lines[0].split_once(' ').unwrap();
    let expected =
        format!("watching sysfs:{root} (backend sysfs, root {root}) by polling cpuN/online every 100ms");
    assert!(first.starts_with(&expected), "{first:?}");
    assert!(first.contains("reconciling every 1s"), "{first:?}");
    assert!(text.contains("cpu 3 offline (from poll): callbacks"), "{text}");
    assert!(text.contains("poll: wake-up: cpu 3 reported offline"), "{text}");
    assert!(text.contains("poll: ignored: reconcile failed"), "{text}");
    assert!(text.contains("\"garbage\\n\""), "the reason quotes the bad text: {text}");
    assert!(lines.last().unwrap().contains(" stopped: "), "{text}");
    // Rust's Debug text: struct braces, Option and enum variant names.
    for debug in ["{", "Some(", "None", "WatchStats", "Poll", "Uevent", "Completed"] {
        assert!(!text.contains(debug), "{debug:?} in the output:\n{text}");
    }
}

/// The end of a test in a network namespace of its own: continues and kills the child.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let pid = Pid::from_child(&self.0);
        let _ = kill_process(pid, Signal::CONT);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Moves the calling test thread into a new network namespace, so that the uevents it
/// broadcasts reach only the watcher it starts there; `Err` says why it could not.
fn private_network_namespace() -> Result<(), String> {
    // SAFETY: only the network namespace is unshared, not the file table, so no thread
    // loses a descriptor; the namespace is this test thread's (and its children's) alone.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
        .map_err(|errno| format!("unshare(CLONE_NEWNET): {errno}"))
}

fn uevent_sender() -> rustix::fd::OwnedFd {
    net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(netlink::KOBJECT_UEVENT),
    )
    .expect("a netlink socket")
}

#[test]
fn verbose_shows_forged_unrelated_and_overflowed_uevents() {
    let name = "verbose_shows_forged_unrelated_and_overflowed_uevents";
    if let Err(reason) = private_network_namespace() {
        println!("{name}: skipped: needs root for a network namespace of its own: {reason}");
        return;
    }
    let (child, records) = watch(&["--verbose", "--duration", "60"]);
    let child = Reap(child);
    let start = records.recv_timeout(Duration::from_secs(10)).expect("a first record");
    assert_eq!(start["events"], "uevent", "{start}");
    let port = start["uevent_port"].as_u64().expect("the uevent port") as u32;

    // Forged: a CPU uevent sent by this process, not the kernel.
    let sender = uevent_sender();
    let forged = b"offline@/devices/system/cpu/cpu1\0ACTION=offline\0DEVPATH=/devices/system/cpu/cpu1\0SUBSYSTEM=cpu\0";
    if let Err(errno) = net::sendto(&sender, forged, SendFlags::empty(), &SocketAddrNetlink::new(port, 0)) {
        println!("{name}: skipped: cannot send a netlink uevent (needs CAP_NET_ADMIN): {errno}");
        return;
    }
    let sender_port = SocketAddrNetlink::try_from(net::getsockname(&sender).unwrap()).unwrap().pid();
    let record = next(&records, "a forged record", |record| record["record"] == "forged");
    assert_eq!(record["port"], sender_port, "{record}");
    assert_eq!(record["source"], "uevent", "{record}");

    // Ignored: a kernel uevent about another device (a synthetic `change` of /dev/full).
    std::fs::write("/sys/devices/virtual/mem/full/uevent", "change").expect("write a synthetic uevent");
    let record = next(&records, "an ignored record", |record| {
        record["record"] == "ignored"
            && record["reason"]
                .as_str()
                .is_some_and(|reason| reason.contains("change@/devices/virtual/mem/full"))
    });
    assert!(record["reason"].as_str().unwrap().contains("subsystem mem"), "{record}");

    // Overflow: the watcher is stopped while far more than its socket buffer (1 MiB asked,
    // at most twice net.core.rmem_max granted) is broadcast to the uevent group.
    let pid = Pid::from_child(&child.0);
    kill_process(pid, Signal::STOP).unwrap();
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(1 << 20);
    let flood = vec![b'x'; 4096];
    let broadcast = SocketAddrNetlink::new(0, 1);
    for _ in 0..(4 * rmem_max.max(1 << 20)) / flood.len() {
        // The unicast half of a broadcast to port 0 is refused by the kernel's socket;
        // the broadcast itself is made.
        let _ = net::sendto(&sender, &flood, SendFlags::empty(), &broadcast);
    }
    kill_process(pid, Signal::CONT).unwrap();
    let record = next(&records, "an overflow record", |record| record["record"] == "overflow");
    assert_eq!(record["source"], "uevent", "{record}");
}

#[test]
fn watch_hears_real_uevents() {
    let Some(_cpu1) = RealCpu1::acquire() else { return };
    let (mut child, records) = watch(&["--duration", "30"]);
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write("/sys/devices/system/cpu/cpu1/online", "0").unwrap();
    let line = next_transition(&records, 1, "offline");
    assert_eq!(line["source"], "uevent", "{line}");
    std::fs::write("/sys/devices/system/cpu/cpu1/online", "1").unwrap();
    let line = next_transition(&records, 1, "online");
    assert_eq!(line["source"], "uevent", "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_source_the_machine_cannot_give_is_refused_naming_the_option_once() {
    for (args, option, reason) in [
        (&["--fake", "4x2", "--source", "poll"][..], "--source poll", "has no sysfs root"),
        (&["--fake", "4x2", "--poll"], "--poll", "has no sysfs root"),
        (&["--fixture", "seed-box", "--source", "fake"], "--source fake", "does not announce changes"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_numaslab"))
            .arg("watch")
            .args(args)
            .args(["--duration", "1"])
            .output()
            .expect("the binary runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.starts_with(&format!("numaslab: error: {option}: ")), "{args:?}: {stderr}");
        assert_eq!(stderr.matches(reason).count(), 1, "{args:?}: the reason once: {stderr}");
    }
}

#[test]
fn the_help_states_the_time_format_and_the_first_line() {
    let output = Command::new(env!("CARGO_BIN_EXE_numaslab")).args(["watch", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{help}");
    for words in
        ["RFC 3339 in UTC with milliseconds", "The first line", "from reconcile", "--verbose", "--source"]
    {
        assert!(help.contains(words), "{words:?} not in the help:\n{help}");
    }
}
