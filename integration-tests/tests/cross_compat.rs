//! Cross-implementation compatibility of the aggregation format, in both directions, against the
//! three peers that install here (see `reference/peers.md`): awslabs `aws-kinesis-agg` for Python
//! (1.2.3) and for Node (4.2.8), and `aiokpl` 0.2.0.
//!
//! - ours -> peer: a few hundred seeded random record sets are aggregated by our `Aggregator`
//!   and every Kinesis record is deaggregated by each peer; every user record must come back
//!   (partition key, explicit hash key, data, order, subsequence number).
//! - peer -> ours: each peer aggregates the same sets, our `deaggregate` reads them back, our
//!   exact size prediction must equal the peer's aggregate length, and our bytes must equal the
//!   peer's wherever the two layouts are the same.
//!
//! Peer bugs and quirks are worked around where they bite, each with a comment naming it, and
//! pinned down by `malformed_aggregates_per_deaggregator`,
//! `node_aggregator_mangles_object_like_keys`, `records_at_one_mib` and
//! `python_splits_exactly_where_we_do`. `hash_keys_match_aiokpl` cross-checks the MD5 hash key.
//! A missing peer fails the test with a message telling to run `scripts/install-tools.sh`.
//!
//! The seed is `CROSS_COMPAT_SEED` (decimal or 0x-hex) or a fixed default, and is printed in the
//! assertion messages of the randomized tests.

// Test code: a failed unwrap is a failed test. clippy.toml allows it in `#[test]` functions,
// which does not reach the helpers of an integration-test crate.
#![allow(clippy::unwrap_used)]

use std::num::NonZeroUsize;

use kinesis_aggregation::{
    AggregationLimits, Aggregator, DeaggregatedRecord, HashKey, KinesisRecord, MAGIC,
    MaxRecordSize, OVERHEAD, PassThrough, StreamRecord, UserRecord, deaggregate,
    deaggregate_explained,
};
use kinesis_integration_tests::peers::{
    Decoded, DecodedUserRecord, EncodeSet, Encoded, EncodedRecord, Peer, PeerKinesisRecord,
    PeerUserRecord,
};
use md5::{Digest, Md5};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DEFAULT_SEED: u64 = 0x6b70_6c2d_6167_6731;
const ONE_MIB: usize = 1024 * 1024;

fn seed() -> u64 {
    match std::env::var("CROSS_COMPAT_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("CROSS_COMPAT_SEED={text:?} is not a u64: {e}"))
        }
        Err(_) => DEFAULT_SEED,
    }
}

// ------------------------------------------------------------------------------------------------
// Record sets
// ------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Mixed,
    Single,
    Unicode,
    EmptyData,
    /// Built so the first aggregate is exactly `max_bytes` (or, `over_by_one`, so its last
    /// record misses by one byte and goes to the next Kinesis record).
    ExactFit {
        over_by_one: bool,
    },
    IntegerKeys,
    DuplicateKeys,
    ManyKeys,
    NearOneMib,
}

#[derive(Clone, Debug)]
struct RecordSet {
    index: usize,
    kind: Kind,
    limits: AggregationLimits,
    records: Vec<UserRecord>,
}

impl RecordSet {
    /// Whether each record fits an aggregate on its own under our limit: the awslabs
    /// aggregators always aggregate, even a lone record, so only such sets are comparable.
    fn all_aggregatable(&self) -> bool {
        self.records
            .iter()
            .all(|r| lone_aggregate_len(r) < self.limits.max_bytes())
    }

    fn to_peer(&self, max_size: Option<usize>, keys_as_bytes: bool) -> EncodeSet {
        EncodeSet {
            max_size,
            max_records: None,
            keys_as_bytes,
            records: self.records.iter().map(peer_record).collect(),
        }
    }
}

fn peer_record(r: &UserRecord) -> PeerUserRecord {
    PeerUserRecord {
        pk: r.partition_key().to_owned(),
        ehk: r.explicit_hash_key().map(|k| k.to_string()),
        data: r.data().to_vec(),
    }
}

/// Data length of an aggregate holding only `r` (magic + protobuf + MD5), which our aggregator
/// never builds (it sends a lone record raw): the key tables and the one record entry, each a
/// tag, a varint length and the bytes.
fn lone_aggregate_len(r: &UserRecord) -> usize {
    let varint = |n: usize| (usize::BITS - (n | 1).leading_zeros()).div_ceil(7) as usize;
    let delimited = |len: usize| 1 + varint(len) + len;
    // partition_key_index 0 (tag + 1 byte), then the data.
    let mut entry = 2 + delimited(r.data().len());
    let mut protobuf = delimited(r.partition_key().len());
    if let Some(key) = r.explicit_hash_key() {
        protobuf += delimited(key.to_string().len());
        entry += 2;
    }
    OVERHEAD + protobuf + delimited(entry)
}

/// Limits for the test sets: records up to 10 MiB (the largest a stream may take).
fn agg_limits(max_bytes: usize, max_records: usize) -> AggregationLimits {
    AggregationLimits::default()
        .with_max_record_size(MaxRecordSize::LARGEST)
        .and_then(|limits| limits.with_max_bytes(max_bytes))
        .map(|limits| limits.with_max_records(NonZeroUsize::new(max_records).unwrap()))
        .unwrap()
}

const UNICODE_POOL: &[&str] = &[
    "é", "ß", "中", "文", "😀", "🦀", "ℕ", "e\u{301}", "Ω", "ü", "ñ", "a", "Z", "-", "_", " ", "€",
    "\u{FFFD}", "𝔘", "🇯🇵",
];

fn ascii_key(rng: &mut ChaCha8Rng) -> String {
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.";
    let len = rng.random_range(1..=30);
    let body: String = (0..len)
        .map(|_| *ALNUM.choose(rng).unwrap() as char)
        .collect();
    format!("k{body}")
}

fn unicode_key(rng: &mut ChaCha8Rng) -> String {
    // Up to 256 characters (some of them grapheme clusters of two characters, counted as such).
    let mut key = String::new();
    let mut chars = 0;
    let want = if rng.random_bool(0.2) {
        256
    } else {
        rng.random_range(1..=40)
    };
    while chars < want {
        let piece = *UNICODE_POOL.choose(rng).unwrap();
        let n = piece.chars().count();
        if chars + n > 256 {
            break;
        }
        key.push_str(piece);
        chars += n;
    }
    if key.is_empty() { "é".into() } else { key }
}

fn integer_key(rng: &mut ChaCha8Rng) -> String {
    match rng.random_range(0..4) {
        0 => rng.random_range(0..10u32).to_string(),
        1 => rng.random_range(0..1000u32).to_string(),
        2 => rng.random::<u32>().to_string(),
        _ => format!("0{}", rng.random_range(0..100u32)), // leading zero: not an array index
    }
}

fn any_key(rng: &mut ChaCha8Rng) -> String {
    match rng.random_range(0..10) {
        0..=4 => ascii_key(rng),
        5..=7 => unicode_key(rng),
        8 => integer_key(rng),
        _ => {
            if rng.random_bool(0.5) {
                "x".repeat(256)
            } else {
                "😀".repeat(256)
            }
        }
    }
}

