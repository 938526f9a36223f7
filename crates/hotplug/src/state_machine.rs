//! The state machine: the ordered table of states, each CPU's current rank, and the
//! transitions between ranks (the kernel's `cpuhp_up_callbacks`, `cpuhp_down_callbacks`,
//! `__cpuhp_setup_state`, `__cpuhp_remove_state`, `_cpu_up`, `_cpu_down` in `kernel/cpu.c`).
//!
//! Invariant, as in the kernel: a registered state S is up on CPU c exactly when
//! `S.rank <= rank(c)`. Every change of a CPU's rank runs the startups of the states it
//! passes going up, in ascending order, or their teardowns going down, in descending
//! order; registering and removing a state runs its callback on exactly the CPUs whose
//! rank is at or above it. So each startup is paired with exactly one teardown.

use std::fmt;
use std::sync::Arc;
use std::thread::{self, ThreadId};
use std::time::Instant;

use crossbeam_channel::Receiver;
use topology::{CpuId, CpuSet, CpuState, Topology};

use crate::error::{CallbackError, Error, Result};
use crate::events::{Event, EventFn, EventKind, Observers, Outcome, Source};
use crate::state::{Rank, Section, Slot, State, StateId, Step};
use crate::sync::{lock, Mutex, MutexGuard};

/// One CPU as the machine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuRecord {
    /// The highest rank whose states are all up (`struct cpuhp_cpu_state::state`).
    rank: Rank,
    /// The CPU is online but its bring-up failed and was rolled back; reconciles leave it
    /// alone until it goes offline or a driver asks again with [`Hotplug::cpu_up`].
    bringup_failed: bool,
}

impl CpuRecord {
    const OFFLINE: CpuRecord = CpuRecord { rank: Rank::OFFLINE, bringup_failed: false };
}

/// What the transition lock protects.
#[derive(Debug)]
struct Inner {
    /// Registered states, sorted by rank.
    steps: Vec<Step>,
}

/// A CPU-hotplug state machine over one [`Topology`]. Cheap to clone; clones share the
/// machine.
///
/// All transitions (registering, removing, reconciling, driving) take one lock, so only
/// one runs at a time, and callbacks run with it held. Calling any of them from inside a
/// callback or an event function returns [`Error::Reentrant`] instead of deadlocking.
#[derive(Clone)]
pub struct Hotplug {
    shared: Arc<Shared>,
}

struct Shared {
    topology: Arc<dyn Topology>,
    /// The transition lock (`cpu_hotplug_lock` and `cpuhp_state_mutex` in one).
    inner: Mutex<Inner>,
    /// The thread holding the transition lock, to refuse re-entry.
    owner: Mutex<Option<ThreadId>>,
    /// Each CPU's record, indexed by CPU id; written only with the transition lock held,
    /// read without it.
    cpus: Mutex<Vec<CpuRecord>>,
    /// The registered states' handles and the faults armed for them, under one lock so
    /// that a fault is never armed for a state removed meanwhile.
    faults: Mutex<Faults>,
    observers: Observers,
}

impl fmt::Debug for Hotplug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hotplug")
            .field("topology", &self.shared.topology.name())
            .field("cpus", &*lock(&self.shared.cpus))
            .field("observers", &self.shared.observers)
            .finish_non_exhaustive()
    }
}

/// What [`Hotplug::inject_fault`] reads and writes without the transition lock.
#[derive(Default)]
struct Faults {
    /// Every registered state's handle, kept with the transition lock held.
    registered: Vec<StateId>,
    /// Armed one-shot faults: (state, cpu), each for a registered state.
    armed: Vec<(StateId, CpuId)>,
}

/// A registered state, as [`Hotplug::states`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateInfo {
    /// Its handle.
    pub id: StateId,
    /// Its name.
    pub name: Arc<str>,
    /// Which side of the CPU's own switch it runs on.
    pub section: Section,
    /// Whether it has a startup callback.
    pub has_startup: bool,
    /// Whether it has a teardown callback.
    pub has_teardown: bool,
}

