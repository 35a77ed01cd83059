//! A lease: one item of the lease table, in the Java KCL's schema, so that an application can
//! move between the Java KCL and this crate and keep its checkpoints.
//!
//! Unstable: public only with the feature `unstable-internals` (for tests outside the crate), with
//! no stability promise.
//!
//! This module only converts between [`Lease`] and DynamoDB items; the conditional writes are in
//! `lease_table`.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_dynamodb::{primitives::Blob, types::AttributeValue};
use bytes::Bytes;
use kinesis_aggregation::HashKeyRange;

use crate::checkpoint::{Checkpoint, CheckpointError};

/// The attribute names of a lease item, as the Java KCL writes them.
pub(crate) mod attr {
    pub(crate) const LEASE_KEY: &str = "leaseKey";
    pub(crate) const LEASE_OWNER: &str = "leaseOwner";
    pub(crate) const LEASE_COUNTER: &str = "leaseCounter";
    pub(crate) const OWNER_SWITCHES: &str = "ownerSwitchesSinceCheckpoint";
    pub(crate) const CHECKPOINT: &str = "checkpoint";
    pub(crate) const CHECKPOINT_SUB: &str = "checkpointSubSequenceNumber";
    pub(crate) const PENDING_CHECKPOINT: &str = "pendingCheckpoint";
    pub(crate) const PENDING_CHECKPOINT_SUB: &str = "pendingCheckpointSubSequenceNumber";
    pub(crate) const PENDING_CHECKPOINT_STATE: &str = "pendingCheckpointState";
    pub(crate) const PARENT_SHARD_IDS: &str = "parentShardId";
    pub(crate) const CHILD_SHARD_IDS: &str = "childShardIds";
    pub(crate) const STARTING_HASH_KEY: &str = "startingHashKey";
    pub(crate) const ENDING_HASH_KEY: &str = "endingHashKey";
    pub(crate) const CHECKPOINT_OWNER: &str = "checkpointOwner";
    pub(crate) const ENTITY_TYPE: &str = "entityType";
}

/// The `entityType` of lease items in a table that also holds other kinds of items (KCL 3.5).
const LEASE_ENTITY: &str = "LEASE";

/// One shard's lease.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// `leaseKey`: the shard id.
    pub key: String,
    /// `leaseOwner`: the worker holding the lease; `None` when it is free to take.
    pub owner: Option<String>,
    /// `leaseCounter`: raised by every renewal, take and checkpoint; conditional writes are fenced
    /// by it, and a value that stops changing is how other workers see that the owner is gone.
    pub counter: u64,
    /// `checkpoint` and `checkpointSubSequenceNumber`.
    pub checkpoint: Checkpoint,
    /// `pendingCheckpoint` and `pendingCheckpointSubSequenceNumber`: a prepared (two-phase)
    /// checkpoint.
    pub pending_checkpoint: Option<Checkpoint>,
    /// `pendingCheckpointState`: the application's bytes saved with the prepared checkpoint.
    pub pending_checkpoint_state: Option<Bytes>,
    /// `ownerSwitchesSinceCheckpoint`.
    pub owner_switches_since_checkpoint: u64,
    /// `parentShardId` (a string set despite its name): the shards this one was split or merged
    /// from.
    pub parent_shard_ids: BTreeSet<String>,
    /// `childShardIds`: written when the shard ends.
    pub child_shard_ids: BTreeSet<String>,
    /// `startingHashKey` and `endingHashKey`, when known.
    pub hash_key_range: Option<HashKeyRange>,
    /// `checkpointOwner`: during a graceful handoff, the previous owner, which may still
    /// checkpoint until it releases the lease.
    pub checkpoint_owner: Option<String>,
}

impl Lease {
    /// A new, unowned lease for a shard, starting at `checkpoint`.
    pub fn new(key: impl Into<String>, checkpoint: Checkpoint) -> Self {
        Lease {
            key: key.into(),
            owner: None,
            counter: 0,
            checkpoint,
            pending_checkpoint: None,
            pending_checkpoint_state: None,
            owner_switches_since_checkpoint: 0,
            parent_shard_ids: BTreeSet::new(),
            child_shard_ids: BTreeSet::new(),
            hash_key_range: None,
            checkpoint_owner: None,
        }
    }

    /// With these parents.
    #[must_use]
    pub fn with_parents<I, S>(mut self, parents: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.parent_shard_ids = parents.into_iter().map(Into::into).collect();
        self
    }

