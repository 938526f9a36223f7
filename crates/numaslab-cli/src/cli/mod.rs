//! Command-line parsing and dispatch. Each subcommand is a module with an `Args` struct
//! (clap derive) and a `run` function; adding one is a new module and a new variant of
//! [`Command`].

mod machine;
mod topology;
mod torture;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// numaslab: a NUMA-aware, CPU-hotplug-aware slab allocator, and tools to look at it.
#[derive(Debug, Parser)]
#[command(name = "numaslab", version, about, args_conflicts_with_subcommands = true)]
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
    Torture(torture::TortureArgs),
    /// Follows hotplug events live with the allocator's callbacks attached.
    Watch(watch::WatchArgs),
    /// Prints the machine's CPUs, nodes, memory and distances, like `numactl --hardware`.
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
            eprintln!("numaslab: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
