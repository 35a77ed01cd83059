//! Property tests of the codec: round trip, exact size prediction, limits, and malformed input.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use prost::Message;

use crate::{
    AggregationLimits, Aggregator, HashKey, KinesisRecord, MAGIC, StreamRecord, UserRecord,
    deaggregate, deaggregate_batch, deaggregate_explained, hash_key::md5_digest, proto,
};

fn partition_key() -> impl Strategy<Value = String> {
    prop_oneof![
        // Few distinct keys, so that tables de-duplicate.
        (0u8..4).prop_map(|i| format!("key-{i}")),
        "[a-zA-Z0-9]{1,20}",
        // Any Unicode, up to the 256-character limit.
        proptest::collection::vec(any::<char>(), 1..=256).prop_map(|c| c.into_iter().collect()),
    ]
}

fn hash_key() -> impl Strategy<Value = HashKey> {
    prop_oneof![
        Just(HashKey::MIN),
        Just(HashKey::MAX),
        (0u8..3).prop_map(|i| HashKey::new(u128::from(i) << 100)),
        any::<u128>().prop_map(HashKey::new),
    ]
}

fn user_record() -> impl Strategy<Value = UserRecord> {
    (
        partition_key(),
        proptest::option::of(hash_key()),
        prop_oneof![
            Just(0usize),
            1usize..300,
            Just(127),
            Just(128),
            Just(16_383),
            Just(16_384),
        ],
        any::<u8>(),
    )
        .prop_map(|(pk, ehk, len, fill)| {
            let record = UserRecord::new(pk, vec![fill; len]).unwrap();
            match ehk {
                Some(k) => record.with_explicit_hash_key(k),
                None => record,
            }
        })
}

/// Records small enough that checking every byte position of an aggregate stays cheap.
fn small_user_record() -> impl Strategy<Value = UserRecord> {
    (
        partition_key(),
        proptest::option::of(hash_key()),
        proptest::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(pk, ehk, data)| {
            let record = UserRecord::new(pk, data).unwrap();
            match ehk {
                Some(k) => record.with_explicit_hash_key(k),
                None => record,
            }
        })
}

fn limits() -> impl Strategy<Value = AggregationLimits> {
    (
        prop_oneof![Just(51_200usize), 1usize..2_000, 2_000usize..70_000],
        prop_oneof![Just(u32::MAX as usize), 1usize..10],
    )
        .prop_map(|(bytes, count)| {
            AggregationLimits::default()
                .with_max_bytes(bytes)
                .unwrap()
                .with_max_records(std::num::NonZeroUsize::new(count).unwrap())
        })
}

/// Pushes every record, finishing whenever one is handed back; checks the size prediction at
/// every step (`size_with` before a push is `size` after it, on an empty aggregator too) and the
/// limits on every output.
fn aggregate_all(limits: AggregationLimits, records: &[UserRecord]) -> Vec<KinesisRecord> {
    let mut agg = Aggregator::new(limits);
    let mut out = Vec::new();
    let finish = |agg: &mut Aggregator, out: &mut Vec<KinesisRecord>| {
        let (size, data_len, count) = (agg.size(), agg.data_len(), agg.len());
        let record = agg.finish().unwrap();
        assert_eq!(record.size(), size, "predicted size");
        assert_eq!(record.data.len(), data_len, "predicted data length");
        assert_eq!(record.user_records, count);
        assert!(count <= limits.max_records());
        if count > 1 {
            // The incremental encoding is byte for byte what a protobuf encoder writes for the
            // same message (fields in number order), as the KPL's is.
            let body = &record.data[crate::MAGIC.len()..record.data.len() - crate::MD5_LEN];
            let message = <crate::proto::AggregatedRecord as prost::Message>::decode(body).unwrap();
            assert_eq!(prost::Message::encode_to_vec(&message), body.to_vec());
        }
        if count > 1 {
            assert!(
                record.size() <= limits.max_bytes(),
                "{} > {}",
                record.size(),
                limits.max_bytes()
            );
        }
        out.push(record);
    };
    for record in records {
        if let Some(predicted) = agg.size_with(record) {
            match agg.try_push(record.clone()) {
                Ok(()) => assert_eq!(agg.size(), predicted, "size_with predicts size"),
                Err(back) => {
                    assert_eq!(back.reason(), crate::Refusal::Full);
                    assert!(predicted > limits.max_bytes(), "refused though it fits");
                    assert_eq!(back.record(), record, "the record is handed back unchanged");
                    finish(&mut agg, &mut out);
                    let predicted = agg.size_with(record);
                    agg.try_push(back.into_record()).unwrap();
                    assert_eq!(
                        predicted,
                        Some(agg.size()),
                        "size_with on an empty aggregator"
                    );
                }
            }
        } else {
            assert_eq!(agg.len(), limits.max_records());
            finish(&mut agg, &mut out);
            let predicted = agg.size_with(record);
            agg.try_push(record.clone()).unwrap();
            assert_eq!(
                predicted,
                Some(agg.size()),
                "size_with on an empty aggregator"
            );
        }
    }
    if !agg.is_empty() {
        finish(&mut agg, &mut out);
    }
    out
}