fn any_ehk(rng: &mut ChaCha8Rng) -> HashKey {
    HashKey::new(match rng.random_range(0..8) {
        0 => 0,
        1 => u128::MAX,
        2 => rng.random_range(1..1000),
        3 => 4_294_967_294, // largest JavaScript array index
        4 => 4_294_967_295, // one past it
        _ => rng.random(),
    })
}

fn data(rng: &mut ChaCha8Rng, len: usize) -> Vec<u8> {
    let mut d = vec![0u8; len];
    rng.fill(&mut d[..]);
    d
}

fn record(rng: &mut ChaCha8Rng, pk: String, len: usize, ehk: Option<HashKey>) -> UserRecord {
    let r = UserRecord::new(pk, data(rng, len)).unwrap();
    match ehk {
        Some(k) => r.with_explicit_hash_key(k),
        None => r,
    }
}

fn random_limits(rng: &mut ChaCha8Rng) -> AggregationLimits {
    let max_bytes = match rng.random_range(0..6) {
        0 => 51_200,
        1 => ONE_MIB,
        _ => rng.random_range(300..=5_000),
    };
    let max_records = if rng.random_bool(0.7) {
        u32::MAX as usize
    } else {
        rng.random_range(1..=10)
    };
    agg_limits(max_bytes, max_records)
}

/// `n` records drawn from a pool of keys, each with an EHK with probability `p_ehk`.
fn pooled(
    rng: &mut ChaCha8Rng,
    n: usize,
    keys: &[String],
    ehks: &[HashKey],
    p_ehk: f64,
    max_data: usize,
) -> Vec<UserRecord> {
    (0..n)
        .map(|_| {
            let pk = keys.choose(rng).unwrap().clone();
            let ehk = if rng.random_bool(p_ehk) {
                ehks.choose(rng).copied()
            } else {
                None
            };
            let len = rng.random_range(0..=max_data);
            record(rng, pk, len, ehk)
        })
        .collect()
}

/// Records whose first aggregate is exactly `max_bytes` (partition key "a" + data), followed by
/// one more record; with `over_by_one` the filling record is one byte too big instead.
fn exact_fit(rng: &mut ChaCha8Rng, max_bytes: usize, over_by_one: bool) -> Vec<UserRecord> {
    let limits = agg_limits(max_bytes, u32::MAX as usize);
    loop {
        let mut agg = Aggregator::new(limits);
        let mut records = Vec::new();
        let head = rng.random_range(1..=8);
        for _ in 0..head {
            let pk = if rng.random_bool(0.3) {
                unicode_key(rng)
            } else {
                ascii_key(rng)
            };
            let ehk = rng.random_bool(0.2).then(|| any_ehk(rng));
            let len = rng.random_range(0..=max_bytes / 20);
            let r = record(rng, pk, len, ehk);
            if agg.try_push(r.clone()).is_err() {
                break;
            }
            records.push(r);
        }
        if records.is_empty() {
            continue;
        }
        // The filling record: search its data length so the total is exactly max_bytes (a
        // varint growing by a byte can skip the exact value; then try another key).
        let pk = ascii_key(rng);
        let ehk = rng.random_bool(0.3).then(|| any_ehk(rng));
        let probe = |len: usize| {
            let mut r = UserRecord::new(pk.clone(), vec![0u8; len]).unwrap();
            if let Some(k) = ehk {
                r = r.with_explicit_hash_key(k);
            }
            agg.size_with(&r).unwrap()
        };
        let base = probe(0);
        if base > max_bytes {
            continue;
        }
        let guess = max_bytes - base;
        let Some(len) = (guess.saturating_sub(8)..=guess)
            .rev()
            .find(|&l| probe(l) == max_bytes)
        else {
            continue;
        };
        let len = if over_by_one { len + 1 } else { len };
        records.push(record(rng, pk, len, ehk));
        let tail_key = ascii_key(rng);
        records.push(record(rng, tail_key, 5, None));
        return records;
    }
}

fn record_sets(seed: u64) -> Vec<RecordSet> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rng = &mut rng;
    let mut sets = Vec::new();
    let mut push = |kind, limits, records| {
        let index = sets.len();
        sets.push(RecordSet {
            index,
            kind,
            limits,
            records,
        })
    };
    for i in 0..330 {
        match i % 11 {
            0..=2 => {
                let n = rng.random_range(2..=40);
                let keys: Vec<String> =
                    (0..rng.random_range(1..=8)).map(|_| any_key(rng)).collect();
                let ehks: Vec<HashKey> =
                    (0..rng.random_range(1..=4)).map(|_| any_ehk(rng)).collect();
                let p = *[0.0, 0.0, 0.25, 0.5, 1.0].choose(rng).unwrap();
                let records = pooled(rng, n, &keys, &ehks, p, 200);
                push(Kind::Mixed, random_limits(rng), records);
            }
            3 => {
                let pk = any_key(rng);
                let ehk = rng.random_bool(0.5).then(|| any_ehk(rng));
                let len = rng.random_range(0..=500);
                let records = vec![record(rng, pk, len, ehk)];
                push(Kind::Single, random_limits(rng), records);
            }
            4 => {
                let n = rng.random_range(2..=20);
                let keys: Vec<String> = (0..rng.random_range(1..=6))
                    .map(|_| unicode_key(rng))
                    .collect();
                let ehks: Vec<HashKey> = (0..2).map(|_| any_ehk(rng)).collect();
                let p = if rng.random_bool(0.6) { 0.0 } else { 0.4 };
                let records = pooled(rng, n, &keys, &ehks, p, 100);
                push(Kind::Unicode, random_limits(rng), records);
            }
            5 => {
                let n = rng.random_range(1..=20);
                let keys: Vec<String> =
                    (0..rng.random_range(1..=4)).map(|_| any_key(rng)).collect();
                let ehks: Vec<HashKey> = (0..2).map(|_| any_ehk(rng)).collect();
                let p = *[0.0, 0.5].choose(rng).unwrap();
                let records = pooled(rng, n, &keys, &ehks, p, 0);
                push(Kind::EmptyData, random_limits(rng), records);
            }
            6 | 7 => {
                let over_by_one = i % 11 == 7;
                let max_bytes = rng.random_range(500..=60_000);
                let records = exact_fit(rng, max_bytes, over_by_one);
                let limits = agg_limits(max_bytes, u32::MAX as usize);
                push(Kind::ExactFit { over_by_one }, limits, records);
            }
            8 => {
                let n = rng.random_range(2..=30);
                let keys: Vec<String> = (0..rng.random_range(2..=6))
                    .map(|_| integer_key(rng))
                    .collect();
                let ehks: Vec<HashKey> = (0..3)
                    .map(|_| HashKey::new(rng.random_range(0..2000)))
                    .collect();
                let p = *[0.0, 0.5, 1.0].choose(rng).unwrap();
                let records = pooled(rng, n, &keys, &ehks, p, 50);
                push(Kind::IntegerKeys, random_limits(rng), records);
            }
            _ => {
                let n = rng.random_range(50..=200);
                let keys = vec![any_key(rng)];
                let ehks = vec![any_ehk(rng)];
                let p = *[0.0, 1.0].choose(rng).unwrap();
                let records = pooled(rng, n, &keys, &ehks, p, 60);
                let limits = agg_limits(rng.random_range(400..=3_000), u32::MAX as usize);
                push(Kind::DuplicateKeys, limits, records);
            }
        }
    }
    // Key tables past 127 entries: two-byte indices.
    for p_ehk in [0.0, 0.6] {
        let keys: Vec<String> = (0..300).map(|i| format!("key-{i}")).collect();
        let ehks: Vec<HashKey> = (0..200).map(|_| HashKey::new(rng.random())).collect();
        let records = pooled(rng, 1000, &keys, &ehks, p_ehk, 20);
        push(Kind::ManyKeys, AggregationLimits::default(), records);
    }
    // Near 1 MiB: the largest record Kinesis takes (sent alone, raw), an aggregate of exactly
    // 1 MiB, and a record too big to share an aggregate followed by small ones.
    let mib = agg_limits(ONE_MIB, u32::MAX as usize);
    push(
        Kind::NearOneMib,
        mib,
        vec![record(rng, "big".into(), ONE_MIB - 3, None)],
    );
    let fill = exact_fit(rng, ONE_MIB, false);
    push(Kind::NearOneMib, mib, fill);
    let mut tail = vec![record(rng, "big".into(), ONE_MIB - 100, Some(HashKey::MAX))];
    tail.extend((0..3).map(|i| record(rng, format!("small-{i}"), 10, None)));
    push(Kind::NearOneMib, mib, tail);
    sets
}

