//! Turning a Kinesis record read from a stream back into user records.

use std::{collections::VecDeque, fmt, sync::Arc, time::SystemTime};

use bytes::Bytes;
use prost::Message;

use crate::{MAGIC, MD5_LEN, hash_key::HashKey, hash_key::md5_digest, proto};

/// A Kinesis record as read from a stream (`GetRecords`, `SubscribeToShard`, a Lambda event).
///
/// Made with [`StreamRecord::new`], or converted from the SDK's `Record` (feature `sdk`) or a
/// Lambda event record (feature `lambda`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamRecord {
    /// The record's sequence number.
    pub sequence_number: String,
    /// The record's partition key (for an aggregate, the producer's outer key).
    pub partition_key: String,
    /// The explicit hash key, when known. Kinesis does not return it on reads.
    pub explicit_hash_key: Option<HashKey>,
    /// The record's data.
    pub data: Bytes,
    /// When Kinesis received the record, if known.
    pub approximate_arrival_timestamp: Option<SystemTime>,
}

impl StreamRecord {
    /// A record read at `sequence_number`, with no explicit hash key (Kinesis does not return
    /// it on reads) and no arrival time; see [`with_explicit_hash_key`](Self::with_explicit_hash_key)
    /// and [`with_approximate_arrival_timestamp`](Self::with_approximate_arrival_timestamp).
    pub fn new(
        sequence_number: impl Into<String>,
        partition_key: impl Into<String>,
        data: impl Into<Bytes>,
    ) -> Self {
        StreamRecord {
            sequence_number: sequence_number.into(),
            partition_key: partition_key.into(),
            explicit_hash_key: None,
            data: data.into(),
            approximate_arrival_timestamp: None,
        }
    }

    /// The explicit hash key the record was written with, when the caller knows it.
    #[must_use]
    pub fn with_explicit_hash_key(mut self, explicit_hash_key: HashKey) -> Self {
        self.explicit_hash_key = Some(explicit_hash_key);
        self
    }

    /// When Kinesis received the record.
    #[must_use]
    pub fn with_approximate_arrival_timestamp(mut self, at: SystemTime) -> Self {
        self.approximate_arrival_timestamp = Some(at);
        self
    }
}

/// One user record: either one of an aggregate's records, or a whole record that was not an
/// aggregate.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeaggregatedRecord {
    /// Sequence number of the Kinesis record it came in (shared by an aggregate's records).
    pub sequence_number: Arc<str>,
    /// Position inside the aggregate, from 0; 0 for a record that was not aggregated.
    pub sub_sequence_number: u64,
    /// The user record's partition key.
    pub partition_key: Arc<str>,
    /// The user record's explicit hash key, if the producer gave one (and, for a record that was
    /// not aggregated, if the caller knew it).
    pub explicit_hash_key: Option<HashKey>,
    /// The payload; a slice of the Kinesis record's buffer, not a copy.
    pub data: Bytes,
    /// Whether it came out of an aggregate.
    pub aggregated: bool,
    /// When Kinesis received the enclosing record, if known.
    pub approximate_arrival_timestamp: Option<SystemTime>,
}

impl DeaggregatedRecord {
    /// The hash key the producer routed this user record by: its explicit hash key, else MD5 of
    /// its partition key. For a record that was not aggregated and whose explicit hash key is not
    /// known, this is only the partition key's hash.
    pub fn hash_key(&self) -> HashKey {
        HashKey::of_record(self.explicit_hash_key, &self.partition_key)
    }
}

