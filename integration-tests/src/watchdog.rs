//! Child processes that never outlive the test process.
//!
//! A stand-in such as DynamoDB Local runs under a small `bash` watchdog whose stdin is a pipe from
//! the test process. When the pipe reaches end-of-file — the [`WatchedChild`] was dropped, or the
//! test process died, even by `SIGKILL` or `abort`, since the kernel closes its descriptors — the
//! watchdog sends the child `SIGTERM`, then `SIGKILL` after a grace period (three seconds by
//! default). This needs no `unsafe` (`pre_exec`/`prctl`), which the workspace forbids. Only the
//! child itself is signalled, not processes it may have started.
//!
//! ```text
//!  test process ──stdin pipe──▶ bash watchdog ──spawns──▶ child (stdin /dev/null)
//!        │                          │ EOF on stdin ──▶ kill -TERM child; grace; kill -KILL child
//!        └──────── log file ◀───────┴── child stdout + stderr
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::HarnessError;
use crate::tools::log_dir;

/// The watchdog. Arguments after the script name: the SIGTERM grace in tenths of a second, then
/// the child's program and arguments. It prints the child's pid on stdout, then waits for the
/// child; a background guard waits for EOF on the original stdin (kept as fd 3) and stops the
/// child.
const WATCHDOG_SCRIPT: &str = r#"
grace=$1
shift
exec 3<&0 0</dev/null
"$@" 3<&- 1>&2 &
child=$!
echo "$child"
exec 1>&2
(
  read -r _ <&3
  kill -TERM "$child" 2>/dev/null || exit 0
  for _ in $(seq "$grace"); do
    sleep 0.1
    kill -0 "$child" 2>/dev/null || exit 0
  done
  echo "watchdog: pid $child still running $grace tenths of a second after SIGTERM, sending SIGKILL"
  kill -KILL "$child" 2>/dev/null
) &
guard=$!
exec 3<&-
wait "$child"
status=$?
kill "$guard" 2>/dev/null
exit "$status"
"#;

/// How long a child has to exit after `SIGTERM` before it gets `SIGKILL`, by default.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(3);

/// How long `Drop` waits, beyond the grace, before killing the watchdog itself.
const STOP_SLACK: Duration = Duration::from_secs(2);

/// A child process running under the watchdog; dropping it stops the child.
#[derive(Debug)]
pub struct WatchedChild {
    name: String,
    pid: u32,
    log: PathBuf,
    stop_grace: Duration,
    stdin: Mutex<Option<ChildStdin>>,
    watchdog: Mutex<Child>,
}

impl WatchedChild {
    /// Spawns `command` (program, arguments, environment and working directory are taken from
    /// it; its stdio settings are ignored) under the watchdog, with its stdout and stderr going
    /// to `target/harness-logs/<log_name>.log`. On stop it gets [`DEFAULT_STOP_GRACE`] between
    /// `SIGTERM` and `SIGKILL`.
    pub fn spawn(name: &str, log_name: &str, command: &Command) -> Result<Self, HarnessError> {
        Self::spawn_with_grace(name, log_name, command, DEFAULT_STOP_GRACE)
    }

    /// Like [`WatchedChild::spawn`], with `stop_grace` between `SIGTERM` and `SIGKILL`
    /// (tenth-of-a-second precision).
    pub fn spawn_with_grace(
        name: &str,
        log_name: &str,
        command: &Command,
        stop_grace: Duration,
    ) -> Result<Self, HarnessError> {
        let dir = log_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| HarnessError::io(format!("creating {}", dir.display()), e))?;
        let log = dir.join(format!("{log_name}.log"));
        let log_file = File::create(&log)
            .map_err(|e| HarnessError::io(format!("creating {}", log.display()), e))?;
        let log_err = log_file
            .try_clone()
            .map_err(|e| HarnessError::io("duplicating the log file handle", e))?;

        let mut watchdog = Command::new("bash");
        watchdog
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("watchdog")
            .arg((stop_grace.as_millis() / 100).max(1).to_string())
            .arg(command.get_program())
            .args(command.get_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_err);
        if let Some(dir) = command.get_current_dir() {
            watchdog.current_dir(dir);
        }
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => watchdog.env(key, value),
                None => watchdog.env_remove(key),
            };
        }
        drop(log_file);

        let mut child = watchdog
            .spawn()
            .map_err(|e| HarnessError::io(format!("spawning the watchdog for {name}"), e))?;
        let stdin = child.stdin.take();
        let pid = read_pid(&mut child).map_err(|e| {
            let _ = child.kill();
            let _ = child.wait();
            HarnessError::io(format!("reading the pid of {name} from its watchdog"), e)
        })?;
        tracing::debug!(name, pid, log = %log.display(), "started child under watchdog");
        Ok(Self {
            name: name.to_owned(),
            pid,
            log,
            stop_grace,
            stdin: Mutex::new(stdin),
            watchdog: Mutex::new(child),
        })
    }

    /// The child's name, as given to [`WatchedChild::spawn`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pid of the child itself (not of the watchdog).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The log file receiving the child's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the child's log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// The child's exit status if it has exited (the watchdog exits with it).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        let mut watchdog = self.watchdog.lock().unwrap_or_else(|e| e.into_inner());
        watchdog.try_wait().ok().flatten()
    }

    /// Closes the watchdog's stdin, exactly what happens when the test process dies: the
    /// watchdog then stops the child. Used to test that path; `Drop` does it too.
    pub fn close_watchdog_stdin(&self) {
        let mut stdin = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
        stdin.take();
    }

    /// Builds the error for a readiness timeout, with the log tail.
    pub(crate) fn not_ready(&self, waited: Duration) -> HarnessError {
        HarnessError::NotReady {
            name: self.name.clone(),
            waited,
            log: self.log.clone(),
            log_tail: self.log_tail(40),
        }
    }

    /// Returns an error if the child has already exited, with the log tail.
    pub(crate) fn check_running(&self) -> Result<(), HarnessError> {
        match self.exit_status() {
            None => Ok(()),
            Some(status) => Err(HarnessError::Exited {
                name: self.name.clone(),
                status,
                log: self.log.clone(),
                log_tail: self.log_tail(40),
            }),
        }
    }
}

