//! Fuzzes the deaggregator: any input must come back either as valid user records that survive
//! a second round trip, or whole, as one ordinary record. Never a panic.
#![no_main]

use bytes::Bytes;
use kinesis_aggregation::{
    AggregationLimits, Aggregator, StreamRecord, UserRecord, deaggregate, deaggregate_explained,
};
use libfuzzer_sys::fuzz_target;

fn stream_record(data: Bytes) -> StreamRecord {
    StreamRecord {
        sequence_number: "49590338271490256608559692538361571095921575989136588898".into(),
        partition_key: "outer".into(),
        explicit_hash_key: None,
        data,
        approximate_arrival_timestamp: None,
    }
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
    let mut agg = Aggregator::new(AggregationLimits::new(10 * 1024 * 1024, usize::MAX).unwrap());
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
    let back = deaggregate(StreamRecord {
        explicit_hash_key: again.explicit_hash_key,
        partition_key: again.partition_key.clone(),
        ..stream_record(again.data.clone())
    });
    assert_eq!(back.len(), expected.len());
    for (got, want) in back.iter().zip(&expected) {
        assert_eq!(&*got.partition_key, want.partition_key());
        assert_eq!(&got.data, want.data());
        assert_eq!(got.explicit_hash_key, want.explicit_hash_key());
    }
});
