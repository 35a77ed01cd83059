//! `kinesis produce --follow` as a process:
//! - a log written while it runs, rotated by rename and create, the follower killed with SIGKILL
//!   and restarted, rotated again by copytruncate, a partial line left unfinished for a while;
//!   then every line must be in the stream, and the only duplicates those the documented
//!   semantics allow;
//! - two files followed by one command, stopped and restarted: every line of both once, and a
//!   checkpoint entry per path at its file's end;
//! - `--start-at end`: what a file holds when the follower starts is not sent, what is appended
//!   is, and a restart resumes from the checkpoint rather than from the end;
//! - a copytruncate of a file of which no line was resolved yet: its lines come from the copy.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs::{File, OpenOptions},
    io::Write,
    os::unix::fs::MetadataExt,
    path::Path,
    time::{Duration, Instant},
};

use common::{BoxError, Env, Running, TIMEOUT, TempDir, read_back, sent, until};

const MAX_OUTSTANDING: u64 = 200;
const BATCH: usize = 50;
const PAUSE: Duration = Duration::from_millis(25);

/// A line the test wrote: `r0000123`, to the file of generation `generation`, ending at `end`.
#[derive(Clone, Copy, Debug)]
struct Written {
    generation: u32,
    end: u64,
    at: Instant,
}

#[derive(Default)]
struct Log {
    lines: Vec<Written>,
}

impl Log {
    fn text(n: usize) -> String {
        format!("r{n:07}")
    }

    /// Appends `count` lines to `file` (opened for appending), of generation `generation`.
    fn append(&mut self, file: &mut File, generation: u32, count: usize) -> Result<(), BoxError> {
        let mut end = file.metadata()?.len();
        let mut buf = String::new();
        for _ in 0..count {
            let line = format!("{}\n", Log::text(self.lines.len()));
            end += line.len() as u64;
            buf.push_str(&line);
            self.lines.push(Written {
                generation,
                end,
                at: Instant::now(),
            });
        }
        file.write_all(buf.as_bytes())?;
        Ok(())
    }

    async fn batches(
        &mut self,
        file: &mut File,
        generation: u32,
        batches: usize,
    ) -> Result<(), BoxError> {
        for _ in 0..batches {
            self.append(file, generation, BATCH)?;
            tokio::time::sleep(PAUSE).await;
        }
        Ok(())
    }
}

fn append_to(path: &Path) -> Result<File, BoxError> {
    Ok(OpenOptions::new().append(true).create(true).open(path)?)
}

fn checkpoint(path: &Path) -> Result<serde_json::Value, BoxError> {
    Ok(serde_json::from_slice(&std::fs::read(path)?)?)
}

