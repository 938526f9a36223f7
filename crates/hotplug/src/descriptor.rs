//! The watcher's own descriptors, told apart from the program's.
//!
//! A watcher lives inside a program that may close descriptors it did not open
//! (`close_range(3, ~0U, 0)`, `closefrom`, a daemon's clean-up, a shell before `exec`)
//! and then get the same numbers back from its next `open`, `socket` or `pipe`. So a
//! number is never trusted: what a descriptor is (device, inode and file type from
//! `fstat`, the access mode, and for a socket its domain and protocol from `SO_DOMAIN`
//! and `SO_PROTOCOL`) is recorded when the watcher opens it and compared before each use.
//! One that no longer matches is *lost*: its number now belongs to the program, or to
//! nobody, and is never read, written or closed again; the watcher opens a new one.
//!
//! Sockets and pipes have an inode of their own (sockfs and pipefs number each one), so
//! the identity tells one from another; an eventfd would not do (every eventfd shares one
//! anonymous inode), which is why the watcher wakes through a pipe.
//!
//! What remains is the moment between the check and the call: a program that closes
//! and reopens a descriptor number in that window, while the watcher runs, still races
//! with it. So do the files a reconcile or a poll reads (the `online` files, through
//! `std::fs`, opened and closed within microseconds): a program that clears its table and
//! opens a file in the instant one of them is open can have that number read and closed.
//! Everything the watcher opens is close-on-exec.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};

use rustix::fs::{fcntl_getfl, fstat, FileType, OFlags};
use rustix::net::{sockopt, AddressFamily, Protocol};

/// What a descriptor refers to, as far as `fstat` and `getsockopt` tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    kind: FileType,
    access: OFlags,
    /// `SO_DOMAIN` and `SO_PROTOCOL`, for a socket.
    socket: Option<(AddressFamily, Option<Protocol>)>,
}

impl Identity {
    fn of(fd: BorrowedFd<'_>) -> io::Result<Identity> {
        let stat = fstat(fd)?;
        let kind = FileType::from_raw_mode(stat.st_mode);
        let socket = match kind {
            FileType::Socket => Some((sockopt::socket_domain(fd)?, sockopt::socket_protocol(fd)?)),
            _ => None,
        };
        Ok(Identity {
            // `dev_t` and `ino_t` are 64 bits on Linux, whatever the width of the fields.
            #[allow(clippy::unnecessary_cast)]
            dev: stat.st_dev as u64,
            #[allow(clippy::unnecessary_cast)]
            ino: stat.st_ino as u64,
            kind,
            access: fcntl_getfl(fd)? & OFlags::RWMODE,
            socket,
        })
    }
}

/// A descriptor the watcher opened, with what it was when opened. Dropping it closes the
/// descriptor only if it is still the same one.
pub(crate) struct OwnFd {
    /// `None` once lost: the number is no longer ours, and was let go without a close.
    fd: Option<OwnedFd>,
    /// The number it had, kept for reports after it is lost.
    number: RawFd,
    identity: Identity,
    what: &'static str,
}

impl fmt::Debug for OwnFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnFd")
            .field("what", &self.what)
            .field("number", &self.number)
            .field("lost", &self.fd.is_none())
            .finish()
    }
}

impl OwnFd {
    /// Records what `fd`, just opened, is; `what` names it in reports ("uevent socket").
    pub(crate) fn new(fd: OwnedFd, what: &'static str) -> io::Result<OwnFd> {
        let identity = Identity::of(fd.as_fd())?;
        Ok(OwnFd { number: fd.as_raw_fd(), fd: Some(fd), identity, what })
    }

    /// The descriptor, if its number still refers to what was opened; `None` (and the
    /// number let go, never to be used or closed again) once it was closed or replaced.
    pub(crate) fn ours(&mut self) -> Option<BorrowedFd<'_>> {
        let fd = self.fd.as_ref()?;
        if Identity::of(fd.as_fd()).ok() != Some(self.identity) {
            self.let_go();
            return None;
        }
        self.fd.as_ref().map(AsFd::as_fd)
    }

    /// Whether the descriptor is still the one opened (and if not, lets its number go).
    pub(crate) fn is_ours(&mut self) -> bool {
        self.ours().is_some()
    }

    /// The descriptor without a check, for poll(2), which only reports readiness and so
    /// cannot disturb a descriptor that became the program's; `None` once lost.
    pub(crate) fn unchecked(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(AsFd::as_fd)
    }

    /// The number the descriptor had when opened.
    pub(crate) fn number(&self) -> RawFd {
        self.number
    }

    /// What it is, in words ("uevent socket").
    pub(crate) fn what(&self) -> &'static str {
        self.what
    }

    /// Forgets the number without closing it: it is someone else's now, or nobody's.
    fn let_go(&mut self) {
        if let Some(fd) = self.fd.take() {
            let _number_of_someone_else = fd.into_raw_fd();
        }
    }
}

impl Drop for OwnFd {
    fn drop(&mut self) {
        // A lost descriptor is let go by the check; one still ours is closed when the
        // field drops after this.
        let _ = self.ours();
    }
}

#[cfg(test)]
mod tests;