// ------------------------------------------------------------------------------------------------
// Our side
// ------------------------------------------------------------------------------------------------

/// Aggregates a set with our `Aggregator` (push until it hands a record back, finish, continue),
/// checking the size predictions and limits on the way.
fn encode_ours(set: &RecordSet, seed: u64) -> Vec<KinesisRecord> {
    let ctx = format!("seed {seed:#x}, set {} ({:?})", set.index, set.kind);
    let mut agg = Aggregator::new(set.limits);
    let mut out = Vec::new();
    let finish = |agg: &mut Aggregator, out: &mut Vec<KinesisRecord>| {
        let (size, data_len, n) = (agg.size(), agg.data_len(), agg.len());
        let k = agg.finish().unwrap();
        assert_eq!(k.size(), size, "{ctx}: size prediction");
        assert_eq!(k.data.len(), data_len, "{ctx}: data_len prediction");
        assert_eq!(k.user_records, n, "{ctx}");
        assert!(
            n <= set.limits.max_records(),
            "{ctx}: {n} records in one aggregate"
        );
        if n > 1 {
            assert!(
                k.size() <= set.limits.max_bytes(),
                "{ctx}: aggregate of {} bytes",
                k.size()
            );
            assert_eq!(k.partition_key, "a", "{ctx}");
            assert_eq!(&k.data[..4], &MAGIC, "{ctx}");
        }
        out.push(k);
    };
    for r in set.records.iter().cloned() {
        if let Err(back) = agg.try_push(r) {
            finish(&mut agg, &mut out);
            agg.try_push(back.into_record())
                .expect("an empty aggregator takes any record");
        }
    }
    finish(&mut agg, &mut out);
    assert_eq!(
        out.iter().map(|k| k.user_records).sum::<usize>(),
        set.records.len(),
        "{ctx}"
    );
    if let Kind::ExactFit { over_by_one } = set.kind {
        let first = &out[0];
        if over_by_one {
            assert!(
                first.size() < set.limits.max_bytes(),
                "{ctx}: {}",
                first.size()
            );
        } else {
            assert_eq!(first.size(), set.limits.max_bytes(), "{ctx}: exact fit");
        }
    }
    out
}

/// Our re-encoding of exactly these records as one Kinesis record's data: the predicted data
/// length of the aggregate, and its bytes (none for one record, which we send raw).
fn our_aggregate_of(records: &[UserRecord]) -> (usize, Option<Vec<u8>>) {
    if records.len() == 1 {
        return (lone_aggregate_len(&records[0]), None);
    }
    let mut agg = Aggregator::new(agg_limits(10 * ONE_MIB, u32::MAX as usize));
    for r in records {
        agg.try_push(r.clone()).expect("10 MiB holds the test sets");
    }
    let predicted = agg.data_len();
    let k = agg.finish().unwrap();
    assert_eq!(k.data.len(), predicted);
    (predicted, Some(k.data.to_vec()))
}

fn stream_record(pk: &str, seq: String, data: Vec<u8>) -> StreamRecord {
    StreamRecord::new(seq, pk, data)
}

/// The EHK table of an aggregate of these records, in our (insertion) order.
fn ehk_table(records: &[UserRecord]) -> Vec<HashKey> {
    let mut table = Vec::new();
    for k in records.iter().filter_map(UserRecord::explicit_hash_key) {
        if !table.contains(&k) {
            table.push(k);
        }
    }
    table
}

// ------------------------------------------------------------------------------------------------
// ours -> peer
// ------------------------------------------------------------------------------------------------

