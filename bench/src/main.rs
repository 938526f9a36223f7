//! numaslab's benchmark harness: numaslab against malloc implementations and Rust object
//! pools on the workloads of SPEC section 7.
//!
//! `cargo xtask bench [--quick]` builds this binary in release and runs `drive`, which
//! starts one process per run of each (workload, size, implementation) — `run` — so that
//! no two allocators share a process and each run's peak RSS is its own. Runs are
//! interleaved: every case and implementation once, then again, in rotating order.

mod chart;
mod driver;
mod host;
mod impls;
mod obj;
mod report;
mod rss;
mod workloads;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use crate::impls::ImplId;
use crate::workloads::{Case, Scale, Workload};

#[derive(Debug, Parser)]
#[command(name = "numaslab-bench", about = "numaslab against malloc implementations and Rust pools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs every case for every implementation, several times, and writes the report.
    Drive(driver::DriveOptions),
    /// Runs one case once for one implementation and prints its figures as one JSON line.
    Run {
        /// The implementation, as `list` prints them.
        #[arg(long = "impl")]
        implementation: String,
        /// The workload, as `list` prints them.
        #[arg(long)]
        workload: String,
        /// Object size in bytes (8, 64 or 256).
        #[arg(long)]
        size: usize,
        /// Little work per run (the smoke check).
        #[arg(long)]
        quick: bool,
    },
    /// Redraws report.md and the charts from the results.json and run.json a `drive` wrote.
    Report {
        /// The folder `drive` wrote to (default: target/bench).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Lists the implementations and the cases a mode runs.
    List {
        /// The quick mode's cases.
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Drive(options) => driver::drive(options),
        Command::Run { implementation, workload, size, quick } => {
            let implementation = ImplId::parse(&implementation)?;
            let workload = Workload::parse(&workload)?;
            if !workload.sizes().contains(&size) {
                bail!(
                    "workload {} runs with object sizes {:?}, not {size}",
                    workload.name(),
                    workload.sizes()
                );
            }
            let scale = if quick { Scale::Quick } else { Scale::Full };
            let sample = driver::run_one(implementation, Case { workload, size }, scale)?;
            println!("{}", serde_json::to_string(&sample).context("encoding the sample")?);
            Ok(())
        }
        Command::Report { out } => {
            let out = out.unwrap_or_else(default_out_dir);
            let (rows, context) = report::read_back(&out)?;
            print!("{}", report::terminal_table(&rows, &context));
            report::write_all(&out, &rows, &context)?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
        Command::List { quick } => {
            let scale = if quick { Scale::Quick } else { Scale::Full };
            for id in ImplId::ALL {
                match id.compiled_in() {
                    Ok(()) => println!("implementation {id}"),
                    Err(reason) => println!("implementation {id} (left out: {reason})"),
                }
            }
            for case in workloads::plan(scale) {
                println!("case {} {}", case.workload.name(), case.size);
            }
            Ok(())
        }
    }
}

/// Where the report goes by default: `target/bench` of the repository that holds this
/// crate.
fn default_out_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("bench")
}
