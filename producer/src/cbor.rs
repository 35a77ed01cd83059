//! `PutRecords` in CBOR (`application/x-amz-cbor-1.1`), the encoding Kinesis takes besides JSON
//! (the AWS SDK for Java sends it by default): data travels as byte strings, not base64, so a
//! body is about a quarter smaller, SigV4 hashes a quarter fewer bytes and nothing is
//! base64-encoded. Kinesis answers a CBOR request in CBOR; the SDK reads JSON, so the answer is
//! transcoded to JSON ([`to_json`]) before the SDK deserializes it.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use aws_runtime::auth::PayloadSigningOverride;
use aws_smithy_runtime_api::{
    box_error::BoxError,
    client::{
        interceptors::{
            Intercept,
            context::{
                BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextMut,
            },
        },
        runtime_components::RuntimeComponents,
    },
};
use aws_smithy_types::{body::SdkBody, config_bag::ConfigBag};
use bytes::Bytes;
use http_body::{Body, Frame};
use kinesis_calls::StreamRef;

use crate::{
    body::{decimal_len, push_decimal},
    pipeline::Entry,
};

/// The content type of CBOR requests and answers.
pub(crate) const CONTENT_TYPE: &str = "application/x-amz-cbor-1.1";
/// The content type the SDK's deserializer reads.
const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.1";

const UNSIGNED: u8 = 0;
const NEGATIVE: u8 = 1;
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;
const TAG: u8 = 6;
const SIMPLE: u8 = 7;

/// The body of a `PutRecords` call putting `entries` to `stream`, in CBOR:
/// `{"Records": [{"Data": h'..', "PartitionKey": "..", "ExplicitHashKey": ".."}, ..],
/// "StreamName": ".."}` (`"StreamARN"` for a stream given by ARN), definite lengths throughout.
/// In one buffer: see [`records_body_parts`] for the form a call sends.
#[cfg(test)]
pub(crate) fn records_body(entries: &[Entry], stream: &StreamRef) -> Bytes {
    let parts = records_body_parts(entries, stream);
    let mut out = Vec::with_capacity(parts.len());
    for part in parts.parts() {
        out.extend_from_slice(part);
    }
    Bytes::from(out)
}

/// Data of at least this many bytes is not copied into a body: the body refers to it.
pub(crate) const REFERENCED_DATA_BYTES: usize = 4096;

/// A `PutRecords` body as a sequence of parts, whose concatenation is the CBOR body: the
/// framing (heads, member names, partition keys, small data) written in one buffer, and each
/// entry's data of [`REFERENCED_DATA_BYTES`] or more (aggregates, large records) as the entry's
/// own bytes, not copied. A call's body is up to 5 MiB; written whole, it is a fresh allocation
/// whose every page faults in as it is filled, and a copy of data the call's entries hold anyway.
#[derive(Clone, Debug)]
pub(crate) struct BodyParts {
    parts: Vec<Bytes>,
    len: usize,
}

impl BodyParts {
    /// The parts, in order.
    #[cfg(test)]
    pub(crate) fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// The body's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The body's SHA-256, lowercase hex: the payload hash SigV4 signs.
    pub(crate) fn sha256_hex(&self) -> String {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        for part in &self.parts {
            hasher.update(part);
        }
        let digest = hasher.finalize();
        let mut hex = String::with_capacity(2 * digest.len());
        for byte in digest {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
            hex.push(char::from(DIGITS[usize::from(byte & 0xf)]));
        }
        hex
    }

    /// The body, for the request: its parts as frames, again from the start for every attempt.
    pub(crate) fn sdk_body(&self) -> SdkBody {
        let parts = self.parts.clone();
        SdkBody::retryable(move || SdkBody::from_body_1_x(PartsBody::new(parts.clone())))
    }
}

