//! An AWS Lambda function for a Kinesis event source: it deaggregates KPL aggregates, processes
//! the user records, and answers with a partial batch failure response, so that Lambda retries
//! from the first failed record instead of the whole batch.
//!
//! ```text
//!  KinesisEvent ─▶ deaggregate_event ─▶ each user record ─▶ process: a JSON object?
//!                                                            │ no        │ yes: count its "type"
//!                                                            ▼           ▼ (OUTPUT_STREAM set:)
//!                      BatchFailures::fail, then stop ◀──────┘   Producer::put, flush, receipts
//!                        │ (Lambda redelivers the rest) ◀─────── a failed put fails its source
//!                        ▼
//!  {"batchItemFailures": [{"itemIdentifier": <the earliest failed Kinesis record>}]}
//! ```
//!
//! Processing: every user record must be a JSON object; records are counted by their `"type"`
//! (a string; `untyped` without one) and the counts are logged. A record that is not a JSON
//! object fails, and so does an aggregate that does not verify (`deaggregate` passes it through
//! whole, as one record holding the aggregate's bytes). If `OUTPUT_STREAM` is set, each processed
//! record is written to that stream with `kinesis-producer` (same partition key and explicit hash
//! key, same data), and the producer is flushed before the function returns: Lambda freezes the
//! process between invocations, and may never thaw it. A record whose put fails fails its source
//! record.
//!
//! At the first failure the function stops and reports it: Lambda will deliver that Kinesis
//! record and every record after it again, so processing them now would do them twice. What is
//! done twice anyway: the user records that succeeded before the failure inside the same
//! aggregate, and, when a put fails, the records processed after it. Processing (and writing to
//! the output stream) is at least once.
//!
//! Build and deploy with [cargo-lambda](https://www.cargo-lambda.info/):
//!
//! ```sh
//! cargo lambda build --release --example lambda
//! cargo lambda deploy --binary-name lambda kinesis-lambda-example
//! ```
//!
//! then map a stream to it with `FunctionResponseTypes: ReportBatchItemFailures` (without it,
//! Lambda ignores the response and retries whole batches), a `MaximumRetryAttempts` and an
//! on-failure destination (a record that does not parse fails on every attempt, and with the
//! defaults it blocks its shard until it leaves the stream). The root README says more.

use std::collections::BTreeMap;
use std::env::VarError;
use std::fmt;

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::KinesisEventResponse;
use kinesis_aggregation::lambda::{BatchFailures, deaggregate_event};
use kinesis_aggregation::{DeaggregatedRecord, has_aggregate_magic};
use kinesis_examples::BoxError;
use kinesis_producer::{Producer, Receipt, UserRecord};
use lambda_runtime::{LambdaEvent, service_fn};

/// The variables `lambda_runtime` needs (it panics without them); Lambda sets them.
const RUNTIME_ENV: [&str; 4] = [
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
];

/// What the function keeps from one invocation to the next.
#[derive(Debug)]
struct Handler {
    /// Writes each processed record to `OUTPUT_STREAM`, when it is set.
    output: Option<Producer>,
}

impl Handler {
    /// The producer for `OUTPUT_STREAM`, if set, with the AWS configuration of the environment
    /// (Lambda gives the function's role and region).
    async fn from_env() -> Result<Self, BoxError> {
        let output = match std::env::var("OUTPUT_STREAM") {
            Ok(stream) if !stream.is_empty() => {
                let config = aws_config::load_from_env().await;
                let client = aws_sdk_kinesis::Client::new(&config);
                Some(Producer::builder(client, stream).build().await?)
            }
            Ok(_) | Err(VarError::NotPresent) => None,
            Err(VarError::NotUnicode(_)) => return Err("OUTPUT_STREAM is not Unicode".into()),
        };
        Ok(Handler { output })
    }
}

/// Why a user record failed.
#[derive(Debug)]
enum Problem {
    /// It starts like a KPL aggregate but did not verify, so it came through whole.
    CorruptAggregate,
    /// Its data is not JSON.
    NotJson(serde_json::Error),
    /// Its data is JSON, but not an object.
    NotAnObject,
    /// Writing it to the output stream failed.
    Put(BoxError),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CorruptAggregate => f.write_str(
                "a KPL aggregate that does not verify (passed through whole, not deaggregated)",
            ),
            Self::NotJson(error) => write!(f, "not JSON: {error}"),
            Self::NotAnObject => f.write_str("JSON, but not an object"),
            Self::Put(error) => write!(f, "not written to the output stream: {error}"),
        }
    }
}