    /// With this hash-key range.
    #[must_use]
    pub fn with_hash_key_range(mut self, range: HashKeyRange) -> Self {
        self.hash_key_range = Some(range);
        self
    }

    /// Whether the shard was processed to its end.
    pub fn is_finished(&self) -> bool {
        self.checkpoint == Checkpoint::ShardEnd
    }

    /// Whether a graceful handoff is under way (the previous owner has not released yet).
    pub fn in_handoff(&self) -> bool {
        self.checkpoint_owner.is_some()
    }

    /// Whether `me` may write the lease as its holder (renew, checkpoint): the condition of
    /// every holder write, less the counter. `me` is its owner with no handoff under way, or the
    /// previous owner of a handoff under way.
    pub(crate) fn held_by(&self, me: &str) -> bool {
        match &self.checkpoint_owner {
            Some(previous) => previous == me,
            None => self.owner.as_deref() == Some(me),
        }
    }

    /// Whether a holder write of `me` from `base` was refused only because an earlier write of
    /// `me` itself raised the counter after `me` had stopped waiting for its answer. That
    /// earlier write may be a call that timed out, or a request the SDK sent again after its
    /// connection dropped. `self` is the item as the refusal returned it: `me` still holds it,
    /// with a higher counter.
    ///
    /// No other worker's write leaves a lease held by `me` with a raised counter while `me`
    /// trusts it:
    /// - a take names the taker as owner and clears any handoff;
    /// - a release removes its holder;
    /// - an operator's reset removes the owner;
    /// - a handoff completed by its previous owner leaves the lease to the worker that asked
    ///   for it, which does not run it while asking.
    ///
    /// So the write can be made again from `self`, and the lease was not lost.
    pub(crate) fn raised_by_own_write(&self, base: &Lease, me: &str) -> bool {
        self.key == base.key && self.counter > base.counter && self.held_by(me)
    }

    /// The whole item, as the Java KCL writes a new lease. Absent values are omitted, as the KCL
    /// does (DynamoDB has no empty sets).
    pub(crate) fn to_item(&self) -> HashMap<String, AttributeValue> {
        let mut item = HashMap::new();
        item.insert(attr::LEASE_KEY.to_owned(), s(&self.key));
        // KCL 3.5 marks every lease so; earlier readers ignore the attribute.
        item.insert(attr::ENTITY_TYPE.to_owned(), s(LEASE_ENTITY));
        if let Some(owner) = &self.owner {
            item.insert(attr::LEASE_OWNER.to_owned(), s(owner));
        }
        item.insert(attr::LEASE_COUNTER.to_owned(), n(self.counter));
        item.insert(
            attr::OWNER_SWITCHES.to_owned(),
            n(self.owner_switches_since_checkpoint),
        );
        item.insert(
            attr::CHECKPOINT.to_owned(),
            s(self.checkpoint.attribute_text()),
        );
        item.insert(
            attr::CHECKPOINT_SUB.to_owned(),
            n(self.checkpoint.sub_sequence_number()),
        );
        if let Some(pending) = &self.pending_checkpoint {
            item.insert(
                attr::PENDING_CHECKPOINT.to_owned(),
                s(pending.attribute_text()),
            );
            item.insert(
                attr::PENDING_CHECKPOINT_SUB.to_owned(),
                n(pending.sub_sequence_number()),
            );
        }
        if let Some(state) = &self.pending_checkpoint_state {
            item.insert(
                attr::PENDING_CHECKPOINT_STATE.to_owned(),
                AttributeValue::B(Blob::new(state.to_vec())),
            );
        }
        if let Some(set) = string_set(&self.parent_shard_ids) {
            item.insert(attr::PARENT_SHARD_IDS.to_owned(), set);
        }
        if let Some(set) = string_set(&self.child_shard_ids) {
            item.insert(attr::CHILD_SHARD_IDS.to_owned(), set);
        }
        if let Some(range) = &self.hash_key_range {
            item.insert(
                attr::STARTING_HASH_KEY.to_owned(),
                s(&range.start().to_string()),
            );
            item.insert(
                attr::ENDING_HASH_KEY.to_owned(),
                s(&range.end().to_string()),
            );
        }
        if let Some(owner) = &self.checkpoint_owner {
            item.insert(attr::CHECKPOINT_OWNER.to_owned(), s(owner));
        }
        item
    }

