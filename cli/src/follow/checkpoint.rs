//! The checkpoint file of `--follow`: per followed path, the files read there and the offset
//! below which every line is resolved (see `ledger`). Written whole, atomically (a temporary
//! file, synced, renamed over the old one), so a crash leaves the old or the new one.
//!
//! ```json
//! {"version":1,"stream":"logs","files":{"/var/log/app.log":[
//!   {"dev":2049,"inode":1835,"fingerprint":{"len":512,"md5":"..."},"offset":73412,"line":1022}]}}
//! ```
//!
//! After a restart each entry is looked for: at the path itself (same inode and first bytes: read
//! on from the offset), else in the path's directory (renamed by a rotation: read to its end from
//! the offset; or, after a copytruncate, a copy with the same first bytes).

use std::{
    collections::BTreeMap,
    fs::File,
    io::Write,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use serde::{Deserialize, Serialize};

use super::{
    identity::{FileId, Fingerprint},
    ledger::Entry,
};
use crate::error::CliError;

/// The format's version.
pub(crate) const VERSION: u32 = 1;

/// The whole checkpoint file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    pub(crate) version: u32,
    /// The stream the lines went to: a checkpoint is refused for another stream.
    pub(crate) stream: String,
    /// Per followed path (absolute), its files, oldest first.
    pub(crate) files: BTreeMap<String, Vec<Entry>>,
}

/// `.kinesis-follow-STREAM.json` in the directory of `first` (the stream's characters other than
/// letters, digits, `.`, `_` and `-` become `_`).
pub(crate) fn default_path(first: &Path, stream: &str) -> PathBuf {
    let name: String = stream
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    first
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!(".kinesis-follow-{name}.json"))
}

/// The checkpoint at `path` (empty if there is none), which must be for `stream`.
pub(crate) fn load(path: &Path, stream: &str) -> Result<Checkpoint, CliError> {
    let shown = path.display();
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Checkpoint {
                version: VERSION,
                stream: stream.to_owned(),
                files: BTreeMap::new(),
            });
        }
        Err(e) => return Err(CliError::io(&format!("reading the checkpoint {shown}"), &e)),
    };
    let checkpoint: Checkpoint = serde_json::from_slice(&text).map_err(|e| {
        CliError::Io(format!(
            "the checkpoint {shown} is not a checkpoint file ({e}); move it away to start over"
        ))
    })?;
    if checkpoint.version != VERSION {
        return Err(CliError::Io(format!(
            "the checkpoint {shown} has version {}; this kinesis reads version {VERSION}",
            checkpoint.version
        )));
    }
    if checkpoint.stream != stream {
        return Err(CliError::Usage(format!(
            "the checkpoint {shown} is for stream {}, not {stream}; give another --checkpoint",
            checkpoint.stream
        )));
    }
    Ok(checkpoint)
}

/// Writes `checkpoint` to `path` atomically: a temporary file next to it, synced, renamed over
/// it, and the directory synced.
pub(crate) fn save(path: &Path, checkpoint: &Checkpoint) -> std::io::Result<()> {
    static SAVES: AtomicU64 = AtomicU64::new(0);
    let json = serde_json::to_vec(checkpoint).map_err(std::io::Error::other)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        SAVES.fetch_add(1, Ordering::Relaxed)
    ));
    let temporary = dir.join(name);
    let written = (|| {
        let mut file = File::create(&temporary)?;
        file.write_all(&json)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written?;
    // The rename itself survives a power loss once the directory is synced.
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// A file looked at after a restart, for one checkpoint entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) id: FileId,
    pub(crate) size: u64,
    /// Whether it starts with the entry's fingerprinted bytes.
    pub(crate) head_matches: bool,
}

/// What a candidate is to a checkpoint entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// The entry's file itself (same inode and first bytes), perhaps renamed: read on from the
    /// offset.
    Itself,
    /// Another inode with the same first bytes and at least the offset's length: a copy made by
    /// copytruncate, whose original was truncated. Read the rest from it.
    Copy,
    /// Not the entry's file.
    No,
}

/// Whether `candidate` is the file of `entry`, or a copy of it. A file shorter than the offset
/// is neither (it was truncated). A copy is known by the entry's first bytes only, so an entry
/// without any (its file was empty) has none; an entry at offset 0 does (nothing of its file
/// was resolved: the whole copy is to be read).
pub(crate) fn judge(entry: &Entry, candidate: &Candidate) -> Found {
    if !candidate.head_matches || candidate.size < entry.offset {
        Found::No
    } else if candidate.id == entry.id {
        Found::Itself
    } else if entry.fingerprint.len > 0 {
        Found::Copy
    } else {
        Found::No
    }
}

