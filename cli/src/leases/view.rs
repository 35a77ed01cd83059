//! The lease table as rows: each lease with its state and, when its shard is not being
//! processed, why. Pure: decisions over leases as read, rendered as a table or JSON.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kinesis_consumer::{
    Checkpoint, Lease,
    lineage::{Readiness, readiness},
};

/// What was seen of a lease's renewals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Renewal {
    /// One read: a single read cannot tell a live owner from a dead one.
    NotObserved,
    /// The counter rose by this much while watched.
    Renewed(u64),
    /// The counter did not move for this long.
    Unchanged(Duration),
}

/// A lease's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Owned (and renewing, if it was watched).
    Processing,
    /// Owned, but its counter did not move while watched: the owner may be dead or paused.
    Expired { owner: String, watched: Duration },
    /// A graceful handoff is under way.
    Handoff { from: String, to: String },
    /// No owner: a worker takes it at its next scan.
    Free,
    /// Some parents have not reached `SHARD_END`.
    Blocked { waiting_on: Vec<String> },
    /// The shard was processed to its end.
    Finished,
}

impl Status {
    /// One word for the table's STATE column.
    pub(crate) fn word(&self) -> &'static str {
        match self {
            Status::Processing => "processing",
            Status::Expired { .. } => "expired?",
            Status::Handoff { .. } => "handoff",
            Status::Free => "free",
            Status::Blocked { .. } => "blocked",
            Status::Finished => "finished",
        }
    }

    /// Why the shard is not being processed, if it is not.
    pub(crate) fn why(&self) -> Option<String> {
        match self {
            Status::Processing => None,
            Status::Expired { owner, watched } => Some(format!(
                "owner {owner} did not renew in {:.1} s: expired? (dead or paused; other workers \
                 take it once it has not moved for their failover time)",
                watched.as_secs_f64()
            )),
            Status::Handoff { from, to } => Some(format!(
                "handoff pending: {from} is to checkpoint and release it, then {to} takes it"
            )),
            Status::Free => Some("no owner: the next worker to scan takes it".to_owned()),
            Status::Blocked { waiting_on } => {
                Some(format!("parents not finished: {}", waiting_on.join(", ")))
            }
            Status::Finished => Some("finished (SHARD_END)".to_owned()),
        }
    }
}

/// One lease as shown.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub(crate) lease: Lease,
    pub(crate) renewal: Renewal,
    pub(crate) status: Status,
}

/// The state of one lease, given every lease of the table by key.
pub(crate) fn status(lease: &Lease, renewal: &Renewal, all: &HashMap<&str, &Lease>) -> Status {
    if lease.is_finished() {
        return Status::Finished;
    }
    if let Readiness::Blocked { waiting_on } = readiness(lease, all) {
        return Status::Blocked { waiting_on };
    }
    if let Some(from) = &lease.checkpoint_owner {
        return Status::Handoff {
            from: from.clone(),
            to: lease.owner.clone().unwrap_or_else(|| "?".to_owned()),
        };
    }
    let Some(owner) = &lease.owner else {
        return Status::Free;
    };
    match renewal {
        Renewal::Unchanged(watched) => Status::Expired {
            owner: owner.clone(),
            watched: *watched,
        },
        Renewal::NotObserved | Renewal::Renewed(_) => Status::Processing,
    }
}

/// The rows of `now` (the last read), sorted by lease key; with `before` (an earlier read and
/// the time between the two), each lease's renewals.
pub(crate) fn rows(now: &[Lease], before: Option<(&[Lease], Duration)>) -> Vec<Row> {
    let all: HashMap<&str, &Lease> = now.iter().map(|l| (l.key.as_str(), l)).collect();
    let earlier: HashMap<&str, &Lease> = before
        .map(|(leases, _)| leases.iter().map(|l| (l.key.as_str(), l)).collect())
        .unwrap_or_default();
    let mut rows: Vec<Row> = now
        .iter()
        .map(|lease| {
            let renewal = match (before, earlier.get(lease.key.as_str())) {
                (Some((_, watched)), Some(then)) if then.counter == lease.counter => {
                    Renewal::Unchanged(watched)
                }
                (Some(_), Some(then)) => {
                    Renewal::Renewed(lease.counter.saturating_sub(then.counter))
                }
                _ => Renewal::NotObserved,
            };
            Row {
                status: status(lease, &renewal, &all),
                lease: lease.clone(),
                renewal,
            }
        })
        .collect();
    rows.sort_by(|a, b| a.lease.key.cmp(&b.lease.key));
    rows
}

fn checkpoint_text(checkpoint: &Checkpoint) -> String {
    checkpoint.to_string()
}

fn or_dash(text: Option<&str>) -> String {
    text.map_or_else(|| "-".to_owned(), str::to_owned)
}