    /// Reads an item of the lease table.
    ///
    /// Attributes this crate does not use (`throughputKBps`, ...) are ignored here and left alone
    /// in the table: every write after creation is an update of named attributes.
    pub(crate) fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Item, ItemError> {
        let key = match item.get(attr::LEASE_KEY) {
            Some(AttributeValue::S(key)) if !key.is_empty() => key.clone(),
            Some(_) => {
                return Err(ItemError::bad(
                    None,
                    attr::LEASE_KEY,
                    "not a non-empty string",
                ));
            }
            None => return Err(ItemError::bad(None, attr::LEASE_KEY, "missing")),
        };
        let at = Some(key.as_str());
        if key.contains(':') {
            // `account:stream:creationEpoch:shardId`: a multi-stream application's table.
            return Ok(Item::MultiStream { key });
        }
        if let Some(entity) = item.get(attr::ENTITY_TYPE) {
            match entity {
                AttributeValue::S(kind) if kind == LEASE_ENTITY => {}
                AttributeValue::S(kind) => {
                    return Ok(Item::Other {
                        key,
                        entity_type: kind.clone(),
                    });
                }
                _ => return Err(ItemError::bad(at, attr::ENTITY_TYPE, "not a string")),
            }
        }
        let checkpoint_text = get_s(item, attr::CHECKPOINT, at)?
            .ok_or_else(|| ItemError::bad(at, attr::CHECKPOINT, "missing"))?;
        let checkpoint_sub = get_n(item, attr::CHECKPOINT_SUB, at)?.unwrap_or(0);
        let checkpoint = Checkpoint::from_attributes(checkpoint_text, checkpoint_sub)
            .map_err(|e| ItemError::checkpoint(at, attr::CHECKPOINT, e))?;
        let pending_checkpoint = match get_s(item, attr::PENDING_CHECKPOINT, at)? {
            Some(text) => {
                let sub = get_n(item, attr::PENDING_CHECKPOINT_SUB, at)?.unwrap_or(0);
                Some(
                    Checkpoint::from_attributes(text, sub)
                        .map_err(|e| ItemError::checkpoint(at, attr::PENDING_CHECKPOINT, e))?,
                )
            }
            None => None,
        };
        let pending_checkpoint_state = match item.get(attr::PENDING_CHECKPOINT_STATE) {
            Some(AttributeValue::B(blob)) => Some(Bytes::copy_from_slice(blob.as_ref())),
            Some(_) => {
                return Err(ItemError::bad(
                    at,
                    attr::PENDING_CHECKPOINT_STATE,
                    "not binary",
                ));
            }
            None => None,
        };
        let hash_key_range = match (
            get_s(item, attr::STARTING_HASH_KEY, at)?,
            get_s(item, attr::ENDING_HASH_KEY, at)?,
        ) {
            (Some(start), Some(end)) => Some(
                HashKeyRange::parse(start, end)
                    .map_err(|e| ItemError::bad(at, attr::STARTING_HASH_KEY, &e.to_string()))?,
            ),
            (None, None) => None,
            _ => {
                return Err(ItemError::bad(
                    at,
                    attr::STARTING_HASH_KEY,
                    "only one end of the hash-key range is present",
                ));
            }
        };
        Ok(Item::Lease(Lease {
            owner: get_s(item, attr::LEASE_OWNER, at)?.map(str::to_owned),
            counter: get_n(item, attr::LEASE_COUNTER, at)?
                .ok_or_else(|| ItemError::bad(at, attr::LEASE_COUNTER, "missing"))?,
            checkpoint,
            pending_checkpoint,
            pending_checkpoint_state,
            owner_switches_since_checkpoint: get_n(item, attr::OWNER_SWITCHES, at)?.unwrap_or(0),
            parent_shard_ids: get_ss(item, attr::PARENT_SHARD_IDS, at)?,
            child_shard_ids: get_ss(item, attr::CHILD_SHARD_IDS, at)?,
            hash_key_range,
            checkpoint_owner: get_s(item, attr::CHECKPOINT_OWNER, at)?.map(str::to_owned),
            key,
        }))
    }
}

/// What an item of the lease table turned out to be.
// Short-lived (the answer of a parse, unpacked at once): boxing the lease would only add an
// allocation per item.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Item {
    /// A shard's lease.
    Lease(Lease),
    /// A lease of a Java KCL multi-stream application (`account:stream:creationEpoch:shardId`):
    /// this table belongs to such an application, which this consumer (one stream) must not
    /// share.
    MultiStream {
        /// Its `leaseKey`.
        key: String,
    },
    /// An item of another kind sharing the table (KCL 3.5 keeps worker metrics and coordinator
    /// state there under other `entityType` values).
    Other {
        /// Its `leaseKey`.
        key: String,
        /// Its `entityType`.
        entity_type: String,
    },
}

