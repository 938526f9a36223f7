//! States: ranks, slots and callbacks, after the kernel's `enum cpuhp_state` and
//! `struct cpuhp_step` (`include/linux/cpuhotplug.h`, `kernel/cpu.c`).

use std::fmt;
use std::sync::Arc;

use topology::CpuId;

use crate::error::CallbackError;
use crate::sync::{AtomicU64, Ordering};

/// A startup callback: brings one state up on one CPU, or says why it cannot.
pub type StartupFn = dyn Fn(CpuId) -> Result<(), CallbackError> + Send + Sync;
/// A teardown callback: takes one state down on one CPU. It cannot fail.
pub type TeardownFn = dyn Fn(CpuId) + Send + Sync;

/// A state's position in the fixed order. Startups run in ascending rank, teardowns in
/// descending rank.
///
/// The ranks mirror the kernel's `enum cpuhp_state`: [`Rank::OFFLINE`] at the bottom,
/// "prepare" states that the controlling side runs before the CPU is started, the
/// [`Rank::BRINGUP_CPU`] marker where the CPU itself is switched on, "online" states that
/// run once it runs, and [`Rank::ONLINE`] at the top. Each section has a dynamic range
/// (`CPUHP_BP_PREPARE_DYN`, `CPUHP_AP_ONLINE_DYN`) handed out in registration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rank(pub u16);

impl Rank {
    /// A CPU with no state up (`CPUHP_OFFLINE`).
    pub const OFFLINE: Rank = Rank(0);
    /// First rank of the prepare dynamic range (`CPUHP_BP_PREPARE_DYN`).
    pub const PREPARE_DYN: Rank = Rank(1000);
    /// Last rank of the prepare dynamic range (`CPUHP_BP_PREPARE_DYN_END`).
    pub const PREPARE_DYN_END: Rank = Rank(1049);
    /// Where the CPU itself is switched on or off (`CPUHP_BRINGUP_CPU`). States below run
    /// before a driven bring-up writes `online` and after a driven teardown wrote it.
    pub const BRINGUP_CPU: Rank = Rank(10_000);
    /// First rank of the online dynamic range (`CPUHP_AP_ONLINE_DYN`).
    pub const ONLINE_DYN: Rank = Rank(20_000);
    /// Last rank of the online dynamic range (`CPUHP_AP_ONLINE_DYN_END`).
    pub const ONLINE_DYN_END: Rank = Rank(20_049);
    /// A CPU with every state up (`CPUHP_ONLINE`).
    pub const ONLINE: Rank = Rank(u16::MAX);

    /// The section a rank belongs to.
    pub fn section(self) -> Section {
        if self < Rank::BRINGUP_CPU {
            Section::Prepare
        } else {
            Section::Online
        }
    }

    /// Why this rank cannot be registered as a fixed slot, if it cannot.
    pub(crate) fn reserved_reason(self) -> Option<&'static str> {
        match self {
            Rank::OFFLINE => Some("it marks an offline cpu"),
            Rank::BRINGUP_CPU => Some("it marks where the cpu itself is switched"),
            Rank::ONLINE => Some("it marks an online cpu"),
            r if (Rank::PREPARE_DYN..=Rank::PREPARE_DYN_END).contains(&r) => {
                Some("it lies in the prepare dynamic range; use Slot::PrepareDynamic")
            }
            r if (Rank::ONLINE_DYN..=Rank::ONLINE_DYN_END).contains(&r) => {
                Some("it lies in the online dynamic range; use Slot::OnlineDynamic")
            }
            _ => None,
        }
    }
}

impl fmt::Display for Rank {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Rank::OFFLINE => f.write_str("offline"),
            Rank::BRINGUP_CPU => f.write_str("bringup-cpu"),
            Rank::ONLINE => f.write_str("online"),
            Rank(n) => write!(f, "{n}"),
        }
    }
}

