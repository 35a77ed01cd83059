//! 128-bit hash keys: how Kinesis maps a record to a shard.

use std::{fmt, str::FromStr};

use md5::{Digest, Md5};

use crate::error::{Error, HashKeyProblem};

/// A position in the Kinesis hash-key space `0..=2^128-1`.
///
/// A record's hash key is its explicit hash key when it has one, otherwise the MD5 digest of its
/// partition key's UTF-8 bytes read as a big-endian unsigned integer. Each open shard owns one
/// contiguous range of the space.
///
/// Kept as two 64-bit halves (most significant first, so the derived order is the numeric one)
/// rather than a `u128`: 8-byte alignment keeps the records that carry one smaller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HashKey {
    high: u64,
    low: u64,
}

impl HashKey {
    /// The smallest hash key, 0.
    pub const MIN: HashKey = HashKey::new(0);
    /// The largest hash key, 2^128 - 1.
    pub const MAX: HashKey = HashKey::new(u128::MAX);

    /// Wraps a raw 128-bit value.
    pub const fn new(value: u128) -> Self {
        HashKey {
            high: (value >> 64) as u64,
            low: value as u64,
        }
    }

    /// The raw 128-bit value.
    pub const fn get(self) -> u128 {
        ((self.high as u128) << 64) | self.low as u128
    }

    /// The hash key Kinesis derives from a partition key: MD5 of its UTF-8 bytes, big-endian.
    pub fn from_partition_key(partition_key: &str) -> Self {
        HashKey::new(u128::from_be_bytes(md5_digest(partition_key.as_bytes())))
    }

    /// The hash key Kinesis routes a record by: its explicit hash key if it has one, else the
    /// MD5 of its partition key.
    pub fn of_record(explicit_hash_key: Option<HashKey>, partition_key: &str) -> Self {
        explicit_hash_key.unwrap_or_else(|| Self::from_partition_key(partition_key))
    }

    /// Parses an explicit hash key exactly as Kinesis accepts it: decimal digits only, no sign,
    /// no spaces, no leading zero, at most 2^128 - 1.
    pub fn parse(text: &str) -> Result<Self, Error> {
        parse_decimal(text, false)
            .map(HashKey::new)
            .map_err(|problem| Error::InvalidExplicitHashKey {
                value: text.to_owned(),
                problem,
            })
    }

    /// Like [`HashKey::parse`] but tolerates leading zeros. Used for keys read from aggregates
    /// written by other producers, which Kinesis never validated.
    pub(crate) fn parse_lenient(text: &str) -> Option<Self> {
        parse_decimal(text, true).ok().map(HashKey::new)
    }

    /// Number of characters of the decimal form, without formatting it.
    pub(crate) fn decimal_len(self) -> usize {
        let mut v = self.get();
        let mut len = 1;
        while v >= 10 {
            v /= 10;
            len += 1;
        }
        len
    }
}

impl From<u128> for HashKey {
    fn from(value: u128) -> Self {
        HashKey::new(value)
    }
}

impl From<HashKey> for u128 {
    fn from(key: HashKey) -> Self {
        key.get()
    }
}

impl FromStr for HashKey {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        HashKey::parse(text)
    }
}

/// The decimal form Kinesis uses (`ExplicitHashKey`, `StartingHashKey`, `EndingHashKey`).
impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.get(), f)
    }
}

fn parse_decimal(text: &str, allow_leading_zeros: bool) -> Result<u128, HashKeyProblem> {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return Err(HashKeyProblem::Empty);
    }
    if let Some(at) = bytes.iter().position(|b| !b.is_ascii_digit()) {
        return Err(HashKeyProblem::NotADigit { at });
    }
    if !allow_leading_zeros && bytes.len() > 1 && bytes[0] == b'0' {
        return Err(HashKeyProblem::LeadingZero);
    }
    bytes.iter().try_fold(0u128, |acc, &b| {
        acc.checked_mul(10)
            .and_then(|v| v.checked_add(u128::from(b - b'0')))
            .ok_or(HashKeyProblem::TooLarge)
    })
}

