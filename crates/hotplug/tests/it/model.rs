//! A property test of random transition sequences on the fake backend, with injected
//! failures and dropped notices (external changes that no reconcile follows at once).
//!
//! Checked after every step: startups ascend and teardowns descend within each step and
//! CPU; every startup is matched by exactly one later teardown (a state is never started
//! twice without a teardown between, nor torn down when not up); a failed bring-up leaves
//! the CPU where it was; and the kernel's invariant "state S is up on CPU c exactly when
//! rank(S) <= rank(c)" holds. At the end every state is removed and nothing may be left up.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use hotplug::{CallbackError, Error, Hotplug, Rank, Slot, Source, State, StateId};
use proptest::prelude::*;
use topology::{CpuId, CpuState, FakeTopology, Topology};

const CPUS: u32 = 4;
/// The candidate states: fixed or dynamic slots on both sides of the bring-up point.
const SLOTS: [(&str, Slot); 4] = [
    ("p-fixed", Slot::Fixed(Rank(5))),
    ("p-dyn", Slot::PrepareDynamic),
    ("o-fixed", Slot::Fixed(Rank(12_000))),
    ("o-dyn", Slot::OnlineDynamic),
];

#[derive(Debug, Clone)]
enum Op {
    DriveUp(CpuId),
    DriveDown(CpuId),
    /// A change nobody announces: the machine only learns of it at the next reconcile.
    External(CpuId, bool),
    Reconcile,
    Inject(usize, CpuId),
    Toggle(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..CPUS).prop_map(Op::DriveUp),
        3 => (0..CPUS).prop_map(Op::DriveDown),
        3 => ((0..CPUS), any::<bool>()).prop_map(|(cpu, on)| Op::External(cpu, on)),
        2 => Just(Op::Reconcile),
        3 => ((0..SLOTS.len()), (0..CPUS)).prop_map(|(state, cpu)| Op::Inject(state, cpu)),
        1 => (0..SLOTS.len()).prop_map(Op::Toggle),
    ]
}

/// (is startup, rank, cpu)
type Call = (bool, Rank, CpuId);

struct Harness {
    fake: Arc<FakeTopology>,
    hotplug: Hotplug,
    calls: Arc<Mutex<Vec<Call>>>,
    installed: Vec<Option<StateId>>,
    /// (rank, cpu) pairs whose startup ran and whose teardown has not.
    up: BTreeSet<(Rank, CpuId)>,
}

impl Harness {
    fn new() -> Harness {
        let fake = Arc::new(FakeTopology::from_spec("4x2").unwrap());
        let hotplug = Hotplug::new(fake.clone()).unwrap();
        let mut harness = Harness {
            fake,
            hotplug,
            calls: Arc::default(),
            installed: vec![None; SLOTS.len()],
            up: BTreeSet::new(),
        };
        for index in 0..SLOTS.len() {
            harness.toggle(index).unwrap();
        }
        harness
    }

    fn state(&self, name: &'static str) -> State {
        let (up, down) = (Arc::clone(&self.calls), Arc::clone(&self.calls));
        State::new(name)
            .startup(move |cpu| {
                up.lock().unwrap().push((true, rank_of(name), cpu));
                Ok::<(), CallbackError>(())
            })
            .teardown(move |cpu| down.lock().unwrap().push((false, rank_of(name), cpu)))
    }

    fn toggle(&mut self, index: usize) -> hotplug::Result<()> {
        match self.installed[index] {
            Some(id) => {
                self.hotplug.remove_state(id)?;
                self.installed[index] = None;
            }
            None => {
                let (name, slot) = SLOTS[index];
                let id = self.hotplug.setup_state(slot, self.state(name))?;
                assert_eq!(id.rank(), rank_of(name));
                self.installed[index] = Some(id);
            }
        }
        Ok(())
    }

    fn online(&self, cpu: CpuId) -> bool {
        self.fake.online_cpus().unwrap().contains(cpu)
    }

    fn rank(&self, cpu: CpuId) -> Rank {
        self.hotplug.cpu_rank(cpu).unwrap()
    }

    fn up_on(&self, cpu: CpuId) -> Vec<Rank> {
        self.up.iter().filter(|&&(_, c)| c == cpu).map(|&(rank, _)| rank).collect()
    }

    /// Checks one step's calls and folds them into `up`.
    fn absorb(&mut self) -> Result<(), TestCaseError> {
        let calls = std::mem::take(&mut *self.calls.lock().unwrap());
        for cpu in 0..CPUS {
            // One step may hold several transitions (a missed teardown, then a bring-up
            // and its rollback), so order is checked within each run of calls of one kind.
            let mine: Vec<&Call> = calls.iter().filter(|call| call.2 == cpu).collect();
            for run in mine.chunk_by(|a, b| a.0 == b.0) {
                let ranks: Vec<Rank> = run.iter().map(|call| call.1).collect();
                if run[0].0 {
                    prop_assert!(
                        ranks.windows(2).all(|w| w[0] < w[1]),
                        "startups not ascending on cpu {cpu}: {mine:?}"
                    );
                } else {
                    prop_assert!(
                        ranks.windows(2).all(|w| w[0] > w[1]),
                        "teardowns not descending on cpu {cpu}: {mine:?}"
                    );
                }
            }
        }
        // A startup whose callback ran may still have failed (the harness's callbacks
        // never fail, faults are injected before the callback): every recorded startup
        // succeeded.
        for &(startup, rank, cpu) in &calls {
            if startup {
                prop_assert!(self.up.insert((rank, cpu)), "state {rank} started twice on cpu {cpu}");
            } else {
                prop_assert!(
                    self.up.remove(&(rank, cpu)),
                    "state {rank} torn down on cpu {cpu} while not up"
                );
            }
        }
        Ok(())
    }

