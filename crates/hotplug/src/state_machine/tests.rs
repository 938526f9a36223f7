use std::sync::{Arc, Mutex, OnceLock};

use topology::{CpuId, CpuState, FakeTopology, Topology};

use crate::{CallbackError, Error, EventKind, Hotplug, Outcome, Rank, Slot, Source, State, StateId};

/// One callback call: ("up" or "down", state name, cpu).
type Call = (&'static str, &'static str, CpuId);

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Call>>>);

impl Log {
    fn state(&self, name: &'static str) -> State {
        let (up, down) = (self.clone(), self.clone());
        State::new(name)
            .startup(move |cpu| {
                up.0.lock().unwrap().push(("up", name, cpu));
                Ok(())
            })
            .teardown(move |cpu| down.0.lock().unwrap().push(("down", name, cpu)))
    }

    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn machine(spec: &str) -> (Arc<FakeTopology>, Hotplug) {
    let fake = Arc::new(FakeTopology::from_spec(spec).unwrap());
    let hotplug = Hotplug::new(fake.clone()).unwrap();
    (fake, hotplug)
}

/// Three states: one fixed prepare state, one dynamic prepare state, one online state.
fn three_states(hotplug: &Hotplug, log: &Log) -> [StateId; 3] {
    [
        hotplug.setup_state_nocalls(Slot::Fixed(Rank(10)), log.state("a")).unwrap(),
        hotplug.setup_state_nocalls(Slot::PrepareDynamic, log.state("b")).unwrap(),
        hotplug.setup_state_nocalls(Slot::OnlineDynamic, log.state("c")).unwrap(),
    ]
}

#[test]
fn bring_up_ascends_and_teardown_descends() {
    let (fake, hotplug) = machine("4x2");
    let log = Log::default();
    three_states(&hotplug, &log);
    assert!(log.take().is_empty(), "nocalls registration ran callbacks");

    hotplug.cpu_down(3).unwrap();
    assert_eq!(log.take(), [("down", "c", 3), ("down", "b", 3), ("down", "a", 3)]);
    assert_eq!(hotplug.cpu_rank(3), Some(Rank::OFFLINE));
    assert!(!fake.online_cpus().unwrap().contains(3));

    hotplug.cpu_up(3).unwrap();
    assert_eq!(log.take(), [("up", "a", 3), ("up", "b", 3), ("up", "c", 3)]);
    assert_eq!(hotplug.cpu_rank(3), Some(Rank::ONLINE));
    assert!(fake.online_cpus().unwrap().contains(3));
}

#[test]
fn driving_a_cpu_to_where_it_is_runs_nothing() {
    let (_fake, hotplug) = machine("4x2");
    let log = Log::default();
    three_states(&hotplug, &log);
    hotplug.cpu_up(2).unwrap();
    hotplug.cpu_down(2).unwrap();
    log.take();
    hotplug.cpu_down(2).unwrap();
    assert!(log.take().is_empty());
}

#[test]
fn registering_runs_startup_on_every_online_cpu_only() {
    let (_fake, hotplug) = machine("4x2");
    hotplug.cpu_down(1).unwrap();
    let log = Log::default();
    let id = hotplug.setup_state(Slot::OnlineDynamic, log.state("s")).unwrap();
    assert_eq!(log.take(), [("up", "s", 0), ("up", "s", 2), ("up", "s", 3)]);
    assert_eq!(id.rank(), Rank::ONLINE_DYN);
    let states = hotplug.states().unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(&*states[0].name, "s");
}

#[test]
fn a_failing_registration_rolls_back_and_installs_nothing() {
    let (_fake, hotplug) = machine("4x2");
    let log = Log::default();
    let (up, down) = (log.clone(), log.clone());
    let state = State::new("picky")
        .startup(move |cpu| {
            up.0.lock().unwrap().push(("up", "picky", cpu));
            if cpu == 2 {
                Err(CallbackError::msg("cpu 2 has no room"))
            } else {
                Ok(())
            }
        })
        .teardown(move |cpu| down.0.lock().unwrap().push(("down", "picky", cpu)));
    let error = hotplug.setup_state(Slot::PrepareDynamic, state).unwrap_err();
    assert!(matches!(error, Error::Startup { cpu: 2, .. }), "{error}");
    assert!(error.to_string().contains("cpu 2 has no room"), "{error}");
    assert_eq!(
        log.take(),
        [
            ("up", "picky", 0),
            ("up", "picky", 1),
            ("up", "picky", 2),
            ("down", "picky", 1),
            ("down", "picky", 0)
        ]
    );
    assert!(hotplug.states().unwrap().is_empty());
    // The slot is free again.
    let id = hotplug.setup_state(Slot::PrepareDynamic, log.state("next")).unwrap();
    assert_eq!(id.rank(), Rank::PREPARE_DYN);
}

#[test]
fn removing_runs_teardown_on_every_online_cpu_and_nocalls_does_not() {
    let (_fake, hotplug) = machine("4x2");
    let log = Log::default();
    let [a, _, c] = three_states(&hotplug, &log);
    hotplug.cpu_down(0).unwrap();
    log.take();
    hotplug.remove_state(c).unwrap();
    assert_eq!(log.take(), [("down", "c", 1), ("down", "c", 2), ("down", "c", 3)]);
    hotplug.remove_state_nocalls(a).unwrap();
    assert!(log.take().is_empty());
    assert!(matches!(hotplug.remove_state(a), Err(Error::UnknownState { .. })));
    assert_eq!(hotplug.states().unwrap().len(), 1);
}

#[test]
fn a_removed_states_handle_does_not_reach_the_state_given_its_rank_since() {
    let (_fake, hotplug) = machine("4x2");
    let log = Log::default();
    let old = hotplug.setup_state_nocalls(Slot::OnlineDynamic, log.state("old")).unwrap();
    hotplug.remove_state(old).unwrap();
    let new = hotplug.setup_state_nocalls(Slot::OnlineDynamic, log.state("new")).unwrap();
    assert_eq!(new.rank(), old.rank(), "the slot hands the freed rank to the next registration");
    assert_ne!(new, old);

    // A fault cannot be armed through the old handle, for the new state or any other.
    assert!(matches!(hotplug.inject_fault(old, 1), Err(Error::UnknownState { .. })));
    let absurd = hotplug.inject_fault(new, 4096).unwrap_err();
    assert!(matches!(absurd, Error::UnknownCpu { cpu: 4096, .. }), "{absurd}");
    hotplug.cpu_down(1).unwrap();
    hotplug.cpu_up(1).unwrap();
    assert!(matches!(hotplug.remove_state(old), Err(Error::UnknownState { .. })));
    assert!(matches!(hotplug.remove_state_nocalls(old), Err(Error::UnknownState { .. })));
    let names: Vec<_> = hotplug.states().unwrap().iter().map(|info| info.name.to_string()).collect();
    assert_eq!(names, ["new"]);
    assert_eq!(hotplug.states().unwrap()[0].id, new);
    hotplug.remove_state(new).unwrap();
}

#[test]
fn a_failed_prepare_startup_leaves_the_cpu_offline_and_untouched() {
    let (fake, hotplug) = machine("4x2");
    let log = Log::default();
    let [_, b, _] = three_states(&hotplug, &log);
    hotplug.cpu_down(1).unwrap();
    log.take();
    hotplug.inject_fault(b, 1).unwrap();
    let error = hotplug.cpu_up(1).unwrap_err();
    assert!(
        matches!(&error, Error::Startup { cpu: 1, source: CallbackError::Injected { .. }, .. }),
        "{error}"
    );
    assert_eq!(log.take(), [("up", "a", 1), ("down", "a", 1)]);
    assert_eq!(hotplug.cpu_rank(1), Some(Rank::OFFLINE));
    assert!(!fake.online_cpus().unwrap().contains(1), "the cpu must not have been switched on");
    // One shot: the next attempt succeeds.
    hotplug.cpu_up(1).unwrap();
    assert_eq!(log.take(), [("up", "a", 1), ("up", "b", 1), ("up", "c", 1)]);
}

#[test]
fn a_failed_online_startup_switches_the_cpu_back_off() {
    let (fake, hotplug) = machine("4x2");
    let log = Log::default();
    let [_, _, c] = three_states(&hotplug, &log);
    hotplug.cpu_down(2).unwrap();
    log.take();
    hotplug.inject_fault(c, 2).unwrap();
    let events = hotplug.events();
    hotplug.cpu_up(2).unwrap_err();
    assert_eq!(log.take(), [("up", "a", 2), ("up", "b", 2), ("down", "b", 2), ("down", "a", 2)]);
    assert_eq!(hotplug.cpu_rank(2), Some(Rank::OFFLINE));
    assert!(!fake.online_cpus().unwrap().contains(2));
    let failures: Vec<_> = events
        .try_iter()
        .filter(|event| matches!(event.kind, EventKind::CallbackFailed { .. }))
        .map(|event| (event.source, event.cpu()))
        .collect();
    assert_eq!(failures, [(Source::Driver, Some(2))]);
}

#[test]
fn a_fault_on_a_state_without_callbacks_still_fires() {
    let (_fake, hotplug) = machine("2x1");
    let bare = hotplug.setup_state(Slot::OnlineDynamic, State::new("bare")).unwrap();
    hotplug.cpu_down(1).unwrap();
    hotplug.inject_fault(bare, 1).unwrap();
    assert!(hotplug.cpu_up(1).is_err());
    hotplug.cpu_up(1).unwrap();
}

#[test]
fn registering_from_inside_a_callback_is_refused_not_deadlocked() {
    let (_fake, hotplug) = machine("2x1");
    let slot: Arc<OnceLock<Hotplug>> = Arc::new(OnceLock::new());
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (inner_slot, inner_seen) = (Arc::clone(&slot), Arc::clone(&seen));
    let state = State::new("nested").startup(move |_cpu| {
        let hotplug = inner_slot.get().expect("set before the cpu comes up");
        let refused = hotplug.setup_state(Slot::OnlineDynamic, State::new("inner")).unwrap_err();
        inner_seen.lock().unwrap().push(refused.to_string());
        assert!(hotplug.in_callback());
        assert!(matches!(hotplug.cpu_down(0), Err(Error::Reentrant { operation: "cpu_down" })));
        Ok(())
    });
    hotplug.setup_state_nocalls(Slot::PrepareDynamic, state).unwrap();
    slot.set(hotplug.clone()).unwrap();
    hotplug.cpu_down(1).unwrap();
    hotplug.cpu_up(1).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].contains("setup_state called from inside a hotplug callback"), "{}", seen[0]);
    assert!(!hotplug.in_callback());
    assert_eq!(hotplug.states().unwrap().len(), 1);
}

