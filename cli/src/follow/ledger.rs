//! What the checkpoint says of one followed path: for each file read at that path (the current
//! one, and rotated ones still being read or awaiting receipts), the offset below which every
//! line is resolved. Pure: events in, checkpoint entries out.
//!
//! The collector feeds it in line order, each line once its receipt resolved, so the offset of
//! a file is the end of its last resolved line and every line below it is resolved: delivered,
//! or failed for good and reported. A line in flight is never below it; a restart reads again
//! from the offset, so a line is lost only if it failed (and was reported), and a line is sent
//! twice only if its receipt resolved after the last checkpoint was written.

use serde::{Deserialize, Serialize};

use super::identity::{FileId, Fingerprint};

/// A file read at the path, numbered by the follower in the order it started reading them.
pub(crate) type Key = u64;

/// One file in the checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    #[serde(flatten)]
    pub(crate) id: FileId,
    pub(crate) fingerprint: Fingerprint,
    /// Every line below this byte offset is resolved.
    pub(crate) offset: u64,
    /// The number of the last line below `offset` (0 before the first).
    pub(crate) line: u64,
}

/// The files of one path, oldest first.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Ledger {
    files: Vec<(Key, Entry)>,
}

impl Ledger {
    /// The follower started reading a file at `entry.offset` (0, or where a checkpoint said).
    pub(crate) fn started(&mut self, key: Key, entry: Entry) {
        self.files.push((key, entry));
    }

    /// The file's fingerprint grew with the file (it covers up to its first 512 bytes).
    pub(crate) fn fingerprint(&mut self, key: Key, fingerprint: Fingerprint) {
        if let Some(entry) = self.entry(key) {
            entry.fingerprint = fingerprint;
        }
    }

    /// Line `line`, ending at `end`, is resolved, and so is every line before it.
    pub(crate) fn resolved(&mut self, key: Key, end: u64, line: u64) {
        if let Some(entry) = self.entry(key)
            && end > entry.offset
        {
            entry.offset = end;
            entry.line = line;
        }
    }

    /// Every line of the file is resolved and it will not be read again (a rotated file read to
    /// its end, or one truncated with no copy found): it leaves the checkpoint.
    pub(crate) fn finished(&mut self, key: Key) {
        self.files.retain(|(k, _)| *k != key);
    }

    /// The checkpoint's entries for the path, oldest first.
    pub(crate) fn entries(&self) -> Vec<Entry> {
        self.files.iter().map(|(_, entry)| *entry).collect()
    }

    fn entry(&mut self, key: Key) -> Option<&mut Entry> {
        self.files
            .iter_mut()
            .find(|(k, _)| *k == key)
            .map(|(_, entry)| entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: FileId = FileId { dev: 1, inode: 10 };
    const NEW: FileId = FileId { dev: 1, inode: 11 };

    fn entry(id: FileId, head: &[u8], offset: u64, line: u64) -> Entry {
        Entry {
            id,
            fingerprint: Fingerprint::of_bytes(head),
            offset,
            line,
        }
    }

    enum Event {
        Started(Key, Entry),
        Fingerprint(Key, &'static [u8]),
        Resolved(Key, u64, u64),
        Finished(Key),
    }

    fn replay(events: &[Event]) -> Vec<Entry> {
        let mut ledger = Ledger::default();
        for event in events {
            match event {
                Event::Started(key, entry) => ledger.started(*key, *entry),
                Event::Fingerprint(key, head) => {
                    ledger.fingerprint(*key, Fingerprint::of_bytes(head))
                }
                Event::Resolved(key, end, line) => ledger.resolved(*key, *end, *line),
                Event::Finished(key) => ledger.finished(*key),
            }
        }
        ledger.entries()
    }

    #[test]
    fn the_checkpoint_after_each_story() {
        use Event::*;
        let cases: Vec<(&str, Vec<Event>, Vec<Entry>)> = vec![
            (
                "nothing resolved yet",
                vec![Started(0, entry(OLD, b"", 0, 0))],
                vec![entry(OLD, b"", 0, 0)],
            ),
            (
                "lines resolved move the offset to their end",
                vec![
                    Started(0, entry(OLD, b"", 0, 0)),
                    Fingerprint(0, b"a\nbb\n"),
                    Resolved(0, 2, 1),
                    Resolved(0, 5, 2),
                ],
                vec![entry(OLD, b"a\nbb\n", 5, 2)],
            ),
            (
                "resumed from a checkpoint, never below it",
                vec![
                    Started(0, entry(OLD, b"a\nbb\n", 5, 2)),
                    Resolved(0, 3, 2),
                    Resolved(0, 9, 3),
                ],
                vec![entry(OLD, b"a\nbb\n", 9, 3)],
            ),
            (
                "rename and create: the old file stays until it is finished",
                vec![
                    Started(0, entry(OLD, b"a\n", 0, 0)),
                    Resolved(0, 2, 1),
                    Started(1, entry(NEW, b"", 0, 0)),
                ],
                vec![entry(OLD, b"a\n", 2, 1), entry(NEW, b"", 0, 0)],
            ),
            (
                "rename and create: the old file finished",
                vec![
                    Started(0, entry(OLD, b"a\n", 0, 0)),
                    Resolved(0, 2, 1),
                    Started(1, entry(NEW, b"", 0, 0)),
                    Finished(0),
                    Fingerprint(1, b"x\n"),
                    Resolved(1, 2, 1),
                ],
                vec![entry(NEW, b"x\n", 2, 1)],
            ),
            (
                "copytruncate: same inode, another fingerprint, both kept",
                vec![
                    Started(0, entry(OLD, b"a\n", 0, 0)),
                    Resolved(0, 2, 1),
                    Started(1, entry(OLD, b"", 0, 0)),
                    Fingerprint(1, b"z\n"),
                ],
                vec![entry(OLD, b"a\n", 2, 1), entry(OLD, b"z\n", 0, 0)],
            ),
            (
                "events for a finished file change nothing",
                vec![
                    Started(0, entry(OLD, b"a\n", 0, 0)),
                    Finished(0),
                    Resolved(0, 2, 1),
                    Fingerprint(0, b"q"),
                ],
                vec![],
            ),
        ];
        for (story, events, expected) in cases {
            assert_eq!(replay(&events), expected, "{story}");
        }
    }

    #[test]
    fn entries_read_as_json() {
        let json = serde_json::to_string(&entry(OLD, b"hello\n", 6, 1)).unwrap();
        assert_eq!(
            json,
            r#"{"dev":1,"inode":10,"fingerprint":{"len":6,"md5":"b1946ac92492d2347c6235b4d2611184"},"offset":6,"line":1}"#
        );
        assert_eq!(
            serde_json::from_str::<Entry>(&json).unwrap(),
            entry(OLD, b"hello\n", 6, 1)
        );
    }
}