/// What one reconcile did.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// CPUs whose states were brought up.
    pub brought_up: CpuSet,
    /// CPUs whose states were torn down.
    pub torn_down: CpuSet,
    /// CPUs whose bring-up failed and was rolled back, with the error.
    pub failed: Vec<(CpuId, Error)>,
}

impl Reconciled {
    /// Whether nothing changed.
    pub fn is_quiet(&self) -> bool {
        self.brought_up.is_empty() && self.torn_down.is_empty() && self.failed.is_empty()
    }
}

/// Whether registering or removing a state runs its callbacks on the CPUs concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Calls {
    Invoke,
    Skip,
}

/// Holds the transition lock and marks the thread as its owner until dropped.
struct Transition<'a> {
    inner: MutexGuard<'a, Inner>,
    owner: &'a Mutex<Option<ThreadId>>,
}

impl Drop for Transition<'_> {
    fn drop(&mut self) {
        *lock(self.owner) = None;
    }
}

impl Hotplug {
    /// A machine with no states over `topology`. CPUs online now start at
    /// [`Rank::ONLINE`], the others at [`Rank::OFFLINE`]: with no state registered, that is
    /// already in line with the machine.
    pub fn new(topology: Arc<dyn Topology>) -> Result<Hotplug> {
        let online = read_online(&*topology)?;
        let bound = topology.cpu_id_bound().max(online.id_bound());
        let cpus = (0..bound as CpuId)
            .map(|cpu| {
                let rank = if online.contains(cpu) { Rank::ONLINE } else { Rank::OFFLINE };
                CpuRecord { rank, bringup_failed: false }
            })
            .collect();
        Ok(Hotplug {
            shared: Arc::new(Shared {
                topology,
                inner: Mutex::new(Inner { steps: Vec::new() }),
                owner: Mutex::new(None),
                cpus: Mutex::new(cpus),
                faults: Mutex::new(Faults::default()),
                observers: Observers::default(),
            }),
        })
    }

    /// The topology this machine follows and drives.
    pub fn topology(&self) -> &Arc<dyn Topology> {
        &self.shared.topology
    }

    /// Registers a state and runs its startup on every CPU at or above its rank (every
    /// online CPU), as `cpuhp_setup_state` does. If a startup fails, the CPUs already done
    /// are torn down again in reverse, the state is not installed, and the error says
    /// which CPU failed.
    pub fn setup_state(&self, slot: Slot, state: State) -> Result<StateId> {
        self.add_state(slot, state, Calls::Invoke)
    }

    /// Registers a state without running any callback (`cpuhp_setup_state_nocalls`): the
    /// caller has set the online CPUs up itself.
    pub fn setup_state_nocalls(&self, slot: Slot, state: State) -> Result<StateId> {
        self.add_state(slot, state, Calls::Skip)
    }

    /// Runs a state's teardown on every CPU at or above its rank, then removes it
    /// (`cpuhp_remove_state`).
    pub fn remove_state(&self, id: StateId) -> Result<()> {
        self.drop_state(id, Calls::Invoke)
    }

    /// Removes a state without running its teardowns (`cpuhp_remove_state_nocalls`).
    pub fn remove_state_nocalls(&self, id: StateId) -> Result<()> {
        self.drop_state(id, Calls::Skip)
    }

    /// The registered states in order.
    pub fn states(&self) -> Result<Vec<StateInfo>> {
        let transition = self.shared.begin("states")?;
        Ok(transition
            .inner
            .steps
            .iter()
            .map(|step| StateInfo {
                id: step.id(),
                name: Arc::clone(&step.state.name),
                section: step.rank.section(),
                has_startup: step.state.startup.is_some(),
                has_teardown: step.state.teardown.is_some(),
            })
            .collect())
    }

