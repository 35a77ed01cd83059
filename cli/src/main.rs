//! `kinesis`: a command line for Kinesis Data Streams, built on the kinesis-rs crates.
//!
//! Each subcommand lives in its own module; this file parses the command line, sets up logging,
//! runs the command and turns its outcome into one line on stderr and an exit code (see
//! `error.rs` and cli/README.md).

// Parts of the shared modules are used only by some commands.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod aws;
mod demo;
mod error;
mod follow;
mod leases;
mod local;
mod position;
mod produce;
mod progress;
mod tail;

use aws::AwsArgs;
use error::CliError;

/// Kinesis Data Streams from the command line.
#[derive(Parser, Debug)]
#[command(name = "kinesis", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    aws: AwsArgs,
    /// No progress lines (errors and results still print).
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Log level of the libraries' logs on stderr, as RUST_LOG takes it (default: warn; the
    /// embedded DynamoDB stand-in's, which log every refused conditional write, at error).
    #[arg(
        long,
        global = true,
        value_name = "FILTER",
        default_value = "warn,dynoxide=error"
    )]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run local Kinesis and DynamoDB stand-ins on 127.0.0.1 until Ctrl-C.
    Local(local::Args),
    /// Print a stream's records as they arrive (every shard, parents before children).
    Tail(tail::Args),
    /// Show a consumer application's lease table, and reset a checkpoint or release a worker's
    /// leases.
    Leases(leases::Args),
    /// Put lines from stdin or files to a stream, one record per line; with --follow, tail
    /// files through rotations, with a checkpoint.
    Produce(produce::Args),
    /// Produce, consume with a fleet of workers, crash one, split a shard, and check that every
    /// record was processed (on embedded stand-ins unless --aws).
    Demo(kinesis_examples::demo::Args),
}

/// What every command is given besides its own arguments.
#[derive(Debug, Clone)]
pub(crate) struct Common {
    /// Where and as whom to call AWS.
    pub(crate) aws: AwsArgs,
    /// How progress is shown.
    pub(crate) progress: progress::Mode,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("kinesis: cannot start the async runtime: {err}");
            return ExitCode::from(error::EXIT_IO);
        }
    };
    let common = Common {
        aws: cli.aws,
        progress: progress::Mode::detect(cli.quiet),
    };
    match runtime.block_on(run(cli.command, common)) {
        Ok(()) => ExitCode::from(error::EXIT_OK),
        Err(err) => {
            eprintln!("kinesis: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

async fn run(command: Command, common: Common) -> Result<(), CliError> {
    match command {
        Command::Local(args) => local::run(args).await,
        Command::Tail(args) => tail::run(args, common).await,
        Command::Leases(args) => leases::run(args, common).await,
        Command::Produce(args) => produce::run(args, common).await,
        Command::Demo(args) => demo::run(args, common).await,
    }
}

/// Parses `line` as the arguments of subcommand `name` alone (for the commands' unit tests).
#[cfg(test)]
pub(crate) fn parse_args<A: clap::Args>(name: &str, line: &[&str]) -> Result<A, clap::Error> {
    #[derive(Parser, Debug)]
    struct Only<A: clap::Args> {
        #[command(flatten)]
        args: A,
    }
    Only::<A>::try_parse_from(std::iter::once(name).chain(line.iter().copied())).map(|c| c.args)
}
