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

use clap::Parser;
use kinesis_integration_tests::FerrokinesisOptions;
use kinesis_integration_tests::ferrokinesis_process::serve;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "ferrokinesis-server",
    about = "The ferrokinesis stand-in in a process of its own, on 127.0.0.1",
    args_override_self = true
)]
struct Args {
    /// The port (0, the default, takes any free port).
    #[arg(long, value_name = "N")]
    port: Option<u16>,
    /// Throttle writes per shard (1 MiB/s and 1000 records/s) as Kinesis does.
    #[arg(long)]
    enforce_limits: bool,
    /// Run until killed instead of stopping when stdin ends.
    #[arg(long)]
    ignore_stdin: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut options = FerrokinesisOptions::new().enforce_limits(args.enforce_limits);
    if let Some(port) = args.port {
        options = options.port(port);
    }
    serve(options, !args.ignore_stdin).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn flags_parse_and_a_bad_port_is_refused() {
        Args::command().debug_assert();
        let args =
            Args::try_parse_from(["ferrokinesis-server", "--port", "4567", "--enforce-limits"])
                .unwrap();
        assert_eq!(args.port, Some(4567));
        assert!(args.enforce_limits && !args.ignore_stdin);
        for bad in [&["--port", "65536"][..], &["--port", "-1"], &["--bogus"]] {
            let argv = std::iter::once("ferrokinesis-server").chain(bad.iter().copied());
            assert!(Args::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }
}
