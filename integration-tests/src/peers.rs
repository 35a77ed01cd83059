//! The other implementations of the KPL aggregation format (and aiokpl's producer), driven from
//! Rust for cross-compatibility tests and side-by-side benchmarks.
//!
//! Each peer runs as a one-shot child process (a driver script in `integration-tests/peers/`) that
//! reads one JSON request on stdin and writes one JSON answer on stdout, binary data as base64.
//! A request carries a whole batch (hundreds of record sets), so a test launches each peer only a
//! few times.
//!
//! ```text
//!  Peer::encode / decode / hash_keys / bench                      Peer::produce (aiokpl)
//!     │  JSON request (stdin)                                         │
//!     ▼                                                               ▼
//!  python3 peers/agg_peer.py {python|aiokpl}  node peers/agg_peer.js  python3 peers/producer_peer.py
//!     │  aws_kinesis_agg 1.2.3 / aiokpl 0.2.0  aws-kinesis-agg 4.2.8    │  aiokpl Producer ─▶ Kinesis
//!     ▼                                                               ▼
//!  JSON answer (stdout) ──▶ Encoded / Decoded / BenchReport           ProduceReport
//! ```
//!
//! The peers are installed by `scripts/install-tools.sh` under [`tools_dir`]; a missing one is a
//! [`PeerError::Missing`] naming it, never a skip.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::tools::{find_executable, tools_dir};

/// Why a peer could not be run or answered nonsense.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The peer (or the interpreter it needs) is not installed.
    #[error(
        "peer {peer} is missing: {detail}. Run scripts/install-tools.sh (tools dir: {})",
        tools_dir.display()
    )]
    Missing {
        /// The peer, e.g. `Python aws-kinesis-agg 1.2.3`.
        peer: &'static str,
        /// What exactly was not found.
        detail: String,
        /// The tools directory that was searched.
        tools_dir: PathBuf,
    },
    /// Starting the driver or talking to it failed.
    #[error("peer {peer}: {what}: {source}")]
    Io {
        /// The peer.
        peer: &'static str,
        /// What the harness was doing.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The driver exited unsuccessfully.
    #[error("peer {peer}: driver exited with {status}; stderr:\n{stderr}")]
    Failed {
        /// The peer.
        peer: &'static str,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The driver's answer is not the JSON the protocol expects.
    #[error("peer {peer}: unreadable answer: {detail}")]
    Protocol {
        /// The peer.
        peer: &'static str,
        /// What went wrong.
        detail: String,
    },
}

impl std::fmt::Debug for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// One of the peer implementations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// awslabs `aws-kinesis-agg` for Python (`RecordAggregator`, `iter_deaggregate_records`).
    Python,
    /// awslabs `aws-kinesis-agg` for Node (`RecordAggregator`, `deaggregateSync`).
    Node,
    /// `aiokpl`, a pure-Python port of the KPL (`Aggregator`, `encode_aggregated`,
    /// `decode_aggregated`).
    Aiokpl,
}

impl Peer {
    /// Every peer.
    pub const ALL: [Peer; 3] = [Peer::Python, Peer::Node, Peer::Aiokpl];

