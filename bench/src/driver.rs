//! The driver: one child process per run, interleaved, then medians and the report.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::host::Host;
use crate::impls::malloc::Malloc;
use crate::impls::numaslab::{NumaslabKmalloc, NumaslabRaw, NumaslabTyped};
use crate::impls::pools::{LockfreePool, ObjectPool, ShardedSlab};
use crate::impls::{Impl, ImplId};
use crate::report::{self, Row};
use crate::workloads::{self, Case, Machine, Measurement, Scale};
use crate::{default_out_dir, rss};
use slab_core::FastPathMode;

/// Options of `numaslab-bench drive`.
#[derive(Debug, clap::Args)]
pub(crate) struct DriveOptions {
    /// The smoke check: every workload and implementation, one size, little work.
    #[arg(long)]
    quick: bool,
    /// Runs per case and implementation (default 3 quick, 7 full); the report gives
    /// medians.
    #[arg(long)]
    runs: Option<usize>,
    /// Where results.json, report.md and the charts go (default: target/bench).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only these implementations (comma-separated names).
    #[arg(long = "impls", value_delimiter = ',')]
    implementations: Vec<String>,
    /// Only workloads whose name starts with one of these (comma-separated, e.g. `1,2-batch-lifo`).
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
    /// An implementation left out by the build, with the reason, as `NAME=REASON`
    /// (`cargo xtask bench` passes these).
    #[arg(long = "left-out")]
    left_out: Vec<String>,
    /// Seconds a single run may take before it is killed and reported as failed.
    #[arg(long)]
    timeout: Option<u64>,
}

/// What one run reports, as one JSON line on its standard output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Sample {
    pub(crate) ops: u64,
    pub(crate) elapsed_ns: u64,
    pub(crate) ns_per_op: f64,
    pub(crate) peak_rss_bytes: u64,
    /// The resident set when the run began, before the implementation was built.
    pub(crate) start_rss_bytes: u64,
    pub(crate) detail: String,
}

/// Sizes as const generics: `W` words per object.
macro_rules! with_words {
    ($size:expr, |$words:ident| $body:expr) => {
        match $size {
            8 => {
                const $words: usize = 1;
                $body
            }
            64 => {
                const $words: usize = 8;
                $body
            }
            256 => {
                const $words: usize = 32;
                $body
            }
            other => bail!("object size {other} is not one of 8, 64, 256"),
        }
    };
}

/// The child's side: runs one case once and measures it.
pub(crate) fn run_one(id: ImplId, case: Case, scale: Scale) -> Result<Sample> {
    id.compiled_in().map_err(|reason| anyhow!("{id} is not available: {reason}"))?;
    let start_rss_bytes = rss::current_rss_bytes()?;
    let machine = Machine::for_workload(case.workload)?;
    let measurement = with_words!(case.size, |W| dispatch::<W>(id, &machine, case, scale))?;
    if measurement.ops == 0 {
        bail!("{} did no operations", case.workload.name());
    }
    let elapsed_ns = u64::try_from(measurement.elapsed.as_nanos()).unwrap_or(u64::MAX);
    Ok(Sample {
        ops: measurement.ops,
        elapsed_ns,
        ns_per_op: elapsed_ns as f64 / measurement.ops as f64,
        peak_rss_bytes: rss::peak_rss_bytes()?,
        start_rss_bytes,
        detail: measurement.detail,
    })
}

fn dispatch<const W: usize>(id: ImplId, machine: &Machine, case: Case, scale: Scale) -> Result<Measurement> {
    match id {
        ImplId::NumaslabTyped => measure(NumaslabTyped::<W>::new(machine)?, machine, case, scale),
        ImplId::NumaslabRaw => {
            measure(NumaslabRaw::<W>::new(machine, FastPathMode::Rseq)?, machine, case, scale)
        }
        ImplId::NumaslabRawCas => {
            measure(NumaslabRaw::<W>::new(machine, FastPathMode::Cas)?, machine, case, scale)
        }
        ImplId::NumaslabKmalloc => measure(NumaslabKmalloc::<W>::new(machine)?, machine, case, scale),
        ImplId::NumaslabGlobal => {
            measure(Malloc::<_, W>::new(numaslab::NumaSlabAlloc::new()), machine, case, scale)
        }
        ImplId::Glibc => measure(Malloc::<_, W>::new(std::alloc::System), machine, case, scale),
        #[cfg(feature = "mimalloc")]
        ImplId::Mimalloc => measure(Malloc::<_, W>::new(mimalloc::MiMalloc), machine, case, scale),
        #[cfg(feature = "jemalloc")]
        ImplId::Jemalloc => measure(Malloc::<_, W>::new(tikv_jemallocator::Jemalloc), machine, case, scale),
        #[cfg(feature = "snmalloc")]
        ImplId::Snmalloc => measure(Malloc::<_, W>::new(snmalloc_rs::SnMalloc), machine, case, scale),
        #[cfg(feature = "rpmalloc")]
        ImplId::Rpmalloc => {
            crate::impls::malloc::rpmalloc_process_start();
            measure(Malloc::<_, W>::new(rpmalloc::RpMalloc), machine, case, scale)
        }
        ImplId::LockfreeObjectPool => measure(LockfreePool::<W>::new(), machine, case, scale),
        ImplId::ShardedSlab => measure(ShardedSlab::<W>::new(), machine, case, scale),
        ImplId::ObjectPool => measure(ObjectPool::<W>::new(), machine, case, scale),
        #[allow(unreachable_patterns)] // reachable only when a peer's feature is off
        other => bail!("{other} was not compiled into this harness"),
    }
}

