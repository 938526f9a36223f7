//! The watcher: a thread that wakes on uevents, on changes of the polled `online` files or
//! on the fake backend's notices, and reconciles the machine against the truth each time
//! and periodically.
//!
//! Its descriptors (the uevent socket, the pipe that wakes it to stop) live in the
//! program's descriptor table, which the program may clear (`close_range`, `closefrom`)
//! and refill with files of its own under the same numbers. Each is checked before each
//! use and on every wake-up (`descriptor.rs`); one that was closed or replaced is let go
//! untouched, a new one is opened (or, for a socket that cannot be reopened, the watcher
//! polls the `online` files instead), and a reconcile finds whatever was missed.

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::pipe::{pipe_with, PipeFlags};
use topology::OnlineChange;

use crate::descriptor::OwnFd;
use crate::error::{Error, Result};
use crate::events::{EventKind, Source};
use crate::poll::{OnlineFiles, Snapshot};
use crate::state_machine::Hotplug;
use crate::sync::{lock, AtomicBool, AtomicU64, AtomicU8, Mutex, Ordering};
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
    /// Descriptors of the watcher's that the program closed or replaced
    /// ([`EventKind::DescriptorLost`]), let go untouched and opened anew.
    pub lost_descriptors: u64,
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
        let (mut source, fallback) = open_source(&hotplug, self.mode)?;
        hotplug.reconcile(Source::Initial)?;
        let (wake_rx, wake_tx) =
            wake_pipe().map_err(|source| Error::Watcher { what: "creating the wake-up pipe", source })?;
        let uevent_port = match &mut source {
            Opened::Uevent(socket) => socket.port().ok(),
            _ => None,
        };
        let shared = Arc::new(Shared::new(wake_tx, source.mode()));
        shared.set_socket(uevent_port, source.socket_number());
        shared.wake_rx_number.store(number_code(Some(wake_rx.number())), Ordering::Relaxed);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let mut worker = Worker {
            hotplug: hotplug.clone(),
            shared: Arc::clone(&shared),
            wake_rx: Some(wake_rx),
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
            shared,
            stop_tx: Some(stop_tx),
            thread: Some(thread),
            fallback,
            poll_interval: self.poll_interval,
            reconcile_interval: self.reconcile_interval,
        })
    }
}

/// A running watcher. Stops when dropped or by [`Watcher::stop`], within one poll(2)
/// wake-up (the stop is signalled through a pipe and a channel, not a timeout; if the
/// program closed the pipe and no new one could be opened, within one poll or reconcile
/// interval).
pub struct Watcher {
    hotplug: Hotplug,
    shared: Arc<Shared>,
    stop_tx: Option<Sender<()>>,
    thread: Option<JoinHandle<WatchStats>>,
    fallback: Option<String>,
    poll_interval: Duration,
    reconcile_interval: Duration,
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("mode", &self.mode())
            .field("fallback", &self.fallback)
            .field("uevent_port", &self.uevent_port())
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

    /// The source actually watched now (never [`WatchMode::Auto`]): [`WatchMode::Poll`]
    /// (or [`WatchMode::ReconcileOnly`], without a sysfs root) after a uevent watcher
    /// whose socket the program closed could not open another.
    pub fn mode(&self) -> WatchMode {
        self.shared.mode()
    }

    /// Why the watcher polls although uevents were asked for, if it does.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// The netlink port of the uevent socket now (a new socket, opened after the program
    /// closed the first, has a new port), for tests that send it forged messages.
    pub fn uevent_port(&self) -> Option<u32> {
        self.shared.port()
    }

    /// Makes every later attempt to open a new uevent socket fail, as in a sandbox that
    /// forbids netlink sockets, so that tests can see the fallback to polling when the
    /// program closed the first (`testing` feature).
    #[cfg(feature = "testing")]
    pub fn refuse_new_sockets(&self) {
        self.shared.refuse_sockets.store(true, Ordering::Relaxed);
    }

