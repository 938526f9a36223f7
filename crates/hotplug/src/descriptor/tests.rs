use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};

use rustix::net::{self, netlink, AddressFamily, SocketFlags, SocketType};
use rustix::pipe::{pipe_with, PipeFlags};

use super::OwnFd;

/// What `/proc/self/fd/N` names.
fn target(number: i32) -> String {
    fs::read_link(format!("/proc/self/fd/{number}"))
        .map(|path| path.display().to_string())
        .unwrap_or_default()
}

/// A file of the test's own, with known content.
fn user_file(name: &str) -> (tempfile::TempDir, OwnedFd) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    let mut file = fs::File::create(&path).unwrap();
    file.write_all(b"the program's own\n").unwrap();
    (dir, file.into())
}

#[test]
fn a_descriptor_is_ours_until_its_number_is_given_to_another_file() {
    let (read, _write) = pipe_with(PipeFlags::CLOEXEC).unwrap();
    let mut own = OwnFd::new(read, "test pipe").unwrap();
    let number = own.number();
    assert!(own.is_ours(), "just opened");
    assert!(own.ours().is_some());
    let (_dir, file) = user_file("replaced");
    // The program puts a file of its own under the watcher's number (as an open after
    // close_range would).
    rustix::io::dup2(&file, own.fd.as_mut().unwrap()).unwrap();
    assert!(!own.is_ours(), "the number now names the program's file");
    assert!(own.unchecked().is_none(), "and is let go");
    drop(own);
    assert!(target(number).ends_with("/replaced"), "the program's file was not closed: {}", target(number));
}

#[test]
fn another_pipe_or_socket_under_the_same_number_is_not_ours() {
    let (read, _write) = pipe_with(PipeFlags::CLOEXEC).unwrap();
    let mut own = OwnFd::new(read, "test pipe").unwrap();
    let (other, _other_write) = pipe_with(PipeFlags::CLOEXEC).unwrap();
    rustix::io::dup2(&other, own.fd.as_mut().unwrap()).unwrap();
    assert!(!own.is_ours(), "a pipe of the program's has another inode");

    let socket = |protocol| {
        net::socket_with(AddressFamily::NETLINK, SocketType::DGRAM, SocketFlags::CLOEXEC, Some(protocol))
    };
    let Ok(uevent) = socket(netlink::KOBJECT_UEVENT) else {
        println!("skipped the socket half: no netlink sockets here");
        return;
    };
    let mut own = OwnFd::new(uevent, "uevent socket").unwrap();
    let route = socket(netlink::SOCK_DIAG).unwrap();
    rustix::io::dup2(&route, own.fd.as_mut().unwrap()).unwrap();
    assert!(!own.is_ours(), "a socket of another protocol");
    assert!(route.as_raw_fd() != own.number());
}

#[test]
fn the_write_end_of_our_pipe_is_not_its_read_end() {
    let (read, write) = pipe_with(PipeFlags::CLOEXEC).unwrap();
    let mut own = OwnFd::new(read, "read end").unwrap();
    // The same pipe (same inode) but the other end: the access mode tells them apart.
    rustix::io::dup2(&write, own.fd.as_mut().unwrap()).unwrap();
    assert!(!own.is_ours());
}
