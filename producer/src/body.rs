//! The `PutRecords` request body, written by the producer in one pass.
//!
//! The SDK's serializer copies each entry's data (a clone of the blob), base64-encodes it into a
//! string of its own, appends that to a body that grows by doubling, and so touches every byte
//! of a call (up to 5 MiB of data, 6.7 MiB once encoded) four or five times, in memory freshly
//! allocated each time. Here the body's exact length is computed first and each entry's data is
//! encoded straight into it: one allocation and one pass per call. The SDK still signs the body
//! (SigV4 hashes it), sends it and reads the answer; the request it serialized (no entries) is
//! replaced just before signing. The JSON is the one the SDK writes for the `awsJson1_1` protocol
//! (the same members and values, with member order and string escapes free as JSON allows).

use bytes::Bytes;
use kinesis_calls::StreamRef;

use crate::pipeline::Entry;

/// The body of a `PutRecords` call putting `entries` to `stream`:
/// `{"Records":[{"Data":"<base64>","PartitionKey":"..","ExplicitHashKey":".."},..],"StreamName":".."}`
/// (`"StreamARN"` for a stream given by ARN).
pub(crate) fn records_body(entries: &[Entry], stream: &StreamRef) -> Bytes {
    let base64 = &base64_simd::STANDARD;
    let (member, value) = stream_member(stream);
    let len = body_len(entries, stream);
    let mut out: Vec<u8> = Vec::with_capacity(len);
    out.extend_from_slice(b"{\"Records\":[");
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"Data\":\"");
        base64.encode_append(&entry.data, &mut out);
        out.extend_from_slice(b"\",\"PartitionKey\":");
        push_string(&mut out, &entry.partition_key);
        if let Some(key) = entry.explicit_hash_key {
            // Decimal digits only: nothing to escape.
            out.extend_from_slice(b",\"ExplicitHashKey\":\"");
            push_decimal(&mut out, u128::from(key));
            out.push(b'"');
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"],");
    out.extend_from_slice(member.as_bytes());
    push_string(&mut out, value);
    out.push(b'}');
    debug_assert_eq!(out.len(), len, "the body's length as computed");
    Bytes::from(out)
}

/// The stream's member: its name (with the colon) and its value.
fn stream_member(stream: &StreamRef) -> (&'static str, &str) {
    match stream {
        StreamRef::Name(name) => ("\"StreamName\":", name.as_str()),
        StreamRef::Arn(arn) => ("\"StreamARN\":", arn.as_str()),
    }
}

/// The exact length of [`records_body`]'s output.
fn body_len(entries: &[Entry], stream: &StreamRef) -> usize {
    let base64 = &base64_simd::STANDARD;
    let mut len = entries.len().saturating_sub(1); // the commas between entries
    for entry in entries {
        len += ENTRY_FRAME
            + base64.encoded_length(entry.data.len())
            + escaped_len(&entry.partition_key)
            + entry
                .explicit_hash_key
                .map_or(0, |key| EXPLICIT_FRAME + decimal_len(u128::from(key)));
    }
    let (member, value) = stream_member(stream);
    len + RECORDS_FRAME + member.len() + escaped_len(value)
}

/// `{"Data":"","PartitionKey":}`.
const ENTRY_FRAME: usize = r#"{"Data":"","PartitionKey":}"#.len();
/// `,"ExplicitHashKey":""`.
const EXPLICIT_FRAME: usize = r#","ExplicitHashKey":"""#.len();
/// `{"Records":[],}`.
const RECORDS_FRAME: usize = r#"{"Records":[],}"#.len();

