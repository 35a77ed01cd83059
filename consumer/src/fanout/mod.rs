//! Enhanced fan-out retrieval: the stream consumer's registration, shared by the worker's
//! shards, and a task per shard that keeps a `SubscribeToShard` subscription open and hands the
//! shard's task the same batches polling does.
//!
//! ```text
//!  Registration (one per worker): DescribeStreamConsumer ─ absent ─► RegisterStreamConsumer
//!                                  └──── poll until ACTIVE (or the register timeout) ◄──┘
//!
//!  per shard:  subscribe(position) ──► events ──► unpack ──► wait for read-ahead budget ──► processor
//!                 ▲                      │ each event moves `position` to its continuation
//!                 └── session end (5 min), silence, dropped connection, ResourceInUse (backoff)
//!  shard end:  continuation null, or ChildShards in an event without records, or the shard gone
//! ```
//!
//! **Position and duplicates.** A subscription is started again from the continuation sequence
//! number of the last event received: `AFTER_SEQUENCE_NUMBER` once a Kinesis record was
//! received, `AT_SEQUENCE_NUMBER` before (so that nothing is skipped whatever the continuation
//! points at). Events already received sit in the shard's read-ahead until processed, so no
//! record is skipped; a record at or before the last one handed out is dropped rather than
//! delivered again, so a subscription that restarts replays nothing. The only duplicates are
//! those of any failover: records after the last checkpoint.
//!
//! **Flow control.** The next event is read only once the previous one fits in the shard's
//! read-ahead (records and bytes, as for polling); until then the HTTP/2 flow-control window
//! (or TCP) holds the service back.
//!
//! **Layout.** Both loops are pure state machines, `(state, input, now) -> action`, driven by a
//! thin task that performs the actions (the SDK calls, reading the event stream, sleeping) and
//! feeds their answers back, so that every branch and every wait is tested without a network:
//!
//! - [`register`]: [`Registration`], the worker's shared stream consumer, and `Registering`,
//!   the machine that describes the stream, looks at the consumer, registers it if absent and
//!   waits for `ACTIVE` by the register timeout;
//! - [`subscribe`]: `Subscription`, the machine of one shard's subscriptions, and the task that
//!   runs it;
//! - what an event, the end of a subscription, silence or a failure means is decided in
//!   [`retrieval::decide`](crate::retrieval::decide), which polling shares.

mod register;
mod subscribe;

pub(crate) use register::Registration;
pub(crate) use subscribe::{Subscriber, spawn};
