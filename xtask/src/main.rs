//! numaslab's automation, one place for what CI and developers run alike.
//!
//! `cargo xtask ci` is what `.ci/run` and `.github/workflows/ci.yml` call.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

mod bench;
mod code_map;
mod fixture;
mod readme;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        print_usage();
        bail!("no command given");
    };
    match command.as_str() {
        "ci" => ci(rest),
        "bench" => bench::bench(rest),
        "code-map" => code_map::check(&root()),
        "fixture" => fixture::fixture(&root(), rest),
        "capture-fixture" => fixture::capture_fixture(&root(), rest),
        "help" | "--help" | "-h" => {
            print_usage();
            Ok(())
        }
        other => {
            print_usage();
            bail!("unknown command {other:?}")
        }
    }
}

fn print_usage() {
    eprintln!(
        "usage: cargo xtask COMMAND\n\n\
         commands:\n  \
         ci               formatting, clippy, the test suite and the loom models, as CI runs them\n  \
         bench [--quick]  builds bench/ in release, runs every workload for every allocator;\n                   \
         writes target/bench/results.json and report.md\n  \
         code-map         checks that docs/ARCHITECTURE.md's code map names every Rust file\n  \
         fixture NAME     writes fixtures/NAME/ from fixtures/NAME.machine (--all: every one)\n  \
         capture-fixture NAME [--from ROOT]\n                   \
         copies the live machine's topology files into fixtures/NAME/\n"
    );
}

/// The workspace root (xtask's parent folder).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_path_buf()
}

/// Runs a command in the workspace root, failing with the command line if it fails.
fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot start {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

fn ci(_args: &[String]) -> Result<()> {
    let readme = readme::read(&root())?;
    code_map::check(&root())?;
    run("cargo", &["fmt", "--all", "--check"], &[])?;
    run("cargo", &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"], &[])?;
    // The README's two commands as a newcomer types them: the main job (shortened, so
    // that CI stays quick), then the test suite.
    run("sh", &["-c", &readme::with_program_args(&readme.main_job, "--duration 5")], &[])?;
    run("sh", &["-c", &readme.tests], &[])?;
    loom()?;
    fallbacks()?;
    // The benchmark harness in its quick mode (about a minute once built), so that it
    // cannot rot; full figures come from `cargo xtask bench`.
    bench::bench(&["--quick".to_string()])?;
    // The harness's own unit tests (host facts and memory figures against the kernel's),
    // in the release target folder the quick run just built, without the C allocators.
    let bench_target = target_dir("bench-build")?;
    run(
        "cargo",
        &[
            "test",
            "--release",
            "--no-default-features",
            "--manifest-path",
            "bench/Cargo.toml",
            "--target-dir",
            &bench_target,
        ],
        &[],
    )?;
    Ok(())
}

/// Tests the portable fallbacks on Linux, as mio forces its portable backend: the current
/// CPU from `sched_getcpu` instead of rseq, hotplug found by polling instead of uevents,
/// and the CAS slot protocol instead of restartable sequences; then the rseq sequences
/// with injected delays. Built in its own target folder so the main build's cache stays valid.
fn fallbacks() -> Result<()> {
    let target = target_dir("fallbacks")?;
    // slab-core with the CAS slot protocol instead of restartable sequences: the normal
    // run above uses rseq on this machine wherever the tests use the live topology.
    run(
        "cargo",
        &["test", "-p", "topology", "-p", "hotplug", "-p", "slab-core", "--target-dir", &target],
        &[("RUSTFLAGS", "--cfg numaslab_force_getcpu --cfg numaslab_force_poll --cfg numaslab_force_cas")],
    )?;
    // rseq mode with a spin before every commit, so that the stress test sees the kernel
    // abort sequences and requires that it did.
    let target = target_dir("rseq-inject")?;
    run(
        "cargo",
        &["test", "-p", "slab-core", "--lib", "--target-dir", &target, "--", "rseq", "cache::tests"],
        &[("RUSTFLAGS", "--cfg numaslab_rseq_inject")],
    )
}

/// The loom models of slab-core (`crates/slab-core/tests/loom.rs`): in release, with a
/// small preemption bound, and in their own target folder because `--cfg slab_core_loom` rebuilds
/// every crate.
fn loom() -> Result<()> {
    let target = target_dir("loom")?;
    run(
        "cargo",
        &["test", "-p", "slab-core", "--release", "--test", "loom", "--target-dir", &target],
        &[("RUSTFLAGS", "--cfg slab_core_loom"), ("LOOM_MAX_PREEMPTIONS", "2")],
    )
}

/// `target/NAME` in the workspace, as a `--target-dir` argument: a build whose RUSTFLAGS
/// differ gets its own folder so that the main build's cache stays valid.
fn target_dir(name: &str) -> Result<String> {
    let path = root().join("target").join(name);
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("the target path {} is not UTF-8", path.display()))
}
