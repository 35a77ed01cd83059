//! Rewrites a `SubscribeToShard` event stream into Kinesis's shard-end form.
//!
//! Kinesis ends a closed shard's subscription with one last `SubscribeToShardEvent` whose
//! `ContinuationSequenceNumber` is null and whose `ChildShards` name the children, then closes
//! the stream. ferrokinesis instead names the children in every event once the shard is closed
//! (with a continuation), and ends the stream after the first such event without records. This
//! rewriter turns the second form into the first, so that a consumer's handling of the service's
//! form runs against the real SDK:
//!
//! ```text
//!  stand-in body ─bytes─▶ split into messages (prelude length) ─▶ per message:
//!     SubscribeToShardEvent, ChildShards non-empty, Records non-empty ─▶ ChildShards removed
//!     SubscribeToShardEvent, ChildShards non-empty, Records empty ─────▶ continuation null,
//!          children's ParentShards from ListShards, sent, then the body ends (stand-in dropped)
//!     anything else (initial-response, exceptions, events without children) ─▶ same bytes
//! ```
//!
//! **Parents.** In the events of a merge's adjacent parent, ferrokinesis 0.7 gives the merge
//! child `ParentShards` naming that shard alone (it lists the subscribed shard, then the
//! adjacent parent unless that is the subscribed shard, never the other parent); Kinesis names
//! both. A consumer that sees the adjacent parent end first takes the child for a split child
//! and may start it before the other parent ended. So the final event's `ParentShards` are taken
//! from a `ListShards` call (one page, up to 10,000 shards) made to the stand-in when the final
//! event arrives: each child's `ParentShardId` and `AdjacentParentShardId`.
//!
//! The framing (prelude and message CRC32s) is read and written by `aws-smithy-eventstream`,
//! the SDK's own codec.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use aws_smithy_eventstream::frame::{read_message_from, write_message_to};
use aws_smithy_types::event_stream::Message;
use axum::body::Body;
use bytes::{Bytes, BytesMut};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use serde_json::Value;

use crate::serve::BoxError;

/// The event type of a `SubscribeToShard` event.
const SUBSCRIBE_TO_SHARD_EVENT: &str = "SubscribeToShardEvent";

/// The shortest valid message: a 12-byte prelude and a 4-byte message CRC.
const MIN_MESSAGE_LEN: usize = 16;

/// The stand-in's `ListShards` answer (JSON), asked for when a final event arrives.
pub(crate) type Listing = Pin<Box<dyn Future<Output = Result<Value, BoxError>> + Send>>;

/// Counts of the rewrites done, shared by a controller and the bodies it wraps.
#[derive(Debug, Default)]
pub(crate) struct ShardEndCounts {
    final_events: AtomicU64,
    children_withheld: AtomicU64,
    parents_completed: AtomicU64,
}

impl ShardEndCounts {
    /// Final events rewritten (continuation set to null, stream ended after them).
    pub(crate) fn final_events(&self) -> u64 {
        self.final_events.load(Ordering::Relaxed)
    }

    /// Events with records whose `ChildShards` were removed.
    pub(crate) fn children_withheld(&self) -> u64 {
        self.children_withheld.load(Ordering::Relaxed)
    }

    /// Final events whose children's `ParentShards` the listing changed.
    pub(crate) fn parents_completed(&self) -> u64 {
        self.parents_completed.load(Ordering::Relaxed)
    }
}

/// What [`rewrite`] does with one message.
#[derive(Debug, PartialEq)]
pub(crate) enum Rewrite {
    /// Passed on byte for byte.
    Unchanged,
    /// An event with records: the same event without `ChildShards`.
    ChildrenWithheld(Message),
    /// The shard's final event: continuation null, children kept. The stream ends after it.
    Final(Message),
}

