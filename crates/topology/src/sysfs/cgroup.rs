//! The CPU and memory-node restrictions of the process's cpuset or cgroup, read under a
//! root.
//!
//! The cgroup path comes from `proc/self/cpuset` where it exists (it names the cpuset
//! path for cgroup v1 and v2 alike), else from the cpuset line (v1) or the `0::` line (v2)
//! of `proc/self/cgroup`. The mount that holds it comes from `proc/mounts`: a `cpuset`
//! file system (the old `/dev/cpuset`, files named `cpus`), a `cgroup` mount with the
//! `cpuset` option (`cpuset.cpus`), or a `cgroup2` mount (`cpuset.cpus.effective`), in
//! that order of preference, as hwloc does. The memory nodes come from the same folder's
//! `mems`, `cpuset.mems` or `cpuset.mems.effective`, found the same way.
//!
//! Absent files mean that no restriction is known: a capture trimmed of its cgroup
//! folders, a v2 cgroup without the cpuset controller, a kernel without cpusets. An empty
//! list (v2 writes one for "inherit") is read as no restriction too.

use std::io::Cursor;
use std::path::{Component, Path, PathBuf};

use procfs_core::{FromBufRead, ProcessCGroups};

use super::read;
use crate::diagnostic::Notes;
use crate::idset::trim_kernel_text;
use crate::{Diagnostic, IdSet, Quirk, Result, ID_LIMIT};

/// Which cgroup hierarchy the process's path was found for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hierarchy {
    /// `proc/self/cpuset`: valid for whichever cpuset hierarchy is mounted.
    Any,
    /// The cpuset line of `proc/self/cgroup` (v1).
    V1,
    /// The `0::` line of `proc/self/cgroup` (v2).
    V2,
}

/// One restriction found: the file it came from and the ids it allows.
#[derive(Debug, Clone)]
pub(crate) struct Restriction {
    /// The `cpus`, `cpuset.cpus` or `cpuset.cpus.effective` file (for CPUs), or the
    /// `mems`, `cpuset.mems` or `cpuset.mems.effective` file (for memory nodes).
    pub(crate) path: PathBuf,
    /// The CPUs or nodes it allows.
    pub(crate) ids: IdSet,
}

/// The restrictions of the process's cgroup: on its CPUs and on its memory nodes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Restrictions {
    pub(crate) cpus: Option<Restriction>,
    pub(crate) mems: Option<Restriction>,
}

/// A cgroup folder that may hold cpuset files, and how they are named there.
struct Candidate {
    folder: PathBuf,
    /// The CPU file's name and the memory-node file's name.
    names: (&'static str, &'static str),
}

/// Reads the restrictions under `root`; each `None` where none is known.
pub(crate) fn restrictions(root: &Path, limit: u32, notes: &mut Notes) -> Result<Restrictions> {
    let mut found = Restrictions::default();
    for Candidate { folder, names: (cpus, mems) } in candidates(root, notes)? {
        if found.cpus.is_none() {
            found.cpus = nonempty(folder.join(cpus), "cgroup cpu list", limit)?;
        }
        if found.mems.is_none() {
            found.mems = nonempty(folder.join(mems), "cgroup node list", ID_LIMIT)?;
        }
    }
    Ok(found)
}

/// The restriction in an id list file, if it exists and is not empty.
fn nonempty(path: PathBuf, what: &'static str, limit: u32) -> Result<Option<Restriction>> {
    Ok(read::list(&path, what, limit)?.filter(|ids| !ids.is_empty()).map(|ids| Restriction { path, ids }))
}

/// The folders that may hold the process's cpuset files, in order of preference.
fn candidates(root: &Path, notes: &mut Notes) -> Result<Vec<Candidate>> {
    let Some((cgroup_path, hierarchy)) = process_cgroup(root, notes)? else { return Ok(Vec::new()) };
    let mounts_path = root.join("proc/mounts");
    let Some(mounts_text) = read::text(&mounts_path, "mount table")? else { return Ok(Vec::new()) };
    let mounts = mount_table(&mounts_path, &mounts_text)?;

    let relative = cgroup_path.trim_start_matches('/');
    let mut candidates = Vec::new();
    let v1 = matches!(hierarchy, Hierarchy::Any | Hierarchy::V1);
    let v2 = matches!(hierarchy, Hierarchy::Any | Hierarchy::V2);
    for mount in &mounts {
        let folder = under_root(root, &mount.point).join(relative);
        match mount.fstype {
            "cpuset" if v1 => candidates.push(Candidate { folder, names: ("cpus", "mems") }),
            "cgroup" if v1 && mount.options.split(',').any(|option| option == "cpuset") => {
                candidates.push(Candidate { folder, names: ("cpuset.cpus", "cpuset.mems") })
            }
            _ => {}
        }
    }
    for mount in mounts.iter().filter(|m| v2 && m.fstype == "cgroup2") {
        let folder = under_root(root, &mount.point).join(relative);
        candidates.push(Candidate { folder, names: ("cpuset.cpus.effective", "cpuset.mems.effective") });
    }
    Ok(candidates)
}

