//! [`FixtureTopology`]: a described or captured machine on a private, mutable copy.
//!
//! The fixture's tree is copied into a temporary folder and read with the sysfs reader,
//! so that writing `cpuN/online` in the copy, through [`Topology::set_cpu_online`] or by
//! any other writer, changes what the fixture reports, exactly as on real Linux. The
//! fixture plays the kernel's part too: it keeps `cpu/online` and `cpu/offline` in step
//! with the per-CPU files (on each write it makes, and on each [`Topology::online_cpus`]
//! after a writer changed only a per-CPU file).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::machine_file::MachineDescription;
use crate::{CpuId, CpuSet, CpuState, Error, NodeId, NodeSet, OnlineChange, Result, SysfsTopology, Topology};

/// The environment variable that overrides where fixtures are looked up by name.
pub const FIXTURES_DIR_ENV: &str = "NUMASLAB_FIXTURES_DIR";

/// A machine from `fixtures/` (or any sysfs-shaped folder) on a private mutable copy.
#[derive(Debug)]
pub struct FixtureTopology {
    name: String,
    /// Dropped after `inner`, which only holds paths into it.
    copy: TempDir,
    inner: SysfsTopology,
}

impl FixtureTopology {
    /// Loads a fixture by name or path.
    ///
    /// A plain name (no `/`, such as `seed-box`) is looked up in [`Self::fixtures_dir`]: the
    /// folder `NAME/` if it exists, else the compiled-in description of that name (see
    /// [`machine_file::BUILTIN`](crate::machine_file::BUILTIN)). Anything else is a path to a
    /// sysfs-shaped folder, used as is, such as a capture's `fsroot`.
    pub fn load(name_or_path: impl AsRef<Path>) -> Result<Self> {
        let given = name_or_path.as_ref();
        let text = given.to_string_lossy().into_owned();
        let is_name = given.components().count() == 1 && !text.starts_with('.') && !given.is_absolute();
        if !is_name {
            return Self::copy_of(text, given);
        }
        let folder = Self::fixtures_dir().join(given);
        if folder.is_dir() {
            return Self::copy_of(text, &folder);
        }
        match MachineDescription::builtin(&text) {
            Some(description) => Self::from_description(&text, &description?),
            None => Err(Error::Fixture {
                name: text,
                reason: format!("no folder {} and no built-in description of that name", folder.display()),
            }),
        }
    }

    /// The seed's test box (4 CPUs on 2 nodes), written from the compiled-in description:
    /// needs no file on disk.
    pub fn seed_box() -> Result<Self> {
        Self::from_description(
            "seed-box",
            &MachineDescription::parse("seed-box", crate::machine_file::SEED_BOX)?,
        )
    }

    /// A machine written from a description into a fresh temporary folder.
    pub fn from_description(name: &str, description: &MachineDescription) -> Result<Self> {
        let copy = temp_dir(name)?;
        description.write_tree(copy.path())?;
        Self::open(name, copy)
    }

    /// Where fixtures are looked up by name: `$NUMASLAB_FIXTURES_DIR` if set, else the
    /// workspace's `fixtures/` folder as it was when this crate was compiled (two folders
    /// above `crates/topology`).
    pub fn fixtures_dir() -> PathBuf {
        match std::env::var_os(FIXTURES_DIR_ENV) {
            Some(dir) => PathBuf::from(dir),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures"),
        }
    }

    /// The root of the private copy: its `sys/devices/system/cpu/cpuN/online` files are
    /// the ones to write to drive hotplug.
    pub fn copy_root(&self) -> &Path {
        self.copy.path()
    }

    /// The sysfs reader of the copy.
    pub fn sysfs(&self) -> &SysfsTopology {
        &self.inner
    }

    fn copy_of(name: String, source: &Path) -> Result<Self> {
        if !source.is_dir() {
            return Err(Error::Fixture { name, reason: format!("{} is not a folder", source.display()) });
        }
        let copy = temp_dir(&name)?;
        copy_tree(source, copy.path())?;
        Self::open(&name, copy)
    }

    fn open(name: &str, copy: TempDir) -> Result<Self> {
        let inner = SysfsTopology::new(copy.path())?;
        Ok(Self { name: name.to_owned(), copy, inner })
    }
}

fn temp_dir(name: &str) -> Result<TempDir> {
    tempfile::Builder::new().prefix("numaslab-fixture-").tempdir().map_err(|error| Error::Fixture {
        name: name.to_owned(),
        reason: format!("cannot create a temporary folder: {error}"),
    })
}