/// The processing of one user record: its data must be a JSON object; what is counted is its
/// `"type"`.
fn process(record: &DeaggregatedRecord) -> Result<String, Problem> {
    // `deaggregate` passes an aggregate that does not verify through whole (as the KCL does):
    // its data is the aggregate's bytes. Retrying will not mend it; it fails like any record
    // that does not parse, and the mapping's retry limit and on-failure destination decide.
    if !record.aggregated && has_aggregate_magic(&record.data) {
        return Err(Problem::CorruptAggregate);
    }
    let value: serde_json::Value =
        serde_json::from_slice(&record.data).map_err(Problem::NotJson)?;
    let object = value.as_object().ok_or(Problem::NotAnObject)?;
    let kind = object.get("type").and_then(serde_json::Value::as_str);
    Ok(kind.unwrap_or("untyped").to_owned())
}

/// Admits a processed record to the output stream's producer, if there is an output stream.
async fn write(handler: &Handler, record: &DeaggregatedRecord) -> Result<Option<Receipt>, Problem> {
    let Some(producer) = &handler.output else {
        return Ok(None);
    };
    let mut user = UserRecord::new(record.partition_key.to_string(), record.data.clone())
        .map_err(|e| Problem::Put(e.into()))?;
    if let Some(key) = record.explicit_hash_key {
        user = user.with_explicit_hash_key(key);
    }
    match producer.put(user).await {
        Ok(receipt) => Ok(Some(receipt)),
        Err(failure) => Err(Problem::Put(failure.error.into())),
    }
}

/// Handles one invocation: the partial batch failure response for `event`.
///
/// Fails only if a failed record cannot be named in the response (it always can: the failures
/// are built from the event's own records); Lambda then retries the whole batch.
async fn handle(event: KinesisEvent, handler: &Handler) -> Result<KinesisEventResponse, BoxError> {
    let records = deaggregate_event(event);
    let mut failures = BatchFailures::for_records(&records);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut receipts: Vec<(&DeaggregatedRecord, Receipt)> = Vec::new();
    for record in &records {
        let outcome = match process(record) {
            Ok(kind) => write(handler, record).await.map(|receipt| (kind, receipt)),
            Err(problem) => Err(problem),
        };
        match outcome {
            Ok((kind, receipt)) => {
                *counts.entry(kind).or_default() += 1;
                receipts.extend(receipt.map(|receipt| (record, receipt)));
            }
            Err(problem) => {
                fail(&mut failures, record, &problem)?;
                // Lambda delivers this Kinesis record and every one after it again: processing
                // the rest now would only do it twice.
                break;
            }
        }
    }
    if let Some(producer) = &handler.output {
        // Nothing may stay buffered when the function returns: the process is frozen until the
        // next invocation, if there is one.
        if let Err(error) = producer.flush().await {
            tracing::warn!(%error, "flushing the output stream's producer failed");
        }
        // Every receipt resolves (delivered, or failed within the producer's record TTL).
        for (record, receipt) in receipts {
            if let Err(failure) = receipt.await {
                fail(&mut failures, record, &Problem::Put(failure.error.into()))?;
            }
        }
    }
    tracing::info!(
        user_records = records.len(),
        failed_from = failures.first_failure(),
        ?counts,
        "batch handled"
    );
    Ok(failures.into_response())
}

/// Reports a failed user record (never its data: payloads are not logged).
fn fail(
    failures: &mut BatchFailures,
    record: &DeaggregatedRecord,
    problem: &Problem,
) -> Result<(), BoxError> {
    tracing::warn!(
        sequence_number = %record.sequence_number,
        sub_sequence_number = record.sub_sequence_number,
        %problem,
        "user record failed"
    );
    Ok(failures.fail(record)?)
}