/// One line of `proc/mounts`, as far as finding a cgroup needs it.
struct Mount<'a> {
    /// The mount point, its octal escapes (`\040` for a space) undone.
    point: String,
    fstype: &'a str,
    /// The comma-separated mount options (`rw,nosuid,cpuset`).
    options: &'a str,
}

/// `proc/mounts`: `device mount-point type options dump pass` on each line. A line with
/// fewer than the first four fields, or a mount point that climbs out with `..`, is
/// malformed (the kernel writes neither), naming the line.
fn mount_table<'a>(path: &Path, text: &'a str) -> Result<Vec<Mount<'a>>> {
    let mut mounts = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let mut fields = line.split_whitespace().skip(1);
        let (Some(point), Some(fstype), Some(options)) = (fields.next(), fields.next(), fields.next()) else {
            return Err(read::malformed(
                path,
                "mount table",
                line,
                "expected a device, a mount point, a type and options",
            ));
        };
        let point = unescape_octal(point);
        refuse_parent_dirs(path, "mount table", line, &point)?;
        mounts.push(Mount { point, fstype, options });
    }
    Ok(mounts)
}

/// Undoes the kernel's `\ooo` escapes in a `proc/mounts` field (space, tab, newline and
/// backslash are written so).
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let digits = bytes.get(at + 1..at + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[at], digits) {
            (b'\\', Some(d)) if d[0] <= b'3' => {
                out.push((d[0] - b'0') << 6 | (d[1] - b'0') << 3 | (d[2] - b'0'));
                at += 4;
            }
            (byte, _) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a path has a `..` in it: joined under the root, it could name a file outside
/// the tree.
fn climbs(path: &str) -> bool {
    Path::new(path).components().any(|component| component == Component::ParentDir)
}

/// Refuses a mount point with a `..` in it (`proc/mounts` names none: it gives each mount
/// point as the process sees it from its root).
fn refuse_parent_dirs(file: &Path, what: &'static str, text: &str, path: &str) -> Result<()> {
    if climbs(path) {
        return Err(read::malformed(file, what, text, format!("{path:?} climbs out of the tree with `..`")));
    }
    Ok(())
}

/// The live process's memory nodes: `Mems_allowed_list` in `proc/self/status` (its
/// cpuset's effective `mems`, as the kernel applies them); `Ok(None)` where the file or
/// the line is absent (a kernel without cpusets).
pub(crate) fn process_mems(root: &Path) -> Result<Option<Restriction>> {
    let path = root.join("proc/self/status");
    let Some(text) = read::text(&path, "process status")? else { return Ok(None) };
    let Some(list) = text.lines().find_map(|line| line.strip_prefix("Mems_allowed_list:")) else {
        return Ok(None);
    };
    let ids = IdSet::parse_list(list.trim(), ID_LIMIT)
        .map_err(|error| read::parse_error(&path, "Mems_allowed_list", error))?;
    Ok(Some(Restriction { path, ids }))
}

/// The process's cpuset path and the hierarchy it belongs to.
fn process_cgroup(root: &Path, notes: &mut Notes) -> Result<Option<(String, Hierarchy)>> {
    let cpuset_path = root.join("proc/self/cpuset");
    if let Some(text) = read::text(&cpuset_path, "cpuset path")? {
        let path = trim_kernel_text(&text);
        if path.is_empty() {
            let reading = "names no cpuset: read as if absent (the cgroup comes from proc/self/cgroup)";
            notes.note(Diagnostic::new(Quirk::EmptyCpusetPath, &cpuset_path, &text, reading))?;
        } else if !path.starts_with('/') {
            return Err(read::malformed(&cpuset_path, "cpuset path", &text, "expected an absolute path"));
        } else {
            return Ok(visible(path).map(|path| (path.to_owned(), Hierarchy::Any)));
        }
    }
    let cgroup_path = root.join("proc/self/cgroup");
    let Some(text) = read::text(&cgroup_path, "cgroup list")? else { return Ok(None) };
    let groups = ProcessCGroups::from_buf_read(Cursor::new(text.as_bytes()))
        .map_err(|error| read::malformed(&cgroup_path, "cgroup list", &text, error.to_string()))?;
    let found = match groups.0.iter().find(|g| g.controllers.iter().any(|c| c == "cpuset")) {
        Some(group) => Some((group.pathname.clone(), Hierarchy::V1)),
        None => groups
            .0
            .iter()
            .find(|g| g.hierarchy == 0 && g.controllers.is_empty())
            .map(|g| (g.pathname.clone(), Hierarchy::V2)),
    };
    Ok(found.filter(|(path, _)| visible(path).is_some()))
}

/// The process's cgroup path where this process can see its cgroup; `None` for a path
/// with `..` in it, which the kernel writes for a process outside its cgroup namespace's
/// root (`nsenter` into a container, say): its cpuset is not below any mount this
/// process sees, so no restriction is known, as where the files are absent. (Joined
/// under the root, the path would name files outside the tree.)
fn visible(path: &str) -> Option<&str> {
    (!climbs(path)).then_some(path)
}

/// A mount point of the described machine, as a path under `root`.
fn under_root(root: &Path, mount_point: &str) -> PathBuf {
    root.join(mount_point.trim_start_matches('/'))
}