    /// Makes the next startup of state `id` on `cpu` fail with [`CallbackError::Injected`],
    /// once, like writing the state's number to the kernel's `cpuN/hotplug/fail`. Only
    /// startups can be made to fail, since teardowns cannot. Callable from anywhere,
    /// callbacks included. [`Error::UnknownState`] for a handle whose state was removed
    /// (a handle names one registration, not whichever state now holds its rank), and
    /// [`Error::UnknownCpu`] for a CPU the machine cannot have; nothing is armed then.
    pub fn inject_fault(&self, id: StateId, cpu: CpuId) -> Result<()> {
        self.shared.check_possible(cpu)?;
        let mut faults = lock(&self.shared.faults);
        if !faults.registered.contains(&id) {
            return Err(Error::UnknownState { rank: id.rank });
        }
        faults.armed.push((id, cpu));
        Ok(())
    }

    /// A CPU's current rank (`cpuN/hotplug/state`): [`Rank::ONLINE`] when every state is
    /// up, [`Rank::OFFLINE`] when none is; `None` for a CPU the machine does not know.
    pub fn cpu_rank(&self, cpu: CpuId) -> Option<Rank> {
        lock(&self.shared.cpus).get(cpu as usize).map(|record| record.rank)
    }

    /// CPUs with every state up.
    pub fn online_view(&self) -> CpuSet {
        self.cpus_where(|record| record.rank == Rank::ONLINE)
    }

    /// CPUs that are online but whose bring-up failed and was rolled back.
    pub fn failed_cpus(&self) -> CpuSet {
        self.cpus_where(|record| record.bringup_failed)
    }

    /// A channel of every later event.
    pub fn events(&self) -> Receiver<Event> {
        self.shared.observers.subscribe()
    }

    /// Calls `function` with every later event, on the thread that caused it, with the
    /// transition lock held.
    pub fn on_event(&self, function: impl Fn(&Event) + Send + Sync + 'static) {
        let function: Arc<EventFn> = Arc::new(function);
        self.shared.observers.on_event(function);
    }

    /// Brings every CPU's states into line with the CPUs online now
    /// (`topology.online_cpus()`, the truth): up for online CPUs (except those whose
    /// bring-up already failed while they stayed online), down for offline ones. What
    /// woke the caller does not matter: a lost, duplicated or forged notice changes
    /// nothing wrong. Errors only when the online CPUs cannot be read.
    pub fn reconcile(&self, source: Source) -> Result<Reconciled> {
        let mut transition = self.shared.begin("reconcile")?;
        let online = read_online(&*self.shared.topology)?;
        Ok(self.shared.reconcile_locked(&mut transition, &online, source))
    }

    /// Brings a CPU online and its states up, as the kernel's `_cpu_up`: the prepare
    /// startups run first, then `cpuN/online` is written (or the fake is told), then the
    /// online startups. A failing startup rolls the CPU back, offline again with every
    /// state down, and returns the callback's error; a refusal of the kernel or backend
    /// comes back as [`Error::SetOnline`]. A CPU already online just gets its missing
    /// states brought up (this also retries a failed bring-up).
    pub fn cpu_up(&self, cpu: CpuId) -> Result<()> {
        self.shared.check_possible(cpu)?;
        let mut transition = self.shared.begin("cpu_up")?;
        self.shared.drive_up(&mut transition, cpu)
    }

    /// Takes a CPU offline and its states down, as the kernel's `_cpu_down`: the online
    /// teardowns run first, then `cpuN/online` is written, then the prepare teardowns. If
    /// the kernel or backend refuses ([`Error::SetOnline`], [`Error::NoOnlineFile`]), the
    /// online states are brought back up and the CPU stays online.
    pub fn cpu_down(&self, cpu: CpuId) -> Result<()> {
        self.shared.check_possible(cpu)?;
        let mut transition = self.shared.begin("cpu_down")?;
        self.shared.drive_down(&mut transition, cpu)
    }

    /// Whether the calling thread holds the transition lock (is inside a callback).
    pub fn in_callback(&self) -> bool {
        *lock(&self.shared.owner) == Some(thread::current().id())
    }

    /// Sends an event from a watcher source.
    pub(crate) fn emit(&self, source: Source, kind: EventKind) {
        self.shared.observers.emit(source, kind);
    }