    /// The numbers of the descriptors the watcher holds now (its uevent socket, if any,
    /// and the two ends of its wake-up pipe), for a program that closes every descriptor
    /// but its own, and for tests.
    pub fn descriptors(&self) -> Vec<RawFd> {
        let wake_tx = number_code(lock(&self.shared.wake_tx).as_ref().map(OwnFd::number));
        let socket = self.shared.socket_number.load(Ordering::Relaxed);
        let wake_rx = self.shared.wake_rx_number.load(Ordering::Relaxed);
        [socket, wake_rx, wake_tx].into_iter().filter_map(|number| RawFd::try_from(number).ok()).collect()
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
        self.shared.signal();
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

/// What the handle and the thread share: the stop flag, the write end of the pipe whose
/// byte wakes the thread's poll(2), and what the thread watches now (for reports).
#[derive(Debug)]
struct Shared {
    stopped: AtomicBool,
    /// `None` if the program closed the pipe and no new one could be opened.
    wake_tx: Mutex<Option<OwnFd>>,
    mode: AtomicU8,
    /// The uevent socket's port, [`NONE`] without one.
    port: AtomicU64,
    /// The uevent socket's and the pipe's read end's numbers, [`NONE`] without them.
    socket_number: AtomicU64,
    wake_rx_number: AtomicU64,
    /// [`Watcher::refuse_new_sockets`] was called.
    #[cfg(feature = "testing")]
    refuse_sockets: AtomicBool,
}

/// An absent port or descriptor number in [`Shared`].
const NONE: u64 = u64::MAX;

impl Shared {
    fn new(wake_tx: OwnFd, mode: WatchMode) -> Shared {
        Shared {
            stopped: AtomicBool::new(false),
            wake_tx: Mutex::new(Some(wake_tx)),
            mode: AtomicU8::new(mode_code(mode)),
            port: AtomicU64::new(NONE),
            socket_number: AtomicU64::new(NONE),
            wake_rx_number: AtomicU64::new(NONE),
            #[cfg(feature = "testing")]
            refuse_sockets: AtomicBool::new(false),
        }
    }

    /// A new uevent socket, unless a test forbade them.
    fn open_socket(&self) -> io::Result<UeventSocket> {
        #[cfg(feature = "testing")]
        if self.refuse_sockets.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "new sockets refused by the test"));
        }
        UeventSocket::open()
    }

    /// Sets the flag, then writes a byte to the pipe if its write end is still ours (never
    /// to a descriptor of the program's that took its number).
    fn signal(&self) {
        self.stopped.store(true, Ordering::Release);
        let mut wake_tx = lock(&self.wake_tx);
        if let Some(fd) = wake_tx.as_mut().and_then(OwnFd::ours) {
            // A full pipe (it cannot be: nothing else is written) would already wake the
            // thread, so a failed write loses nothing.
            let _ = rustix::io::write(fd, &[1]);
        }
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    fn mode(&self) -> WatchMode {
        match self.mode.load(Ordering::Relaxed) {
            0 => WatchMode::Uevent,
            1 => WatchMode::Poll,
            2 => WatchMode::Fake,
            _ => WatchMode::ReconcileOnly,
        }
    }

    fn set_mode(&self, mode: WatchMode) {
        self.mode.store(mode_code(mode), Ordering::Relaxed);
    }

    fn port(&self) -> Option<u32> {
        u32::try_from(self.port.load(Ordering::Relaxed)).ok()
    }

    fn set_socket(&self, port: Option<u32>, number: Option<RawFd>) {
        self.port.store(port.map_or(NONE, u64::from), Ordering::Relaxed);
        self.socket_number.store(number_code(number), Ordering::Relaxed);
    }
}

fn mode_code(mode: WatchMode) -> u8 {
    match mode {
        WatchMode::Uevent => 0,
        WatchMode::Poll => 1,
        WatchMode::Fake => 2,
        WatchMode::ReconcileOnly | WatchMode::Auto => 3,
    }
}

fn number_code(number: Option<RawFd>) -> u64 {
    number.and_then(|number| u64::try_from(number).ok()).unwrap_or(NONE)
}

