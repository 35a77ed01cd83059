//! Packing user records into one Kinesis record.

use std::{
    collections::HashMap,
    hash::{BuildHasher, BuildHasherDefault, Hasher},
    num::NonZeroUsize,
    ops::Range,
};

use foldhash::fast::RandomState;

use bytes::{BufMut, Bytes, BytesMut};

use crate::{
    MAGIC, MD5_LEN, OVERHEAD,
    error::Error,
    hash_key::{HashKey, md5_digest},
    proto::{self, Header},
    record::{LARGEST_MAX_RECORD_SIZE, MaxRecordSize, UserRecord},
};

/// The outer partition key of an aggregate. It does not route the record (the explicit hash key
/// does), so it is the shortest possible, as the KPL's is.
pub const AGGREGATE_PARTITION_KEY: &str = "a";

/// The KPL's default `AggregationMaxSize`, in bytes.
pub const KPL_DEFAULT_AGGREGATE_MAX_BYTES: usize = 51_200;

/// How large an aggregate may grow, and the largest record the stream takes.
///
/// `max_bytes` bounds the Kinesis record the aggregator emits as Kinesis counts it (outer
/// partition key + data); `max_records` bounds how many user records it holds;
/// `max_record_size` is the stream's maximum record size: a user record larger than it is refused
/// ([`Refusal::TooLarge`]), and no aggregate may be larger than it either.
///
/// Built from the KPL's defaults with named setters:
///
/// ```
/// use std::num::NonZeroUsize;
/// use kinesis_aggregation::{AggregationLimits, MaxRecordSize};
///
/// # fn main() -> Result<(), kinesis_aggregation::Error> {
/// let limits = AggregationLimits::default()
///     .with_max_record_size(MaxRecordSize::from_kib(2048)?)?
///     .with_max_bytes(1_500_000)?
///     .with_max_records(NonZeroUsize::new(1_000).unwrap_or(NonZeroUsize::MIN));
/// assert_eq!(limits.max_bytes(), 1_500_000);
/// // An aggregate may not be larger than a record the stream takes.
/// assert!(AggregationLimits::default().with_max_bytes(2 * 1024 * 1024).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AggregationLimits {
    max_bytes: usize,
    max_records: usize,
    max_record_size: MaxRecordSize,
}

impl AggregationLimits {
    /// The largest aggregate, in bytes (outer partition key + data): 1 up to the maximum record
    /// size (1 MiB unless [`with_max_record_size`](Self::with_max_record_size) raised it first).
    /// Fails with [`Error::OutOfRange`] naming the aggregate size otherwise.
    pub fn with_max_bytes(self, max_bytes: usize) -> Result<Self, Error> {
        let limit = self.max_record_size.bytes();
        if !(1..=limit).contains(&max_bytes) {
            return Err(Error::OutOfRange {
                name: "aggregate maximum size (bytes)",
                value: max_bytes as u128,
                min: 1,
                max: limit as u128,
            });
        }
        Ok(AggregationLimits { max_bytes, ..self })
    }

    /// The most user records per aggregate.
    #[must_use]
    pub fn with_max_records(self, max_records: NonZeroUsize) -> Self {
        AggregationLimits {
            max_records: max_records.get(),
            ..self
        }
    }

    /// The stream's maximum record size (default 1 MiB, the Kinesis default; see
    /// [`MaxRecordSize`]). Fails with [`Error::OutOfRange`] if it is smaller than the aggregate
    /// size already set.
    pub fn with_max_record_size(self, max_record_size: MaxRecordSize) -> Result<Self, Error> {
        if max_record_size.bytes() < self.max_bytes {
            return Err(Error::OutOfRange {
                name: "maximum record size (bytes), at least the aggregate maximum size",
                value: max_record_size.bytes() as u128,
                min: self.max_bytes as u128,
                max: LARGEST_MAX_RECORD_SIZE as u128,
            });
        }
        Ok(AggregationLimits {
            max_record_size,
            ..self
        })
    }

    /// Largest aggregate, in bytes (outer partition key + data).
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Most user records per aggregate.
    pub fn max_records(&self) -> usize {
        self.max_records
    }

    /// The largest record (partition key + data) the aggregator takes.
    pub fn max_record_size(&self) -> MaxRecordSize {
        self.max_record_size
    }
}

