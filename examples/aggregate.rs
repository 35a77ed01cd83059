//! Aggregates a batch of user records the way a producer would, then reads them back the way a
//! consumer would: deaggregation, subsequence numbers, and the shard hash-range filter.
//!
//! Run with `cargo run -p kinesis-examples --example aggregate`.

use bytes::Bytes;
use kinesis_aggregation::{
    AggregationLimits, Aggregator, HashKey, HashKeyRange, KinesisRecord, MaxRecordSize,
    StreamRecord, UserRecord, deaggregate,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let limit = MaxRecordSize::DEFAULT;
    let mut aggregator = Aggregator::new(AggregationLimits::default());
    let mut sent: Vec<KinesisRecord> = Vec::new();

    // 2,000 user records of 100 bytes over 50 partition keys, packed into 51,200-byte aggregates.
    let user_records = 2_000;
    for i in 0..user_records {
        let record = UserRecord::new(
            format!("device-{:03}", i % 50),
            Bytes::from(vec![b'x'; 100]),
        )?;
        limit.check(&record)?;
        // A record that does not fit is handed back: finish the aggregate, start the next.
        if let Err(refused) = aggregator.try_push(record) {
            sent.extend(aggregator.finish());
            aggregator.try_push(refused.into_record())?;
        }
    }
    sent.extend(aggregator.finish());

    // A bad partition key is refused before anything is buffered, with the limit named.
    match UserRecord::new("k".repeat(300), Bytes::new()) {
        Err(e) => println!("rejected: {e}"),
        Ok(_) => return Err("a 300-character key must be rejected".into()),
    }

    let bytes: usize = sent.iter().map(KinesisRecord::size).sum();
    println!(
        "{user_records} user records -> {} Kinesis records, {bytes} bytes ({:.1} user records per Kinesis record)",
        sent.len(),
        user_records as f64 / sent.len() as f64
    );

    // Consumer side: the lower half of the hash-key space, as a shard after a split would own.
    let shard = HashKeyRange::new(HashKey::MIN, HashKey::new(u128::MAX / 2))?;
    let (mut delivered, mut elsewhere) = (0usize, 0usize);
    for (n, kinesis_record) in sent.into_iter().enumerate() {
        let read = StreamRecord::new(
            format!("{:056}", n),
            kinesis_record.partition_key,
            kinesis_record.data,
        );
        let (inside, outside) = shard.split(deaggregate(read));
        delivered += inside.len();
        elsewhere += outside.len();
        if let (0, Some(first)) = (n, inside.first()) {
            println!(
                "first user record the lower-half shard owns: key {} sequence {} subsequence {}",
                first.partition_key, first.sequence_number, first.sub_sequence_number
            );
        }
    }
    println!(
        "read back {} user records: {delivered} owned by the lower-half shard, {elsewhere} by others",
        delivered + elsewhere
    );
    if delivered + elsewhere != user_records {
        return Err("user records were lost".into());
    }
    Ok(())
}