fn measure<I: Impl>(imp: I, machine: &Machine, case: Case, scale: Scale) -> Result<Measurement> {
    let measurement = workloads::run(&imp, machine, case, scale)?;
    imp.finish().context("checking the implementation after the run")?;
    Ok(measurement)
}

/// The parent's side: plans, runs every child, aggregates and reports.
pub(crate) fn drive(options: DriveOptions) -> Result<()> {
    let scale = if options.quick { Scale::Quick } else { Scale::Full };
    let runs = options.runs.unwrap_or(scale.pick(3, 7)).max(1);
    let timeout = Duration::from_secs(options.timeout.unwrap_or(scale.pick(60, 600)));
    let out_dir = options.out.clone().unwrap_or_else(default_out_dir);

    let mut left_out: BTreeMap<String, String> = BTreeMap::new();
    for entry in &options.left_out {
        let (name, reason) = entry.split_once('=').unwrap_or((entry.as_str(), "left out by the build"));
        left_out.insert(name.to_string(), reason.to_string());
    }
    let wanted: Vec<ImplId> = if options.implementations.is_empty() {
        ImplId::ALL.to_vec()
    } else {
        options.implementations.iter().map(|name| ImplId::parse(name)).collect::<Result<_>>()?
    };
    let mut implementations = Vec::new();
    for id in wanted {
        match id.compiled_in() {
            Ok(()) => implementations.push(id),
            Err(reason) => {
                let reason = left_out.get(id.name()).cloned().unwrap_or_else(|| reason.to_string());
                left_out.insert(id.name().to_string(), reason);
            }
        }
    }
    for (name, reason) in &left_out {
        eprintln!("left out: {name}: {reason}");
    }
    let cases: Vec<Case> = workloads::plan(scale)
        .into_iter()
        .filter(|case| {
            options.workloads.is_empty()
                || options.workloads.iter().any(|w| case.workload.name().starts_with(w.as_str()))
        })
        .collect();
    if cases.is_empty() || implementations.is_empty() {
        bail!("nothing to run: {} cases, {} implementations", cases.len(), implementations.len());
    }

    let exe = std::env::current_exe().context("finding the harness binary")?;
    let total = runs * cases.len() * implementations.len();
    eprintln!(
        "running {} cases x {} implementations x {runs} runs = {total} processes ({} mode)",
        cases.len(),
        implementations.len(),
        scale.pick("quick", "full"),
    );
    let began = Instant::now();
    let interactive = std::io::stderr().is_terminal();
    let mut samples: BTreeMap<(usize, ImplId), Vec<Sample>> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut done = 0;
    for run in 0..runs {
        for (case_index, case) in cases.iter().enumerate() {
            // Rotate the order so that no implementation always runs first or after the
            // same neighbour.
            let shift = (run + case_index) % implementations.len();
            let order = implementations[shift..].iter().chain(&implementations[..shift]);
            for &id in order {
                done += 1;
                match run_child(&exe, id, *case, scale, timeout) {
                    Ok(sample) => samples.entry((case_index, id)).or_default().push(sample),
                    Err(error) => {
                        let what = format!("{} {}B {id} (run {})", case.workload.name(), case.size, run + 1);
                        eprintln!("{}FAILED: {what}: {error:#}", if interactive { "\n" } else { "" });
                        failures.push(format!("{what}: {error:#}"));
                    }
                }
            }
            let line = format!(
                "[{done}/{total}] run {}/{runs} {:<28} {:>4}B  {:>5.0}s",
                run + 1,
                case.workload.name(),
                case.size,
                began.elapsed().as_secs_f64()
            );
            if interactive {
                eprint!("\r{line}");
            } else {
                eprintln!("{line}");
            }
        }
    }
    if interactive {
        eprintln!();
    }

    let rows: Vec<Row> = samples
        .into_iter()
        .map(|((case_index, id), samples)| Row::from_samples(cases[case_index], id, &samples))
        .collect();
    let context = report::Context {
        scale,
        runs,
        elapsed: began.elapsed(),
        left_out: left_out.into_iter().collect(),
        failures: failures.clone(),
        host: Some(Host::this_machine()),
    };
    print!("{}", report::terminal_table(&rows, &context));
    report::write_all(&out_dir, &rows, &context)?;
    eprintln!("wrote {}", out_dir.display());
    if !failures.is_empty() {
        bail!("{} of {total} runs failed:\n  {}", failures.len(), failures.join("\n  "));
    }
    Ok(())
}

/// Runs one child and parses its line, killing it after `timeout`.
fn run_child(exe: &PathBuf, id: ImplId, case: Case, scale: Scale, timeout: Duration) -> Result<Sample> {
    let mut command = Command::new(exe);
    command
        .args([
            "run",
            "--impl",
            id.name(),
            "--workload",
            &case.workload.name(),
            "--size",
            &case.size.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if scale == Scale::Quick {
        command.arg("--quick");
    }
    let mut child = command.spawn().with_context(|| format!("starting {}", exe.display()))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for the run")? {
            break status;
        }
        if Instant::now() > deadline {
            // Kill failing means it exited meanwhile; wait reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
            bail!("timed out after {}s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        pipe.read_to_string(&mut stdout).context("reading the run's output")?;
    }
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr).context("reading the run's errors")?;
    }
    if !status.success() {
        bail!("exited with {status}: {}", stderr.trim());
    }
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("parsing the run's output {line:?}"))
}
