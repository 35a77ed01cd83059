//! Fuzzes the deaggregator: any input must come back either as valid user records that survive
//! a second round trip, or whole, as one ordinary record. Never a panic.
#![no_main]

use bytes::Bytes;
use std::num::NonZeroUsize;

use kinesis_aggregation::{
    AggregationLimits, Aggregator, MaxRecordSize, StreamRecord, UserRecord, deaggregate,
    deaggregate_explained,
};
use libfuzzer_sys::fuzz_target;

fn stream_record(data: Bytes) -> StreamRecord {
    StreamRecord::new(
        "49590338271490256608559692538361571095921575989136588898",
        "outer",
        data,
    )
}

fuzz_target!(|input: &[u8]| {
    let data = Bytes::copy_from_slice(input);
    let out = deaggregate_explained(stream_record(data.clone()));
    if out.pass_through.is_some() {
        assert_eq!(out.records.len(), 1);
        assert_eq!(out.records[0].data, data);
        assert!(!out.records[0].aggregated);
        return;
    }
    assert!(!out.records.is_empty());
    // Re-aggregate what was decoded (keys that our validation accepts) and decode again: the
    // user records must come back the same.
    let limits = AggregationLimits::default()
        .with_max_record_size(MaxRecordSize::LARGEST)
        .and_then(|limits| limits.with_max_bytes(MaxRecordSize::LARGEST.bytes()))
        .map(|limits| limits.with_max_records(NonZeroUsize::MAX))
        .unwrap();
    let mut agg = Aggregator::new(limits);
    let mut expected = Vec::new();
    for (i, user) in out.records.iter().enumerate() {
        assert_eq!(user.sub_sequence_number, i as u64);
        assert!(user.aggregated);
        let Ok(record) = UserRecord::new(user.partition_key.to_string(), user.data.clone()) else {
            continue;
        };
        let record = match user.explicit_hash_key {
            Some(key) => record.with_explicit_hash_key(key),
            None => record,
        };
        expected.push(record.clone());
        assert!(
            agg.try_push(record).is_ok(),
            "fits in 10 MiB: input was smaller"
        );
    }
    let Some(again) = agg.finish() else { return };
    let mut read = StreamRecord::new(
        "49590338271490256608559692538361571095921575989136588898",
        again.partition_key.clone(),
        again.data.clone(),
    );
    if let Some(key) = again.explicit_hash_key {
        read = read.with_explicit_hash_key(key);
    }
    let back = deaggregate(read);
    assert_eq!(back.len(), expected.len());
    for (got, want) in back.iter().zip(&expected) {
        assert_eq!(&*got.partition_key, want.partition_key());
        assert_eq!(&got.data, want.data());
        assert_eq!(got.explicit_hash_key, want.explicit_hash_key());
    }
});
