//! A uevent not sent by the kernel is ignored. Sending one needs `CAP_NET_ADMIN`; the
//! message is sent to the watcher's own socket (unicast), so no other listener sees it.

use std::sync::Arc;
use std::time::Duration;

use hotplug::{wait_for_event, EventKind, Hotplug, Slot, WatchMode, Watcher};
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{self, AddressFamily, SendFlags, SocketFlags, SocketType};
use topology::FakeTopology;

use crate::support::Log;

/// Sends `bytes` from a new netlink socket to `port`; `Err` says why it could not.
pub(crate) fn send_to_port(port: u32, bytes: &[u8]) -> Result<(), String> {
    let socket = net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(netlink::KOBJECT_UEVENT),
    )
    .map_err(|errno| format!("socket: {errno}"))?;
    net::sendto(&socket, bytes, SendFlags::empty(), &SocketAddrNetlink::new(port, 0))
        .map_err(|errno| format!("sendto: {errno}"))?;
    Ok(())
}

#[test]
fn a_forged_uevent_changes_nothing() {
    let fake = Arc::new(FakeTopology::seed_box());
    let hotplug = Hotplug::new(fake).unwrap();
    let log = Log::default();
    hotplug.setup_state(Slot::OnlineDynamic, log.state("online")).unwrap();
    log.take();
    let watcher = match Watcher::builder(&hotplug).mode(WatchMode::Uevent).start() {
        Ok(watcher) => watcher,
        Err(error) => {
            println!("a_forged_uevent_changes_nothing: skipped: no uevent socket here: {error}");
            return;
        }
    };
    let port = watcher.uevent_port().expect("a uevent watcher has a port");
    let events = hotplug.events();
    let forged = b"offline@/devices/system/cpu/cpu1\0ACTION=offline\0DEVPATH=/devices/system/cpu/cpu1\0SUBSYSTEM=cpu\0SEQNUM=1\0";
    if let Err(reason) = send_to_port(port, forged) {
        println!("a_forged_uevent_changes_nothing: skipped: cannot send a netlink uevent (needs CAP_NET_ADMIN): {reason}");
        return;
    }
    let ignored = wait_for_event(
        &events,
        Duration::from_secs(5),
        |event| matches!(&event.kind, EventKind::Forged { port } if *port != 0),
    );
    assert!(ignored.is_some(), "the forged uevent was not reported as ignored");
    assert!(log.take().is_empty(), "a forged uevent ran callbacks");
    assert!(hotplug.online_view().contains(1));
    let stats = watcher.stop();
    assert!(stats.ignored >= 1, "{stats:?}");
}
