//! `kinesis produce --follow` while the stream throttles every `PutRecords` for longer than the
//! record TTL: memory stays bounded (the file keeps what is not yet sent), records that expire
//! are put again instead of skipped, the checkpoint does not move past them, and once the
//! throttling stops every line arrives.

mod common;

use std::{
    io::{BufWriter, Write},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::{BoxError, Env, Running, TIMEOUT, TempDir, read_back};

/// Lines in the file, each [`LINE`] bytes with its newline: 80 MB, far above the bound.
const LINES: usize = 80_000;
const LINE: usize = 1_000;
/// Lines held at once (`--max-outstanding`): 1 MB of them.
const MAX_OUTSTANDING: usize = 1_000;
/// The peak resident memory allowed while throttled: measured 38 MiB (debug build: the
/// process's own, the lines held, the producer's buffers), with room to spare; a follower that
/// read the 76 MiB file into memory would pass it by far.
const MAX_RSS_KIB: u64 = 56 * 1024;
/// Shards of the stream: the stand-in paces each at its write limit, so the 80 MB drain after
/// the throttling takes a quarter of the time on four.
const SHARDS: i32 = 4;
/// How long every `PutRecords` is refused: several record TTLs.
const THROTTLED_FOR: Duration = Duration::from_secs(8);

/// A proxy in front of the Kinesis stand-in that answers every `PutRecords` with
/// `ProvisionedThroughputExceededException` while `throttle` is set, counting them.
async fn throttling_proxy(
    upstream: String,
    throttle: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
) -> Result<String, BoxError> {
    use axum::body::{Body, Bytes};
    use http_body_util::{BodyExt, Full};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let client = client.clone();
        let upstream = upstream.clone();
        let throttle = throttle.clone();
        let refused = refused.clone();
        async move {
            let bad_gateway = |e: &dyn std::fmt::Display| {
                axum::response::Response::builder()
                    .status(502)
                    .body(Body::from(format!("proxy: {e}")))
                    .unwrap_or_default()
            };
            let (parts, body) = request.into_parts();
            let body = match body.collect().await {
                Ok(body) => body.to_bytes(),
                Err(e) => return bad_gateway(&e),
            };
            let put_records = parts
                .headers
                .get("x-amz-target")
                .and_then(|t| t.to_str().ok())
                .is_some_and(|t| t.ends_with(".PutRecords"));
            if put_records && throttle.load(Ordering::SeqCst) {
                refused.fetch_add(1, Ordering::SeqCst);
                return axum::response::Response::builder()
                    .status(400)
                    .header("content-type", "application/x-amz-json-1.1")
                    .body(Body::from(
                        r#"{"__type":"ProvisionedThroughputExceededException","message":"Rate exceeded for shard"}"#,
                    ))
                    .unwrap_or_default();
            }
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let mut forward = axum::http::Request::builder()
                .method(parts.method.clone())
                .uri(format!("{upstream}{path}"));
            for (name, value) in &parts.headers {
                forward = forward.header(name, value);
            }
            let forward = match forward.body(Full::new(body)) {
                Ok(forward) => forward,
                Err(e) => return bad_gateway(&e),
            };
            match client.request(forward).await {
                Ok(answer) => {
                    let (parts, body) = answer.into_parts();
                    match body.collect().await {
                        Ok(body) => {
                            axum::response::Response::from_parts(parts, Body::from(body.to_bytes()))
                        }
                        Err(e) => bad_gateway(&e),
                    }
                }
                Err(e) => bad_gateway(&e),
            }
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(endpoint)
}

fn line_text(n: usize) -> String {
    let head = format!("line {n:06} ");
    format!("{head}{}", "x".repeat(LINE - 1 - head.len()))
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The checkpoint's offset for `log` (the sum over its entries), or 0 before there is one.
fn checkpointed(cp: &Path, log: &Path) -> u64 {
    let Ok(text) = std::fs::read_to_string(cp) else {
        return 0;
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
        return 0;
    };
    value["files"][log.to_string_lossy().as_ref()]
        .as_array()
        .map(|entries| entries.iter().filter_map(|e| e["offset"].as_u64()).sum())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_past_the_ttl_holds_memory_and_loses_no_line() -> Result<(), BoxError> {
    let env = Env::start().await;
    env.stream("throttled", SHARDS).await;
    let throttle = Arc::new(AtomicBool::new(true));
    let refused = Arc::new(AtomicU64::new(0));
    let proxy = throttling_proxy(
        env.kinesis_endpoint.clone(),
        throttle.clone(),
        refused.clone(),
    )
    .await?;

    let dir = TempDir::new("throttled");
    let log = dir.join("app.log");
    let cp = dir.join("cp.json");
    {
        let mut out = BufWriter::new(std::fs::File::create(&log)?);
        for n in 0..LINES {
            writeln!(out, "{}", line_text(n))?;
        }
        out.flush()?;
    }
    let size = std::fs::metadata(&log)?.len();

    let mut command = env.command(&["-q", "produce", "--stream", "throttled", "--follow"]);
    command
        .arg(&log)
        .arg("--checkpoint")
        .arg(&cp)
        .args(["--max-outstanding", &MAX_OUTSTANDING.to_string()])
        .args(["--record-ttl", "2s"])
        .env("AWS_ENDPOINT_URL_KINESIS", &proxy);
    let mut follower = Running::spawn(command);
    let pid = follower.child.id().ok_or("no pid")?;

    // Throttled for several TTLs: the memory stays under the bound, nothing is checkpointed.
    let mut peak = 0;
    let until = Instant::now() + THROTTLED_FOR;
    while Instant::now() < until {
        peak = peak.max(rss_kib(pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused_while_throttled = refused.load(Ordering::SeqCst);
    assert!(
        refused_while_throttled > 10,
        "only {refused_while_throttled} PutRecords calls were refused"
    );
    assert_eq!(
        checkpointed(&cp, &log),
        0,
        "the checkpoint moved while every put was refused"
    );
    assert!(
        peak < MAX_RSS_KIB,
        "peak RSS {peak} KiB while throttled, over {MAX_RSS_KIB} KiB (the file is {size} bytes)"
    );

    // The throttling ends: everything goes out, and the checkpoint reaches the end.
    throttle.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(90);
    while checkpointed(&cp, &log) < size {
        assert!(
            Instant::now() < deadline,
            "the checkpoint stayed at {} of {size} bytes",
            checkpointed(&cp, &log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    follower.signal("TERM");
    let code = follower.wait(TIMEOUT).await;
    let stdout = follower.stdout();
    let stderr = follower.stderr();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains(", 0 failed"), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("records were put again after failing"),
        "no record expired and was put again: {stderr}"
    );

    let mut seen = vec![0u32; LINES];
    let mut other = 0;
    for record in read_back(&env.kinesis, "throttled").await {
        let text = record.text();
        match text
            .strip_prefix("line ")
            .and_then(|rest| rest.get(..6))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n < LINES && text == line_text(*n))
        {
            Some(n) => seen[n] += 1,
            None => other += 1,
        }
    }
    let missing = seen.iter().filter(|c| **c == 0).count();
    let twice = seen.iter().filter(|c| **c > 1).count();
    assert_eq!(other, 0, "records that are no line of the file");
    assert_eq!(missing, 0, "{missing} lines missing");
    // Every refused call wrote nothing, and nothing else failed: no line twice.
    assert_eq!(twice, 0, "{twice} lines twice");
    println!(
        "{LINES} lines ({size} bytes) followed through {:.0} s of throttling ({} PutRecords \
         refused): peak RSS {} KiB (bound {} KiB), every line in the stream, {twice} twice",
        THROTTLED_FOR.as_secs_f64(),
        refused_while_throttled,
        peak,
        MAX_RSS_KIB
    );
    Ok(())
}