fn ours_to_peer(peer: Peer) {
    let seed = seed();
    let sets = record_sets(seed);
    assert!(sets.len() >= 300);
    // Every set becomes one or more Kinesis records; all of them go to the peer in one launch.
    let mut kinesis = Vec::new(); // (set index, first user record index, record)
    for set in &sets {
        let mut first = 0;
        for k in encode_ours(set, seed) {
            let n = k.user_records;
            kinesis.push((set.index, first, k));
            first += n;
        }
    }
    let inputs: Vec<PeerKinesisRecord> = kinesis
        .iter()
        .enumerate()
        .map(|(i, (_, _, k))| PeerKinesisRecord {
            pk: k.partition_key.clone(),
            seq: format!("{}", 49_000_000_000u64 + i as u64),
            data: k.data.to_vec(),
        })
        .collect();
    let decoded = peer.decode(&inputs).unwrap();

    let mut aggregated = 0;
    let mut raw = 0;
    let mut ehk_bug_hits = 0;
    for ((set_index, first, k), Decoded { records, error }) in kinesis.iter().zip(&decoded) {
        let set = &sets[*set_index];
        let expected = &set.records[*first..*first + k.user_records];
        let ctx = format!(
            "seed {seed:#x}, set {set_index} ({:?}), user records {first}..{}, peer {}",
            set.kind,
            first + k.user_records,
            peer.name()
        );
        assert_eq!(error, &None, "{ctx}: the peer failed to read our record");
        assert_eq!(records.len(), expected.len(), "{ctx}: user record count");
        if !k.is_aggregated() {
            // A lone record is sent raw: each peer passes it through as an ordinary record.
            raw += 1;
            let got = &records[0];
            assert_eq!(got.aggregated, Some(false), "{ctx}");
            assert_eq!(
                got.pk.as_deref(),
                Some(expected[0].partition_key()),
                "{ctx}"
            );
            assert_eq!(&got.data[..], &expected[0].data()[..], "{ctx}");
            assert_eq!(got.sub, None, "{ctx}");
            continue;
        }
        aggregated += 1;
        let table = ehk_table(expected);
        for (i, (got, want)) in records.iter().zip(expected).enumerate() {
            let ctx = format!("{ctx}, user record {i}");
            assert_eq!(got.aggregated, Some(true), "{ctx}");
            assert_eq!(got.pk.as_deref(), Some(want.partition_key()), "{ctx}");
            assert_eq!(&got.data[..], &want.data()[..], "{ctx}");
            // aiokpl's decode_aggregated gives no subsequence number; order is checked above.
            if peer != Peer::Aiokpl {
                assert_eq!(got.sub, Some(i as u64), "{ctx}: subsequence number");
            }
            let want_ehk = want.explicit_hash_key().map(|k| k.to_string());
            match (&want_ehk, peer) {
                (None, Peer::Python | Peer::Node) if !table.is_empty() => {
                    // Peer bug (Python iter_deaggregate_records, Node deaggregate): a record
                    // without explicit_hash_key_index reads the proto default 0 and gets the
                    // table's first EHK instead of none.
                    ehk_bug_hits += 1;
                    assert_eq!(
                        got.ehk,
                        Some(table[0].to_string()),
                        "{ctx}: EHK (table[0] bug)"
                    );
                }
                _ => assert_eq!(got.ehk, want_ehk, "{ctx}: EHK"),
            }
        }
    }
    eprintln!(
        "{}: seed {seed:#x}: {} sets, {aggregated} aggregates and {raw} raw records read back; \
         {ehk_bug_hits} records hit the first-EHK bug",
        peer.name(),
        sets.len()
    );
    assert!(aggregated > 300 && raw > 30, "seed {seed:#x}: coverage");
}

#[test]
fn ours_to_python() {
    ours_to_peer(Peer::Python);
}

#[test]
fn ours_to_node() {
    ours_to_peer(Peer::Node);
}

#[test]
fn ours_to_aiokpl() {
    ours_to_peer(Peer::Aiokpl);
}

// ------------------------------------------------------------------------------------------------
// peer -> ours
// ------------------------------------------------------------------------------------------------

/// Whether JavaScript lists `key` first in `Object.keys` order: a canonical array index
/// ("0" or no leading zero, below 2^32 - 1).
fn is_js_array_index(key: &str) -> bool {
    !key.is_empty()
        && key.bytes().all(|b| b.is_ascii_digit())
        && (key == "0" || !key.starts_with('0'))
        && key.parse::<u64>().is_ok_and(|v| v < u32::MAX as u64)
}

/// The Node aggregator's key table: `Object.keys` of a `{key: index}` object, which lists array
/// indices first in numeric order, then the other keys in insertion order.
fn js_object_keys(insertion_order: &[String]) -> Vec<String> {
    let mut indices: Vec<&String> = insertion_order
        .iter()
        .filter(|k| is_js_array_index(k))
        .collect();
    indices.sort_by_key(|k| k.parse::<u64>().unwrap_or(0));
    indices
        .into_iter()
        .chain(insertion_order.iter().filter(|k| !is_js_array_index(k)))
        .cloned()
        .collect()
}