    /// The peer's name and pinned version.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Python => "Python aws-kinesis-agg 1.2.3",
            Peer::Node => "Node aws-kinesis-agg 4.2.8",
            Peer::Aiokpl => "Python aiokpl 0.2.0",
        }
    }

    /// A short name for tables.
    pub fn short_name(self) -> &'static str {
        match self {
            Peer::Python => "python-agg",
            Peer::Node => "node-agg",
            Peer::Aiokpl => "aiokpl",
        }
    }

    /// Checks that the peer is installed at its pinned version, and that its interpreter is on
    /// `PATH`; returns the command that runs its aggregation driver (`agg_peer.py` / `.js`).
    pub fn command(self) -> Result<Command, PeerError> {
        match self {
            Peer::Python | Peer::Aiokpl => {
                let mut command = self.script_command("agg_peer.py")?;
                command.arg(if self == Peer::Python {
                    "python"
                } else {
                    "aiokpl"
                });
                Ok(command)
            }
            Peer::Node => self.script_command("agg_peer.js"),
        }
    }

    /// Like [`Peer::command`], for another driver script in `integration-tests/peers/` (Python
    /// for the Python peers, JavaScript for the Node one), run with the peer importable.
    pub fn script_command(self, script: &str) -> Result<Command, PeerError> {
        let tools = tools_dir();
        let missing = |detail: String| PeerError::Missing {
            peer: self.name(),
            detail,
            tools_dir: tools.clone(),
        };
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("peers")
            .join(script);
        match self {
            Peer::Python | Peer::Aiokpl => {
                let marker = match self {
                    Peer::Python => "aws_kinesis_agg-1.2.3.dist-info",
                    _ => "aiokpl-0.2.0.dist-info",
                };
                python_command(self.name(), marker, &script)
            }
            Peer::Node => {
                let node = find_executable("node", "runs the Node peer")
                    .map_err(|e| missing(e.to_string()))?;
                let modules = tools.join("node").join("node_modules");
                let manifest = modules.join("aws-kinesis-agg").join("package.json");
                let text = std::fs::read_to_string(&manifest)
                    .map_err(|e| missing(format!("cannot read {}: {e}", manifest.display())))?;
                if !text.contains("\"version\": \"4.2.8\"") {
                    return Err(missing(format!(
                        "{} is not version 4.2.8",
                        manifest.display()
                    )));
                }
                let mut command = Command::new(node);
                command.arg(script).env("NODE_PATH", &modules);
                Ok(command)
            }
        }
    }

    /// Aggregates each set with the peer's aggregator; one [`Encoded`] per set, in order.
    pub fn encode(self, sets: &[EncodeSet]) -> Result<Vec<Encoded>, PeerError> {
        #[derive(Serialize)]
        struct Request<'a> {
            op: &'static str,
            sets: &'a [EncodeSet],
        }
        #[derive(Deserialize)]
        struct Answer {
            results: Vec<Encoded>,
        }
        let answer: Answer = self.call(&Request { op: "encode", sets })?;
        self.expect_len(answer.results, sets.len())
    }

    /// Deaggregates each Kinesis record with the peer's deaggregator; one [`Decoded`] per record.
    pub fn decode(self, records: &[PeerKinesisRecord]) -> Result<Vec<Decoded>, PeerError> {
        #[derive(Serialize)]
        struct Request<'a> {
            op: &'static str,
            records: &'a [PeerKinesisRecord],
        }
        #[derive(Deserialize)]
        struct Answer {
            results: Vec<Decoded>,
        }
        let answer: Answer = self.call(&Request {
            op: "decode",
            records,
        })?;
        self.expect_len(answer.results, records.len())
    }

    /// The peer's hash key (MD5 of the UTF-8 key, big-endian, in decimal) of each partition key,
    /// or the error the peer raised. The Node peer exposes no such function.
    pub fn hash_keys(self, keys: &[String]) -> Result<Result<Vec<String>, String>, PeerError> {
        #[derive(Serialize)]
        struct Request<'a> {
            op: &'static str,
            keys: &'a [String],
        }
        #[derive(Deserialize)]
        struct Answer {
            hash_keys: Vec<String>,
            error: Option<String>,
        }
        if self == Peer::Node {
            return Ok(Err(
                "aws-kinesis-agg for Node exposes no hash-key function".into()
            ));
        }
        let answer: Answer = self.call(&Request {
            op: "hash_keys",
            keys,
        })?;
        Ok(match answer.error {
            Some(error) => Err(error),
            None => Ok(self.expect_len(answer.hash_keys, keys.len())?),
        })
    }

    /// Runs the benchmark workloads inside the peer's process, which times itself.
    pub fn bench(self, workloads: &[BenchWorkload]) -> Result<Vec<BenchReport>, PeerError> {
        #[derive(Serialize)]
        struct Request<'a> {
            op: &'static str,
            workloads: &'a [BenchWorkload],
        }
        #[derive(Deserialize)]
        struct Answer {
            results: Vec<BenchReport>,
        }
        let answer: Answer = self.call(&Request {
            op: "bench",
            workloads,
        })?;
        self.expect_len(answer.results, workloads.len())
    }

    fn expect_len<T>(self, items: Vec<T>, want: usize) -> Result<Vec<T>, PeerError> {
        if items.len() == want {
            Ok(items)
        } else {
            Err(PeerError::Protocol {
                peer: self.name(),
                detail: format!("{} results for {want} inputs", items.len()),
            })
        }
    }

    /// Runs a producer against a Kinesis endpoint in the peer's process, which measures its own
    /// CPU time (`resource.getrusage`) and counts the outcomes. Only [`Peer::Aiokpl`] is a
    /// producer; the driver is `peers/producer_peer.py`.
    pub fn produce(self, request: &ProduceRequest) -> Result<ProduceReport, PeerError> {
        if self != Peer::Aiokpl {
            return Err(PeerError::Protocol {
                peer: self.name(),
                detail: "only aiokpl is a producer".into(),
            });
        }
        self.call_with(self.script_command("producer_peer.py")?, request)
    }

    fn call<Req: Serialize, Ans: DeserializeOwned>(self, request: &Req) -> Result<Ans, PeerError> {
        self.call_with(self.command()?, request)
    }

    fn call_with<Req: Serialize, Ans: DeserializeOwned>(
        self,
        mut command: Command,
        request: &Req,
    ) -> Result<Ans, PeerError> {
        let peer = self.name();
        let io = |what: &'static str| move |source| PeerError::Io { peer, what, source };
        let body = serde_json::to_vec(request).map_err(|e| PeerError::Protocol {
            peer,
            detail: format!("cannot serialize the request: {e}"),
        })?;
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io("spawning the driver"))?;
        let mut stdin = child.stdin.take().ok_or(PeerError::Protocol {
            peer,
            detail: "no stdin pipe".into(),
        })?;
        // Written from a thread so that a driver answering early cannot deadlock on full pipes.
        let writer = std::thread::spawn(move || stdin.write_all(&body));
        let output = child
            .wait_with_output()
            .map_err(io("waiting for the driver"))?;
        let written = writer.join().map_err(|_| PeerError::Protocol {
            peer,
            detail: "the stdin writer thread panicked".into(),
        })?;
        if !output.status.success() {
            return Err(PeerError::Failed {
                peer,
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        written.map_err(io("writing the request"))?;
        serde_json::from_slice(&output.stdout).map_err(|e| PeerError::Protocol {
            peer,
            detail: format!(
                "{e}; stdout starts {:?}; stderr: {}",
                String::from_utf8_lossy(&output.stdout[..output.stdout.len().min(200)]),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}

/// A user record handed to a peer's aggregator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerUserRecord {
    /// Partition key.
    pub pk: String,
    /// Explicit hash key in decimal, if any.
    pub ehk: Option<String>,
    /// Payload.
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
}

/// One record set for a peer's aggregator, and the limits to aggregate it with.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EncodeSet {
    /// Largest aggregate data in bytes (magic + protobuf + MD5), in each peer's own accounting;
    /// `None` for the peer's default (1 MiB for the awslabs peers, 51,200 for aiokpl).
    pub max_size: Option<usize>,
    /// Most user records per aggregate (aiokpl only; the awslabs peers have no such limit).
    pub max_records: Option<usize>,
    /// Python aws-kinesis-agg only: pass keys as UTF-8 `bytes` instead of `str`.
    pub keys_as_bytes: bool,
    /// The records, in order.
    pub records: Vec<PeerUserRecord>,
}

/// A Kinesis record a peer's aggregator emitted.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct EncodedRecord {
    /// The outer partition key the peer chose.
    pub pk: Option<String>,
    /// The outer explicit hash key the peer chose.
    pub ehk: Option<String>,
    /// The record's data (an aggregate, or a lone user record's own data).
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
    /// User records in it, where the peer says.
    pub user_records: Option<usize>,
}

/// What a peer's aggregator made of one record set.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Encoded {
    /// The Kinesis records, in order.
    pub records: Vec<EncodedRecord>,
    /// The error the peer raised, if it rejected the set.
    pub error: Option<String>,
}

/// A Kinesis record as read from a stream, handed to a peer's deaggregator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerKinesisRecord {
    /// Partition key.
    pub pk: String,
    /// Sequence number.
    pub seq: String,
    /// Data.
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
}