/// The rows as an aligned table with a header, and a summary line.
pub(crate) fn table(rows: &[Row], observed: bool) -> String {
    let mut header = vec![
        "LEASE",
        "OWNER",
        "COUNTER",
        "CHECKPOINT",
        "PARENTS",
        "STATE",
    ];
    if observed {
        header.push("RENEWED");
    }
    header.push("WHY");
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for row in rows {
        let lease = &row.lease;
        let parents: Vec<&str> = lease.parent_shard_ids.iter().map(String::as_str).collect();
        let mut line = vec![
            lease.key.clone(),
            or_dash(lease.owner.as_deref()),
            lease.counter.to_string(),
            checkpoint_text(&lease.checkpoint),
            if parents.is_empty() {
                "-".to_owned()
            } else {
                parents.join(",")
            },
            row.status.word().to_owned(),
        ];
        if observed {
            line.push(match row.renewal {
                Renewal::Renewed(n) => format!("+{n}"),
                Renewal::Unchanged(_) => "no".to_owned(),
                Renewal::NotObserved => "-".to_owned(),
            });
        }
        line.push(row.status.why().unwrap_or_else(|| "-".to_owned()));
        lines.push(line);
    }
    let columns = lines[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (c, cell) in line.iter().enumerate() {
            if c + 1 == columns {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out.push_str(&summary(rows));
    out.push('\n');
    out
}

/// "6 leases: 4 processing, 2 finished; owners: a (2), b (2)".
pub(crate) fn summary(rows: &[Row]) -> String {
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    let mut owners: BTreeMap<&str, usize> = BTreeMap::new();
    for row in rows {
        *states.entry(row.status.word()).or_default() += 1;
        if let Some(owner) = &row.lease.owner {
            *owners.entry(owner).or_default() += 1;
        }
    }
    let states: Vec<String> = states.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let mut text = format!(
        "{} lease{}",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    );
    if !states.is_empty() {
        text.push_str(&format!(": {}", states.join(", ")));
    }
    if !owners.is_empty() {
        let owners: Vec<String> = owners.iter().map(|(o, n)| format!("{o} ({n})")).collect();
        text.push_str(&format!("; owners: {}", owners.join(", ")));
    }
    text
}

/// One lease as JSON.
pub(crate) fn lease_json(lease: &Lease) -> serde_json::Value {
    serde_json::json!({
        "lease_key": lease.key,
        "owner": lease.owner,
        "counter": lease.counter,
        "checkpoint": lease.checkpoint.attribute_text(),
        "checkpoint_subsequence": lease.checkpoint.sub_sequence_number(),
        "checkpoint_owner": lease.checkpoint_owner,
        "pending_checkpoint": lease.pending_checkpoint.as_ref().map(ToString::to_string),
        "parents": lease.parent_shard_ids,
        "children": lease.child_shard_ids,
    })
}

/// The rows as one JSON document.
pub(crate) fn json(
    table_name: &str,
    observed: Option<Duration>,
    rows: &[Row],
) -> serde_json::Value {
    let leases: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            let mut value = lease_json(&row.lease);
            if let Some(object) = value.as_object_mut() {
                object.insert("state".to_owned(), row.status.word().into());
                object.insert(
                    "why".to_owned(),
                    row.status.why().map_or(serde_json::Value::Null, Into::into),
                );
                object.insert(
                    "renewals".to_owned(),
                    match row.renewal {
                        Renewal::Renewed(n) => n.into(),
                        Renewal::Unchanged(_) => 0.into(),
                        Renewal::NotObserved => serde_json::Value::Null,
                    },
                );
            }
            value
        })
        .collect();
    serde_json::json!({
        "table": table_name,
        "observed_seconds": observed.map(|d| d.as_secs_f64()),
        "leases": leases,
    })
}

#[cfg(test)]
mod tests {
    use kinesis_consumer::SequenceNumber;

    use super::*;

    fn lease(key: &str, owner: Option<&str>, counter: u64, checkpoint: Checkpoint) -> Lease {
        let mut lease = Lease::new(key, checkpoint);
        lease.owner = owner.map(str::to_owned);
        lease.counter = counter;
        lease
    }

    fn at(seq: &str, sub: u64) -> Checkpoint {
        Checkpoint::at(SequenceNumber::parse(seq).expect("digits"), sub)
    }

    fn by_key(rows: &[Row]) -> BTreeMap<String, Status> {
        rows.iter()
            .map(|r| (r.lease.key.clone(), r.status.clone()))
            .collect()
    }

    #[test]
    fn why_a_shard_is_not_processed() {
        let parent = lease("s0", None, 9, Checkpoint::ShardEnd);
        let open_parent = lease("s1", Some("a"), 4, at("100", 0));
        let child_of_finished =
            lease("s2", Some("b"), 3, Checkpoint::TrimHorizon).with_parents(["s0"]);
        let merge = lease("s3", None, 0, Checkpoint::TrimHorizon).with_parents(["s0", "s1"]);
        let free = lease("s4", None, 7, at("200", 3));
        let mut handoff = lease("s5", Some("b"), 5, at("300", 0));
        handoff.checkpoint_owner = Some("a".to_owned());
        let orphan = lease("s6", Some("a"), 2, Checkpoint::Latest).with_parents(["gone"]);
        let leases = [
            parent,
            open_parent,
            child_of_finished,
            merge,
            free,
            handoff,
            orphan,
        ];
        let statuses = by_key(&rows(&leases, None));
        assert_eq!(statuses["s0"], Status::Finished);
        assert_eq!(statuses["s1"], Status::Processing);
        assert_eq!(statuses["s2"], Status::Processing, "its parent finished");
        assert_eq!(
            statuses["s3"],
            Status::Blocked {
                waiting_on: vec!["s1".to_owned()]
            },
            "a merge waits for both parents"
        );
        assert_eq!(statuses["s4"], Status::Free);
        assert_eq!(
            statuses["s5"],
            Status::Handoff {
                from: "a".to_owned(),
                to: "b".to_owned()
            }
        );
        assert_eq!(
            statuses["s6"],
            Status::Processing,
            "a parent without a lease does not block"
        );
    }

    #[test]
    fn expiry_is_said_only_from_observation() {
        let watched = Duration::from_secs(10);
        let before = [
            lease("live", Some("a"), 10, Checkpoint::TrimHorizon),
            lease("dead", Some("b"), 20, Checkpoint::TrimHorizon),
            lease("free", None, 5, Checkpoint::TrimHorizon),
        ];
        let mut now = before.to_vec();
        now[0].counter = 13;
        now.push(lease("new", Some("a"), 1, Checkpoint::TrimHorizon));
        // One read: nothing can be said of renewals.
        let single = rows(&before, None);
        assert!(single.iter().all(|r| r.renewal == Renewal::NotObserved));
        assert_eq!(by_key(&single)["dead"], Status::Processing);
        // Two reads 10 s apart.
        let observed = rows(&now, Some((&before, watched)));
        let statuses = by_key(&observed);
        assert_eq!(statuses["live"], Status::Processing);
        assert_eq!(
            statuses["dead"],
            Status::Expired {
                owner: "b".to_owned(),
                watched
            }
        );
        assert_eq!(
            statuses["free"],
            Status::Free,
            "no owner: nothing to expire"
        );
        assert_eq!(
            statuses["new"],
            Status::Processing,
            "not seen in the first read"
        );
        let renewals: BTreeMap<&str, &Renewal> = observed
            .iter()
            .map(|r| (r.lease.key.as_str(), &r.renewal))
            .collect();
        assert_eq!(renewals["live"], &Renewal::Renewed(3));
        assert_eq!(renewals["dead"], &Renewal::Unchanged(watched));
        assert_eq!(renewals["new"], &Renewal::NotObserved);
    }

    #[test]
    fn the_table_is_aligned_with_a_summary() {
        let leases = [
            lease("shardId-000000000001", Some("worker-a"), 12, at("4959", 2)),
            lease("shardId-000000000000", None, 3, Checkpoint::ShardEnd),
        ];
        let text = table(&rows(&leases, None), false);
        assert_eq!(
            text,
            "LEASE                 OWNER     COUNTER  CHECKPOINT  PARENTS  STATE       WHY\n\
             shardId-000000000000  -         3        SHARD_END   -        finished    finished (SHARD_END)\n\
             shardId-000000000001  worker-a  12       4959/2      -        processing  -\n\
             2 leases: 1 finished, 1 processing; owners: worker-a (1)\n"
        );
        let observed = table(
            &rows(&leases, Some((&leases, Duration::from_secs(5)))),
            true,
        );
        assert!(observed.starts_with("LEASE"), "{observed}");
        assert!(
            observed
                .lines()
                .next()
                .is_some_and(|h| h.contains("RENEWED"))
        );
        assert!(observed.contains("expired?"), "{observed}");
    }

    #[test]
    fn json_carries_the_same_fields() {
        let mut handing = lease("s1", Some("b"), 12, at("4959", 2)).with_parents(["s0"]);
        handing.checkpoint_owner = Some("a".to_owned());
        let value = json("app", Some(Duration::from_secs(2)), &rows(&[handing], None));
        assert_eq!(value["table"], "app");
        assert_eq!(value["observed_seconds"], 2.0);
        let lease = &value["leases"][0];
        assert_eq!(lease["lease_key"], "s1");
        assert_eq!(lease["owner"], "b");
        assert_eq!(lease["counter"], 12);
        assert_eq!(lease["checkpoint"], "4959");
        assert_eq!(lease["checkpoint_subsequence"], 2);
        assert_eq!(lease["checkpoint_owner"], "a");
        assert_eq!(lease["parents"], serde_json::json!(["s0"]));
        assert_eq!(lease["state"], "handoff");
        assert!(
            lease["why"]
                .as_str()
                .is_some_and(|w| w.starts_with("handoff pending"))
        );
        assert!(lease["renewals"].is_null());
    }
}