/// The KPL's defaults: 51,200 bytes (`AggregationMaxSize`), 4,294,967,295 records
/// (`AggregationMaxCount`), records up to 1 MiB (`MaxUserRecordSize`, the Kinesis default).
impl Default for AggregationLimits {
    fn default() -> Self {
        AggregationLimits {
            max_bytes: KPL_DEFAULT_AGGREGATE_MAX_BYTES,
            max_records: u32::MAX as usize,
            max_record_size: MaxRecordSize::DEFAULT,
        }
    }
}

/// Why an [`Aggregator`] did not take a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The aggregate has no room left for it (bytes or record count): finish the aggregate and
    /// push the record again. An empty aggregator is never full.
    #[error("the aggregate is full")]
    Full,
    /// The record is larger than the stream's maximum record size given in the
    /// [`AggregationLimits`]: no aggregator takes it, and Kinesis would refuse it.
    #[error(
        "record is {size} bytes (partition key + data); the maximum record size is {max} bytes"
    )]
    TooLarge {
        /// UTF-8 bytes of the partition key plus bytes of data.
        size: usize,
        /// The maximum record size.
        max: usize,
    },
}

/// A record [`Aggregator::try_push`] did not take, handed back unchanged with the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct PushError {
    record: UserRecord,
    reason: Refusal,
}

impl PushError {
    /// Why the record was not taken.
    pub fn reason(&self) -> Refusal {
        self.reason
    }

    /// The record.
    pub fn record(&self) -> &UserRecord {
        &self.record
    }

    /// The record, back to the caller.
    pub fn into_record(self) -> UserRecord {
        self.record
    }
}

/// A record ready to be sent to Kinesis (one `PutRecords` entry): what [`Aggregator::finish`]
/// yields.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KinesisRecord {
    /// `PartitionKey`: the user's own for a lone record, [`AGGREGATE_PARTITION_KEY`] for an
    /// aggregate.
    pub partition_key: String,
    /// `ExplicitHashKey`: the user's own (if any) for a lone record; for an aggregate, the hash
    /// key of its first user record, so it lands on the shard that owns that record.
    pub explicit_hash_key: Option<HashKey>,
    /// `Data`: the user's data for a lone record, the encoded aggregate otherwise.
    pub data: Bytes,
    /// How many user records this Kinesis record carries.
    pub user_records: usize,
}

impl KinesisRecord {
    /// Whether the data is an aggregate (it carries more than one user record).
    pub fn is_aggregated(&self) -> bool {
        self.user_records > 1
    }

    /// Size as Kinesis counts it against record and `PutRecords` limits: partition key + data.
    pub fn size(&self) -> usize {
        self.partition_key.len() + self.data.len()
    }

    /// The hash key Kinesis will route this record by.
    pub fn hash_key(&self) -> HashKey {
        HashKey::of_record(self.explicit_hash_key, &self.partition_key)
    }
}

/// Builds one aggregate at a time, tracking its exact encoded size as records are added.
///
/// Adding a record costs O(1) (two hash-map look-ups and some varint arithmetic); nothing is
/// encoded until [`finish`](Self::finish). Partition keys and explicit hash keys are stored once
/// per aggregate. A record that does not fit is handed back, never dropped or split; a record
/// larger than the stream's maximum record size (in the [`AggregationLimits`]) is refused with
/// [`Refusal::TooLarge`].
///
/// ```
/// use kinesis_aggregation::{AggregationLimits, Aggregator, Refusal, UserRecord};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut agg = Aggregator::new(AggregationLimits::default());
/// for i in 0..3 {
///     let record = UserRecord::new(format!("key-{i}"), vec![b'x'; 100])?;
///     agg.try_push(record)?;
/// }
/// let predicted = agg.data_len();
/// let out = agg.finish().ok_or("three records were added")?;
/// assert_eq!(out.user_records, 3);
/// assert_eq!(out.data.len(), predicted);
///
/// // Larger than the stream takes (1 MiB by default): refused, and handed back.
/// let huge = UserRecord::new("key", vec![0u8; 2 * 1024 * 1024])?;
/// let refused = agg.try_push(huge).unwrap_err();
/// assert!(matches!(refused.reason(), Refusal::TooLarge { .. }));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Aggregator {
    limits: AggregationLimits,
    /// Where each partition key is in `partition_key_table`, found by its hash.
    partition_keys: KeyIndex,
    explicit_hash_keys: HashMap<HashKey, u64, RandomState>,
    /// The encoded `partition_key_table` entries (field 1), in index order.
    partition_key_table: BytesMut,
    /// The encoded `explicit_hash_key_table` entries (field 2), in index order.
    explicit_hash_key_table: BytesMut,
    /// The encoded `records` entries (field 3), in order. Records are encoded as they are
    /// added, so the data is copied once and `finish` only concatenates the three sections
    /// (the same bytes a protobuf encoder writes: fields in number order).
    records: BytesMut,
    count: usize,
    /// Encoded length of the `AggregatedRecord` protobuf holding what was added so far.
    proto_len: usize,
    /// Hash key of the first record: the aggregate's outer explicit hash key.
    first_hash_key: Option<HashKey>,
    /// The first record's partition key: a lone record is sent with it.
    first_partition_key: String,
    /// The first record's data and whether it had an explicit hash key: a lone record is sent
    /// as itself.
    first_data: Bytes,
    first_explicit: bool,
}