/// Remembers the hash keys of recently seen partition keys, so that a stream of records over a
/// working set of keys pays for MD5 once per key rather than once per record.
///
/// A map of up to [`capacity`](Self::capacity) keys of up to [`HashKeyCache::MAX_KEY_BYTES`]
/// bytes each, which grows with the keys seen (nothing is allocated up front) and starts over
/// when it is full. Any working set up to the capacity is hashed once, whatever the keys: a
/// direct-mapped cache of the same size lost about a third of a working set as large as itself
/// to collisions, cycled through (each record missing), and all of one twice as large. Keys are
/// compared in full, so an answer is always exactly [`HashKey::from_partition_key`]; longer keys
/// are hashed every time. Memory is at most about `capacity * 150` bytes (the table's slack
/// included).
///
/// Unstable (feature `unstable-internals`): for `kinesis-producer` and `kinesis-consumer`.
#[derive(Clone)]
#[cfg_attr(not(feature = "unstable-internals"), allow(unreachable_pub, dead_code))]
pub struct HashKeyCache {
    keys: std::collections::HashMap<CachedKey, HashKey, foldhash::fast::FixedState>,
    capacity: usize,
}

/// A partition key held inline (no allocation per key), looked up by its bytes.
#[derive(Clone, Copy)]
struct CachedKey {
    len: u8,
    bytes: [u8; HashKeyCache::MAX_KEY_BYTES],
}

impl CachedKey {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

// Hash and equality are those of the key's bytes, as `Borrow<[u8]>` requires.
impl std::hash::Hash for CachedKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialEq for CachedKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for CachedKey {}

impl std::borrow::Borrow<[u8]> for CachedKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

#[cfg_attr(not(feature = "unstable-internals"), allow(unreachable_pub, dead_code))]
impl HashKeyCache {
    /// Longest partition key (in UTF-8 bytes) the cache holds; a UUID's text form fits.
    pub const MAX_KEY_BYTES: usize = 48;
    /// Capacity of [`HashKeyCache::default`].
    pub const DEFAULT_CAPACITY: usize = 1024;

    /// A cache of up to `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> Self {
        HashKeyCache {
            keys: std::collections::HashMap::with_hasher(foldhash::fast::FixedState::default()),
            capacity: capacity.max(1),
        }
    }

    /// Most keys held at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Holds up to `capacity` keys from now on (at least 1), keeping those it holds if they fit.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        if self.keys.len() > self.capacity {
            self.keys = std::collections::HashMap::with_hasher(self.keys.hasher().clone());
        }
    }

    /// [`HashKey::from_partition_key`], remembered.
    pub fn of_partition_key(&mut self, partition_key: &str) -> HashKey {
        let bytes = partition_key.as_bytes();
        if bytes.is_empty() || bytes.len() > Self::MAX_KEY_BYTES {
            return HashKey::from_partition_key(partition_key);
        }
        if let Some(hash) = self.keys.get(bytes) {
            return *hash;
        }
        let hash = HashKey::from_partition_key(partition_key);
        if self.keys.len() >= self.capacity {
            // Full: start over (keeping the table's allocation). A working set that fits is
            // hashed again once; one that does not would miss under any eviction order when
            // cycled through.
            self.keys.clear();
        }
        let mut key = CachedKey {
            // At most MAX_KEY_BYTES (48): fits a u8.
            len: bytes.len() as u8,
            bytes: [0; Self::MAX_KEY_BYTES],
        };
        key.bytes[..bytes.len()].copy_from_slice(bytes);
        self.keys.insert(key, hash);
        hash
    }

    /// [`UserRecord::hash_key`](crate::UserRecord::hash_key), remembered: the explicit hash key
    /// if the record has one, else its partition key's.
    pub fn of_record(&mut self, record: &crate::UserRecord) -> HashKey {
        match record.explicit_hash_key() {
            Some(key) => key,
            None => self.of_partition_key(record.partition_key()),
        }
    }
}

impl Default for HashKeyCache {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

impl fmt::Debug for HashKeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashKeyCache")
            .field("capacity", &self.capacity)
            .field("held", &self.keys.len())
            .finish()
    }
}

