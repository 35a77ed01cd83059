//! How a followed file is recognised: its device and inode, and a fingerprint of its first
//! bytes (an inode is reused once its file is deleted, and `copytruncate` keeps the inode while
//! the content starts over).

use std::{fs::File, os::unix::fs::FileExt};

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

/// Bytes of a file's start that make its fingerprint.
pub(crate) const FINGERPRINT_BYTES: usize = 512;

/// A file's identity on this machine: device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct FileId {
    pub(crate) dev: u64,
    pub(crate) inode: u64,
}

impl FileId {
    pub(crate) fn of(metadata: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: metadata.dev(),
            inode: metadata.ino(),
        }
    }
}

/// The MD5 of a file's first `len` bytes (`len` up to [`FINGERPRINT_BYTES`]: a file shorter
/// than that has a fingerprint of what it holds, taken again as it grows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FingerprintText", into = "FingerprintText")]
pub(crate) struct Fingerprint {
    pub(crate) len: usize,
    pub(crate) md5: [u8; 16],
}

impl Fingerprint {
    /// The fingerprint of `head`, a file's first bytes (at most [`FINGERPRINT_BYTES`] count).
    pub(crate) fn of_bytes(head: &[u8]) -> Fingerprint {
        let head = &head[..head.len().min(FINGERPRINT_BYTES)];
        Fingerprint {
            len: head.len(),
            md5: Md5::digest(head).into(),
        }
    }

    /// The fingerprint of `file`'s first bytes, as it is now.
    pub(crate) fn read(file: &File) -> std::io::Result<Fingerprint> {
        let head = read_head(file, FINGERPRINT_BYTES)?;
        Ok(Fingerprint::of_bytes(&head))
    }

    /// Whether `file` starts with the bytes this fingerprint was taken of.
    pub(crate) fn matches(&self, file: &File) -> std::io::Result<bool> {
        let head = read_head(file, self.len)?;
        Ok(head.len() == self.len && Fingerprint::of_bytes(&head) == *self)
    }

    /// `file`'s fingerprint now, if the file still starts with the bytes this one was taken
    /// of; `None` if it does not (it was truncated, and perhaps written again).
    pub(crate) fn grown(&self, file: &File) -> std::io::Result<Option<Fingerprint>> {
        let head = read_head(file, FINGERPRINT_BYTES)?;
        if head.len() < self.len || Fingerprint::of_bytes(&head[..self.len]) != *self {
            return Ok(None);
        }
        Ok(Some(Fingerprint::of_bytes(&head)))
    }
}

/// Up to `len` bytes from the start of `file`, without moving its position.
fn read_head(file: &File, len: usize) -> std::io::Result<Vec<u8>> {
    let mut head = vec![0; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut head[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(filled);
    Ok(head)
}

/// A fingerprint as the checkpoint file writes it: `{"len": 512, "md5": "<32 hex digits>"}`.
#[derive(Serialize, Deserialize)]
struct FingerprintText {
    len: usize,
    md5: String,
}

impl From<Fingerprint> for FingerprintText {
    fn from(fingerprint: Fingerprint) -> Self {
        FingerprintText {
            len: fingerprint.len,
            md5: fingerprint.md5.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

impl TryFrom<FingerprintText> for Fingerprint {
    type Error = String;

    fn try_from(text: FingerprintText) -> Result<Self, Self::Error> {
        let bad = || format!("fingerprint md5 {:?} is not 32 hex digits", text.md5);
        if text.md5.len() != 32 || !text.md5.is_ascii() {
            return Err(bad());
        }
        let mut md5 = [0u8; 16];
        for (i, byte) in md5.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text.md5[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        if text.len > FINGERPRINT_BYTES {
            return Err(format!(
                "fingerprint length {} is over {FINGERPRINT_BYTES}",
                text.len
            ));
        }
        Ok(Fingerprint { len: text.len, md5 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_cover_the_first_bytes_and_round_trip_as_text() {
        let short = Fingerprint::of_bytes(b"hello\n");
        assert_eq!(short.len, 6);
        let long = Fingerprint::of_bytes(&[7u8; 2000]);
        assert_eq!(long, Fingerprint::of_bytes(&[7u8; 512]));
        assert_eq!(long.len, FINGERPRINT_BYTES);
        let json = serde_json::to_string(&short).unwrap();
        assert_eq!(
            json,
            r#"{"len":6,"md5":"b1946ac92492d2347c6235b4d2611184"}"#
        );
        assert_eq!(serde_json::from_str::<Fingerprint>(&json).unwrap(), short);
        for bad in [
            r#"{"len":6,"md5":"b1946ac9"}"#,
            r#"{"len":6,"md5":"zz946ac92492d2347c6235b4d2611184"}"#,
            r#"{"len":513,"md5":"b1946ac92492d2347c6235b4d2611184"}"#,
        ] {
            assert!(serde_json::from_str::<Fingerprint>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_file_matches_the_fingerprint_of_its_start() {
        let dir = std::env::temp_dir().join(format!("kinesis-fp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        std::fs::write(&path, b"hello\nworld\n").unwrap();
        let file = File::open(&path).unwrap();
        let whole = Fingerprint::read(&file).unwrap();
        assert_eq!(whole.len, 12);
        assert!(whole.matches(&file).unwrap());
        assert!(Fingerprint::of_bytes(b"hello\n").matches(&file).unwrap());
        assert!(!Fingerprint::of_bytes(b"jello\n").matches(&file).unwrap());
        assert!(!Fingerprint::of_bytes(&[b'x'; 100]).matches(&file).unwrap());
        assert_eq!(
            Fingerprint::of_bytes(b"hello\n").grown(&file).unwrap(),
            Some(whole)
        );
        assert_eq!(
            Fingerprint::of_bytes(b"jello\n").grown(&file).unwrap(),
            None
        );
        std::fs::write(&path, b"other\n").unwrap();
        assert_eq!(whole.grown(&file).unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