/// A user record a peer's deaggregator yielded.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct DecodedUserRecord {
    /// Partition key (`None` when the peer gave none).
    pub pk: Option<String>,
    /// Explicit hash key, if the peer gave one.
    pub ehk: Option<String>,
    /// Payload.
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
    /// Subsequence number, where the peer gives one.
    pub sub: Option<u64>,
    /// Whether the peer says it came out of an aggregate.
    pub aggregated: Option<bool>,
}

/// What a peer's deaggregator made of one Kinesis record.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Decoded {
    /// The user records, in order (those yielded before an error included).
    pub records: Vec<DecodedUserRecord>,
    /// The error the peer raised or printed, if any.
    pub error: Option<String>,
}

/// A benchmark workload, generated identically by every implementation: record `i` has the
/// partition key `"pk-"` + `i` zero-padded to `key_len` characters and the data
/// `block[(i * 7919) % (65536 - data_len)..][..data_len]`, where `block` is 64 KiB of xorshift32
/// output seeded with `0x9E3779B9` (see [`bench_block`]).
#[derive(Clone, Debug, Serialize)]
pub struct BenchWorkload {
    /// Label for the report.
    pub name: String,
    /// Records in the set.
    pub records: usize,
    /// Partition key length (ASCII).
    pub key_len: usize,
    /// Data length.
    pub data_len: usize,
    /// Aggregate limit in our terms (outer key + data); the Python and Node aggregators get one
    /// byte less of data, aiokpl gets it as `aggregation_max_size`.
    pub max_size: usize,
    /// Seconds of work per timed phase (passes over the set repeat until then).
    pub seconds: f64,
}