pub(crate) fn md5_digest(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_answers_exactly_what_md5_does() {
        // Two slots for many keys: constant eviction and reuse; long and empty keys bypass it.
        let mut cache = HashKeyCache::new(2);
        let long = "k".repeat(HashKeyCache::MAX_KEY_BYTES + 1);
        let edge = "e".repeat(HashKeyCache::MAX_KEY_BYTES);
        let mut keys: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
        keys.extend([
            long,
            edge,
            String::new(),
            "é日本".to_owned(),
            "key-1".to_owned(),
        ]);
        for round in 0..3 {
            for key in &keys {
                assert_eq!(
                    cache.of_partition_key(key),
                    HashKey::from_partition_key(key),
                    "{key:?} in round {round}"
                );
            }
        }
        // A key that is a prefix of the cached one must not match it.
        let mut one = HashKeyCache::new(1);
        one.of_partition_key("abcd");
        assert_eq!(
            one.of_partition_key("abc"),
            HashKey::from_partition_key("abc")
        );
        assert_eq!(
            one.of_partition_key("abcd"),
            HashKey::from_partition_key("abcd")
        );
    }

    #[test]
    fn cache_holds_a_working_set_up_to_its_capacity_and_no_more() {
        let keys: Vec<String> = (0..65).map(|i| format!("pk-{i}")).collect();
        let mut cache = HashKeyCache::new(64);
        for _ in 0..3 {
            for key in &keys[..64] {
                cache.of_partition_key(key);
            }
        }
        // Every key of a working set that fits stays (none pushed out by a collision).
        assert_eq!(cache.keys.len(), 64);
        assert!(
            keys[..64]
                .iter()
                .all(|k| cache.keys.contains_key(k.as_bytes()))
        );
        cache.of_partition_key(&keys[64]);
        assert!(cache.keys.len() <= 64);
        // Growing keeps what is held; shrinking below it starts over.
        cache.set_capacity(128);
        let held = cache.keys.len();
        cache.of_partition_key(&keys[64]);
        assert!(cache.keys.len() >= held);
        cache.set_capacity(2);
        assert!(cache.keys.len() <= 2);
        assert_eq!(cache.capacity(), 2);
        assert_eq!(HashKeyCache::new(0).capacity(), 1);
    }

    #[test]
    fn cache_prefers_the_explicit_hash_key() {
        let mut cache = HashKeyCache::default();
        let record = crate::UserRecord::new("a", &b"x"[..]).unwrap();
        assert_eq!(cache.of_record(&record), HashKey::from_partition_key("a"));
        let record = record.with_explicit_hash_key(HashKey::new(7));
        assert_eq!(cache.of_record(&record), HashKey::new(7));
    }

    #[test]
    fn md5_of_partition_key_is_big_endian() {
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(
            HashKey::from_partition_key("a").get(),
            0x0cc175b9c0f1b6a831c399e269772661
        );
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(
            HashKey::from_partition_key("").get(),
            0xd41d8cd98f00b204e9800998ecf8427e
        );
    }

    #[test]
    fn parses_the_whole_range() {
        assert_eq!(HashKey::parse("0").unwrap(), HashKey::MIN);
        assert_eq!(
            HashKey::parse("340282366920938463463374607431768211455").unwrap(),
            HashKey::MAX
        );
        assert_eq!(HashKey::MAX.to_string(), u128::MAX.to_string());
    }

    #[test]
    fn rejects_what_kinesis_rejects() {
        let cases: &[(&str, HashKeyProblem)] = &[
            ("", HashKeyProblem::Empty),
            (
                "340282366920938463463374607431768211456",
                HashKeyProblem::TooLarge,
            ),
            (
                "9999999999999999999999999999999999999999",
                HashKeyProblem::TooLarge,
            ),
            ("-1", HashKeyProblem::NotADigit { at: 0 }),
            ("+1", HashKeyProblem::NotADigit { at: 0 }),
            (" 1", HashKeyProblem::NotADigit { at: 0 }),
            ("1 ", HashKeyProblem::NotADigit { at: 1 }),
            ("12a", HashKeyProblem::NotADigit { at: 2 }),
            ("1e5", HashKeyProblem::NotADigit { at: 1 }),
            ("٣", HashKeyProblem::NotADigit { at: 0 }),
            ("007", HashKeyProblem::LeadingZero),
        ];
        for (text, problem) in cases {
            match HashKey::parse(text) {
                Err(Error::InvalidExplicitHashKey { value, problem: p }) => {
                    assert_eq!(&value, text);
                    assert_eq!(&p, problem, "{text:?}");
                }
                other => panic!("{text:?} gave {other:?}"),
            }
        }
        assert_eq!(HashKey::parse_lenient("007"), Some(HashKey::new(7)));
        assert_eq!(HashKey::parse_lenient("-7"), None);
    }

    #[test]
    fn decimal_len_matches_formatting() {
        for v in [
            0u128,
            9,
            10,
            99,
            100,
            12345,
            u64::MAX as u128,
            u128::MAX - 1,
            u128::MAX,
        ] {
            assert_eq!(HashKey::new(v).decimal_len(), v.to_string().len());
        }
        for shift in 0..128 {
            let v = 1u128 << shift;
            assert_eq!(HashKey::new(v).decimal_len(), v.to_string().len());
            assert_eq!(HashKey::new(v - 1).decimal_len(), (v - 1).to_string().len());
        }
    }
}
