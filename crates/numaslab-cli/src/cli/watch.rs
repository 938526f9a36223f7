//! `numaslab watch`: follow hotplug events live with the allocator's callbacks attached.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hotplug::{Event, EventKind, Source, Watcher};
use numaslab::NumaSlab;
use serde::Serialize;
use topology::CpuId;

use super::machine::{DefaultMachine, MachineArgs};

/// Arguments of `numaslab watch`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct WatchArgs {
    #[command(flatten)]
    pub(crate) machine: MachineArgs,
    /// Watch by polling the `online` files only, not kernel uevents.
    #[arg(long)]
    pub(crate) poll: bool,
    /// Stop after this long: seconds (`2.5`) or a duration with a unit (`500ms`, `3s`,
    /// `2m`); default: until Ctrl-C.
    #[arg(long, value_parser = super::parse::duration, allow_hyphen_values = true)]
    pub(crate) duration: Option<Duration>,
    /// One JSON object per line and per transition.
    #[arg(long)]
    pub(crate) json: bool,
}

/// One finished transition, as printed.
#[derive(Debug, Serialize)]
struct Line {
    cpu: CpuId,
    event: &'static str,
    source: &'static str,
    callbacks_us: u64,
    outcome: &'static str,
    states: Vec<(String, u64)>,
}

/// A transition being assembled from its events.
#[derive(Debug)]
struct Pending {
    online: bool,
    source: Source,
    states: Vec<(String, u64)>,
}

/// Watches until Ctrl-C or the duration ends.
pub(crate) fn run(args: &WatchArgs) -> Result<()> {
    let topology = args.machine.open(DefaultMachine::Live)?;
    let slab = NumaSlab::new(topology).context("setting up the allocator")?;
    let events = slab.hotplug().events();
    let mut builder = Watcher::builder(slab.hotplug());
    if args.poll {
        builder = builder.force_poll();
    }
    let watcher = builder.start().context("starting the watcher")?;
    if !args.json {
        println!(
            "watching {} ({:?}{}); Ctrl-C to stop",
            slab.topology().name(),
            watcher.mode(),
            watcher.fallback_reason().map(|reason| format!(": {reason}")).unwrap_or_default()
        );
        if let Some(root) = slab.topology().sysfs_root().filter(|root| *root != std::path::Path::new("/")) {
            println!("write 0 or 1 to {}/sys/devices/system/cpu/cpuN/online to switch a CPU", root.display());
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .context("installing the Ctrl-C handler")?;
    }
    let deadline = args.duration.map(|duration| Instant::now() + duration);
    let mut pending: HashMap<CpuId, Pending> = HashMap::new();
    let mut out = std::io::stdout().lock();
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|deadline| Instant::now() < deadline) {
        let Ok(event) = events.recv_timeout(Duration::from_millis(100)) else { continue };
        if let Some(line) = assemble(&mut pending, &event) {
            if args.json {
                writeln!(out, "{}", serde_json::to_string(&line)?)?;
            } else {
                let states: Vec<String> =
                    line.states.iter().map(|(name, us)| format!("{name} {us} us")).collect();
                writeln!(
                    out,
                    "cpu {} {} (from {}): callbacks {} us [{}] {}",
                    line.cpu,
                    line.event,
                    line.source,
                    line.callbacks_us,
                    states.join(", "),
                    line.outcome
                )?;
            }
            out.flush()?;
        }
    }
    let stats = watcher.stop();
    if !args.json {
        println!("stopped: {stats:?}");
    }
    Ok(())
}

/// Feeds one event into the transition it belongs to; returns the line when it ends.
fn assemble(pending: &mut HashMap<CpuId, Pending>, event: &Event) -> Option<Line> {
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
            Some(Line {
                cpu: *cpu,
                event: if entry.online { "online" } else { "offline" },
                source: entry.source.as_str(),
                callbacks_us: entry.states.iter().map(|(_, us)| us).sum(),
                outcome: match outcome {
                    hotplug::Outcome::Completed => "completed",
                    hotplug::Outcome::RolledBack => "rolled back",
                },
                states: entry.states,
            })
        }
        _ => None,
    }
}