/// One timed phase in a peer.
#[derive(Clone, Debug, Deserialize)]
pub struct Timing {
    /// User records processed.
    pub records: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Aggregates produced by the first pass (encode only).
    #[serde(default)]
    pub aggregates: Option<u64>,
    /// Bytes of those aggregates (encode only).
    #[serde(default)]
    pub bytes: Option<u64>,
}

/// A peer's benchmark report for one workload.
#[derive(Clone, Debug, Deserialize)]
pub struct BenchReport {
    /// The workload's label.
    pub name: String,
    /// MD5 (hex) of every generated partition key and data, in order: proves the inputs match.
    pub input_md5: String,
    /// Aggregation (size accounting and encoding, outer key choice included).
    pub encode: Timing,
    /// Deaggregation of the peer's own aggregates, checksums verified.
    pub decode: Timing,
    /// Other ways of encoding with the same peer (e.g. aiokpl's codec alone).
    #[serde(default)]
    pub variants: Vec<BenchVariant>,
}

/// Another way of encoding with the same peer, timed like [`BenchReport::encode`].
#[derive(Clone, Debug, Deserialize)]
pub struct BenchVariant {
    /// What differs from the main encode path.
    pub label: String,
    /// Its timing.
    pub encode: Timing,
}

/// A producer run for [`Peer::produce`]: `records` user records written to `stream` at
/// `endpoint`, awaiting every outcome. Record `i` has the partition key `keys[i % keys.len()]`
/// and the data [`produce_record_data`]`(i, ..)`: its index as 8 little-endian bytes, then bytes
/// of [`bench_block`], so a read-back can tell every record apart.
#[derive(Clone, Debug, Serialize)]
pub struct ProduceRequest {
    /// The Kinesis endpoint, `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The region to sign for.
    pub region: String,
    /// The stream (it exists and is active).
    pub stream: String,
    /// User records to write.
    pub records: u64,
    /// Data bytes per record (at least 8).
    pub data_len: usize,
    /// The partition keys, used in turn.
    pub keys: Vec<String>,
    /// The peer's per-shard rate limit in Kinesis records per second.
    pub rate_limit_records_per_shard: f64,
    /// The peer's per-shard rate limit in bytes per second.
    pub rate_limit_bytes_per_shard: f64,
    /// The driver gives up (and reports what it has) after this many seconds.
    pub timeout_seconds: f64,
}

