//! User records and the limits Kinesis puts on them.

use bytes::{Bytes, BytesMut};
use bytes_utils::Str;

use crate::{error::Error, hash_key::HashKey};

/// The most Unicode characters a partition key may have.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// One MiB, the default maximum size of a Kinesis record (partition key + data).
pub const DEFAULT_MAX_RECORD_SIZE: usize = 1024 * 1024;

/// Ten MiB, the largest maximum record size a stream can opt into.
pub const LARGEST_MAX_RECORD_SIZE: usize = 10 * 1024 * 1024;

/// A record as the application writes it: partition key, optional explicit hash key, data.
///
/// Construction checks the partition key (1 to 256 Unicode characters); the data size is checked
/// against a stream's limit with [`MaxRecordSize::check`], since that limit depends on the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    /// Shares its buffer: a record copied into a `RecordSlab` refers to the slab.
    partition_key: Str,
    explicit_hash_key: Option<HashKey>,
    data: Bytes,
}

impl UserRecord {
    /// A record routed by the MD5 hash of its partition key.
    ///
    /// Fails with [`Error::EmptyPartitionKey`] or [`Error::PartitionKeyTooLong`].
    pub fn new(partition_key: impl Into<String>, data: impl Into<Bytes>) -> Result<Self, Error> {
        let partition_key = partition_key.into();
        validate_partition_key(&partition_key)?;
        Ok(UserRecord {
            partition_key: Str::from(partition_key),
            explicit_hash_key: None,
            data: data.into(),
        })
    }

    /// Routes the record by this hash key instead of its partition key's hash.
    #[must_use]
    pub fn with_explicit_hash_key(mut self, explicit_hash_key: HashKey) -> Self {
        self.explicit_hash_key = Some(explicit_hash_key);
        self
    }

    /// The partition key.
    pub fn partition_key(&self) -> &str {
        &self.partition_key
    }

    /// The explicit hash key, if one was given.
    pub fn explicit_hash_key(&self) -> Option<HashKey> {
        self.explicit_hash_key
    }

    /// The payload.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The hash key that decides the record's shard: the explicit one, else MD5 of the key
    /// (computed on each call).
    pub fn hash_key(&self) -> HashKey {
        HashKey::of_record(self.explicit_hash_key, &self.partition_key)
    }

    /// Size as Kinesis counts it against the record limit: partition key UTF-8 bytes plus data.
    pub fn size(&self) -> usize {
        self.partition_key.len() + self.data.len()
    }

    /// Takes the record apart: partition key, explicit hash key, data.
    pub fn into_parts(self) -> (String, Option<HashKey>, Bytes) {
        (
            String::from(&*self.partition_key),
            self.explicit_hash_key,
            self.data,
        )
    }
}

/// Copies small records into shared buffers ("slabs"), so that many records live in one
/// allocation instead of two each.
///
/// A producer that takes records on the application's threads and frees them on its own pays
/// for every allocation crossing threads, which is what most allocators do worst; copying a small
/// record into a slab on the application's thread, then freeing the original there, costs less.
/// A slab is freed when the last record copied into it is dropped, so a record held for long
/// keeps its whole slab alive: the slabs alive at once are capped, and once the cap is reached
/// records are left as they are until slabs are freed.
///
/// Unstable (feature `unstable-internals`): for `kinesis-producer`.
#[derive(Debug)]
#[cfg_attr(not(feature = "unstable-internals"), allow(unreachable_pub, dead_code))]
pub struct RecordSlab {
    current: BytesMut,
    /// Slabs filled earlier, some of whose records may still be alive. A slab none of whose
    /// records is left is taken back in place and filled again (no allocation, no page faults).
    filled: Vec<BytesMut>,
    slab_bytes: usize,
    max_slabs: usize,
    /// Records to let pass before looking for a free slab again, after the cap was found reached.
    backoff: u32,
}

/// Free slabs kept for reuse beyond the one being filled; more are freed.
const SPARE_SLABS: usize = 4;
/// Records left as they are after the cap was found reached, before looking again.
const CAPPED_BACKOFF: u32 = 64;

#[cfg_attr(not(feature = "unstable-internals"), allow(unreachable_pub, dead_code))]
impl RecordSlab {
    /// Records up to `slab_bytes / 16` bytes (partition key + data) are copied into slabs of
    /// `slab_bytes`, at most `max_alive_bytes` of them alive at once.
    pub fn new(slab_bytes: usize, max_alive_bytes: usize) -> Self {
        RecordSlab {
            current: BytesMut::new(),
            filled: Vec::new(),
            slab_bytes,
            max_slabs: (max_alive_bytes / slab_bytes.max(1)).max(1),
            backoff: 0,
        }
    }

    /// Bytes of the slabs held or alive (at most the cap given to [`new`](Self::new)).
    pub fn alive_bytes(&self) -> usize {
        (self.filled.len() + usize::from(self.current.capacity() > 0)) * self.slab_bytes
    }