/// Copies a tree: folders, files (made writable by their owner, as the copy is meant to
/// be written) and symbolic links (recreated, not followed); other kinds are skipped.
///
/// A link is copied only if it stays inside the tree (relative, and never climbing above
/// the root): the copy is written (`cpuN/online`), and a write through a link to
/// somewhere else would change that file instead, the live machine's sysfs among them.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let root = fs::canonicalize(from).map_err(|source| Error::Io { path: from.to_path_buf(), source })?;
    copy_folder(&root, from, 0, to)
}

/// [`copy_tree`] of the folder `from`, `depth` folders below the tree's root, whose
/// canonical path is `root`.
fn copy_folder(root: &Path, from: &Path, depth: usize, to: &Path) -> Result<()> {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::Io { path: path.to_path_buf(), source }
    }
    for entry in fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().map_err(io(&source))?;
        if kind.is_symlink() {
            let link = fs::read_link(&source).map_err(io(&source))?;
            // Read as text, then resolved: a link through another link (`up -> ../..`,
            // then `x -> up/../../..`) can climb out though its text does not.
            let resolved = fs::canonicalize(&source).ok();
            if !link_stays_inside(&link, depth) || !resolved.is_some_and(|target| target.starts_with(root)) {
                let reason = format!(
                    "a symbolic link to {} leaves the fixture's tree (or leads nowhere), so its copy cannot hold it",
                    link.display()
                );
                return Err(io(&source)(io::Error::new(io::ErrorKind::InvalidInput, reason)));
            }
            std::os::unix::fs::symlink(link, &target).map_err(io(&target))?;
        } else if kind.is_dir() {
            fs::create_dir(&target).map_err(io(&target))?;
            copy_folder(root, &source, depth + 1, &target)?;
        } else if kind.is_file() {
            fs::copy(&source, &target).map_err(io(&source))?;
            let mut permissions = fs::metadata(&target).map_err(io(&target))?.permissions();
            use std::os::unix::fs::PermissionsExt;
            permissions.set_mode(permissions.mode() | 0o200);
            fs::set_permissions(&target, permissions).map_err(io(&target))?;
        }
    }
    Ok(())
}

/// Whether a link's target, read from a folder `depth` folders below the tree's root,
/// names something inside the tree by its text: relative (so that the copy's link names
/// the copy, not the original), and no `..` climbs above the root. The caller also
/// resolves it, for links through links.
fn link_stays_inside(link: &Path, depth: usize) -> bool {
    use std::path::Component;
    let mut depth = depth;
    for component in link.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(up) => depth = up,
                None => return false,
            },
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

impl Topology for FixtureTopology {
    fn name(&self) -> String {
        format!("fixture:{}", self.name)
    }

    fn possible_cpus(&self) -> CpuSet {
        self.inner.possible_cpus()
    }

    fn present_cpus(&self) -> CpuSet {
        self.inner.present_cpus()
    }

    /// Reads the copy's per-CPU files, refreshes the virtual CPUs, and brings the summary
    /// files in step if a writer changed only a per-CPU file.
    fn online_cpus(&self) -> Result<CpuSet> {
        let online = self.inner.online_cpus()?;
        self.inner.write_summaries(&online)?;
        Ok(online)
    }

    fn cpu_node(&self, cpu: CpuId) -> Option<NodeId> {
        self.inner.cpu_node(cpu)
    }

    fn allowed_cpus(&self) -> CpuSet {
        self.inner.allowed_cpus()
    }

    fn possible_nodes(&self) -> NodeSet {
        self.inner.possible_nodes()
    }

    fn online_nodes(&self) -> NodeSet {
        self.inner.online_nodes()
    }

    fn node_cpus(&self, node: NodeId) -> CpuSet {
        self.inner.node_cpus(node)
    }

    fn node_mem_total_kb(&self, node: NodeId) -> Option<u64> {
        self.inner.node_mem_total_kb(node)
    }

    fn distance(&self, from: NodeId, to: NodeId) -> Option<u32> {
        self.inner.distance(from, to)
    }

    fn current_cpu(&self) -> CpuId {
        self.inner.current_cpu()
    }

    fn bind_current_thread(&self, cpu: CpuId) -> Result<()> {
        self.inner.bind_current_thread(cpu)
    }

    fn set_cpu_online(&self, cpu: CpuId, state: CpuState) -> Result<()> {
        self.inner.set_cpu_online(cpu, state)
    }

    fn sysfs_root(&self) -> Option<&Path> {
        Some(self.copy.path())
    }

    fn subscribe(&self) -> Option<crossbeam_channel::Receiver<OnlineChange>> {
        None
    }

    fn allowed_memory_nodes(&self) -> NodeSet {
        self.inner.allowed_memory_nodes()
    }

    fn diagnostics(&self) -> Vec<crate::Diagnostic> {
        self.inner.diagnostics()
    }
}

#[cfg(test)]
mod tests;
