//! Errors of the facade: those of the crates it wires together, and its own.

/// A `Result` whose error is the facade's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the facade can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The machine description could not be read or changed.
    #[error(transparent)]
    Topology(#[from] topology::Error),
    /// The allocator refused.
    #[error(transparent)]
    Slab(#[from] slab_core::Error),
    /// The hotplug state machine refused or a callback failed.
    #[error(transparent)]
    Hotplug(#[from] hotplug::Error),
    /// A run was set up with values that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
}
