use std::fs;

use topology::{CpuState, OnlineChange};

use super::*;

fn tree(cpus: u32) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join(CPU_DIR);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("online"), format!("0-{}\n", cpus - 1)).unwrap();
    fs::create_dir_all(dir.join("cpufreq")).unwrap();
    for cpu in 0..cpus {
        let cpu_dir = dir.join(format!("cpu{cpu}"));
        fs::create_dir_all(&cpu_dir).unwrap();
        if cpu != 0 {
            fs::write(cpu_dir.join("online"), "1\n").unwrap();
        }
    }
    root
}

#[test]
fn finds_the_per_cpu_files_but_not_cpu0s_missing_one() {
    let root = tree(3);
    let files = OnlineFiles::new(root.path()).unwrap();
    assert_eq!(files.per_cpu.iter().map(|(cpu, _)| *cpu).collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn a_written_file_is_a_change() {
    let root = tree(3);
    let files = OnlineFiles::new(root.path()).unwrap();
    let before = files.snapshot();
    assert_eq!(files.snapshot(), before);
    fs::write(root.path().join(CPU_DIR).join("cpu2/online"), "0\n").unwrap();
    let after = files.snapshot();
    assert_ne!(after, before);
    assert_eq!(after.changes_since(&before), [OnlineChange { cpu: 2, state: CpuState::Offline }]);
    // Only the summary changing is a change without a hint.
    fs::write(root.path().join(CPU_DIR).join("online"), "0-1\n").unwrap();
    let summary_only = files.snapshot();
    assert_ne!(summary_only, after);
    assert!(summary_only.changes_since(&after).is_empty());
}

#[test]
fn garbage_in_a_file_is_no_state() {
    let root = tree(2);
    let files = OnlineFiles::new(root.path()).unwrap();
    let before = files.snapshot();
    fs::write(root.path().join(CPU_DIR).join("cpu1/online"), "maybe\n").unwrap();
    let after = files.snapshot();
    assert_ne!(after, before);
    assert!(after.changes_since(&before).is_empty());
}

#[test]
fn a_missing_tree_is_an_error() {
    let root = tempfile::tempdir().unwrap();
    assert!(OnlineFiles::new(root.path()).is_err());
}

#[test]
fn only_cpu_and_decimal_digits_name_a_cpu_folder() {
    assert_eq!(cpu_folder_id("cpu12"), Some(12));
    for name in ["cpu", "cpufreq", "cpu+1", "cpu 1", "node1", "cpu99999999999"] {
        assert_eq!(cpu_folder_id(name), None, "{name}");
    }
}

#[test]
fn a_fifo_or_an_endless_device_is_no_state_and_never_blocks_a_poll() {
    use rustix::fs::{FileType, Mode, CWD};
    let root = tree(4);
    let files = OnlineFiles::new(root.path()).unwrap();
    let before = files.snapshot();
    let dir = root.path().join(CPU_DIR);
    fs::remove_file(dir.join("cpu1/online")).unwrap();
    rustix::fs::mknodat(CWD, dir.join("cpu1/online"), FileType::Fifo, Mode::RUSR | Mode::WUSR, 0).unwrap();
    fs::remove_file(dir.join("cpu2/online")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("cpu2/online")).unwrap();
    // A regular file longer than any CPU list.
    fs::write(dir.join("cpu3/online"), "1".repeat(1 << 20)).unwrap();

    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // The receiver is gone only if the test timed out already.
        let _ = tx.send(files.snapshot());
    });
    let after = rx.recv_timeout(std::time::Duration::from_secs(20)).expect("the poll blocked");
    assert_eq!(after.per_cpu, [(1, None), (2, None), (3, None)]);
    assert!(after.changes_since(&before).is_empty());
}