/// An item that is not a lease this crate can read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("lease table item {key}: attribute {attribute} {problem}", key = lease_key.as_deref().unwrap_or("(no leaseKey)"))]
pub struct ItemError {
    /// The item's `leaseKey`, if it has one.
    pub lease_key: Option<String>,
    /// The attribute at fault.
    pub attribute: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl ItemError {
    fn bad(lease_key: Option<&str>, attribute: &'static str, problem: &str) -> Self {
        ItemError {
            lease_key: lease_key.map(str::to_owned),
            attribute,
            problem: problem.to_owned(),
        }
    }

    fn checkpoint(
        lease_key: Option<&str>,
        attribute: &'static str,
        error: CheckpointError,
    ) -> Self {
        Self::bad(lease_key, attribute, &error.to_string())
    }
}

pub(crate) fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

pub(crate) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A string set, or `None` for an empty one (DynamoDB rejects empty sets).
pub(crate) fn string_set(values: &BTreeSet<String>) -> Option<AttributeValue> {
    (!values.is_empty()).then(|| AttributeValue::Ss(values.iter().cloned().collect()))
}

fn get_s<'a>(
    item: &'a HashMap<String, AttributeValue>,
    name: &'static str,
    at: Option<&str>,
) -> Result<Option<&'a str>, ItemError> {
    match item.get(name) {
        Some(AttributeValue::S(text)) => Ok(Some(text)),
        Some(AttributeValue::Null(true)) | None => Ok(None),
        Some(_) => Err(ItemError::bad(at, name, "not a string")),
    }
}

fn get_n(
    item: &HashMap<String, AttributeValue>,
    name: &'static str,
    at: Option<&str>,
) -> Result<Option<u64>, ItemError> {
    match item.get(name) {
        Some(AttributeValue::N(text)) => text
            .parse::<u64>()
            .map(Some)
            .map_err(|_| ItemError::bad(at, name, &format!("{text:?} is not a whole number"))),
        Some(AttributeValue::Null(true)) | None => Ok(None),
        Some(_) => Err(ItemError::bad(at, name, "not a number")),
    }
}