/// Looks at `path` as a candidate for `entry`.
pub(crate) fn look(path: &Path, fingerprint: &Fingerprint) -> Option<(File, Candidate)> {
    let file = File::open(path).ok()?;
    let metadata = file.metadata().ok()?;
    if !metadata.is_file() {
        return None;
    }
    let head_matches = fingerprint.matches(&file).ok()?;
    let candidate = Candidate {
        id: FileId::of(&metadata),
        size: metadata.len(),
        head_matches,
    };
    Some((file, candidate))
}

/// Looks in `dir` for the file of `entry` (preferred) or a copy of it, skipping `skip`.
pub(crate) fn find(dir: &Path, entry: &Entry, skip: &[&Path]) -> Option<(PathBuf, File, Found)> {
    let mut copy = None;
    for dirent in std::fs::read_dir(dir).ok()?.flatten() {
        let path = dirent.path();
        if skip.contains(&path.as_path()) {
            continue;
        }
        let Some((file, candidate)) = look(&path, &entry.fingerprint) else {
            continue;
        };
        match judge(entry, &candidate) {
            Found::Itself => return Some((path, file, Found::Itself)),
            Found::Copy if copy.is_none() => copy = Some((path, file, Found::Copy)),
            _ => {}
        }
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: FileId = FileId { dev: 1, inode: 10 };
    const OTHER: FileId = FileId { dev: 1, inode: 11 };

    fn entry(offset: u64, head: &[u8]) -> Entry {
        Entry {
            id: ID,
            fingerprint: Fingerprint::of_bytes(head),
            offset,
            line: 0,
        }
    }

    fn candidate(id: FileId, size: u64, head_matches: bool) -> Candidate {
        Candidate {
            id,
            size,
            head_matches,
        }
    }

    #[test]
    fn what_a_file_is_to_a_checkpoint_entry() {
        let cases = [
            (entry(100, b"x"), candidate(ID, 100, true), Found::Itself),
            (entry(100, b"x"), candidate(ID, 5000, true), Found::Itself),
            // truncated while we were down: shorter, or other first bytes.
            (entry(100, b"x"), candidate(ID, 99, true), Found::No),
            (entry(100, b"x"), candidate(ID, 5000, false), Found::No),
            // the copy made by copytruncate.
            (entry(100, b"x"), candidate(OTHER, 100, true), Found::Copy),
            (entry(100, b"x"), candidate(OTHER, 99, true), Found::No),
            (entry(100, b"x"), candidate(OTHER, 100, false), Found::No),
            // nothing resolved yet: all of the copy is to be read.
            (entry(0, b"x"), candidate(OTHER, 100, true), Found::Copy),
            (entry(0, b"x"), candidate(OTHER, 100, false), Found::No),
            // without a fingerprint (an empty file), nothing tells a copy.
            (entry(100, b""), candidate(OTHER, 100, true), Found::No),
            (entry(0, b""), candidate(OTHER, 100, true), Found::No),
            (entry(0, b""), candidate(ID, 0, true), Found::Itself),
        ];
        for (entry, candidate, expected) in cases {
            assert_eq!(
                judge(&entry, &candidate),
                expected,
                "{entry:?} {candidate:?}"
            );
        }
    }

    #[test]
    fn default_names_and_atomic_saves() {
        assert_eq!(
            default_path(
                Path::new("/var/log/app.log"),
                "arn:aws:kinesis:x:1:stream/s"
            ),
            Path::new("/var/log/.kinesis-follow-arn_aws_kinesis_x_1_stream_s.json")
        );
        let dir = std::env::temp_dir().join(format!("kinesis-cp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cp.json");
        let empty = load(&path, "s").unwrap();
        assert!(empty.files.is_empty());
        let mut checkpoint = empty.clone();
        checkpoint
            .files
            .insert("/a.log".to_owned(), vec![entry(7, b"hello\n")]);
        save(&path, &checkpoint).unwrap();
        assert_eq!(load(&path, "s").unwrap(), checkpoint);
        assert_eq!(load(&path, "t").unwrap_err().exit_code(), 2);
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(load(&path, "s").unwrap_err().exit_code(), 6);
        // No temporary file is left behind.
        save(&path, &checkpoint).unwrap();
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
