//! The lease table through the real SDK on both DynamoDB stand-ins: creation, every fenced write
//! and its refusal, the graceful handoff, items written by the Java KCL (and items that are not
//! leases), and paged scans.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use bytes::Bytes;
use kinesis_consumer::lease_table::{
    AfterRefusal, HOLDER_WRITE_ATTEMPTS, HolderWrite, after_refusal,
};
use kinesis_consumer::simulation::TableModel;
use kinesis_consumer::{BillingMode, Checkpoint, Error, Lease, LeaseTable, SequenceNumber};
use kinesis_integration_tests::fixtures::unique_name;
use kinesis_integration_tests::{DynamoBackend, DynamoDb};

const WAIT: Duration = Duration::from_secs(60);

fn seq(text: &str) -> SequenceNumber {
    SequenceNumber::parse(text).unwrap()
}

/// The lease as the table holds it after a refused write (the write's answer carries it).
fn refused(result: Result<Lease, Error>) -> Option<Lease> {
    match result {
        Err(Error::LeaseLost { current, .. }) => current.map(|l| *l),
        other => panic!("expected the write to be refused, got {other:?}"),
    }
}

async fn table(db: &DynamoDb) -> LeaseTable {
    let table = LeaseTable::new(db.client(), unique_name("leases"));
    table.ensure(BillingMode::OnDemand, WAIT).await.unwrap();
    // A second worker starting finds it and does nothing.
    table.ensure(BillingMode::OnDemand, WAIT).await.unwrap();
    table
}