    /// A copy of `record` in a slab, or `None` when the record is too large for one or the slabs
    /// alive reached the cap (keep the record as it is then).
    pub fn copy(&mut self, record: &UserRecord) -> Option<UserRecord> {
        let key = record.partition_key.as_bytes();
        let size = record.size();
        if size > self.slab_bytes / 16 {
            return None;
        }
        if self.current.capacity() - self.current.len() < size && !self.next_slab() {
            return None;
        }
        self.current.extend_from_slice(key);
        let key = self.current.split().freeze();
        self.current.extend_from_slice(&record.data);
        let data = self.current.split().freeze();
        // The bytes were a `str` a moment ago; the check cannot fail.
        let partition_key = Str::from_inner(key).ok()?;
        Some(UserRecord {
            partition_key,
            explicit_hash_key: record.explicit_hash_key,
            data,
        })
    }

    /// Moves on to a free slab (one whose records are all gone, else a new one if the cap
    /// allows); whether there is one.
    fn next_slab(&mut self) -> bool {
        if self.backoff > 0 {
            self.backoff -= 1;
            return false;
        }
        if self.current.capacity() > 0 {
            self.filled.push(std::mem::take(&mut self.current));
        }
        let slab_bytes = self.slab_bytes;
        let mut free = None;
        let mut spare = 0;
        // A slab whose only handle left is ours can be taken back whole.
        self.filled.retain_mut(|slab| {
            if !slab.try_reclaim(slab_bytes) {
                return true;
            }
            if free.is_none() {
                free = Some(std::mem::take(slab));
                return false;
            }
            spare += 1;
            spare <= SPARE_SLABS
        });
        if let Some(slab) = free {
            self.current = slab;
            return true;
        }
        if self.filled.len() >= self.max_slabs {
            self.backoff = CAPPED_BACKOFF;
            return false;
        }
        self.current = BytesMut::with_capacity(slab_bytes);
        true
    }
}

/// Checks that a partition key has 1 to 256 Unicode characters.
pub fn validate_partition_key(partition_key: &str) -> Result<(), Error> {
    if partition_key.is_empty() {
        return Err(Error::EmptyPartitionKey {
            max: MAX_PARTITION_KEY_CHARS,
        });
    }
    // Cheap upper bound first: a key of at most 256 bytes has at most 256 characters.
    if partition_key.len() > MAX_PARTITION_KEY_CHARS {
        let chars = partition_key.chars().count();
        if chars > MAX_PARTITION_KEY_CHARS {
            return Err(Error::PartitionKeyTooLong {
                chars,
                max: MAX_PARTITION_KEY_CHARS,
            });
        }
    }
    Ok(())
}

/// A stream's maximum record size (partition key + data): 1 MiB by default, up to 10 MiB for
/// streams that opted in (`MaxRecordSizeInKiB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MaxRecordSize(usize);

impl MaxRecordSize {
    /// The Kinesis default, 1 MiB.
    pub const DEFAULT: MaxRecordSize = MaxRecordSize(DEFAULT_MAX_RECORD_SIZE);
    /// The largest a stream allows, 10 MiB.
    pub const LARGEST: MaxRecordSize = MaxRecordSize(LARGEST_MAX_RECORD_SIZE);

    /// A limit in bytes, from 1 MiB to 10 MiB.
    pub fn new(bytes: usize) -> Result<Self, Error> {
        if (DEFAULT_MAX_RECORD_SIZE..=LARGEST_MAX_RECORD_SIZE).contains(&bytes) {
            Ok(MaxRecordSize(bytes))
        } else {
            Err(Error::OutOfRange {
                name: "maximum record size (bytes)",
                value: bytes as u128,
                min: DEFAULT_MAX_RECORD_SIZE as u128,
                max: LARGEST_MAX_RECORD_SIZE as u128,
            })
        }
    }

    /// A limit in KiB, as `DescribeStreamSummary` reports `MaxRecordSizeInKiB` (1024 to 10240).
    pub fn from_kib(kib: usize) -> Result<Self, Error> {
        match kib.checked_mul(1024) {
            Some(bytes) => Self::new(bytes),
            None => Err(Error::OutOfRange {
                name: "maximum record size (KiB)",
                value: kib as u128,
                min: (DEFAULT_MAX_RECORD_SIZE / 1024) as u128,
                max: (LARGEST_MAX_RECORD_SIZE / 1024) as u128,
            }),
        }
    }

    /// The limit in bytes.
    pub fn bytes(self) -> usize {
        self.0
    }

    /// Checks a record's partition key + data against this limit.
    pub fn check(self, record: &UserRecord) -> Result<(), Error> {
        let size = record.size();
        if size > self.0 {
            return Err(Error::RecordTooLarge { size, max: self.0 });
        }
        Ok(())
    }
}

