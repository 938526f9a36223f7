//! `numaslab torture`: the seed's torture test, the command's default job.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use numaslab::torture::{self, Fault, Progress, TortureConfig};
use numaslab::NumaSlab;
use topology::CpuSet;

use super::machine::{DefaultMachine, MachineArgs};

/// Arguments of `numaslab torture`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TortureArgs {
    #[command(flatten)]
    pub(crate) machine: MachineArgs,
    /// Run on this machine, switching its real CPUs (root only; never cpu0; every CPU
    /// taken offline is brought back at the end).
    #[arg(long, conflicts_with_all = ["root", "fixture", "fake"])]
    pub(crate) real: bool,
    /// How long the workers run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Worker threads.
    #[arg(long, default_value_t = 4)]
    pub(crate) workers: usize,
    /// Milliseconds between two hotplug steps; 0 turns hotplug off.
    #[arg(long, default_value_t = 20)]
    pub(crate) interval_ms: u64,
    /// Object sizes in bytes, one cache each.
    #[arg(long, value_delimiter = ',', default_value = "32,192,1024,4096")]
    pub(crate) sizes: Vec<usize>,
    /// Create the caches in debug mode (red zones, poison, misuse detection).
    #[arg(long)]
    pub(crate) debug: bool,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0x5eed)]
    pub(crate) seed: u64,
    /// Objects each worker keeps alive at most.
    #[arg(long, default_value_t = 512)]
    pub(crate) max_live: usize,
    /// Share of frees handed to a worker on another node, in percent.
    #[arg(long, default_value_t = 25)]
    pub(crate) remote_percent: u32,
    /// CPUs the hotplug thread may switch, as a list (`1-3`); default: all but cpu0.
    #[arg(long)]
    pub(crate) cpus: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Inject a fault so that a check must fail (for the project's own tests).
    #[arg(long, hide = true, value_parser = parse_fault)]
    pub(crate) inject_fault: Option<Fault>,
}

fn parse_fault(text: &str) -> Result<Fault, String> {
    match text {
        "leak-one" => Ok(Fault::LeakOne),
        "panic-one" => Ok(Fault::PanicOne),
        other => Err(format!("unknown fault {other:?}; known: leak-one, panic-one")),
    }
}

/// Runs the torture; returns whether every check passed.
pub(crate) fn run(args: &TortureArgs) -> Result<bool> {
    let topology = if args.real {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            bail!("--real switches this machine's CPUs and needs root; run it as root, or drop --real to use the embedded seed box");
        }
        super::machine::live()?
    } else {
        args.machine.open(DefaultMachine::SeedBox)?
    };
    let hotplug_cpus = match &args.cpus {
        Some(list) => Some(list.parse::<CpuSet>().with_context(|| format!("--cpus {list:?}"))?),
        None => None,
    };
    if args.real && hotplug_cpus.as_ref().is_some_and(|cpus| cpus.contains(0)) {
        bail!("--real never switches cpu0; remove it from --cpus");
    }
    if !(args.duration.is_finite() && args.duration > 0.0) {
        bail!("--duration must be a positive number of seconds, not {}", args.duration);
    }
    let config = TortureConfig {
        duration: Duration::from_secs_f64(args.duration),
        workers: args.workers,
        interval: Duration::from_millis(args.interval_ms),
        sizes: args.sizes.clone(),
        debug: args.debug,
        seed: args.seed,
        max_live: args.max_live,
        remote_percent: args.remote_percent,
        hotplug_cpus,
        fault: args.inject_fault,
    };
    let slab = NumaSlab::new(topology).context("setting up the allocator")?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second Ctrl-C while the first is being handled still only asks to stop: the
        // CPUs must come back online before the process ends.
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .context("installing the Ctrl-C handler")?;
    }
    let progress = Progress::default();
    let done = AtomicBool::new(false);
    let report = std::thread::scope(|scope| {
        let bar = (!args.json).then(|| scope.spawn(|| show_progress(&progress, &done, config.duration)));
        let report = torture::run(&slab, &config, &stop, &progress);
        done.store(true, Ordering::Relaxed);
        if let Some(bar) = bar {
            let _ = bar.join();
        }
        report
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    std::io::stdout().flush()?;
    Ok(report.checks_passed)
}

/// Draws elapsed time, operations per second and transitions until `done`.
fn show_progress(progress: &Progress, done: &AtomicBool, duration: Duration) {
    let bar = indicatif::ProgressBar::new(duration.as_millis() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let elapsed = started.elapsed();
        let ops = progress.ops.load(Ordering::Relaxed);
        bar.set_position(elapsed.as_millis() as u64);
        bar.set_message(format!(
            "{:>10.0} ops/s  {} transitions",
            ops as f64 / elapsed.as_secs_f64().max(1e-3),
            progress.transitions.load(Ordering::Relaxed)
        ));
    }
    bar.finish_and_clear();
}
