//! What a look at a followed path means, and when a rotated file is finished. Pure: the
//! follower (`follow::tail`) stats and reads, these functions decide.
//!
//! The rotations handled (as the Kinesis Agent's `SourceFileTracker`, plus a fingerprint of the
//! first bytes it lacks):
//!
//! - **rename and create** (logrotate's default): the path holds another file. The old one is
//!   read on by its open handle to its end, then the new one from byte 0;
//! - **copytruncate**: the same file is shorter than what was read, or its first bytes changed
//!   (truncated and written again between two looks). It is read again from byte 0; what had not
//!   been read yet is looked for in the copy (a file of the directory with the old first bytes);
//! - **the path removed** (renamed, not yet created again): the old file is read on by its handle.

use std::time::Duration;

use super::identity::FileId;

/// How long a rotated file is read on after it stops growing, when no new file has data yet
/// (the writer may still append to the old file until it reopens the path).
pub(crate) const ROTATED_IDLE: Duration = Duration::from_secs(5);

/// The file the follower reads at the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reading {
    pub(crate) id: FileId,
    /// Bytes read from it (a partial last line included).
    pub(crate) read: u64,
}

/// What a look at the path found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) id: FileId,
    pub(crate) size: u64,
    /// Whether its first bytes are those of the file read (only looked at when `id` is the
    /// read file's).
    pub(crate) head_matches: bool,
}

/// What changed at the path since the last look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// Nothing to do: the same file, no longer than what was read.
    Same,
    /// The same file, grown: read on.
    Grown,
    /// The same file, shorter than what was read or with other first bytes: truncated in place
    /// (copytruncate). Look for the copy of what was not read, then read it again from 0.
    Truncated,
    /// Another file is at the path (rename and create): read the open one to its end by its
    /// handle, then the new one from 0.
    Replaced,
    /// Nothing at the path any more (renamed or removed): read on the open one by its handle.
    Vanished,
    /// A file is at the path where there was none: read it from 0.
    Appeared,
    /// Still nothing at the path.
    Absent,
}

/// What the path's look means, given the file being read.
pub(crate) fn change(reading: Option<Reading>, seen: Option<Seen>) -> Change {
    match (reading, seen) {
        (None, None) => Change::Absent,
        (None, Some(_)) => Change::Appeared,
        (Some(_), None) => Change::Vanished,
        (Some(reading), Some(seen)) if seen.id != reading.id => Change::Replaced,
        (Some(reading), Some(seen)) if seen.size < reading.read || !seen.head_matches => {
            Change::Truncated
        }
        (Some(reading), Some(seen)) if seen.size > reading.read => Change::Grown,
        (Some(_), Some(_)) => Change::Same,
    }
}

/// Whether a rotated file, read to its end, is finished: it is a copy (it does not grow), or
/// the new file at the path has data (the writer moved over), or it has not grown for
/// [`ROTATED_IDLE`].
pub(crate) fn rotated_done(copy: bool, successor_has_data: bool, idle: Duration) -> bool {
    copy || successor_has_data || idle >= ROTATED_IDLE
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: FileId = FileId { dev: 1, inode: 10 };
    const B: FileId = FileId { dev: 1, inode: 11 };

    fn reading(read: u64) -> Option<Reading> {
        Some(Reading { id: A, read })
    }

    fn seen(id: FileId, size: u64, head_matches: bool) -> Option<Seen> {
        Some(Seen {
            id,
            size,
            head_matches,
        })
    }

    #[test]
    fn what_a_look_at_the_path_means() {
        let cases = [
            (None, None, Change::Absent),
            (None, seen(A, 0, true), Change::Appeared),
            (reading(100), None, Change::Vanished),
            (reading(100), seen(A, 100, true), Change::Same),
            (reading(100), seen(A, 150, true), Change::Grown),
            // copytruncate: shorter than what was read...
            (reading(100), seen(A, 0, true), Change::Truncated),
            (reading(100), seen(A, 99, true), Change::Truncated),
            // ...or refilled past it between two looks, with other first bytes.
            (reading(100), seen(A, 100, false), Change::Truncated),
            (reading(100), seen(A, 5000, false), Change::Truncated),
            // rename and create, whatever the sizes.
            (reading(100), seen(B, 0, true), Change::Replaced),
            (reading(100), seen(B, 5000, false), Change::Replaced),
            (reading(0), seen(B, 0, true), Change::Replaced),
            (reading(0), seen(A, 0, true), Change::Same),
        ];
        for (reading, seen, expected) in cases {
            assert_eq!(change(reading, seen), expected, "{reading:?} {seen:?}");
        }
    }

    #[test]
    fn when_a_rotated_file_is_finished() {
        let second = Duration::from_secs(1);
        let cases = [
            (true, false, Duration::ZERO, true),
            (false, true, Duration::ZERO, true),
            (false, false, second, false),
            (false, false, ROTATED_IDLE - second, false),
            (false, false, ROTATED_IDLE, true),
        ];
        for (copy, successor, idle, done) in cases {
            assert_eq!(
                rotated_done(copy, successor, idle),
                done,
                "{copy} {successor} {idle:?}"
            );
        }
    }
}
