//! Two `--real` runs at once: the second refuses, naming the holder of the real-hotplug
//! lock. These need root (for `--real`) but no hotplug: the refused run stops before it
//! switches anything, and the holding run in the second test has hotplug off
//! (`--interval-ms 0`), so they run whenever the tests run as root.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{HotplugLock, LOCK_PATH};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn real_run(extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_numaslab"))
        .args(["torture", "--real", "--cpus", "1", "--duration", "1", "--json"])
        .args(extra)
        .output()
        .expect("the binary runs")
}

#[test]
fn a_real_run_refuses_while_another_program_holds_the_lock_and_names_it() {
    if !is_root() {
        eprintln!("skipped: --real needs root, and this test runs as another user");
        return;
    }
    let _held = HotplugLock::acquire();
    let started = Instant::now();
    let output = real_run(&[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "the refusal does not wait for the lock");
    let me = format!("pid {}", std::process::id());
    assert!(stderr.contains(&me) && stderr.contains(LOCK_PATH), "names {me} and the lock: {stderr}");
    assert!(output.stdout.is_empty(), "no run, no report: {}", String::from_utf8_lossy(&output.stdout));
}

#[test]
fn a_second_real_run_refuses_naming_the_first() {
    if !is_root() {
        eprintln!("skipped: --real needs root, and this test runs as another user");
        return;
    }
    // This binary's other real tests wait; the first run takes the file lock itself. Other
    // test binaries may hold the file lock for a while: the first run retries until it
    // gets it.
    let _local = HotplugLock::local_only();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut first = loop {
        let mut child = Command::new(env!("CARGO_BIN_EXE_numaslab"))
            .args(["torture", "--real", "--interval-ms", "0", "--duration", "20", "--json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let holding = format!("pid {}\n", child.id());
        let waited = Instant::now();
        while waited.elapsed() < Duration::from_secs(10) {
            if std::fs::read_to_string(LOCK_PATH).is_ok_and(|text| text.starts_with(&holding)) {
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if child.try_wait().unwrap().is_none() {
            break child;
        }
        assert!(Instant::now() < deadline, "the first run never got the lock");
        std::thread::sleep(Duration::from_millis(500));
    };
    let output = real_run(&[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // SAFETY: kill(2) on our own child's pid, with a valid signal number.
    unsafe { libc::kill(first.id() as libc::pid_t, libc::SIGINT) };
    let first_status = first.wait().unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let holder = format!("pid {}", first.id());
    assert!(stderr.contains(&holder), "names the first run, {holder}: {stderr}");
    assert!(stderr.contains("torture --real --interval-ms 0"), "and its command: {stderr}");
    assert!(first_status.success(), "the first run ends normally on Ctrl-C: {first_status}");
}