/// CPU and wall time of one phase, measured inside the peer's process.
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct ProcessTimes {
    /// User CPU seconds (every thread of the process).
    pub cpu_user: f64,
    /// System CPU seconds.
    pub cpu_system: f64,
    /// Wall-clock seconds.
    pub wall: f64,
}

impl ProcessTimes {
    /// User plus system CPU seconds.
    pub fn cpu(&self) -> f64 {
        self.cpu_user + self.cpu_system
    }
}

/// What a peer's producer run did, as the peer reports it.
#[derive(Clone, Debug, Deserialize)]
pub struct ProduceReport {
    /// User records put.
    pub records: u64,
    /// Outcomes that reported success.
    pub succeeded: u64,
    /// Outcomes that reported a failure.
    pub failed: u64,
    /// Failed outcomes by the last attempt's error code.
    pub failures: std::collections::BTreeMap<String, u64>,
    /// Outcomes never resolved before the driver's timeout.
    pub unresolved: u64,
    /// Attempts over all outcomes (retries included).
    pub attempts: u64,
    /// From building the producer to the last outcome and the producer's close: generation of
    /// the records included, interpreter start-up and imports not.
    pub produce: ProcessTimes,
    /// Generating the same records (keys and data) alone, measured separately.
    pub generate: ProcessTimes,
    /// The peer's configuration as the driver set it.
    pub config: String,
    /// The Python version.
    pub python: String,
}

/// Partition keys for a producer run: `pk-0`, `pk-1`, ... `pk-{keys - 1}`.
pub fn produce_keys(keys: usize) -> Vec<String> {
    (0..keys).map(|k| format!("pk-{k}")).collect()
}

/// `keys` partition keys from `pk-0`, `pk-1`, ... chosen so that each hash key range of `ranges`
/// (a stream's shards) gets as many as the others (one more for the first `keys % ranges` of
/// them): records cycling through them load every shard alike. Keys whose hash falls in no range
/// are skipped.
pub fn balanced_keys(keys: usize, ranges: &[kinesis_aggregation::HashKeyRange]) -> Vec<String> {
    if ranges.is_empty() {
        return produce_keys(keys);
    }
    let quota = |shard: usize| keys / ranges.len() + usize::from(shard < keys % ranges.len());
    let mut taken = vec![0usize; ranges.len()];
    let mut out = Vec::with_capacity(keys);
    let mut candidate = 0u64;
    while out.len() < keys {
        let key = format!("pk-{candidate}");
        candidate += 1;
        let hash = kinesis_aggregation::HashKey::from_partition_key(&key);
        if let Some(shard) = ranges.iter().position(|r| r.contains(hash))
            && taken[shard] < quota(shard)
        {
            taken[shard] += 1;
            out.push(key);
        }
    }
    out
}

/// The data of record `i` of a producer run, `data_len` bytes (at least 8): `i` as 8
/// little-endian bytes, then `block[o..o + data_len - 8]` with
/// `o = (i * 7919) % (block.len() - (data_len - 8))`.
pub fn produce_record_data(i: u64, data_len: usize, block: &[u8]) -> Vec<u8> {
    let filler = data_len.saturating_sub(8);
    let span = (block.len() - filler) as u64;
    let offset = (i.wrapping_mul(7919) % span) as usize;
    let mut data = Vec::with_capacity(8 + filler);
    data.extend_from_slice(&i.to_le_bytes());
    data.extend_from_slice(&block[offset..offset + filler]);
    data
}

/// The index of a producer run's record, from its data.
pub fn produce_record_index(data: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(..8)?.try_into().ok()?))
}