/// Decides how one event-stream message is rewritten (see the module's picture).
pub(crate) fn rewrite(message: &Message) -> Rewrite {
    if header(message, ":event-type") != Some(SUBSCRIBE_TO_SHARD_EVENT)
        || header(message, ":message-type").is_some_and(|t| t != "event")
    {
        return Rewrite::Unchanged;
    }
    // The SDK asks for awsJson 1.1, so ferrokinesis answers JSON payloads; a CBOR payload
    // (sent only to CBOR clients) is left alone.
    if header(message, ":content-type").is_some_and(|t| !t.contains("json")) {
        return Rewrite::Unchanged;
    }
    let Ok(Value::Object(mut event)) = serde_json::from_slice::<Value>(message.payload()) else {
        return Rewrite::Unchanged;
    };
    let non_empty = |value: Option<&Value>| {
        value
            .and_then(Value::as_array)
            .is_some_and(|items| !items.is_empty())
    };
    if !non_empty(event.get("ChildShards")) {
        return Rewrite::Unchanged;
    }
    let final_event = !non_empty(event.get("Records"));
    if final_event {
        event.insert("ContinuationSequenceNumber".to_owned(), Value::Null);
    } else {
        event.remove("ChildShards");
    }
    let Ok(payload) = serde_json::to_vec(&Value::Object(event)) else {
        return Rewrite::Unchanged;
    };
    let rewritten = Message::new_from_parts(message.headers().to_vec(), payload);
    if final_event {
        Rewrite::Final(rewritten)
    } else {
        Rewrite::ChildrenWithheld(rewritten)
    }
}

/// The final event `message` with each child's `ParentShards` as `listing` (a `ListShards`
/// answer) says; whether that changed anything. Children the listing lacks keep theirs.
pub(crate) fn with_listed_parents(message: &Message, listing: &Value) -> (Message, bool) {
    let unchanged = || (message.clone(), false);
    let Some(shards) = listing.get("Shards").and_then(Value::as_array) else {
        return unchanged();
    };
    let Ok(Value::Object(mut event)) = serde_json::from_slice::<Value>(message.payload()) else {
        return unchanged();
    };
    let Some(children) = event.get_mut("ChildShards").and_then(Value::as_array_mut) else {
        return unchanged();
    };
    let mut changed = false;
    for child in children {
        let id = child.get("ShardId").and_then(Value::as_str);
        let Some(listed) = shards
            .iter()
            .find(|s| id.is_some() && s.get("ShardId").and_then(Value::as_str) == id)
        else {
            continue;
        };
        let parents: Vec<Value> = ["ParentShardId", "AdjacentParentShardId"]
            .iter()
            .filter_map(|key| listed.get(*key).filter(|v| v.is_string()).cloned())
            .collect();
        if parents.is_empty() {
            continue;
        }
        let sorted = |v: &[Value]| {
            let mut ids: Vec<String> = v.iter().map(Value::to_string).collect();
            ids.sort();
            ids
        };
        let before = child
            .get("ParentShards")
            .and_then(Value::as_array)
            .map(|p| sorted(p));
        if before.as_ref() != Some(&sorted(&parents)) {
            child["ParentShards"] = Value::Array(parents);
            changed = true;
        }
    }
    if !changed {
        return unchanged();
    }
    match serde_json::to_vec(&Value::Object(event)) {
        Ok(payload) => (
            Message::new_from_parts(message.headers().to_vec(), payload),
            true,
        ),
        Err(_) => unchanged(),
    }
}