    /// The kernel's invariant: S up on c exactly when rank(S) <= rank(c).
    fn check_invariant(&self) -> Result<(), TestCaseError> {
        for cpu in 0..CPUS {
            let expected: Vec<Rank> = self
                .installed
                .iter()
                .flatten()
                .map(|id| id.rank())
                .filter(|&rank| rank <= self.rank(cpu))
                .collect();
            let mut expected = expected;
            expected.sort();
            prop_assert_eq!(self.up_on(cpu), expected, "cpu {} at rank {}", cpu, self.rank(cpu));
        }
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::DriveUp(cpu) => {
                let (was_online, rank_before) = (self.online(cpu), self.rank(cpu));
                let result = self.hotplug.cpu_up(cpu);
                self.absorb()?;
                match result {
                    Ok(()) => {
                        prop_assert!(self.online(cpu));
                        prop_assert_eq!(self.rank(cpu), Rank::ONLINE);
                    }
                    Err(Error::Startup { .. }) => {
                        // A failed bring-up leaves the CPU where it was.
                        prop_assert_eq!(self.online(cpu), was_online);
                        if was_online {
                            prop_assert_eq!(self.rank(cpu), rank_before);
                        } else {
                            prop_assert_eq!(self.rank(cpu), Rank::OFFLINE);
                            prop_assert!(self.up_on(cpu).is_empty());
                        }
                    }
                    Err(other) => prop_assert!(false, "unexpected error: {other}"),
                }
            }
            Op::DriveDown(cpu) => {
                let rank_before = self.rank(cpu);
                let result = self.hotplug.cpu_down(cpu);
                self.absorb()?;
                match result {
                    Ok(()) => {
                        prop_assert!(!self.online(cpu));
                        prop_assert_eq!(self.rank(cpu), Rank::OFFLINE);
                        prop_assert!(self.up_on(cpu).is_empty());
                    }
                    Err(Error::SetOnline { .. }) => {
                        // Only the last online cpu is refused; it stays online, its
                        // states back up unless the rollback itself hit a fault.
                        prop_assert!(self.online(cpu));
                        prop_assert!(
                            self.rank(cpu) == rank_before || self.hotplug.failed_cpus().contains(cpu)
                        );
                    }
                    Err(other) => prop_assert!(false, "unexpected error: {other}"),
                }
            }
            Op::External(cpu, on) => {
                let state = if on { CpuState::Online } else { CpuState::Offline };
                // The fake refuses the last online cpu; that is fine here.
                let _ = self.fake.set_online(cpu, state);
                self.absorb()?;
            }
            Op::Reconcile => {
                let report = self.hotplug.reconcile(Source::Manual).unwrap();
                self.absorb()?;
                let online = self.fake.online_cpus().unwrap();
                for cpu in 0..CPUS {
                    if !online.contains(cpu) {
                        prop_assert_eq!(self.rank(cpu), Rank::OFFLINE);
                    } else if !self.hotplug.failed_cpus().contains(cpu) {
                        prop_assert_eq!(self.rank(cpu), Rank::ONLINE);
                    }
                }
                for (cpu, _) in &report.failed {
                    prop_assert!(self.hotplug.failed_cpus().contains(*cpu));
                }
            }
            Op::Inject(index, cpu) => {
                if let Some(id) = self.installed[index] {
                    let armed = self.hotplug.inject_fault(id, cpu);
                    prop_assert!(armed.is_ok(), "arming a fault for an installed state: {armed:?}");
                }
            }
            Op::Toggle(index) => {
                let before = self.installed[index];
                let result = self.toggle(index);
                self.absorb()?;
                if let Err(error) = result {
                    // Only a registration can fail (an injected fault): nothing installed.
                    prop_assert!(before.is_none(), "removal failed: {error}");
                    prop_assert!(self.installed[index].is_none());
                }
            }
        }
        self.check_invariant()
    }
}

fn rank_of(name: &str) -> Rank {
    match name {
        "p-fixed" => Rank(5),
        "p-dyn" => Rank::PREPARE_DYN,
        "o-fixed" => Rank(12_000),
        "o-dyn" => Rank::ONLINE_DYN,
        other => panic!("unknown state {other}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_transitions_keep_the_order_and_the_pairing(ops in proptest::collection::vec(op(), 1..60)) {
        let mut harness = Harness::new();
        harness.absorb()?;
        harness.check_invariant()?;
        for op in &ops {
            harness.step(op)?;
        }
        // Catch up with dropped notices, then take every state away.
        harness.hotplug.reconcile(Source::Manual).unwrap();
        harness.absorb()?;
        for index in (0..SLOTS.len()).rev() {
            if harness.installed[index].is_some() {
                harness.toggle(index).unwrap();
                harness.absorb()?;
            }
        }
        prop_assert!(harness.up.is_empty(), "left up: {:?}", harness.up);
    }
}
