//! Pure rewrites of `PutRecords` JSON bodies for per-entry failures.
//!
//! Kinesis answers a `PutRecords` call with one result per request entry, in request order:
//! `{"SequenceNumber", "ShardId"}` for a written entry, `{"ErrorCode", "ErrorMessage"}` for a
//! failed one, and `FailedRecordCount`. These functions turn a stand-in's answer into one with
//! chosen entries failed. All of them return `None` when a body is not the JSON they expect.

use serde_json::{Map, Value, json};

use super::EntryErrorCode;

fn parse_object(body: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(body).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

fn error_entry(code: EntryErrorCode) -> Value {
    json!({ "ErrorCode": code.as_str(), "ErrorMessage": code.message() })
}

fn encode(mut map: Map<String, Value>, records: Vec<Value>) -> Option<Vec<u8>> {
    let failed = records
        .iter()
        .filter(|r| r.get("ErrorCode").is_some_and(|c| !c.is_null()))
        .count();
    map.insert("FailedRecordCount".to_owned(), json!(failed));
    map.insert("Records".to_owned(), Value::Array(records));
    serde_json::to_vec(&Value::Object(map)).ok()
}

/// The number of entries in a `PutRecords` request body.
pub(crate) fn entry_count(request: &[u8]) -> Option<usize> {
    match parse_object(request)?.get("Records")? {
        Value::Array(records) => Some(records.len()),
        _ => None,
    }
}

/// The request body without the entries at `failed` positions (sorted).
pub(crate) fn without_entries(request: &[u8], failed: &[usize]) -> Option<Vec<u8>> {
    let mut map = parse_object(request)?;
    let Some(Value::Array(records)) = map.remove("Records") else {
        return None;
    };
    let kept: Vec<Value> = records
        .into_iter()
        .enumerate()
        .filter(|(i, _)| failed.binary_search(i).is_err())
        .map(|(_, record)| record)
        .collect();
    map.insert("Records".to_owned(), Value::Array(kept));
    serde_json::to_vec(&Value::Object(map)).ok()
}

/// The response to the full request, built from the response to the request without the failed
/// entries: error entries are put back at their positions, in between the forwarded results.
pub(crate) fn splice_failures(
    forwarded: &[u8],
    total: usize,
    failures: &[(usize, EntryErrorCode)],
) -> Option<Vec<u8>> {
    let mut map = parse_object(forwarded)?;
    let Some(Value::Array(results)) = map.remove("Records") else {
        return None;
    };
    if results.len() + failures.len() != total {
        return None;
    }
    let mut results = results.into_iter();
    let mut failures = failures.iter().peekable();
    let mut records = Vec::with_capacity(total);
    for index in 0..total {
        match failures.next_if(|(i, _)| *i == index) {
            Some((_, code)) => records.push(error_entry(*code)),
            None => records.push(results.next()?),
        }
    }
    encode(map, records)
}

/// The response with the results at the failed positions replaced by error entries (the
/// entries were written by the stand-in all the same).
pub(crate) fn overwrite_failures(
    response: &[u8],
    failures: &[(usize, EntryErrorCode)],
) -> Option<Vec<u8>> {
    let mut map = parse_object(response)?;
    let Some(Value::Array(mut records)) = map.remove("Records") else {
        return None;
    };
    for (index, code) in failures {
        *records.get_mut(*index)? = error_entry(*code);
    }
    encode(map, records)
}

/// A response for a call whose entries all failed (nothing was forwarded).
pub(crate) fn all_failed(failures: &[(usize, EntryErrorCode)]) -> Vec<u8> {
    let records = failures
        .iter()
        .map(|(_, code)| error_entry(*code))
        .collect();
    encode(Map::new(), records).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use EntryErrorCode::{InternalFailure, ProvisionedThroughputExceeded as Throttled};

    fn request(n: usize) -> Vec<u8> {
        let records: Vec<Value> = (0..n)
            .map(|i| json!({"Data": "AA==", "PartitionKey": format!("k{i}")}))
            .collect();
        serde_json::to_vec(&json!({"StreamName": "s", "Records": records})).unwrap()
    }

    fn ok(seq: usize) -> Value {
        json!({"SequenceNumber": seq.to_string(), "ShardId": "shardId-000000000000"})
    }

    fn response(seqs: &[usize]) -> Vec<u8> {
        let records: Vec<Value> = seqs.iter().map(|s| ok(*s)).collect();
        serde_json::to_vec(
            &json!({"FailedRecordCount": 0, "Records": records, "EncryptionType": "NONE"}),
        )
        .unwrap()
    }

    fn parse(body: &[u8]) -> Value {
        serde_json::from_slice(body).unwrap()
    }

    #[test]
    fn removes_the_failed_entries_from_the_request() {
        let body = without_entries(&request(5), &[1, 3]).unwrap();
        let keys: Vec<String> = parse(&body)["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["PartitionKey"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(keys, ["k0", "k2", "k4"]);
        assert_eq!(parse(&body)["StreamName"], "s");
        assert_eq!(entry_count(&request(5)), Some(5));
        assert_eq!(entry_count(b"not json"), None);
    }

    #[test]
    fn splices_errors_back_at_their_positions() {
        let failures = [(0, Throttled), (3, InternalFailure)];
        let body = splice_failures(&response(&[10, 11, 12]), 5, &failures).unwrap();
        let v = parse(&body);
        assert_eq!(v["FailedRecordCount"], 2);
        assert_eq!(v["EncryptionType"], "NONE");
        let records = v["Records"].as_array().unwrap();
        assert_eq!(records.len(), 5);
        assert_eq!(
            records[0]["ErrorCode"],
            "ProvisionedThroughputExceededException"
        );
        assert!(records[0].get("SequenceNumber").is_none());
        assert_eq!(records[1], ok(10));
        assert_eq!(records[2], ok(11));
        assert_eq!(records[3]["ErrorCode"], "InternalFailure");
        assert_eq!(records[4], ok(12));
        // Counts that do not add up are refused.
        assert!(splice_failures(&response(&[10]), 5, &failures).is_none());
    }

    #[test]
    fn overwrites_results_and_counts_failures() {
        let body = overwrite_failures(&response(&[1, 2, 3]), &[(2, Throttled)]).unwrap();
        let v = parse(&body);
        assert_eq!(v["FailedRecordCount"], 1);
        assert_eq!(v["Records"][0], ok(1));
        assert_eq!(
            v["Records"][2]["ErrorCode"],
            "ProvisionedThroughputExceededException"
        );
        assert!(overwrite_failures(&response(&[1]), &[(4, Throttled)]).is_none());
    }

    #[test]
    fn all_failed_answers_every_entry() {
        let v = parse(&all_failed(&[(0, Throttled), (1, InternalFailure)]));
        assert_eq!(v["FailedRecordCount"], 2);
        assert_eq!(v["Records"][1]["ErrorCode"], "InternalFailure");
    }
}
