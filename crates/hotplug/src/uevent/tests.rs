use topology::{CpuState, OnlineChange};

use super::*;

fn message(fields: &[&str]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for field in fields {
        bytes.extend_from_slice(field.as_bytes());
        bytes.push(0);
    }
    bytes
}

fn cpu_message(action: &str, cpu: u32) -> Vec<u8> {
    let devpath = format!("/devices/system/cpu/cpu{cpu}");
    message(&[
        &format!("{action}@{devpath}"),
        &format!("ACTION={action}"),
        &format!("DEVPATH={devpath}"),
        "SUBSYSTEM=cpu",
        "SEQNUM=4711",
    ])
}

#[test]
fn parses_a_kernel_cpu_uevent() {
    let event = Uevent::parse(&cpu_message("offline", 1)).unwrap();
    assert_eq!(event.action, "offline");
    assert_eq!(event.devpath, "/devices/system/cpu/cpu1");
    assert_eq!(event.subsystem.as_deref(), Some("cpu"));
    assert_eq!(event.seqnum, Some(4711));
    assert_eq!(event.vars.len(), 4);
    assert_eq!(event.cpu_change().unwrap(), Some(OnlineChange { cpu: 1, state: CpuState::Offline }));
    assert_eq!(
        classify(0, &cpu_message("online", 12), false),
        Verdict::Cpu(OnlineChange { cpu: 12, state: CpuState::Online })
    );
}

#[test]
fn only_the_kernel_is_believed() {
    assert_eq!(classify(4242, &cpu_message("offline", 1), false), Verdict::Forged { port: 4242 });
}

#[test]
fn other_subsystems_and_actions_are_unrelated() {
    let msr = message(&["remove@/devices/virtual/msr/msr1", "ACTION=remove", "SUBSYSTEM=msr", "SEQNUM=9"]);
    assert_eq!(
        classify(0, &msr, false),
        Verdict::Unrelated {
            header: "remove@/devices/virtual/msr/msr1".into(),
            subsystem: Some("msr".into())
        }
    );
    let add = message(&["add@/devices/system/cpu/cpu3", "ACTION=add", "SUBSYSTEM=cpu"]);
    assert!(matches!(classify(0, &add, false), Verdict::Unrelated { .. }));
    let memory = message(&["online@/devices/system/memory/memory7", "ACTION=online", "SUBSYSTEM=memory"]);
    assert!(matches!(classify(0, &memory, false), Verdict::Unrelated { .. }));
}

#[test]
fn malformed_messages_are_refused_with_a_reason() {
    let cases: Vec<(Vec<u8>, UeventError)> = vec![
        (Vec::new(), UeventError::Empty),
        (vec![0, 0, 0], UeventError::Empty),
        (b"libudev\0\xfe\xed\xca\xfe".to_vec(), UeventError::UdevFormat),
        (message(&["offline"]), UeventError::BadHeader { header: "offline".into() }),
        (
            message(&["@/devices/system/cpu/cpu1"]),
            UeventError::BadHeader { header: "@/devices/system/cpu/cpu1".into() },
        ),
        (message(&["offline@devices"]), UeventError::BadHeader { header: "offline@devices".into() }),
        (
            message(&["offline@/devices/system/cpu/cpu1", "SUBSYSTEM"]),
            UeventError::BadField { field: "SUBSYSTEM".into() },
        ),
        (
            message(&["offline@/devices/system/cpu/cpu1", "=cpu"]),
            UeventError::BadField { field: "=cpu".into() },
        ),
        (
            b"offline@/devices/system/cpu/cpu1\0SUBSYSTEM=\xffcpu\0".to_vec(),
            UeventError::NotUtf8 { field: "SUBSYSTEM=\u{fffd}cpu".into() },
        ),
        (
            message(&["offline@/devices/system/cpu/cpu1", "ACTION=online", "SUBSYSTEM=cpu"]),
            UeventError::Inconsistent {
                header: "offline@/devices/system/cpu/cpu1".into(),
                key: "ACTION",
                value: "online".into(),
            },
        ),
        (
            message(&["online@/devices/system/cpu/cpufreq", "SUBSYSTEM=cpu"]),
            UeventError::NotACpu { devpath: "/devices/system/cpu/cpufreq".into() },
        ),
        (
            message(&["online@/devices/system/cpu/cpu", "SUBSYSTEM=cpu"]),
            UeventError::NotACpu { devpath: "/devices/system/cpu/cpu".into() },
        ),
        (
            message(&["online@/devices/system/cpu/cpu99999999999", "SUBSYSTEM=cpu"]),
            UeventError::NotACpu { devpath: "/devices/system/cpu/cpu99999999999".into() },
        ),
    ];
    for (bytes, expected) in cases {
        assert_eq!(classify(0, &bytes, false), Verdict::Malformed(expected.clone()), "{bytes:?}");
        assert!(!expected.to_string().is_empty());
    }
}

#[test]
fn a_truncated_message_calls_for_a_reconcile() {
    assert_eq!(classify(0, b"offline@/devices/sys", true), Verdict::Truncated);
}

#[test]
fn the_socket_binds_and_reports_nothing_waiting() {
    match UeventSocket::open() {
        Ok(mut socket) => {
            let mut buffer = [0u8; RECEIVE_BUFFER];
            assert!(socket.port().unwrap() != 0, "the kernel assigns a non-zero port to a user socket");
            // Nothing to read unless a device changed this instant; either way no error.
            let _ = socket.receive(&mut buffer).unwrap();
        }
        Err(error) => println!("skipped: cannot open a NETLINK_KOBJECT_UEVENT socket here: {error}"),
    }
}
