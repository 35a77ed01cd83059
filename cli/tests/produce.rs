//! `kinesis produce` as a process against a Kinesis stand-in in the test process; what it wrote
//! is read back with the SDK and deaggregated.

mod common;

use common::{BoxError, Env, Running, TIMEOUT, TempDir, read_back, run, sent};

const MIB: usize = 1024 * 1024;

/// Lines with CRLF endings, unicode, empty lines, a line that fills a record to the byte and no
/// final newline go out as records with a unicode key, in order (one key: one shard), aggregated
/// or not as asked; read back with the SDK and with `kinesis tail`, they are the lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_round_trip_aggregated_and_not() -> Result<(), BoxError> {
    let env = Env::start().await;
    // The key and the last line fill a record to the byte: 1 MiB for key and data together.
    let key = "ключ-🔑";
    let big = "x".repeat(1024 * 1024 - key.len());
    let input = format!("plain 1\r\n\nünïcödé 🚀\n\r\nlast without newline\n{big}");
    let expected = [
        "plain 1",
        "",
        "ünïcödé 🚀",
        "",
        "last without newline",
        &big,
    ];
    for (stream, aggregation) in [("rt-agg", true), ("rt-plain", false)] {
        env.stream(stream, 2).await;
        let mut command = env.command(&["produce", "--stream", stream, "--key", key, "--ordered"]);
        if !aggregation {
            command.arg("--no-aggregation");
        }
        let out = run(command, input.as_bytes(), TIMEOUT).await;
        assert_eq!(out.code, Some(0), "{out:?}");
        assert_eq!(sent(&out.stdout), Some(6), "{out:?}");
        assert!(out.stdout.contains(", 0 failed"), "{out:?}");
        let records = read_back(&env.kinesis, stream).await;
        let texts: Vec<String> = records.iter().map(|r| r.text()).collect();
        assert_eq!(texts, expected, "{stream}");
        assert!(records.iter().all(|r| r.key == key), "{records:?}");

        // And back through `kinesis tail`, as JSON lines: the same records, keys and order.
        let tailed = env
            .run(
                &[
                    "tail",
                    "--stream",
                    stream,
                    "--from",
                    "trim-horizon",
                    "--format",
                    "json",
                    "--limit",
                    "6",
                ],
                TIMEOUT,
            )
            .await;
        assert_eq!(tailed.code, Some(0), "{}", tailed.stderr);
        let lines: Vec<serde_json::Value> = tailed
            .stdout
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        let tailed_texts: Vec<&str> = lines.iter().filter_map(|l| l["data"].as_str()).collect();
        assert_eq!(tailed_texts, expected, "{stream}: {}", tailed.stderr);
        assert!(lines.iter().all(|l| l["partition_key"] == key), "{stream}");
        // Zero-length data is accepted by PutRecords, inside an aggregate or not.
        assert_eq!(records.iter().filter(|r| r.data.is_empty()).count(), 2);
        if aggregation {
            assert!(records.iter().any(|r| r.aggregated), "{records:?}");
        } else {
            assert!(records.iter().all(|r| !r.aggregated), "{records:?}");
        }
    }
    // --skip-empty drops them, and says so.
    env.stream("rt-skip", 1).await;
    let command = env.command(&[
        "produce",
        "--stream",
        "rt-skip",
        "--key",
        key,
        "--skip-empty",
    ]);
    let out = run(command, input.as_bytes(), TIMEOUT).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("2 empty lines skipped"),
        "{}",
        out.stdout
    );
    let texts: Vec<String> = read_back(&env.kinesis, "rt-skip")
        .await
        .iter()
        .map(|r| r.text())
        .collect();
    assert_eq!(texts.len(), 4);
    Ok(())
}

/// A line exactly at the record limit (1 MiB for key + data) is sent; one byte over fails, as
/// does a 3 MiB line (measured, not kept); the run exits 1 naming both, and the rest arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_at_the_limit_is_sent_and_lines_over_it_fail_alone() -> Result<(), BoxError> {
    let env = Env::start().await;
    let dir = TempDir::new("big");
    let path = dir.join("big.txt");
    let at_limit = "x".repeat(MIB - 1); // + the 1-byte key "k" = 1 MiB
    let mut content = String::from("first\n");
    content.push_str(&at_limit);
    content.push('\n');
    content.push_str(&"y".repeat(MIB)); // 1 MiB + 1 with the key
    content.push('\n');
    content.push_str(&"z".repeat(3 * MIB));
    content.push_str("\nlast\n");
    std::fs::write(&path, &content)?;
    let file = path.display().to_string();
    for (stream, aggregation) in [("big-agg", true), ("big-plain", false)] {
        env.stream(stream, 1).await;
        let mut command = env.command(&[
            "produce",
            "--stream",
            stream,
            "--key",
            "k",
            "--ordered",
            &file,
        ]);
        if !aggregation {
            command.arg("--no-aggregation");
        }
        let out = run(command, b"", TIMEOUT).await;
        assert_eq!(out.code, Some(1), "{out:?}");
        assert_eq!(sent(&out.stdout), Some(3), "{out:?}");
        assert!(out.stdout.contains(", 2 failed"), "{out:?}");
        assert!(
            out.stderr.contains(&format!(
                "{file}:3: RecordTooLarge: invalid record: record is 1048577 bytes"
            )),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr.contains(&format!(
                "{file}:4: RecordTooLarge: the line is 3145728 bytes"
            )),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr.contains("failed: 2 (2 RecordTooLarge)"),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr.contains("kinesis: 2 of 5 lines failed"),
            "{}",
            out.stderr
        );
        let records = read_back(&env.kinesis, stream).await;
        let texts: Vec<String> = records.iter().map(|r| r.text()).collect();
        assert_eq!(
            texts,
            ["first".to_owned(), at_limit.clone(), "last".to_owned()]
        );
    }
    Ok(())
}