async fn fenced_writes(db: &DynamoDb) {
    let table = table(db).await;
    let shard = "shardId-000000000001";
    let fresh = Lease::new(shard, Checkpoint::TrimHorizon).with_parents(["shardId-000000000000"]);
    assert!(table.create(&fresh).await.unwrap());
    assert!(!table.create(&fresh).await.unwrap(), "created twice");

    // Take: the free lease goes to a; b, still holding the old observation, is refused.
    let a = table.take(&fresh, "a").await.unwrap();
    assert_eq!((a.owner.as_deref(), a.counter), (Some("a"), 1));
    assert_eq!(a.owner_switches_since_checkpoint, 1);
    let now = refused(table.take(&fresh, "b").await).unwrap();
    assert_eq!(now.owner.as_deref(), Some("a"));

    // Renew raises the counter; a stale counter is refused; a non-owner is refused.
    let a = table.renew(&a, "a").await.unwrap();
    assert_eq!(a.counter, 2);
    let mut stale = a.clone();
    stale.counter = 1;
    assert_eq!(refused(table.renew(&stale, "a").await).unwrap().counter, 2);
    refused(table.renew(&a, "b").await);

    // Checkpoint, prepared checkpoint with state, and what a non-owner cannot do.
    let a = table
        .prepare_checkpoint(
            &a,
            "a",
            &Checkpoint::at(seq("100"), 2),
            Some(&Bytes::from_static(b"app")),
        )
        .await
        .unwrap();
    assert_eq!(a.pending_checkpoint, Some(Checkpoint::at(seq("100"), 2)));
    assert_eq!(a.pending_checkpoint_state.as_deref(), Some(&b"app"[..]));
    let a = table
        .checkpoint(&a, "a", &Checkpoint::at(seq("100"), 2))
        .await
        .unwrap();
    assert_eq!(a.checkpoint, Checkpoint::at(seq("100"), 2));
    assert_eq!(
        (
            a.pending_checkpoint.clone(),
            a.pending_checkpoint_state.clone()
        ),
        (None, None)
    );
    assert_eq!((a.counter, a.owner_switches_since_checkpoint), (4, 0));
    refused(
        table
            .checkpoint(&a, "b", &Checkpoint::at(seq("200"), 0))
            .await,
    );
    // A stale copy of the holder's own (a write of a's landed, its answer lost): the refusal
    // names a holder still, with a higher counter, and the checkpoint is made again from the
    // item; the same checkpoint again is answered without a write; one behind it is invalid.
    // A renewal's refusal is left to the caller (the worker's coordination).
    let mut stale = a.clone();
    stale.counter = 3;
    let a = table
        .checkpoint(&stale, "a", &Checkpoint::at(seq("120"), 0))
        .await
        .unwrap();
    assert_eq!(
        (a.counter, a.checkpoint.clone()),
        (5, Checkpoint::at(seq("120"), 0))
    );
    let again = table
        .checkpoint(&stale, "a", &Checkpoint::at(seq("120"), 0))
        .await
        .unwrap();
    assert_eq!(again, a, "answered from the item, nothing written");
    assert!(
        matches!(
            table
                .checkpoint(&stale, "a", &Checkpoint::at(seq("110"), 0))
                .await,
            Err(Error::InvalidCheckpoint { .. })
        ),
        "behind the worker's own later checkpoint"
    );
    assert_eq!(refused(table.renew(&stale, "a").await).unwrap().counter, 5);
    assert_eq!(table.get(shard).await.unwrap(), Some(a.clone()));

    // Graceful handoff a -> b: b is named owner, a may still renew and checkpoint until it
    // releases; b may not checkpoint meanwhile.
    let handing = table.hand_off(&a, "b").await.unwrap();
    assert_eq!(handing.owner.as_deref(), Some("b"));
    assert_eq!(handing.checkpoint_owner.as_deref(), Some("a"));
    assert_eq!(
        handing.counter, a.counter,
        "a handoff leaves the counter alone"
    );
    refused(table.hand_off(&handing, "c").await);
    let a = table.renew(&a, "a").await.unwrap();
    assert!(
        a.in_handoff(),
        "the renewal's answer tells a about the handoff"
    );
    refused(
        table
            .checkpoint(&a, "b", &Checkpoint::at(seq("150"), 0))
            .await,
    );
    let a = table
        .checkpoint(&a, "a", &Checkpoint::at(seq("150"), 0))
        .await
        .unwrap();
    let b = table.release(&a, "a").await.unwrap();
    assert_eq!(
        (b.owner.as_deref(), b.checkpoint_owner.clone()),
        (Some("b"), None)
    );
    assert_eq!(b.checkpoint, Checkpoint::at(seq("150"), 0));
    refused(table.renew(&a, "a").await);

    // b renews as the owner now, then releases on shutdown; c takes the free lease at once.
    let b = table.renew(&b, "b").await.unwrap();
    let free = table.release(&b, "b").await.unwrap();
    assert_eq!(free.owner, None);
    let c = table.take(&free, "c").await.unwrap();
    assert_eq!(c.owner.as_deref(), Some("c"));

    // Shard end: children, SHARD_END, then the finished lease may be deleted.
    assert!(
        !table.delete_finished(shard).await.unwrap(),
        "not finished yet"
    );
    let children = BTreeSet::from([
        "shardId-000000000003".to_owned(),
        "shardId-000000000004".to_owned(),
    ]);
    let c = table.set_children(&c, "c", &children).await.unwrap();
    assert_eq!(c.child_shard_ids, children);
    let c = table
        .checkpoint(&c, "c", &Checkpoint::ShardEnd)
        .await
        .unwrap();
    assert!(c.is_finished());
    assert_eq!(table.get(shard).await.unwrap(), Some(c));
    assert!(table.delete_finished(shard).await.unwrap());
    assert_eq!(table.get(shard).await.unwrap(), None);
}

#[tokio::test]
async fn fenced_writes_on_dynamodb_local() {
    fenced_writes(&DynamoDb::start(DynamoBackend::SharedLocal).await.unwrap()).await;
}

#[tokio::test]
async fn fenced_writes_on_dynoxide() {
    fenced_writes(&DynamoDb::start(DynamoBackend::Dynoxide).await.unwrap()).await;
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: &str) -> AttributeValue {
    AttributeValue::N(v.to_owned())
}

