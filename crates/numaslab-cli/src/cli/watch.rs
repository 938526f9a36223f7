//! `numaslab watch`: follow hotplug events live with the allocator's callbacks attached,
//! in the manner of `udevadm monitor`: a first record saying what is watched and how, one
//! timestamped line per finished transition, and with `--verbose` what the watcher heard
//! but did not act on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use hotplug::{Event, EventKind, Outcome, Source, WatchMode, WatchStats, Watcher};
use numaslab::NumaSlab;
use serde::Serialize;
use topology::{CpuId, Topology};

use super::backend::{DefaultMachine, MachineArgs};

/// Arguments of `numaslab watch` (its help text, with the format of the times, is the
/// doc comment of `Command::Watch`).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct WatchArgs {
    #[command(flatten)]
    pub(crate) machine: MachineArgs,
    /// What wakes the watcher: `auto` (uevents on the live machine, polling for another
    /// root, notices for a fake), `uevent`, `poll`, `fake`, or `none` (periodic reconciles
    /// only).
    #[arg(long, value_enum, default_value_t = EventSource::Auto, conflicts_with = "poll")]
    pub(crate) source: EventSource,
    /// Watch by polling the `online` files only, not kernel uevents (`--source poll`).
    #[arg(long)]
    pub(crate) poll: bool,
    /// How often to read the `online` files when polling: milliseconds (`50`) or a
    /// duration with a unit (`50ms`, `1s`).
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = poll_interval, allow_hyphen_values = true)]
    pub(crate) poll_interval: Duration,
    /// How often to reconcile against the `online` files when nothing woke the watcher:
    /// seconds (`2`) or a duration with a unit (`500ms`).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = super::parse::duration, allow_hyphen_values = true)]
    pub(crate) reconcile_interval: Duration,
    /// Stop after this long: seconds (`2.5`) or a duration with a unit (`500ms`, `3s`,
    /// `2m`); default: until Ctrl-C.
    #[arg(long, value_parser = super::parse::duration, allow_hyphen_values = true)]
    pub(crate) duration: Option<Duration>,
    /// One JSON object per line: a `start` record, then `transition`s, then `stopped`.
    #[arg(long)]
    pub(crate) json: bool,
    /// Also show what the watcher heard but did not act on: wake-ups, ignored uevents
    /// (other devices, malformed, failed reconciles), forged uevents (not sent by the
    /// kernel) and socket overflows (uevents lost).
    #[arg(long, short)]
    pub(crate) verbose: bool,
}

/// `--source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum EventSource {
    /// The best the machine offers.
    Auto,
    /// Kernel uevents (`NETLINK_KOBJECT_UEVENT`).
    Uevent,
    /// Polling the `cpuN/online` files.
    Poll,
    /// The fake machine's change notices.
    Fake,
    /// Nothing: periodic reconciles only.
    None,
}

impl EventSource {
    fn mode(self) -> WatchMode {
        match self {
            EventSource::Auto => WatchMode::Auto,
            EventSource::Uevent => WatchMode::Uevent,
            EventSource::Poll => WatchMode::Poll,
            EventSource::Fake => WatchMode::Fake,
            EventSource::None => WatchMode::ReconcileOnly,
        }
    }
}

/// `--poll-interval`: plain numbers are milliseconds.
fn poll_interval(text: &str) -> Result<Duration, String> {
    use super::parse::{duration_in, PlainUnit, Zero};
    duration_in(text, PlainUnit::Milliseconds, Zero::Refused)
}

