//! Helpers shared by the producer tests: deterministic records, reading a stream back as a KCL
//! consumer sees it, and checking receipts against what was read.

#![allow(clippy::unwrap_used, dead_code)]

use std::collections::HashMap;

use bytes::Bytes;
use kinesis_integration_tests::fixtures::read_shards;
use kinesis_producer::{Delivery, Producer, UserRecord};

/// Deterministic records: keys spread over the shards, sizes from 1 to ~300 bytes.
pub(crate) fn records(count: usize, keys: usize) -> Vec<UserRecord> {
    (0..count)
        .map(|i| {
            let len = 1 + (i * 37) % 300;
            let data: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
            UserRecord::new(format!("key-{}", i % keys), data).unwrap()
        })
        .collect()
}

/// A record read back: shard, partition key, data.
pub(crate) type Seen = (String, String, Bytes);

/// What a KCL consumer reads, keyed by (sequence number, subsequence number); also the number of
/// user records read (duplicates included) and the number the KCL range rule drops.
pub(crate) struct ReadBack {
    pub(crate) seen: HashMap<(String, u64), Seen>,
    pub(crate) total: usize,
    pub(crate) dropped: usize,
    /// Per shard, the user records in stream order: (partition key, data).
    pub(crate) by_shard: Vec<(String, Vec<(String, Bytes)>)>,
}

pub(crate) async fn read_back(client: &aws_sdk_kinesis::Client, stream: &str) -> ReadBack {
    let shards = read_shards(client, stream).await.unwrap();
    let mut out = ReadBack {
        seen: HashMap::new(),
        total: 0,
        dropped: 0,
        by_shard: Vec::new(),
    };
    for shard in shards {
        out.dropped += shard.dropped.len();
        let mut ordered = Vec::new();
        for record in shard.records {
            out.total += 1;
            ordered.push((record.partition_key.to_string(), record.data.clone()));
            out.seen.insert(
                (
                    record.sequence_number.to_string(),
                    record.sub_sequence_number,
                ),
                (
                    shard.shard_id.clone(),
                    record.partition_key.to_string(),
                    record.data,
                ),
            );
        }
        out.by_shard.push((shard.shard_id, ordered));
    }
    out
}

/// Every delivery is found in the stream where it says, with the record's key and data.
pub(crate) fn check_receipts<'a>(
    deliveries: impl IntoIterator<Item = (&'a UserRecord, &'a Delivery)>,
    seen: &HashMap<(String, u64), Seen>,
) {
    for (record, delivery) in deliveries {
        let key = (
            delivery.sequence_number().to_string(),
            delivery.sub_sequence_number(),
        );
        let (shard, partition_key, data) = seen.get(&key).unwrap_or_else(|| {
            panic!("acknowledged record {key:?} is not in the stream as a consumer reads it")
        });
        assert_eq!(shard.as_str(), delivery.shard_id());
        assert_eq!(partition_key, record.partition_key());
        assert_eq!(data, record.data());
        assert!(
            delivery
                .attempts()
                .last()
                .is_some_and(|a| a.error.is_none())
        );
    }
}

/// Puts every record (waiting for admission) and awaits every receipt.
pub(crate) async fn put_all(producer: &Producer, records: &[UserRecord]) -> Vec<Delivery> {
    let mut receipts = Vec::with_capacity(records.len());
    for record in records {
        receipts.push(producer.put(record.clone()).await.unwrap());
    }
    let mut deliveries = Vec::with_capacity(records.len());
    for receipt in receipts {
        deliveries.push(receipt.await.unwrap());
    }
    deliveries
}
