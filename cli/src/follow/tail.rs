//! The follower of one path: reads the file there as it grows, through rotations, and hands each
//! line to the producer and then, in order, to the path's collector. The decisions are
//! `rotation`'s and `checkpoint::judge`'s; this is the I/O around them.
//!
//! Each look: read on the oldest rotated file still open (to its end; it is finished once
//! `rotation::rotated_done` says so), else the current file; then stat the path and act on
//! `rotation::change`. Lines of a rotated file all go before the next file's.

use std::{
    collections::VecDeque,
    fs::File,
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    time::Instant,
};

use tokio::sync::mpsc::UnboundedSender;

use super::{
    Say,
    checkpoint::{self, Candidate, Found},
    identity::{FileId, Fingerprint},
    ledger::{Entry, Key},
    rotation::{self, Change, Reading, Seen},
};
use crate::{
    error::CliError,
    produce::{
        READ_CHUNK, StartAt, Submitted, Submitter,
        lines::{Line, Splitter},
    },
};

/// How often the path is looked at while nothing is read.
pub(crate) const POLL: std::time::Duration = std::time::Duration::from_millis(100);
/// Chunks read from one file before the path is looked at again.
const CHUNKS_PER_TURN: usize = 16;

/// What the follower tells its collector, in order.
#[derive(Debug)]
pub(crate) enum Event {
    /// Reading of a file starts at `entry.offset`.
    Started {
        key: Key,
        entry: Entry,
        name: String,
    },
    /// The file's fingerprint grew.
    Fingerprint { key: Key, fingerprint: Fingerprint },
    /// A line was put (or failed at once); it ends at `end`.
    Line {
        key: Key,
        number: u64,
        end: u64,
        submitted: Submitted,
    },
    /// The file is read to its end and will not be read again.
    Finished { key: Key },
}

/// A file being read.
#[derive(Debug)]
struct Tracked {
    key: Key,
    /// How its lines are reported.
    name: String,
    file: File,
    id: FileId,
    fingerprint: Fingerprint,
    splitter: Splitter,
    /// Its size at the last look.
    size: u64,
    /// Since when it has been read to its end without growing (rotated files).
    idle_since: Option<Instant>,
    /// A copy left by copytruncate: it does not grow.
    copy: bool,
}