/// The `ListShards` call to make when a subscription's shard ends: the `SubscribeToShard`
/// request's headers (signature included: the stand-ins check that one is present) with the
/// operation changed, for the stream named in the request's `ConsumerARN`
/// (`arn:aws:kinesis:<region>:<account>:stream/<name>/consumer/<consumer>:<created>`). `None`
/// if the request does not name a consumer that way.
pub(crate) fn list_shards_request(
    subscribe: &http::request::Parts,
    body: &[u8],
) -> Option<http::Request<Body>> {
    let request: Value = serde_json::from_slice(body).ok()?;
    let consumer = request.get("ConsumerARN")?.as_str()?;
    let (stream_arn, _) = consumer.split_once("/consumer/")?;
    let (_, stream) = stream_arn.split_once(":stream/")?;
    let list = serde_json::to_vec(&serde_json::json!({ "StreamName": stream })).ok()?;
    let mut builder = http::Request::builder()
        .method(http::Method::POST)
        .uri(subscribe.uri.clone());
    for (name, value) in &subscribe.headers {
        if name != http::header::CONTENT_LENGTH && name != "x-amz-target" {
            builder = builder.header(name, value);
        }
    }
    builder
        .header("x-amz-target", "Kinesis_20131202.ListShards")
        .header(http::header::CONTENT_LENGTH, list.len())
        .body(Body::from(list))
        .ok()
}

fn header<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message
        .headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| h.value().as_string().ok())
        .map(|s| s.as_str())
}

/// Where a [`ShardEndRewriter`] is in its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Splitting messages and rewriting them.
    Framing,
    /// The final event went out: nothing more.
    Ended,
    /// The bytes are not an event stream after all: everything passes unchanged.
    Passing,
}

/// What one [`ShardEndRewriter::push`] produced.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Pushed {
    /// Bytes to send now: complete messages before the final event, rewritten or not.
    pub(crate) bytes: Bytes,
    /// Events whose `ChildShards` were removed.
    pub(crate) children_withheld: u64,
    /// The final event (continuation null), to send after `bytes` (see [`with_listed_parents`]
    /// and [`encode`]); the stream ends with it.
    pub(crate) final_event: Option<Message>,
}

/// A message in event-stream framing; `None` if it cannot be framed (a header or payload too
/// long).
pub(crate) fn encode(message: &Message) -> Option<Bytes> {
    let mut encoded = BytesMut::new();
    match write_message_to(message, &mut encoded) {
        Ok(()) => Some(encoded.freeze()),
        Err(error) => {
            tracing::warn!(%error, "rewritten event not encodable");
            None
        }
    }
}

/// Splits a byte stream into event-stream messages and rewrites them (see [`rewrite`]). Pure:
/// no I/O, bytes in, bytes out.
#[derive(Debug)]
pub(crate) struct ShardEndRewriter {
    pending: BytesMut,
    phase: Phase,
}

impl ShardEndRewriter {
    pub(crate) fn new() -> Self {
        Self {
            pending: BytesMut::new(),
            phase: Phase::Framing,
        }
    }

    /// Whether the final event went out.
    #[cfg(test)]
    pub(crate) fn ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// Takes the next bytes of the stream; returns the complete messages among what has come so
    /// far, the final event apart. Bytes after the final event are dropped.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Pushed {
        match self.phase {
            Phase::Ended => return Pushed::default(),
            Phase::Passing => {
                return Pushed {
                    bytes: Bytes::copy_from_slice(chunk),
                    ..Pushed::default()
                };
            }
            Phase::Framing => {}
        }
        self.pending.extend_from_slice(chunk);
        let mut out = BytesMut::new();
        let mut pushed = Pushed::default();
        while let Some(len) = self.next_message_len() {
            if len < MIN_MESSAGE_LEN {
                tracing::warn!(len, "not an event stream; passing the rest unchanged");
                out.extend_from_slice(&self.pending.split());
                self.phase = Phase::Passing;
                break;
            }
            let frame = self.pending.split_to(len).freeze();
            let message = match read_message_from(&frame[..]) {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "unreadable event-stream message passed unchanged");
                    out.extend_from_slice(&frame);
                    continue;
                }
            };
            match rewrite(&message) {
                Rewrite::Unchanged => out.extend_from_slice(&frame),
                Rewrite::ChildrenWithheld(rewritten) => match encode(&rewritten) {
                    Some(encoded) => {
                        out.extend_from_slice(&encoded);
                        pushed.children_withheld += 1;
                    }
                    None => out.extend_from_slice(&frame),
                },
                Rewrite::Final(rewritten) => {
                    tracing::debug!(
                        "final SubscribeToShardEvent rewritten with a null continuation"
                    );
                    pushed.final_event = Some(rewritten);
                    self.phase = Phase::Ended;
                    self.pending.clear();
                    break;
                }
            }
        }
        pushed.bytes = out.freeze();
        pushed
    }

    /// The stream ended: whatever incomplete message is left, unchanged.
    pub(crate) fn finish(&mut self) -> Bytes {
        self.pending.split().freeze()
    }

    /// The length of the next message once all of it has arrived.
    fn next_message_len(&self) -> Option<usize> {
        let prelude: [u8; 4] = self.pending.get(..4)?.try_into().ok()?;
        let len = usize::try_from(u32::from_be_bytes(prelude)).ok()?;
        (len < MIN_MESSAGE_LEN || self.pending.len() >= len).then_some(len)
    }
}