impl Default for MaxRecordSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_key_limits_count_characters_not_bytes() {
        assert!(matches!(
            UserRecord::new("", Bytes::new()),
            Err(Error::EmptyPartitionKey { max: 256 })
        ));
        assert!(UserRecord::new("k".repeat(256), Bytes::new()).is_ok());
        assert_eq!(
            UserRecord::new("k".repeat(257), Bytes::new()),
            Err(Error::PartitionKeyTooLong {
                chars: 257,
                max: 256
            })
        );
        // 256 four-byte characters: 1024 bytes, still 256 characters.
        assert!(UserRecord::new("😀".repeat(256), Bytes::new()).is_ok());
        assert_eq!(
            UserRecord::new("é".repeat(257), Bytes::new()),
            Err(Error::PartitionKeyTooLong {
                chars: 257,
                max: 256
            })
        );
    }

    #[test]
    fn size_limit_counts_key_and_data() {
        let limit = MaxRecordSize::DEFAULT;
        let fits = UserRecord::new("abc", vec![0u8; limit.bytes() - 3]).unwrap();
        assert_eq!(limit.check(&fits), Ok(()));
        let over = UserRecord::new("abcd", vec![0u8; limit.bytes() - 3]).unwrap();
        assert_eq!(
            limit.check(&over),
            Err(Error::RecordTooLarge {
                size: limit.bytes() + 1,
                max: limit.bytes()
            })
        );
        let big = MaxRecordSize::from_kib(10240).unwrap();
        assert_eq!(big, MaxRecordSize::LARGEST);
        assert_eq!(big.check(&over), Ok(()));
    }

    #[test]
    fn max_record_size_range() {
        assert!(MaxRecordSize::new(1024 * 1024 - 1).is_err());
        assert!(MaxRecordSize::new(10 * 1024 * 1024 + 1).is_err());
        assert!(MaxRecordSize::from_kib(usize::MAX).is_err());
        let err = MaxRecordSize::from_kib(20_000).unwrap_err().to_string();
        assert!(
            err.contains("maximum record size") && err.contains("10485760"),
            "{err}"
        );
    }

    #[test]
    fn hash_key_prefers_explicit() {
        let r = UserRecord::new("a", Bytes::new()).unwrap();
        assert_eq!(r.hash_key(), HashKey::from_partition_key("a"));
        let r = r.with_explicit_hash_key(HashKey::new(7));
        assert_eq!(r.hash_key(), HashKey::new(7));
    }

    #[test]
    fn slab_copies_are_equal_records_sharing_one_buffer() {
        let mut slab = RecordSlab::new(1024, 4096);
        let original = UserRecord::new("key-é", vec![1u8, 2, 3])
            .unwrap()
            .with_explicit_hash_key(HashKey::MIN);
        let copy = slab.copy(&original).unwrap();
        assert_eq!(copy, original);
        assert_eq!(copy.hash_key(), original.hash_key());
        assert_eq!(slab.alive_bytes(), 1024);
        // Many small records, one slab.
        let copies: Vec<_> = (0..8).map(|_| slab.copy(&original).unwrap()).collect();
        assert_eq!(slab.alive_bytes(), 1024);
        assert!(copies.iter().all(|c| *c == original));
    }

    #[test]
    fn slab_leaves_large_records_alone() {
        let mut slab = RecordSlab::new(1024, 4096);
        let large = UserRecord::new("k", vec![0u8; 64]).unwrap();
        assert_eq!(slab.copy(&large), None);
        let small = UserRecord::new("k", vec![0u8; 63]).unwrap();
        assert_eq!(slab.copy(&small), Some(small));
    }

    #[test]
    fn slabs_alive_at_once_are_capped_and_freed_ones_make_room() {
        // 60-byte records, one slab holds 17 of them; two slabs at most.
        let mut slab = RecordSlab::new(1024, 2048);
        let record = UserRecord::new("k", vec![9u8; 59]).unwrap();
        let mut held = Vec::new();
        while let Some(copy) = slab.copy(&record) {
            held.push(copy);
            assert!(held.len() <= 34, "the cap was not applied");
        }
        assert_eq!(held.len(), 34);
        assert_eq!(slab.alive_bytes(), 2048);
        // One record of the first slab keeps it alive; the second slab is free again. After
        // finding the cap reached, the slab lets a few records pass before looking again.
        held.truncate(1);
        let passed = (0..=CAPPED_BACKOFF)
            .take_while(|_| slab.copy(&record).is_none())
            .count();
        assert_eq!(passed, CAPPED_BACKOFF as usize);
        assert_eq!(slab.alive_bytes(), 2048);
        drop(held);
        let again: Vec<_> = (0..20).map_while(|_| slab.copy(&record)).collect();
        assert_eq!(again.len(), 20);
        assert_eq!(slab.alive_bytes(), 2048);
    }

    #[test]
    fn a_slab_whose_records_are_gone_is_filled_again_in_place() {
        let mut slab = RecordSlab::new(1024, 1 << 20);
        let record = UserRecord::new("k", vec![1u8; 59]).unwrap();
        let first: Vec<_> = (0..17).map(|_| slab.copy(&record).unwrap()).collect();
        let start = first[0].partition_key().as_ptr() as usize;
        drop(first);
        // The 18th record needs a new slab: the first one is free and taken back.
        let next = slab.copy(&record).unwrap();
        assert_eq!(next.partition_key().as_ptr() as usize, start);
        assert_eq!(slab.alive_bytes(), 1024);
    }
}
