//! Command-line parsing and dispatch. Each subcommand is a module with an `Args` struct
//! (clap derive) and a `run` function; adding one is a new module and a new variant of
//! [`Command`].

mod topology;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// numaslab: a NUMA-aware, CPU-hotplug-aware slab allocator, and tools to look at it.
#[derive(Debug, Parser)]
#[command(name = "numaslab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
///
/// `torture` (the allocator under concurrent load and hotplug) and `watch` (hotplug
/// events as they happen) are to join here as variants beside `Topology`; `torture` is
/// then to become the default when no subcommand is given, which is why `command` is the
/// only place that decides what runs.
#[derive(Debug, Subcommand)]
enum Command {
    /// Prints the machine's CPUs, nodes, memory and distances, like `numactl --hardware`.
    Topology(topology::Args),
}

/// Parses the command line, runs the subcommand, and turns an error into a message on
/// stderr and exit status 1 (clap's own usage errors exit with 2).
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Topology(args) => topology::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("numaslab: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