/// Follows one path.
#[derive(Debug)]
pub(crate) struct Follower {
    path: PathBuf,
    name: String,
    /// Files of the directory never taken for a rotated file (the checkpoint).
    skip: Vec<PathBuf>,
    submitter: Submitter,
    tx: UnboundedSender<Event>,
    say: Say,
    start_at: StartAt,
    next_key: Key,
    current: Option<Tracked>,
    rotated: VecDeque<Tracked>,
    said_absent: bool,
    buf: Vec<u8>,
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

impl Follower {
    pub(crate) fn new(
        path: PathBuf,
        checkpoint: PathBuf,
        submitter: Submitter,
        tx: UnboundedSender<Event>,
        say: Say,
        start_at: StartAt,
    ) -> Follower {
        Follower {
            name: path.display().to_string(),
            path,
            skip: vec![checkpoint],
            submitter,
            tx,
            say,
            start_at,
            next_key: 0,
            current: None,
            rotated: VecDeque::new(),
            said_absent: false,
            buf: vec![0; READ_CHUNK],
        }
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Follows the path until the task is aborted, resuming from `saved` (the checkpoint's
    /// entries for it). Fails only on an I/O error other than the file missing.
    pub(crate) async fn run(mut self, saved: Vec<Entry>) -> Result<(), CliError> {
        blocking(|| self.resume(&saved))?;
        loop {
            self.look().await?;
            let progressed = self.turn().await?;
            if progressed {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(POLL).await;
            }
        }
    }

    /// Reads the oldest rotated file, else the current one; true if anything was read or
    /// finished.
    async fn turn(&mut self) -> Result<bool, CliError> {
        if let Some(mut old) = self.rotated.pop_front() {
            let read = self.read(&mut old).await?;
            if read > 0 {
                old.idle_since = None;
                self.rotated.push_front(old);
                return Ok(true);
            }
            let idle = old.idle_since.get_or_insert_with(Instant::now).elapsed();
            let successor = self.current.as_ref().is_some_and(|c| c.size > 0);
            if rotation::rotated_done(old.copy, successor, idle) {
                // The writer has moved on: what it wrote last is read before the file is closed.
                while self.read(&mut old).await? > 0 {}
                self.finish(old, true).await?;
                return Ok(true);
            }
            self.rotated.push_front(old);
            return Ok(false);
        }
        match self.current.take() {
            Some(mut current) => {
                let result = self.read(&mut current).await;
                self.current = Some(current);
                Ok(result? > 0)
            }
            None => Ok(false),
        }
    }

    /// Reads up to [`CHUNKS_PER_TURN`] chunks of `tracked`, putting its whole lines; returns the
    /// bytes read.
    ///
    /// Each chunk is kept only if the file still starts with its fingerprinted bytes after it was
    /// read: a file truncated and written again since the last look (copytruncate) would
    /// otherwise be read on from the old offset, in the middle of its new content. Such a chunk
    /// is dropped and the look that follows finds the truncation.
    async fn read(&mut self, tracked: &mut Tracked) -> Result<u64, CliError> {
        let mut total = 0;
        let mut lines = Vec::new();
        let io = |e: std::io::Error| CliError::io(&format!("reading {}", tracked.name), &e);
        for _ in 0..CHUNKS_PER_TURN {
            let buf = &mut self.buf;
            let file = &mut tracked.file;
            let n = blocking(|| read_retrying(file, buf)).map_err(io)?;
            if n == 0 {
                break;
            }
            let fingerprint = &tracked.fingerprint;
            let file = &tracked.file;
            let Some(fingerprint) = blocking(|| fingerprint.grown(file)).map_err(io)? else {
                let offset = tracked.splitter.offset();
                tracked.file.seek(SeekFrom::Start(offset)).map_err(io)?;
                break;
            };
            if fingerprint != tracked.fingerprint {
                tracked.fingerprint = fingerprint;
                self.send(Event::Fingerprint {
                    key: tracked.key,
                    fingerprint,
                })?;
            }
            total += n as u64;
            tracked
                .splitter
                .feed(&self.buf[..n], &mut |line| lines.push(line));
            for line in lines.drain(..) {
                self.put(tracked.key, line).await?;
            }
        }
        tracked.size = tracked.size.max(tracked.splitter.offset());
        Ok(total)
    }

    async fn put(&mut self, key: Key, line: Line) -> Result<(), CliError> {
        let submitted = self.submitter.submit(line.content).await;
        self.send(Event::Line {
            key,
            number: line.number,
            end: line.end,
            submitted,
        })
    }

    fn send(&self, event: Event) -> Result<(), CliError> {
        self.tx
            .send(event)
            .map_err(|_| CliError::Io(format!("the collector of {} stopped", self.name)))
    }

    /// A file is done: its unterminated last line is put if `partial` (a rotated file will not
    /// be completed), and it leaves the checkpoint once its lines are resolved.
    async fn finish(&mut self, mut tracked: Tracked, partial: bool) -> Result<(), CliError> {
        if let Some(line) = tracked.splitter.finish() {
            if partial {
                self.put(tracked.key, line).await?;
            } else {
                self.say.warn(format!(
                    "{}: an unterminated line of {} bytes at line {} is dropped with the \
                     truncated file",
                    tracked.name,
                    tracked.splitter.offset() - tracked.splitter.line_start(),
                    tracked.splitter.next_number()
                ));
            }
        }
        self.send(Event::Finished { key: tracked.key })
    }

    /// Stats the path and acts on what changed.
    async fn look(&mut self) -> Result<(), CliError> {
        let seen = blocking(|| self.seen())?;
        if let (Some(current), Some(seen)) = (self.current.as_mut(), seen)
            && current.id == seen.id
        {
            current.size = seen.size;
        }
        let reading = self.current.as_ref().map(|c| Reading {
            id: c.id,
            read: c.splitter.offset(),
        });
        match rotation::change(reading, seen) {
            Change::Same | Change::Grown => {}
            Change::Absent => {
                if !self.said_absent {
                    self.say
                        .warn(format!("waiting for {} to appear", self.name));
                    self.said_absent = true;
                }
            }
            Change::Appeared => {
                self.said_absent = false;
                blocking(|| self.open_current(0))?;
            }
            Change::Vanished => {
                self.rotated.extend(self.current.take());
            }
            Change::Replaced => {
                self.rotated.extend(self.current.take());
                blocking(|| self.open_current(0))?;
            }
            Change::Truncated => self.truncated().await?,
        }
        Ok(())
    }

    /// What a stat of the path finds, its first bytes compared with the current file's.
    fn seen(&self) -> Result<Option<Seen>, CliError> {
        let metadata = match std::fs::metadata(&self.path) {
            Ok(metadata) if metadata.is_file() => metadata,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CliError::io(&format!("looking at {}", self.name), &e)),
        };
        let id = FileId::of(&metadata);
        let head_matches = match &self.current {
            Some(current) if current.id == id => current
                .fingerprint
                .matches(&current.file)
                .map_err(|e| CliError::io(&format!("reading {}", self.name), &e))?,
            _ => true,
        };
        Ok(Some(Seen {
            id,
            size: metadata.len(),
            head_matches,
        }))
    }

    /// copytruncate: what was not read yet is read from the copy, if one is found; the path's
    /// file is read again from 0.
    async fn truncated(&mut self) -> Result<(), CliError> {
        let Some(mut old) = self.current.take() else {
            return Ok(());
        };
        let read = old.splitter.offset();
        let entry = Entry {
            id: old.id,
            fingerprint: old.fingerprint,
            offset: read,
            line: 0,
        };
        let mut skip: Vec<&Path> = self.skip.iter().map(PathBuf::as_path).collect();
        skip.push(&self.path);
        let copy = blocking(|| match checkpoint::find(self.dir(), &entry, &skip) {
            Some((path, mut file, Found::Copy)) => {
                file.seek(SeekFrom::Start(read)).ok()?;
                Some((path, file))
            }
            _ => None,
        });
        match copy {
            Some((path, file)) => {
                self.say.warn(format!(
                    "{} was truncated (copytruncate); reading the rest from its copy {}",
                    self.name,
                    path.display()
                ));
                old.size = file.metadata().map(|m| m.len()).unwrap_or(read);
                old.file = file;
                old.copy = true;
                old.idle_since = None;
                self.rotated.push_back(old);
            }
            None => {
                if old.size > read {
                    self.say.warn(format!(
                        "{} was truncated before {} bytes of it were read, and no copy of it \
                         was found: they are lost",
                        self.name,
                        old.size - read
                    ));
                }
                self.finish(old, false).await?;
            }
        }
        blocking(|| self.open_current(0))
    }

    /// Opens the file at the path as the current one, reading from `offset`.
    fn open_current(&mut self, offset: u64) -> Result<(), CliError> {
        let file = match File::open(&self.path) {
            Ok(file) => file,
            // Gone again since the stat: the next look sees it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(CliError::io(&format!("opening {}", self.name), &e)),
        };
        let tracked = self.track(file, self.name.clone(), offset, 0, None, false)?;
        self.current = Some(tracked);
        Ok(())
    }

    /// Starts reading `file` at `offset` (whose last line before it is number `line`), with the
    /// fingerprint the checkpoint gave, or its own.
    fn track(
        &mut self,
        mut file: File,
        name: String,
        offset: u64,
        line: u64,
        fingerprint: Option<Fingerprint>,
        copy: bool,
    ) -> Result<Tracked, CliError> {
        let io = |e: std::io::Error| CliError::io(&format!("opening {name}"), &e);
        let metadata = file.metadata().map_err(io)?;
        let fingerprint = match fingerprint {
            Some(fingerprint) => fingerprint,
            None => Fingerprint::read(&file).map_err(io)?,
        };
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        let key = self.next_key;
        self.next_key += 1;
        let id = FileId::of(&metadata);
        self.send(Event::Started {
            key,
            entry: Entry {
                id,
                fingerprint,
                offset,
                line,
            },
            name: name.clone(),
        })?;
        Ok(Tracked {
            key,
            name,
            file,
            id,
            fingerprint,
            splitter: Splitter::new(self.submitter.max_line(), offset, line + 1),
            size: metadata.len(),
            idle_since: None,
            copy,
        })
    }

    /// After a restart: each file of the checkpoint is found again (at the path, or rotated in
    /// its directory) and read on from its offset; a file at the path the checkpoint does not
    /// know is read from the start (or from its end, with `--start-at end` and no checkpoint).
    fn resume(&mut self, saved: &[Entry]) -> Result<(), CliError> {
        let at_path = match File::open(&self.path) {
            Ok(file) => Some(file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(CliError::io(&format!("opening {}", self.name), &e)),
        };
        for entry in saved {
            if self.current.is_some() {
                break;
            }
            if let Some(file) = &at_path
                && let Some(candidate) = candidate(file, &entry.fingerprint)
                && checkpoint::judge(entry, &candidate) == Found::Itself
            {
                let file = file
                    .try_clone()
                    .map_err(|e| CliError::io(&format!("opening {}", self.name), &e))?;
                let name = self.name.clone();
                let tracked = self.track(
                    file,
                    name,
                    entry.offset,
                    entry.line,
                    Some(entry.fingerprint),
                    false,
                )?;
                self.current = Some(tracked);
                continue;
            }
            let mut skip: Vec<&Path> = self.skip.iter().map(PathBuf::as_path).collect();
            skip.push(&self.path);
            match checkpoint::find(self.dir(), entry, &skip) {
                Some((path, file, found)) => {
                    let copy = found == Found::Copy;
                    self.say.warn(format!(
                        "{}: resuming at byte {} in {} ({})",
                        self.name,
                        entry.offset,
                        path.display(),
                        if copy {
                            "its copy after a copytruncate"
                        } else {
                            "rotated"
                        }
                    ));
                    let tracked = self.track(
                        file,
                        path.display().to_string(),
                        entry.offset,
                        entry.line,
                        Some(entry.fingerprint),
                        copy,
                    )?;
                    self.rotated.push_back(tracked);
                }
                None => self.say.warn(format!(
                    "{}: the file the checkpoint names (inode {}, read to byte {}) is gone; \
                     lines written to it after that byte, if any, were not sent",
                    self.name, entry.id.inode, entry.offset
                )),
            }
        }
        if self.current.is_none()
            && let Some(file) = at_path
        {
            let offset = if saved.is_empty() && self.start_at == StartAt::End {
                last_line_end(&file, self.submitter.max_line())
                    .map_err(|e| CliError::io(&format!("reading {}", self.name), &e))?
            } else {
                0
            };
            let name = self.name.clone();
            let tracked = self.track(file, name, offset, 0, None, false)?;
            self.current = Some(tracked);
        }
        Ok(())
    }
}

/// `file` as a candidate for a checkpoint entry with `fingerprint`.
fn candidate(file: &File, fingerprint: &Fingerprint) -> Option<Candidate> {
    let metadata = file.metadata().ok()?;
    Some(Candidate {
        id: FileId::of(&metadata),
        size: metadata.len(),
        head_matches: fingerprint.matches(file).ok()?,
    })
}

fn read_retrying(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            result => return result,
        }
    }
}

/// The offset after the last `\n` of `file` (0 if it has none). Only the last `max + 2` bytes
/// are looked at: a last line longer than that cannot be a record, and starting inside it makes
/// it fail as too long rather than be sent cut.
fn last_line_end(file: &File, max: usize) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let size = file.metadata()?.len();
    let floor = size.saturating_sub(max as u64 + 2);
    let mut end = size;
    let mut buf = vec![0; READ_CHUNK];
    while end > floor {
        let start = end.saturating_sub(READ_CHUNK as u64).max(floor);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(at) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + at as u64 + 1);
        }
        end = start;
    }
    Ok(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_the_last_line() {
        let dir = std::env::temp_dir().join(format!("kinesis-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let cases: [(&[u8], u64); 5] = [
            (b"", 0),
            (b"abc", 0),
            (b"a\nb\n", 4),
            (b"a\nbcd", 2),
            // The last 12 bytes (max 10 + 2) hold no newline: start 12 bytes from the end.
            (b"a\nbbbbbbbbbbbbbbbbbbbb", 10),
        ];
        for (content, expected) in cases {
            std::fs::write(&path, content).unwrap();
            let file = File::open(&path).unwrap();
            assert_eq!(last_line_end(&file, 10).unwrap(), expected, "{content:?}");
        }
        let mut big = vec![b'x'; 200_000];
        big[5] = b'\n';
        std::fs::write(&path, &big).unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(last_line_end(&file, 1_000_000).unwrap(), 6);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