/// [`records_body`]'s bytes as [`BodyParts`].
pub(crate) fn records_body_parts(entries: &[Entry], stream: &StreamRef) -> BodyParts {
    let (member, value) = stream_member(stream);
    let len = body_len(entries, stream);
    let referenced = entries
        .iter()
        .filter(|e| e.data.len() >= REFERENCED_DATA_BYTES)
        .map(|e| e.data.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(len - referenced);
    // Where each referenced entry's data goes: after this many framing bytes.
    let mut splits: Vec<(usize, &Bytes)> = Vec::new();
    head(&mut out, MAP, 2);
    text(&mut out, "Records");
    head(&mut out, ARRAY, entries.len() as u64);
    for entry in entries {
        head(
            &mut out,
            MAP,
            2 + u64::from(entry.explicit_hash_key.is_some()),
        );
        text(&mut out, "Data");
        head(&mut out, BYTES, entry.data.len() as u64);
        if entry.data.len() >= REFERENCED_DATA_BYTES {
            splits.push((out.len(), &entry.data));
        } else {
            out.extend_from_slice(&entry.data);
        }
        text(&mut out, "PartitionKey");
        text(&mut out, &entry.partition_key);
        if let Some(key) = entry.explicit_hash_key {
            // Decimal digits, written in place (no string per entry).
            let key = u128::from(key);
            text(&mut out, "ExplicitHashKey");
            head(&mut out, TEXT, decimal_len(key) as u64);
            push_decimal(&mut out, key);
        }
    }
    text(&mut out, member);
    text(&mut out, value);
    debug_assert_eq!(out.len() + referenced, len, "the body's length as computed");
    // Content-Length is the length of the bytes written, whatever the computation said.
    let len = out.len() + referenced;
    let mut framing = Bytes::from(out);
    let mut parts = Vec::with_capacity(2 * splits.len() + 1);
    let mut taken = 0;
    for (at, data) in splits {
        parts.push(framing.split_to(at - taken));
        taken = at;
        parts.push(data.clone());
    }
    parts.push(framing);
    parts.retain(|part| !part.is_empty());
    BodyParts { parts, len }
}

/// A body sent part by part: one frame per part.
struct PartsBody {
    parts: std::vec::IntoIter<Bytes>,
    remaining: u64,
}

impl PartsBody {
    fn new(parts: Vec<Bytes>) -> Self {
        let remaining = parts.iter().map(|p| p.len() as u64).sum();
        PartsBody {
            parts: parts.into_iter(),
            remaining,
        }
    }
}

impl Body for PartsBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let next = self.parts.next();
        if let Some(part) = &next {
            self.remaining -= part.len() as u64;
        }
        Poll::Ready(next.map(|part| Ok(Frame::data(part))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// Sends a CBOR body given as parts: the body, its length and content type replace what the
/// SDK serialized, and its SHA-256, computed over the parts, is the payload hash SigV4 signs (a
/// body of frames is not in memory as one slice, which the signer would otherwise hash).
#[derive(Debug)]
pub(crate) struct CborRequest {
    pub(crate) body: BodyParts,
}

impl Intercept for CborRequest {
    fn name(&self) -> &'static str {
        "kinesis_producer::CborRequest"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        let headers = request.headers_mut();
        headers.insert("Content-Length", self.body.len().to_string());
        headers.insert("Content-Type", CONTENT_TYPE);
        *request.body_mut() = self.body.sdk_body();
        cfg.interceptor_state()
            .store_put(PayloadSigningOverride::Precomputed(self.body.sha256_hex()));
        Ok(())
    }
}

fn stream_member(stream: &StreamRef) -> (&'static str, &str) {
    match stream {
        StreamRef::Name(name) => ("StreamName", name.as_str()),
        StreamRef::Arn(arn) => ("StreamARN", arn.as_str()),
    }
}

/// The exact length of the body [`records_body_parts`] writes.
fn body_len(entries: &[Entry], stream: &StreamRef) -> usize {
    let mut len = head_len(2) + text_len("Records") + head_len(entries.len() as u64);
    for entry in entries {
        len += head_len(2)
            + text_len("Data")
            + head_len(entry.data.len() as u64)
            + entry.data.len()
            + text_len("PartitionKey")
            + text_len(&entry.partition_key);
        if let Some(key) = entry.explicit_hash_key {
            let digits = decimal_len(u128::from(key));
            len += text_len("ExplicitHashKey") + head_len(digits as u64) + digits;
        }
    }
    let (member, value) = stream_member(stream);
    len + text_len(member) + text_len(value)
}

/// Bytes of a data item's head whose argument is `n`.
fn head_len(n: u64) -> usize {
    match n {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

fn text_len(s: &str) -> usize {
    head_len(s.len() as u64) + s.len()
}

/// Appends a data item's head: its major type and argument, in the shortest form.
fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let major = major << 5;
    match n {
        0..=23 => out.push(major | n as u8),
        24..=0xff => out.extend_from_slice(&[major | 24, n as u8]),
        0x100..=0xffff => {
            out.push(major | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(major | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(major | 27);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

fn text(out: &mut Vec<u8>, s: &str) {
    head(out, TEXT, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A CBOR answer that could not be read as the JSON the SDK expects.
#[derive(Debug, thiserror::Error)]
#[error("a CBOR answer could not be read at byte {at}: {what}")]
pub(crate) struct CborError {
    at: usize,
    what: &'static str,
}

/// How deep arrays, maps and tags may nest in an answer.
const MAX_DEPTH: usize = 64;

/// The JSON document a CBOR one stands for, as the `awsJson1_1` protocol writes it: byte strings
/// as base64 strings, `undefined` as `null`, non-finite floats as `null`. Exactly one data item,
/// nothing after it; map keys must be text. Tags are dropped, their content kept: right for the
/// `PutRecords` answers this reads, which hold none, but not for AWS's CBOR timestamps (tag 1 and
/// epoch milliseconds, where JSON carries seconds), which this does not convert.
pub(crate) fn to_json(cbor: &[u8]) -> Result<Vec<u8>, CborError> {
    let mut reader = Reader { cbor, at: 0 };
    let mut out = Vec::with_capacity(cbor.len() + cbor.len() / 2);
    reader.item(&mut out, 0)?;
    if reader.at != cbor.len() {
        return Err(reader.error("data after the answer"));
    }
    Ok(out)
}

struct Reader<'a> {
    cbor: &'a [u8],
    at: usize,
}

/// A head's argument: a number, or indefinite (additional information 31).
enum Argument {
    Definite(u64),
    Indefinite,
}

impl Reader<'_> {
    fn error(&self, what: &'static str) -> CborError {
        CborError { at: self.at, what }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], CborError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.cbor.len())
            .ok_or_else(|| self.error("truncated"))?;
        let bytes = &self.cbor[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn byte(&mut self) -> Result<u8, CborError> {
        Ok(self.take(1)?[0])
    }

    /// A head: its major type, additional information and argument.
    fn head(&mut self) -> Result<(u8, u8, Argument), CborError> {
        let first = self.byte()?;
        let (major, info) = (first >> 5, first & 0x1f);
        let argument = match info {
            0..=23 => Argument::Definite(u64::from(info)),
            24 => Argument::Definite(u64::from(self.byte()?)),
            25 => Argument::Definite(u64::from(u16::from_be_bytes(self.array()?))),
            26 => Argument::Definite(u64::from(u32::from_be_bytes(self.array()?))),
            27 => Argument::Definite(u64::from_be_bytes(self.array()?)),
            31 => Argument::Indefinite,
            _ => return Err(self.error("reserved additional information")),
        };
        Ok((major, info, argument))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CborError> {
        let mut bytes = [0; N];
        bytes.copy_from_slice(self.take(N)?);
        Ok(bytes)
    }

    /// Whether the next byte is a "break" (ending an indefinite item); consumed if so.
    fn at_break(&mut self) -> Result<bool, CborError> {
        match self.cbor.get(self.at) {
            Some(0xff) => {
                self.at += 1;
                Ok(true)
            }
            Some(_) => Ok(false),
            None => Err(self.error("truncated")),
        }
    }

    /// Whether an array or map of `argument` items has more after `count`: its count not
    /// reached, or no "break" next (consumed if there is one).
    fn more(&mut self, argument: &Argument, count: u64) -> Result<bool, CborError> {
        match argument {
            Argument::Definite(n) => Ok(count < *n),
            Argument::Indefinite => Ok(!self.at_break()?),
        }
    }

    fn length(&self, n: u64) -> Result<usize, CborError> {
        usize::try_from(n).map_err(|_| self.error("length too large"))
    }

    /// A byte or text string's content (the chunks of an indefinite one joined).
    fn string(&mut self, major: u8, argument: Argument) -> Result<Vec<u8>, CborError> {
        match argument {
            Argument::Definite(n) => {
                let n = self.length(n)?;
                Ok(self.take(n)?.to_vec())
            }
            Argument::Indefinite => {
                let mut joined = Vec::new();
                while !self.at_break()? {
                    match self.head()? {
                        (chunk_major, _, Argument::Definite(n)) if chunk_major == major => {
                            let n = self.length(n)?;
                            joined.extend_from_slice(self.take(n)?);
                        }
                        _ => return Err(self.error("a string chunk of another kind")),
                    }
                }
                Ok(joined)
            }
        }
    }

    fn item(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<(), CborError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deep"));
        }
        let (major, info, argument) = self.head()?;
        match (major, argument) {
            (UNSIGNED, Argument::Definite(n)) => out.extend_from_slice(n.to_string().as_bytes()),
            (NEGATIVE, Argument::Definite(n)) => {
                out.extend_from_slice((-1 - i128::from(n)).to_string().as_bytes());
            }
            (BYTES, argument) => {
                let bytes = self.string(BYTES, argument)?;
                out.push(b'"');
                base64_simd::STANDARD.encode_append(&bytes, out);
                out.push(b'"');
            }
            (TEXT, argument) => {
                let bytes = self.string(TEXT, argument)?;
                let text = std::str::from_utf8(&bytes).map_err(|_| self.error("text not UTF-8"))?;
                crate::body::push_string(out, text);
            }
            (ARRAY, argument) => {
                out.push(b'[');
                let mut count = 0u64;
                while self.more(&argument, count)? {
                    if count > 0 {
                        out.push(b',');
                    }
                    self.item(out, depth + 1)?;
                    count += 1;
                }
                out.push(b']');
            }
            (MAP, argument) => {
                out.push(b'{');
                let mut count = 0u64;
                while self.more(&argument, count)? {
                    if count > 0 {
                        out.push(b',');
                    }
                    match self.head()? {
                        (TEXT, _, key) => {
                            let bytes = self.string(TEXT, key)?;
                            let key = std::str::from_utf8(&bytes)
                                .map_err(|_| self.error("key not UTF-8"))?;
                            crate::body::push_string(out, key);
                        }
                        _ => return Err(self.error("a map key that is not text")),
                    }
                    out.push(b':');
                    self.item(out, depth + 1)?;
                    count += 1;
                }
                out.push(b'}');
            }
            // A tag: its content stands for it (see `to_json` on timestamps).
            (TAG, Argument::Definite(_)) => self.item(out, depth + 1)?,
            (SIMPLE, argument) => match (info, argument) {
                (20, _) => out.extend_from_slice(b"false"),
                (21, _) => out.extend_from_slice(b"true"),
                (22 | 23, _) => out.extend_from_slice(b"null"),
                // The head's argument is the float's bits.
                (25..=27, Argument::Definite(bits)) => push_float(out, float_value(info, bits)),
                _ => return Err(self.error("a simple value JSON has no equivalent for")),
            },
            _ => return Err(self.error("an indefinite length where none may be")),
        }
        Ok(())
    }
}

/// A float's value from its bits (half, single or double precision).
fn float_value(info: u8, bits: u64) -> f64 {
    match info {
        25 => half_to_f64(bits as u16),
        26 => f64::from(f32::from_bits(bits as u32)),
        _ => f64::from_bits(bits),
    }
}

fn half_to_f64(half: u16) -> f64 {
    let sign = if half & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((half >> 10) & 0x1f);
    let mantissa = f64::from(half & 0x3ff);
    sign * match exponent {
        0 => mantissa * 2f64.powi(-24),
        31 if mantissa == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (1.0 + mantissa / 1024.0) * 2f64.powi(exponent - 15),
    }
}

/// A JSON number (or `null` for a value JSON cannot hold).
fn push_float(out: &mut Vec<u8>, value: f64) {
    if value.is_finite() {
        out.extend_from_slice(format!("{value:?}").as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Reads a CBOR answer's body as the JSON one the SDK deserializes. Added to `PutRecords` calls
/// sent in CBOR; an answer in another content type is left alone.
#[derive(Debug)]
pub(crate) struct CborAnswers;

impl Intercept for CborAnswers {
    fn name(&self) -> &'static str {
        "KinesisProducerCborAnswers"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response_mut();
        let cbor = response.headers().get("content-type").is_some_and(is_cbor);
        if !cbor {
            return Ok(());
        }
        // An error answer that cannot be read still has its code in `x-amzn-ErrorType`, which
        // the SDK reads when the body has none: it is given as `{}` rather than failing.
        let error = !response.status().is_success();
        response
            .headers_mut()
            .insert("content-type", JSON_CONTENT_TYPE);
        response.headers_mut().remove("content-length");
        let body = response.take_body();
        // `map`, not `map_preserve_contents`: the contents change (an in-memory body would
        // otherwise still show its CBOR bytes to the hooks after this one).
        *response.body_mut() = body.map(move |body| {
            SdkBody::from_body_1_x(Transcoded {
                inner: body,
                read: Vec::new(),
                done: false,
                error,
            })
        });
        Ok(())
    }
}

/// Whether a content type is CBOR's (media types are case-insensitive; parameters ignored).
fn is_cbor(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(CONTENT_TYPE))
}

/// A CBOR body read whole, then given as its JSON.
struct Transcoded {
    inner: SdkBody,
    read: Vec<u8>,
    done: bool,
    /// An error answer: one that cannot be read is given as `{}` (its code is in a header).
    error: bool,
}

impl Transcoded {
    /// The JSON of what was read.
    fn json(&mut self) -> Result<Bytes, BoxError> {
        let read = std::mem::take(&mut self.read);
        match to_json(&read) {
            Ok(json) => Ok(Bytes::from(json)),
            Err(_) if self.error => Ok(Bytes::from_static(b"{}")),
            Err(error) => Err(error.into()),
        }
    }
}

impl Body for Transcoded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        this.read.extend_from_slice(&data);
                    }
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => {
                    this.done = true;
                    return Poll::Ready(Some(this.json().map(Frame::data)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use ciborium::Value as Cbor;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::body::tests::entry;

    fn cbor_of(value: &Cbor) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(value, &mut out).expect("writes");
        out
    }

    fn json_of(cbor: &[u8]) -> Value {
        let json = to_json(cbor).unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_slice(&json).unwrap_or_else(|e| panic!("{e}: {json:?}"))
    }

    fn text(s: &str) -> Cbor {
        Cbor::Text(s.to_owned())
    }

    #[test]
    fn a_body_reads_back_as_its_entries_with_data_as_byte_strings() {
        let entries = [
            entry("a \"key\"\n", None, b"\x00\x01\xff"),
            entry("é日本", Some(u128::MAX), b""),
            entry("k", Some(0), &[7; 300]),
        ];
        let body = records_body(&entries, &StreamRef::Name("s".into()));
        assert_eq!(body.len(), body_len(&entries, &StreamRef::Name("s".into())));
        let read: Cbor = ciborium::from_reader(&body[..]).expect("CBOR");
        let expected = Cbor::Map(vec![
            (
                text("Records"),
                Cbor::Array(vec![
                    Cbor::Map(vec![
                        (text("Data"), Cbor::Bytes(vec![0, 1, 0xff])),
                        (text("PartitionKey"), text("a \"key\"\n")),
                    ]),
                    Cbor::Map(vec![
                        (text("Data"), Cbor::Bytes(vec![])),
                        (text("PartitionKey"), text("é日本")),
                        (text("ExplicitHashKey"), text(&u128::MAX.to_string())),
                    ]),
                    Cbor::Map(vec![
                        (text("Data"), Cbor::Bytes(vec![7; 300])),
                        (text("PartitionKey"), text("k")),
                        (text("ExplicitHashKey"), text("0")),
                    ]),
                ]),
            ),
            (text("StreamName"), text("s")),
        ]);
        assert_eq!(read, expected);
        // A stream by ARN.
        let body = records_body(&entries[..1], &StreamRef::Arn("arn:x".into()));
        let read: Cbor = ciborium::from_reader(&body[..]).expect("CBOR");
        let Cbor::Map(members) = read else {
            panic!("a map")
        };
        assert_eq!(members[1], (text("StreamARN"), text("arn:x")));
    }

    #[test]
    fn large_data_takes_longer_heads_and_the_length_is_exact() {
        // 3-byte and 5-byte heads for the data (the property test's data is under 300 bytes).
        for len in [256, 65_535, 65_536, 70_000] {
            let entries = [entry("k", None, &vec![9; len])];
            let stream = StreamRef::Name("s".into());
            let body = records_body(&entries, &stream);
            assert_eq!(body.len(), body_len(&entries, &stream), "{len}");
            let read: Cbor = ciborium::from_reader(&body[..]).expect("CBOR");
            let Cbor::Map(members) = read else {
                panic!("a map")
            };
            let Cbor::Array(records) = &members[0].1 else {
                panic!("an array")
            };
            let Cbor::Map(record) = &records[0] else {
                panic!("a map")
            };
            assert_eq!(record[0].1, Cbor::Bytes(vec![9; len]));
        }
    }

    #[test]
    fn content_types_match_without_case_or_parameters() {
        assert!(is_cbor("application/x-amz-cbor-1.1"));
        assert!(is_cbor("Application/X-Amz-CBOR-1.1; charset=utf-8"));
        assert!(!is_cbor("application/x-amz-json-1.1"));
        assert!(!is_cbor(""));
    }

    /// The body an unreadable answer gives: `{}` for an error answer (the SDK then reads the
    /// error's code from its header), an error for a success.
    #[tokio::test]
    async fn an_unreadable_error_answer_reads_as_an_empty_object() {
        async fn read(error: bool, cbor: &'static [u8]) -> Result<Bytes, BoxError> {
            let mut body = Transcoded {
                inner: SdkBody::from(cbor),
                read: Vec::new(),
                done: false,
                error,
            };
            let mut all = Vec::new();
            while let Some(frame) =
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            {
                if let Ok(data) = frame?.into_data() {
                    all.extend_from_slice(&data);
                }
            }
            assert!(body.is_end_stream());
            Ok(Bytes::from(all))
        }
        let garbage: &[u8] = b"<html>proxy error</html>";
        assert_eq!(
            read(true, garbage).await.ok(),
            Some(Bytes::from_static(b"{}"))
        );
        assert!(read(false, garbage).await.is_err());
        // A readable one reads as its JSON either way.
        let answer: &[u8] = &[0xa1, 0x66, b'_', b'_', b't', b'y', b'p', b'e', 0x61, b'X'];
        for error in [true, false] {
            assert_eq!(
                read(error, answer).await.ok(),
                Some(Bytes::from_static(br#"{"__type":"X"}"#))
            );
        }
    }

    #[test]
    fn heads_take_the_shortest_form_at_each_boundary() {
        for n in [
            0,
            23,
            24,
            255,
            256,
            65_535,
            65_536,
            u64::from(u32::MAX),
            u64::from(u32::MAX) + 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            head(&mut out, UNSIGNED, n);
            assert_eq!(out.len(), head_len(n), "{n}");
            assert_eq!(out, cbor_of(&Cbor::Integer(n.into())), "{n}");
        }
    }

    #[test]
    fn answers_read_as_the_json_they_stand_for() {
        // A PutRecords answer: one entry written, one throttled.
        let answer = Cbor::Map(vec![
            (text("FailedRecordCount"), Cbor::Integer(1.into())),
            (
                text("Records"),
                Cbor::Array(vec![
                    Cbor::Map(vec![
                        (text("SequenceNumber"), text("4962")),
                        (text("ShardId"), text("shardId-000000000001")),
                    ]),
                    Cbor::Map(vec![
                        (
                            text("ErrorCode"),
                            text("ProvisionedThroughputExceededException"),
                        ),
                        (text("ErrorMessage"), text("Rate exceeded for \"shard\"\n")),
                    ]),
                ]),
            ),
            (text("EncryptionType"), text("NONE")),
        ]);
        assert_eq!(
            json_of(&cbor_of(&answer)),
            json!({
                "FailedRecordCount": 1,
                "Records": [
                    {"SequenceNumber": "4962", "ShardId": "shardId-000000000001"},
                    {"ErrorCode": "ProvisionedThroughputExceededException",
                     "ErrorMessage": "Rate exceeded for \"shard\"\n"},
                ],
                "EncryptionType": "NONE",
            })
        );
        // Every kind of item.
        let every = Cbor::Array(vec![
            Cbor::Integer((-1).into()),
            Cbor::Integer(u64::MAX.into()),
            Cbor::Bytes(b"hi".to_vec()),
            Cbor::Bool(true),
            Cbor::Bool(false),
            Cbor::Null,
            Cbor::Float(1.5),
            Cbor::Float(0.1),
            Cbor::Float(f64::INFINITY),
            Cbor::Tag(24, Box::new(Cbor::Float(1_700_000_000.25))),
        ]);
        assert_eq!(
            json_of(&cbor_of(&every)),
            json!([
                -1,
                u64::MAX,
                "aGk=",
                true,
                false,
                null,
                1.5,
                0.1,
                null,
                1_700_000_000.25
            ])
        );
        // CBOR's least integer, below what a JSON parser reads into an i64.
        let least = to_json(&[0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(least, b"-18446744073709551616");
        // Half, single and double precision floats; undefined.
        assert_eq!(json_of(&[0xf9, 0x3e, 0x00]), json!(1.5));
        assert_eq!(json_of(&[0xf9, 0x00, 0x01]), json!(5.960464477539063e-8));
        assert_eq!(json_of(&[0xf9, 0x7c, 0x00]), json!(null));
        assert_eq!(json_of(&[0xfa, 0x3f, 0xc0, 0x00, 0x00]), json!(1.5));
        assert_eq!(json_of(&[0xf7]), json!(null));
        // Indefinite lengths: strings in chunks, arrays and maps ended by a break.
        assert_eq!(
            json_of(&[0x5f, 0x42, b'a', b'b', 0x41, b'c', 0xff]),
            json!("YWJj")
        );
        assert_eq!(
            json_of(&[
                0xbf, 0x61, b'k', 0x9f, 0x7f, 0x61, b'x', 0x61, b'y', 0xff, 0xff, 0xff
            ]),
            json!({"k": ["xy"]})
        );
        // An error answer.
        let error = Cbor::Map(vec![
            (text("__type"), text("ResourceNotFoundException")),
            (text("message"), text("Stream s not found")),
        ]);
        assert_eq!(
            json_of(&cbor_of(&error)),
            json!({"__type": "ResourceNotFoundException", "message": "Stream s not found"})
        );
    }

    #[test]
    fn malformed_answers_are_refused_with_where() {
        let refused = |cbor: &[u8]| to_json(cbor).err().map(|e| (e.at, e.what));
        assert_eq!(refused(&[]), Some((0, "truncated")));
        assert_eq!(refused(&[0x62, b'a']), Some((1, "truncated")));
        assert_eq!(
            refused(&[0x1c]),
            Some((1, "reserved additional information"))
        );
        assert_eq!(refused(&[0x01, 0x02]), Some((1, "data after the answer")));
        assert_eq!(
            refused(&[0xa1, 0x01, 0x02]),
            Some((2, "a map key that is not text"))
        );
        assert_eq!(refused(&[0x62, 0xff, 0xfe]), Some((3, "text not UTF-8")));
        assert_eq!(
            refused(&[0x5f, 0x61, b'a', 0xff]),
            Some((2, "a string chunk of another kind"))
        );
        assert_eq!(
            refused(&[0x1f]),
            Some((1, "an indefinite length where none may be"))
        );
        assert_eq!(
            refused(&[0xf0]),
            Some((1, "a simple value JSON has no equivalent for"))
        );
        assert_eq!(refused(&[0x9f, 0x01]), Some((2, "truncated")));
        let deep = [vec![0x81; MAX_DEPTH + 1], vec![0x01]].concat();
        assert_eq!(refused(&deep), Some((MAX_DEPTH + 1, "nested too deep")));
        let deep_enough = [vec![0x81; MAX_DEPTH], vec![0x01]].concat();
        assert!(to_json(&deep_enough).is_ok());
        // A length past the end, or past what memory can address.
        assert_eq!(
            refused(&[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Some((9, "truncated"))
        );
    }

    fn any_text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                any::<char>(),
                (0u8..0x20).prop_map(char::from),
                Just('"'),
                Just('\\')
            ],
            0..12,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    /// Any JSON value made of what CBOR and JSON both hold exactly.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any_text().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(any_text(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Data of any length up to 300 bytes, or around [`REFERENCED_DATA_BYTES`].
    fn any_data() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => proptest::collection::vec(any::<u8>(), 0..300),
            1 => (REFERENCED_DATA_BYTES - 2..REFERENCED_DATA_BYTES + 300, any::<u8>())
                .prop_map(|(len, byte)| (0..len).map(|i| byte.wrapping_add(i as u8)).collect()),
        ]
    }

    /// A body's bytes as its frames give them (and what its size hint said first). The body
    /// says it has ended right after its last data frame, not only once polled past it (the
    /// SDK's upload throughput check counts on it), and keeps saying nothing more after.
    fn frames(mut body: SdkBody) -> Vec<u8> {
        let hinted = Body::size_hint(&body).exact();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut out = Vec::new();
        loop {
            let ended = body.is_end_stream();
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    assert!(!ended, "a frame after the body said it had ended");
                    out.extend_from_slice(&frame.into_data().expect("data frames only"));
                    if Some(out.len() as u64) == hinted {
                        assert!(body.is_end_stream(), "ended right after the last data");
                    }
                }
                Poll::Ready(None) => break,
                Poll::Ready(Some(Err(e))) => panic!("{e}"),
                Poll::Pending => panic!("an in-memory body is always ready"),
            }
        }
        assert!(body.is_end_stream());
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(None)
        ));
        assert_eq!(hinted, Some(out.len() as u64), "the size hint is exact");
        out
    }

    #[test]
    fn a_body_sent_as_parts_refers_to_large_data_and_is_sent_again_whole() {
        let big = vec![5u8; REFERENCED_DATA_BYTES];
        let entries = [
            entry("a", None, &[1, 2]),
            entry("b", Some(7), &big),
            entry("c", None, &big[..REFERENCED_DATA_BYTES - 1]),
        ];
        let stream = StreamRef::Name("s".into());
        let parts = records_body_parts(&entries, &stream);
        // Framing up to b's data, b's data, the rest (c's data copied into it).
        assert_eq!(parts.parts().len(), 3);
        assert_eq!(parts.parts()[1].as_ptr(), entries[1].data.as_ptr());
        let body = parts.sdk_body();
        let again = body
            .try_clone()
            .expect("a body sent as parts can be sent again");
        let whole = records_body(&entries, &stream);
        assert_eq!(frames(body), whole);
        assert_eq!(frames(again), whole);
        assert_eq!(parts.len(), whole.len());
        // The payload hash over the parts is the whole body's.
        use sha2::Digest;
        let digest = sha2::Sha256::digest(&whole);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parts.sha256_hex(), hex);
    }

    proptest! {
        #[test]
        fn any_json_value_survives_cbor_and_back(value in any_json()) {
            let mut cbor = Vec::new();
            ciborium::into_writer(&value, &mut cbor).expect("writes");
            prop_assert_eq!(json_of(&cbor), value);
        }

        #[test]
        fn a_cbor_body_read_as_json_is_the_json_body(
            raw in proptest::collection::vec(
                (any_text(), proptest::option::of(any::<u128>()), any_data()),
                0..20,
            ),
            name in any_text(),
            by_arn in any::<bool>(),
        ) {
            let entries: Vec<Entry> = raw.iter().map(|(k, h, d)| entry(k, *h, d)).collect();
            let stream = if by_arn { StreamRef::Arn(name) } else { StreamRef::Name(name) };
            let cbor = records_body(&entries, &stream);
            prop_assert_eq!(cbor.len(), body_len(&entries, &stream));
            // Sent as parts: large data referred to, not copied; the frames are the body.
            let parts = records_body_parts(&entries, &stream);
            prop_assert_eq!(parts.len(), cbor.len());
            let referenced = entries.iter().filter(|e| e.data.len() >= REFERENCED_DATA_BYTES);
            prop_assert!(parts.parts().len() <= 2 * referenced.clone().count() + 1);
            for entry in referenced {
                prop_assert!(parts.parts().iter().any(|p| p.as_ptr() == entry.data.as_ptr()));
            }
            prop_assert!(parts.parts().iter().all(|p| !p.is_empty()));
            prop_assert_eq!(&frames(parts.sdk_body())[..], &cbor[..]);
            // Read back by a CBOR parser of its own: each entry's data, key and hash key.
            let read: Cbor = ciborium::from_reader(&cbor[..]).expect("CBOR");
            let Cbor::Map(members) = read else { panic!("a map") };
            let Cbor::Array(records) = &members[0].1 else { panic!("an array") };
            prop_assert_eq!(records.len(), entries.len());
            for (entry, record) in entries.iter().zip(records) {
                let Cbor::Map(fields) = record else { panic!("a map") };
                prop_assert_eq!(&fields[0], &(text("Data"), Cbor::Bytes(entry.data.to_vec())));
                prop_assert_eq!(&fields[1], &(text("PartitionKey"), text(&entry.partition_key)));
                let hash = entry.explicit_hash_key.map(|k| (text("ExplicitHashKey"), text(&k.to_string())));
                prop_assert_eq!(fields.get(2), hash.as_ref());
            }
            let json: Value = serde_json::from_slice(&crate::body::records_body(&entries, &stream))
                .expect("JSON");
            prop_assert_eq!(json_of(&cbor), json);
            prop_assert!(cbor.len() <= crate::body::records_body(&entries, &stream).len());
        }
    }
}
