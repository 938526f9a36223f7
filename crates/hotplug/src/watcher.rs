//! The watcher: a thread that wakes on uevents, on changes of the polled `online` files or
//! on the fake backend's notices, and reconciles the machine against the truth each time
//! and periodically.

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use topology::OnlineChange;

use crate::error::{Error, Result};
use crate::events::{EventKind, Source};
use crate::poll::{OnlineFiles, Snapshot};
use crate::state_machine::Hotplug;
use crate::sync::{AtomicBool, Ordering};
use crate::uevent::{classify, UeventSocket, Verdict, RECEIVE_BUFFER};

/// How often the `online` files are polled by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How often the machine is reconciled against the truth when nothing woke it.
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(1);

/// Which source wakes the watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// The best the topology offers: the fake's notices if it has them; uevents for the
    /// live machine (sysfs root `/`), falling back to polling if the socket cannot be
    /// opened; polling for any other sysfs root; else periodic reconciles only. Built with
    /// `--cfg numaslab_force_poll`, polling replaces uevents.
    Auto,
    /// Kernel uevents, with periodic reconciles.
    Uevent,
    /// Polling the `online` files under the topology's sysfs root.
    Poll,
    /// The fake backend's notices ([`topology::Topology::subscribe`]).
    Fake,
    /// Only periodic reconciles.
    ReconcileOnly,
}

/// Counts of what a watcher saw, returned by [`Watcher::stop`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchStats {
    /// Wake-ups by a source (uevent, file change, fake notice).
    pub wakeups: u64,
    /// Reconciles run (wake-ups and periodic).
    pub reconciles: u64,
    /// Uevents ignored (forged, malformed).
    pub ignored: u64,
    /// Kernel uevents about something other than a CPU going online or offline.
    pub unrelated: u64,
    /// Socket overflows (`ENOBUFS`).
    pub overflows: u64,
}

/// Configures and starts a [`Watcher`].
#[derive(Debug, Clone)]
pub struct WatcherBuilder {
    hotplug: Hotplug,
    mode: WatchMode,
    poll_interval: Duration,
    reconcile_interval: Duration,
}

impl WatcherBuilder {
    /// Which source to watch (default [`WatchMode::Auto`]).
    pub fn mode(mut self, mode: WatchMode) -> Self {
        self.mode = mode;
        self
    }

    /// Forces polling of the `online` files, as `--cfg numaslab_force_poll` does, so
    /// the fallback can be tested on Linux.
    pub fn force_poll(self) -> Self {
        self.mode(WatchMode::Poll)
    }

    /// How often to poll the `online` files (default [`DEFAULT_POLL_INTERVAL`]).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How often to reconcile when nothing wakes the watcher (default
    /// [`DEFAULT_RECONCILE_INTERVAL`]).
    pub fn reconcile_interval(mut self, interval: Duration) -> Self {
        self.reconcile_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Opens the source, brings the registered states into line with the CPUs online now
    /// (events with [`Source::Initial`]), and starts the thread.
    pub fn start(self) -> Result<Watcher> {
        let hotplug = self.hotplug;
        let (source, fallback) = open_source(&hotplug, self.mode)?;
        hotplug.reconcile(Source::Initial)?;
        let stop = Arc::new(Stopper::new()?);
        let mode = source.mode();
        let uevent_port = match &source {
            Opened::Uevent(socket) => socket.port().ok(),
            _ => None,
        };
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let mut worker = Worker {
            hotplug: hotplug.clone(),
            stop: Arc::clone(&stop),
            stop_rx,
            poll_interval: self.poll_interval,
            reconcile_interval: self.reconcile_interval,
            stats: WatchStats::default(),
        };
        let thread = thread::Builder::new()
            .name("hotplug-watcher".into())
            .spawn(move || {
                worker.run(source);
                worker.stats
            })
            .map_err(|source| Error::Watcher { what: "spawning the watcher thread", source })?;
        Ok(Watcher {
            hotplug,
            stop,
            stop_tx: Some(stop_tx),
            thread: Some(thread),
            mode,
            fallback,
            uevent_port,
            poll_interval: self.poll_interval,
            reconcile_interval: self.reconcile_interval,
        })
    }
}

/// A running watcher. Stops when dropped or by [`Watcher::stop`], within one poll(2)
/// wake-up (the stop is signalled through an eventfd and a channel, not a timeout).
pub struct Watcher {
    hotplug: Hotplug,
    stop: Arc<Stopper>,
    stop_tx: Option<Sender<()>>,
    thread: Option<JoinHandle<WatchStats>>,
    mode: WatchMode,
    fallback: Option<String>,
    uevent_port: Option<u32>,
    poll_interval: Duration,
    reconcile_interval: Duration,
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("mode", &self.mode)
            .field("fallback", &self.fallback)
            .field("uevent_port", &self.uevent_port)
            .field("running", &self.thread.is_some())
            .finish()
    }
}