/// Items exactly as the Java KCL 3.5 writes them, items of its other kinds, and broken ones.
async fn kcl_items(db: &DynamoDb) {
    let table = table(db).await;
    let client = db.client();
    let put = |item: Vec<(&str, AttributeValue)>| {
        let item: HashMap<String, AttributeValue> =
            item.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        client
            .put_item()
            .table_name(table.name())
            .set_item(Some(item))
            .send()
    };
    put(vec![
        ("leaseKey", s("shardId-000000000000")),
        ("leaseOwner", s("java-worker")),
        ("leaseCounter", n("17")),
        ("ownerSwitchesSinceCheckpoint", n("0")),
        (
            "checkpoint",
            s("49590338271490256608559692538361571095921575989136588898"),
        ),
        ("checkpointSubSequenceNumber", n("4")),
        ("startingHashKey", s("0")),
        (
            "endingHashKey",
            s("340282366920938463463374607431768211455"),
        ),
        ("throughputKBps", n("3.5")),
        ("entityType", s("LEASE")),
    ])
    .await
    .unwrap();
    put(vec![
        ("leaseKey", s("shardId-000000000001")),
        ("leaseCounter", n("2")),
        ("ownerSwitchesSinceCheckpoint", n("0")),
        ("checkpoint", s("TRIM_HORIZON")),
        ("checkpointSubSequenceNumber", n("0")),
        (
            "parentShardId",
            AttributeValue::Ss(vec!["shardId-000000000000".to_owned()]),
        ),
    ])
    .await
    .unwrap();
    put(vec![("leaseKey", s("Leader")), ("entityType", s("LEADER"))])
        .await
        .unwrap();
    put(vec![
        ("leaseKey", s("worker-x")),
        ("entityType", s("WORKER_METRIC_STATS")),
    ])
    .await
    .unwrap();
    put(vec![
        ("leaseKey", s("broken")),
        ("leaseCounter", s("not a number")),
    ])
    .await
    .unwrap();

    let scan = table.scan().await.unwrap();
    let mut keys: Vec<&str> = scan.leases.iter().map(|l| l.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["shardId-000000000000", "shardId-000000000001"]);
    assert_eq!(scan.other_items, 2);
    assert_eq!(scan.unreadable.len(), 1);
    assert_eq!(scan.unreadable[0].lease_key.as_deref(), Some("broken"));

    // Our worker takes over the Java worker's lease (say it expired) and checkpoints: the KCL's
    // own attributes survive, and the checkpoint is where the Java worker left it.
    let java = scan
        .leases
        .iter()
        .find(|l| l.key == "shardId-000000000000")
        .unwrap();
    assert_eq!(
        java.checkpoint,
        Checkpoint::at(
            seq("49590338271490256608559692538361571095921575989136588898"),
            4
        )
    );
    let ours = table.take(java, "rust-worker").await.unwrap();
    assert_eq!(ours.owner_switches_since_checkpoint, 1);
    table
        .checkpoint(
            &ours,
            "rust-worker",
            &Checkpoint::at(
                seq("49590338271490256608559692538361571095921575989136588899"),
                0,
            ),
        )
        .await
        .unwrap();
    let raw = client
        .get_item()
        .table_name(table.name())
        .key("leaseKey", s("shardId-000000000000"))
        .send()
        .await
        .unwrap();
    let raw = raw.item().unwrap();
    assert_eq!(raw["throughputKBps"], n("3.5"));
    assert_eq!(raw["leaseOwner"], s("rust-worker"));
    assert_eq!(
        raw["checkpoint"],
        s("49590338271490256608559692538361571095921575989136588899")
    );
    assert_eq!(raw["checkpointSubSequenceNumber"], n("0"));
    assert_eq!(raw["ownerSwitchesSinceCheckpoint"], n("0"));
    assert_eq!(raw["leaseCounter"], n("19"));
}

#[tokio::test]
async fn kcl_items_on_dynamodb_local() {
    kcl_items(&DynamoDb::start(DynamoBackend::SharedLocal).await.unwrap()).await;
}

#[tokio::test]
async fn kcl_items_on_dynoxide() {
    kcl_items(&DynamoDb::start(DynamoBackend::Dynoxide).await.unwrap()).await;
}

