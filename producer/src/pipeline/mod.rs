//! The producer's pipeline, from admitted records to resolved receipts: a pure core that makes
//! every decision, and a thin driver that does the I/O.
//!
//! ```text
//!  put ─► intake ─► driver ──── Input ────► machine ──── Action ────► driver
//!        (a vector   (the task:  Admitted     (pure: route, aggregate,  Ship ──────► PutRecords task ─┐
//!         under a     clock,     Flush        batch under the limiters,  ListShards ► ListShards task ─┤
//!         lock)       timers,    Closed       judge answers, retry,      Resolve ───► receipts         │
//!                     channels)  Tick         refresh the map, count     Flushed ───► flush() returns  │
//!                        ▲       Answered     flushes)                                                 │
//!                        │       Listed                                                                │
//!                        └─────────────────────────── call results ◄───────────────────────────────────┘
//! ```
//!
//! The core (`machine` and what it is made of: `entries`, `batching`, `answers`, `flush`,
//! `map_refresh`) takes the time as an argument and knows neither tokio nor the SDK; the SDK
//! entries are built at the edge (`crate::kinesis`), and failed calls are classified there by
//! the shared `kinesis_calls` classification. The `driver` owns the client, the channels and the
//! timers; the `intake` is where `put` leaves records for it.

mod answers;
mod batching;
mod driver;
mod entries;
mod flush;
mod intake;
mod machine;
mod map_refresh;

#[cfg(test)]
mod tests;

pub(crate) use driver::{Command, Pipeline};
pub(crate) use entries::{CallFailure, Entry, EntryResult};
pub(crate) use intake::Intake;