    fn cpus_where(&self, keep: impl Fn(&CpuRecord) -> bool) -> CpuSet {
        let cpus = lock(&self.shared.cpus);
        (0..cpus.len() as CpuId).filter(|&cpu| keep(&cpus[cpu as usize])).collect()
    }

    fn add_state(&self, slot: Slot, state: State, calls: Calls) -> Result<StateId> {
        let shared = &*self.shared;
        let mut transition = shared.begin("setup_state")?;
        let steps = &transition.inner.steps;
        if let Some(step) = steps.iter().find(|step| step.state.name == state.name) {
            return Err(Error::DuplicateName { name: state.name.to_string(), rank: step.rank });
        }
        let step = Step::new(free_rank(steps, slot)?, state);
        if calls == Calls::Invoke {
            shared.install_on_cpus(&step)?;
        }
        let at = transition.inner.steps.partition_point(|other| other.rank < step.rank);
        let id = step.id();
        transition.inner.steps.insert(at, step);
        lock(&shared.faults).registered.push(id);
        Ok(id)
    }

    fn drop_state(&self, id: StateId, calls: Calls) -> Result<()> {
        let shared = &*self.shared;
        let mut transition = shared.begin("remove_state")?;
        let at = transition
            .inner
            .steps
            .iter()
            .position(|step| step.id() == id)
            .ok_or(Error::UnknownState { rank: id.rank })?;
        let step = transition.inner.steps.remove(at);
        if calls == Calls::Invoke {
            for cpu in shared.cpus_at_or_above(step.rank).iter() {
                shared.teardown(&step, cpu, Source::Registration);
            }
        }
        let mut faults = lock(&shared.faults);
        faults.registered.retain(|&registered| registered != id);
        faults.armed.retain(|&(fault, _)| fault != id);
        Ok(())
    }
}

