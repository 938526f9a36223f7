//! `numaslab torture`: the seed's torture test, the command's default job.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use numaslab::torture::{self, Fault, HotplugDriver, Progress, TortureConfig};
use numaslab::NumaSlab;
use topology::{CpuSet, Topology};

use super::backend::{DefaultMachine, MachineArgs};
use super::parse;
use super::real_lock::{self, RealLock};

/// Most worker threads a run may start.
const MAX_WORKERS: usize = 1024;
/// Most objects one worker may keep alive.
const MAX_LIVE: usize = 1 << 20;
/// Largest object size: 2 MiB. The allocator's biggest slab (order 10, 4 MiB) holds a
/// slot of that size with its descriptor, red zones included.
const MAX_OBJECT_SIZE: usize = 1 << 21;
/// Most memory the workers together may hold at once (workers × max-live × largest
/// size): more would only measure the machine's swap.
const MAX_HELD_BYTES: u128 = 8 << 30;

/// Arguments of `numaslab torture`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TortureArgs {
    #[command(flatten)]
    pub(crate) machine: MachineArgs,
    /// Run on this machine, switching its real CPUs (root only, unless with --follow;
    /// never cpu0; every CPU taken offline is brought back at the end). Takes an exclusive lock on
    /// /tmp/numaslab-real-hotplug.lock: a second --real run refuses while one runs.
    #[arg(long, conflicts_with_all = ["root", "fixture", "fake"])]
    pub(crate) real: bool,
    /// Switch no CPU: follow, through the hotplug watcher, the transitions another
    /// program makes (`chcpu`, a VM's vCPU unplug, a script writing `cpuN/online` of a
    /// fixture copy or `--root` tree), and count and check them as the torture's own.
    /// With --real it takes no lock, since it switches nothing.
    #[arg(long, conflicts_with_all = ["cpus", "interval_ms"])]
    pub(crate) follow: bool,
    /// How long the workers run: seconds (`2.5`) or a duration with a unit (`500ms`, `3s`,
    /// `2m`).
    #[arg(long, default_value = "10", value_parser = parse::duration, allow_hyphen_values = true)]
    pub(crate) duration: Duration,
    /// Worker threads (1 to 1024).
    #[arg(long, default_value_t = 4, value_parser = workers, allow_hyphen_values = true)]
    pub(crate) workers: usize,
    /// Time between two hotplug steps: milliseconds (`20`) or a duration with a unit
    /// (`20ms`, `1s`); 0 turns hotplug off.
    #[arg(long, value_name = "DURATION", default_value = "20", value_parser = interval, allow_hyphen_values = true)]
    pub(crate) interval_ms: Duration,
    /// Object sizes in bytes (1 to 2097152), one cache each: rounded up to a multiple of
    /// 8, so no two may round to the same size.
    #[arg(long, value_name = "SIZES", default_value = "32,192,1024,4096", value_parser = object_sizes, allow_hyphen_values = true)]
    pub(crate) sizes: Sizes,
    /// Create the caches in debug mode (red zones, poison, misuse detection).
    #[arg(long)]
    pub(crate) debug: bool,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0x5eed, value_parser = seed, allow_hyphen_values = true)]
    pub(crate) seed: u64,
    /// Objects each worker keeps alive at most (1 to 1048576).
    #[arg(long, default_value_t = 512, value_parser = max_live, allow_hyphen_values = true)]
    pub(crate) max_live: usize,
    /// Share of frees handed to a worker on another node, in percent (0 to 100).
    #[arg(long, default_value_t = 25, value_parser = percent, allow_hyphen_values = true)]
    pub(crate) remote_percent: u32,
    /// CPUs the hotplug thread may switch, as a list (`1-3`); each must exist and have a
    /// `cpuN/online` file. Default: every switchable CPU but cpu0.
    #[arg(long, value_name = "LIST", value_parser = cpu_list, allow_hyphen_values = true)]
    pub(crate) cpus: Option<CpuSet>,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// The lock file a --real run locks instead of /tmp/numaslab-real-hotplug.lock (for the
    /// project's tests, which hold that lock themselves while they run the command).
    #[arg(long, hide = true, value_name = "PATH")]
    pub(crate) lock_file: Option<PathBuf>,
    /// Inject a fault so that a check must fail (for the project's own tests).
    #[arg(long, hide = true, value_parser = parse_fault)]
    pub(crate) inject_fault: Option<Fault>,
}

fn workers(text: &str) -> Result<usize, String> {
    parse::whole_number(text, 1, MAX_WORKERS)
}

fn max_live(text: &str) -> Result<usize, String> {
    parse::whole_number(text, 1, MAX_LIVE)
}

/// The `--sizes` list, parsed whole so that two sizes of one cache are a usage error.
#[derive(Debug, Clone)]
pub(crate) struct Sizes(Vec<usize>);

fn object_sizes(text: &str) -> Result<Sizes, String> {
    let sizes = text
        .split(',')
        .map(|word| {
            // clap quotes the whole list; an error in one of several sizes names it.
            parse::whole_number(word, 1, MAX_OBJECT_SIZE).map_err(|reason| {
                if word.len() < text.len() {
                    format!("{word:?}: {reason}")
                } else {
                    reason
                }
            })
        })
        .collect::<Result<Vec<usize>, String>>()?;
    torture::check_sizes(&sizes).map_err(|error| match error {
        numaslab::Error::Config(reason) => reason,
        other => other.to_string(),
    })?;
    Ok(Sizes(sizes))
}

fn seed(text: &str) -> Result<u64, String> {
    parse::whole_number(text, 0, u64::MAX)
}

fn percent(text: &str) -> Result<u32, String> {
    parse::whole_number(text, 0, 100)
}