/// Wraps an event-stream response body in a [`ShardEndRewriter`], counting into `counts`;
/// `listing`, when given, is awaited at the final event for the children's parents.
pub(crate) fn wrap(body: Body, counts: Arc<ShardEndCounts>, listing: Option<Listing>) -> Body {
    Body::new(ShardEndBody {
        inner: Some(body),
        rewriter: ShardEndRewriter::new(),
        counts,
        listing,
        finishing: None,
    })
}

struct ShardEndBody {
    /// `None` once the stand-in's body ended, failed, or was dropped at the final event.
    inner: Option<Body>,
    rewriter: ShardEndRewriter,
    counts: Arc<ShardEndCounts>,
    /// Not started until the final event arrives (a future does nothing until polled).
    listing: Option<Listing>,
    /// The final event, waiting for the listing.
    finishing: Option<(Message, Option<Listing>)>,
}

impl ShardEndBody {
    /// The final event, its parents completed from `listed`, framed; counted.
    fn finish(&self, message: Message, listed: Option<Result<Value, BoxError>>) -> Option<Bytes> {
        let message = match listed {
            Some(Ok(listing)) => {
                let (completed, changed) = with_listed_parents(&message, &listing);
                if changed {
                    tracing::debug!("final event's ParentShards completed from ListShards");
                    self.counts
                        .parents_completed
                        .fetch_add(1, Ordering::Relaxed);
                }
                completed
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "ListShards failed; the final event keeps the stand-in's ParentShards");
                message
            }
            None => message,
        };
        let encoded = encode(&message)?;
        self.counts.final_events.fetch_add(1, Ordering::Relaxed);
        Some(encoded)
    }
}