impl Aggregator {
    /// An empty aggregator with these limits.
    pub fn new(limits: AggregationLimits) -> Self {
        Aggregator {
            limits,
            partition_keys: KeyIndex::default(),
            explicit_hash_keys: HashMap::default(),
            partition_key_table: BytesMut::new(),
            explicit_hash_key_table: BytesMut::new(),
            records: BytesMut::new(),
            count: 0,
            proto_len: 0,
            first_hash_key: None,
            first_partition_key: String::new(),
            first_data: Bytes::new(),
            first_explicit: false,
        }
    }

    /// The limits this aggregator enforces.
    pub fn limits(&self) -> AggregationLimits {
        self.limits
    }

    /// Number of user records added since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether nothing was added since the last [`finish`](Self::finish).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Exact length of the data [`finish`](Self::finish) would return now.
    pub fn data_len(&self) -> usize {
        match self.count {
            0 => 0,
            1 => self.first_data.len(),
            _ => OVERHEAD + self.proto_len,
        }
    }

    /// Exact size (partition key + data) of the Kinesis record [`finish`](Self::finish) would
    /// return now.
    pub fn size(&self) -> usize {
        match self.count {
            0 => 0,
            1 => self.first_partition_key.len() + self.data_len(),
            _ => AGGREGATE_PARTITION_KEY.len() + self.data_len(),
        }
    }

    /// The [`size`](Self::size) the aggregator would have with `record` added (whether or not
    /// the limits allow it), or `None` when the record count limit is reached. Does not change
    /// the aggregator. On an empty aggregator it is the record's own size, since a lone record is
    /// sent as itself.
    pub fn size_with(&self, record: &UserRecord) -> Option<usize> {
        match self.count {
            n if n >= self.limits.max_records => None,
            0 => Some(record.size()),
            _ => Some(self.aggregate_size_with(self.place(record).bytes)),
        }
    }

    /// Adds `record` if the aggregate stays within the limits, else hands it back unchanged with
    /// the reason: [`Refusal::Full`] (finish the aggregate and push it again) or
    /// [`Refusal::TooLarge`] (larger than the stream's maximum record size).
    ///
    /// An empty aggregator accepts any record up to the maximum record size: one too big to
    /// share an aggregate is then emitted alone, unaggregated, by [`finish`](Self::finish).
    pub fn try_push(&mut self, record: UserRecord) -> Result<(), PushError> {
        // The record's parts are copied into the aggregate either way (the data of a first
        // record, which may be sent alone, is shared, not copied).
        self.try_push_ref(&record)
            .map_err(|reason| PushError { record, reason })
    }

    /// Like [`try_push`](Self::try_push), but keeps the caller's record: the data is copied into
    /// the aggregate (no reference to it is kept unless the record is the first), as is the
    /// partition key when it is new to this aggregate. A producer that must be able to hand
    /// records back or resend them uses this.
    pub fn try_push_ref(&mut self, record: &UserRecord) -> Result<(), Refusal> {
        let placement = self.admit(record)?;
        self.add_record(placement, record);
        if self.count == 1 {
            self.first_data = record.data().clone();
        }
        Ok(())
    }

    /// Where `record` goes if it may join the aggregate. An empty aggregator takes any record up
    /// to the maximum record size (one larger than an aggregate may be then goes alone, raw).
    fn admit(&self, record: &UserRecord) -> Result<Placement, Refusal> {
        let size = record.size();
        let max = self.limits.max_record_size.bytes();
        if size > max {
            return Err(Refusal::TooLarge { size, max });
        }
        let placement = self.place(record);
        if self.count == 0
            || (self.count < self.limits.max_records
                && self.aggregate_size_with(placement.bytes) <= self.limits.max_bytes)
        {
            Ok(placement)
        } else {
            Err(Refusal::Full)
        }
    }

