//! Command-line parsing and dispatch. Each subcommand is a module with an `Args` struct
//! (clap derive) and a `run` function; adding one is a new module and a new variant of
//! [`Command`].

mod backend;
mod parse;
mod real_lock;
mod topology;
mod torture;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The exit statuses, as every `--help` lists them.
const EXIT_STATUS: &str = "\
Exit status:
  0  success (for torture: every check passed)
  1  error: the machine, a fixture or a file could not be used, or a value does not fit it
  2  usage error: an unknown option or a bad value, named with the reason
  3  torture only: the run finished and a check failed (see the report)";

/// numaslab: a NUMA-aware, CPU-hotplug-aware slab allocator, and tools to look at it.
#[derive(Debug, Parser)]
#[command(name = "numaslab", version, about, args_conflicts_with_subcommands = true, after_help = EXIT_STATUS)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand, the options of `torture`.
    #[command(flatten)]
    torture: torture::TortureArgs,
}

/// The subcommands; with none, `torture` runs with its defaults.
#[derive(Debug, Subcommand)]
enum Command {
    /// The seed's torture test (the default): workers allocate and free while CPUs, the
    /// last one of a node included, go offline and online; exits 0 only if every check
    /// passes.
    #[command(after_help = EXIT_STATUS)]
    Torture(torture::TortureArgs),
    /// Follows hotplug events live with the allocator's callbacks attached.
    ///
    /// Every line, and every JSON record's `time`, starts with when its event happened:
    /// RFC 3339 in UTC with milliseconds (`2026-12-01T20:07:27.123Z`). The first line (JSON
    /// record `start`) says what is watched and how: machine, backend, root, event source
    /// (kernel uevents, polling and its interval, the fake's notices, or none) and the
    /// reconcile interval. A transition found by the periodic reconcile rather than by the
    /// event source says `from reconcile`.
    #[command(after_help = EXIT_STATUS)]
    Watch(watch::WatchArgs),
    /// Prints the machine's CPUs, nodes, memory and distances, like `numactl --hardware`.
    #[command(after_help = EXIT_STATUS)]
    Topology(topology::Args),
}

/// Parses the command line, runs the subcommand, and turns an error into a message on
/// stderr and exit status 1 (clap's own usage errors exit with 2); a torture whose
/// checks failed exits with 3.
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Torture(cli.torture)) {
        Command::Torture(args) => torture::run(&args),
        Command::Watch(args) => watch::run(&args).map(|()| true),
        Command::Topology(args) => topology::run(&args).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(error) => {
            eprintln!("numaslab: error: {}", message(&error));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes, joined with `: `, each cause said once: many errors already
/// end with their cause's text (`cannot read PATH: Is a directory`), and repeating it
/// would only lengthen the line.
fn message(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text == cause || text.ends_with(&format!(": {cause}")) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}
