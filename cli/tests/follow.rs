//! `kinesis produce --follow` as a process: a log written while it runs, rotated by rename and
//! create, the follower killed with SIGKILL and restarted, rotated again by copytruncate, a
//! partial line left unfinished for a while; then every line must be in the stream, and the only
//! duplicates those the documented semantics allow.

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    fs::{File, OpenOptions},
    io::Write,
    os::unix::fs::MetadataExt,
    path::Path,
    time::{Duration, Instant},
};

use common::{BoxError, Env, Running, TIMEOUT, TempDir, read_back, until};

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

fn follower(env: &Env, log: &Path, cp: &Path) -> Running {
    let mut command = env.command(&["-q", "produce", "--stream", "follow", "--follow"]);
    command
        .arg(log)
        .arg("--checkpoint")
        .arg(cp)
        .args(["--max-outstanding", &MAX_OUTSTANDING.to_string()]);
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
    let mut first = follower(&env, &path, &cp);
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
    let mut second = follower(&env, &path, &cp);
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
    gen2.write_all(&text.as_bytes()[..4])?;
    let waits_before_it = || {
        checkpoint(&cp)
            .map(|c| {
                entries(&c, &path) == [(gen2.metadata().map(|m| m.ino()).unwrap_or(0), before)]
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