/// Why a record was passed through as one ordinary record instead of being split.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PassThrough {
    /// It does not start with the aggregate magic bytes, or is shorter than the smallest aggregate.
    NotAggregated,
    /// It starts with the magic bytes but its MD5 trailer does not match the protobuf.
    ChecksumMismatch,
    /// The checksum matched but the protobuf does not decode.
    Protobuf(String),
    /// A field the format requires is missing from record `record` (or one of its tags).
    MissingField {
        /// Index of the user record.
        record: usize,
        /// The missing field's name.
        field: &'static str,
    },
    /// Record `record` points outside a key table.
    IndexOutOfTable {
        /// Index of the user record.
        record: usize,
        /// `partition_key_table` or `explicit_hash_key_table`.
        table: &'static str,
        /// The index it holds.
        index: u64,
        /// The table's length.
        len: usize,
    },
    /// Record `record` uses an explicit hash key that is not a decimal integer below 2^128.
    InvalidExplicitHashKey {
        /// Index of the user record.
        record: usize,
    },
    /// The aggregate holds no user record.
    Empty,
}

impl PassThrough {
    /// Whether the record looked like an aggregate (right magic) yet failed to verify: worth a
    /// warning, since a producer may be writing corrupt aggregates.
    pub fn is_suspicious(&self) -> bool {
        !matches!(self, PassThrough::NotAggregated)
    }
}

impl fmt::Display for PassThrough {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAggregated => f.write_str("not an aggregate (no magic or too short)"),
            Self::ChecksumMismatch => f.write_str("aggregate MD5 checksum does not match"),
            Self::Protobuf(e) => write!(f, "aggregate protobuf does not decode: {e}"),
            Self::MissingField { record, field } => {
                write!(f, "user record {record} lacks required field {field}")
            }
            Self::IndexOutOfTable {
                record,
                table,
                index,
                len,
            } => write!(
                f,
                "user record {record} points at entry {index} of {table}, which has {len} entries"
            ),
            Self::InvalidExplicitHashKey { record } => {
                write!(
                    f,
                    "user record {record} has an explicit hash key that is not a 128-bit decimal"
                )
            }
            Self::Empty => f.write_str("aggregate holds no user record"),
        }
    }
}

/// What [`deaggregate_explained`] found: the user records, and why the record was passed through
/// whole when it was.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Deaggregation {
    /// The user records, in order.
    pub records: Vec<DeaggregatedRecord>,
    /// `None` when the record was a valid aggregate and was split.
    pub pass_through: Option<PassThrough>,
}

/// Whether `data` starts like an aggregate: the magic bytes and room for a protobuf and an MD5
/// trailer. Cheap; does not verify the checksum.
pub fn has_aggregate_magic(data: &[u8]) -> bool {
    data.len() > MAGIC.len() + MD5_LEN && data[..MAGIC.len()] == MAGIC
}

/// Splits a Kinesis record into its user records.
///
/// A valid aggregate yields one record per user record, with subsequence numbers 0, 1, ... and
/// `aggregated` set; their data share the input buffer. Anything that does not verify (too short,
/// wrong magic, MD5 mismatch, protobuf error, missing required field, index outside a key table,
/// bad explicit hash key, no records) yields the record itself, whole, as one ordinary record with
/// subsequence 0, as the Java KCL passes such records through. Never panics, never loses the
/// record.
///
/// Where the Java KCL differs: on an index outside a key table it keeps the user records before
/// the bad one and drops the rest; here the whole record is passed through instead, so nothing is
/// lost. An aggregate with no user records yields nothing in the KCL and itself here.
pub fn deaggregate(record: StreamRecord) -> Vec<DeaggregatedRecord> {
    deaggregate_explained(record).records
}

/// [`deaggregate`], also telling why a record was passed through whole.
pub fn deaggregate_explained(record: StreamRecord) -> Deaggregation {
    let checked = match framed(&record.data) {
        None => Err(PassThrough::NotAggregated),
        Some((body, trailer)) => verified(md5_digest(body), trailer),
    };
    explain(record, checked)
}

