//! `ferrokinesis-server`: the embedded ferrokinesis stand-in (behind the harness's fault layer,
//! with no rules) in a process of its own, on `127.0.0.1`.
//!
//! ```text
//! ferrokinesis-server [--port N] [--enforce-limits] [--ignore-stdin]
//! ```
//!
//! Prints its endpoint (`http://127.0.0.1:<port>`) as the first line on stdout. Stops when stdin
//! reaches end-of-file (so it dies with a parent that pipes its stdin), printing the calls it
//! served per operation as one JSON line; with `--ignore-stdin` it runs until killed. SIGTERM and
//! SIGINT end it at once (default signal dispositions). `--port 0`, the default, takes any free
//! port. `--enforce-limits` throttles writes per shard (1 MiB/s and 1000 records/s in fixed
//! one-second windows, counting data bytes) as Kinesis does.

#![forbid(unsafe_code)]

use kinesis_integration_tests::FerrokinesisOptions;
use kinesis_integration_tests::ferrokinesis_process::serve;

const USAGE: &str = "usage: ferrokinesis-server [--port N] [--enforce-limits] [--ignore-stdin]";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut options = FerrokinesisOptions::new();
    let mut watch_stdin = true;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                let port = args.next().ok_or(USAGE)?;
                let port: u16 = port
                    .parse()
                    .map_err(|e| format!("--port {port:?}: {e}\n{USAGE}"))?;
                options = options.port(port);
            }
            "--enforce-limits" => options = options.enforce_limits(true),
            "--ignore-stdin" => watch_stdin = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    serve(options, watch_stdin).await?;
    Ok(())
}
