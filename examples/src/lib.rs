//! Runnable examples for the kinesis-rs crates: see the `[[example]]` targets.