/// Digits of `value` in decimal.
pub(crate) fn decimal_len(value: u128) -> usize {
    value.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// Appends `value` in decimal (at most 39 digits), without allocating.
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut value: u128) {
    let mut digits = [0u8; 39];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Length of `s` as a JSON string, quotes included.
fn escaped_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// Appends `s` as a JSON string: quotes, backslashes and control characters escaped, everything
/// else (multi-byte UTF-8 included) as it is.
pub(crate) fn push_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kinesis_aggregation::HashKey;
    use proptest::prelude::*;
    use serde_json::Value;

    pub(crate) fn entry(key: &str, hash: Option<u128>, data: &[u8]) -> Entry {
        Entry {
            partition_key: key.to_owned(),
            explicit_hash_key: hash.map(HashKey::from),
            data: Bytes::copy_from_slice(data),
        }
    }

    /// An entry as read back: data, partition key, explicit hash key.
    type ReadEntry = (Vec<u8>, String, Option<String>);

    /// What the body says, read back by a JSON parser: each entry, and the stream member's name
    /// and value.
    fn read(body: &Bytes) -> (Vec<ReadEntry>, String, String) {
        let value: Value = serde_json::from_slice(body).expect("the body is JSON");
        let object = value.as_object().expect("an object");
        assert_eq!(object.len(), 2, "Records and the stream: {object:?}");
        let records = object["Records"].as_array().expect("Records is an array");
        let entries = records
            .iter()
            .map(|r| {
                let r = r.as_object().expect("an entry is an object");
                let data = base64_simd::STANDARD
                    .decode_to_vec(r["Data"].as_str().expect("Data is a string"))
                    .expect("Data is base64");
                let key = r["PartitionKey"].as_str().expect("a key").to_owned();
                let hash = r
                    .get("ExplicitHashKey")
                    .map(|h| h.as_str().expect("a string").to_owned());
                assert_eq!(
                    r.len(),
                    2 + usize::from(hash.is_some()),
                    "no other member: {r:?}"
                );
                (data, key, hash)
            })
            .collect();
        let (member, stream) = object
            .iter()
            .find(|(k, _)| *k != "Records")
            .expect("a stream member");
        (
            entries,
            member.clone(),
            stream.as_str().expect("a string").to_owned(),
        )
    }

    #[test]
    fn a_body_reads_back_as_its_entries_and_stream() {
        let entries = [
            entry("plain", None, b"hello"),
            entry("quote\" back\\slash /", Some(0), b""),
            entry(
                "ctl \u{0}\u{1}\u{8}\u{9}\u{a}\u{c}\u{d}\u{1f}\u{7f}",
                Some(u128::MAX),
                &[0, 255, 1],
            ),
            entry("ünïcødé ☃ 𝄞", Some(1 << 100), &[7; 1000]),
        ];
        let body = records_body(&entries, &StreamRef::Name("stream \"x\"".into()));
        let (read, member, stream) = read(&body);
        assert_eq!(member, "StreamName");
        assert_eq!(stream, "stream \"x\"");
        for (entry, (data, key, hash)) in entries.iter().zip(&read) {
            assert_eq!(&entry.data[..], &data[..]);
            assert_eq!(&entry.partition_key, key);
            assert_eq!(entry.explicit_hash_key.map(|k| k.to_string()), *hash);
        }
        assert_eq!(
            read[2].2.as_deref(),
            Some("340282366920938463463374607431768211455")
        );

        let arn = "arn:aws:kinesis:eu-west-1:123456789012:stream/s";
        let body = records_body(&[], &StreamRef::Arn(arn.into()));
        assert_eq!(
            &body[..],
            format!(r#"{{"Records":[],"StreamARN":"{arn}"}}"#).as_bytes()
        );
    }

    #[test]
    fn the_body_is_written_as_the_sdk_writes_plain_values() {
        let body = records_body(
            &[entry("k", None, b"ab"), entry("j", Some(5), b"c")],
            &StreamRef::Name("s".into()),
        );
        assert_eq!(
            std::str::from_utf8(&body).expect("UTF-8"),
            r#"{"Records":[{"Data":"YWI=","PartitionKey":"k"},{"Data":"Yw==","PartitionKey":"j","ExplicitHashKey":"5"}],"StreamName":"s"}"#
        );
    }

    /// Strings of any characters, control characters (which JSON must escape) often among them.
    fn any_text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![proptest::char::range('\0', '\u{7f}'), any::<char>()],
            0..40,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    #[test]
    fn hash_keys_are_written_in_decimal_at_their_exact_length() {
        for value in [0, 9, 10, 99, 100, 12_345, u128::from(u64::MAX), u128::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, value);
            assert_eq!(out, value.to_string().into_bytes());
            assert_eq!(decimal_len(value), out.len(), "{value}");
        }
    }

    proptest! {
        #[test]
        fn any_entries_read_back_at_the_length_computed(
            raw in proptest::collection::vec(
                (any_text(), proptest::option::of(any::<u128>()), proptest::collection::vec(any::<u8>(), 0..300)),
                0..20,
            ),
            name in any_text(),
            by_arn in any::<bool>(),
        ) {
            let entries: Vec<Entry> = raw.iter().map(|(k, h, d)| entry(k, *h, d)).collect();
            let stream = if by_arn {
                StreamRef::Arn(name.clone())
            } else {
                StreamRef::Name(name.clone())
            };
            let body = records_body(&entries, &stream);
            prop_assert_eq!(body.len(), body_len(&entries, &stream));
            let (read, member, value) = read(&body);
            prop_assert_eq!(member, if by_arn { "StreamARN" } else { "StreamName" });
            prop_assert_eq!(value, name);
            prop_assert_eq!(read.len(), entries.len());
            for (entry, (data, key, hash)) in entries.iter().zip(&read) {
                prop_assert_eq!(&entry.data[..], &data[..]);
                prop_assert_eq!(&entry.partition_key, key);
                prop_assert_eq!(entry.explicit_hash_key.map(|k| k.to_string()), hash.clone());
            }
        }
    }
}
