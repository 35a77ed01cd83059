//! `kinesis produce --follow`.

use crate::{Common, error::CliError, produce::Args};

pub(crate) async fn run(_args: Args, _common: Common) -> Result<(), CliError> {
    Err(CliError::Usage("--follow is not there yet".to_owned()))
}