#[test]
fn a_refused_switch_brings_the_online_states_back() {
    let (fake, hotplug) = machine("2x1");
    let log = Log::default();
    three_states(&hotplug, &log);
    hotplug.cpu_down(0).unwrap();
    log.take();
    // The fake refuses to take the last online cpu offline, as the kernel does.
    let error = hotplug.cpu_down(1).unwrap_err();
    assert!(matches!(&error, Error::SetOnline { cpu: 1, target: CpuState::Offline, .. }), "{error}");
    assert!(error.to_string().contains("last online cpu"), "{error}");
    assert_eq!(log.take(), [("down", "c", 1), ("up", "c", 1)]);
    assert_eq!(hotplug.cpu_rank(1), Some(Rank::ONLINE));
    assert!(fake.online_cpus().unwrap().contains(1));
}

#[test]
fn unknown_cpus_are_refused_by_name() {
    let (_fake, hotplug) = machine("2x1");
    let error = hotplug.cpu_down(7).unwrap_err();
    assert!(matches!(error, Error::UnknownCpu { cpu: 7, .. }));
    assert!(error.to_string().contains("possible: 0-1"), "{error}");
}

#[test]
fn reconcile_follows_the_truth_and_is_idempotent() {
    let (fake, hotplug) = machine("4x2");
    let log = Log::default();
    three_states(&hotplug, &log);
    fake.set_online(2, CpuState::Offline).unwrap();
    let report = hotplug.reconcile(Source::Manual).unwrap();
    assert_eq!(report.torn_down.iter().collect::<Vec<_>>(), [2]);
    assert_eq!(log.take(), [("down", "c", 2), ("down", "b", 2), ("down", "a", 2)]);
    // A duplicated or forged wake-up changes nothing.
    assert!(hotplug.reconcile(Source::Uevent).unwrap().is_quiet());
    assert!(log.take().is_empty());
    // A lost notice is found by the next reconcile.
    fake.set_online(2, CpuState::Online).unwrap();
    fake.set_online(3, CpuState::Offline).unwrap();
    let report = hotplug.reconcile(Source::Poll).unwrap();
    assert_eq!(report.brought_up.iter().collect::<Vec<_>>(), [2]);
    assert_eq!(report.torn_down.iter().collect::<Vec<_>>(), [3]);
    assert_eq!(
        log.take(),
        [
            ("down", "c", 3),
            ("down", "b", 3),
            ("down", "a", 3),
            ("up", "a", 2),
            ("up", "b", 2),
            ("up", "c", 2)
        ]
    );
}