fn read_back(records: &[KinesisRecord]) -> Vec<(String, Option<HashKey>, Bytes, u64, bool)> {
    records
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            deaggregate(StreamRecord {
                sequence_number: i.to_string(),
                partition_key: r.partition_key.clone(),
                explicit_hash_key: r.explicit_hash_key,
                data: r.data.clone(),
                approximate_arrival_timestamp: None,
            })
        })
        .map(|u| {
            (
                u.partition_key.to_string(),
                u.explicit_hash_key,
                u.data,
                u.sub_sequence_number,
                u.aggregated,
            )
        })
        .collect()
}

fn stream_record(data: Bytes) -> StreamRecord {
    StreamRecord {
        sequence_number: "1".into(),
        partition_key: "outer".into(),
        explicit_hash_key: None,
        data,
        approximate_arrival_timestamp: None,
    }
}

fn assert_passed_through(data: Bytes) {
    let out = deaggregate_explained(stream_record(data.clone()));
    assert!(out.pass_through.is_some(), "expected pass-through");
    assert_eq!(out.records.len(), 1);
    let r = &out.records[0];
    assert_eq!(r.data, data);
    assert!(!r.aggregated);
    assert_eq!(r.sub_sequence_number, 0);
    assert_eq!(&*r.partition_key, "outer");
}

