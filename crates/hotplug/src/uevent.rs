//! Kernel uevents over `NETLINK_KOBJECT_UEVENT`: the socket and the message parser.
//!
//! The kernel multicasts each uevent to group 1 as one datagram,
//! `ACTION@DEVPATH\0KEY=VALUE\0...` (`lib/kobject_uevent.c`, `kobject_uevent_env`). A CPU
//! that goes offline or online sends `ACTION=offline|online`, `SUBSYSTEM=cpu`,
//! `DEVPATH=/devices/system/cpu/cpuN`. Messages are only a wake-up: the machine reads the
//! `online` files before acting, so a forged or lost message changes nothing wrong. Still,
//! only messages whose sender port is 0 (the kernel) are taken, as udev does since
//! CVE-2009-1185.

use std::io::{self, IoSliceMut};
use std::os::fd::{BorrowedFd, RawFd};

use rustix::io::Errno;
use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{
    self, netlink, sockopt, AddressFamily, RecvAncillaryBuffer, RecvFlags, ReturnFlags, SocketFlags,
    SocketType,
};
use topology::{CpuState, OnlineChange};

use crate::descriptor::OwnFd;
use crate::error::UeventError;
use crate::poll::cpu_folder_id;

/// The multicast group the kernel sends uevents to (`1` in `kobject_uevent_net_broadcast`).
pub const KERNEL_GROUP: u32 = 1;

/// The largest uevent the kernel builds (`UEVENT_BUFFER_SIZE` = 2048 for the variables,
/// plus the header); a datagram is read into a buffer twice as large, and a longer one is
/// reported as truncated.
pub(crate) const RECEIVE_BUFFER: usize = 8192;

/// The receive buffer asked of the kernel, so that a burst (many CPUs at once) does not
/// overflow it: 1 MiB. The kernel caps it at `net.core.rmem_max` and may grant less, which
/// only makes `ENOBUFS` likelier, and that is handled by a full reconcile.
const SOCKET_BUFFER: usize = 1 << 20;

/// One parsed uevent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    /// `add`, `remove`, `change`, `online`, `offline`, ...
    pub action: String,
    /// The device path under `/sys`, such as `/devices/system/cpu/cpu1`.
    pub devpath: String,
    /// The `SUBSYSTEM` variable, if present.
    pub subsystem: Option<String>,
    /// The `SEQNUM` variable, if present and a number.
    pub seqnum: Option<u64>,
    /// Every `KEY=VALUE` variable, in order.
    pub vars: Vec<(String, String)>,
}

impl Uevent {
    /// Parses one datagram.
    pub fn parse(bytes: &[u8]) -> Result<Uevent, UeventError> {
        if bytes.is_empty() {
            return Err(UeventError::Empty);
        }
        if bytes.starts_with(b"libudev\0") {
            return Err(UeventError::UdevFormat);
        }
        let mut fields = bytes.split(|&b| b == 0).filter(|field| !field.is_empty());
        let header = text(fields.next().ok_or(UeventError::Empty)?)?;
        let (action, devpath) = header
            .split_once('@')
            .filter(|(action, devpath)| !action.is_empty() && devpath.starts_with('/'))
            .ok_or_else(|| UeventError::BadHeader { header: header.to_string() })?;
        let mut vars = Vec::new();
        for field in fields {
            let field = text(field)?;
            let (key, value) = field
                .split_once('=')
                .filter(|(key, _)| !key.is_empty())
                .ok_or_else(|| UeventError::BadField { field: field.to_string() })?;
            vars.push((key.to_string(), value.to_string()));
        }
        for (key, expected) in [("ACTION", action), ("DEVPATH", devpath)] {
            if let Some(value) = find(&vars, key).filter(|&value| value != expected) {
                return Err(UeventError::Inconsistent {
                    header: header.to_string(),
                    key,
                    value: value.to_string(),
                });
            }
        }
        Ok(Uevent {
            action: action.to_string(),
            devpath: devpath.to_string(),
            subsystem: find(&vars, "SUBSYSTEM").map(str::to_string),
            seqnum: find(&vars, "SEQNUM").and_then(|seq| seq.parse().ok()),
            vars,
        })
    }

    /// The online change this uevent announces: `Some` for `SUBSYSTEM=cpu` with
    /// `ACTION=online|offline`, `None` for anything else; an error for a cpu uevent whose
    /// device path names no CPU.
    pub fn cpu_change(&self) -> Result<Option<OnlineChange>, UeventError> {
        if self.subsystem.as_deref() != Some("cpu") {
            return Ok(None);
        }
        let state = match self.action.as_str() {
            "online" => CpuState::Online,
            "offline" => CpuState::Offline,
            _ => return Ok(None),
        };
        let cpu = self
            .devpath
            .rsplit('/')
            .next()
            .and_then(cpu_folder_id)
            .ok_or_else(|| UeventError::NotACpu { devpath: self.devpath.clone() })?;
        Ok(Some(OnlineChange { cpu, state }))
    }
}

fn text(field: &[u8]) -> Result<&str, UeventError> {
    std::str::from_utf8(field)
        .map_err(|_| UeventError::NotUtf8 { field: String::from_utf8_lossy(field).into() })
}