/// One line of output; in JSON, the variant's name is the `record` field.
#[derive(Debug, Serialize)]
#[serde(tag = "record", rename_all = "kebab-case")]
enum Record {
    /// What is watched and how.
    Start {
        machine: String,
        backend: String,
        root: Option<String>,
        events: &'static str,
        uevent_port: Option<u32>,
        poll_interval_ms: Option<u64>,
        reconcile_interval_ms: u64,
        fallback: Option<String>,
    },
    /// One finished transition.
    Transition {
        cpu: CpuId,
        event: &'static str,
        source: &'static str,
        callbacks_us: u64,
        outcome: &'static str,
        states: Vec<(String, u64)>,
    },
    /// A source woke the reconciler (`--verbose`).
    Wakeup { source: &'static str, cpu: Option<CpuId>, reported: Option<&'static str> },
    /// Heard and not acted on (`--verbose`).
    Ignored { source: &'static str, reason: String },
    /// A uevent not sent by the kernel (`--verbose`).
    Forged { source: &'static str, port: u32 },
    /// The uevent socket overflowed (`--verbose`).
    Overflow { source: &'static str },
    /// The watcher stopped; what it saw.
    Stopped { wakeups: u64, reconciles: u64, ignored: u64, unrelated: u64, overflows: u64 },
}

/// A record with its time, as printed in JSON.
#[derive(Debug, Serialize)]
struct Timed<'a> {
    time: &'a str,
    #[serde(flatten)]
    record: &'a Record,
}

/// A transition being assembled from its events.
#[derive(Debug)]
struct Pending {
    online: bool,
    source: Source,
    states: Vec<(String, u64)>,
}

/// Turns the monotonic `Instant` of an event into wall-clock time: one reading of both
/// clocks at the start, so that every line's time is when its event happened, not when it
/// was printed.
#[derive(Debug, Clone, Copy)]
struct Clock {
    wall: SystemTime,
    monotonic: Instant,
}

impl Clock {
    fn now() -> Clock {
        Clock { wall: SystemTime::now(), monotonic: Instant::now() }
    }

    /// RFC 3339 in UTC with milliseconds.
    fn format(&self, at: Instant) -> String {
        let wall = match at.checked_duration_since(self.monotonic) {
            Some(after) => self.wall + after,
            None => self.wall - self.monotonic.duration_since(at),
        };
        humantime::format_rfc3339_millis(wall).to_string()
    }
}

/// Watches until Ctrl-C or the duration ends.
pub(crate) fn run(args: &WatchArgs) -> Result<()> {
    let topology = args.machine.open(DefaultMachine::Live)?;
    let slab = NumaSlab::new(topology).context("setting up the allocator")?;
    let events = slab.hotplug().events();
    let source = if args.poll { EventSource::Poll } else { args.source };
    let watcher = Watcher::builder(slab.hotplug())
        .mode(source.mode())
        .poll_interval(args.poll_interval)
        .reconcile_interval(args.reconcile_interval)
        .start()
        // hotplug's error already says what its source said: no chain, or it prints twice.
        .map_err(|error| {
            let option =
                if args.poll { "--poll".to_owned() } else { format!("--source {}", source_name(source)) };
            anyhow::anyhow!("{option}: {error}")
        })?;
    let clock = Clock::now();
    let mut out = std::io::stdout().lock();
    let start = start_record(slab.topology().as_ref(), &watcher);
    print(&mut out, args.json, &clock.format(Instant::now()), &start)?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .context("installing the Ctrl-C handler")?;
    }
    let deadline = args.duration.map(|duration| Instant::now() + duration);
    let mut pending: HashMap<CpuId, Pending> = HashMap::new();
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|deadline| Instant::now() < deadline) {
        let Ok(event) = events.recv_timeout(Duration::from_millis(100)) else { continue };
        if let Some(record) = assemble(&mut pending, &event, args.verbose) {
            print(&mut out, args.json, &clock.format(event.at), &record)?;
        }
    }
    let stats = watcher.stop();
    print(&mut out, args.json, &clock.format(Instant::now()), &stopped_record(stats))?;
    Ok(())
}

fn print(out: &mut impl std::io::Write, json: bool, time: &str, record: &Record) -> Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string(&Timed { time, record })?)?;
    } else {
        writeln!(out, "{time} {}", text(record))?;
    }
    out.flush()?;
    Ok(())
}

fn source_name(source: EventSource) -> &'static str {
    match source {
        EventSource::Auto => "auto",
        EventSource::Uevent => "uevent",
        EventSource::Poll => "poll",
        EventSource::Fake => "fake",
        EventSource::None => "none",
    }
}

fn start_record(topology: &dyn Topology, watcher: &Watcher) -> Record {
    let machine = topology.name();
    let backend = machine.split_once(':').map_or(machine.as_str(), |(backend, _)| backend).to_owned();
    let mode = watcher.mode();
    Record::Start {
        root: topology.sysfs_root().map(|root| root.display().to_string()),
        machine,
        backend,
        events: match mode {
            WatchMode::Uevent => "uevent",
            WatchMode::Poll => "poll",
            WatchMode::Fake => "fake",
            WatchMode::ReconcileOnly | WatchMode::Auto => "none",
        },
        uevent_port: watcher.uevent_port(),
        poll_interval_ms: (mode == WatchMode::Poll).then(|| watcher.poll_interval().as_millis() as u64),
        reconcile_interval_ms: watcher.reconcile_interval().as_millis() as u64,
        fallback: watcher.fallback_reason().map(str::to_owned),
    }
}

fn stopped_record(stats: WatchStats) -> Record {
    Record::Stopped {
        wakeups: stats.wakeups,
        reconciles: stats.reconciles,
        ignored: stats.ignored,
        unrelated: stats.unrelated,
        overflows: stats.overflows,
    }
}