/// The MD5 of the first 512 bytes of the file at `path`, as the checkpoint's fingerprints give it.
fn first_bytes_md5(path: &Path) -> Result<String, BoxError> {
    use md5::{Digest, Md5};
    let content = std::fs::read(path)?;
    let digest = Md5::digest(&content[..content.len().min(512)]);
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// The checkpoint's entries for `log`: (inode, offset).
fn entries(checkpoint: &serde_json::Value, log: &Path) -> Vec<(u64, u64)> {
    checkpoint["files"][log.to_str().unwrap_or_default()]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    (
                        e["inode"].as_u64().unwrap_or(0),
                        e["offset"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `kinesis produce --follow` of `logs` to stream `follow`, with checkpoint `cp` and `extra`
/// arguments.
fn follower(env: &Env, logs: &[&Path], cp: &Path, extra: &[&str]) -> Running {
    let mut command = env.command(&["-q", "produce", "--stream", "follow", "--follow"]);
    command
        .args(logs)
        .arg("--checkpoint")
        .arg(cp)
        .args(["--max-outstanding", &MAX_OUTSTANDING.to_string()])
        .args(extra);
    Running::spawn(command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_through_two_rotations_and_a_kill() -> Result<(), BoxError> {
    let env = Env::start().await;
    env.stream("follow", 2).await;
    let dir = TempDir::new("follow");
    let path = dir.join("app.log");
    let cp = dir.join("cp.json");
    let mut log = Log::default();

    // Generation 0, partly written before the follower starts.
    let mut gen0 = append_to(&path)?;
    log.append(&mut gen0, 0, 500)?;
    let mut first = follower(&env, &[&path], &cp, &[]);
    until("the first checkpoint", TIMEOUT, || cp.exists()).await;
    log.batches(&mut gen0, 0, 20).await?;

    // Rotation 1, rename and create; the writer appends to the old file a little longer.
    std::fs::rename(&path, dir.join("app.log.1"))?;
    log.append(&mut gen0, 0, 30)?;
    let mut gen1 = append_to(&path)?;
    let mut inodes = HashMap::from([(gen0.metadata()?.ino(), 0u32), (gen1.metadata()?.ino(), 1)]);
    log.batches(&mut gen1, 1, 6).await?;

    // SIGKILL, while lines are being written, read and acknowledged.
    first.signal("KILL");
    assert_ne!(first.wait(TIMEOUT).await, Some(0));
    let killed_at = Instant::now();
    let written_at_kill = log.lines.len();
    let at_kill = checkpoint(&cp)?;
    log.batches(&mut gen1, 1, 10).await?;

    // The restart resumes from the checkpoint.
    let mut second = follower(&env, &[&path], &cp, &[]);
    log.batches(&mut gen1, 1, 20).await?;

    // Rotation 2, copytruncate (no line written between the copy and the truncation).
    std::fs::copy(&path, dir.join("app.log.2"))?;
    gen1.set_len(0)?;
    let mut gen2 = gen1;
    inodes.insert(gen2.metadata()?.ino(), 2);
    log.batches(&mut gen2, 2, 20).await?;

    // A partial line is not sent until its newline comes.
    let n = log.lines.len();
    let text = Log::text(n);
    let before = gen2.metadata()?.len();
    let head = first_bytes_md5(&path)?;
    gen2.write_all(&text.as_bytes()[..4])?;
    // The file of generation 1 has the same inode, and its copy is still in the checkpoint
    // (under that inode) until it is read: the first bytes tell the two apart.
    let waits_before_it = || {
        checkpoint(&cp)
            .map(|c| {
                entries(&c, &path) == [(gen2.metadata().map(|m| m.ino()).unwrap_or(0), before)]
                    && c["files"][path.to_string_lossy().as_ref()][0]["fingerprint"]["md5"]
                        == head.as_str()
            })
            .unwrap_or(false)
    };
    until("the lines before the partial one", TIMEOUT, waits_before_it).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(waits_before_it(), "the partial line moved the checkpoint");
    gen2.write_all(format!("{}\n", &text[4..]).as_bytes())?;
    log.lines.push(Written {
        generation: 2,
        end: gen2.metadata()?.len(),
        at: Instant::now(),
    });

    // Everything acknowledged and checkpointed: one file left, read to its end.
    let size = gen2.metadata()?.len();
    let ino = gen2.metadata()?.ino();
    until("the last checkpoint", TIMEOUT, || {
        checkpoint(&cp)
            .map(|c| entries(&c, &path) == [(ino, size)])
            .unwrap_or(false)
    })
    .await;
    second.signal("TERM");
    let code = second.wait(TIMEOUT).await;
    let stdout = second.stdout();
    let stderr = second.stderr();
    assert_eq!(code, Some(0), "{stdout} {stderr}");
    assert!(stdout.contains(", 0 failed"), "{stdout}");
    assert_eq!(entries(&checkpoint(&cp)?, &path), [(ino, size)]);

    // Every line is in the stream.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for record in read_back(&env.kinesis, "follow").await {
        *seen.entry(record.text()).or_default() += 1;
    }
    let total = log.lines.len();
    let missing: Vec<usize> = (0..total)
        .filter(|n| !seen.contains_key(&Log::text(*n)))
        .collect();
    assert!(
        missing.is_empty(),
        "{} lines missing: {missing:?}",
        missing.len()
    );
    assert_eq!(seen.len(), total, "records that are no line written");

    // Duplicates: only lines written before the kill and above the checkpoint it left (received
    // and perhaps acknowledged, not yet checkpointed).
    let at_kill: Vec<(u32, u64)> = entries(&at_kill, &path)
        .into_iter()
        .map(|(inode, offset)| (inodes.get(&inode).copied().unwrap_or(u32::MAX), offset))
        .collect();
    let oldest = at_kill.iter().map(|(g, _)| *g).min().unwrap_or(u32::MAX);
    let covered = |line: &Written| {
        line.generation < oldest
            || at_kill
                .iter()
                .any(|(g, offset)| *g == line.generation && line.end <= *offset)
    };
    let uncovered = log.lines[..written_at_kill]
        .iter()
        .filter(|l| !covered(l))
        .count();
    let duplicates: Vec<usize> = (0..total)
        .filter(|n| seen.get(&Log::text(*n)).copied().unwrap_or(0) > 1)
        .collect();
    for n in &duplicates {
        assert!(
            *n < written_at_kill && !covered(&log.lines[*n]),
            "line {n} was sent twice but is not one the kill could duplicate (checkpoint at the \
             kill: {at_kill:?}, written then: {written_at_kill})"
        );
    }
    // The documented bound: the lines in flight (--max-outstanding) and those acknowledged in
    // the last checkpoint interval (200 ms; 500 ms here for a loaded machine's scheduling).
    let recent = log.lines[..written_at_kill]
        .iter()
        .filter(|l| killed_at.duration_since(l.at) <= Duration::from_millis(500))
        .count() as u64;
    assert!(
        (duplicates.len() as u64) <= MAX_OUTSTANDING + recent,
        "{} duplicates, over {MAX_OUTSTANDING} in flight + {recent} written in the last 500 ms",
        duplicates.len()
    );
    println!(
        "{total} lines, {} sent twice (all within the {uncovered} lines above the checkpoint at \
         the kill; bound {MAX_OUTSTANDING} + {recent}); checkpoint at the kill {at_kill:?}",
        duplicates.len()
    );
    Ok(())
}

/// Lines a test wrote, `{prefix}-{n:04}`, numbered on per prefix.
#[derive(Default)]
struct Lines {
    all: Vec<String>,
    next: HashMap<String, usize>,
}

impl Lines {
    /// Appends the next `count` lines of `prefix` to `file`, at once.
    fn append(&mut self, file: &mut File, prefix: &str, count: usize) -> Result<(), BoxError> {
        let next = self.next.entry(prefix.to_owned()).or_default();
        let mut buf = String::new();
        for n in *next..*next + count {
            let line = format!("{prefix}-{n:04}");
            buf.push_str(&line);
            buf.push('\n');
            self.all.push(line);
        }
        *next += count;
        file.write_all(buf.as_bytes())?;
        Ok(())
    }

    /// How many lines of `prefix` were written.
    fn count(&self, prefix: &str) -> usize {
        self.next.get(prefix).copied().unwrap_or(0)
    }
}

/// Whether the checkpoint `cp` holds one entry for `log`: its file, read to its end.
fn at_end(cp: &Path, log: &Path) -> bool {
    let (Ok(checkpoint), Ok(metadata)) = (checkpoint(cp), std::fs::metadata(log)) else {
        return false;
    };
    entries(&checkpoint, log) == [(metadata.ino(), metadata.len())]
}

/// Stops `follower` with SIGTERM: exit 0, nothing failed; the number of lines it sent.
async fn terminate(follower: &mut Running) -> Option<u64> {
    follower.signal("TERM");
    let code = follower.wait(TIMEOUT).await;
    let (stdout, stderr) = (follower.stdout(), follower.stderr());
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains(", 0 failed"), "{stdout}\n{stderr}");
    sent(&stdout)
}

/// Asserts that stream `follow` holds exactly the lines `wanted`, each once.
async fn each_once(env: &Env, wanted: &[String]) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for record in read_back(&env.kinesis, "follow").await {
        *seen.entry(record.text()).or_default() += 1;
    }
    let wanted: BTreeSet<&String> = wanted.iter().collect();
    let missing: Vec<&&String> = wanted.iter().filter(|l| !seen.contains_key(**l)).collect();
    let twice: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    let other: Vec<&String> = seen.keys().filter(|l| !wanted.contains(l)).collect();
    assert!(
        missing.is_empty() && twice.is_empty() && other.is_empty(),
        "of {} lines: missing {missing:?}; sent more than once {twice:?}; sent but not to be \
         sent {other:?}",
        wanted.len()
    );
}

/// Two files on one command line, each with its own checkpoint entry: the lines written before
/// the start, while it runs, while it is stopped and after its restart all arrive, each once;
/// each SIGTERM stop leaves each file's entry at its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_files_followed_at_once_each_with_its_checkpoint_entry() -> Result<(), BoxError> {
    let env = Env::start().await;
    env.stream("follow", 2).await;
    let dir = TempDir::new("follow-two");
    let (a, b) = (dir.join("a.log"), dir.join("b.log"));
    let cp = dir.join("cp.json");
    let (mut a_file, mut b_file) = (append_to(&a)?, append_to(&b)?);
    let mut lines = Lines::default();
    let at_ends = || at_end(&cp, &a) && at_end(&cp, &b);

    lines.append(&mut a_file, "a", 300)?;
    lines.append(&mut b_file, "b", 100)?;
    let mut first = follower(&env, &[&a, &b], &cp, &[]);
    for _ in 0..10 {
        lines.append(&mut a_file, "a", 20)?;
        lines.append(&mut b_file, "b", 30)?;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    until("both files checkpointed to their ends", TIMEOUT, at_ends).await;
    assert_eq!(terminate(&mut first).await, Some(lines.all.len() as u64));
    let stopped = checkpoint(&cp)?;
    let paths: Vec<&String> = stopped["files"]
        .as_object()
        .map(|files| files.keys().collect())
        .unwrap_or_default();
    let name = |log: &Path| log.to_string_lossy().into_owned();
    assert_eq!(paths, [&name(&a), &name(&b)]);
    assert!(at_ends(), "{stopped}");
    for (log, prefix) in [(&a, "a"), (&b, "b")] {
        let entry = &stopped["files"][name(log)][0];
        assert_eq!(entry["line"], lines.count(prefix), "{entry}");
    }

    // Written while stopped, then after the restart: each file resumes from its own entry.
    let before = lines.all.len();
    lines.append(&mut a_file, "a", 50)?;
    lines.append(&mut b_file, "b", 10)?;
    let mut second = follower(&env, &[&a, &b], &cp, &[]);
    lines.append(&mut b_file, "b", 90)?;
    lines.append(&mut a_file, "a", 10)?;
    until(
        "both files checkpointed to their ends again",
        TIMEOUT,
        at_ends,
    )
    .await;
    let since = lines.all.len() - before;
    assert_eq!(terminate(&mut second).await, Some(since as u64));
    assert!(at_ends(), "{}", checkpoint(&cp)?);
    each_once(&env, &lines.all).await;
    Ok(())
}

/// `--start-at end` without a checkpoint: the lines a file holds when the follower starts are
/// not sent, the lines appended are (and a last line it had not finished, once finished). A
/// restart with the checkpoint present resumes from it: the lines written while it was stopped
/// are sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_at_end_skips_what_is_there_and_a_restart_resumes_from_the_checkpoint()
-> Result<(), BoxError> {
    let env = Env::start().await;
    env.stream("follow", 2).await;
    let dir = TempDir::new("follow-end");
    let log = dir.join("app.log");
    let cp = dir.join("cp.json");
    let mut file = append_to(&log)?;
    Lines::default().append(&mut file, "old", 500)?;
    let whole_lines = file.metadata()?.len();
    file.write_all(b"unfini")?;
    let ino = file.metadata()?.ino();
    let mut lines = Lines::default();

    let mut first = follower(&env, &[&log], &cp, &["--start-at", "end"]);
    // Where it starts: after the last whole line.
    until("the follower to take its position", TIMEOUT, || {
        checkpoint(&cp).is_ok_and(|c| entries(&c, &log) == [(ino, whole_lines)])
    })
    .await;
    file.write_all(b"shed\n")?;
    lines.all.push("unfinished".to_owned());
    for _ in 0..5 {
        lines.append(&mut file, "new", 20)?;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    until("the checkpoint at the end", TIMEOUT, || at_end(&cp, &log)).await;
    assert_eq!(terminate(&mut first).await, Some(lines.all.len() as u64));

    // Written while stopped: the restart (still --start-at end) reads on from the checkpoint.
    let before = lines.all.len();
    lines.append(&mut file, "stopped", 50)?;
    let mut second = follower(&env, &[&log], &cp, &["--start-at", "end"]);
    lines.append(&mut file, "restarted", 50)?;
    until("the checkpoint at the end again", TIMEOUT, || {
        at_end(&cp, &log)
    })
    .await;
    let since = lines.all.len() - before;
    assert_eq!(terminate(&mut second).await, Some(since as u64));
    each_once(&env, &lines.all).await;
    Ok(())
}

/// A file of which no line was resolved (its checkpoint entry at offset 0: here it held only an
/// unfinished line when the follower stopped), copytruncated while the follower is stopped: after
/// the restart its lines are read from the copy, and the new lines from the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copytruncate_before_a_line_was_resolved_is_read_from_the_copy() -> Result<(), BoxError> {
    let env = Env::start().await;
    env.stream("follow", 2).await;
    let dir = TempDir::new("follow-copy");
    let log = dir.join("app.log");
    let cp = dir.join("cp.json");
    let mut file = append_to(&log)?;
    file.write_all(b"unfini")?;
    let ino = file.metadata()?.ino();
    let mut first = follower(&env, &[&log], &cp, &[]);
    until("the follower to read the unfinished line", TIMEOUT, || {
        checkpoint(&cp).is_ok_and(|c| {
            entries(&c, &log) == [(ino, 0)]
                && c["files"][log.to_string_lossy().as_ref()][0]["fingerprint"]["len"] == 6
        })
    })
    .await;
    assert_eq!(terminate(&mut first).await, Some(0));

    // Stopped: the line is finished and more are written; then logrotate's copytruncate, and
    // the writer goes on in the truncated file.
    let mut lines = Lines::default();
    file.write_all(b"shed\n")?;
    lines.all.push("unfinished".to_owned());
    lines.append(&mut file, "before", 100)?;
    std::fs::copy(&log, dir.join("app.log.1"))?;
    file.set_len(0)?;
    lines.append(&mut file, "after", 100)?;

    let mut second = follower(&env, &[&log], &cp, &[]);
    until("the checkpoint at the end", TIMEOUT, || at_end(&cp, &log)).await;
    let sent = terminate(&mut second).await;
    assert_eq!(sent, Some(lines.all.len() as u64), "{}", second.stderr());
    each_once(&env, &lines.all).await;
    Ok(())
}