impl Drop for WatchedChild {
    fn drop(&mut self) {
        self.close_watchdog_stdin();
        let watchdog = self.watchdog.get_mut().unwrap_or_else(|e| e.into_inner());
        let deadline = Instant::now() + self.stop_grace + STOP_SLACK;
        loop {
            match watchdog.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => break,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        tracing::warn!(name = %self.name, pid = self.pid, "watchdog did not stop its child in time");
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status();
        let _ = watchdog.kill();
        let _ = watchdog.wait();
    }
}

fn read_pid(child: &mut Child) -> std::io::Result<u32> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("watchdog stdout is not piped"))?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    line.trim()
        .parse()
        .map_err(|e| std::io::Error::other(format!("bad pid line {line:?}: {e}")))
}

/// The last `lines` lines of the file at `path` (at most its last 64 KiB are read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    const WINDOW: u64 = 64 * 1024;
    let Ok(mut file) = File::open(path) else {
        return String::from("<no log>");
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(WINDOW)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|stat| stat.contains(") Z "))
                .unwrap_or(true)
    }

    fn wait_gone(pid: u32, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if !alive(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        !alive(pid)
    }

    #[test]
    fn drop_stops_the_child() {
        let mut command = Command::new("sleep");
        command.arg("300");
        let child = WatchedChild::spawn("sleep", "watchdog-test-drop", &command).unwrap();
        let pid = child.pid();
        assert!(alive(pid));
        drop(child);
        assert!(wait_gone(pid, Duration::from_secs(5)));
    }

    #[test]
    fn eof_on_stdin_stops_the_child_as_when_the_parent_dies() {
        let mut command = Command::new("sleep");
        command.arg("300");
        let child = WatchedChild::spawn("sleep", "watchdog-test-eof", &command).unwrap();
        let pid = child.pid();
        child.close_watchdog_stdin();
        assert!(wait_gone(pid, Duration::from_secs(5)));
        // The watchdog exits with the child's status (killed by SIGTERM).
        let deadline = Instant::now() + Duration::from_secs(2);
        while child.exit_status().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(child.exit_status().is_some());
    }

    /// Run by `the_child_dies_with_an_aborted_parent` in a separate process of this test binary:
    /// starts a child, prints its pid and aborts, so no destructor runs. A no-op otherwise.
    #[test]
    fn orphan_maker() {
        if std::env::var_os("HARNESS_ORPHAN_MAKER").is_none() {
            return;
        }
        let mut command = Command::new("sleep");
        command.arg("300");
        let child = WatchedChild::spawn("sleep", "watchdog-test-orphan", &command).unwrap();
        println!("ORPHAN_PID={}", child.pid());
        std::process::abort();
    }

    #[test]
    fn the_child_dies_with_an_aborted_parent() {
        let output = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "watchdog::tests::orphan_maker",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("HARNESS_ORPHAN_MAKER", "1")
            .output()
            .unwrap();
        assert!(!output.status.success(), "the parent should have aborted");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let pid: u32 = stdout
            .lines()
            .find_map(|line| line.split_once("ORPHAN_PID=").map(|(_, pid)| pid))
            .unwrap_or_else(|| panic!("no pid in {stdout}"))
            .trim()
            .parse()
            .unwrap();
        assert!(
            wait_gone(pid, Duration::from_secs(5)),
            "pid {pid} survived its parent"
        );
    }

    #[test]
    fn a_child_ignoring_sigterm_is_killed() {
        let mut command = Command::new("bash");
        command.args([
            "-c",
            "trap '' TERM; echo started; while true; do sleep 0.05; done",
        ]);
        let child = WatchedChild::spawn("stubborn", "watchdog-test-stubborn", &command).unwrap();
        let pid = child.pid();
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        drop(child);
        assert!(wait_gone(pid, Duration::from_secs(6)));
        assert!(started.elapsed() >= Duration::from_secs(2));
    }

    #[test]
    fn child_output_goes_to_the_log_and_exit_is_seen() {
        let mut command = Command::new("bash");
        command.args(["-c", "echo hello from $GREETING; exit 3"]);
        command.env("GREETING", "the child");
        let child = WatchedChild::spawn("echo", "watchdog-test-log", &command).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.exit_status().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(child.exit_status().and_then(|s| s.code()), Some(3));
        assert!(child.log_tail(5).contains("hello from the child"));
        assert!(child.check_running().is_err());
    }
}
