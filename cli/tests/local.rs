//! `kinesis local` as a process: it prints the environment, `kinesis produce` works against it,
//! SIGTERM stops it with exit 0. And `kinesis demo`, the showcase on embedded stand-ins.

mod common;

use std::collections::HashMap;

use common::{BoxError, Running, TIMEOUT, bare_command, read_back, run, sent, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_serves_a_produce_and_stops_on_sigterm() -> Result<(), BoxError> {
    let mut local = Running::spawn(bare_command(&[
        "local",
        "--kinesis-port",
        "0",
        "--dynamodb-port",
        "0",
        "--create-stream",
        "loc:2",
    ]));
    until("kinesis local to print its environment", TIMEOUT, || {
        local.lines().len() >= 5
    })
    .await;
    let mut env = HashMap::new();
    for line in local.lines().into_iter().take(5) {
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
    let mut produce = bare_command(&["produce", "--stream", "loc"]);
    produce.envs(&env);
    let out = run(produce, b"one\ntwo\nthree\n", TIMEOUT).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(sent(&out.stdout), Some(3), "{out:?}");
    let client =
        aws_sdk_kinesis::Client::new(&kinesis_examples::local_config(endpoint.clone()).await);
    let mut texts: Vec<String> = read_back(&client, "loc")
        .await
        .iter()
        .map(|r| r.text())
        .collect();
    texts.sort();
    assert_eq!(texts, ["one", "three", "two"]);

    local.signal("TERM");
    let code = local.wait(TIMEOUT).await;
    let stderr = local.stderr();
    assert_eq!(code, Some(0), "{stderr}");
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
    let command = bare_command(&[
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
    let out = run(command, b"", TIMEOUT).await;
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