/// Refuses to start outside Lambda with a clear message, where `lambda_runtime` would panic.
fn check_runtime_env() -> Result<(), BoxError> {
    for name in RUNTIME_ENV {
        match std::env::var(name) {
            Ok(value) if !value.is_empty() => {}
            _ => {
                return Err(format!(
                    "{name} is not set: this program is a Lambda function; deploy it (`cargo \
                     lambda deploy`) or run it under a Runtime API emulator (`cargo lambda watch`)"
                )
                .into());
            }
        }
    }
    let memory = std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").unwrap_or_default();
    if memory.parse::<i32>().is_err() {
        return Err(format!("AWS_LAMBDA_FUNCTION_MEMORY_SIZE is {memory:?}, not a number").into());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Lambda adds the time to each line it stores.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .without_time()
        .try_init();
    check_runtime_env()?;
    let handler = Handler::from_env().await?;
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<KinesisEvent>| {
        handle(event.payload, handler)
    }))
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use base64::Engine;
    use kinesis_aggregation::{AggregationLimits, Aggregator, StreamRecord, deaggregate};
    use serde_json::{Value, json};
    use tokio::sync::Mutex;
    use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

    use super::*;

    /// Where the event fixtures are; `KINESIS_EXAMPLES_WRITE_FIXTURES=1` rewrites them.
    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/lambda");
    const SHARD: &str = "shardId-000000000000";
    const STREAM_ARN: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/lambda-example";

    /// One Kinesis record of a fixture.
    enum Data {
        /// A KPL aggregate of these user records (partition key, data); at least two, since a
        /// lone record is sent as itself.
        Aggregate(&'static [(&'static str, &'static str)]),
        /// The same, with its MD5 trailer broken: `deaggregate` passes it through whole.
        Corrupt(&'static [(&'static str, &'static str)]),
        /// A record that is not an aggregate.
        Plain(&'static str, &'static str),
    }

    struct Fixture {
        name: &'static str,
        records: &'static [Data],
        /// The Kinesis records (indices) the response names.
        failed: &'static [usize],
    }

    const READING: &str = r#"{"type":"reading","sensor":"s-1","celsius":21.5}"#;
    const ALARM: &str = r#"{"type":"alarm","sensor":"s-2","level":"high"}"#;
    const UNTYPED: &str = r#"{"sensor":"s-3","celsius":19.0}"#;

    fn fixtures() -> [Fixture; 5] {
        use Data::*;
        [
            Fixture {
                name: "aggregated",
                records: &[
                    Aggregate(&[("s-1", READING), ("s-2", ALARM), ("s-3", UNTYPED)]),
                    // The second user record is not JSON: its aggregate is named.
                    Aggregate(&[("s-1", READING), ("s-2", "celsius=19.5"), ("s-3", UNTYPED)]),
                ],
                failed: &[1],
            },
            Fixture {
                name: "plain",
                records: &[
                    Plain("s-1", READING),
                    Plain("s-2", ALARM),
                    Plain("s-3", UNTYPED),
                ],
                failed: &[],
            },
            Fixture {
                name: "mixed",
                records: &[
                    Plain("s-1", READING),
                    // JSON, but not an object.
                    Aggregate(&[("s-2", ALARM), ("s-3", "[19.0, 19.5]")]),
                    // Fails too, but after the earliest failure: not even looked at.
                    Plain("s-1", "not json"),
                    Aggregate(&[("s-1", READING), ("s-2", ALARM)]),
                ],
                failed: &[1],
            },
            Fixture {
                name: "corrupt",
                records: &[
                    Aggregate(&[("s-1", READING), ("s-2", ALARM)]),
                    Corrupt(&[("s-1", READING), ("s-3", UNTYPED)]),
                    Plain("s-2", ALARM),
                ],
                failed: &[1],
            },
            Fixture {
                name: "empty",
                records: &[],
                failed: &[],
            },
        ]
    }

    /// A sequence number as Kinesis writes them (56 digits), the `index`th of the shard.
    fn sequence_number(index: usize) -> String {
        format!("4959033827149025660855969253836157109592157598913{index:07}")
    }

    fn aggregate(records: &[(&str, &str)]) -> (String, Vec<u8>) {
        let mut aggregator = Aggregator::new(AggregationLimits::default());
        for (key, data) in records {
            aggregator
                .try_push(UserRecord::new(*key, data.to_string()).unwrap())
                .unwrap();
        }
        let record = aggregator.finish().unwrap();
        assert!(
            has_aggregate_magic(&record.data),
            "{records:?} is an aggregate"
        );
        (record.partition_key, record.data.to_vec())
    }

    /// The event Lambda would send for `fixture`'s records, as the fixture file holds it.
    fn event_json(fixture: &Fixture) -> String {
        let records: Vec<Value> = fixture
            .records
            .iter()
            .enumerate()
            .map(|(i, data)| {
                let (key, bytes) = match data {
                    Data::Aggregate(records) => aggregate(records),
                    Data::Corrupt(records) => {
                        let (key, mut bytes) = aggregate(records);
                        if let Some(last) = bytes.last_mut() {
                            *last ^= 0xFF;
                        }
                        (key, bytes)
                    }
                    Data::Plain(key, data) => (key.to_string(), data.as_bytes().to_vec()),
                };
                let sequence = sequence_number(i);
                json!({
                    "kinesis": {
                        "kinesisSchemaVersion": "1.0",
                        "partitionKey": key,
                        "sequenceNumber": sequence,
                        "data": base64::engine::general_purpose::STANDARD.encode(bytes),
                        "approximateArrivalTimestamp": 1_700_000_000.125 + i as f64,
                    },
                    "eventSource": "aws:kinesis",
                    "eventVersion": "1.0",
                    "eventID": format!("{SHARD}:{sequence}"),
                    "eventName": "aws:kinesis:record",
                    "invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-example",
                    "awsRegion": "us-east-1",
                    "eventSourceARN": STREAM_ARN,
                })
            })
            .collect();
        let mut text = serde_json::to_string_pretty(&json!({ "Records": records })).unwrap();
        text.push('\n');
        text
    }

    /// The response the fixture must get, on the wire.
    fn expected_response(fixture: &Fixture) -> Value {
        let items: Vec<Value> = fixture
            .failed
            .iter()
            .map(|&i| json!({ "itemIdentifier": sequence_number(i) }))
            .collect();
        json!({ "batchItemFailures": items })
    }

    /// The fixture file's text, checked against what the `Aggregator` makes today (or rewritten
    /// with `KINESIS_EXAMPLES_WRITE_FIXTURES=1`).
    fn fixture_text(fixture: &Fixture) -> String {
        let path = format!("{FIXTURES}/{}.json", fixture.name);
        let generated = event_json(fixture);
        if std::env::var_os("KINESIS_EXAMPLES_WRITE_FIXTURES").is_some_and(|v| v == "1") {
            std::fs::create_dir_all(FIXTURES).unwrap();
            std::fs::write(&path, &generated).unwrap();
        }
        let stored = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            stored == generated,
            "{path} differs from what the Aggregator makes; rewrite it with \
             KINESIS_EXAMPLES_WRITE_FIXTURES=1 cargo test -p kinesis-examples --example lambda"
        );
        stored
    }

    fn fixture(name: &str) -> Fixture {
        fixtures().into_iter().find(|f| f.name == name).unwrap()
    }

    fn event(fixture: &Fixture) -> KinesisEvent {
        serde_json::from_str(&fixture_text(fixture)).unwrap()
    }

    async fn respond(event: KinesisEvent, handler: &Handler) -> Value {
        let response = handle(event, handler).await.unwrap();
        serde_json::to_value(response).unwrap()
    }

    #[tokio::test]
    async fn each_fixture_gets_its_exact_batch_item_failures() {
        let handler = Handler { output: None };
        for fixture in fixtures() {
            let response = respond(event(&fixture), &handler).await;
            assert_eq!(response, expected_response(&fixture), "{}", fixture.name);
        }
    }

    #[test]
    fn processing_refuses_what_is_not_a_json_object() {
        let record = |data: &'static [u8]| {
            deaggregate(StreamRecord::new("1", "k", data))
                .pop()
                .unwrap()
        };
        let (_, corrupt) = {
            let (key, mut bytes) = aggregate(&[("a", READING), ("b", ALARM)]);
            bytes[20] ^= 1;
            (key, bytes)
        };
        let corrupt = deaggregate(StreamRecord::new("1", "k", corrupt))
            .pop()
            .unwrap();
        assert_eq!(process(&record(READING.as_bytes())).unwrap(), "reading");
        assert_eq!(process(&record(UNTYPED.as_bytes())).unwrap(), "untyped");
        assert_eq!(process(&record(br#"{"type":7}"#)).unwrap(), "untyped");
        for (data, problem) in [
            (record(b"[1, 2]"), "JSON, but not an object"),
            (record(b"\"text\""), "JSON, but not an object"),
            (record(b"{\"type\":"), "not JSON: EOF while parsing"),
            (record(b""), "not JSON: EOF while parsing"),
            (record(&[0xFF, 0xFE]), "not JSON: expected value"),
            (corrupt, "a KPL aggregate that does not verify"),
        ] {
            let error = process(&data).unwrap_err().to_string();
            assert!(error.starts_with(problem), "{error}");
        }
    }

    #[test]
    fn outside_lambda_it_says_what_is_missing() {
        // The test process has no Lambda runtime variables (the runtime test sets them in a
        // child process only).
        if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
            return;
        }
        let error = check_runtime_env().unwrap_err().to_string();
        assert!(
            error.starts_with("AWS_LAMBDA_RUNTIME_API is not set"),
            "{error}"
        );
    }

    /// The user records in `stream`'s only shard, read back from the start.
    async fn read_back(client: &aws_sdk_kinesis::Client, stream: &str) -> Vec<String> {
        let iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(SHARD)
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap();
        let records = client
            .get_records()
            .shard_iterator(iterator.shard_iterator().unwrap())
            .send()
            .await
            .unwrap();
        records
            .records()
            .iter()
            .flat_map(|r| {
                deaggregate(StreamRecord::new(
                    r.sequence_number(),
                    r.partition_key().unwrap_or_default(),
                    r.data().clone().into_inner(),
                ))
            })
            .map(|u| String::from_utf8(u.data.to_vec()).unwrap())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn processed_records_go_to_the_output_stream_before_the_answer() {
        let test = async {
            let client = kinesis_examples::local_kinesis().await.unwrap();
            kinesis_examples::ensure_stream(&client, "lambda-output", 1)
                .await
                .unwrap();
            let producer = Producer::builder(client.clone(), "lambda-output")
                .build()
                .await
                .unwrap();
            let handler = Handler {
                output: Some(producer),
            };
            let mixed = fixture("mixed");
            let response = respond(event(&mixed), &handler).await;
            assert_eq!(response, expected_response(&mixed));
            // Written before the answer: the records processed before the failure, that is the
            // plain record and the aggregate's first user record.
            assert_eq!(handler.output.as_ref().unwrap().outstanding().records, 0);
            assert_eq!(read_back(&client, "lambda-output").await, [READING, ALARM]);
        };
        tokio::time::timeout(Duration::from_secs(120), test)
            .await
            .expect("the output-stream test took over 2 minutes");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_put_fails_its_source_record() {
        let test = async {
            let client = kinesis_examples::local_kinesis().await.unwrap();
            kinesis_examples::ensure_stream(&client, "lambda-gone", 1)
                .await
                .unwrap();
            let producer = Producer::builder(client.clone(), "lambda-gone")
                .record_ttl(Duration::from_secs(3))
                .build()
                .await
                .unwrap();
            // The stream goes after the producer started: every put fails.
            client
                .delete_stream()
                .stream_name("lambda-gone")
                .send()
                .await
                .unwrap();
            let handler = Handler {
                output: Some(producer),
            };
            let plain = fixture("plain");
            let response = respond(event(&plain), &handler).await;
            // Every record failed; the earliest is named.
            assert_eq!(
                response,
                json!({ "batchItemFailures": [{ "itemIdentifier": sequence_number(0) }] })
            );
        };
        tokio::time::timeout(Duration::from_secs(120), test)
            .await
            .expect("the failed-put test took over 2 minutes");
    }

    /// Set in the child process that runs `main` for `the_runtime_loop_answers_invocations`.
    const CHILD_ENV: &str = "KINESIS_EXAMPLES_LAMBDA_CHILD";
    const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:lambda-example";

    /// The example's real `main` (the runtime loop), run in a child process by
    /// `the_runtime_loop_answers_invocations`: the Lambda variables are process-wide and
    /// `lambda_runtime::run` never returns, so it cannot run inside the test process.
    #[test]
    #[ignore = "run in a child process by the_runtime_loop_answers_invocations"]
    fn runtime_child() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        let ended = main();
        panic!("the runtime loop ended: {ended:?}");
    }

    /// A minimal Lambda Runtime API: `next` hands out queued invocations (and long-polls when
    /// there is none), `response` and `error` report what the function answered.
    #[derive(Clone)]
    struct RuntimeApi {
        /// Invocations to hand out: request id and event.
        invocations: Arc<Mutex<UnboundedReceiver<(String, String)>>>,
        /// Answers: request id, `response` or `error`, body.
        answers: UnboundedSender<(String, &'static str, String)>,
    }

    async fn next_invocation(
        axum::extract::State(api): axum::extract::State<RuntimeApi>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let next = api.invocations.lock().await.recv().await;
        let Some((request_id, body)) = next else {
            return std::future::pending().await;
        };
        let deadline = SystemTime::now() + Duration::from_secs(60);
        let deadline_ms = deadline
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        (
            [
                ("content-type", "application/json".to_owned()),
                ("lambda-runtime-aws-request-id", request_id),
                ("lambda-runtime-deadline-ms", deadline_ms.to_string()),
                (
                    "lambda-runtime-invoked-function-arn",
                    FUNCTION_ARN.to_owned(),
                ),
                (
                    "lambda-runtime-trace-id",
                    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
                        .to_owned(),
                ),
            ],
            body,
        )
            .into_response()
    }

    async fn answered(
        axum::extract::State(api): axum::extract::State<RuntimeApi>,
        axum::extract::Path(request_id): axum::extract::Path<String>,
        kind: &'static str,
        body: String,
    ) -> axum::http::StatusCode {
        let _ = api.answers.send((request_id, kind, body));
        axum::http::StatusCode::ACCEPTED
    }

    /// What the function answers an invocation with.
    enum Answer {
        /// `POST .../response` with this body.
        Response(Value),
        /// `POST .../error` with an `errorMessage` holding this.
        Error(&'static str),
    }

    /// Kills the child when the test ends, passed or not.
    struct KillOnDrop(std::process::Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_runtime_loop_answers_invocations() {
        use axum::routing::{get, post};

        let (invocations, queue) = tokio::sync::mpsc::unbounded_channel();
        let (answers, mut answered_rx) = tokio::sync::mpsc::unbounded_channel();
        let api = RuntimeApi {
            invocations: Arc::new(Mutex::new(queue)),
            answers,
        };
        let app = axum::Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next_invocation))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(|state, id, body| answered(state, id, "response", body)),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/error",
                post(|state, id, body| answered(state, id, "error", body)),
            )
            .with_state(api);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let log_path = std::env::temp_dir().join(format!(
            "kinesis-examples-lambda-runtime-{}.log",
            std::process::id()
        ));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "tests::runtime_child",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_ENV, "1")
            .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", "lambda-example")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env(
                "AWS_LAMBDA_LOG_STREAM_NAME",
                "2026/01/01/[$LATEST]0123456789abcdef",
            )
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/lambda-example")
            .env_remove("OUTPUT_STREAM")
            .env_remove("AWS_LAMBDA_MAX_CONCURRENCY")
            .env_remove("AWS_LAMBDA_INITIALIZATION_TYPE")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let _child = KillOnDrop(child);

        let mixed = fixture("mixed");
        let empty = fixture("empty");
        let cases = [
            (
                "batch-1",
                fixture_text(&mixed),
                Answer::Response(expected_response(&mixed)),
            ),
            (
                "wrong-shape",
                r#"{"Records": "not a list"}"#.to_owned(),
                Answer::Error("failed to deserialize"),
            ),
            (
                "not-json",
                "this is not JSON".to_owned(),
                Answer::Error("failed to deserialize"),
            ),
            (
                "batch-2",
                fixture_text(&empty),
                Answer::Response(json!({ "batchItemFailures": [] })),
            ),
        ];
        for (request_id, event, expected) in cases {
            invocations.send((request_id.to_owned(), event)).unwrap();
            let answer = tokio::time::timeout(Duration::from_secs(60), answered_rx.recv()).await;
            let Ok(Some((id, kind, body))) = answer else {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("no answer to {request_id} within 60 s; the function's log:\n{log}");
            };
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(id, request_id, "{body}");
            match expected {
                Answer::Response(expected) => {
                    assert_eq!(kind, "response", "{request_id}: {body}");
                    assert_eq!(body, expected, "{request_id}");
                }
                Answer::Error(message) => {
                    assert_eq!(kind, "error", "{request_id}: {body}");
                    let error_message = body["errorMessage"].as_str().unwrap_or_default();
                    assert!(error_message.contains(message), "{request_id}: {body}");
                    assert!(body["errorType"].is_string(), "{request_id}: {body}");
                }
            }
        }
        let _ = std::fs::remove_file(&log_path);
    }
}