#[tokio::test]
async fn scans_page_through_large_tables_and_provisioned_tables_are_created() {
    let db = DynamoDb::start(DynamoBackend::SharedLocal).await.unwrap();
    let table =
        LeaseTable::new(db.client(), unique_name("leases-provisioned")).with_scan_page_size(7);
    table
        .ensure(BillingMode::Provisioned { read: 5, write: 5 }, WAIT)
        .await
        .unwrap();
    let described = db
        .client()
        .describe_table()
        .table_name(table.name())
        .send()
        .await
        .unwrap();
    let throughput = described.table().unwrap().provisioned_throughput().unwrap();
    assert_eq!(throughput.read_capacity_units(), Some(5));
    for i in 0..50 {
        let lease = Lease::new(format!("shardId-{i:012}"), Checkpoint::Latest);
        assert!(table.create(&lease).await.unwrap());
    }
    let scan = table.scan().await.unwrap();
    let keys: BTreeSet<String> = scan.leases.into_iter().map(|l| l.key).collect();
    assert_eq!(keys.len(), 50);
}

/// A lease's outcome as both tables report it: written (the new item), refused (the item as it
/// was), or created / deleted.
#[derive(Debug, PartialEq)]
enum Answer {
    Written(Lease),
    Refused(Option<Lease>),
    Done(bool),
    /// A checkpoint behind the writer's own later one (`Error::InvalidCheckpoint`).
    Behind,
}

fn from_table(result: Result<Lease, Error>) -> Answer {
    match result {
        Ok(lease) => Answer::Written(lease),
        Err(Error::LeaseLost { current, .. }) => Answer::Refused(current.map(|l| *l)),
        Err(Error::InvalidCheckpoint { .. }) => Answer::Behind,
        Err(other) => panic!("the call failed: {other}"),
    }
}

/// The model's answer to a holder write (`send`) as `LeaseTable` makes it: made again from the
/// refused item while the refusal comes only from the writer's own earlier write, as
/// `after_refusal` decides.
fn model_holder_write(
    model: &mut TableModel,
    write: HolderWrite<'_>,
    observed: &Lease,
    me: &str,
    mut send: impl FnMut(&mut TableModel, &Lease) -> Result<Lease, Option<Box<Lease>>>,
) -> Answer {
    let mut base = observed.clone();
    let mut attempts = 1;
    loop {
        let current = match send(model, &base) {
            Ok(lease) => return Answer::Written(lease),
            Err(None) => return Answer::Refused(None),
            Err(Some(current)) => *current,
        };
        match after_refusal(write, &base, &current, me) {
            AfterRefusal::Again if attempts < HOLDER_WRITE_ATTEMPTS => {
                attempts += 1;
                base = current;
            }
            AfterRefusal::Lost | AfterRefusal::Again => return Answer::Refused(Some(current)),
            AfterRefusal::Done => return Answer::Written(current),
            AfterRefusal::Behind => return Answer::Behind,
        }
    }
}

fn from_model(result: Result<Lease, Option<Box<Lease>>>) -> Answer {
    match result {
        Ok(lease) => Answer::Written(lease),
        Err(current) => Answer::Refused(current.map(|l| *l)),
    }
}

