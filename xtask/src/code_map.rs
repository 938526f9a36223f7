//! `cargo xtask code-map`: every Rust file of `crates/` and `xtask/` is named in its
//! crate's section of `docs/ARCHITECTURE.md`'s code map, so that the map cannot fall behind
//! the tree unnoticed.
//!
//! A file counts as named when its section quotes its path inside `src/` (`sysfs/read.rs`)
//! or inside the crate (`tests/it/quirks.rs`), or quotes its bare name where the section
//! also quotes its folder (`worker.rs` beside `torture/`).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Fails naming every file the code map leaves out.
pub(crate) fn check(root: &Path) -> Result<()> {
    let doc_path = root.join("docs/ARCHITECTURE.md");
    let doc = fs::read_to_string(&doc_path).with_context(|| format!("reading {}", doc_path.display()))?;
    let missing = missing_files(root, &doc)?;
    if !missing.is_empty() {
        bail!(
            "{} does not name {} file(s) in their crate's section: {}",
            doc_path.display(),
            missing.len(),
            missing.join(", ")
        );
    }
    Ok(())
}

/// The files of every crate (and xtask) that their section of `doc` does not name.
fn missing_files(root: &Path, doc: &str) -> Result<Vec<String>> {
    let mut crates: Vec<String> = Vec::new();
    for entry in fs::read_dir(root.join("crates")).context("listing crates/")? {
        let entry = entry?;
        if entry.path().is_dir() {
            crates.push(format!("crates/{}", entry.file_name().to_string_lossy()));
        }
    }
    crates.sort();
    crates.push("xtask".to_owned());
    let mut missing = Vec::new();
    for krate in &crates {
        let section = section(doc, krate).unwrap_or("");
        for file in rust_files(&root.join(krate))? {
            let relative = file.strip_prefix(root.join(krate)).expect("listed under the crate");
            if !names(section, krate, relative) {
                missing.push(format!("{krate}/{}", relative.display()));
            }
        }
    }
    Ok(missing)
}

/// The text of the code map section whose heading starts with `` ### `name` ``, up to the
/// next heading.
fn section<'a>(doc: &'a str, name: &str) -> Option<&'a str> {
    let heading = format!("### `{name}`");
    let start = doc.find(&heading)?;
    let body = &doc[start + heading.len()..];
    let end = body.find("\n### ").into_iter().chain(body.find("\n## ")).min().unwrap_or(body.len());
    Some(&body[..end])
}

/// Whether `section` names the file at `relative` (a path inside `krate`).
fn names(section: &str, krate: &str, relative: &Path) -> bool {
    let quoted = |text: &str| section.contains(&format!("`{text}`"));
    let relative_text = relative.to_string_lossy().replace('\\', "/");
    let in_src = relative_text.strip_prefix("src/").unwrap_or(&relative_text);
    if quoted(in_src) || quoted(&relative_text) || quoted(&format!("{krate}/{relative_text}")) {
        return true;
    }
    let Some((folder, file)) = in_src.rsplit_once('/') else { return false };
    let last_folder = folder.rsplit('/').next().unwrap_or(folder);
    quoted(file) && (quoted(&format!("{folder}/")) || quoted(&format!("{last_folder}/")))
}

/// Every `.rs` file under `dir`, `target/` folders left out.
fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in fs::read_dir(&folder).with_context(|| format!("listing {}", folder.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|name| name != "target") {
                    folders.push(path);
                }
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_code_map_names_every_file() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        check(root).unwrap();
    }

    #[test]
    fn a_file_is_named_by_its_path_or_by_its_name_beside_its_folder() {
        let section = "`lib.rs`, `sysfs/read.rs`, `tests/it/quirks.rs`; in `torture/`: `worker.rs`";
        let named = |path: &str| names(section, "crates/x", Path::new(path));
        assert!(named("src/lib.rs"));
        assert!(named("src/sysfs/read.rs"));
        assert!(named("tests/it/quirks.rs"));
        assert!(named("src/torture/worker.rs"));
        assert!(!named("src/sysfs/tests.rs"), "a bare name needs its folder quoted");
        assert!(!named("src/other/worker.rs"), "a bare name counts only beside its folder");
        assert!(!named("src/error.rs"));
    }

    #[test]
    fn a_section_ends_at_the_next_heading() {
        let doc = "### `crates/a`\n`one.rs`\n### `crates/b`\n`two.rs`\n## Cross-cutting\n`three.rs`";
        assert_eq!(section(doc, "crates/a"), Some("\n`one.rs`"));
        assert_eq!(section(doc, "crates/b"), Some("\n`two.rs`"));
        assert_eq!(section(doc, "crates/c"), None);
    }
}