/// A new wake-up pipe, close-on-exec and non-blocking: (read end, write end).
fn wake_pipe() -> io::Result<(OwnFd, OwnFd)> {
    let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
    Ok((OwnFd::new(read, "wake-up pipe (read end)")?, OwnFd::new(write, "wake-up pipe (write end)")?))
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

    fn socket_number(&self) -> Option<RawFd> {
        match self {
            Opened::Uevent(socket) => Some(socket.number()),
            _ => None,
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
    shared: Arc<Shared>,
    /// The wake-up pipe's read end; `None` if the program closed the pipe and no new one
    /// could be opened (a new one is tried at each wake-up).
    wake_rx: Option<OwnFd>,
    stop_rx: Receiver<()>,
    poll_interval: Duration,
    reconcile_interval: Duration,
    stats: WatchStats,
}

/// What poll(2) found.
#[derive(Debug, PartialEq, Eq)]
enum Woken {
    Stop,
    /// The uevent socket has something (a datagram, or an error such as `ENOBUFS`).
    Readable,
    /// A timeout, an interrupted poll(2), or a wake-up that was not a stop.
    Other,
}

impl Worker {
    fn run(&mut self, source: Opened) {
        match source {
            Opened::Uevent(socket) => self.run_uevent(socket),
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

    /// The source to name in events of the mode watched now.
    fn mode_source(&self) -> Source {
        match self.shared.mode() {
            WatchMode::Uevent => Source::Uevent,
            WatchMode::Poll => Source::Poll,
            WatchMode::Fake => Source::Fake,
            WatchMode::ReconcileOnly | WatchMode::Auto => Source::Reconcile,
        }
    }

    fn publish_wake_rx(&self) {
        let number = self.wake_rx.as_ref().map(OwnFd::number);
        self.shared.wake_rx_number.store(number_code(number), Ordering::Relaxed);
    }

    /// Says that the program closed or replaced one of the watcher's descriptors.
    fn lost(&mut self, descriptor: &'static str, number: RawFd, outcome: String) {
        self.stats.lost_descriptors += 1;
        let source = self.mode_source();
        self.hotplug.emit(source, EventKind::DescriptorLost { descriptor, number, outcome });
    }

    /// Checks both ends of the wake-up pipe; if the program closed or replaced either,
    /// opens a new pipe (the old ends still ours are closed, the others let go untouched).
    /// Without a pipe (none could be opened), tries again.
    fn keep_wake_pipe(&mut self) {
        let mut wake_tx = lock(&self.shared.wake_tx);
        let mut lost = Vec::new();
        for end in [self.wake_rx.as_mut(), wake_tx.as_mut()].into_iter().flatten() {
            if !end.is_ours() {
                lost.push((end.what(), end.number()));
            }
        }
        if lost.is_empty() && self.wake_rx.is_some() && wake_tx.is_some() {
            return;
        }
        let outcome = match wake_pipe() {
            Ok((read, write)) => {
                let outcome = format!("opened a new pipe ({} and {})", read.number(), write.number());
                self.wake_rx = Some(read);
                *wake_tx = Some(write);
                outcome
            }
            Err(error) => {
                self.wake_rx = None;
                *wake_tx = None;
                format!(
                    "cannot open a new pipe ({error}): a stop is seen within a poll or reconcile interval"
                )
            }
        };
        // Not under the lock: an observer may stop the watcher, which takes it.
        drop(wake_tx);
        self.publish_wake_rx();
        for (what, number) in lost {
            self.lost(what, number, outcome.clone());
        }
    }

    /// Empties the wake-up pipe, if still ours, so that a stray byte cannot keep poll(2)
    /// waking (only a stop writes to it, and a stop ends the thread).
    fn drain_wake_pipe(&mut self) {
        let Some(fd) = self.wake_rx.as_mut().and_then(OwnFd::ours) else { return };
        let mut bytes = [0u8; 64];
        while matches!(rustix::io::read(fd, &mut bytes), Ok(n) if n > 0) {}
    }

    /// Waits on the wake-up pipe and optionally the uevent socket, after checking that
    /// the pipe is still the watcher's. An interrupted poll(2) counts as a timeout: the
    /// caller reconciles or polls, which is always safe. Whether to stop is the flag's
    /// say; a byte in the pipe only wakes the thread to read it.
    fn wait(&mut self, socket: Option<&UeventSocket>, timeout: Duration) -> Woken {
        self.keep_wake_pipe();
        if self.shared.is_stopped() {
            return Woken::Stop;
        }
        let timeout = Timespec::try_from(timeout.max(Duration::from_millis(1))).ok();
        let wake = self.wake_rx.as_ref().and_then(OwnFd::unchecked);
        let socket = socket.and_then(UeventSocket::unchecked);
        let woken = |fd: &PollFd<'_>| !fd.revents().is_empty();
        let (pipe_woken, socket_woken) = match (wake, socket) {
            (Some(wake), Some(socket)) => {
                let mut fds = [PollFd::new(&wake, PollFlags::IN), PollFd::new(&socket, PollFlags::IN)];
                let ready = poll(&mut fds, timeout.as_ref()).unwrap_or(0);
                (woken(&fds[0]), ready > 0 && woken(&fds[1]))
            }
            (Some(wake), None) => {
                let mut fds = [PollFd::new(&wake, PollFlags::IN)];
                let _ = poll(&mut fds, timeout.as_ref());
                (woken(&fds[0]), false)
            }
            (None, Some(socket)) => {
                let mut fds = [PollFd::new(&socket, PollFlags::IN)];
                let ready = poll(&mut fds, timeout.as_ref()).unwrap_or(0);
                (false, ready > 0 && woken(&fds[0]))
            }
            (None, None) => {
                let _ = poll(&mut [], timeout.as_ref());
                (false, false)
            }
        };
        if self.shared.is_stopped() {
            return Woken::Stop;
        }
        if pipe_woken {
            self.drain_wake_pipe();
        }
        if socket_woken {
            Woken::Readable
        } else {
            Woken::Other
        }
    }

    fn run_uevent(&mut self, mut socket: UeventSocket) {
        let mut buffer = vec![0u8; RECEIVE_BUFFER];
        let mut next_reconcile = Instant::now() + self.reconcile_interval;
        loop {
            if !socket.is_ours() {
                match self.reopen_socket(socket.number()) {
                    Some(reopened) => socket = reopened,
                    None => return self.fall_back_to_polling(),
                }
                next_reconcile = self.reconcile_then_schedule(Source::Reconcile);
            }
            let timeout = next_reconcile.saturating_duration_since(Instant::now());
            match self.wait(Some(&socket), timeout) {
                Woken::Stop => return,
                Woken::Readable => {
                    if self.drain(&mut socket, &mut buffer) {
                        next_reconcile = self.reconcile_then_schedule(Source::Uevent);
                    }
                }
                Woken::Other if Instant::now() >= next_reconcile => {
                    next_reconcile = self.reconcile_then_schedule(Source::Reconcile);
                }
                Woken::Other => {}
            }
        }
    }

    /// The program closed or replaced the uevent socket (`lost` was its number): opens a
    /// new one and says so; `None`, said too, when none can be opened.
    fn reopen_socket(&mut self, lost: RawFd) -> Option<UeventSocket> {
        match self.shared.open_socket() {
            Ok(mut socket) => {
                self.shared.set_socket(socket.port().ok(), Some(socket.number()));
                self.lost("uevent socket", lost, format!("opened a new socket ({})", socket.number()));
                Some(socket)
            }
            Err(error) => {
                self.shared.set_socket(None, None);
                // The mode is set before the event, so that an observer of the event sees it.
                let (mode, instead) = match self.hotplug.topology().sysfs_root() {
                    Some(_) => (WatchMode::Poll, "polling the online files instead"),
                    None => (WatchMode::ReconcileOnly, "periodic reconciles only"),
                };
                self.shared.set_mode(mode);
                self.lost("uevent socket", lost, format!("cannot open a new socket ({error}): {instead}"));
                None
            }
        }
    }

    /// No uevent socket could be reopened: polls the `online` files from now on (or only
    /// reconciles, without a sysfs root or when they cannot be listed), after a reconcile
    /// for what was missed.
    fn fall_back_to_polling(&mut self) {
        let files = self.hotplug.topology().sysfs_root().map(OnlineFiles::new);
        match files {
            Some(Ok(files)) => {
                self.shared.set_mode(WatchMode::Poll);
                let snapshot = files.snapshot();
                self.reconcile(Source::Reconcile);
                self.run_poll(&files, snapshot);
            }
            Some(Err(error)) => {
                let reason = format!("cannot list the cpu online files to poll: {error}");
                self.hotplug.emit(Source::Reconcile, EventKind::Ignored { reason });
                self.shared.set_mode(WatchMode::ReconcileOnly);
                self.run_reconcile_only();
            }
            None => {
                self.shared.set_mode(WatchMode::ReconcileOnly);
                self.run_reconcile_only();
            }
        }
    }

    /// Reads every waiting datagram; whether any calls for a reconcile.
    fn drain(&mut self, socket: &mut UeventSocket, buffer: &mut [u8]) -> bool {
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
                // Closed or replaced by the program: the caller opens a new socket.
                Err(_) if !socket.is_ours() => return wake,
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
                        if self.shared.is_stopped() {
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
                    if self.shared.is_stopped() {
                        return;
                    }
                    // The pipe is not polled here (the channels wake this thread), but a
                    // lost end is still found and replaced, for the stop's write.
                    self.keep_wake_pipe();
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