/// Random sequences of every conditional write, from up-to-date and stale observations, applied to
/// DynamoDB through `LeaseTable` and to the simulation's in-memory table: the same answer to
/// every write, and the same items after each. A checkpoint or children write refused only by
/// the writer's own earlier write is made again by `LeaseTable`, and so on the model side too
/// (`model_holder_write`); the other writes are compared one call to one call.
async fn the_simulation_table_answers_as_dynamodb(db: &DynamoDb, seed: u64, steps: usize) {
    use kinesis_consumer::lease_table::ReleaseAs;
    use rand::{Rng, SeedableRng};

    let table = table(db).await;
    let mut model = TableModel::new();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let keys = [
        "shardId-000000000000",
        "shardId-000000000001",
        "shardId-000000000002",
    ];
    let workers = ["a", "b", "c"];
    let mut seen: Vec<Lease> = Vec::new();
    let mut sequence = 100u64;
    let mut kinds = [0usize; 10];
    let mut refusals = 0;
    for step in 0..steps {
        let key = keys[rng.random_range(0..keys.len())];
        let me = workers[rng.random_range(0..workers.len())];
        let stale: Vec<&Lease> = seen.iter().filter(|l| l.key == key).collect();
        let observed = match model.get(key) {
            Some(current) if rng.random_bool(0.6) || stale.is_empty() => current.clone(),
            _ if !stale.is_empty() => stale[rng.random_range(0..stale.len())].clone(),
            _ => Lease::new(key, Checkpoint::TrimHorizon),
        };
        let op = rng.random_range(0..10);
        kinds[op] += 1;
        let (real, modelled) = match op {
            0 => {
                let lease =
                    Lease::new(key, Checkpoint::TrimHorizon).with_parents(["shardId-000000000009"]);
                (
                    Answer::Done(table.create(&lease).await.unwrap()),
                    Answer::Done(model.create(&lease)),
                )
            }
            1 => (
                from_table(table.renew(&observed, me).await),
                from_model(model.renew(&observed, me)),
            ),
            2 => (
                from_table(table.take(&observed, me).await),
                from_model(model.take(&observed, me)),
            ),
            3 => (
                from_table(table.hand_off(&observed, me).await),
                from_model(model.hand_off(&observed, me)),
            ),
            4..=6 => {
                let role = [
                    ReleaseAs::Owner,
                    ReleaseAs::PreviousOwner,
                    ReleaseAs::NewOwner,
                ][op - 4];
                (
                    from_table(table.release_as(&observed, me, role).await),
                    from_model(model.release_as(&observed, me, role)),
                )
            }
            7 => {
                sequence += rng.random_range(1..5);
                let at = if rng.random_bool(0.15) {
                    Checkpoint::ShardEnd
                } else {
                    Checkpoint::at(seq(&sequence.to_string()), rng.random_range(0..3))
                };
                (
                    from_table(table.checkpoint(&observed, me, &at).await),
                    model_holder_write(
                        &mut model,
                        HolderWrite::Checkpoint(&at),
                        &observed,
                        me,
                        |model, base| model.checkpoint(base, me, &at),
                    ),
                )
            }
            8 => {
                let children =
                    BTreeSet::from([format!("shardId-00000000001{}", rng.random_range(0..3))]);
                (
                    from_table(table.set_children(&observed, me, &children).await),
                    model_holder_write(
                        &mut model,
                        HolderWrite::SetChildren(&children),
                        &observed,
                        me,
                        |model, base| model.set_children(base, me, &children),
                    ),
                )
            }
            _ => (
                Answer::Done(table.delete_finished(key).await.unwrap()),
                Answer::Done(model.delete_finished(key)),
            ),
        };
        if matches!(modelled, Answer::Refused(_)) {
            refusals += 1;
        }
        assert_eq!(
            real, modelled,
            "step {step}: operation {op} by {me} on {observed:?}"
        );
        let mut items = table.scan().await.unwrap().leases;
        items.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(
            items,
            model.scan(),
            "step {step}: the tables differ after operation {op}"
        );
        seen.extend(items);
    }
    println!("{steps} writes (per kind {kinds:?}), {refusals} refused: the same answers and items");
    assert!(
        refusals > steps / 10 && refusals < steps * 9 / 10,
        "{refusals} refusals"
    );
}

#[tokio::test]
async fn the_simulation_table_answers_as_dynamodb_local() {
    let db = DynamoDb::start(DynamoBackend::SharedLocal).await.unwrap();
    the_simulation_table_answers_as_dynamodb(&db, 11, 400).await;
}

#[tokio::test]
async fn the_simulation_table_answers_as_dynoxide() {
    let db = DynamoDb::start(DynamoBackend::Dynoxide).await.unwrap();
    the_simulation_table_answers_as_dynamodb(&db, 12, 400).await;
}