impl HttpBody for ShardEndBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if let Some((_, listing)) = &mut this.finishing {
                let listed = match listing {
                    Some(listing) => Some(ready!(listing.as_mut().poll(cx))),
                    None => None,
                };
                let Some((message, _)) = this.finishing.take() else {
                    return Poll::Ready(None);
                };
                return Poll::Ready(this.finish(message, listed).map(|b| Ok(Frame::data(b))));
            }
            let Some(inner) = &mut this.inner else {
                return Poll::Ready(None);
            };
            let frame = match ready!(Pin::new(inner).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(error)) => {
                    this.inner = None;
                    return Poll::Ready(Some(Err(Box::new(error))));
                }
                None => {
                    this.inner = None;
                    let rest = this.rewriter.finish();
                    if rest.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(rest))));
                }
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                // Trailers pass unchanged.
                Err(frame) => return Poll::Ready(Some(Ok(frame))),
            };
            let pushed = this.rewriter.push(&data);
            this.counts
                .children_withheld
                .fetch_add(pushed.children_withheld, Ordering::Relaxed);
            if let Some(message) = pushed.final_event {
                // Kinesis closes the stream after the final event; dropping the stand-in's body
                // stops it producing.
                this.inner = None;
                this.finishing = Some((message, this.listing.take()));
            }
            if !pushed.bytes.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(pushed.bytes))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_none() && self.finishing.is_none() && self.rewriter.pending.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use aws_smithy_types::event_stream::{Header, HeaderValue};
    use http::{Request, Response, StatusCode};
    use http_body_util::BodyExt;
    use serde_json::json;

    use super::*;
    use crate::fault::engine;
    use crate::fault::{Fault, FaultController, FaultKind, FaultRule};

    const SUBSCRIBE: &str = "SubscribeToShard";

    fn frame(message: &Message) -> Bytes {
        encode(message).expect("encodable")
    }

    fn string(name: &'static str, value: &'static str) -> Header {
        Header::new(name, HeaderValue::String(value.into()))
    }

    fn initial_response() -> Bytes {
        frame(
            &Message::new(Bytes::new())
                .add_header(string(":message-type", "event"))
                .add_header(string(":event-type", "initial-response")),
        )
    }

    fn event(payload: &Value) -> Bytes {
        frame(
            &Message::new(serde_json::to_vec(payload).expect("JSON"))
                .add_header(string(":message-type", "event"))
                .add_header(string(":event-type", SUBSCRIBE_TO_SHARD_EVENT))
                .add_header(string(":content-type", "application/json")),
        )
    }

    fn exception() -> Bytes {
        frame(
            &Message::new(Bytes::from_static(br#"{"message":"gone"}"#))
                .add_header(string(":message-type", "exception"))
                .add_header(string(":exception-type", "ResourceNotFoundException"))
                .add_header(string(":content-type", "application/json")),
        )
    }

    fn children() -> Value {
        json!([
            {"ShardId": "shardId-000000000002", "ParentShards": ["shardId-000000000000"],
             "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "99"}},
            {"ShardId": "shardId-000000000003", "ParentShards": ["shardId-000000000000"],
             "HashKeyRange": {"StartingHashKey": "100", "EndingHashKey": "199"}},
        ])
    }

    fn records() -> Value {
        json!([{"Data": "cmVjb3Jk", "PartitionKey": "k", "SequenceNumber": "49590338271490256608559692538361571095921575989136588898",
                "ApproximateArrivalTimestamp": 1_700_000_000.123}])
    }

    fn with_records_and_children() -> Value {
        json!({"Records": records(), "ContinuationSequenceNumber": "49590338271490256608559692538361571095921575989136588899",
               "MillisBehindLatest": 0, "ChildShards": children()})
    }

    fn last_with_children() -> Value {
        json!({"Records": [], "ContinuationSequenceNumber": "49590338271490256608559692538361571095921575989136588899",
               "MillisBehindLatest": 0, "ChildShards": children()})
    }

    /// The adjacent parent's final event after `shardId-000000000003` and `-000000000001`
    /// merged, as ferrokinesis 0.7 sends it: one parent named.
    fn adjacent_parent_last() -> Value {
        json!({"Records": [], "ContinuationSequenceNumber": "1", "MillisBehindLatest": 0,
               "ChildShards": [{"ShardId": "shardId-000000000004", "ParentShards": ["shardId-000000000001"],
                                "HashKeyRange": {"StartingHashKey": "100", "EndingHashKey": "399"}}]})
    }

    fn listing() -> Value {
        json!({"Shards": [
            {"ShardId": "shardId-000000000001"},
            {"ShardId": "shardId-000000000004", "ParentShardId": "shardId-000000000003",
             "AdjacentParentShardId": "shardId-000000000001"},
            {"ShardId": "shardId-000000000002", "ParentShardId": "shardId-000000000000"},
        ]})
    }

    fn open_shard_event() -> Value {
        json!({"Records": records(), "ContinuationSequenceNumber": "49590338271490256608559692538361571095921575989136588899",
               "MillisBehindLatest": 0, "ChildShards": []})
    }

    /// Reads every message in `bytes` (checking both CRCs).
    fn messages(mut bytes: &[u8]) -> Vec<Message> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
            out.push(read_message_from(&bytes[..len]).expect("valid message"));
            bytes = &bytes[len..];
        }
        out
    }

    fn payload(message: &Message) -> Value {
        serde_json::from_slice(message.payload()).expect("JSON payload")
    }

    #[test]
    fn an_event_with_records_loses_its_children() {
        let mut rewriter = ShardEndRewriter::new();
        let pushed = rewriter.push(&event(&with_records_and_children()));
        assert_eq!((pushed.children_withheld, pushed.final_event), (1, None));
        let out = messages(&pushed.bytes);
        assert_eq!(out.len(), 1);
        let mut expected = with_records_and_children();
        expected.as_object_mut().unwrap().remove("ChildShards");
        assert_eq!(payload(&out[0]), expected);
        assert_eq!(
            header(&out[0], ":event-type"),
            Some(SUBSCRIBE_TO_SHARD_EVENT)
        );
        assert_eq!(header(&out[0], ":content-type"), Some("application/json"));
        assert!(!rewriter.ended());
    }

    #[test]
    fn the_last_event_gets_a_null_continuation_and_ends_the_stream() {
        let mut rewriter = ShardEndRewriter::new();
        // The final event and something after it in the same chunk: only the event goes out.
        let mut chunk = event(&last_with_children()).to_vec();
        chunk.extend_from_slice(&event(&open_shard_event()));
        let pushed = rewriter.push(&chunk);
        assert!(pushed.bytes.is_empty());
        assert_eq!(pushed.children_withheld, 0);
        let last = pushed.final_event.expect("the final event");
        let mut expected = last_with_children();
        expected["ContinuationSequenceNumber"] = Value::Null;
        assert_eq!(payload(&last), expected);
        assert_eq!(payload(&last)["ChildShards"], children());
        assert_eq!(header(&last, ":content-type"), Some("application/json"));
        // Framed again with valid CRCs.
        assert_eq!(messages(&frame(&last)), vec![last]);
        assert!(rewriter.ended());
        assert_eq!(rewriter.push(&initial_response()), Pushed::default());
        assert!(rewriter.finish().is_empty());
    }

    #[test]
    fn other_messages_pass_byte_for_byte_however_they_are_chunked() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&initial_response());
        stream.extend_from_slice(&event(&open_shard_event()));
        stream.extend_from_slice(&event(
            &json!({"Records": [], "ContinuationSequenceNumber": "1", "MillisBehindLatest": 0}),
        ));
        stream.extend_from_slice(&exception());
        for chunk_len in [1, 7, 100, stream.len()] {
            let mut rewriter = ShardEndRewriter::new();
            let mut out = Vec::new();
            for chunk in stream.chunks(chunk_len) {
                let pushed = rewriter.push(chunk);
                assert_eq!((pushed.children_withheld, pushed.final_event), (0, None));
                out.extend_from_slice(&pushed.bytes);
            }
            assert!(rewriter.finish().is_empty());
            assert_eq!(out, stream, "chunks of {chunk_len}");
        }
    }

    #[test]
    fn a_whole_closed_shard_subscription_split_anywhere() {
        let head = [
            initial_response(),
            event(&open_shard_event()),
            event(&with_records_and_children()),
        ];
        let last = event(&last_with_children());
        let mut stream: Vec<u8> = head.iter().flat_map(|b| b.to_vec()).collect();
        stream.extend_from_slice(&last);
        for chunk_len in [1, 13, stream.len()] {
            let mut rewriter = ShardEndRewriter::new();
            let mut out = Vec::new();
            let mut withheld = 0;
            let mut last = None;
            for chunk in stream.chunks(chunk_len) {
                let pushed = rewriter.push(chunk);
                withheld += pushed.children_withheld;
                out.extend_from_slice(&pushed.bytes);
                if let Some(message) = pushed.final_event {
                    assert!(last.replace(message).is_none(), "one final event");
                }
            }
            assert!(rewriter.ended());
            assert_eq!(withheld, 1);
            // The first two messages untouched.
            let untouched = head[0].len() + head[1].len();
            assert_eq!(out[..untouched], stream[..untouched]);
            let out = messages(&out);
            assert_eq!(out.len(), 3);
            assert!(payload(&out[2]).get("ChildShards").is_none());
            let last = last.expect("the final event");
            assert!(payload(&last)["ContinuationSequenceNumber"].is_null());
        }
    }

    #[test]
    fn bytes_that_are_not_an_event_stream_pass_unchanged() {
        let body = br#"{"__type":"ResourceInUseException","message":"busy"}"#;
        let mut rewriter = ShardEndRewriter::new();
        let pushed = rewriter.push(body);
        // `{"__` read as a length is huge: the rewriter waits for more, and hands it back at
        // the end.
        assert!(pushed.bytes.is_empty());
        assert_eq!(&rewriter.finish()[..], &body[..]);

        let mut rewriter = ShardEndRewriter::new();
        let short = [0u8, 0, 0, 3, 9, 9];
        assert_eq!(&rewriter.push(&short).bytes[..], &short[..]);
        assert_eq!(&rewriter.push(b"more").bytes[..], b"more");
    }

    #[test]
    fn cbor_events_are_left_alone() {
        let message = Message::new(Bytes::from_static(b"\xa0"))
            .add_header(string(":message-type", "event"))
            .add_header(string(":event-type", SUBSCRIBE_TO_SHARD_EVENT))
            .add_header(string(":content-type", "application/x-amz-cbor-1.1"));
        assert_eq!(rewrite(&message), Rewrite::Unchanged);
    }

    #[test]
    fn the_listing_completes_a_merge_childs_parents() {
        let message = match rewrite(&Message::new_from_parts(
            messages(&event(&adjacent_parent_last()))
                .remove(0)
                .headers()
                .to_vec(),
            serde_json::to_vec(&adjacent_parent_last()).unwrap(),
        )) {
            Rewrite::Final(message) => message,
            other => panic!("not a final event: {other:?}"),
        };
        let (completed, changed) = with_listed_parents(&message, &listing());
        assert!(changed);
        let event = payload(&completed);
        assert_eq!(
            event["ChildShards"][0]["ParentShards"],
            json!(["shardId-000000000003", "shardId-000000000001"])
        );
        assert!(event["ContinuationSequenceNumber"].is_null());
        assert_eq!(
            event["ChildShards"][0]["HashKeyRange"]["EndingHashKey"],
            "399"
        );

        // Parents already right (in any order), or a child the listing lacks: unchanged.
        let (same, changed) = with_listed_parents(&completed, &listing());
        assert!(!changed);
        assert_eq!(same, completed);
        let (_, changed) = with_listed_parents(&message, &json!({"Shards": []}));
        assert!(!changed);
        let (_, changed) = with_listed_parents(&message, &json!({"__type": "LimitExceeded"}));
        assert!(!changed);
    }

    #[tokio::test]
    async fn the_listing_call_names_the_consumers_stream() {
        let (parts, _) = subscribe_request().into_parts();
        let body = serde_json::to_vec(&json!({
            "ConsumerARN": "arn:aws:kinesis:us-east-1:000000000000:stream/orders/consumer/app:1700000000",
            "ShardId": "shardId-000000000001",
            "StartingPosition": {"Type": "TRIM_HORIZON"},
        }))
        .unwrap();
        let list = list_shards_request(&parts, &body).expect("a ListShards call");
        assert_eq!(
            list.headers()["x-amz-target"],
            "Kinesis_20131202.ListShards"
        );
        assert_eq!(list.headers()["authorization"], "AWS4-HMAC-SHA256 test");
        assert_eq!(list.method(), http::Method::POST);
        let length = list.headers()[http::header::CONTENT_LENGTH].clone();
        let body = list.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(length, body.len().to_string().as_str());
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!({"StreamName": "orders"})
        );
        assert!(list_shards_request(&parts, b"{}").is_none());
        assert!(list_shards_request(&parts, b"not json").is_none());
    }

    fn subscribe_request() -> Request<Body> {
        let body = serde_json::to_vec(&json!({
            "ConsumerARN": "arn:aws:kinesis:us-east-1:000000000000:stream/orders/consumer/app:1700000000",
            "ShardId": "shardId-000000000001",
        }))
        .unwrap();
        Request::builder()
            .method(http::Method::POST)
            .uri("/")
            .header("x-amz-target", "Kinesis_20131202.SubscribeToShard")
            .header("authorization", "AWS4-HMAC-SHA256 test")
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .expect("valid request")
    }

    /// Answers `ListShards` with [`listing`] (recording the request's JSON in `asked`), and
    /// anything else with `chunks` as an event stream.
    async fn stand_in(
        request: Request<Body>,
        chunks: Vec<Bytes>,
        asked: Arc<std::sync::Mutex<Vec<Value>>>,
    ) -> Result<Response<Body>, BoxError> {
        if request.headers()["x-amz-target"] != "Kinesis_20131202.ListShards" {
            return Ok(event_stream(chunks));
        }
        let body = request.into_body().collect().await?.to_bytes();
        asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(serde_json::from_slice(&body)?);
        Ok(Response::new(Body::from(serde_json::to_vec(&listing())?)))
    }

    /// A stand-in's body: these chunks, one frame each.
    struct Chunks(std::collections::VecDeque<Bytes>);

    impl HttpBody for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
        }
    }

    fn event_stream(chunks: Vec<Bytes>) -> Response<Body> {
        let mut response = Response::new(Body::new(Chunks(chunks.into())));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/vnd.amazon.eventstream"),
        );
        response
    }

    #[tokio::test]
    async fn through_the_engine_the_body_ends_after_the_final_event_and_is_counted() {
        let controller = FaultController::new(1);
        controller.add(FaultRule::on(SUBSCRIBE, Fault::aws_shard_end()));
        let chunks = vec![
            initial_response(),
            event(&with_records_and_children()),
            event(&adjacent_parent_last()),
            event(&open_shard_event()),
        ];
        let asked = Arc::default();
        let stand_in_asked = Arc::clone(&asked);
        let response = engine::apply(&controller, subscribe_request(), move |request| {
            stand_in(request, chunks, stand_in_asked)
        })
        .await
        .expect("the response goes out");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let out = messages(&body);
        assert_eq!(out.len(), 3, "nothing after the final event");
        assert!(payload(&out[1]).get("ChildShards").is_none());
        let last = payload(&out[2]);
        assert!(last["ContinuationSequenceNumber"].is_null());
        assert_eq!(
            last["ChildShards"][0]["ParentShards"],
            json!(["shardId-000000000003", "shardId-000000000001"])
        );
        assert_eq!(
            *asked.lock().unwrap(),
            vec![json!({"StreamName": "orders"})]
        );
        assert_eq!(controller.injected(FaultKind::AwsShardEnd), 1);
        assert_eq!(controller.aws_shard_ends(), 1);
        // The listing call bypasses the faults: only the subscription is counted.
        assert_eq!(controller.total_calls(), 1);
        let stats = controller.stats();
        assert_eq!(
            (
                stats.aws_shard_ends,
                stats.children_withheld,
                stats.parents_completed
            ),
            (1, 1, 1)
        );
    }

    #[tokio::test]
    async fn through_the_engine_an_error_answer_passes_unchanged() {
        let controller = FaultController::new(1);
        controller.add(FaultRule::on(SUBSCRIBE, Fault::aws_shard_end()));
        let error = br#"{"__type":"ResourceInUseException","message":"busy"}"#;
        let response = engine::apply(&controller, subscribe_request(), move |_| async move {
            let mut response = Response::new(Body::from(&error[..]));
            *response.status_mut() = StatusCode::BAD_REQUEST;
            Ok(response)
        })
        .await
        .expect("the response goes out");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], &error[..]);
        assert_eq!(controller.aws_shard_ends(), 0);
    }
}