fn get_ss(
    item: &HashMap<String, AttributeValue>,
    name: &'static str,
    at: Option<&str>,
) -> Result<BTreeSet<String>, ItemError> {
    match item.get(name) {
        Some(AttributeValue::Ss(values)) => Ok(values.iter().cloned().collect()),
        // A lone string is accepted too: some tools write a single parent that way.
        Some(AttributeValue::S(value)) => Ok(BTreeSet::from([value.clone()])),
        Some(AttributeValue::Null(true)) | None => Ok(BTreeSet::new()),
        Some(_) => Err(ItemError::bad(at, name, "not a string set")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::SequenceNumber;
    use kinesis_aggregation::HashKey;

    fn kcl_item(pairs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn a_refusal_is_put_down_to_an_own_write_only_while_the_worker_still_holds_the_lease() {
        let item = |owner: Option<&str>, handoff: Option<&str>, counter: u64| {
            let mut lease = Lease::new("shardId-1", Checkpoint::TrimHorizon);
            lease.owner = owner.map(str::to_owned);
            lease.checkpoint_owner = handoff.map(str::to_owned);
            lease.counter = counter;
            lease
        };
        let base = item(Some("me"), None, 5);
        // (the item the refusal returned, own write?)
        let cases = [
            (item(Some("me"), None, 6), true),
            (item(Some("me"), None, 9), true),
            // A handoff asked for since: the previous owner still writes as holder.
            (item(Some("other"), Some("me"), 6), true),
            // Not raised: refused for another reason.
            (item(Some("me"), None, 5), false),
            (item(Some("me"), None, 4), false),
            // Taken by another worker.
            (item(Some("other"), None, 6), false),
            // Released, or reset by an operator.
            (item(None, None, 6), false),
            // This worker asked another for it: the other still holds it.
            (item(Some("me"), Some("other"), 6), false),
        ];
        for (current, own) in cases {
            assert_eq!(current.raised_by_own_write(&base, "me"), own, "{current:?}");
        }
        let mut elsewhere = item(Some("me"), None, 6);
        elsewhere.key = "shardId-2".into();
        assert!(!elsewhere.raised_by_own_write(&base, "me"));
    }

    #[test]
    fn reads_an_item_as_the_java_kcl_writes_it() {
        let item = kcl_item(&[
            ("leaseKey", s("shardId-000000000002")),
            ("leaseOwner", s("worker-a")),
            ("leaseCounter", n(42)),
            ("ownerSwitchesSinceCheckpoint", n(1)),
            (
                "checkpoint",
                s("49590338271490256608559692538361571095921575989136588898"),
            ),
            ("checkpointSubSequenceNumber", n(3)),
            (
                "parentShardId",
                AttributeValue::Ss(vec![
                    "shardId-000000000000".into(),
                    "shardId-000000000001".into(),
                ]),
            ),
            ("startingHashKey", s("0")),
            (
                "endingHashKey",
                s("170141183460469231731687303715884105727"),
            ),
            ("throughputKBps", AttributeValue::N("12.5".into())),
        ]);
        let Ok(Item::Lease(lease)) = Lease::from_item(&item) else {
            panic!("not read as a lease");
        };
        assert_eq!(lease.key, "shardId-000000000002");
        assert_eq!(lease.owner.as_deref(), Some("worker-a"));
        assert_eq!(lease.counter, 42);
        assert_eq!(
            lease.checkpoint,
            Checkpoint::at(
                SequenceNumber::parse("49590338271490256608559692538361571095921575989136588898")
                    .unwrap(),
                3
            )
        );
        assert_eq!(lease.parent_shard_ids.len(), 2);
        assert_eq!(
            lease.hash_key_range.map(|r| r.end()),
            Some(HashKey::new(u128::MAX >> 1))
        );
        // Written back, it is the same item minus what this crate does not keep.
        let mut back = lease.to_item();
        let mut want = item.clone();
        want.remove("throughputKBps");
        back.retain(|k, _| want.contains_key(k));
        assert_eq!(back, want);
    }

    #[test]
    fn round_trips_every_field() {
        let mut lease = Lease::new("shardId-000000000007", Checkpoint::TrimHorizon)
            .with_parents(["shardId-000000000003"])
            .with_hash_key_range(HashKeyRange::ALL);
        lease.owner = Some("w".into());
        lease.counter = 9;
        lease.pending_checkpoint = Some(Checkpoint::at(SequenceNumber::parse("77").unwrap(), 2));
        lease.pending_checkpoint_state = Some(Bytes::from_static(b"state"));
        lease.child_shard_ids = BTreeSet::from(["shardId-000000000009".to_owned()]);
        lease.checkpoint_owner = Some("old".into());
        lease.owner_switches_since_checkpoint = 4;
        assert_eq!(Lease::from_item(&lease.to_item()), Ok(Item::Lease(lease)));
    }

    #[test]
    fn other_entities_and_bad_items_are_told_apart() {
        let other = kcl_item(&[
            ("leaseKey", s("worker-metrics-1")),
            ("entityType", s("WORKER_METRICS")),
        ]);
        assert!(matches!(Lease::from_item(&other), Ok(Item::Other { .. })));
        let lease_entity = kcl_item(&[
            ("leaseKey", s("shardId-0")),
            ("entityType", s("LEASE")),
            ("leaseCounter", n(0)),
            ("checkpoint", s("LATEST")),
        ]);
        assert!(matches!(
            Lease::from_item(&lease_entity),
            Ok(Item::Lease(_))
        ));
        for (bad, attribute) in [
            (kcl_item(&[("leaseCounter", n(1))]), "leaseKey"),
            (
                kcl_item(&[("leaseKey", s("a")), ("checkpoint", s("LATEST"))]),
                "leaseCounter",
            ),
            (
                kcl_item(&[("leaseKey", s("a")), ("leaseCounter", n(1))]),
                "checkpoint",
            ),
            (
                kcl_item(&[
                    ("leaseKey", s("a")),
                    ("leaseCounter", AttributeValue::N("-1".into())),
                    ("checkpoint", s("LATEST")),
                ]),
                "leaseCounter",
            ),
            (
                kcl_item(&[
                    ("leaseKey", s("a")),
                    ("leaseCounter", n(1)),
                    ("checkpoint", s("not-a-number")),
                ]),
                "checkpoint",
            ),
            (
                kcl_item(&[
                    ("leaseKey", s("a")),
                    ("leaseCounter", n(1)),
                    ("checkpoint", s("LATEST")),
                    ("startingHashKey", s("5")),
                ]),
                "startingHashKey",
            ),
        ] {
            let error = Lease::from_item(&bad).expect_err(attribute);
            assert_eq!(error.attribute, attribute, "{error}");
        }
    }
}
