//! ferrokinesis in a process of its own, for benchmarks that measure the CPU time of the client
//! process alone: the stand-in's work (about 20 µs of CPU per record) must not be counted.
//!
//! The server side is [`serve`], run by the `ferrokinesis-server` bin (and by any program that
//! re-executes itself in a server mode); the client side is [`FerrokinesisProcess`].
//!
//! ```text
//!  benchmark process                                 child process
//!  FerrokinesisProcess::spawn ──spawns──────────────▶ serve(): Ferrokinesis on 127.0.0.1:<port>
//!        │  ◀── stdout: "http://127.0.0.1:<port>" ───┤
//!        │  SDK clients ────── HTTP ────────────────▶ │
//!        │  stop(): closes stdin ───────────────────▶ │ EOF: prints {"calls": {...}}, exits
//!        │  ◀── stdout: per-operation call counts ───┘
//!  dropped without stop(): SIGKILL (kill_on_drop); benchmark process dies: its end of the stdin
//!  pipe closes, so the child sees EOF and exits as well
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::cpu_time::CpuTime;
use crate::embedded_kinesis::{Ferrokinesis, FerrokinesisOptions};
use crate::error::HarnessError;
use crate::sdk::{self, ClientOptions};

/// How long [`FerrokinesisProcess::spawn`] waits for the endpoint line.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long [`FerrokinesisProcess::stop`] waits for the child to report and exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server reports when it stops: calls served, per operation (`PutRecords`,
/// `ListShards`, ...), as counted by the fault layer in front of ferrokinesis.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedCalls {
    /// Calls per operation.
    pub calls: BTreeMap<String, u64>,
}

impl ServedCalls {
    /// Calls of `operation`.
    pub fn of(&self, operation: &str) -> u64 {
        self.calls.get(operation).copied().unwrap_or(0)
    }
}

/// Runs ferrokinesis with `options` (its port included) until stdin reaches end-of-file, or,
/// when `watch_stdin` is false, until the process is killed. Prints the endpoint
/// (`http://127.0.0.1:<port>`) as the first line on stdout, and a [`ServedCalls`] JSON line when
/// it stops.
pub async fn serve(options: FerrokinesisOptions, watch_stdin: bool) -> Result<(), HarnessError> {
    let kinesis = Ferrokinesis::start_with(options).await?;
    print_line(kinesis.endpoint())?;
    if watch_stdin {
        let (eof_tx, eof_rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            // Read errors count as end-of-file: either way nobody is driving the server.
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = eof_tx.send(());
        });
        let _ = eof_rx.await;
    } else {
        std::future::pending::<()>().await;
    }
    let served = ServedCalls {
        calls: kinesis.faults().stats().calls,
    };
    let line = serde_json::to_string(&served)
        .map_err(|e| HarnessError::io("serializing the call counts", std::io::Error::other(e)))?;
    print_line(&line)
}

fn print_line(line: &str) -> Result<(), HarnessError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(|e| HarnessError::io("writing to stdout", e))
}

/// A ferrokinesis server running in a child process (a program that runs [`serve`]).
///
/// Dropping it kills the child; [`FerrokinesisProcess::stop`] stops it cleanly and returns the
/// calls it served.
#[derive(Debug)]
pub struct FerrokinesisProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    endpoint: String,
    pid: u32,
}

impl FerrokinesisProcess {
    /// Spawns `command` (for example `ferrokinesis-server --enforce-limits`) with piped stdin and
    /// stdout and inherited stderr, and waits for the endpoint line.
    pub async fn spawn(command: std::process::Command) -> Result<Self, HarnessError> {
        let program = command.get_program().to_string_lossy().into_owned();
        let mut command = tokio::process::Command::from(command);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| HarnessError::io(format!("spawning {program}"), e))?;
        let pid = child.id().ok_or_else(|| {
            HarnessError::io(
                format!("{program} exited at once"),
                std::io::Error::other("no pid"),
            )
        })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or_else(|| {
            HarnessError::io(
                format!("reading {program}'s stdout"),
                std::io::Error::other("stdout is not piped"),
            )
        })?;
        let mut stdout = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(START_TIMEOUT, stdout.next_line()).await;
        let endpoint = match first {
            Ok(Ok(Some(line))) if line.starts_with("http://127.0.0.1:") => line,
            Ok(Ok(other)) => {
                return Err(HarnessError::io(
                    format!("starting {program}"),
                    std::io::Error::other(format!("expected an endpoint line, got {other:?}")),
                ));
            }
            Ok(Err(e)) => return Err(HarnessError::io(format!("reading {program}'s stdout"), e)),
            Err(_) => {
                return Err(HarnessError::io(
                    format!("starting {program}"),
                    std::io::Error::other(format!("no endpoint line after {START_TIMEOUT:?}")),
                ));
            }
        };
        tracing::debug!(%endpoint, pid, "ferrokinesis process started");
        Ok(Self {
            child,
            stdin,
            stdout,
            endpoint,
            pid,
        })
    }

    /// The endpoint, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// CPU time the child has used so far.
    pub fn cpu_time(&self) -> Result<CpuTime, HarnessError> {
        CpuTime::of_pid(self.pid)
    }

    /// A Kinesis client with SDK default retries and timeouts.
    pub fn client(&self) -> aws_sdk_kinesis::Client {
        self.client_with(&ClientOptions::default())
    }

    /// A Kinesis client with `options`.
    pub fn client_with(&self, options: &ClientOptions) -> aws_sdk_kinesis::Client {
        sdk::kinesis_client(&self.endpoint, options)
    }

    /// Closes the child's stdin, reads the calls it served and waits for it to exit (killing it
    /// if it does not within a few seconds).
    pub async fn stop(mut self) -> Result<ServedCalls, HarnessError> {
        drop(self.stdin.take());
        let report = tokio::time::timeout(STOP_TIMEOUT, async {
            while let Some(line) = self.stdout.next_line().await? {
                if let Ok(served) = serde_json::from_str::<ServedCalls>(&line) {
                    return Ok(Some(served));
                }
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        let exited = tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await;
        if !matches!(exited, Ok(Ok(_))) {
            let _ = self.child.kill().await;
        }
        match report {
            Ok(Ok(Some(served))) => Ok(served),
            Ok(Ok(None)) => Err(HarnessError::io(
                "stopping the ferrokinesis process",
                std::io::Error::other("it exited without reporting its calls"),
            )),
            Ok(Err(e)) => Err(HarnessError::io(
                "reading the ferrokinesis process's report",
                e,
            )),
            Err(_) => Err(HarnessError::io(
                "stopping the ferrokinesis process",
                std::io::Error::other(format!("no report within {STOP_TIMEOUT:?}")),
            )),
        }
    }
}
