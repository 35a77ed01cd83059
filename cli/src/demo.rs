//! `kinesis demo`: the showcase of `kinesis_examples::demo` (produce, consume with a fleet of
//! workers, crash one, split a shard, check every record), the same code as the `demo` example.

use kinesis_examples::demo;

use crate::{Common, error::CliError};

/// Runs the demo; with `--aws`, on the AWS configuration `--region`, `--profile` and
/// `--endpoint-url` give.
pub(crate) async fn run(args: demo::Args, common: Common) -> Result<(), CliError> {
    let aws = if args.uses_aws() {
        Some(common.aws.load().await?)
    } else {
        None
    };
    let report = demo::run(args, aws)
        .await
        .map_err(|e| CliError::Aws(format!("the demo failed: {e}")))?;
    if report.ok() {
        Ok(())
    } else {
        Err(CliError::RecordsFailed(format!(
            "{} of {} acknowledged records were not processed",
            report.missing, report.acknowledged
        )))
    }
}