    /// Encodes one record whose placement fits, adding its keys to the tables if they are new.
    fn add_record(&mut self, placement: Placement, record: &UserRecord) {
        let partition_key = record.partition_key();
        let explicit_hash_key = record.explicit_hash_key();
        let data = record.data();
        if self.count == 0 {
            // Only the first record's hash key is needed: it routes the whole aggregate.
            self.first_hash_key = Some(HashKey::of_record(explicit_hash_key, partition_key));
            self.first_partition_key.clear();
            self.first_partition_key.push_str(partition_key);
            self.first_explicit = explicit_hash_key.is_some();
        }
        let pk_index = placement.partition_key_index.unwrap_or_else(|| {
            let table = &mut self.partition_key_table;
            let mut header = Header::new();
            header
                .tag(proto::TAG_PARTITION_KEY_TABLE)
                .varint(partition_key.len() as u64);
            table.put_slice(header.as_slice());
            let start = table.len();
            table.put_slice(partition_key.as_bytes());
            self.partition_keys
                .insert(placement.partition_key_hash, start..table.len())
        });
        let ehk_index = explicit_hash_key.map(|key| {
            placement.explicit_hash_key_index.unwrap_or_else(|| {
                let index = self.explicit_hash_keys.len() as u64;
                let text = key.to_string();
                let mut header = Header::new();
                header
                    .tag(proto::TAG_EXPLICIT_HASH_KEY_TABLE)
                    .varint(text.len() as u64);
                self.explicit_hash_key_table.put_slice(header.as_slice());
                self.explicit_hash_key_table.put_slice(text.as_bytes());
                self.explicit_hash_keys.insert(key, index);
                index
            })
        });
        let mut inner = proto::varint_field_len(pk_index) + proto::delimited_field_len(data.len());
        if let Some(index) = ehk_index {
            inner += proto::varint_field_len(index);
        }
        // The record's header in one copy and its data in another (written byte by byte, the
        // header took seven calls to `memmove`).
        let mut header = Header::new();
        header
            .tag(proto::TAG_RECORDS)
            .varint(inner as u64)
            .tag(proto::TAG_RECORD_PARTITION_KEY_INDEX)
            .varint(pk_index);
        if let Some(index) = ehk_index {
            header
                .tag(proto::TAG_RECORD_EXPLICIT_HASH_KEY_INDEX)
                .varint(index);
        }
        header.tag(proto::TAG_RECORD_DATA).varint(data.len() as u64);
        let buf = &mut self.records;
        buf.reserve(header.as_slice().len() + data.len());
        buf.put_slice(header.as_slice());
        buf.put_slice(data);
        self.count += 1;
        self.proto_len += placement.bytes;
    }

    /// Takes everything added so far as one Kinesis record and empties the aggregator.
    ///
    /// One record comes back as itself (its own partition key, explicit hash key and data); two or
    /// more come back as an aggregate whose data length is exactly [`data_len`](Self::data_len).
    /// `None` when the aggregator is empty.
    pub fn finish(&mut self) -> Option<KinesisRecord> {
        Some(match self.finish_parts()? {
            Finished::Ready(record) => record,
            Finished::Undigested(aggregate) => aggregate.digest(),
        })
    }

    /// Like [`finish`](Self::finish), but an aggregate comes back without its MD5 trailer, for
    /// [`digest_aggregates`] to compute together with others (a lone record comes back ready).
    ///
    /// Unstable (feature `unstable-internals`): for `kinesis-producer`.
    #[cfg(feature = "unstable-internals")]
    pub fn finish_undigested(&mut self) -> Option<Finished> {
        self.finish_parts()
    }

    fn finish_parts(&mut self) -> Option<Finished> {
        let first_hash_key = self.first_hash_key.take()?;
        let count = std::mem::take(&mut self.count);
        let proto_len = std::mem::take(&mut self.proto_len);
        let first_data = std::mem::take(&mut self.first_data);
        // The buffers and maps keep their allocations for the next aggregate.
        let result = if count == 1 {
            let partition_key = std::mem::take(&mut self.first_partition_key);
            Finished::Ready(KinesisRecord {
                partition_key,
                explicit_hash_key: self.first_explicit.then_some(first_hash_key),
                data: first_data,
                user_records: 1,
            })
        } else {
            let mut buf = BytesMut::with_capacity(OVERHEAD + proto_len);
            buf.put_slice(&MAGIC);
            buf.put_slice(&self.partition_key_table);
            buf.put_slice(&self.explicit_hash_key_table);
            buf.put_slice(&self.records);
            debug_assert_eq!(buf.len(), MAGIC.len() + proto_len);
            Finished::Undigested(UndigestedAggregate {
                buf,
                explicit_hash_key: first_hash_key,
                user_records: count,
            })
        };
        self.partition_keys.clear();
        self.explicit_hash_keys.clear();
        self.partition_key_table.clear();
        self.explicit_hash_key_table.clear();
        self.records.clear();
        Some(result)
    }