fn insertion_order(keys: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for k in keys {
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

/// What a reader gets from a Node aggregate of `records`: Node bug (kpl-agg.js aggregateRecord)
/// — the tables are written in `Object.keys` order while each record keeps its insertion index,
/// so with integer-like keys (partition keys such as "42", and any EHK below 2^32 - 1) records
/// point at the wrong keys. Returns the (partition key, EHK) each record reads back, and whether
/// the layout equals ours.
fn node_reads_back(records: &[UserRecord]) -> (Vec<(String, Option<String>)>, bool) {
    let pks = insertion_order(records.iter().map(|r| r.partition_key().to_owned()));
    let ehks = insertion_order(
        records
            .iter()
            .filter_map(|r| r.explicit_hash_key().map(|k| k.to_string())),
    );
    let (pk_table, ehk_table) = (js_object_keys(&pks), js_object_keys(&ehks));
    let same = pk_table == pks && ehk_table == ehks;
    let position = |table: &[String], k: &str| table.iter().position(|t| t == k).unwrap();
    let read = records
        .iter()
        .map(|r| {
            let pk = pk_table[position(&pks, r.partition_key())].clone();
            let ehk = r
                .explicit_hash_key()
                .map(|k| ehk_table[position(&ehks, &k.to_string())].clone());
            (pk, ehk)
        })
        .collect();
    (read, same)
}

/// Checks one peer's aggregation of every comparable set against our reader and our encoder.
fn peer_to_ours(peer: Peer) {
    let seed = seed();
    let sets: Vec<RecordSet> = record_sets(seed)
        .into_iter()
        // Sets with a record too big to share an aggregate are covered by
        // `records_too_big_to_aggregate`: the awslabs aggregators drop or reject them.
        .filter(RecordSet::all_aggregatable)
        .collect();
    assert!(
        sets.len() >= 300,
        "seed {seed:#x}: only {} comparable sets",
        sets.len()
    );
    let requests: Vec<EncodeSet> = sets
        .iter()
        .map(|s| {
            let max_size = match peer {
                // Python and Node bound the aggregate's data; our limit also counts the outer
                // partition key "a", so their data limit is one byte less.
                Peer::Python | Peer::Node => s.limits.max_bytes() - 1,
                // aiokpl's aggregation_max_size is compared with its own size estimate.
                Peer::Aiokpl => s.limits.max_bytes(),
            };
            let mut request = s.to_peer(Some(max_size), false);
            if peer == Peer::Aiokpl {
                request.max_records = Some(s.limits.max_records());
            }
            request
        })
        .collect();
    let encoded = peer.encode(&requests).unwrap();

    let (mut aggregates, mut byte_equal, mut over_limit, mut reordered) = (0, 0, 0, 0);
    let mut worst_excess = 0;
    let mut seq = 0u64;
    for (set, Encoded { records, error }) in sets.iter().zip(&encoded) {
        let ctx = format!(
            "seed {seed:#x}, set {} ({:?}), peer {}",
            set.index,
            set.kind,
            peer.name()
        );
        assert_eq!(error, &None, "{ctx}: the peer rejected the set");
        let mut next = 0; // index of the set's next user record
        for (j, k) in records.iter().enumerate() {
            let ctx = format!("{ctx}, Kinesis record {j}");
            seq += 1;
            let ours = deaggregate_explained(stream_record(
                k.pk.as_deref().unwrap_or("a"),
                seq.to_string(),
                k.data.clone(),
            ));
            let n = ours.records.len();
            assert!(
                next + n <= set.records.len(),
                "{ctx}: more user records than were put"
            );
            let expected = &set.records[next..next + n];
            next += n;
            check_outer_keys(peer, k, expected, &ctx);

            if ours.pass_through.is_some() {
                // Only aiokpl sends a lone record raw (as the KPL and we do); the awslabs
                // aggregators aggregate even a single record.
                assert_eq!(peer, Peer::Aiokpl, "{ctx}: {:?}", ours.pass_through);
                assert_eq!(ours.pass_through, Some(PassThrough::NotAggregated), "{ctx}");
                let got = &ours.records[0];
                assert!(!got.aggregated, "{ctx}");
                assert_eq!(&*got.partition_key, expected[0].partition_key(), "{ctx}");
                assert_eq!(&got.data[..], &expected[0].data()[..], "{ctx}");
                continue;
            }
            aggregates += 1;
            let (want_keys, same_layout) = match peer {
                Peer::Node => node_reads_back(expected),
                Peer::Python | Peer::Aiokpl => (
                    expected
                        .iter()
                        .map(|r| {
                            let ehk = r.explicit_hash_key().map(|k| k.to_string());
                            (r.partition_key().to_owned(), ehk)
                        })
                        .collect(),
                    true,
                ),
            };
            if !same_layout {
                reordered += 1;
            }
            check_user_records(&ours.records, expected, &want_keys, &ctx);

            // Our exact size prediction for the same user records equals the peer's length
            // (a reordered table has the same entries and indices, so the same length), and
            // where the layout is the same (always for Python and aiokpl, for Node unless the
            // Object.keys bug reordered a table) our bytes equal the peer's.
            let (predicted, bytes) = our_aggregate_of(expected);
            assert_eq!(predicted, k.data.len(), "{ctx}: our predicted length");
            if let (true, Some(bytes)) = (same_layout, bytes) {
                assert!(bytes == k.data, "{ctx}: our bytes differ from the peer's");
                byte_equal += 1;
            }
            let limit = set.limits.max_bytes() - 1;
            if k.data.len() > limit {
                over_limit += 1;
                worst_excess = worst_excess.max(k.data.len() - limit);
                match peer {
                    // Node quirk: its size accounting counts a partition key's UTF-16 code
                    // units (`string.length`), not its UTF-8 bytes, so multi-byte keys
                    // overflow the limit.
                    Peer::Node => assert!(
                        expected.iter().any(|r| !r.partition_key().is_ascii()),
                        "{ctx}: over the limit ({} > {limit}) with ASCII keys",
                        k.data.len()
                    ),
                    // aiokpl quirk: it closes a batch on its size estimate, which ignores the 20
                    // bytes of magic and MD5 and charges fixed framing (8 bytes a record, 3 a
                    // key) that undercounts records with an EHK or 16 KiB of data. The
                    // estimate itself stays within the limit.
                    Peer::Aiokpl => {
                        let estimate = aiokpl_size_estimate(expected);
                        assert!(
                            estimate <= set.limits.max_bytes(),
                            "{ctx}: estimate {estimate}, real {}",
                            k.data.len()
                        );
                    }
                    Peer::Python => panic!("{ctx}: {} bytes > {limit}", k.data.len()),
                }
            }
        }
        assert_eq!(next, set.records.len(), "{ctx}: user records lost");
    }
    eprintln!(
        "{}: seed {seed:#x}: {} sets, {aggregates} aggregates read back, {byte_equal} \
         byte-equal to ours, {reordered} with reordered tables, {over_limit} over the limit \
         (by up to {worst_excess} bytes)",
        peer.name(),
        sets.len()
    );
    assert!(aggregates > 300, "seed {seed:#x}: coverage");
    assert!(
        byte_equal > 250,
        "seed {seed:#x}: only {byte_equal} byte-equal aggregates"
    );
}

/// aiokpl's `AggregatedBatch.size`: 8 bytes of framing per record plus its data, 3 bytes plus
/// the UTF-8 length per distinct partition key and per distinct EHK.
fn aiokpl_size_estimate(records: &[UserRecord]) -> usize {
    let pks = insertion_order(records.iter().map(|r| r.partition_key().to_owned()));
    let ehks = insertion_order(
        records
            .iter()
            .filter_map(|r| r.explicit_hash_key().map(|k| k.to_string())),
    );
    records.iter().map(|r| 8 + r.data().len()).sum::<usize>()
        + pks.iter().chain(&ehks).map(|k| 3 + k.len()).sum::<usize>()
}

fn check_user_records(
    got: &[DeaggregatedRecord],
    expected: &[UserRecord],
    want_keys: &[(String, Option<String>)],
    ctx: &str,
) {
    for (i, ((g, w), (pk, ehk))) in got.iter().zip(expected).zip(want_keys).enumerate() {
        let ctx = format!("{ctx}, user record {i}");
        assert!(g.aggregated, "{ctx}");
        assert_eq!(g.sub_sequence_number, i as u64, "{ctx}");
        assert_eq!(&*g.partition_key, pk.as_str(), "{ctx}");
        assert_eq!(g.explicit_hash_key.map(|k| k.to_string()), *ehk, "{ctx}");
        assert_eq!(&g.data[..], &w.data()[..], "{ctx}");
    }
}

/// The outer partition key and EHK each peer gives its Kinesis records.
fn check_outer_keys(peer: Peer, k: &EncodedRecord, expected: &[UserRecord], ctx: &str) {
    let first = &expected[0];
    let first_ehk = first.explicit_hash_key().map(|h| h.to_string());
    match peer {
        // Python: the first user record's own partition key and EHK, None when it has none —
        // it never derives the hash key, so an aggregate lands on the first key's shard only by
        // way of its partition key (AggRecord.add_user_record).
        Peer::Python => {
            assert_eq!(
                k.pk.as_deref(),
                Some(first.partition_key()),
                "{ctx}: outer key"
            );
            assert_eq!(k.ehk, first_ehk, "{ctx}: outer EHK");
        }
        // Node: the first record's partition key; the first record's EHK if any record of the
        // aggregate has one (so none when only a later record has one).
        Peer::Node => {
            assert_eq!(
                k.pk.as_deref(),
                Some(first.partition_key()),
                "{ctx}: outer key"
            );
            let any = expected.iter().any(|r| r.explicit_hash_key().is_some());
            assert_eq!(
                k.ehk,
                if any { first_ehk } else { None },
                "{ctx}: outer EHK"
            );
        }
        // aiokpl, like the KPL and us: an aggregate has key "a" and the first record's hash key
        // (its EHK, else MD5 of its partition key); a lone record keeps its own keys.
        Peer::Aiokpl => {
            if expected.len() > 1 {
                assert_eq!(k.pk.as_deref(), Some("a"), "{ctx}: outer key");
                assert_eq!(
                    k.ehk,
                    Some(first.hash_key().to_string()),
                    "{ctx}: outer EHK"
                );
            } else {
                assert_eq!(
                    k.pk.as_deref(),
                    Some(first.partition_key()),
                    "{ctx}: outer key"
                );
                assert_eq!(k.ehk, first_ehk, "{ctx}: outer EHK");
            }
        }
    }
}

#[test]
fn python_to_ours() {
    peer_to_ours(Peer::Python);
}

#[test]
fn node_to_ours() {
    peer_to_ours(Peer::Node);
}

#[test]
fn aiokpl_to_ours() {
    peer_to_ours(Peer::Aiokpl);
}

/// With keys passed as `bytes`, Python's size accounting is exact, and with a data limit one
/// byte below ours it must split every set exactly where we do. (With `str` keys, its
/// documented usage, it never finds a repeated key — `KeySet.contains` looks the UTF-8 bytes up
/// in a table of `str` — so it charges every record for its keys again and closes aggregates
/// early; `python_to_ours` covers that mode.)
#[test]
fn python_splits_exactly_where_we_do() {
    let seed = seed();
    let sets: Vec<RecordSet> = record_sets(seed)
        .into_iter()
        .filter(RecordSet::all_aggregatable)
        .collect();
    let requests: Vec<EncodeSet> = sets
        .iter()
        .map(|s| s.to_peer(Some(s.limits.max_bytes() - 1), true))
        .collect();
    let encoded = Peer::Python.encode(&requests).unwrap();
    let mut compared = 0;
    for (set, theirs) in sets.iter().zip(&encoded) {
        let ctx = format!("seed {seed:#x}, set {} ({:?})", set.index, set.kind);
        assert_eq!(theirs.error, None, "{ctx}");
        // Python has no record-count limit: compare with ours without one.
        let unlimited = RecordSet {
            limits: agg_limits(set.limits.max_bytes(), u32::MAX as usize),
            ..set.clone()
        };
        let ours = encode_ours(&unlimited, seed);
        let our_counts: Vec<usize> = ours.iter().map(|k| k.user_records).collect();
        let their_counts: Vec<usize> = theirs
            .records
            .iter()
            .map(|k| k.user_records.unwrap())
            .collect();
        assert_eq!(our_counts, their_counts, "{ctx}: split points");
        let mut next = 0;
        for (o, t) in ours.iter().zip(&theirs.records) {
            if o.is_aggregated() {
                assert!(o.data == t.data, "{ctx}: bytes differ");
                compared += 1;
            } else {
                // Python aggregates a lone record too (we send it raw): same length as our
                // prediction for a one-record aggregate.
                assert_eq!(
                    t.data.len(),
                    lone_aggregate_len(&set.records[next]),
                    "{ctx}"
                );
                assert_eq!(&t.data[..4], &MAGIC, "{ctx}");
            }
            next += o.user_records;
        }
    }
    eprintln!(
        "seed {seed:#x}: {} sets, {compared} aggregates byte-equal",
        sets.len()
    );
    assert!(compared > 300);
}

// ------------------------------------------------------------------------------------------------
// Hash keys
// ------------------------------------------------------------------------------------------------

/// Our MD5 hash key of random Unicode partition keys against aiokpl's `md5_hash_key`. (aiokpl's
/// aggregates' outer EHK is checked against ours in `aiokpl_to_ours`; the Python aggregator's
/// `_create_explicit_hash_key` only works on Python 2 and the Node package has none.)
#[test]
fn hash_keys_match_aiokpl() {
    let seed = seed();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4841_5348);
    let mut keys: Vec<String> = (0..500).map(|_| any_key(&mut rng)).collect();
    keys.extend(["a".into(), "é".into(), "😀".repeat(256), "0".into()]);
    let theirs = Peer::Aiokpl.hash_keys(&keys).unwrap().unwrap();
    for (key, their) in keys.iter().zip(&theirs) {
        assert_eq!(
            HashKey::from_partition_key(key).to_string(),
            *their,
            "seed {seed:#x}: hash key of {key:?}"
        );
    }
    // Python quirk: the helper calls str.encode('hex') on a byte (Python 2 only), so it raises.
    let python = Peer::Python.hash_keys(&keys[..1]).unwrap();
    assert!(
        python.is_err(),
        "Python's _create_explicit_hash_key now works: {python:?}"
    );
}

// ------------------------------------------------------------------------------------------------
// Malformed input
// ------------------------------------------------------------------------------------------------

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v > 0x7F {
        out.push((v as u8 & 0x7F) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_bytes(field: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(field << 3) | 2];
    varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

fn field_varint(field: u8, v: u64) -> Vec<u8> {
    let mut out = vec![field << 3];
    varint(v, &mut out);
    out
}

fn user_record_msg(pk_index: u64, ehk_index: Option<u64>, data: Option<&[u8]>) -> Vec<u8> {
    let mut msg = field_varint(1, pk_index);
    if let Some(i) = ehk_index {
        msg.extend(field_varint(2, i));
    }
    if let Some(d) = data {
        msg.extend(field_bytes(3, d));
    }
    field_bytes(3, &msg)
}

fn framed(proto: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(proto);
    let digest: [u8; 16] = Md5::digest(proto).into();
    out.extend_from_slice(&digest);
    out
}

/// What a deaggregator did with one bad record.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Passed through whole, as one ordinary record.
    Raw,
    /// Yielded user records with these partition keys (or none), and no error.
    Users(Vec<Option<String>>),
    /// Yielded user records with these partition keys, then reported an error.
    UsersThenError(Vec<Option<String>>),
    /// Reported an error and yielded nothing.
    Error,
}

/// A bad record and what each deaggregator does with it: (name, data, ours, Python, Node,
/// aiokpl).
type MalformedCase = (&'static str, Vec<u8>, Outcome, Outcome, Outcome, Outcome);

fn outcome_of_peer(d: &Decoded, input: &[u8]) -> Outcome {
    let users = || d.records.iter().map(|u| u.pk.clone()).collect();
    let raw = |u: &DecodedUserRecord| u.aggregated == Some(false) && u.data == input;
    match (&d.error, d.records.as_slice()) {
        (None, [one]) if raw(one) => Outcome::Raw,
        (None, _) => Outcome::Users(users()),
        (Some(_), []) => Outcome::Error,
        (Some(_), _) => Outcome::UsersThenError(users()),
    }
}

fn outcome_of_ours(input: &[u8]) -> Outcome {
    let d = deaggregate_explained(stream_record("outer", "1".into(), input.to_vec()));
    match d.pass_through {
        Some(_) => {
            assert_eq!(d.records.len(), 1);
            assert_eq!(&d.records[0].data[..], input);
            assert!(!d.records[0].aggregated);
            Outcome::Raw
        }
        None => Outcome::Users(
            d.records
                .iter()
                .map(|u| Some(u.partition_key.to_string()))
                .collect(),
        ),
    }
}

/// How each deaggregator treats aggregates that do not verify. Ours passes every one through
/// whole, as the Java KCL does, so nothing is lost; the peers lose records, raise, or invent
/// keys. Each row documents a peer quirk.
#[test]
fn malformed_aggregates_per_deaggregator() {
    use Outcome::{Error, Raw};
    let k0 = || Some("k0".to_owned());
    #[allow(non_snake_case)]
    let Users = |keys: &[Option<String>]| Outcome::Users(keys.to_vec());
    #[allow(non_snake_case)]
    let UsersThenError = |keys: &[Option<String>]| Outcome::UsersThenError(keys.to_vec());
    let valid = [
        field_bytes(1, b"k0"),
        field_bytes(2, b"77"),
        user_record_msg(0, Some(0), Some(b"d0")),
        user_record_msg(0, None, Some(b"d1")),
    ]
    .concat();
    let mut flipped = framed(&valid);
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    let mut truncated = framed(&valid);
    truncated.pop();

    let cases: Vec<MalformedCase> = vec![
        (
            "valid",
            framed(&valid),
            Users(&[k0(), k0()]),
            Users(&[k0(), k0()]),
            Users(&[k0(), k0()]),
            Users(&[k0(), k0()]),
        ),
        // Node quirk: a bad checksum raises "Invalid record checksum" (with computeChecksums)
        // instead of passing the record through; aiokpl's decode_aggregated raises too.
        ("flipped MD5 byte", flipped, Raw, Raw, Error, Error),
        ("truncated by one byte", truncated, Raw, Raw, Error, Error),
        // Only the magic: Node compares a checksum it cannot have and raises.
        ("magic only", MAGIC.to_vec(), Raw, Raw, Error, Raw),
        // Magic + MD5 of an empty protobuf: Node and aiokpl read an aggregate of no records, so
        // the Kinesis record vanishes.
        (
            "empty aggregate (20 bytes)",
            framed(&[]),
            Raw,
            Raw,
            Users(&[]),
            Users(&[]),
        ),
        // Tables but no records: Python also yields nothing; the record is lost.
        (
            "key table, no records",
            framed(&field_bytes(1, b"k0")),
            Raw,
            Users(&[]),
            Users(&[]),
            Users(&[]),
        ),
        // Python prints the IndexError to stderr and stops after record 0; Node reads an
        // `undefined` key and carries on; aiokpl raises.
        (
            "partition key index out of table",
            framed(
                &[
                    field_bytes(1, b"k0"),
                    user_record_msg(0, None, Some(b"d0")),
                    user_record_msg(5, None, Some(b"d1")),
                    user_record_msg(0, None, Some(b"d2")),
                ]
                .concat(),
            ),
            Raw,
            UsersThenError(&[k0()]),
            Users(&[k0(), None, k0()]),
            Error,
        ),
        // Python (empty EHK table) and Node both drop the bad index silently.
        (
            "EHK index out of table",
            framed(
                &[
                    field_bytes(1, b"k0"),
                    user_record_msg(0, None, Some(b"d0")),
                    user_record_msg(0, Some(3), Some(b"d1")),
                ]
                .concat(),
            ),
            Raw,
            Users(&[k0(), k0()]),
            Users(&[k0(), k0()]),
            Error,
        ),
        // A required field missing: Python's upb parser does not enforce `required` and gives
        // empty data; Node and aiokpl raise.
        (
            "record without data",
            framed(
                &[
                    field_bytes(1, b"k0"),
                    user_record_msg(0, None, None),
                    user_record_msg(0, None, Some(b"d1")),
                ]
                .concat(),
            ),
            Raw,
            Users(&[k0(), k0()]),
            Error,
            Error,
        ),
        (
            "protobuf garbage",
            framed(&[0xFF, 0xFF, 0xFF]),
            Raw,
            Raw,
            Error,
            Error,
        ),
    ];

    let inputs: Vec<PeerKinesisRecord> = cases
        .iter()
        .map(|(_, data, ..)| PeerKinesisRecord {
            pk: "outer".into(),
            seq: "1".into(),
            data: data.clone(),
        })
        .collect();
    let python = Peer::Python.decode(&inputs).unwrap();
    let node = Peer::Node.decode(&inputs).unwrap();
    let aiokpl = Peer::Aiokpl.decode(&inputs).unwrap();
    for (i, (name, data, ours, py, nd, ai)) in cases.iter().enumerate() {
        assert_eq!(&outcome_of_ours(data), ours, "ours, {name}");
        assert_eq!(
            &outcome_of_peer(&python[i], data),
            py,
            "Python, {name}: {:?}",
            python[i]
        );
        assert_eq!(
            &outcome_of_peer(&node[i], data),
            nd,
            "Node, {name}: {:?}",
            node[i]
        );
        assert_eq!(
            &outcome_of_peer(&aiokpl[i], data),
            ai,
            "aiokpl, {name}: {:?}",
            aiokpl[i]
        );
    }
    // The valid aggregate's second record has no EHK: only ours and aiokpl say so.
    let valid_ehks = |d: &Decoded| d.records.iter().map(|u| u.ehk.clone()).collect::<Vec<_>>();
    let first_ehk_bug = vec![Some("77".to_owned()), Some("77".to_owned())];
    assert_eq!(
        valid_ehks(&python[0]),
        first_ehk_bug,
        "Python first-EHK bug"
    );
    assert_eq!(valid_ehks(&node[0]), first_ehk_bug, "Node first-EHK bug");
    assert_eq!(valid_ehks(&aiokpl[0]), vec![Some("77".to_owned()), None]);
    let ours = deaggregate(stream_record("outer", "1".into(), cases[0].1.clone()));
    assert_eq!(ours[1].explicit_hash_key, None);

    // The flipped checksum in detail: ours hands the whole record back, flagged as suspicious.
    let d = deaggregate_explained(stream_record("outer", "7".into(), cases[1].1.clone()));
    assert_eq!(d.pass_through, Some(PassThrough::ChecksumMismatch));
    assert!(d.pass_through.as_ref().unwrap().is_suspicious());
    assert_eq!(&*d.records[0].sequence_number, "7");
    assert_eq!(d.records[0].sub_sequence_number, 0);
    assert_eq!(node[1].error.as_deref(), Some("Invalid record checksum"));
}

// ------------------------------------------------------------------------------------------------
// Node key-table quirks, records too big to aggregate
// ------------------------------------------------------------------------------------------------

/// Node bugs in `RecordAggregator`, which keeps its key tables in plain objects:
/// - integer-like keys are listed first by `Object.keys`, so records point at the wrong key
///   (modelled by `node_reads_back`, which the random tests use);
/// - a partition key `"__proto__"` is never stored (assigning it sets the prototype), so its
///   records read back another key;
/// - a partition key `"hasOwnProperty"` shadows the method and the next record throws.
#[test]
fn node_aggregator_mangles_object_like_keys() {
    let rec = |pk: &str, ehk: Option<u128>, data: &str| {
        let r = UserRecord::new(pk, data.as_bytes().to_vec()).unwrap();
        match ehk {
            Some(k) => r.with_explicit_hash_key(HashKey::new(k)),
            None => r,
        }
    };
    let sets = [
        vec![rec("b", None, "1"), rec("7", None, "2")],
        vec![rec("b", Some(100), "1"), rec("b", Some(5), "2")],
        vec![rec("x", None, "1"), rec("__proto__", None, "2")],
        vec![rec("hasOwnProperty", None, "1"), rec("y", None, "2")],
    ];
    let requests: Vec<EncodeSet> = sets
        .iter()
        .map(|s| EncodeSet {
            records: s.iter().map(peer_record).collect(),
            ..EncodeSet::default()
        })
        .collect();
    let out = Peer::Node.encode(&requests).unwrap();
    let read = |i: usize| {
        assert_eq!(out[i].error, None, "set {i}");
        deaggregate(stream_record(
            "a",
            "1".into(),
            out[i].records[0].data.clone(),
        ))
        .into_iter()
        .map(|u| {
            (
                u.partition_key.to_string(),
                u.explicit_hash_key.map(|k| k.get()),
            )
        })
        .collect::<Vec<_>>()
    };
    // Keys swapped.
    assert_eq!(read(0), [("7".to_owned(), None), ("b".to_owned(), None)]);
    assert_eq!(
        node_reads_back(&sets[0]).0,
        [("7".to_owned(), None), ("b".to_owned(), None)]
    );
    assert_eq!(
        read(1),
        [("b".to_owned(), Some(5)), ("b".to_owned(), Some(100))]
    );
    // "__proto__" reads back as "x".
    assert_eq!(read(2), [("x".to_owned(), None), ("x".to_owned(), None)]);
    // "hasOwnProperty" throws.
    assert!(
        out[3]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("hasOwnProperty is not a function")),
        "{:?}",
        out[3]
    );
    // Ours keeps them all.
    for set in &sets {
        let mut agg = Aggregator::new(AggregationLimits::default());
        for r in set {
            agg.try_push(r.clone()).unwrap();
        }
        let k = agg.finish().unwrap();
        let back: Vec<_> = deaggregate(stream_record("a", "1".into(), k.data.to_vec()));
        for (b, r) in back.iter().zip(set) {
            assert_eq!(&*b.partition_key, r.partition_key());
            assert_eq!(b.explicit_hash_key, r.explicit_hash_key());
        }
    }
}

/// Records at the 1 MiB limits, each peer at its default limit (1 MiB of data for the awslabs
/// aggregators, 51,200 for aiokpl):
/// - a valid record (key + data <= 1 MiB) too big to share an aggregate: we and aiokpl send it
///   alone, raw. Python quirk: when it fits neither the current aggregate nor, with the 20
///   bytes of magic and MD5, an empty one, `RecordAggregator.add_user_record` returns the
///   current aggregate and then silently drops the record. Node reports an error for it and
///   skips it.
/// - the largest record Kinesis takes: Python raises (the whole set fails); Node reports it.
/// - the awslabs aggregators bound only the data: an aggregate of exactly 1 MiB of data plus
///   its outer partition key is over Kinesis' 1 MiB record limit (key + data), so PutRecords
///   would reject it. Ours counts the key.
#[test]
fn records_at_one_mib() {
    let seed = seed();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x004d_4942);
    let small = |rng: &mut ChaCha8Rng, i: usize| record(rng, format!("small-{i}"), 10, None);
    // Its protobuf alone is 1,048,565 bytes: within Python's 1 MiB limit, but not with the 20
    // bytes of magic and MD5.
    let dropped = record(&mut rng, "big".into(), 1_048_550, None);
    assert_eq!(lone_aggregate_len(&dropped), 1_048_565 + OVERHEAD);
    let largest = record(&mut rng, "big".into(), ONE_MIB - 3, None);
    let drop_set = vec![small(&mut rng, 0), dropped.clone(), small(&mut rng, 1)];
    let largest_set = vec![small(&mut rng, 0), largest.clone(), small(&mut rng, 1)];
    // Two records making exactly 1 MiB of aggregate data (ours would need a 1 MiB + 1 limit,
    // counting the key "a").
    let head = record(&mut rng, "first".into(), 500_000, None);
    let mut probe = Aggregator::new(agg_limits(10 * ONE_MIB, 2));
    probe.try_push(head.clone()).unwrap();
    let len = (ONE_MIB - 500_100..ONE_MIB - 500_000)
        .find(|&len| {
            let r = UserRecord::new("second", vec![0u8; len]).unwrap();
            probe.size_with(&r) == Some(ONE_MIB + 1)
        })
        .expect("some length fills 1 MiB exactly");
    let full_set = vec![head, record(&mut rng, "second".into(), len, None)];
    assert_eq!(our_aggregate_of(&full_set).0, ONE_MIB);

    let sets = [drop_set.clone(), largest_set.clone(), full_set.clone()];
    let requests: Vec<EncodeSet> = sets
        .iter()
        .map(|s| EncodeSet {
            records: s.iter().map(peer_record).collect(),
            ..EncodeSet::default()
        })
        .collect();
    let read_all = |e: &Encoded| -> Vec<Vec<u8>> {
        e.records
            .iter()
            .flat_map(|k| deaggregate(stream_record("a", "1".into(), k.data.clone())))
            .map(|u| u.data.to_vec())
            .collect()
    };
    let datas = |s: &[UserRecord]| s.iter().map(|r| r.data().to_vec()).collect::<Vec<_>>();

    // Ours, at the default 51,200 limit, and aiokpl: three raw records each time.
    for set in &sets[..2] {
        let ours = encode_ours(
            &RecordSet {
                index: 0,
                kind: Kind::NearOneMib,
                limits: AggregationLimits::default(),
                records: set.clone(),
            },
            seed,
        );
        assert_eq!(
            ours.iter().map(|k| k.user_records).collect::<Vec<_>>(),
            [1, 1, 1]
        );
    }
    let aiokpl = Peer::Aiokpl.encode(&requests).unwrap();
    for (e, set) in aiokpl.iter().zip(&sets[..2]) {
        assert_eq!(e.error, None);
        assert_eq!(
            e.records.iter().map(|k| k.user_records).collect::<Vec<_>>(),
            [Some(1); 3]
        );
        assert_eq!(read_all(e), datas(set));
    }

    let python = Peer::Python.encode(&requests).unwrap();
    assert_eq!(python[0].error, None, "the drop is silent");
    assert_eq!(
        read_all(&python[0]),
        datas(&[drop_set[0].clone(), drop_set[2].clone()])
    );
    assert!(
        python[1]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("too big to fit")),
        "{:?}",
        python[1].error
    );
    assert_eq!(python[2].records.len(), 1);
    let k = &python[2].records[0];
    assert_eq!(k.data.len(), ONE_MIB);
    assert!(
        k.pk.as_ref().unwrap().len() + k.data.len() > ONE_MIB,
        "over the Kinesis limit"
    );
    assert_eq!(read_all(&python[2]), datas(&full_set));

    let node = Peer::Node.encode(&requests).unwrap();
    for (e, set) in node.iter().zip(&sets[..2]) {
        assert!(
            e.error
                .as_deref()
                .is_some_and(|e| e.contains("too large to fit")),
            "{:?}",
            e.error
        );
        assert_eq!(read_all(e), datas(&[set[0].clone(), set[2].clone()]));
    }
    assert_eq!(node[2].records.len(), 1);
    assert_eq!(node[2].records[0].data.len(), ONE_MIB);
    assert_eq!(read_all(&node[2]), datas(&full_set));
}