fn find<'a>(vars: &'a [(String, String)], key: &str) -> Option<&'a str> {
    vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// What to do with one received datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A CPU went online or offline, says the kernel: wake the reconciler.
    Cpu(OnlineChange),
    /// A kernel uevent about something else: ignore, and say what it was.
    Unrelated {
        /// `ACTION@DEVPATH`, as the header said.
        header: String,
        /// The `SUBSYSTEM` variable, if present.
        subsystem: Option<String>,
    },
    /// Not sent by the kernel (sender port is not 0): ignore, and say so.
    Forged {
        /// The sender's port.
        port: u32,
    },
    /// Cut short by the buffer: it may have been about a CPU, so reconcile.
    Truncated,
    /// Not a uevent: ignore, and say why.
    Malformed(UeventError),
}

/// Sorts one datagram by its sender's port and content.
pub fn classify(sender_port: u32, bytes: &[u8], truncated: bool) -> Verdict {
    if sender_port != 0 {
        return Verdict::Forged { port: sender_port };
    }
    if truncated {
        return Verdict::Truncated;
    }
    let event = match Uevent::parse(bytes) {
        Ok(event) => event,
        Err(error) => return Verdict::Malformed(error),
    };
    match event.cpu_change() {
        Ok(Some(change)) => Verdict::Cpu(change),
        Ok(None) => Verdict::Unrelated {
            header: format!("{}@{}", event.action, event.devpath),
            subsystem: event.subsystem,
        },
        Err(error) => Verdict::Malformed(error),
    }
}

/// One datagram as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Datagram {
    pub(crate) len: usize,
    pub(crate) sender_port: u32,
    pub(crate) truncated: bool,
}

/// A non-blocking `NETLINK_KOBJECT_UEVENT` socket bound to the kernel's group, through
/// rustix's safe wrappers of socket(2), bind(2), getsockname(2) and recvmsg(2). Its
/// descriptor is checked before each use (`descriptor.rs`): once the program closed or
/// replaced it, nothing is received from that number again.
#[derive(Debug)]
pub(crate) struct UeventSocket {
    fd: OwnFd,
}

impl UeventSocket {
    /// Opens and binds the socket: `socket(AF_NETLINK, SOCK_DGRAM|SOCK_CLOEXEC|SOCK_NONBLOCK,
    /// NETLINK_KOBJECT_UEVENT)`, then `bind` to port 0 (the kernel picks the port) and
    /// group [`KERNEL_GROUP`].
    pub(crate) fn open() -> io::Result<UeventSocket> {
        let fd = net::socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            Some(netlink::KOBJECT_UEVENT),
        )?;
        // A refusal only leaves the default buffer, so the result is ignored on purpose.
        let _ = sockopt::set_socket_recv_buffer_size(&fd, SOCKET_BUFFER);
        net::bind(&fd, &SocketAddrNetlink::new(0, KERNEL_GROUP))?;
        Ok(UeventSocket { fd: OwnFd::new(fd, "uevent socket")? })
    }

    /// The port id the kernel gave this socket; a test can send to it.
    pub(crate) fn port(&mut self) -> io::Result<u32> {
        let fd = self.fd.ours().ok_or_else(lost)?;
        let address = SocketAddrNetlink::try_from(net::getsockname(fd)?)?;
        Ok(address.pid())
    }

    /// Whether the descriptor is still this socket (not closed or replaced by the program).
    pub(crate) fn is_ours(&mut self) -> bool {
        self.fd.is_ours()
    }

    /// The descriptor for poll(2), unchecked (poll only reports readiness); `None` once
    /// lost.
    pub(crate) fn unchecked(&self) -> Option<BorrowedFd<'_>> {
        self.fd.unchecked()
    }

    /// The descriptor's number when opened.
    pub(crate) fn number(&self) -> RawFd {
        self.fd.number()
    }

    /// Receives one datagram without blocking: `Ok(None)` when none is waiting,
    /// `Err(ENOBUFS)` when the kernel dropped some because the buffer was full, an error of
    /// kind `NotFound` (and [`UeventSocket::is_ours`] false from then on) when the program
    /// closed or replaced the descriptor. The check comes before every recvmsg(2), so a
    /// datagram of the program's own socket under the same number is never taken.
    pub(crate) fn receive(&mut self, buffer: &mut [u8]) -> io::Result<Option<Datagram>> {
        loop {
            let fd = self.fd.ours().ok_or_else(lost)?;
            let mut iov = [IoSliceMut::new(buffer)];
            let mut no_control = RecvAncillaryBuffer::default();
            match net::recvmsg(fd, &mut iov, &mut no_control, RecvFlags::DONTWAIT) {
                Ok(message) => {
                    // A datagram without a netlink sender address cannot be the kernel's:
                    // it gets a port no kernel message has, so it is judged forged.
                    let sender_port = message
                        .address
                        .and_then(|address| SocketAddrNetlink::try_from(address).ok())
                        .map_or(u32::MAX, |address| address.pid());
                    return Ok(Some(Datagram {
                        len: message.bytes.min(buffer.len()),
                        sender_port,
                        truncated: message.flags.contains(ReturnFlags::TRUNC),
                    }));
                }
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return Ok(None),
                Err(error) => return Err(error.into()),
            }
        }
    }
}

/// The error of a socket whose descriptor the program closed or replaced.
fn lost() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        "the uevent socket's descriptor was closed or replaced by the program",
    )
}

#[cfg(test)]
mod tests;
