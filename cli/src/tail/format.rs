//! One output line per user record, in the three formats of `--format`. Pure: no I/O.

use base64::Engine;
use kinesis_aggregation::DeaggregatedRecord;

use crate::position::format_time;

/// How records are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// `SHARD SEQUENCE/SUBSEQUENCE key=KEY ARRIVAL PAYLOAD`, the payload as UTF-8 (invalid bytes
    /// replaced), backslashes and control characters escaped.
    Text,
    /// One JSON object per line: `shard`, `sequence`, `subsequence`, `partition_key`, `arrival`,
    /// and `data` (valid UTF-8) or `data_base64`.
    Json,
    /// As text, with the payload in hexadecimal.
    Hex,
}

/// Appends `record`'s line (with its newline) to `out`.
pub(crate) fn line(format: Format, shard: &str, record: &DeaggregatedRecord, out: &mut String) {
    let arrival = record
        .approximate_arrival_timestamp
        .map(format_time)
        .unwrap_or_else(|| "-".to_owned());
    match format {
        Format::Text | Format::Hex => {
            out.push_str(shard);
            out.push(' ');
            out.push_str(&record.sequence_number);
            out.push('/');
            out.push_str(&record.sub_sequence_number.to_string());
            out.push_str(" key=");
            escape_into(&record.partition_key, true, out);
            out.push(' ');
            out.push_str(&arrival);
            out.push(' ');
            if format == Format::Hex {
                for byte in record.data.iter() {
                    out.push_str(&format!("{byte:02x}"));
                }
            } else {
                escape_into(&String::from_utf8_lossy(&record.data), false, out);
            }
            out.push('\n');
        }
        Format::Json => {
            // Written field by field, in this order (a map would sort the keys); each value
            // escaped by serde_json.
            let text = |value: &str| serde_json::Value::from(value).to_string();
            out.push_str(&format!(
                "{{\"shard\":{},\"sequence\":{},\"subsequence\":{},\"partition_key\":{},\"arrival\":{},",
                text(shard),
                text(&record.sequence_number),
                record.sub_sequence_number,
                text(&record.partition_key),
                match record.approximate_arrival_timestamp {
                    Some(_) => text(&arrival),
                    None => "null".to_owned(),
                },
            ));
            match std::str::from_utf8(&record.data) {
                Ok(data) => out.push_str(&format!("\"data\":{}}}\n", text(data))),
                Err(_) => out.push_str(&format!(
                    "\"data_base64\":{}}}\n",
                    text(&base64::engine::general_purpose::STANDARD.encode(&record.data))
                )),
            }
        }
    }
}

/// Escapes `text` so that a record is one line whose fields can be told apart: `\` as `\\`,
/// newline, carriage return and tab as `\n`, `\r`, `\t`, other control characters as `\u{..}`;
/// in a key (`key`), spaces as `\u{20}` too.
fn escape_into(text: &str, key: bool, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' ' if key => out.push_str("\\u{20}"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use kinesis_aggregation::{StreamRecord, deaggregate};

    use super::*;

    const SEQ: &str = "49590338271490256608559692538361571095921575989136588818";

    fn record(key: &str, data: &[u8], arrival: Option<u64>) -> DeaggregatedRecord {
        let mut read = StreamRecord::new(SEQ, key, data.to_vec());
        if let Some(millis) = arrival {
            read = read.with_approximate_arrival_timestamp(
                SystemTime::UNIX_EPOCH + Duration::from_millis(millis),
            );
        }
        deaggregate(read).remove(0)
    }

    fn render(format: Format, r: &DeaggregatedRecord) -> String {
        let mut out = String::new();
        line(format, "shardId-000000000001", r, &mut out);
        out
    }

    #[test]
    fn text_lines_carry_every_field_on_one_line() {
        let r = record("user-7", b"hello\nworld\t\\ \x01", Some(1_796_464_862_123));
        assert_eq!(
            render(Format::Text, &r),
            format!(
                "shardId-000000000001 {SEQ}/0 key=user-7 2026-12-05T10:01:02.123Z \
                 hello\\nworld\\t\\\\ \\u{{1}}\n"
            )
        );
    }

    #[test]
    fn text_escapes_spaces_in_keys_and_replaces_invalid_utf8() {
        let r = record("clé à 7", b"\xff\xfeok", None);
        assert_eq!(
            render(Format::Text, &r),
            format!(
                "shardId-000000000001 {SEQ}/0 key=clé\\u{{20}}à\\u{{20}}7 - \u{fffd}\u{fffd}ok\n"
            )
        );
    }

    #[test]
    fn an_empty_payload_leaves_an_empty_last_field() {
        let r = record("k", b"", Some(0));
        assert_eq!(
            render(Format::Text, &r),
            format!("shardId-000000000001 {SEQ}/0 key=k 1970-01-01T00:00:00.000Z \n")
        );
        assert_eq!(
            render(Format::Hex, &r),
            format!("shardId-000000000001 {SEQ}/0 key=k 1970-01-01T00:00:00.000Z \n")
        );
    }

    #[test]
    fn hex_lines_encode_the_payload() {
        let r = record("k", b"\x00\xffA", Some(1_796_464_862_123));
        assert_eq!(
            render(Format::Hex, &r),
            format!("shardId-000000000001 {SEQ}/0 key=k 2026-12-05T10:01:02.123Z 00ff41\n")
        );
    }

    #[test]
    fn json_lines_hold_text_or_base64() {
        let r = record("ключ", "données\n".as_bytes(), Some(1_796_464_862_123));
        let line = render(Format::Json, &r);
        assert!(
            line.ends_with('\n') && !line.trim_end().contains('\n'),
            "{line}"
        );
        let value: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(value["shard"], "shardId-000000000001");
        assert_eq!(value["sequence"], SEQ);
        assert_eq!(value["subsequence"], 0);
        assert_eq!(value["partition_key"], "ключ");
        assert_eq!(value["arrival"], "2026-12-05T10:01:02.123Z");
        assert_eq!(value["data"], "données\n");
        assert!(value.get("data_base64").is_none());

        let binary = record("k", b"\xff\x00", None);
        let value: serde_json::Value =
            serde_json::from_str(&render(Format::Json, &binary)).expect("JSON");
        assert_eq!(value["data_base64"], "/wA=");
        assert!(value.get("data").is_none());
        assert!(value["arrival"].is_null());
    }
}