impl Watcher {
    /// Starts configuring a watcher of `hotplug`'s topology.
    pub fn builder(hotplug: &Hotplug) -> WatcherBuilder {
        WatcherBuilder {
            hotplug: hotplug.clone(),
            mode: WatchMode::Auto,
            poll_interval: DEFAULT_POLL_INTERVAL,
            reconcile_interval: DEFAULT_RECONCILE_INTERVAL,
        }
    }

    /// Starts a watcher with the default settings.
    pub fn start(hotplug: &Hotplug) -> Result<Watcher> {
        Self::builder(hotplug).start()
    }

    /// The source actually watched (never [`WatchMode::Auto`]).
    pub fn mode(&self) -> WatchMode {
        self.mode
    }

    /// Why the watcher polls although uevents were asked for, if it does.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// The netlink port of the uevent socket, for tests that send it forged messages.
    pub fn uevent_port(&self) -> Option<u32> {
        self.uevent_port
    }

    /// How often the `online` files are read, in [`WatchMode::Poll`] (the interval is
    /// kept, but unused, in the other modes).
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// How often the watcher reconciles when nothing woke it, in every mode.
    pub fn reconcile_interval(&self) -> Duration {
        self.reconcile_interval
    }

    /// Stops the thread and returns what it saw. Called from inside a hotplug callback
    /// (where joining would wait for the lock the caller holds) it only signals the stop,
    /// and the counts are those of a watcher that saw nothing.
    pub fn stop(mut self) -> WatchStats {
        self.shut_down().unwrap_or_default()
    }