/// Which side of [`Rank::BRINGUP_CPU`] a state is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Section {
    /// Before the CPU runs (`CPUHP_BP_*`): startups like the kernel's `CPU_UP_PREPARE`,
    /// teardowns like `CPU_DEAD`.
    Prepare,
    /// While the CPU runs (`CPUHP_AP_*`): startups like `CPU_ONLINE`, teardowns like
    /// `CPU_DOWN_PREPARE`.
    Online,
}

/// Where to register a state (the `state` argument of `cpuhp_setup_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A rank chosen by the caller; refused if taken or reserved.
    Fixed(Rank),
    /// The next free rank of the prepare dynamic range (`CPUHP_BP_PREPARE_DYN`).
    PrepareDynamic,
    /// The next free rank of the online dynamic range (`CPUHP_AP_ONLINE_DYN`).
    OnlineDynamic,
}

/// The handle of a registered state: its rank, and which registration at that rank.
///
/// A removed state's rank is handed to the next registration in its slot, so the rank
/// alone would let an old handle remove or fault the new state; the registration number
/// (unique in the process) makes an old handle [`crate::Error::UnknownState`] instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StateId {
    pub(crate) rank: Rank,
    pub(crate) registration: u64,
}

impl StateId {
    /// The state's rank.
    pub fn rank(self) -> Rank {
        self.rank
    }
}

/// Numbers the registrations of every machine in the process, for [`StateId`].
static REGISTRATIONS: AtomicU64 = AtomicU64::new(0);

/// Startup and teardown as a trait object, for callers that keep state in a struct.
pub trait Callbacks: Send + Sync {
    /// Brings the state up on `cpu`.
    fn startup(&self, cpu: CpuId) -> Result<(), CallbackError>;
    /// Takes the state down on `cpu`. It cannot fail.
    fn teardown(&self, cpu: CpuId);
}

/// A state to register: a name and optional callbacks.
pub struct State {
    pub(crate) name: Arc<str>,
    pub(crate) startup: Option<Arc<StartupFn>>,
    pub(crate) teardown: Option<Arc<TeardownFn>>,
}

impl State {
    /// A state with no callbacks yet; the name should say who registers it
    /// (`"slab:prepare"`), as the kernel's do.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self { name: name.into(), startup: None, teardown: None }
    }

    /// A state whose startup and teardown are an object's methods.
    pub fn with_callbacks(name: impl Into<Arc<str>>, callbacks: Arc<dyn Callbacks>) -> Self {
        let up = Arc::clone(&callbacks);
        Self::new(name).startup(move |cpu| up.startup(cpu)).teardown(move |cpu| callbacks.teardown(cpu))
    }

    /// The startup callback, run when the state comes up on a CPU. An error rolls the CPU
    /// back to where it was.
    pub fn startup(
        mut self,
        startup: impl Fn(CpuId) -> Result<(), CallbackError> + Send + Sync + 'static,
    ) -> Self {
        self.startup = Some(Arc::new(startup));
        self
    }

    /// The teardown callback, run when the state goes down on a CPU. It returns nothing
    /// because it cannot fail: when a CPU is seen offline after the fact there is nothing
    /// to roll back to, and the kernel's teardowns have the same contract.
    pub fn teardown(mut self, teardown: impl Fn(CpuId) + Send + Sync + 'static) -> Self {
        self.teardown = Some(Arc::new(teardown));
        self
    }

    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("name", &self.name)
            .field("startup", &self.startup.is_some())
            .field("teardown", &self.teardown.is_some())
            .finish()
    }
}

/// A registered state, in the machine's ordered table (`struct cpuhp_step`).
#[derive(Debug)]
pub(crate) struct Step {
    pub(crate) rank: Rank,
    /// Which registration at `rank` this is (see [`StateId`]).
    pub(crate) registration: u64,
    pub(crate) state: State,
}

impl Step {
    /// A new registration of `state` at `rank`.
    pub(crate) fn new(rank: Rank, state: State) -> Step {
        Step { rank, registration: REGISTRATIONS.fetch_add(1, Ordering::Relaxed), state }
    }

    /// The handle of this registration.
    pub(crate) fn id(&self) -> StateId {
        StateId { rank: self.rank, registration: self.registration }
    }
}
