//! `numaslab watch` end to end: a copy of a fixture tree whose `online` files a test
//! writes, followed by polling; and (opt-in, as root) the real machine through uevents.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

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

/// Starts `numaslab watch --json` with `args`; returns the child and a channel of its lines.
fn watch(args: &[&str]) -> (Child, mpsc::Receiver<Value>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_numaslab"))
        .args(["watch", "--json"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary runs");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
            if tx.send(value).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn next_line(lines: &mpsc::Receiver<Value>, cpu: u64, event: &str) -> Value {
    loop {
        let line = lines.recv_timeout(Duration::from_secs(10)).expect("a transition line within 10 s");
        if line["cpu"] == cpu && line["event"] == event {
            return line;
        }
    }
}

#[test]
fn watch_follows_a_fixture_tree_by_polling() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&workspace.join("fixtures/seed-box"), dir.path());
    let root = dir.path().to_str().unwrap();
    let (mut child, lines) = watch(&["--root", root, "--duration", "20"]);
    std::thread::sleep(Duration::from_millis(500));
    let online = dir.path().join("sys/devices/system/cpu/cpu3/online");
    std::fs::write(&online, "0\n").unwrap();
    let line = next_line(&lines, 3, "offline");
    assert_eq!(line["source"], "poll");
    assert!(line["callbacks_us"].is_u64(), "{line}");
    std::fs::write(&online, "1\n").unwrap();
    let line = next_line(&lines, 3, "online");
    assert_eq!(line["source"], "poll");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn watch_hears_real_uevents() {
    let Some(_cpu1) = RealCpu1::acquire() else { return };
    let (mut child, lines) = watch(&["--duration", "30"]);
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write("/sys/devices/system/cpu/cpu1/online", "0").unwrap();
    let line = next_line(&lines, 1, "offline");
    assert_eq!(line["source"], "uevent", "{line}");
    std::fs::write("/sys/devices/system/cpu/cpu1/online", "1").unwrap();
    let line = next_line(&lines, 1, "online");
    assert_eq!(line["source"], "uevent", "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
}
