//! Every option of every subcommand given bad values: no input panics, each is refused
//! with the exit status `--help` documents (2 for a value clap's parsers refuse, 1 for one
//! that only the machine or the run can refuse), and the message names the option and
//! the value.

use std::process::{Command, Output};

fn numaslab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_numaslab")).args(args).output().expect("the binary runs")
}

/// Options with a bad value, the status expected, and the text the message must hold
/// besides the option and the value.
struct Case {
    option: &'static str,
    value: &'static str,
    status: i32,
    reason: &'static str,
}

const fn case(option: &'static str, value: &'static str, status: i32, reason: &'static str) -> Case {
    Case { option, value, status, reason }
}

/// The options every subcommand shares: which machine.
const MACHINE: &[Case] = &[
    case("--root", "/nonexistent/numaslab-root", 1, "not a sysfs tree"),
    case("--fixture", "nosuch", 1, "available: "),
    case("--fixture", "/nonexistent/numaslab-fixture", 1, "not a folder"),
    case("--fake", "3x2", 1, "multiple of the node count"),
    case("--fake", "axb", 1, "not a number"),
    case("--fake", "0x0", 1, "positive"),
    case("--fake", "100000000x1", 1, "beyond the limit"),
];

const DURATION: &[Case] = &[
    case("--duration", "-1", 2, "negative"),
    case("--duration", "-0.5s", 2, "negative"),
    case("--duration", "1e30", 2, "too long"),
    case("--duration", "400d", 2, "too long"),
    case("--duration", "inf", 2, "not a finite"),
    case("--duration", "NaN", 2, "not a finite"),
    case("--duration", "0", 2, "more than zero"),
    case("--duration", "3 parsecs", 2, "such as 500ms"),
    case("--duration", "99999999999999999999999s", 2, "such as 500ms"),
    case("--duration", "1e-12", 2, "shorter than a nanosecond"),
];

const TORTURE: &[Case] = &[
    case("--workers", "0", 2, "from 1 to 1024"),
    case("--workers", "-1", 2, "negative"),
    case("--workers", "1025", 2, "from 1 to 1024"),
    case("--workers", "abc", 2, "not a whole number"),
    case("--workers", "99999999999999999999999", 2, "too large"),
    case("--interval-ms", "-1", 2, "negative"),
    case("--interval-ms", "1e30", 2, "too long"),
    case("--interval-ms", "inf", 2, "not a finite"),
    case("--interval-ms", "fortnight", 2, "such as 500ms"),
    case("--sizes", "0", 2, "too small"),
    case("--sizes", "-8", 2, "negative"),
    case("--sizes", "99999999999", 2, "too large"),
    case("--sizes", "abc", 2, "not a whole number"),
    case("--sizes", "32,32", 2, "sizes 32 and 32 are both served by one cache of 32 bytes"),
    case("--sizes", "1,2", 2, "sizes 1 and 2 are both served by one cache of 8 bytes"),
    case("--sizes", "64,33,40", 2, "sizes 33 and 40 are both served by one cache of 40 bytes"),
    case("--sizes", "32,x", 2, "\"x\": not a whole number"),
    case("--interval-ms", "1e-9", 2, "shorter than a nanosecond"),
    case("--seed", "-1", 2, "negative"),
    case("--seed", "18446744073709551616", 2, "too large"),
    case("--seed", "0x5eed", 2, "not a whole number"),
    case("--max-live", "0", 2, "too small"),
    case("--max-live", "-1", 2, "negative"),
    case("--max-live", "1048577", 2, "too large"),
    case("--remote-percent", "150", 2, "from 0 to 100"),
    case("--remote-percent", "-1", 2, "negative"),
    case("--remote-percent", "abc", 2, "not a whole number"),
    case("--cpus", "abc", 2, "not a decimal id"),
    case("--cpus", "-1", 2, "expected a list"),
    case("--cpus", "0-4294967295", 2, "expected a list"),
    case("--cpus", "0-99", 1, "4-99 does not exist"),
    case("--cpus", "7", 1, "7 does not exist"),
    case("--cpus", "0", 1, "cannot be switched"),
    case("--inject-fault", "nosuch", 2, "known: "),
];

