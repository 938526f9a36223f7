//! Measures the time from writing `cpu1/online` to the end of the hotplug callbacks, with
//! the watcher woken by uevents and by polling. Real hotplug: runs only with
//! `NUMASLAB_REAL_HOTPLUG=1`, as root; cpu1 is always brought back online.
//!
//! ```text
//! NUMASLAB_REAL_HOTPLUG=1 cargo run --release -p hotplug --example hotplug_latency -- [CYCLES]
//! ```

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hotplug::{
    wait_for_event, CallbackError, EventKind, Hotplug, Rank, Slot, Source, State, WatchMode, Watcher,
};
use topology::SysfsTopology;

const CPU1_ONLINE: &str = "/sys/devices/system/cpu/cpu1/online";

/// Brings cpu1 back online when dropped.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        if fs::read_to_string(CPU1_ONLINE).map(|text| text.trim() == "0").unwrap_or(false) {
            let _ = fs::write(CPU1_ONLINE, "1");
        }
    }
}

/// One configuration's samples, in microseconds.
struct Samples {
    label: String,
    offline: Vec<f64>,
    online: Vec<f64>,
    write_offline: Vec<f64>,
    write_online: Vec<f64>,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Writes cpu1/online and returns (write duration, time to the end of the callbacks).
fn cycle(
    events: &crossbeam_channel::Receiver<hotplug::Event>,
    text: &str,
    reached: Rank,
    source: Source,
) -> (f64, f64) {
    let start = Instant::now();
    fs::write(CPU1_ONLINE, text).expect("write cpu1/online");
    let written = start.elapsed();
    let finished = wait_for_event(events, Duration::from_secs(10), |event| {
        event.source == source
            && matches!(event.kind, EventKind::TransitionFinished { cpu: 1, reached: r, .. } if r == reached)
    })
    .expect("the watcher ran the callbacks within 10 s");
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    (micros(written), micros(finished.at.duration_since(start)))
}

fn measure(hotplug: &Hotplug, label: &str, mode: WatchMode, poll: Duration, cycles: usize) -> Samples {
    let watcher = Watcher::builder(hotplug)
        .mode(mode)
        .poll_interval(poll)
        .reconcile_interval(Duration::from_secs(60))
        .start()
        .expect("start the watcher");
    let source = if mode == WatchMode::Uevent { Source::Uevent } else { Source::Poll };
    let events = hotplug.events();
    let mut samples = Samples {
        label: label.to_string(),
        offline: Vec::new(),
        online: Vec::new(),
        write_offline: Vec::new(),
        write_online: Vec::new(),
    };
    for i in 0..cycles {
        // Start each write at a different phase of the poll timer, or the poller's delay
        // would be the same in every cycle.
        std::thread::sleep(Duration::from_millis((i as u64 * 37) % 97));
        let (write, done) = cycle(&events, "0", Rank::OFFLINE, source);
        samples.write_offline.push(write);
        samples.offline.push(done);
        std::thread::sleep(Duration::from_millis((i as u64 * 53) % 89));
        let (write, done) = cycle(&events, "1", Rank::ONLINE, source);
        samples.write_online.push(write);
        samples.online.push(done);
    }
    watcher.stop();
    samples
}

fn main() {
    if std::env::var("NUMASLAB_REAL_HOTPLUG").as_deref() != Ok("1") {
        println!("skipped: set NUMASLAB_REAL_HOTPLUG=1 (as root, with {CPU1_ONLINE} writable) to measure real hotplug");
        return;
    }
    let cycles: usize = std::env::args().nth(1).and_then(|arg| arg.parse().ok()).unwrap_or(9);
    let lock = File::create("/tmp/numaslab-real-hotplug.lock").expect("create the hotplug lock file");
    // SAFETY: flock(2) on a descriptor we own; blocks until the lock is ours.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0, "flock failed");
    let _restore = Restore;

    let topology = Arc::new(SysfsTopology::detect().expect("read this machine's sysfs"));
    let hotplug = Hotplug::new(topology).expect("build the machine");
    for (slot, name) in [(Slot::PrepareDynamic, "bench:prepare"), (Slot::OnlineDynamic, "bench:online")] {
        let state = State::new(name).startup(|_cpu| Ok::<(), CallbackError>(())).teardown(|_cpu| {});
        hotplug.setup_state(slot, state).expect("register");
    }
    let runs = [
        measure(&hotplug, "uevent", WatchMode::Uevent, Duration::from_millis(100), cycles),
        measure(&hotplug, "poll every 10 ms", WatchMode::Poll, Duration::from_millis(10), cycles),
        measure(&hotplug, "poll every 100 ms (default)", WatchMode::Poll, Duration::from_millis(100), cycles),
    ];
    println!(
        "cpu1, {cycles} cycles each; medians in microseconds from the start of the write to cpu1/online"
    );
    println!(
        "{:<28} {:>14} {:>14} {:>14} {:>14}",
        "source", "offline: done", "(write took)", "online: done", "(write took)"
    );
    for mut run in runs {
        println!(
            "{:<28} {:>14.0} {:>14.0} {:>14.0} {:>14.0}",
            run.label,
            median(&mut run.offline),
            median(&mut run.write_offline),
            median(&mut run.online),
            median(&mut run.write_online)
        );
    }
}
