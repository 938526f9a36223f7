//! Reading one sysfs or procfs file, with errors that name the file and its text.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::idset::trim_kernel_text;
use crate::{Error, IdSet, ParseError, Result};

/// No topology file is anywhere near this large; a bigger one is not what we expect (a
/// device node or a runaway capture) and is refused rather than read into memory.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// How much of an offending text an error quotes.
const EXCERPT_CHARS: usize = 160;

/// The first [`EXCERPT_CHARS`] characters of `text`, for an error message.
pub(crate) fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A malformed-file error.
pub(crate) fn malformed(path: &Path, what: &'static str, text: &str, reason: impl Into<String>) -> Error {
    Error::Malformed { path: path.to_path_buf(), what, text: excerpt(text), reason: reason.into() }
}

/// Wraps an id-set parse error with the file it came from.
pub(crate) fn parse_error(path: &Path, what: &'static str, error: ParseError) -> Error {
    malformed(path, what, &error.text, error.reason)
}

/// Refuses the id-set file at `path`, which holds `file`, when `outside` (ids that must
/// not be there, or that it misses) is not empty; `reason` says what is wrong with the
/// smallest of them.
pub(crate) fn refuse_outside(
    path: &Path,
    what: &'static str,
    file: &IdSet,
    outside: IdSet,
    reason: impl FnOnce(u32) -> String,
) -> Result<()> {
    match outside.first() {
        Some(id) => Err(malformed(path, what, &file.to_string(), reason(id))),
        None => Ok(()),
    }
}

/// Opens a sysfs or procfs attribute for reading, refusing anything but a regular file.
///
/// Attributes are regular files. A FIFO in their place (a damaged capture, a test's
/// tree) would block `open` until some writer came, and a device such as `/dev/zero`
/// would never end, so the type is checked before the file is opened (opening a device
/// can have effects of its own) and again on the open descriptor (a rename in between),
/// which is opened with `O_NONBLOCK` (which regular files ignore) and `O_NOCTTY`: a
/// reader, or a watcher's poll, never blocks on one. A missing file is
/// [`io::ErrorKind::NotFound`]; another type is [`io::ErrorKind::InvalidInput`], naming
/// the type. Bound what is read from the file as well ([`Read::take`]).
pub fn open_attribute(path: &Path) -> io::Result<File> {
    regular(std::fs::metadata(path)?.file_type())?;
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path)?;
    regular(file.metadata()?.file_type())?;
    Ok(file)
}

/// `Ok` for a regular file; otherwise an [`io::ErrorKind::InvalidInput`] naming the type.
fn regular(kind: std::fs::FileType) -> io::Result<()> {
    let other = if kind.is_file() {
        return Ok(());
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    };
    Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{other}, not a regular file")))
}

/// Reads a text file: `Ok(None)` if it does not exist, [`Error::Io`] if it cannot be read
/// or is not a regular file ([`open_attribute`]), [`Error::Malformed`] if it is not UTF-8
/// text or is absurdly large.
pub(crate) fn text(path: &Path, what: &'static str) -> Result<Option<String>> {
    let io_error = |source: io::Error| Error::Io { path: path.to_path_buf(), source };
    let file = match open_attribute(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(error)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(io_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        let head = String::from_utf8_lossy(&bytes[..EXCERPT_CHARS.min(bytes.len())]).into_owned();
        return Err(malformed(path, what, &head, format!("file is larger than {MAX_FILE_BYTES} bytes")));
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Some(text)),
        Err(error) => {
            let at = error.utf8_error().valid_up_to();
            let lossy = String::from_utf8_lossy(error.as_bytes()).into_owned();
            Err(malformed(path, what, &lossy, format!("not text: invalid UTF-8 at byte {at}")))
        }
    }
}

/// Reads a text file that must exist: a missing file is [`Error::Io`] (not found).
pub(crate) fn required_text(path: &Path, what: &'static str) -> Result<String> {
    text(path, what)?.ok_or_else(|| Error::Io {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::NotFound, format!("the {what} file is missing")),
    })
}

/// Reads an id list file (`0-3,8`), `Ok(None)` if absent.
pub(crate) fn list(path: &Path, what: &'static str, limit: u32) -> Result<Option<IdSet>> {
    text(path, what)?
        .map(|text| IdSet::parse_list(&text, limit).map_err(|error| parse_error(path, what, error)))
        .transpose()
}

/// Reads a hex mask file (`ff,ffffffff`), `Ok(None)` if absent.
pub(crate) fn mask(path: &Path, what: &'static str, limit: u32) -> Result<Option<IdSet>> {
    text(path, what)?
        .map(|text| IdSet::parse_mask(&text, limit).map_err(|error| parse_error(path, what, error)))
        .transpose()
}

/// Reads a decimal number file such as `cpu/kernel_max`, `Ok(None)` if absent.
pub(crate) fn number(path: &Path, what: &'static str) -> Result<Option<u64>> {
    let Some(text) = text(path, what)? else { return Ok(None) };
    let body = trim_kernel_text(&text);
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(path, what, &text, "expected a decimal number"));
    }
    body.parse().map(Some).map_err(|_| malformed(path, what, &text, "number out of range"))
}

/// Lists the ids of the entries of `dir` named `prefix` followed by digits (`cpu12`,
/// `node3`), refusing ids at or beyond `limit`. Other entries (`cpufreq`) are skipped.
pub(crate) fn numbered_entries(dir: &Path, prefix: &str, limit: u32, what: &'static str) -> Result<IdSet> {
    let io_error = |source: io::Error| Error::Io { path: dir.to_path_buf(), source };
    let mut ids = IdSet::new();
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(digits) = name.strip_prefix(prefix) else { continue };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        match digits.parse::<u64>() {
            Ok(id) if id < u64::from(limit) => {
                ids.insert(id as u32);
            }
            _ => {
                return Err(malformed(
                    &entry.path(),
                    what,
                    name,
                    format!("id {digits} is beyond the limit of {limit} ids"),
                ))
            }
        }
    }
    Ok(ids)
}