impl Shared {
    /// Takes the transition lock, refusing re-entry from the thread that holds it.
    fn begin(&self, operation: &'static str) -> Result<Transition<'_>> {
        let me = thread::current().id();
        if *lock(&self.owner) == Some(me) {
            return Err(Error::Reentrant { operation });
        }
        let inner = lock(&self.inner);
        *lock(&self.owner) = Some(me);
        Ok(Transition { inner, owner: &self.owner })
    }

    fn check_possible(&self, cpu: CpuId) -> Result<()> {
        let possible = self.topology.possible_cpus();
        if possible.contains(cpu) {
            Ok(())
        } else {
            Err(Error::UnknownCpu { cpu, machine: self.topology.name(), possible: possible.to_string() })
        }
    }

    /// For sysfs-backed topologies, refuses a CPU without an `online` file before any
    /// callback runs (cpu0 on most machines), as the kernel offers no file to write.
    fn check_online_file(&self, cpu: CpuId) -> Result<()> {
        let Some(path) = self.topology.cpu_online_file(cpu) else { return Ok(()) };
        if path.exists() {
            Ok(())
        } else {
            Err(Error::NoOnlineFile { cpu, path })
        }
    }

    fn record(&self, cpu: CpuId) -> CpuRecord {
        lock(&self.cpus).get(cpu as usize).copied().unwrap_or(CpuRecord::OFFLINE)
    }

    /// Changes one field of a CPU's record under one hold of the lock.
    fn update_record(&self, cpu: CpuId, change: impl FnOnce(&mut CpuRecord)) {
        let mut cpus = lock(&self.cpus);
        if cpus.len() <= cpu as usize {
            cpus.resize(cpu as usize + 1, CpuRecord::OFFLINE);
        }
        change(&mut cpus[cpu as usize]);
    }

    fn set_rank(&self, cpu: CpuId, rank: Rank) {
        self.update_record(cpu, |record| record.rank = rank);
    }

    /// Marks a CPU whose bring-up failed while it stays online: reconciles leave it alone.
    fn mark_bringup_failed(&self, cpu: CpuId) {
        self.update_record(cpu, |record| record.bringup_failed = true);
    }

    fn cpus_at_or_above(&self, rank: Rank) -> CpuSet {
        let cpus = lock(&self.cpus);
        (0..cpus.len() as CpuId).filter(|&cpu| cpus[cpu as usize].rank >= rank).collect()
    }

    /// Runs a new state's startup on every CPU at or above its rank; on a failure tears
    /// the CPUs already done down again, in reverse (`cpuhp_rollback_install`).
    fn install_on_cpus(&self, step: &Step) -> Result<()> {
        let mut done = Vec::new();
        for cpu in self.cpus_at_or_above(step.rank).iter() {
            if let Err(source) = self.startup(step, cpu, Source::Registration) {
                for &cpu in done.iter().rev() {
                    self.teardown(step, cpu, Source::Registration);
                }
                return Err(startup_error(step, cpu, source));
            }
            done.push(cpu);
        }
        Ok(())
    }

    /// Runs one startup (`cpuhp_invoke_callback`), honouring an armed fault, and reports
    /// it.
    fn startup(&self, step: &Step, cpu: CpuId, source: Source) -> Result<(), CallbackError> {
        let injected = {
            let mut faults = lock(&self.faults);
            let at = faults.armed.iter().position(|&fault| fault == (step.id(), cpu));
            at.map(|at| faults.armed.remove(at)).is_some()
        };
        let started = Instant::now();
        let result = if injected {
            Err(CallbackError::Injected { state: step.state.name.to_string(), cpu })
        } else if let Some(startup) = &step.state.startup {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| startup(cpu)))
                .unwrap_or_else(|panic| Err(CallbackError::Panicked(panic_message(&panic))))
        } else {
            Ok(())
        };
        let duration = started.elapsed();
        let state = Arc::clone(&step.state.name);
        match &result {
            Ok(()) => {
                let duration = step.state.startup.as_ref().map(|_| duration);
                self.observers
                    .emit(source, EventKind::StateEntered { cpu, state, rank: step.rank, duration });
            }
            Err(error) => {
                let error = error.to_string();
                self.observers
                    .emit(source, EventKind::CallbackFailed { cpu, state, rank: step.rank, duration, error });
            }
        }
        result
    }

    /// Runs one teardown and reports it. A panic is caught and reported as a failure, but
    /// the state counts as down: a teardown cannot fail.
    fn teardown(&self, step: &Step, cpu: CpuId, source: Source) {
        let started = Instant::now();
        let panicked = step.state.teardown.as_ref().and_then(|teardown| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| teardown(cpu))).err()
        });
        let duration = started.elapsed();
        let state = Arc::clone(&step.state.name);
        if let Some(panic) = panicked {
            let error = format!("teardown panicked: {}", panic_message(&panic));
            self.observers.emit(
                source,
                EventKind::CallbackFailed {
                    cpu,
                    state: Arc::clone(&state),
                    rank: step.rank,
                    duration,
                    error,
                },
            );
        }
        let duration = step.state.teardown.as_ref().map(|_| duration);
        self.observers.emit(source, EventKind::StateLeft { cpu, state, rank: step.rank, duration });
    }

    /// Moves a CPU up to `target`, running the startups of the states it passes in
    /// ascending order (`cpuhp_up_callbacks`). If one fails, the states already brought up
    /// are torn down in reverse and the CPU is back at its starting rank.
    fn run_up(&self, inner: &Inner, cpu: CpuId, target: Rank, source: Source) -> Result<()> {
        let from = self.record(cpu).rank;
        if target <= from {
            return Ok(());
        }
        self.observers.emit(source, EventKind::TransitionStarted { cpu, from, to: target });
        let steps: Vec<&Step> =
            inner.steps.iter().filter(|step| step.rank > from && step.rank <= target).collect();
        for (done, step) in steps.iter().enumerate() {
            if let Err(error) = self.startup(step, cpu, source) {
                // Roll back (`cpuhp_reset_state` + `cpuhp_down_callbacks`): the states
                // brought up by this transition go down, last first.
                for step in steps[..done].iter().rev() {
                    self.teardown(step, cpu, source);
                }
                self.set_rank(cpu, from);
                self.observers.emit(
                    source,
                    EventKind::TransitionFinished { cpu, reached: from, outcome: Outcome::RolledBack },
                );
                return Err(startup_error(step, cpu, error));
            }
        }
        self.set_rank(cpu, target);
        self.observers.emit(
            source,
            EventKind::TransitionFinished { cpu, reached: target, outcome: Outcome::Completed },
        );
        Ok(())
    }

    /// Moves a CPU down to `target`, running the teardowns of the states it passes in
    /// descending order (`cpuhp_down_callbacks`). It cannot fail; returns whether the CPU
    /// had anything to tear down.
    fn run_down(&self, inner: &Inner, cpu: CpuId, target: Rank, source: Source) -> bool {
        let from = self.record(cpu).rank;
        if target >= from {
            return false;
        }
        self.observers.emit(source, EventKind::TransitionStarted { cpu, from, to: target });
        for step in inner.steps.iter().rev().filter(|step| step.rank > target && step.rank <= from) {
            self.teardown(step, cpu, source);
        }
        self.set_rank(cpu, target);
        self.observers.emit(
            source,
            EventKind::TransitionFinished { cpu, reached: target, outcome: Outcome::Completed },
        );
        true
    }

    /// Tears every state of an offline CPU down and forgets a failed bring-up, so that the
    /// CPU's next bring-up starts afresh; returns whether anything was torn down.
    fn settle_offline(&self, inner: &Inner, cpu: CpuId, source: Source) -> bool {
        let torn_down = self.run_down(inner, cpu, Rank::OFFLINE, source);
        self.update_record(cpu, |record| *record = CpuRecord::OFFLINE);
        torn_down
    }

    /// Brings one CPU into line with its state in the online files.
    fn settle(&self, inner: &Inner, cpu: CpuId, state: CpuState, source: Source, report: &mut Reconciled) {
        match state {
            CpuState::Online => {
                let record = self.record(cpu);
                if record.rank == Rank::ONLINE || record.bringup_failed {
                    return;
                }
                match self.run_up(inner, cpu, Rank::ONLINE, source) {
                    Ok(()) => {
                        report.brought_up.insert(cpu);
                    }
                    Err(error) => {
                        self.mark_bringup_failed(cpu);
                        report.failed.push((cpu, error));
                    }
                }
            }
            CpuState::Offline => {
                if self.settle_offline(inner, cpu, source) {
                    report.torn_down.insert(cpu);
                }
            }
        }
    }

    fn reconcile_locked(
        &self,
        transition: &mut Transition<'_>,
        online: &CpuSet,
        source: Source,
    ) -> Reconciled {
        let known = lock(&self.cpus).len() as CpuId;
        let mut report = Reconciled::default();
        // Teardowns first, so that a CPU replacing another never finds both up at once
        // in a callback's view; then bring-ups in ascending CPU order.
        for cpu in (0..known).filter(|&cpu| !online.contains(cpu)) {
            self.settle(&transition.inner, cpu, CpuState::Offline, source, &mut report);
        }
        for cpu in online.iter() {
            self.settle(&transition.inner, cpu, CpuState::Online, source, &mut report);
        }
        report
    }

    fn is_online(&self, cpu: CpuId) -> Result<bool> {
        self.topology.cpu_online(cpu).map_err(|source| Error::Topology {
            context: format!("reading whether cpu {cpu} of {} is online", self.topology.name()),
            source,
        })
    }

    /// `_cpu_up`: prepare startups, the switch, online startups; rolled back on failure.
    fn drive_up(&self, transition: &mut Transition<'_>, cpu: CpuId) -> Result<()> {
        let inner = &*transition.inner;
        if self.is_online(cpu)? {
            // Already on: bring up whatever is missing (retrying a failed bring-up).
            self.update_record(cpu, |record| record.bringup_failed = false);
            let mut report = Reconciled::default();
            self.settle(inner, cpu, CpuState::Online, Source::Driver, &mut report);
            return report.failed.pop().map_or(Ok(()), |(_, error)| Err(error));
        }
        // Offline in truth: a teardown we missed comes first.
        self.settle_offline(inner, cpu, Source::Driver);
        self.check_online_file(cpu)?;
        self.run_up(inner, cpu, Rank::BRINGUP_CPU, Source::Driver)?;
        if let Err(source) = self.topology.set_cpu_online(cpu, CpuState::Online) {
            self.run_down(inner, cpu, Rank::OFFLINE, Source::Driver);
            return Err(Error::SetOnline { cpu, target: CpuState::Online, source });
        }
        if let Err(error) = self.run_up(inner, cpu, Rank::ONLINE, Source::Driver) {
            // The kernel takes a CPU whose bring-up failed offline again; so do we.
            match self.topology.set_cpu_online(cpu, CpuState::Offline) {
                Ok(()) => {
                    self.run_down(inner, cpu, Rank::OFFLINE, Source::Driver);
                }
                // It cannot go back offline: it stays online with its prepare states up,
                // marked failed, until it goes offline or is driven up again.
                Err(_) => self.mark_bringup_failed(cpu),
            }
            return Err(error);
        }
        Ok(())
    }

    /// `_cpu_down`: online teardowns, the switch, prepare teardowns; if the switch is
    /// refused, the online states come back up.
    fn drive_down(&self, transition: &mut Transition<'_>, cpu: CpuId) -> Result<()> {
        let inner = &*transition.inner;
        if !self.is_online(cpu)? {
            self.settle_offline(inner, cpu, Source::Driver);
            return Ok(());
        }
        self.check_online_file(cpu)?;
        let before = self.record(cpu).rank;
        self.run_down(inner, cpu, Rank::BRINGUP_CPU, Source::Driver);
        if let Err(source) = self.topology.set_cpu_online(cpu, CpuState::Offline) {
            // Undo (`undo_cpu_down`): bring back what this call took down. Should a
            // startup fail now, run_up has rolled back and the CPU is marked failed.
            if self.run_up(inner, cpu, before, Source::Driver).is_err() {
                self.mark_bringup_failed(cpu);
            }
            return Err(Error::SetOnline { cpu, target: CpuState::Offline, source });
        }
        self.settle_offline(inner, cpu, Source::Driver);
        Ok(())
    }
}

