//! `kinesis tail` as a process against the stand-ins: every format, aggregates, resharding,
//! each kind of `--from`, `--shard`, enhanced fan-out, and the failures' exit codes.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use common::{Env, Running, TempDir, bare_command, epoch, until, until_async};

async fn deregistered(env: &Env, stream: &str) {
    // ferrokinesis keeps a deregistered consumer DELETING for half a second.
    until_async(
        "the stream consumer to be deregistered",
        PATIENCE,
        || async { consumers(env, stream).await.is_empty() },
    )
    .await;
}

const PATIENCE: Duration = Duration::from_secs(25);
/// A shard's first (0) and last (2^128 - 1) hash keys, and the middle.
const MIDDLE: &str = "170141183460469231731687303715884105728";

fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn data_of(values: &[serde_json::Value]) -> Vec<String> {
    values
        .iter()
        .map(|v| v["data"].as_str().unwrap_or("<binary>").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_print_in_each_format_plain_aggregated_unicode_empty_and_1_mib() {
    let env = Env::start().await;
    let stream = env.stream("formats", 1).await;
    let (shard, plain_seq) = env.put(&stream, "user-7", "hello\nworld").await;
    env.put(&stream, "ключ 🔑", "données").await;
    env.put(&stream, "empty", Vec::new()).await;
    let big = vec![b'a'; 1024 * 1024 - 3];
    env.put(&stream, "big", big.clone()).await;
    let (_, agg_seq) = env.put_aggregate(&stream, "agg", &["u0", "u1", "u2"]).await;
    let all = "7";

    let text = env
        .run(
            &[
                "tail",
                "--stream",
                &stream,
                "--from",
                "trim-horizon",
                "--limit",
                all,
            ],
            PATIENCE,
        )
        .await;
    assert_eq!(text.code, Some(0), "{}", text.stderr);
    let lines = text.lines();
    assert_eq!(lines.len(), 7, "{lines:?}");
    let fields: Vec<Vec<&str>> = lines.iter().map(|l| l.splitn(5, ' ').collect()).collect();
    assert_eq!(fields[0][0], shard);
    assert_eq!(fields[0][1], format!("{plain_seq}/0"));
    assert_eq!(fields[0][2], "key=user-7");
    assert!(
        fields[0][3].ends_with('Z') && fields[0][3].len() == 24,
        "{}",
        fields[0][3]
    );
    assert_eq!(fields[0][4], "hello\\nworld");
    assert_eq!(fields[1][2], "key=ключ\\u{20}🔑");
    assert_eq!(fields[1][4], "données");
    assert_eq!(fields[2][2], "key=empty");
    assert_eq!(fields[2][4], "");
    assert_eq!(fields[3][4].len(), big.len());
    for (i, line) in fields[4..].iter().enumerate() {
        assert_eq!(line[1], format!("{agg_seq}/{i}"));
        assert_eq!(line[2], "key=agg");
        assert_eq!(line[4], format!("u{i}"));
    }

    let json = env
        .run(
            &[
                "tail",
                "--stream",
                &stream,
                "--from",
                "trim-horizon",
                "--limit",
                all,
                "--format",
                "json",
            ],
            PATIENCE,
        )
        .await;
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let values = json_lines(&json.stdout);
    assert_eq!(values.len(), 7);
    assert_eq!(values[0]["shard"], shard);
    assert_eq!(values[0]["sequence"], plain_seq);
    assert_eq!(values[0]["subsequence"], 0);
    assert_eq!(values[0]["partition_key"], "user-7");
    assert_eq!(values[0]["data"], "hello\nworld");
    assert_eq!(values[1]["partition_key"], "ключ 🔑");
    assert_eq!(values[2]["data"], "");
    assert_eq!(values[3]["data"].as_str().map(str::len), Some(big.len()));
    assert_eq!(values[6]["sequence"], agg_seq);
    assert_eq!(values[6]["subsequence"], 2);
    assert_eq!(values[6]["data"], "u2");
    for value in &values {
        assert!(value["arrival"].as_str().is_some_and(|a| a.ends_with('Z')));
    }

    let hex = env
        .run(
            &[
                "tail",
                "--stream",
                &stream,
                "--from",
                "trim-horizon",
                "--limit",
                "3",
                "--format",
                "hex",
            ],
            PATIENCE,
        )
        .await;
    assert_eq!(hex.code, Some(0), "{}", hex.stderr);
    let lines = hex.lines();
    assert_eq!(lines.len(), 3);
    assert!(
        lines[0].ends_with(" 68656c6c6f0a776f726c64"),
        "{}",
        lines[0]
    );
    assert!(lines[2].ends_with("Z "), "an empty payload: {}", lines[2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_and_a_merge_are_followed_parents_first() {
    let env = Env::start().await;
    let stream = env.stream("reshard", 1).await;
    let from = epoch(SystemTime::now() - Duration::from_secs(1));
    let mut tail = Running::spawn(env.command(&[
        "tail", "--stream", &stream, "--from", &from, "--limit", "18", "--format", "json",
    ]));
    let key = |i: usize| format!("{i:x}");
    for i in 0..6 {
        env.put(&stream, &key(i), format!("a{i}")).await;
    }
    env.kinesis
        .split_shard()
        .stream_name(&stream)
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key(MIDDLE)
        .send()
        .await
        .unwrap();
    kinesis_examples::wait_active(&env.kinesis, &stream)
        .await
        .unwrap();
    for i in 0..3 {
        env.put_at(&stream, "0", &format!("b{i}")).await;
        env.put_at(&stream, MIDDLE, &format!("b{}", i + 3)).await;
    }
    let children: Vec<String> = env
        .shards(&stream)
        .await
        .into_iter()
        .filter(|(_, parents, closed)| !parents.is_empty() && !closed)
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(children.len(), 2, "{children:?}");
    env.kinesis
        .merge_shards()
        .stream_name(&stream)
        .shard_to_merge(&children[0])
        .adjacent_shard_to_merge(&children[1])
        .send()
        .await
        .unwrap();
    kinesis_examples::wait_active(&env.kinesis, &stream)
        .await
        .unwrap();
    for i in 0..6 {
        env.put(&stream, &key(i), format!("c{i}")).await;
    }
    let code = tail.wait(PATIENCE).await;
    assert_eq!(code, Some(0), "{}", tail.stderr());
    let values = json_lines(&tail.lines().join("\n"));
    assert_eq!(values.len(), 18, "{values:?}");
    // Each generation's records all come before the next generation's, whatever the shard.
    let generation: Vec<char> = data_of(&values)
        .iter()
        .map(|d| d.chars().next().unwrap())
        .collect();
    let mut sorted = generation.clone();
    sorted.sort_unstable();
    assert_eq!(generation, sorted, "parents first: {:?}", data_of(&values));
    let shards_of = |g: char| -> std::collections::BTreeSet<String> {
        values
            .iter()
            .filter(|v| v["data"].as_str().is_some_and(|d| d.starts_with(g)))
            .map(|v| v["shard"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(shards_of('a').len(), 1);
    assert_eq!(shards_of('b'), children.into_iter().collect());
    let merged = shards_of('c');
    assert_eq!(merged.len(), 1);
    assert!(shards_of('a').is_disjoint(&merged));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_the_trim_horizon_a_time_a_sequence_number_and_latest() {
    let env = Env::start().await;
    let stream = env.stream("from", 1).await;
    let mut sequences = Vec::new();
    for i in 0..5 {
        sequences.push(env.put(&stream, "k", format!("r{i}")).await);
    }
    let middle = common::next_second(Duration::from_millis(50)).await;
    for i in 5..8 {
        env.put(&stream, "k", format!("r{i}")).await;
    }
    let (shard, agg) = env
        .put_aggregate(&stream, "agg", &["u0", "u1", "u2", "u3"])
        .await;
    let tail = |from: String, limit: &'static str, shard: Option<String>| {
        let env = &env;
        let stream = stream.clone();
        async move {
            let mut args = vec![
                "tail".to_owned(),
                "--stream".to_owned(),
                stream,
                "--from".to_owned(),
                from,
                "--limit".to_owned(),
                limit.to_owned(),
                "--format".to_owned(),
                "json".to_owned(),
            ];
            if let Some(shard) = shard {
                args.extend(["--shard".to_owned(), shard]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let ran = env.run(&args, PATIENCE).await;
            assert_eq!(ran.code, Some(0), "{args:?}: {}", ran.stderr);
            data_of(&json_lines(&ran.stdout))
        }
    };
    assert_eq!(
        tail("trim-horizon".into(), "3", None).await,
        ["r0", "r1", "r2"]
    );
    assert_eq!(tail(epoch(middle), "3", None).await, ["r5", "r6", "r7"]);
    let rfc3339 = aws_smithy_types::DateTime::from(middle)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap();
    assert_eq!(tail(rfc3339, "2", None).await, ["r5", "r6"]);
    assert_eq!(
        tail(sequences[3].1.clone(), "2", Some(shard.clone())).await,
        ["r3", "r4"]
    );
    assert_eq!(
        tail(format!("{agg}/2"), "2", Some(shard.clone())).await,
        ["u2", "u3"]
    );

    // From the latest: only records put after the start are printed (records go on being put
    // until it has one, since when it took its position is not known from outside).
    let mut latest = Running::spawn(env.command(&[
        "tail", "--stream", &stream, "--limit", "1", "--format", "json",
    ]));
    let mut n = 0;
    until_async("tail --from latest to print a record", PATIENCE, || {
        n += 1;
        let put = env.put(&stream, "k", format!("late{n}"));
        let done = !latest.lines().is_empty();
        async move {
            put.await;
            done
        }
    })
    .await;
    assert_eq!(latest.wait(PATIENCE).await, Some(0));
    let first = data_of(&json_lines(&latest.lines().join("\n")));
    assert!(first[0].starts_with("late"), "{first:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_given_shards_are_read() {
    let env = Env::start().await;
    let stream = env.stream("shards", 2).await;
    for i in 0..4 {
        env.put_at(&stream, "0", &format!("low{i}")).await;
        env.put_at(&stream, MIDDLE, &format!("high{i}")).await;
    }
    let ran = env
        .run(
            &[
                "tail",
                "--stream",
                &stream,
                "--from",
                "trim-horizon",
                "--shard",
                "shardId-000000000001",
                "--limit",
                "4",
                "--format",
                "json",
            ],
            PATIENCE,
        )
        .await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let values = json_lines(&ran.stdout);
    assert!(
        values.iter().all(|v| v["shard"] == "shardId-000000000001"),
        "{values:?}"
    );
    assert_eq!(data_of(&values), ["high0", "high1", "high2", "high3"]);

    let unknown = env
        .run(
            &[
                "tail",
                "--stream",
                &stream,
                "--shard",
                "shardId-000000000009",
            ],
            PATIENCE,
        )
        .await;
    assert_eq!(unknown.code, Some(3), "{}", unknown.stderr);
    assert!(
        unknown
            .stderr
            .contains("shard shardId-000000000009 not found in stream"),
        "{}",
        unknown.stderr
    );
}

async fn consumers(env: &Env, stream: &str) -> Vec<String> {
    let arn = env
        .kinesis
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .unwrap()
        .stream_description_summary
        .unwrap()
        .stream_arn;
    env.kinesis
        .list_stream_consumers()
        .stream_arn(arn)
        .send()
        .await
        .unwrap()
        .consumers()
        .iter()
        .map(|c| c.consumer_name().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reads_and_deregisters_its_consumer_also_on_ctrl_c() {
    let env = Env::start().await;
    let stream = env.stream("fanout", 2).await;
    for i in 0..3 {
        env.put_at(&stream, "0", &format!("low{i}")).await;
        env.put_at(&stream, MIDDLE, &format!("high{i}")).await;
    }
    env.put_aggregate(&stream, "agg", &["u0", "u1"]).await;
    let ran = env
        .run(
            &[
                "tail",
                "--stream",
                &stream,
                "--from",
                "trim-horizon",
                "--fan-out",
                "--limit",
                "8",
                "--format",
                "json",
            ],
            PATIENCE,
        )
        .await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let mut data = data_of(&json_lines(&ran.stdout));
    data.sort();
    assert_eq!(
        data,
        [
            "high0", "high1", "high2", "low0", "low1", "low2", "u0", "u1"
        ]
    );
    assert!(
        ran.stderr
            .contains("registered stream consumer kinesis-cli-tail-"),
        "{}",
        ran.stderr
    );
    deregistered(&env, &stream).await;

    // Until Ctrl-C: a clean stop, the consumer deregistered, exit 130.
    let mut running = Running::spawn(env.command(&[
        "tail",
        "--stream",
        &stream,
        "--from",
        "trim-horizon",
        "--fan-out",
    ]));
    until("records over fan-out", PATIENCE, || {
        running.lines().len() >= 8
    })
    .await;
    assert_eq!(consumers(&env, &stream).await.len(), 1);
    running.signal("INT");
    assert_eq!(
        running.wait(PATIENCE).await,
        Some(130),
        "{}",
        running.stderr()
    );
    assert!(
        running.stderr().contains("kinesis: interrupted"),
        "{}",
        running.stderr()
    );
    deregistered(&env, &stream).await;

    // A consumer given by name is used, and kept.
    let arn = env
        .kinesis
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .unwrap()
        .stream_description_summary
        .unwrap()
        .stream_arn;
    env.kinesis
        .register_stream_consumer()
        .stream_arn(arn)
        .consumer_name("mine")
        .send()
        .await
        .unwrap();
    let ran = env
        .run(
            &[
                "tail",
                "--stream",
                &stream,
                "--from",
                "trim-horizon",
                "--fan-out",
                "--consumer",
                "mine",
                "--limit",
                "8",
            ],
            PATIENCE,
        )
        .await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(ran.lines().len(), 8);
    assert_eq!(consumers(&env, &stream).await, ["mine"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_cleanly_and_a_closed_pipe_ends_quietly() {
    let env = Env::start().await;
    let stream = env.stream("signals", 1).await;
    env.put(&stream, "k", "first").await;
    let mut running =
        Running::spawn(env.command(&["tail", "--stream", &stream, "--from", "trim-horizon"]));
    until("the first record", PATIENCE, || !running.lines().is_empty()).await;
    running.signal("INT");
    assert_eq!(running.wait(PATIENCE).await, Some(130));

    // `kinesis tail | head -1`: the reader goes; the next write ends the command, exit 0.
    let mut command = env.command(&["tail", "--stream", &stream, "--from", "trim-horizon"]);
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut first)
        .await
        .unwrap();
    assert!(first.ends_with(" first\n"), "{first}");
    drop(stdout);
    let mut n = 0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        n += 1;
        assert!(n < 200, "tail did not notice the closed pipe");
        env.put(&stream, "k", format!("more{n}")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(0));
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(!stderr.contains("kinesis:"), "quietly: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_exit_with_their_codes() {
    let env = Env::start().await;
    let missing = env.run(&["tail", "--stream", "nope"], PATIENCE).await;
    assert_eq!(missing.code, Some(3), "{}", missing.stderr);
    assert!(
        missing.stderr.starts_with("kinesis: stream nope not found"),
        "{}",
        missing.stderr
    );

    let stream = env.stream("usage", 1).await;
    let sequence = "49590338271490256608559692538361571095921575989136588818";
    let usage: BTreeMap<&str, Vec<&str>> = [
        (
            "a sequence number without --shard",
            vec!["--from", sequence],
        ),
        ("a bad time", vec!["--from", "2026-13-45T99:00:00Z"]),
        ("a word", vec!["--from", "yesterday"]),
        ("--limit 0", vec!["--limit", "0"]),
        ("a bad format", vec!["--format", "xml"]),
    ]
    .into_iter()
    .collect();
    for (what, extra) in usage {
        let mut args = vec!["tail", "--stream", &stream];
        args.extend(extra);
        let ran = env.run(&args, PATIENCE).await;
        assert_eq!(ran.code, Some(2), "{what}: {}", ran.stderr);
        assert!(!ran.stderr.is_empty(), "{what}");
    }

    // No credentials anywhere: no environment, a HOME without ~/.aws, no instance metadata.
    let home = TempDir::new("empty-home");
    let mut command = bare_command(&["tail", "--stream", &stream]);
    command
        .env("HOME", &home.0)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL_KINESIS", &env.kinesis_endpoint);
    let ran = common::run(command, b"", PATIENCE).await;
    assert_eq!(ran.code, Some(4), "{}", ran.stderr);
    assert!(
        ran.stderr.starts_with("kinesis: no AWS credentials"),
        "{}",
        ran.stderr
    );
}