/// [`deaggregate_explained`] on each of many Kinesis records (a `GetRecords` answer, say), with
/// the MD5 trailers of several aggregates verified side by side: about three times the checksum
/// throughput of one at a time on one core.
///
/// Yields one [`Deaggregation`] per record, in order, equal to what [`deaggregate_explained`]
/// gives for it: the same user records, and the same reason for a record passed through whole
/// (not an aggregate, checksum mismatch, protobuf error, ...). It reads up to 32 records ahead of
/// the one it yields, to verify their checksums together; each record is split only when its
/// turn comes.
///
/// ```
/// use kinesis_aggregation::{
///     AggregationLimits, Aggregator, StreamRecord, UserRecord, deaggregate_batch,
/// };
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut read = Vec::new();
/// for sequence in 0..10 {
///     let mut aggregator = Aggregator::new(AggregationLimits::default());
///     for i in 0..3 {
///         aggregator.try_push(UserRecord::new(format!("key-{i}"), "payload")?)?;
///     }
///     let record = aggregator.finish().ok_or("three records were added")?;
///     read.push(StreamRecord::new(sequence.to_string(), record.partition_key, record.data));
/// }
/// read.push(StreamRecord::new("10", "plain", "not an aggregate"));
/// let split: Vec<_> = deaggregate_batch(read).collect();
/// assert_eq!(split.len(), 11);
/// assert!(split[..10].iter().all(|d| d.pass_through.is_none() && d.records.len() == 3));
/// assert_eq!(split[10].records.len(), 1);
/// assert!(split[10].pass_through.is_some());
/// # Ok(())
/// # }
/// ```
pub fn deaggregate_batch<I>(records: I) -> DeaggregateBatch<I::IntoIter>
where
    I: IntoIterator<Item = StreamRecord>,
{
    DeaggregateBatch {
        records: records.into_iter(),
        checked: VecDeque::new(),
    }
}

/// Records read ahead by [`DeaggregateBatch`] to verify their checksums together: a few times
/// the lanes of the digest, so that lanes stay busy when aggregates differ in length.
const BATCH_WINDOW: usize = 32;

/// The iterator [`deaggregate_batch`] returns: one [`Deaggregation`] per Kinesis record, in
/// order.
#[derive(Debug)]
pub struct DeaggregateBatch<I> {
    records: I,
    /// Records read ahead, with the outcome of their checksum verification.
    checked: VecDeque<(StreamRecord, Result<(), PassThrough>)>,
}

impl<I: Iterator<Item = StreamRecord>> DeaggregateBatch<I> {
    /// Reads up to [`BATCH_WINDOW`] records and verifies the trailers of those framed as
    /// aggregates, together.
    fn read_ahead(&mut self) {
        let window: Vec<StreamRecord> = self.records.by_ref().take(BATCH_WINDOW).collect();
        let frames: Vec<Option<(&[u8], &[u8])>> =
            window.iter().map(|record| framed(&record.data)).collect();
        let bodies: Vec<&[u8]> = frames.iter().flatten().map(|(body, _)| *body).collect();
        let mut digests = crate::digest::md5_many(&bodies).into_iter();
        let checked: Vec<Result<(), PassThrough>> = frames
            .iter()
            .map(|frame| match (frame, frame.and_then(|_| digests.next())) {
                (Some((_, trailer)), Some(digest)) => verified(digest, trailer),
                _ => Err(PassThrough::NotAggregated),
            })
            .collect();
        self.checked.extend(window.into_iter().zip(checked));
    }
}

impl<I: Iterator<Item = StreamRecord>> Iterator for DeaggregateBatch<I> {
    type Item = Deaggregation;

    fn next(&mut self) -> Option<Deaggregation> {
        if self.checked.is_empty() {
            self.read_ahead();
        }
        let (record, checked) = self.checked.pop_front()?;
        Some(explain(record, checked))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let (low, high) = self.records.size_hint();
        let ahead = self.checked.len();
        (
            low.saturating_add(ahead),
            high.and_then(|high| high.checked_add(ahead)),
        )
    }
}

/// The protobuf and the trailer of a record framed as an aggregate (magic, something, 16 bytes),
/// or `None` when it is not.
fn framed(data: &[u8]) -> Option<(&[u8], &[u8])> {
    if !has_aggregate_magic(data) {
        return None;
    }
    let proto_end = data.len() - MD5_LEN;
    Some((&data[MAGIC.len()..proto_end], &data[proto_end..]))
}