fn frame(message: &[u8]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_slice(&MAGIC);
    buf.put_slice(message);
    buf.put_slice(&md5_digest(message));
    buf.freeze()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_with_exact_sizes(
        limits in limits(),
        records in proptest::collection::vec(user_record(), 0..60),
    ) {
        let sent = aggregate_all(limits, &records);
        let got = read_back(&sent);
        prop_assert_eq!(got.len(), records.len());
        let mut index = 0;
        for k in &sent {
            for sub in 0..k.user_records {
                let (pk, ehk, data, sub_seq, aggregated) = &got[index];
                let want = &records[index];
                prop_assert_eq!(pk.as_str(), want.partition_key());
                prop_assert_eq!(data, want.data());
                prop_assert_eq!(*aggregated, k.is_aggregated());
                prop_assert_eq!(*sub_seq, if k.is_aggregated() { sub as u64 } else { 0 });
                prop_assert_eq!(*ehk, want.explicit_hash_key());
                index += 1;
            }
            // The aggregate lands on the shard of its first record.
            let first = &records[index - k.user_records];
            prop_assert_eq!(k.hash_key(), first.hash_key());
        }
    }

    #[test]
    fn push_by_reference_encodes_the_same_bytes(
        limits in limits(),
        records in proptest::collection::vec(user_record(), 0..40),
    ) {
        let by_value = aggregate_all(limits, &records);
        let mut agg = Aggregator::new(limits);
        let mut by_ref = Vec::new();
        for record in &records {
            if let Err(refusal) = agg.try_push_ref(record) {
                prop_assert_eq!(refusal, crate::Refusal::Full);
                by_ref.extend(agg.finish());
                prop_assert!(agg.try_push_ref(record).is_ok(), "an empty aggregator takes any record");
            }
        }
        by_ref.extend(agg.finish());
        prop_assert_eq!(by_ref, by_value);
    }

    #[test]
    fn every_truncation_passes_through(records in proptest::collection::vec(small_user_record(), 2..6)) {
        let limits = AggregationLimits::default()
            .with_max_bytes(1024 * 1024)
            .unwrap()
            .with_max_records(std::num::NonZeroUsize::new(100).unwrap());
        let sent = aggregate_all(limits, &records);
        prop_assert_eq!(sent.len(), 1);
        let data = sent[0].data.clone();
        for len in 0..data.len() {
            assert_passed_through(data.slice(..len));
        }
    }

    #[test]
    fn every_flipped_byte_passes_through(
        records in proptest::collection::vec(small_user_record(), 2..5),
        flip in 1u8..=255,
    ) {
        let limits = AggregationLimits::default()
            .with_max_bytes(1024 * 1024)
            .unwrap()
            .with_max_records(std::num::NonZeroUsize::new(100).unwrap());
        let data = aggregate_all(limits, &records)[0].data.clone();
        for at in 0..data.len() {
            let mut bad = data.to_vec();
            bad[at] ^= flip;
            assert_passed_through(Bytes::from(bad));
        }
    }

    #[test]
    fn bad_indices_and_fields_pass_through_with_valid_checksum(
        pk_table in proptest::collection::vec("[a-z]{0,4}", 0..4),
        ehk_table in proptest::collection::vec(
            prop_oneof!["[0-9]{1,39}", Just("-1".to_string()), Just("abc".to_string()),
                        Just("340282366920938463463374607431768211456".to_string())],
            0..4),
        records in proptest::collection::vec(
            (proptest::option::of(0u64..6), proptest::option::of(0u64..6),
             proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
             proptest::option::of(any::<bool>())),
            0..6),
    ) {
        let message = proto::AggregatedRecord {
            partition_key_table: pk_table.iter().map(|s| Bytes::from(s.clone())).collect(),
            explicit_hash_key_table: ehk_table.iter().map(|s| Bytes::from(s.clone())).collect(),
            records: records.iter().map(|(pk, ehk, data, tag)| proto::Record {
                partition_key_index: *pk,
                explicit_hash_key_index: *ehk,
                data: data.clone().map(Bytes::from),
                tags: tag.map(|has_key| vec![proto::Tag {
                    key: has_key.then(|| "k".to_string()),
                    value: None,
                }]).unwrap_or_default(),
            }).collect(),
        }.encode_to_vec();
        let valid = !records.is_empty() && records.iter().all(|(pk, ehk, data, tag)| {
            pk.is_some_and(|i| (i as usize) < pk_table.len())
                && data.is_some()
                && tag.is_none_or(|has_key| has_key)
                && ehk.is_none_or(|i| ehk_table.get(i as usize)
                    .is_some_and(|s| HashKey::parse_lenient(s).is_some()))
        });
        let data = frame(&message);
        if valid {
            let out = deaggregate(stream_record(data));
            prop_assert_eq!(out.len(), records.len());
            for (i, (u, (pk, ehk, d, _))) in out.iter().zip(&records).enumerate() {
                prop_assert!(u.aggregated);
                prop_assert_eq!(u.sub_sequence_number, i as u64);
                prop_assert_eq!(&*u.partition_key, pk_table[pk.unwrap() as usize].as_str());
                prop_assert_eq!(&u.data[..], &d.clone().unwrap()[..]);
                prop_assert_eq!(u.explicit_hash_key,
                    ehk.map(|i| HashKey::parse_lenient(&ehk_table[i as usize]).unwrap()));
            }
        } else {
            assert_passed_through(data);
        }
    }

    #[test]
    fn size_with_is_the_size_after_the_push(
        limits in limits(),
        records in proptest::collection::vec(user_record(), 1..40),
    ) {
        // Whatever the aggregator holds (nothing, one record sent raw, an aggregate), `size_with`
        // is what `size` says once the record is in (here pushed by reference; `aggregate_all`
        // checks pushes by value).
        let mut agg = Aggregator::new(limits);
        for record in &records {
            let predicted = agg.size_with(record);
            match agg.try_push_ref(record) {
                Ok(()) => prop_assert_eq!(predicted, Some(agg.size())),
                Err(_) => {
                    agg.finish();
                    prop_assert_eq!(agg.size_with(record), Some(record.size()));
                    prop_assert!(agg.try_push_ref(record).is_ok());
                    prop_assert_eq!(agg.size(), record.size());
                }
            }
        }
    }

    #[cfg(feature = "unstable-internals")]
    #[test]
    fn hash_key_cache_is_exact(
        keys in proptest::collection::vec(partition_key(), 1..200),
        slots in 1usize..8,
    ) {
        let mut cache = crate::HashKeyCache::new(slots);
        for key in keys.iter().chain(keys.iter().rev()) {
            prop_assert_eq!(cache.of_partition_key(key), HashKey::from_partition_key(key));
        }
    }

    #[cfg(feature = "unstable-internals")]
    #[test]
    fn aggregates_digested_together_are_those_finished_alone(
        batches in proptest::collection::vec(
            proptest::collection::vec(small_user_record(), 1..40), 1..20),
    ) {
        let mut expected = Vec::new();
        let mut ready = Vec::new();
        let mut undigested = Vec::new();
        for records in &batches {
            let (mut alone, mut deferred) = (Aggregator::new(AggregationLimits::default()), Aggregator::new(AggregationLimits::default()));
            for record in records {
                let _ = alone.try_push_ref(record);
                let _ = deferred.try_push_ref(record);
            }
            expected.push(alone.finish().unwrap());
            match deferred.finish_undigested().unwrap() {
                crate::Finished::Ready(record) => ready.push(record),
                crate::Finished::Undigested(aggregate) => {
                    prop_assert_eq!(aggregate.size(), expected.last().unwrap().size());
                    undigested.push(aggregate);
                }
            }
        }
        let mut got = crate::digest_aggregates(undigested);
        got.extend(ready);
        let lone = |r: &KinesisRecord| !r.is_aggregated();
        let mut want: Vec<_> = expected.iter().filter(|r| !lone(r)).cloned().collect();
        want.extend(expected.iter().filter(|r| lone(r)).cloned());
        prop_assert_eq!(got, want);
    }

    #[test]
    fn hash_keys_order_and_print_as_their_128_bit_values(a in any::<u128>(), b in any::<u128>()) {
        let (x, y) = (HashKey::new(a), HashKey::new(b));
        prop_assert_eq!(x.get(), a);
        prop_assert_eq!(x.cmp(&y), a.cmp(&b));
        prop_assert_eq!(x.to_string(), a.to_string());
        prop_assert_eq!(HashKey::parse(&a.to_string()).ok(), Some(x));
    }

    #[test]
    fn a_batch_deaggregates_as_each_record_alone(
        batch in proptest::collection::vec(
            (0u8..7, proptest::collection::vec(small_user_record(), 1..30),
             any::<usize>(), 1u8..=255, proptest::collection::vec(any::<u8>(), 0..120)),
            0..80),
    ) {
        // Valid aggregates of any length among every kind of record that is passed through:
        // corrupt (a flipped byte: bad magic, bad checksum or bad protobuf), truncated, framed
        // with a valid checksum around arbitrary bytes, bare magic, and not aggregated at all.
        let limits = AggregationLimits::default()
            .with_max_bytes(1024 * 1024)
            .unwrap();
        let reads: Vec<StreamRecord> = batch
            .iter()
            .enumerate()
            .map(|(i, (kind, records, at, flip, raw))| {
                let aggregate = aggregate_all(limits, records)[0].data.clone();
                let data = match kind {
                    0 | 1 => aggregate,
                    // A lone record with no data is sent raw, as nothing.
                    2 | 3 if aggregate.is_empty() => aggregate,
                    2 => {
                        let mut bad = aggregate.to_vec();
                        bad[at % aggregate.len()] ^= flip;
                        Bytes::from(bad)
                    }
                    3 => aggregate.slice(..at % aggregate.len()),
                    4 => frame(raw),
                    5 => Bytes::from([&MAGIC[..], raw].concat()),
                    _ => Bytes::from(raw.clone()),
                };
                StreamRecord::new(i.to_string(), format!("outer-{i}"), data)
            })
            .collect();
        let alone: Vec<_> = reads.iter().cloned().map(deaggregate_explained).collect();
        let together: Vec<_> = deaggregate_batch(reads.clone()).collect();
        prop_assert_eq!(together, alone);
        // Consumed a few at a time, as a consumer that hands records over in batches does.
        let mut iter = deaggregate_batch(reads.clone());
        let mut taken = Vec::new();
        while let Some(first) = iter.next() {
            taken.push(first);
            taken.extend(iter.by_ref().take(3));
        }
        prop_assert_eq!(taken.len(), reads.len());
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200), framed in any::<bool>()) {
        let data = if framed { frame(&body) } else { Bytes::from(body) };
        let out = deaggregate_explained(stream_record(data.clone()));
        match out.pass_through {
            Some(_) => prop_assert_eq!(&out.records[0].data, &data),
            None => prop_assert!(!out.records.is_empty()),
        }
    }
}

