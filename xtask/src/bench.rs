//! `cargo xtask bench [--quick] [DRIVER OPTIONS]`: builds the benchmark harness (`bench/`,
//! its own cargo workspace) in release and runs it.
//!
//! The harness compiles C and C++ allocators from crates.io (mimalloc, jemalloc, snmalloc,
//! rpmalloc). Where one cannot be built on this machine, the build is retried without it
//! and the report names it with the compiler's reason, so the other figures still come.
//! Options after `--quick` go to the harness's `drive` command (`--runs N`,
//! `--impls a,b`, `--workloads 1,2-batch-lifo`, `--timeout SECS`).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The harness's cargo features that each build one C or C++ allocator, and the crate
/// behind each, for messages.
const NATIVE_PEERS: [(&str, &str); 4] = [
    ("mimalloc", "mimalloc"),
    ("jemalloc", "tikv-jemallocator"),
    ("snmalloc", "snmalloc-rs"),
    ("rpmalloc", "rpmalloc"),
];

pub(crate) fn bench(args: &[String]) -> Result<()> {
    let root = super::root();
    let manifest = root.join("bench").join("Cargo.toml");
    let target = root.join("target").join("bench-build");
    let out = root.join("target").join("bench");

    let Built { features, left_out } = build(&manifest, &target)?;
    let binary = target.join("release").join("numaslab-bench");
    let mut command = Command::new(&binary);
    command.arg("drive").arg("--out").arg(&out).args(args).current_dir(&root);
    for (feature, reason) in &left_out {
        command.arg("--left-out").arg(format!("{feature}={reason}"));
    }
    // Errors of a failed run stay short; panics still print their backtrace.
    command.env("RUST_LIB_BACKTRACE", "0");
    eprintln!(
        "$ {} drive --out {} {} (features: {})",
        binary.display(),
        out.display(),
        args.join(" "),
        features.join(",")
    );
    let status = command.status().with_context(|| format!("cannot start {}", binary.display()))?;
    if !status.success() {
        bail!("the benchmark harness failed with {status}");
    }
    eprintln!("results: {}, report: {}", out.join("results.json").display(), out.join("report.md").display());
    Ok(())
}

/// What the build produced: the native peers' features built in, and those left out with
/// the reason.
struct Built {
    features: Vec<String>,
    left_out: Vec<(String, String)>,
}

/// Builds the harness with every peer; if that fails, finds which native peers do not
/// build here and builds without them.
fn build(manifest: &Path, target: &Path) -> Result<Built> {
    let all: Vec<String> = NATIVE_PEERS.iter().map(|(feature, _)| feature.to_string()).collect();
    if cargo_build(manifest, target, None)?.is_ok() {
        return Ok(Built { features: all, left_out: Vec::new() });
    }
    eprintln!(
        "the harness did not build with every peer; building each native peer alone to find the culprit"
    );
    if let Err(reason) = cargo_build(manifest, target, Some(&[]))? {
        bail!("the benchmark harness does not build even without the native peers:\n{reason}");
    }
    let mut features = Vec::new();
    let mut left_out = Vec::new();
    for (feature, krate) in NATIVE_PEERS {
        match cargo_build(manifest, target, Some(&[feature]))? {
            Ok(()) => features.push(feature.to_string()),
            Err(reason) => {
                let reason = format!("{krate} does not build here{}: {reason}", missing_tools_hint());
                eprintln!("left out: {feature}: {reason}");
                left_out.push((feature.to_string(), reason));
            }
        }
    }
    let chosen: Vec<&str> = features.iter().map(String::as_str).collect();
    if let Err(reason) = cargo_build(manifest, target, Some(&chosen))? {
        bail!("the benchmark harness does not build with {}:\n{reason}", chosen.join(","));
    }
    Ok(Built { features, left_out })
}

/// Runs `cargo build --release` on the harness: default features when `features` is
/// `None`, else exactly those. `Ok(Err(reason))` when cargo ran and failed, with the
/// compiler's error lines as the reason.
fn cargo_build(manifest: &Path, target: &Path, features: Option<&[&str]>) -> Result<Result<(), String>> {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.args(["build", "--release", "--manifest-path"]).arg(manifest).env("CARGO_TARGET_DIR", target);
    if let Some(features) = features {
        command.arg("--no-default-features");
        if !features.is_empty() {
            command.arg("--features").arg(features.join(","));
        }
    }
    let shown = match features {
        None => "default features".to_string(),
        Some(list) => format!("features [{}]", list.join(",")),
    };
    eprintln!("$ cargo build --release --manifest-path {} ({shown})", manifest.display());
    let output = command.output().context("cannot start cargo")?;
    if output.status.success() {
        return Ok(Ok(()));
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{}", tail(&stderr, 40));
    let errors: Vec<&str> =
        stderr.lines().filter(|line| line.contains("error") || line.contains("not found")).take(6).collect();
    let reason = if errors.is_empty() { tail(&stderr, 6) } else { errors.join(" / ") };
    Ok(Err(reason))
}

/// Names the build tools the native peers need that are missing (`make`, a C++
/// compiler), with the Debian package that brings them.
fn missing_tools_hint() -> String {
    let missing: Vec<&str> = [("make", "make"), ("c++", "g++"), ("cc", "gcc")]
        .iter()
        .filter(|(tool, _)| {
            Command::new(tool).arg("--version").output().map_or(true, |o| !o.status.success())
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        String::new()
    } else {
        format!(" (missing tools; `apt-get install {}` would bring them)", missing.join(" "))
    }
}

/// The last `lines` lines of a text.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