#[test]
fn a_failed_bringup_seen_after_the_fact_is_not_retried_until_asked() {
    let (fake, hotplug) = machine("4x2");
    let log = Log::default();
    let [a, _, _] = three_states(&hotplug, &log);
    fake.set_online(1, CpuState::Offline).unwrap();
    hotplug.reconcile(Source::Manual).unwrap();
    log.take();
    hotplug.inject_fault(a, 1).unwrap();
    fake.set_online(1, CpuState::Online).unwrap();
    let report = hotplug.reconcile(Source::Manual).unwrap();
    assert_eq!(report.failed.len(), 1);
    assert_eq!(hotplug.failed_cpus().iter().collect::<Vec<_>>(), [1]);
    assert_eq!(hotplug.cpu_rank(1), Some(Rank::OFFLINE));
    assert!(log.take().is_empty());
    assert!(hotplug.reconcile(Source::Manual).unwrap().is_quiet());
    hotplug.cpu_up(1).unwrap();
    assert_eq!(log.take(), [("up", "a", 1), ("up", "b", 1), ("up", "c", 1)]);
    assert!(hotplug.failed_cpus().is_empty());
}

#[test]
fn events_name_the_source_states_and_durations() {
    let (_fake, hotplug) = machine("2x1");
    let log = Log::default();
    three_states(&hotplug, &log);
    hotplug.setup_state_nocalls(Slot::Fixed(Rank(15_000)), State::new("no-callbacks")).unwrap();
    let events = hotplug.events();
    let seen: Arc<Mutex<u64>> = Arc::default();
    let counter = Arc::clone(&seen);
    hotplug.on_event(move |_event| *counter.lock().unwrap() += 1);
    hotplug.cpu_down(1).unwrap();
    let events: Vec<_> = events.try_iter().collect();
    assert_eq!(*seen.lock().unwrap(), events.len() as u64);
    assert!(events.iter().all(|event| event.source == Source::Driver && event.cpu() == Some(1)));
    assert!(events.windows(2).all(|pair| pair[0].seq < pair[1].seq));
    let left: Vec<_> = events
        .iter()
        .filter_map(|event| match &event.kind {
            EventKind::StateLeft { state, duration, .. } => Some((state.to_string(), duration.is_some())),
            _ => None,
        })
        .collect();
    assert_eq!(
        left,
        [("c".into(), true), ("no-callbacks".into(), false), ("b".into(), true), ("a".into(), true)]
    );
    let finished: Vec<_> = events
        .iter()
        .filter_map(|event| match event.kind {
            EventKind::TransitionFinished { reached, outcome, .. } => Some((reached, outcome)),
            _ => None,
        })
        .collect();
    assert_eq!(finished, [(Rank::BRINGUP_CPU, Outcome::Completed), (Rank::OFFLINE, Outcome::Completed)]);
}