/// The 64 KiB payload source of the benchmark workloads: xorshift32 from `0x9E3779B9`, low byte.
pub fn bench_block() -> Vec<u8> {
    let mut x: u32 = 0x9E37_79B9;
    (0..65536)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// Record `i` of a benchmark workload: its partition key and the byte range of its data in
/// [`bench_block`].
pub fn bench_record(i: usize, key_len: usize, data_len: usize) -> (String, std::ops::Range<usize>) {
    let span = 65536 - data_len;
    let offset = (i * 7919) % span;
    let digits = key_len.saturating_sub(3);
    (format!("pk-{i:0digits$}"), offset..offset + data_len)
}

mod base64_bytes {
    use base64::{Engine, engine::general_purpose::STANDARD};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(data))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// The pinned `kcl-rs` (a Rust port of the Java KCL 3 with Python bindings), a consumer peer.
pub const KCL_RS: &str = "kcl-rs 0.1.4";

/// The command that runs `peers/consumer_peer.py`: one kcl-rs worker speaking the line protocol
/// of our `consumer-worker` (see [`crate::consumer_worker`]). Fails, naming the install script,
/// if kcl-rs is not installed.
pub fn kcl_rs_command() -> Result<Command, PeerError> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join("consumer_peer.py");
    python_command(KCL_RS, "kcl_rs-0.1.4.dist-info", &script)
}

/// `python3 script` with the Python peers importable, once `marker` (a `.dist-info` folder)
/// shows the pinned version is installed.
fn python_command(peer: &'static str, marker: &str, script: &Path) -> Result<Command, PeerError> {
    let tools = tools_dir();
    let missing = |detail: String| PeerError::Missing {
        peer,
        detail,
        tools_dir: tools.clone(),
    };
    let python =
        find_executable("python3", "runs the Python peers").map_err(|e| missing(e.to_string()))?;
    let site = tools.join("python");
    if !site.join(marker).is_dir() {
        return Err(missing(format!(
            "{} does not exist",
            site.join(marker).display()
        )));
    }
    let mut command = Command::new(python);
    command.arg(script).env("PYTHONPATH", &site);
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_generator_is_stable() {
        let block = bench_block();
        assert_eq!(block.len(), 65536);
        // First xorshift32 steps from 0x9E3779B9, low bytes (same in agg_peer.py / agg_peer.js).
        let mut x: u32 = 0x9E37_79B9;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        assert_eq!(block[0], (x & 0xFF) as u8);
        let (pk, range) = bench_record(12, 20, 100);
        assert_eq!(pk, "pk-00000000000000012");
        assert_eq!(pk.len(), 20);
        // Offsets wrap within the block, as in the drivers: (i * 7919) % (65536 - data_len).
        let offset = 12 * 7919 % (65536 - 100);
        assert_eq!(offset, 29_592);
        assert_eq!(range, offset..offset + 100);
        let (_, first) = bench_record(0, 20, 100);
        assert_eq!(first, 0..100);
    }

    #[test]
    fn producer_records_carry_their_index() {
        let block = bench_block();
        let data = produce_record_data(70_001, 100, &block);
        assert_eq!(data.len(), 100);
        assert_eq!(produce_record_index(&data), Some(70_001));
        let offset = (70_001 * 7919) % (65536 - 92);
        assert_eq!(&data[8..], &block[offset..offset + 92]);
        assert_eq!(produce_keys(3), ["pk-0", "pk-1", "pk-2"]);
    }

    #[test]
    fn balanced_keys_load_every_shard_alike() {
        use kinesis_aggregation::{HashKey, HashKeyRange};
        let quarter = u128::MAX / 4 + 1;
        let ranges: Vec<HashKeyRange> = (0..4u128)
            .map(|i| {
                let end = if i == 3 {
                    u128::MAX
                } else {
                    (i + 1) * quarter - 1
                };
                HashKeyRange::new(HashKey::from(i * quarter), HashKey::from(end)).unwrap()
            })
            .collect();
        let keys = balanced_keys(66, &ranges);
        assert_eq!(keys.len(), 66);
        let mut per_shard = [0; 4];
        for key in &keys {
            let hash = HashKey::from_partition_key(key);
            per_shard[ranges.iter().position(|r| r.contains(hash)).unwrap()] += 1;
        }
        assert_eq!(per_shard, [17, 17, 16, 16]);
    }
}
