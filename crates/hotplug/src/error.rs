//! Errors of the hotplug crate.

use std::path::PathBuf;

use topology::{CpuId, CpuState};

use crate::state::Rank;

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a startup callback refused to bring a state up on a CPU.
///
/// Only startups return it: teardowns cannot fail (see [`crate::State::teardown`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallbackError {
    /// The callback said why in words.
    #[error("{0}")]
    Message(String),
    /// The callback passed on an error of its own.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// A one-shot fault armed by [`crate::Hotplug::inject_fault`] fired.
    #[error("injected fault (one-shot) in state {state:?} on cpu {cpu}")]
    Injected {
        /// The state's name.
        state: String,
        /// The CPU.
        cpu: CpuId,
    },
    /// The callback panicked; the panic was caught and treated as a failure.
    #[error("callback panicked: {0}")]
    Panicked(String),
}

impl CallbackError {
    /// A failure described in words.
    pub fn msg(message: impl Into<String>) -> Self {
        CallbackError::Message(message.into())
    }

    /// A failure caused by another error.
    pub fn other(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        CallbackError::Other(Box::new(error))
    }
}

/// What is wrong with a uevent datagram; the message is then ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UeventError {
    /// The datagram was empty.
    #[error("empty uevent message")]
    Empty,
    /// The datagram is in udev's own format (`libudev` magic), which only the udev daemon
    /// sends; the kernel never does.
    #[error("udev-format message, not a kernel uevent")]
    UdevFormat,
    /// The first field is not `ACTION@DEVPATH`.
    #[error("uevent header {header:?} is not ACTION@DEVPATH")]
    BadHeader {
        /// The first field, lossily decoded.
        header: String,
    },
    /// A field after the header is not `KEY=VALUE`.
    #[error("uevent field {field:?} is not KEY=VALUE")]
    BadField {
        /// The field, lossily decoded.
        field: String,
    },
    /// A field is not UTF-8.
    #[error("uevent field {field:?} is not UTF-8")]
    NotUtf8 {
        /// The field, lossily decoded.
        field: String,
    },
    /// The header and the `ACTION`/`DEVPATH` keys disagree.
    #[error("uevent header says {header:?} but {key}={value:?}")]
    Inconsistent {
        /// The header.
        header: String,
        /// The key that disagrees.
        key: &'static str,
        /// Its value.
        value: String,
    },
    /// A `cpu` uevent whose device path does not end in `cpuN`.
    #[error("cpu uevent for device path {devpath:?}, which names no cpu")]
    NotACpu {
        /// The device path.
        devpath: String,
    },
}

/// Everything the hotplug crate can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A topology query failed (the `online` files could not be read, ...).
    #[error("{context}: {source}")]
    Topology {
        /// What the machine was doing.
        context: String,
        /// What the topology backend said.
        #[source]
        source: topology::Error,
    },
    /// Taking a CPU offline or online was refused by the kernel or backend (EBUSY, EPERM,
    /// the last online CPU, cpu0 without an `online` file, ...). Callbacks that had run
    /// were rolled back: the CPU is where it was, unless a startup failed during that
    /// roll-back, which leaves it marked failed ([`crate::Hotplug::failed_cpus`]).
    #[error("cannot take cpu {cpu} {target}: {source}")]
    SetOnline {
        /// The CPU.
        cpu: CpuId,
        /// The state asked for.
        target: CpuState,
        /// What the backend said, with the file and the kernel's error.
        #[source]
        source: topology::Error,
    },
    /// A CPU that cannot be hotplugged because it has no `online` file (cpu0 on most
    /// machines); found before any callback ran.
    #[error("cpu {cpu} cannot be hotplugged: {path} does not exist")]
    NoOnlineFile {
        /// The CPU.
        cpu: CpuId,
        /// The missing file.
        path: PathBuf,
    },
    /// A CPU id that the machine does not have.
    #[error("cpu {cpu} is not a possible cpu of {machine} (possible: {possible})")]
    UnknownCpu {
        /// The CPU asked for.
        cpu: CpuId,
        /// The topology's name.
        machine: String,
        /// The possible CPUs, in list form.
        possible: String,
    },
    /// A startup callback failed; the CPU (or, while registering, every CPU) was rolled
    /// back to where it was.
    #[error("startup of state {state:?} (rank {rank}) failed on cpu {cpu}: {source}")]
    Startup {
        /// The state's name.
        state: String,
        /// The state's rank.
        rank: Rank,
        /// The CPU.
        cpu: CpuId,
        /// What the callback said.
        #[source]
        source: CallbackError,
    },
    /// A state name that is already registered.
    #[error("a state named {name:?} is already registered (rank {rank})")]
    DuplicateName {
        /// The name.
        name: String,
        /// The rank it holds.
        rank: Rank,
    },
    /// A fixed rank that another state holds.
    #[error("rank {rank} is already held by state {holder:?}")]
    RankTaken {
        /// The rank asked for.
        rank: Rank,
        /// The state that holds it.
        holder: String,
    },
    /// A rank that no state may take (the offline, bring-up and online markers) or that
    /// lies in a dynamic range.
    #[error("rank {rank} cannot be registered: {reason}")]
    ReservedRank {
        /// The rank asked for.
        rank: Rank,
        /// Why not.
        reason: &'static str,
    },
    /// Every rank of a dynamic range is taken.
    #[error("no free rank left in the {range} dynamic range ({first}..={last})")]
    NoDynamicRank {
        /// "prepare" or "online".
        range: &'static str,
        /// The range's first rank.
        first: Rank,
        /// The range's last rank.
        last: Rank,
    },
    /// A state id that is not (or no longer) registered.
    #[error(
        "the state at rank {rank} this handle names is not registered (removed, or never registered here)"
    )]
    UnknownState {
        /// The rank given.
        rank: Rank,
    },
    /// The machine was called from inside one of its own callbacks or event observers,
    /// which would deadlock on the transition lock.
    #[error(
        "{operation} called from inside a hotplug callback on the same thread; refused to avoid deadlock"
    )]
    Reentrant {
        /// What was called.
        operation: &'static str,
    },
    /// A watcher source could not be set up (socket, eventfd, thread).
    #[error("cannot start the watcher: {what}: {source}")]
    Watcher {
        /// What failed.
        what: &'static str,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}