/// A record in words, for the text output.
fn text(record: &Record) -> String {
    match record {
        Record::Start {
            machine,
            backend,
            root,
            events,
            uevent_port,
            poll_interval_ms,
            reconcile_interval_ms,
            fallback,
        } => {
            // A copy of a tree is switched by hand: say where.
            let hint = match root.as_deref() {
                Some(root) if root != "/" && backend != "fake" => {
                    format!("\n  write 0 or 1 to {root}/sys/devices/system/cpu/cpuN/online to switch a CPU")
                }
                _ => String::new(),
            };
            let root = root.as_deref().map(|root| format!(", root {root}")).unwrap_or_default();
            let how = match (*events, uevent_port, poll_interval_ms) {
                ("uevent", Some(port), _) => format!("kernel uevents (NETLINK_KOBJECT_UEVENT, port {port})"),
                ("uevent", None, _) => "kernel uevents (NETLINK_KOBJECT_UEVENT)".to_owned(),
                ("poll", _, Some(ms)) => format!("polling cpuN/online every {}", millis(*ms)),
                ("fake", _, _) => "the fake machine's change notices".to_owned(),
                _ => "no event source".to_owned(),
            };
            let fallback = fallback.as_deref().map(|why| format!(" (not uevents: {why})")).unwrap_or_default();
            format!(
                "watching {machine} (backend {backend}{root}) by {how}{fallback}, reconciling every {}; Ctrl-C to stop{hint}",
                millis(*reconcile_interval_ms)
            )
        }
        Record::Transition { cpu, event, source, callbacks_us, outcome, states } => {
            let states: Vec<String> = states.iter().map(|(name, us)| format!("{name} {us} us")).collect();
            format!(
                "cpu {cpu} {event} (from {source}): callbacks {callbacks_us} us [{}] {outcome}",
                states.join(", ")
            )
        }
        Record::Wakeup { source, cpu, reported } => match (cpu, reported) {
            (Some(cpu), Some(state)) => format!("{source}: wake-up: cpu {cpu} reported {state}"),
            _ => format!("{source}: wake-up: no CPU named (truncated uevent or unreadable change)"),
        },
        Record::Ignored { source, reason } => format!("{source}: ignored: {reason}"),
        Record::Forged { source, port } => {
            format!("{source}: ignored a forged uevent from netlink port {port}: only the kernel (port 0) is believed")
        }
        Record::Overflow { source } => {
            format!("{source}: overflow: the socket buffer was full and uevents were lost; a full reconcile follows")
        }
        Record::Stopped { wakeups, reconciles, ignored, unrelated, overflows } => format!(
            "stopped: {wakeups} wake-ups, {reconciles} reconciles, {ignored} uevents ignored (forged or malformed), {unrelated} about other devices, {overflows} overflows"
        ),
    }
}

/// A number of milliseconds as `humantime` writes durations: `100ms`, `1s`, `1s 500ms`.
fn millis(ms: u64) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_millis(ms))
}

/// Feeds one event into the transition it belongs to; returns the record to print: a
/// transition when it ends, and with `verbose` the watcher's own events.
fn assemble(pending: &mut HashMap<CpuId, Pending>, event: &Event, verbose: bool) -> Option<Record> {
    let source = event.source.as_str();
    match &event.kind {
        EventKind::TransitionStarted { cpu, from, to } => {
            pending.insert(*cpu, Pending { online: to > from, source: event.source, states: Vec::new() });
            None
        }
        EventKind::StateEntered { cpu, state, duration: Some(spent), .. }
        | EventKind::StateLeft { cpu, state, duration: Some(spent), .. } => {
            if let Some(entry) = pending.get_mut(cpu) {
                entry.states.push((state.to_string(), spent.as_micros() as u64));
            }
            None
        }
        EventKind::CallbackFailed { cpu, state, duration, .. } => {
            if let Some(entry) = pending.get_mut(cpu) {
                entry.states.push((format!("{state} (failed)"), duration.as_micros() as u64));
            }
            None
        }
        EventKind::TransitionFinished { cpu, outcome, .. } => {
            let entry = pending.remove(cpu)?;
            Some(Record::Transition {
                cpu: *cpu,
                event: if entry.online { "online" } else { "offline" },
                source: entry.source.as_str(),
                callbacks_us: entry.states.iter().map(|(_, us)| us).sum(),
                outcome: match outcome {
                    Outcome::Completed => "completed",
                    Outcome::RolledBack => "rolled back",
                },
                states: entry.states,
            })
        }
        EventKind::Wakeup { reported } if verbose => Some(Record::Wakeup {
            source,
            cpu: reported.map(|change| change.cpu),
            reported: reported.map(|change| change.state.as_str()),
        }),
        EventKind::Ignored { reason } if verbose => Some(Record::Ignored { source, reason: reason.clone() }),
        EventKind::Forged { port } if verbose => Some(Record::Forged { source, port: *port }),
        EventKind::Overflow if verbose => Some(Record::Overflow { source }),
        _ => None,
    }
}
