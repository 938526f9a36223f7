//! Which machine a subcommand works on: `--root`, `--fixture`, `--fake`, or its default.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
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
    /// Opens the machine the options name, else the default. Errors name the option and
    /// its value.
    pub(crate) fn open(&self, default: DefaultMachine) -> Result<Arc<dyn Topology>> {
        Ok(match (&self.root, &self.fixture, &self.fake) {
            (Some(root), _, _) => {
                Arc::new(SysfsTopology::new(root).with_context(|| format!("--root {}", root.display()))?)
            }
            (_, Some(fixture), _) => Arc::new(load_fixture(fixture)?),
            (_, _, Some(spec)) => {
                Arc::new(FakeTopology::from_spec(spec).with_context(|| format!("--fake {spec}"))?)
            }
            _ => match default {
                DefaultMachine::Live => live()?,
                DefaultMachine::SeedBox => {
                    Arc::new(FixtureTopology::seed_box().context("cannot build the embedded seed box")?)
                }
            },
        })
    }
}

/// Loads `--fixture NAME|PATH`. An unknown name is refused with the list of names that
/// exist, not with the folder where they are looked up (a path of the machine the binary
/// was built on, which means nothing to its user).
fn load_fixture(fixture: &str) -> Result<FixtureTopology> {
    let is_name = !fixture.is_empty() && !fixture.contains('/') && !fixture.starts_with('.');
    let names = fixture_names();
    if is_name && !names.iter().any(|name| name == fixture) {
        bail!(
            "--fixture {fixture}: no fixture of that name; available: {}; or give the path of a sysfs-shaped folder",
            names.join(", ")
        );
    }
    FixtureTopology::load(fixture).with_context(|| format!("--fixture {fixture}"))
}

/// The fixtures `--fixture` knows by name: the built-in descriptions and the folders of
/// the fixtures directory (when the binary runs where that directory exists), sorted.
fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> =
        topology::machine_file::BUILTIN.iter().map(|(name, _)| (*name).to_owned()).collect();
    if let Ok(entries) = std::fs::read_dir(FixtureTopology::fixtures_dir()) {
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// This machine, read from `/`.
pub(crate) fn live() -> Result<Arc<dyn Topology>> {
    Ok(Arc::new(SysfsTopology::detect().context("cannot read this machine's /sys")?))
}