fn sweep(prefix: &[&str], cases: &[Case], failures: &mut Vec<String>) {
    for case in cases {
        let mut args = prefix.to_vec();
        args.extend([case.option, case.value]);
        let output = numaslab(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let status = output.status.code();
        let mut wrong = Vec::new();
        if status == Some(101) || stderr.contains("panicked") {
            wrong.push("it panicked".to_owned());
        }
        if status != Some(case.status) {
            wrong.push(format!("exit status {status:?}, expected {}", case.status));
        }
        for expected in [case.option, case.value, case.reason] {
            if !stderr.contains(expected) {
                wrong.push(format!("the message does not say {expected:?}"));
            }
        }
        if !output.stdout.is_empty() {
            wrong.push(format!("it printed to stdout: {}", String::from_utf8_lossy(&output.stdout)));
        }
        if !wrong.is_empty() {
            failures.push(format!("numaslab {args:?}: {}\n  stderr: {stderr}", wrong.join("; ")));
        }
    }
}

#[test]
fn every_option_of_every_subcommand_refuses_bad_values_without_panicking() {
    let mut failures = Vec::new();
    for prefix in [&["torture"][..], &[]] {
        sweep(prefix, MACHINE, &mut failures);
        sweep(prefix, DURATION, &mut failures);
        sweep(prefix, TORTURE, &mut failures);
    }
    sweep(&["watch"], MACHINE, &mut failures);
    sweep(&["watch"], DURATION, &mut failures);
    sweep(&["topology"], MACHINE, &mut failures);
    assert!(failures.is_empty(), "{} bad inputs handled wrongly:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn values_that_only_fail_together_are_refused_naming_each_option() {
    let output = numaslab(&["torture", "--workers", "1024", "--max-live", "1048576"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in ["--workers 1024", "--max-live 1048576", "--sizes up to 4096", "MiB"] {
        assert!(stderr.contains(expected), "{expected:?}: {stderr}");
    }
    // Two machines at once is a usage error, caught by clap.
    let output = numaslab(&["torture", "--real", "--fake", "4x2"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--real"));
    // A follower switches nothing, so the options of the switching make no sense with it.
    for option in [["--cpus", "1"], ["--interval-ms", "5"]] {
        let output = numaslab(&["torture", "--follow", option[0], option[1]]);
        assert_eq!(output.status.code(), Some(2), "{option:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--follow") && stderr.contains(option[0]), "{stderr}");
    }
}

#[test]
fn an_unknown_fixture_lists_the_names_and_no_build_path() {
    let output = numaslab(&["topology", "--fixture", "nosuch"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    for name in ["seed-box", "memoryless-node", "cpuless-node", "large-sparse"] {
        assert!(stderr.contains(name), "{name}: {stderr}");
    }
    let build_dir = env!("CARGO_MANIFEST_DIR");
    assert!(!stderr.contains(build_dir) && !stderr.contains("crates/topology"), "{stderr}");
}

#[test]
fn help_documents_the_exit_statuses() {
    for args in [&["--help"][..], &["torture", "--help"], &["watch", "--help"], &["topology", "--help"]] {
        let output = numaslab(args);
        assert!(output.status.success(), "{args:?}");
        let help = String::from_utf8_lossy(&output.stdout);
        for line in ["Exit status:", "  0  ", "  1  ", "  2  ", "  3  "] {
            assert!(help.contains(line), "{args:?} lacks {line:?}:\n{help}");
        }
    }
}

#[test]
fn durations_take_units() {
    // 700 ms, not 700 s: the upper bound only tells the units apart, so a loaded machine
    // that stops the run late still passes.
    for (args, at_least, below) in [
        (&["torture", "--duration", "700ms", "--json"][..], 0.6, 60.0),
        (&["torture", "--duration", "0.7", "--interval-ms", "5ms", "--json"], 0.6, 60.0),
    ] {
        let output = numaslab(args);
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let secs = report["duration_secs"].as_f64().unwrap();
        assert!(secs >= at_least && secs < below, "{args:?} ran {secs} s");
    }
    let output = numaslab(&["watch", "--fake", "4x2", "--duration", "300ms", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn a_report_that_cannot_be_written_is_an_error_not_a_panic() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("skipped: this machine has no /dev/full to write to");
        return;
    };
    for json in [false, true] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_numaslab"));
        command.args(["torture", "--duration", "100ms"]).stdout(full.try_clone().unwrap());
        if json {
            command.arg("--json");
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "json {json}: {stderr}");
        assert!(stderr.contains("cannot write the report to stdout: No space left on device"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn an_error_says_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let seed_box = topology::machine_file::MachineDescription::builtin("seed-box").unwrap().unwrap();
    seed_box.write_tree(root).unwrap();
    // A folder where cpu/present should be: the io error's text ends the message once.
    let present = root.join("sys/devices/system/cpu/present");
    std::fs::remove_file(&present).unwrap();
    std::fs::create_dir(&present).unwrap();
    let output = numaslab(&["topology", "--root", root.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.matches("not a regular file").count(), 1, "{stderr}");
}
