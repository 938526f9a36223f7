//! Which machine a subcommand works on: `--root`, `--fixture`, `--fake`, or its default.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use topology::{FakeTopology, FixtureTopology, SysfsTopology, Topology};

/// The machine options every subcommand shares.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct MachineArgs {
    /// Read sysfs and procfs under this folder instead of `/` (a capture's `fsroot`, say).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["fixture", "fake"])]
    pub(crate) root: Option<PathBuf>,
    /// Load a fixture: a name from the project's `fixtures/` (`seed-box`) or a path to any
    /// sysfs-shaped tree; it runs on a private copy.
    #[arg(long, value_name = "NAME|PATH", conflicts_with = "fake")]
    pub(crate) fixture: Option<String>,
    /// Build a fake machine: `CPUSxNODES`, such as `4x2`.
    #[arg(long, value_name = "SPEC")]
    pub(crate) fake: Option<String>,
}

/// What a subcommand runs on when no machine option is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DefaultMachine {
    /// This machine, read from `/`.
    Live,
    /// The seed's 4-CPU, 2-node box, embedded in the binary.
    SeedBox,
}

impl MachineArgs {
    /// Opens the machine the options name, else the default.
    pub(crate) fn open(&self, default: DefaultMachine) -> Result<Arc<dyn Topology>> {
        Ok(match (&self.root, &self.fixture, &self.fake) {
            (Some(root), _, _) => Arc::new(
                SysfsTopology::new(root)
                    .with_context(|| format!("cannot read the machine under {}", root.display()))?,
            ),
            (_, Some(fixture), _) => Arc::new(
                FixtureTopology::load(fixture).with_context(|| format!("cannot load fixture {fixture}"))?,
            ),
            (_, _, Some(spec)) => Arc::new(FakeTopology::from_spec(spec)?),
            _ => match default {
                DefaultMachine::Live => live()?,
                DefaultMachine::SeedBox => {
                    Arc::new(FixtureTopology::seed_box().context("cannot build the embedded seed box")?)
                }
            },
        })
    }
}

/// This machine, read from `/`.
pub(crate) fn live() -> Result<Arc<dyn Topology>> {
    Ok(Arc::new(SysfsTopology::detect().context("cannot read this machine's /sys")?))
}