/// Whether a framed aggregate's trailer is the MD5 of its protobuf.
fn verified(digest: [u8; MD5_LEN], trailer: &[u8]) -> Result<(), PassThrough> {
    if digest[..] == *trailer {
        Ok(())
    } else {
        Err(PassThrough::ChecksumMismatch)
    }
}

/// Splits a record whose checksum verification came out as `checked`, or passes it through.
fn explain(record: StreamRecord, checked: Result<(), PassThrough>) -> Deaggregation {
    match checked.and_then(|()| split(&record)) {
        Ok(records) => Deaggregation {
            records,
            pass_through: None,
        },
        Err(reason) => Deaggregation {
            records: vec![DeaggregatedRecord {
                sequence_number: Arc::from(record.sequence_number),
                sub_sequence_number: 0,
                partition_key: Arc::from(record.partition_key),
                explicit_hash_key: record.explicit_hash_key,
                data: record.data,
                aggregated: false,
                approximate_arrival_timestamp: record.approximate_arrival_timestamp,
            }],
            pass_through: Some(reason),
        },
    }
}

/// Splits an aggregate whose magic and checksum were verified.
fn split(record: &StreamRecord) -> Result<Vec<DeaggregatedRecord>, PassThrough> {
    let data = &record.data;
    let message_bytes = data.slice(MAGIC.len()..data.len() - MD5_LEN);
    let message = proto::AggregatedRecord::decode(message_bytes)
        .map_err(|e| PassThrough::Protobuf(e.to_string()))?;
    if message.records.is_empty() {
        return Err(PassThrough::Empty);
    }

    // Tables are decoded lazily: only entries a record uses are converted, once each.
    let mut partition_keys: Vec<Option<Arc<str>>> = vec![None; message.partition_key_table.len()];
    let mut explicit_hash_keys: Vec<Option<Option<HashKey>>> =
        vec![None; message.explicit_hash_key_table.len()];
    let sequence_number: Arc<str> = Arc::from(record.sequence_number.as_str());

    let mut out = Vec::with_capacity(message.records.len());
    for (i, user) in message.records.into_iter().enumerate() {
        let pk_index = user.partition_key_index.ok_or(PassThrough::MissingField {
            record: i,
            field: "partition_key_index",
        })?;
        let data = user.data.ok_or(PassThrough::MissingField {
            record: i,
            field: "data",
        })?;
        if user.tags.iter().any(|t| t.key.is_none()) {
            return Err(PassThrough::MissingField {
                record: i,
                field: "tags.key",
            });
        }
        let slot = table_slot(&mut partition_keys, i, "partition_key_table", pk_index)?;
        let partition_key = slot
            .get_or_insert_with(|| {
                let raw = &message.partition_key_table[pk_index as usize];
                Arc::from(String::from_utf8_lossy(raw))
            })
            .clone();
        let explicit_hash_key = match user.explicit_hash_key_index {
            None => None,
            Some(index) => {
                let slot =
                    table_slot(&mut explicit_hash_keys, i, "explicit_hash_key_table", index)?;
                let key = *slot.get_or_insert_with(|| {
                    let raw = &message.explicit_hash_key_table[index as usize];
                    std::str::from_utf8(raw)
                        .ok()
                        .and_then(HashKey::parse_lenient)
                });
                Some(key.ok_or(PassThrough::InvalidExplicitHashKey { record: i })?)
            }
        };
        out.push(DeaggregatedRecord {
            sequence_number: sequence_number.clone(),
            sub_sequence_number: i as u64,
            partition_key,
            explicit_hash_key,
            data,
            aggregated: true,
            approximate_arrival_timestamp: record.approximate_arrival_timestamp,
        });
    }
    Ok(out)
}

fn table_slot<'t, T>(
    table: &'t mut [T],
    record: usize,
    name: &'static str,
    index: u64,
) -> Result<&'t mut T, PassThrough> {
    let len = table.len();
    usize::try_from(index)
        .ok()
        .and_then(|i| table.get_mut(i))
        .ok_or(PassThrough::IndexOutOfTable {
            record,
            table: name,
            index,
            len,
        })
}