    /// Size of the aggregate (outer partition key + data) after `growth` more protobuf bytes.
    fn aggregate_size_with(&self, growth: usize) -> usize {
        AGGREGATE_PARTITION_KEY.len() + OVERHEAD + self.proto_len + growth
    }

    /// Where `record` would go: the protobuf bytes it would add, and the table entries it would
    /// reuse. One look-up per key, shared by the size check and the insertion.
    fn place(&self, record: &UserRecord) -> Placement {
        let mut bytes = 0;
        let key = record.partition_key().as_bytes();
        let partition_key_hash = self.partition_keys.hash(key);
        let partition_key_index =
            self.partition_keys
                .get(partition_key_hash, key, &self.partition_key_table);
        if partition_key_index.is_none() {
            bytes += proto::delimited_field_len(record.partition_key().len());
        }
        let pk_index = partition_key_index.unwrap_or(self.partition_keys.len() as u64);
        let mut inner =
            proto::varint_field_len(pk_index) + proto::delimited_field_len(record.data().len());
        let mut explicit_hash_key_index = None;
        if let Some(key) = record.explicit_hash_key() {
            explicit_hash_key_index = self.explicit_hash_keys.get(&key).copied();
            if explicit_hash_key_index.is_none() {
                bytes += proto::delimited_field_len(key.decimal_len());
            }
            let ehk_index = explicit_hash_key_index.unwrap_or(self.explicit_hash_keys.len() as u64);
            inner += proto::varint_field_len(ehk_index);
        }
        bytes += proto::delimited_field_len(inner);
        Placement {
            bytes,
            partition_key_hash,
            partition_key_index,
            explicit_hash_key_index,
        }
    }
}

/// What [`Aggregator::place`] found for one record.
struct Placement {
    /// Protobuf bytes the record adds (its table entries, if new, and its record entry).
    bytes: usize,
    /// Hash of its partition key, for [`KeyIndex`].
    partition_key_hash: u64,
    /// Index of its partition key, if the table has it already.
    partition_key_index: Option<u64>,
    /// Index of its explicit hash key, if it has one and the table has it already.
    explicit_hash_key_index: Option<u64>,
}

/// The partition keys of an aggregate and their indices in its table, found by hash. The keys'
/// bytes are not copied again: they are compared where they already are, in the encoded table,
/// so adding a key allocates nothing per key.
#[derive(Debug, Default)]
struct KeyIndex {
    hasher: RandomState,
    /// The last key added with each hash (an index into `keys`).
    by_hash: HashMap<u64, usize, BuildHasherDefault<Prehashed>>,
    /// Each key in table order: where its bytes are in the table, and the key added before it
    /// with the same hash, if any.
    keys: Vec<(Range<usize>, Option<usize>)>,
}

impl KeyIndex {
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    /// The index of `key` (whose hash is `hash`), if it is in `table`.
    fn get(&self, hash: u64, key: &[u8], table: &[u8]) -> Option<u64> {
        let mut at = self.by_hash.get(&hash).copied();
        while let Some(index) = at {
            let (range, before) = &self.keys[index];
            if table.get(range.clone()) == Some(key) {
                return Some(index as u64);
            }
            at = *before;
        }
        None
    }

    /// Adds the key at `range` of the table, whose hash is `hash`; returns its index.
    fn insert(&mut self, hash: u64, range: Range<usize>) -> u64 {
        let index = self.keys.len();
        let before = self.by_hash.insert(hash, index);
        self.keys.push((range, before));
        index as u64
    }

    fn clear(&mut self) {
        self.by_hash.clear();
        self.keys.clear();
    }
}

