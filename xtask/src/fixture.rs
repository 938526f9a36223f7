//! `cargo xtask fixture NAME` and `cargo xtask capture-fixture NAME`: the project's own
//! machines in `fixtures/`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use topology::machine_file::MachineDescription;

/// `fixture NAME...` (or `fixture --all`): writes `fixtures/NAME/` from
/// `fixtures/NAME.machine`, replacing what was there.
pub(crate) fn fixture(root: &Path, args: &[String]) -> Result<()> {
    let fixtures = root.join("fixtures");
    let names: Vec<String> = if args.iter().any(|a| a == "--all") {
        let mut names = Vec::new();
        for entry in fs::read_dir(&fixtures).with_context(|| format!("cannot list {}", fixtures.display()))? {
            let path = entry.with_context(|| format!("cannot list {}", fixtures.display()))?.path();
            if path.extension().is_some_and(|e| e == "machine") {
                names.push(path.file_stem().unwrap_or_default().to_string_lossy().into_owned());
            }
        }
        names.sort();
        names
    } else {
        args.to_vec()
    };
    if names.is_empty() {
        bail!("usage: cargo xtask fixture NAME... | --all   (reads fixtures/NAME.machine)");
    }
    for name in names {
        check_name(&name)?;
        let description_path = fixtures.join(format!("{name}.machine"));
        let text = fs::read_to_string(&description_path)
            .with_context(|| format!("cannot read {}", description_path.display()))?;
        let description = MachineDescription::parse(&name, &text)?;
        let out = fixtures.join(&name);
        replace_folder(&out)?;
        description.write_tree(&out)?;
        eprintln!("wrote {} from {}", out.display(), description_path.display());
    }
    Ok(())
}

/// `capture-fixture NAME [--from ROOT]`: copies only the topology files of the live
/// machine (or of ROOT) into `fixtures/NAME/`.
pub(crate) fn capture_fixture(root: &Path, args: &[String]) -> Result<()> {
    let (name, from) = match args {
        [name] => (name, PathBuf::from("/")),
        [name, flag, from] if flag == "--from" => (name, PathBuf::from(from)),
        _ => bail!("usage: cargo xtask capture-fixture NAME [--from ROOT]"),
    };
    check_name(name)?;
    let out = root.join("fixtures").join(name);
    replace_folder(&out)?;
    let files = capture(&from, &out)?;
    // Check that what was captured reads back as a machine.
    let topology = topology::SysfsTopology::new(&out)
        .with_context(|| format!("the capture in {} does not read back", out.display()))?;
    eprintln!(
        "captured {files} files from {} into {} ({} possible cpus, {} nodes)",
        from.display(),
        out.display(),
        topology::Topology::possible_cpus(&topology).len(),
        topology::Topology::possible_nodes(&topology).len()
    );
    Ok(())
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        bail!("fixture name {name:?}: use letters, digits, '-' and '_' only");
    }
    Ok(())
}

fn replace_folder(out: &Path) -> Result<()> {
    if out.exists() {
        fs::remove_dir_all(out).with_context(|| format!("cannot remove {}", out.display()))?;
    }
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))
}

/// Copies the topology files under `from` into `out`; returns how many were copied.
fn capture(from: &Path, out: &Path) -> Result<usize> {
    let mut relative: Vec<PathBuf> = Vec::new();
    let cpu = Path::new("sys/devices/system/cpu");
    for name in ["possible", "present", "online", "offline", "kernel_max"] {
        relative.push(cpu.join(name));
    }
    for entry in list(&from.join(cpu))? {
        if numbered(&entry, "cpu") {
            relative.push(cpu.join(&entry).join("online"));
            for file in list(&from.join(cpu).join(&entry).join("topology"))? {
                relative.push(cpu.join(&entry).join("topology").join(file));
            }
        }
    }
    let node = Path::new("sys/devices/system/node");
    for entry in list(&from.join(node))? {
        if numbered(&entry, "node") {
            for file in ["cpulist", "cpumap", "meminfo", "distance"] {
                relative.push(node.join(&entry).join(file));
            }
        } else if entry != "uevent" && !from.join(node).join(&entry).is_dir() {
            relative.push(node.join(&entry));
        }
    }
    for file in ["proc/meminfo", "proc/cpuinfo", "proc/self/cpuset", "proc/self/cgroup", "proc/mounts"] {
        relative.push(PathBuf::from(file));
    }
    relative.extend(cgroup_files(from));

    let mut copied = 0;
    for path in relative {
        let source = from.join(&path);
        let text = match fs::read(&source) {
            Ok(text) => text,
            // Absent on this kernel (or not readable here): the capture simply lacks it.
            Err(error)
                if matches!(error.kind(), io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied) =>
            {
                continue
            }
            Err(error) if error.kind() == io::ErrorKind::IsADirectory => continue,
            Err(error) => return Err(error).with_context(|| format!("cannot read {}", source.display())),
        };
        let target = out.join(&path);
        let folder = target.parent().unwrap_or(out);
        fs::create_dir_all(folder).with_context(|| format!("cannot create {}", folder.display()))?;
        fs::write(&target, text).with_context(|| format!("cannot write {}", target.display()))?;
        copied += 1;
    }
    Ok(copied)
}

/// The cpuset files of the process's cgroup: for each cpuset or cgroup2 mount in
/// `proc/mounts`, the process's folder's `cpus`, `cpuset.cpus`, `cpuset.cpus.effective`
/// (and the `mems` pair). A missing `proc` file means fewer candidates, not an error.
fn cgroup_files(from: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<String> = Vec::new();
    if let Ok(text) = fs::read_to_string(from.join("proc/self/cpuset")) {
        paths.push(text.trim().to_owned());
    }
    if let Ok(text) = fs::read_to_string(from.join("proc/self/cgroup")) {
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) =
                (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if controllers.is_empty() || controllers.split(',').any(|c| c == "cpuset") {
                paths.push(path.to_owned());
            }
        }
    }
    let mounts = fs::read_to_string(from.join("proc/mounts")).unwrap_or_default();
    let mut files = Vec::new();
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, mount_point, kind, options, ..] = fields[..] else { continue };
        let cpuset = kind == "cpuset"
            || kind == "cgroup2"
            || (kind == "cgroup" && options.split(',').any(|o| o == "cpuset"));
        if !cpuset {
            continue;
        }
        for path in &paths {
            let folder = Path::new(mount_point.trim_start_matches('/')).join(path.trim_start_matches('/'));
            for file in
                ["cpus", "cpuset.cpus", "cpuset.cpus.effective", "cpuset.mems", "cpuset.mems.effective"]
            {
                files.push(folder.join(file));
            }
        }
    }
    files.sort();
    files.dedup();
    files
}

fn list(dir: &Path) -> Result<Vec<String>> {
    match fs::read_dir(dir) {
        Ok(entries) => {
            let mut names = Vec::new();
            for entry in entries {
                let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
            names.sort();
            Ok(names)
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(error).with_context(|| format!("cannot list {}", dir.display())),
    }
}

fn numbered(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}