#[test]
fn a_panicking_startup_is_a_failure_not_a_poisoned_machine() {
    let (_fake, hotplug) = machine("2x1");
    hotplug.cpu_down(1).unwrap();
    let state = State::new("boom").startup(|cpu| if cpu == 1 { panic!("no cpu 1 for me") } else { Ok(()) });
    hotplug.setup_state(Slot::OnlineDynamic, state).unwrap();
    let error = hotplug.cpu_up(1).unwrap_err();
    assert!(error.to_string().contains("no cpu 1 for me"), "{error}");
    assert_eq!(hotplug.cpu_rank(1), Some(Rank::OFFLINE));
    assert_eq!(hotplug.states().unwrap().len(), 1);
}

#[test]
fn slots_are_checked() {
    let (_fake, hotplug) = machine("2x1");
    let log = Log::default();
    hotplug.setup_state_nocalls(Slot::Fixed(Rank(5)), log.state("x")).unwrap();
    assert!(matches!(
        hotplug.setup_state_nocalls(Slot::Fixed(Rank(5)), log.state("y")),
        Err(Error::RankTaken { .. })
    ));
    assert!(matches!(
        hotplug.setup_state_nocalls(Slot::OnlineDynamic, log.state("x")),
        Err(Error::DuplicateName { .. })
    ));
    for reserved in [Rank::OFFLINE, Rank::BRINGUP_CPU, Rank::ONLINE, Rank::PREPARE_DYN, Rank::ONLINE_DYN_END]
    {
        assert!(matches!(
            hotplug.setup_state_nocalls(Slot::Fixed(reserved), log.state("z")),
            Err(Error::ReservedRank { .. })
        ));
    }
    for n in 0..50 {
        let name: &'static str = Box::leak(format!("dyn{n}").into_boxed_str());
        hotplug.setup_state_nocalls(Slot::OnlineDynamic, log.state(name)).unwrap();
    }
    assert!(matches!(
        hotplug.setup_state_nocalls(Slot::OnlineDynamic, log.state("one-too-many")),
        Err(Error::NoDynamicRank { range: "online", .. })
    ));
}

#[test]
fn a_trait_object_serves_as_callbacks() {
    struct Counter(Mutex<Vec<(bool, CpuId)>>);
    impl crate::Callbacks for Counter {
        fn startup(&self, cpu: CpuId) -> Result<(), CallbackError> {
            self.0.lock().unwrap().push((true, cpu));
            Ok(())
        }
        fn teardown(&self, cpu: CpuId) {
            self.0.lock().unwrap().push((false, cpu));
        }
    }
    let (_fake, hotplug) = machine("2x1");
    let counter = Arc::new(Counter(Mutex::new(Vec::new())));
    let id =
        hotplug.setup_state(Slot::OnlineDynamic, State::with_callbacks("counted", counter.clone())).unwrap();
    hotplug.cpu_down(1).unwrap();
    hotplug.remove_state(id).unwrap();
    assert_eq!(*counter.0.lock().unwrap(), [(true, 0), (true, 1), (false, 1), (false, 0)]);
}