/// Hashes a `u64` that is already a hash to itself.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is expected; anything else is still hashed, slowly.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// What [`Aggregator::finish_undigested`] yields. Unstable (feature `unstable-internals`).
#[derive(Debug)]
#[cfg_attr(not(feature = "unstable-internals"), allow(unreachable_pub))]
pub enum Finished {
    /// A record ready to send: a lone user record, sent as itself.
    Ready(KinesisRecord),
    /// An aggregate still missing its MD5 trailer.
    Undigested(UndigestedAggregate),
}

/// An aggregate whose MD5 trailer is still to be computed: by [`digest_aggregates`], many at a
/// time, or by [`digest`](Self::digest). Unstable (feature `unstable-internals`).
#[derive(Debug)]
#[cfg_attr(not(feature = "unstable-internals"), allow(unreachable_pub))]
pub struct UndigestedAggregate {
    /// The magic bytes and the protobuf, with room for the trailer.
    buf: BytesMut,
    explicit_hash_key: HashKey,
    user_records: usize,
}

#[cfg_attr(not(feature = "unstable-internals"), allow(unreachable_pub, dead_code))]
impl UndigestedAggregate {
    /// Size the Kinesis record will have (partition key + data, trailer included).
    pub fn size(&self) -> usize {
        AGGREGATE_PARTITION_KEY.len() + self.buf.len() + MD5_LEN
    }

    /// How many user records it carries.
    pub fn user_records(&self) -> usize {
        self.user_records
    }

    /// The hash key it will be routed by (its first user record's).
    pub fn explicit_hash_key(&self) -> HashKey {
        self.explicit_hash_key
    }

    /// The finished Kinesis record, trailer computed on its own.
    pub fn digest(self) -> KinesisRecord {
        let digest = md5_digest(&self.buf[MAGIC.len()..]);
        self.complete(digest)
    }

    fn complete(mut self, digest: [u8; MD5_LEN]) -> KinesisRecord {
        self.buf.put_slice(&digest);
        KinesisRecord {
            partition_key: AGGREGATE_PARTITION_KEY.to_owned(),
            explicit_hash_key: Some(self.explicit_hash_key),
            data: self.buf.freeze(),
            user_records: self.user_records,
        }
    }
}

