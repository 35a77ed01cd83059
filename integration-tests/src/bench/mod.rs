//! What the benchmark binaries (`producer-bench`, `consumer-bench`, `agg-bench`) share, kept
//! here so the binaries hold only their scenarios and reports:
//!
//! ```text
//!  benchmark binary ──re-executed with --serve-ferrokinesis──▶ ferrokinesis (child; its CPU apart)
//!    │ put loop ──receipts (in chunks)──▶ receipts: a task tallying them (Tally)
//!    │ metrics recorder ──every second──▶ sampler: per-second samples and totals
//!    └ after the run ──read_shards──▶ read_back: every record there once, at its receipt's place
//!  consumer-bench's scale scenario ──▶ scale: even splits, the KCL's arithmetic, prices, verdicts
//! ```

pub mod args;
pub mod read_back;
pub mod receipts;
pub mod sampler;
pub mod scale;

use std::process::Command;

use crate::bench::args::StandInArgs;
use crate::fault::layer::BoxError;
use crate::ferrokinesis_process::FerrokinesisProcess;

/// The flag that makes a benchmark binary serve ferrokinesis instead of benchmarking (the same
/// code as the `ferrokinesis-server` bin), optionally with `--enforce-limits`.
pub const SERVE_FLAG: &str = "--serve-ferrokinesis";

/// This benchmark binary re-executed with [`SERVE_FLAG`]: the stand-in in a child process of its
/// own, so its CPU is not counted in the benchmark's; with `enforce_limits`, it throttles writes
/// per shard as Kinesis does.
pub async fn start_stand_in(enforce_limits: bool) -> Result<FerrokinesisProcess, BoxError> {
    start_stand_in_with(&StandInArgs {
        enforce_limits,
        shard_limit: StandInArgs::DEFAULT_SHARD_LIMIT,
    })
    .await
}

/// [`start_stand_in`] with every option of the stand-in (its shard limit too).
pub async fn start_stand_in_with(stand_in: &StandInArgs) -> Result<FerrokinesisProcess, BoxError> {
    let mut command = Command::new(std::env::current_exe()?);
    command.arg(SERVE_FLAG);
    if stand_in.enforce_limits {
        command.arg("--enforce-limits");
    }
    command.args(["--shard-limit", &stand_in.shard_limit.to_string()]);
    Ok(FerrokinesisProcess::spawn(command).await?)
}
