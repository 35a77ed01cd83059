//! User records and the limits Kinesis puts on them.

use bytes::Bytes;

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
    partition_key: String,
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
            partition_key,
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
    /// (computed on each call; [`HashKeyCache`](crate::HashKeyCache) remembers recent keys).
    pub fn hash_key(&self) -> HashKey {
        HashKey::of_record(self.explicit_hash_key, &self.partition_key)
    }

    /// Size as Kinesis counts it against the record limit: partition key UTF-8 bytes plus data.
    pub fn size(&self) -> usize {
        self.partition_key.len() + self.data.len()
    }

    /// Takes the record apart: partition key, explicit hash key, data.
    pub fn into_parts(self) -> (String, Option<HashKey>, Bytes) {
        (self.partition_key, self.explicit_hash_key, self.data)
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
}