/// Finishes aggregates, computing their MD5 trailers side by side: about three times the
/// throughput of one at a time. Same order and bytes as [`UndigestedAggregate::digest`] on each.
/// Unstable (feature `unstable-internals`).
#[cfg(feature = "unstable-internals")]
pub fn digest_aggregates(aggregates: Vec<UndigestedAggregate>) -> Vec<KinesisRecord> {
    let bodies: Vec<&[u8]> = aggregates
        .iter()
        .map(|aggregate| &aggregate.buf[MAGIC.len()..])
        .collect();
    let digests = crate::digest::md5_many(&bodies);
    aggregates
        .into_iter()
        .zip(digests)
        .map(|(aggregate, digest)| aggregate.complete(digest))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MD5_LEN;
    use prost::Message;

    fn rec(pk: &str, data: &[u8]) -> UserRecord {
        UserRecord::new(pk, data.to_vec()).unwrap()
    }

    #[test]
    fn empty_aggregator_finishes_to_nothing() {
        let mut agg = Aggregator::new(AggregationLimits::default());
        assert_eq!(agg.finish(), None);
        assert_eq!(agg.size(), 0);
    }

    #[test]
    fn lone_record_is_sent_raw_with_its_own_keys() {
        let mut agg = Aggregator::new(AggregationLimits::default());
        let r = rec("user-key", b"payload").with_explicit_hash_key(HashKey::new(42));
        agg.try_push(r).unwrap();
        assert_eq!(agg.size(), "user-key".len() + 7);
        let out = agg.finish().unwrap();
        assert_eq!(out.partition_key, "user-key");
        assert_eq!(out.explicit_hash_key, Some(HashKey::new(42)));
        assert_eq!(&out.data[..], b"payload");
        assert!(!out.is_aggregated());

        agg.try_push(rec("other", b"")).unwrap();
        let out = agg.finish().unwrap();
        assert_eq!(out.explicit_hash_key, None);
        assert_eq!(out.partition_key, "other");
    }

    #[test]
    fn aggregate_routes_by_first_record() {
        let mut agg = Aggregator::new(AggregationLimits::default());
        agg.try_push(rec("first", b"1")).unwrap();
        agg.try_push(rec("second", b"2").with_explicit_hash_key(HashKey::new(5)))
            .unwrap();
        let out = agg.finish().unwrap();
        assert_eq!(out.partition_key, AGGREGATE_PARTITION_KEY);
        assert_eq!(
            out.explicit_hash_key,
            Some(HashKey::from_partition_key("first"))
        );
        assert_eq!(&out.data[..4], &MAGIC);
        assert_eq!(out.user_records, 2);
        assert!(agg.is_empty());
    }

    #[test]
    fn matches_the_reference_bytes() {
        // Five records with keys pk-0/pk-1 alternating: the Python, Node and aiokpl aggregators
        // all produce these 107 bytes (hex captured from Python aws-kinesis-agg 1.2.3).
        const REFERENCE: &str = "f3899ac20a04706b2d300a04706b2d311a0d08001a097061796c6f61642d301a0d\
            08011a097061796c6f61642d311a0d08001a097061796c6f61642d321a0d08011a097061796c6f61642d33\
            1a0d08001a097061796c6f61642d344dfc2d4791ca5326626183e819840871";
        let mut agg = Aggregator::new(AggregationLimits::default());
        for i in 0..5 {
            agg.try_push(rec(
                &format!("pk-{}", i % 2),
                format!("payload-{i}").as_bytes(),
            ))
            .unwrap();
        }
        assert_eq!(agg.data_len(), 107);
        let out = agg.finish().unwrap();
        let hex: String = out.data.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, REFERENCE.replace(' ', ""));
    }

    #[test]
    fn keys_are_deduplicated() {
        let mut agg = Aggregator::new(AggregationLimits::default());
        let ehk = HashKey::new(123);
        agg.try_push(rec("same", b"a").with_explicit_hash_key(ehk))
            .unwrap();
        agg.try_push(rec("same", b"b").with_explicit_hash_key(ehk))
            .unwrap();
        let before = agg.data_len();
        agg.try_push(rec("same", b"c").with_explicit_hash_key(ehk))
            .unwrap();
        // Only the record entry is added: tag + length + (pk index 2 + ehk index 2 + data 3).
        assert_eq!(agg.data_len() - before, 1 + 1 + 2 + 2 + 3);
        agg.try_push(rec("new", b"d")).unwrap();
        let out = agg.finish().unwrap();
        let decoded = <proto::AggregatedRecord as Message>::decode(
            &out.data[MAGIC.len()..out.data.len() - MD5_LEN],
        )
        .unwrap();
        assert_eq!(decoded.partition_key_table.len(), 2);
        assert_eq!(decoded.explicit_hash_key_table, vec![Bytes::from("123")]);
        assert_eq!(decoded.records[3].explicit_hash_key_index, None);
    }

    #[test]
    fn keys_with_the_same_hash_keep_their_own_indices() {
        // Collisions of a 64-bit hash do not happen by chance in a test: force them.
        let mut index = KeyIndex::default();
        let mut table = Vec::new();
        let mut add = |index: &mut KeyIndex, key: &[u8], hash: u64| {
            let start = table.len();
            table.extend_from_slice(key);
            index.insert(hash, start..table.len())
        };
        assert_eq!(add(&mut index, b"alpha", 7), 0);
        assert_eq!(add(&mut index, b"beta", 7), 1);
        assert_eq!(add(&mut index, b"gamma", 9), 2);
        assert_eq!(add(&mut index, b"delta", 7), 3);
        assert_eq!(index.get(7, b"alpha", &table), Some(0));
        assert_eq!(index.get(7, b"beta", &table), Some(1));
        assert_eq!(index.get(7, b"delta", &table), Some(3));
        assert_eq!(index.get(9, b"gamma", &table), Some(2));
        assert_eq!(index.get(7, b"gamma", &table), None);
        assert_eq!(index.get(8, b"alpha", &table), None);
        assert_eq!(index.len(), 4);
        index.clear();
        assert_eq!(index.get(7, b"alpha", &table), None);
    }

    fn limits(max_bytes: usize, max_records: usize) -> AggregationLimits {
        AggregationLimits::default()
            .with_max_record_size(MaxRecordSize::LARGEST)
            .and_then(|l| l.with_max_bytes(max_bytes))
            .map(|l| l.with_max_records(NonZeroUsize::new(max_records).unwrap()))
            .unwrap()
    }

    #[test]
    fn hands_back_what_does_not_fit() {
        let mut agg = Aggregator::new(limits(200, 3));
        agg.try_push(rec("k", &[0; 50])).unwrap();
        agg.try_push(rec("k", &[1; 50])).unwrap();
        let big = rec("k", &[2; 150]);
        let back = agg.try_push(big.clone()).unwrap_err();
        assert_eq!(back.reason(), Refusal::Full);
        assert_eq!(back.into_record(), big);
        agg.try_push(rec("k", &[3; 10])).unwrap();
        // Count limit reached.
        let small = rec("k", b"");
        let back = agg.try_push(small.clone()).unwrap_err();
        assert_eq!((back.reason(), back.record()), (Refusal::Full, &small));
        assert_eq!(agg.try_push_ref(&small), Err(Refusal::Full));
        assert!(agg.size() <= 200);
        assert_eq!(agg.finish().unwrap().user_records, 3);
    }

    #[test]
    fn oversized_record_goes_alone_and_raw() {
        let mut agg = Aggregator::new(limits(100, 1000));
        let big = rec("k", &[9; 500]);
        agg.try_push(big.clone()).unwrap();
        let back = agg.try_push(rec("k", b"x")).unwrap_err();
        assert_eq!(back.into_record(), rec("k", b"x"));
        let out = agg.finish().unwrap();
        assert_eq!(out.data, big.data().clone());
        assert_eq!(out.user_records, 1);
    }

    #[test]
    fn a_record_larger_than_the_stream_takes_is_refused_even_by_an_empty_aggregator() {
        let one_mib = MaxRecordSize::DEFAULT.bytes();
        // Default limits: the stream's maximum record size is the Kinesis default, 1 MiB.
        let mut agg = Aggregator::new(AggregationLimits::default());
        let over = rec("k", &vec![0; one_mib]);
        let back = agg.try_push(over.clone()).unwrap_err();
        assert_eq!(
            back.reason(),
            Refusal::TooLarge {
                size: one_mib + 1,
                max: one_mib
            }
        );
        assert_eq!(back.into_record(), over);
        assert_eq!(
            agg.try_push_ref(&over),
            Err(Refusal::TooLarge {
                size: one_mib + 1,
                max: one_mib
            })
        );
        assert!(agg.is_empty());
        // Exactly the limit is taken (alone, raw); the stream's own limit lets more in.
        let at_limit = rec("k", &vec![0; one_mib - 1]);
        agg.try_push(at_limit).unwrap();
        assert_eq!(agg.size(), one_mib);
        let two_mib = MaxRecordSize::from_kib(2048).unwrap();
        let mut agg = Aggregator::new(
            AggregationLimits::default()
                .with_max_record_size(two_mib)
                .unwrap(),
        );
        agg.try_push(over).unwrap();
        let back = agg
            .try_push(rec("k", &vec![0; two_mib.bytes()]))
            .unwrap_err();
        assert!(matches!(back.reason(), Refusal::TooLarge { max, .. } if max == two_mib.bytes()));
        assert!(back.to_string().contains("maximum record size"), "{back}");
    }

    #[test]
    fn size_with_is_the_size_after_the_push() {
        let mut agg = Aggregator::new(AggregationLimits::default());
        let first = rec("first-key", b"payload");
        assert_eq!(agg.size_with(&first), Some(first.size()));
        agg.try_push(first).unwrap();
        let second = rec("k", b"more");
        let predicted = agg.size_with(&second);
        agg.try_push(second).unwrap();
        assert_eq!(predicted, Some(agg.size()));
    }

    #[test]
    fn limits_are_validated() {
        let default = AggregationLimits::default();
        assert!(matches!(
            default.with_max_bytes(0),
            Err(Error::OutOfRange { value: 0, .. })
        ));
        // Beyond the stream's maximum record size (1 MiB unless raised first).
        assert!(default.with_max_bytes(1024 * 1024 + 1).is_err());
        assert!(default.with_max_bytes(1024 * 1024).is_ok());
        let large = default
            .with_max_record_size(MaxRecordSize::LARGEST)
            .unwrap();
        assert!(large.with_max_bytes(10 * 1024 * 1024 + 1).is_err());
        let ten_mib = large.with_max_bytes(10 * 1024 * 1024).unwrap();
        assert_eq!(ten_mib.max_bytes(), 10 * 1024 * 1024);
        // The record size may not go below the aggregate size.
        let err = ten_mib
            .with_max_record_size(MaxRecordSize::DEFAULT)
            .unwrap_err();
        assert!(err.to_string().contains("maximum record size"), "{err}");
        assert_eq!(default.with_max_records(NonZeroUsize::MIN).max_records(), 1);
        assert_eq!(default.max_record_size(), MaxRecordSize::DEFAULT);
    }
}