fn interval(text: &str) -> Result<Duration, String> {
    parse::duration_in(text, parse::PlainUnit::Milliseconds, parse::Zero::Allowed)
}

/// A CPU list in the kernel's form; the error gives the reason once, without repeating
/// the text clap already quotes.
fn cpu_list(text: &str) -> Result<CpuSet, String> {
    text.parse::<CpuSet>().map_err(|error| format!("{}; expected a list such as 1-3 or 1,3", error.reason))
}

fn parse_fault(text: &str) -> Result<Fault, String> {
    match text {
        "leak-one" => Ok(Fault::LeakOne),
        "panic-one" => Ok(Fault::PanicOne),
        "fail-one-transition" => Ok(Fault::FailOneTransition),
        other => Err(format!("unknown fault {other:?}; known: leak-one, panic-one, fail-one-transition")),
    }
}

/// Runs the torture; returns whether every check passed.
pub(crate) fn run(args: &TortureArgs) -> Result<bool> {
    let topology = open_machine(args)?;
    check_held_bytes(args)?;
    let config = args.config();
    // Held until the run has restored every CPU and reported. A follower switches
    // nothing, so it neither needs the lock nor keeps others from switching: their
    // transitions are what it follows.
    let switches_real_cpus = args.real && !args.follow;
    let _lock = switches_real_cpus
        .then(|| RealLock::acquire(&real_lock::path(args.lock_file.as_ref())))
        .transpose()?;
    let slab = NumaSlab::new(topology).context("setting up the allocator")?;
    let stop = stop_on_ctrl_c()?;
    let progress = Progress::default();
    let done = AtomicBool::new(false);
    let report = std::thread::scope(|scope| {
        if args.follow {
            let topology = slab.topology().clone();
            let (progress, done) = (&progress, &done);
            scope.spawn(move || announce_follow(&*topology, progress, done));
        }
        let bar = (!args.json).then(|| scope.spawn(|| show_progress(&progress, &done, config.duration)));
        let report = torture::run(&slab, &config, &stop, &progress);
        done.store(true, Ordering::Relaxed);
        if let Some(bar) = bar {
            let _ = bar.join();
        }
        report
    })?;
    // Written, not printed: a closed or full stdout is an error to report, not a panic.
    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&report)?)
    } else {
        write!(stdout, "{report}")
    }
    .and_then(|()| stdout.flush())
    .context("cannot write the report to stdout")?;
    Ok(report.checks_passed)
}

/// The machine to run on (`--real` or the machine options), with `--cpus` checked
/// against it.
fn open_machine(args: &TortureArgs) -> Result<Arc<dyn Topology>> {
    let topology = if args.real {
        // A follower only reads: it needs no root.
        // SAFETY: geteuid has no preconditions and cannot fail.
        if !args.follow && unsafe { libc::geteuid() } != 0 {
            bail!("--real switches this machine's CPUs and needs root; run it as root, or drop --real to use the embedded seed box");
        }
        super::backend::live()?
    } else {
        args.machine.open(DefaultMachine::SeedBox)?
    };
    if let Some(cpus) = &args.cpus {
        if args.real && cpus.contains(0) {
            bail!("--cpus {cpus}: --real never switches cpu0; remove it from the list");
        }
        torture::check_hotplug_cpus(&*topology, cpus).with_context(|| format!("--cpus {cpus}"))?;
    }
    Ok(topology)
}

/// Refuses a configuration whose workers could hold more than `MAX_HELD_BYTES` at once.
fn check_held_bytes(args: &TortureArgs) -> Result<()> {
    let largest = args.sizes.0.iter().copied().max().unwrap_or(0);
    let held = args.workers as u128 * args.max_live as u128 * largest as u128;
    if held > MAX_HELD_BYTES {
        bail!(
            "--workers {} --max-live {} with --sizes up to {largest}: the workers could hold {} MiB at once, more than the {} MiB allowed",
            args.workers,
            args.max_live,
            held >> 20,
            MAX_HELD_BYTES >> 20
        );
    }
    Ok(())
}

impl TortureArgs {
    /// The run's configuration.
    fn config(&self) -> TortureConfig {
        TortureConfig {
            duration: self.duration,
            workers: self.workers,
            interval: self.interval_ms,
            sizes: self.sizes.0.clone(),
            debug: self.debug,
            seed: self.seed,
            max_live: self.max_live,
            remote_percent: self.remote_percent,
            hotplug_cpus: self.cpus.clone(),
            fault: self.inject_fault,
            hotplug: if self.follow { HotplugDriver::Follow } else { HotplugDriver::Switch },
        }
    }
}

/// A flag that Ctrl-C sets. A second Ctrl-C while the first is being handled still only
/// asks to stop: the CPUs must come back online before the process ends.
fn stop_on_ctrl_c() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;
    Ok(stop)
}

/// Says on stderr (stdout may be JSON), once the watcher runs, what a follower follows
/// and, for a sysfs tree other than this machine's, which files to write: a test or
/// script reads the tree's root from this line (also that of a `--fixture`'s private
/// copy) and knows that what it writes from then on is counted.
fn announce_follow(topology: &dyn topology::Topology, progress: &Progress, done: &AtomicBool) {
    while !progress.started.load(Ordering::Acquire) {
        if done.load(Ordering::Relaxed) {
            return; // The run ended before it started: its error says why.
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let name = topology.name();
    match topology.sysfs_root() {
        Some(_) if topology.is_live() => {
            eprintln!("numaslab torture: following {name} through kernel uevents; switch CPUs with another program")
        }
        Some(root) => eprintln!(
            "numaslab torture: following {name} by polling; write 0 or 1 to {}/sys/devices/system/cpu/cpuN/online",
            root.display()
        ),
        None => eprintln!("numaslab torture: following {name} through its change notices"),
    }
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