    fn shut_down(&mut self) -> Option<WatchStats> {
        self.stop.signal();
        self.stop_tx.take();
        let thread = self.thread.take()?;
        if self.hotplug.in_callback() {
            return None;
        }
        thread.join().ok()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The stop signal: a flag and an eventfd that poll(2) watches.
#[derive(Debug)]
struct Stopper {
    stopped: AtomicBool,
    eventfd: OwnedFd,
}

impl Stopper {
    fn new() -> Result<Stopper> {
        let eventfd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|errno| Error::Watcher { what: "creating the stop eventfd", source: errno.into() })?;
        Ok(Stopper { stopped: AtomicBool::new(false), eventfd })
    }

    fn signal(&self) {
        self.stopped.store(true, Ordering::Release);
        // An eventfd takes an 8-byte counter increment. The write can only fail if the
        // counter would overflow, which a stop signalled once cannot cause.
        let _ = rustix::io::write(&self.eventfd, &1u64.to_ne_bytes());
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

/// The source a watcher opened.
enum Opened {
    Uevent(UeventSocket),
    /// The files, and what they held before the initial reconcile.
    Poll(OnlineFiles, Snapshot),
    Fake(Receiver<OnlineChange>),
    ReconcileOnly,
}

impl Opened {
    fn mode(&self) -> WatchMode {
        match self {
            Opened::Uevent(_) => WatchMode::Uevent,
            Opened::Poll(..) => WatchMode::Poll,
            Opened::Fake(_) => WatchMode::Fake,
            Opened::ReconcileOnly => WatchMode::ReconcileOnly,
        }
    }
}

/// Resolves the mode and opens its source; returns the reason for a fallback to polling.
fn open_source(hotplug: &Hotplug, mode: WatchMode) -> Result<(Opened, Option<String>)> {
    let topology = hotplug.topology();
    let root = topology.sysfs_root();
    let open_poll = |root: &Path| {
        OnlineFiles::new(root)
            .map(|files| {
                let snapshot = files.snapshot();
                Opened::Poll(files, snapshot)
            })
            .map_err(|source| Error::Watcher { what: "listing the cpu online files to poll", source })
    };
    let resolved = match mode {
        WatchMode::Auto if cfg!(numaslab_force_poll) && root.is_some() => WatchMode::Poll,
        WatchMode::Auto if cfg!(numaslab_force_poll) => match topology.subscribe() {
            Some(receiver) => return Ok((Opened::Fake(receiver), None)),
            None => WatchMode::ReconcileOnly,
        },
        WatchMode::Auto => match (root, topology.subscribe()) {
            (_, Some(receiver)) => return Ok((Opened::Fake(receiver), None)),
            (Some(_), None) if topology.is_live() => WatchMode::Uevent,
            (Some(_), None) => WatchMode::Poll,
            (None, None) => WatchMode::ReconcileOnly,
        },
        other => other,
    };
    let unsupported = |what: &'static str, why: &str| Error::Watcher {
        what,
        source: io::Error::new(io::ErrorKind::Unsupported, format!("{} {why}", topology.name())),
    };
    match resolved {
        WatchMode::Uevent => match (UeventSocket::open(), root) {
            (Ok(socket), _) => Ok((Opened::Uevent(socket), None)),
            (Err(error), Some(root)) if mode == WatchMode::Auto => {
                let reason = format!("cannot open a NETLINK_KOBJECT_UEVENT socket: {error}");
                Ok((open_poll(root)?, Some(reason)))
            }
            (Err(source), _) => {
                Err(Error::Watcher { what: "opening the NETLINK_KOBJECT_UEVENT socket", source })
            }
        },
        WatchMode::Poll => match root {
            Some(root) => Ok((open_poll(root)?, None)),
            None => Err(unsupported("polling", "has no sysfs root")),
        },
        WatchMode::Fake => match topology.subscribe() {
            Some(receiver) => Ok((Opened::Fake(receiver), None)),
            None => Err(unsupported("subscribing", "does not announce changes")),
        },
        WatchMode::ReconcileOnly | WatchMode::Auto => Ok((Opened::ReconcileOnly, None)),
    }
}

/// The watcher thread's state.
struct Worker {
    hotplug: Hotplug,
    stop: Arc<Stopper>,
    stop_rx: Receiver<()>,
    poll_interval: Duration,
    reconcile_interval: Duration,
    stats: WatchStats,
}

/// What poll(2) found.
#[derive(Debug, PartialEq, Eq)]
enum Woken {
    Stop,
    Readable,
    Timeout,
}

impl Worker {
    fn run(&mut self, source: Opened) {
        match source {
            Opened::Uevent(socket) => self.run_uevent(&socket),
            Opened::Poll(files, snapshot) => self.run_poll(&files, snapshot),
            Opened::Fake(receiver) => self.run_fake(&receiver),
            Opened::ReconcileOnly => self.run_reconcile_only(),
        }
    }

    fn reconcile(&mut self, source: Source) {
        self.stats.reconciles += 1;
        if let Err(error) = self.hotplug.reconcile(source) {
            self.hotplug.emit(source, EventKind::Ignored { reason: format!("reconcile failed: {error}") });
        }
    }

    /// Reconciles and returns when the next periodic reconcile is due.
    fn reconcile_then_schedule(&mut self, source: Source) -> Instant {
        self.reconcile(source);
        Instant::now() + self.reconcile_interval
    }

    fn wakeup(&mut self, source: Source, reported: Option<OnlineChange>) {
        self.stats.wakeups += 1;
        self.hotplug.emit(source, EventKind::Wakeup { reported });
    }

    /// Waits on the stop eventfd and optionally the uevent socket. An interrupted poll(2)
    /// counts as a timeout: the caller reconciles or polls, which is always safe.
    fn wait(&self, other: Option<&UeventSocket>, timeout: Duration) -> Woken {
        let timeout = Timespec::try_from(timeout.max(Duration::from_millis(1))).ok();
        let stop = PollFd::new(&self.stop.eventfd, PollFlags::IN);
        let (stop_woken, other_woken) = match other {
            Some(socket) => {
                let mut fds = [stop, PollFd::new(socket, PollFlags::IN)];
                let ready = poll(&mut fds, timeout.as_ref()).unwrap_or(0);
                (!fds[0].revents().is_empty(), ready > 0 && !fds[1].revents().is_empty())
            }
            None => {
                let mut fds = [stop];
                let _ = poll(&mut fds, timeout.as_ref());
                (!fds[0].revents().is_empty(), false)
            }
        };
        if self.stop.is_stopped() || stop_woken {
            Woken::Stop
        } else if other_woken {
            Woken::Readable
        } else {
            Woken::Timeout
        }
    }

    fn run_uevent(&mut self, socket: &UeventSocket) {
        let mut buffer = vec![0u8; RECEIVE_BUFFER];
        let mut next_reconcile = Instant::now() + self.reconcile_interval;
        loop {
            let timeout = next_reconcile.saturating_duration_since(Instant::now());
            match self.wait(Some(socket), timeout) {
                Woken::Stop => return,
                Woken::Readable => {
                    if self.drain(socket, &mut buffer) {
                        next_reconcile = self.reconcile_then_schedule(Source::Uevent);
                    }
                }
                Woken::Timeout => next_reconcile = self.reconcile_then_schedule(Source::Reconcile),
            }
        }
    }

    /// Reads every waiting datagram; whether any calls for a reconcile.
    fn drain(&mut self, socket: &UeventSocket, buffer: &mut [u8]) -> bool {
        let mut wake = false;
        loop {
            match socket.receive(buffer) {
                Ok(None) => return wake,
                Ok(Some(datagram)) => {
                    let verdict = classify(datagram.sender_port, &buffer[..datagram.len], datagram.truncated);
                    wake |= self.judge(verdict);
                }
                Err(error) if error.raw_os_error() == Some(Errno::NOBUFS.raw_os_error()) => {
                    // The kernel dropped uevents: whatever they said, a full reconcile
                    // finds it.
                    self.stats.overflows += 1;
                    self.hotplug.emit(Source::Uevent, EventKind::Overflow);
                    wake = true;
                }
                Err(error) => {
                    self.hotplug.emit(
                        Source::Uevent,
                        EventKind::Ignored { reason: format!("uevent socket: {error}") },
                    );
                    return true;
                }
            }
        }
    }

    /// Acts on one datagram's verdict; whether it calls for a reconcile.
    fn judge(&mut self, verdict: Verdict) -> bool {
        match verdict {
            Verdict::Cpu(change) => {
                self.wakeup(Source::Uevent, Some(change));
                true
            }
            Verdict::Unrelated { header, subsystem } => {
                self.stats.unrelated += 1;
                let subsystem = subsystem.as_deref().unwrap_or("none");
                let reason = format!(
                    "kernel uevent {header} (subsystem {subsystem}): not a CPU going online or offline"
                );
                self.hotplug.emit(Source::Uevent, EventKind::Ignored { reason });
                false
            }
            Verdict::Truncated => {
                self.wakeup(Source::Uevent, None);
                true
            }
            Verdict::Forged { port } => {
                self.stats.ignored += 1;
                self.hotplug.emit(Source::Uevent, EventKind::Forged { port });
                false
            }
            Verdict::Malformed(error) => {
                self.stats.ignored += 1;
                self.hotplug.emit(Source::Uevent, EventKind::Ignored { reason: error.to_string() });
                false
            }
        }
    }

    /// Polls from `last`, read before the initial reconcile, so that a change made
    /// between that reconcile and this thread's start is seen.
    fn run_poll(&mut self, files: &OnlineFiles, mut last: Snapshot) {
        let mut next_reconcile = Instant::now() + self.reconcile_interval;
        loop {
            if self.wait(None, self.poll_interval) == Woken::Stop {
                return;
            }
            let now = files.snapshot();
            if now != last {
                let changes = now.changes_since(&last);
                if changes.is_empty() {
                    self.wakeup(Source::Poll, None);
                }
                for change in changes {
                    self.wakeup(Source::Poll, Some(change));
                }
                last = now;
                next_reconcile = self.reconcile_then_schedule(Source::Poll);
            } else if Instant::now() >= next_reconcile {
                next_reconcile = self.reconcile_then_schedule(Source::Reconcile);
            }
        }
    }

    fn run_fake(&mut self, receiver: &Receiver<OnlineChange>) {
        let stop_rx = self.stop_rx.clone();
        loop {
            crossbeam_channel::select! {
                recv(stop_rx) -> _ => return,
                recv(receiver) -> change => match change {
                    Ok(change) => {
                        if self.stop.is_stopped() {
                            return;
                        }
                        self.wakeup(Source::Fake, Some(change));
                        // Coalesce a burst of notices into one reconcile.
                        while let Ok(change) = receiver.try_recv() {
                            self.wakeup(Source::Fake, Some(change));
                        }
                        self.reconcile(Source::Fake);
                    }
                    // The topology is gone: only periodic reconciles are left.
                    Err(_) => return self.run_reconcile_only(),
                },
                default(self.reconcile_interval) => {
                    if self.stop.is_stopped() {
                        return;
                    }
                    self.reconcile(Source::Reconcile);
                }
            }
        }
    }

    fn run_reconcile_only(&mut self) {
        while self.wait(None, self.reconcile_interval) != Woken::Stop {
            self.reconcile(Source::Reconcile);
        }
    }
}