/// The online CPUs, the truth every reconcile starts from.
fn read_online(topology: &dyn Topology) -> Result<CpuSet> {
    topology.online_cpus().map_err(|source| Error::Topology {
        context: format!("reading {}'s online cpus", topology.name()),
        source,
    })
}

/// The rank a slot resolves to, given the states registered (`cpuhp_reserve_state`).
fn free_rank(steps: &[Step], slot: Slot) -> Result<Rank> {
    let holder = |rank: Rank| steps.iter().find(|step| step.rank == rank);
    let dynamic = |range: &'static str, first: Rank, last: Rank| {
        (first.0..=last.0).map(Rank).find(|&rank| holder(rank).is_none()).ok_or(Error::NoDynamicRank {
            range,
            first,
            last,
        })
    };
    match slot {
        Slot::Fixed(rank) => {
            if let Some(reason) = rank.reserved_reason() {
                return Err(Error::ReservedRank { rank, reason });
            }
            match holder(rank) {
                Some(step) => Err(Error::RankTaken { rank, holder: step.state.name.to_string() }),
                None => Ok(rank),
            }
        }
        Slot::PrepareDynamic => dynamic("prepare", Rank::PREPARE_DYN, Rank::PREPARE_DYN_END),
        Slot::OnlineDynamic => dynamic("online", Rank::ONLINE_DYN, Rank::ONLINE_DYN_END),
    }
}

fn startup_error(step: &Step, cpu: CpuId, source: CallbackError) -> Error {
    Error::Startup { state: step.state.name.to_string(), rank: step.rank, cpu, source }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic payload".to_string())
}

#[cfg(test)]
mod tests;
