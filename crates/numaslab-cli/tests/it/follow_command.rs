//! `numaslab torture --follow`: the torture switches nothing while another program (here
//! the test) writes `cpuN/online`, and the report counts and checks those transitions: on
//! a fixture's private copy, whose root the command names on its first stderr line, and
//! (opt-in, as root) on this machine's cpu1 through the kernel's uevents.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::RealCpu1;

/// A running `numaslab torture --follow --json`, with the stderr lines it printed.
struct Follower {
    child: Child,
    stderr: BufReader<ChildStderr>,
    first_line: String,
}

impl Follower {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_numaslab"))
            .args(["torture", "--follow", "--json", "--duration", "120"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut first_line = String::new();
        stderr.read_line(&mut first_line).unwrap();
        // Printed once the watcher runs: what the test writes from now on is counted.
        assert!(first_line.contains("following"), "the first line says what is followed: {first_line:?}");
        Self { child, stderr, first_line }
    }

    /// The sysfs root the follower polls, from its first line.
    fn root(&self) -> PathBuf {
        let (_, rest) = self.first_line.split_once("write 0 or 1 to ").expect("names the files to write");
        PathBuf::from(
            rest.trim().strip_suffix("/sys/devices/system/cpu/cpuN/online").expect("the file pattern"),
        )
    }

    /// Ctrl-C, then the report and the exit status.
    fn finish(mut self) -> (Value, Option<i32>) {
        // SAFETY: kill(2) on our own child's pid, with a valid signal number.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) }, 0);
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.stderr, &mut rest);
        let output = self.child.wait_with_output().unwrap();
        let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!("{e}: stdout {:?}, stderr {rest}", String::from_utf8_lossy(&output.stdout))
        });
        (report, output.status.code())
    }
}

fn set_online(root: &Path, cpu: u32, online: bool) {
    let path = root.join(format!("sys/devices/system/cpu/cpu{cpu}/online"));
    std::fs::write(&path, if online { "1\n" } else { "0\n" })
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // Several of the watcher's 100 ms polls, so that no write hides the next one of the
    // same CPU even on a loaded machine; the run's last reconcile catches the last write.
    std::thread::sleep(Duration::from_millis(500));
}

fn failed_checks(report: &Value) -> Vec<&Value> {
    report["checks"].as_array().unwrap().iter().filter(|check| check["passed"] != true).collect()
}

#[test]
fn follow_counts_and_checks_transitions_another_program_makes_on_a_fixture_copy() {
    let follower = Follower::start(&["--fixture", "seed-box", "--debug"]);
    let root = follower.root();
    assert!(root.join("sys/devices/system/cpu/cpu3/online").is_file(), "{}", root.display());
    let rounds = 3;
    for _ in 0..rounds {
        // Node 1 (CPUs 2 and 3) loses its last CPU, then comes back.
        set_online(&root, 3, false);
        set_online(&root, 2, false);
        set_online(&root, 3, true);
        set_online(&root, 2, true);
    }
    let (report, status) = follower.finish();
    assert_eq!(status, Some(0), "failed checks {:#?}", failed_checks(&report));
    assert_eq!(report["checks_passed"], true);
    assert_eq!(report["hotplug"], "follow");
    assert_eq!(report["watched"]["mode"], "poll", "{:#}", report["watched"]);
    let transitions = &report["transitions"];
    assert_eq!(transitions["done"], 4 * rounds, "every write was followed: {transitions:#}");
    assert_eq!(transitions["offline"], 2 * rounds, "{transitions:#}");
    assert_eq!(transitions["online"], 2 * rounds, "{transitions:#}");
    assert_eq!(transitions["failed"], 0, "{transitions:#}");
    assert_eq!(transitions["nodes_emptied"], rounds, "{transitions:#}");
    assert_eq!(report["callback_latency"]["count"], 4 * rounds, "the callbacks ran for each: {report:#}");
    assert!(report["ops"].as_u64().unwrap() > 1000, "the workers ran: {report:#}");
}

#[test]
fn a_followed_transition_whose_callback_fails_fails_a_check() {
    // The injected fault refuses the first bring-up of cpu1, the first switchable CPU.
    let follower = Follower::start(&["--fixture", "seed-box", "--inject-fault", "fail-one-transition"]);
    let root = follower.root();
    set_online(&root, 1, false);
    set_online(&root, 1, true);
    let (report, status) = follower.finish();
    assert_eq!(status, Some(3), "{report:#}");
    assert_eq!(report["transitions"]["failed"], 1, "{report:#}");
    let check = crate::support::check(&report, "every hotplug transition completed");
    assert_eq!(check["passed"], false, "{check}");
    assert!(check["detail"].as_str().unwrap().contains("made by another program"), "{check}");
}

/// The test switches cpu1 through the kernel's own interface while a `--follow --real`
/// run follows. The test holds the real-hotplug lock (`RealCpu1`, which also brings cpu1
/// back online however the test ends); the follower takes no lock since it switches
/// nothing, so the two do not wait for each other.
#[test]
fn follow_real_counts_transitions_made_through_the_kernel() {
    let Some(_cpu1) = RealCpu1::acquire() else { return };
    let follower = Follower::start(&["--real"]);
    assert!(follower.first_line.contains("uevents"), "{}", follower.first_line);
    let rounds = 3;
    for _ in 0..rounds {
        set_online(Path::new("/"), 1, false);
        set_online(Path::new("/"), 1, true);
    }
    let (report, status) = follower.finish();
    assert!(crate::support::cpu1_online(), "cpu1 is back online");
    assert_eq!(status, Some(0), "failed checks {:#?}", failed_checks(&report));
    assert_eq!(report["watched"]["mode"], "uevent", "{:#}", report["watched"]);
    let transitions = &report["transitions"];
    assert_eq!(transitions["offline"], rounds, "{transitions:#}");
    assert_eq!(transitions["online"], rounds, "{transitions:#}");
    assert_eq!(transitions["failed"], 0, "{transitions:#}");
}

/// The same with `stress-ng`'s cpu-online stressor as the other program (if installed):
/// it takes cpu1 offline and online as fast as the kernel allows, faster than a
/// reconcile may look, so the follower sees some transitions, not each one; every
/// transition it sees must pass the checks, and as stress-ng leaves cpu1 online, each
/// offline it saw is matched by an online.
#[test]
fn follow_real_under_stress_ng_cpu_online() {
    let Some(_cpu1) = RealCpu1::acquire() else { return };
    if Command::new("stress-ng").arg("--version").output().is_err() {
        eprintln!("skipped: stress-ng is not installed (apt-get install stress-ng)");
        return;
    }
    let follower = Follower::start(&["--real"]);
    let stress = Command::new("stress-ng")
        .args(["--cpu-online", "1", "--cpu-online-ops", "40", "--pathological", "--timeout", "30s"])
        .output()
        .unwrap();
    assert!(stress.status.success(), "stress-ng: {}", String::from_utf8_lossy(&stress.stderr));
    std::thread::sleep(Duration::from_millis(500));
    let (report, status) = follower.finish();
    assert!(crate::support::cpu1_online(), "cpu1 is back online");
    assert_eq!(status, Some(0), "failed checks {:#?}", failed_checks(&report));
    let transitions = &report["transitions"];
    assert!(transitions["offline"].as_u64().unwrap() >= 1, "saw stress-ng's transitions: {transitions:#}");
    assert_eq!(transitions["offline"], transitions["online"], "{transitions:#}");
    assert_eq!(transitions["failed"], 0, "{transitions:#}");
}
