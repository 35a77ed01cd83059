//! `kinesis local` as a process: it prints the environment, `kinesis produce` works against it,
//! SIGTERM stops it with exit 0. And `kinesis demo`, the showcase on embedded stand-ins.

mod common;

use std::{collections::HashMap, process::Stdio};

use common::{BoxError, read_back, run, sent};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_serves_a_produce_and_stops_on_sigterm() -> Result<(), BoxError> {
    let mut command = common::kinesis_at("http://127.0.0.1:9");
    command
        .args([
            "local",
            "--kinesis-port",
            "0",
            "--dynamodb-port",
            "0",
            "--create-stream",
            "loc:2",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut local = command.spawn()?;
    let stdout = local.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut env = HashMap::new();
    while env.len() < 5 {
        let line = tokio::time::timeout(common::TIMEOUT, lines.next_line())
            .await??
            .ok_or("kinesis local ended before printing its environment")?;
        let (name, value) = line
            .strip_prefix("export ")
            .and_then(|rest| rest.split_once('='))
            .ok_or_else(|| format!("not an export line: {line:?}"))?;
        env.insert(name.to_owned(), value.to_owned());
    }
    let endpoint = env
        .get("AWS_ENDPOINT_URL_KINESIS")
        .ok_or("no AWS_ENDPOINT_URL_KINESIS")?
        .clone();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    assert!(env.contains_key("AWS_ENDPOINT_URL_DYNAMODB"), "{env:?}");
    assert_eq!(env.get("AWS_REGION").map(String::as_str), Some("us-east-1"));

    // A produce with exactly that environment.
    let mut produce = tokio::process::Command::new(env!("CARGO_BIN_EXE_kinesis"));
    produce
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(&env)
        .args(["produce", "--stream", "loc"]);
    let out = run(produce, b"one\ntwo\nthree\n").await?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(sent(&out.stdout), Some(3), "{out:?}");
    let client =
        aws_sdk_kinesis::Client::new(&kinesis_examples::local_config(endpoint.clone()).await);
    let mut texts: Vec<String> = read_back(&client, "loc")
        .await?
        .iter()
        .map(|r| r.text())
        .collect();
    texts.sort();
    assert_eq!(texts, ["one", "three", "two"]);

    common::signal(local.id().ok_or("no pid")?, "TERM").await?;
    let output = tokio::time::timeout(common::TIMEOUT, local.wait_with_output()).await??;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("# stream loc with 2 shard(s) is ACTIVE"),
        "{stderr}"
    );
    assert!(stderr.contains("# stopped"), "{stderr}");
    Ok(())
}

/// The demo as a subcommand: the same showcase as the example, small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_as_a_subcommand() -> Result<(), BoxError> {
    let mut command = common::kinesis_at("http://127.0.0.1:9");
    command.args([
        "demo",
        "--records",
        "2000",
        "--rate",
        "1000",
        "--shards",
        "2",
        "--workers",
        "2",
        "--failover-secs",
        "2",
    ]);
    let out = run(command, b"").await?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout
            .contains("OK: every acknowledged record was processed"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("2. balanced"), "{}", out.stdout);
    assert!(out.stdout.contains("4. shard"), "{}", out.stdout);
    Ok(())
}