/// `--key-field` takes the key from a JSON field (string or number); a line that is not JSON or
/// lacks the field fails alone. `--tab` splits `key<TAB>payload`; a line without a TAB fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_a_json_field_or_a_tab_with_bad_lines() -> Result<(), BoxError> {
    let env = Env::start().await;
    env.stream("field", 2).await;
    let command = env.command(&["produce", "--stream", "field", "--key-field", "user"]);
    let input = "{\"user\":\"ü-1\",\"n\":1}\nnot json\n{\"x\":1}\n{\"user\":42}\n";
    let out = run(command, input.as_bytes(), TIMEOUT).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(sent(&out.stdout), Some(2), "{out:?}");
    assert!(
        out.stderr
            .contains("-:2: NotJson: the line is not a JSON object"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("-:3: NoKeyField: the line has no field \"user\""),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("failed: 2 (1 NoKeyField, 1 NotJson)"),
        "{}",
        out.stderr
    );
    let mut got: Vec<(String, String)> = read_back(&env.kinesis, "field")
        .await
        .iter()
        .map(|r| (r.key.clone(), r.text()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("42".to_owned(), "{\"user\":42}".to_owned()),
            ("ü-1".to_owned(), "{\"user\":\"ü-1\",\"n\":1}".to_owned()),
        ]
    );

    env.stream("tab", 2).await;
    let command = env.command(&["produce", "--stream", "tab", "--tab"]);
    let out = run(
        command,
        "日本\tone\r\nno tab here\nk2\ttwo\tthree\n".as_bytes(),
        TIMEOUT,
    )
    .await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("-:2: NoTab: no TAB between the key and the payload"),
        "{}",
        out.stderr
    );
    let mut got: Vec<(String, String)> = read_back(&env.kinesis, "tab")
        .await
        .iter()
        .map(|r| (r.key.clone(), r.text()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("k2".to_owned(), "two\tthree".to_owned()),
            ("日本".to_owned(), "one".to_owned()),
        ]
    );
    Ok(())
}

/// A stream that does not exist: exit 3 and one line naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_exits_3() -> Result<(), BoxError> {
    let env = Env::start().await;
    let command = env.command(&["produce", "--stream", "nosuch"]);
    let out = run(command, b"a\n", TIMEOUT).await;
    assert_eq!(out.code, Some(3), "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        "kinesis: stream nosuch not found (ResourceNotFoundException)"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
    Ok(())
}

/// Bad arguments exit 2 (clap's usage errors and ours); a file that cannot be opened exits 6
/// before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_and_missing_files() -> Result<(), BoxError> {
    let env = Env::start().await;
    env.stream("args", 1).await;
    let usage: [(&[&str], &str); 5] = [
        (&["--key", "k", "--tab"], "cannot be used with"),
        (&["--key-field", "f", "--tab"], "cannot be used with"),
        (&["--key", ""], "partition key is empty"),
        (&["--follow"], "--follow needs the files to tail"),
        (&["-", "-"], "stdin (-) can be read only once"),
    ];
    for (args, message) in usage {
        let mut command = env.command(&["produce", "--stream", "args"]);
        command.args(args);
        let out = run(command, b"", TIMEOUT).await;
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
    }
    let dir = TempDir::new("args");
    let present = dir.join("present.txt");
    std::fs::write(&present, "a\n")?;
    let mut command = env.command(&["produce", "--stream", "args"]);
    command.arg(&present).arg(dir.join("missing.txt"));
    let out = run(command, b"", TIMEOUT).await;
    assert_eq!(out.code, Some(6), "{out:?}");
    assert!(
        out.stderr
            .contains("missing.txt: No such file or directory"),
        "{}",
        out.stderr
    );
    assert!(read_back(&env.kinesis, "args").await.is_empty());
    Ok(())
}

/// Ctrl-C while stdin is still open: reading stops, what was read is flushed, the summary
/// prints, and the exit code is 130.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_flushes_what_was_read_and_exits_130() -> Result<(), BoxError> {
    use std::process::Stdio;
    use tokio::io::AsyncWriteExt;
    let env = Env::start().await;
    env.stream("ctrlc", 1).await;
    let mut command = env.command(&["produce", "--stream", "ctrlc"]);
    command.stdin(Stdio::piped());
    let mut running = Running::spawn(command);
    let mut stdin = running.child.stdin.take().ok_or("no stdin")?;
    let lines: String = (0..100).map(|i| format!("line {i}\n")).collect();
    stdin.write_all(lines.as_bytes()).await?;
    stdin.flush().await?;
    // Read (the lines reach the producer at once), but the input stays open.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    running.signal("INT");
    let code = running.wait(TIMEOUT).await;
    drop(stdin);
    let stdout = running.stdout();
    let stderr = running.stderr();
    assert_eq!(code, Some(130), "{stdout} {stderr}");
    assert_eq!(sent(&stdout), Some(100), "{stdout}");
    assert!(stderr.contains("kinesis: interrupted"), "{stderr}");
    assert_eq!(read_back(&env.kinesis, "ctrlc").await.len(), 100);
    Ok(())
}