#[test]
fn payloads_share_the_input_buffer() {
    let mut agg = Aggregator::new(AggregationLimits::default());
    agg.try_push(UserRecord::new("a", vec![1u8; 64]).unwrap())
        .unwrap();
    agg.try_push(UserRecord::new("b", vec![2u8; 64]).unwrap())
        .unwrap();
    let data = agg.finish().unwrap().data;
    let range = data.as_ptr() as usize..data.as_ptr() as usize + data.len();
    for user in deaggregate(stream_record(data.clone())) {
        assert!(
            range.contains(&(user.data.as_ptr() as usize)),
            "payload was copied"
        );
    }
}

#[test]
fn java_compatible_edge_cases() {
    // Exactly magic + 16 bytes: the KCL requires more than the digest after the magic.
    let mut short = MAGIC.to_vec();
    short.extend_from_slice(&md5_digest(&[]));
    assert_passed_through(Bytes::from(short));
    // Valid frame around an empty protobuf: no records.
    assert_passed_through(frame(&[]));
    // Tables only, no record.
    let only_tables = proto::AggregatedRecord {
        partition_key_table: vec![Bytes::from_static(b"k")],
        explicit_hash_key_table: vec![],
        records: vec![],
    }
    .encode_to_vec();
    assert_passed_through(frame(&only_tables));
}
