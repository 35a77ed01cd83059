//! The boundary with DynamoDB: the lease table and every conditional write the coordination
//! makes on it.
//!
//! Unstable: public only with the feature `unstable-internals` (for tests outside the crate), with
//! no stability promise.
//!
//! Every write after a lease's creation is an `UpdateItem` of named attributes, so attributes
//! written by other implementations (the Java KCL's `throughputKBps`, ...) survive. Each write is
//! fenced by a condition; a refused write comes back as [`Error::LeaseLost`] carrying the item as
//! the table held it. A checkpoint, prepared checkpoint or children write refused only because
//! an earlier write of the same worker landed after its answer was lost is made again from that
//! item instead (the rule is `Lease::raised_by_own_write`); a renewal's refusal goes back to the
//! caller, whose coordination decides.
//!
//! | write | condition | change |
//! | --- | --- | --- |
//! | create | no item with this key | the whole item |
//! | renew | counter = mine, and I hold it or am handing it off | counter + 1 |
//! | take | counter (and owner) as observed | owner = me, counter + 1, owner switches + 1, handoff cleared |
//! | hand off | owner as observed, no handoff | owner = new, `checkpointOwner` = old (counter unchanged) |
//! | release | owner = me (or handing off from me), counter = mine | owner (or `checkpointOwner`) removed, counter + 1 |
//! | withdraw a handoff request | owner = me, `checkpointOwner` = the previous owner | owner = the previous owner, `checkpointOwner` removed (counter unchanged) |
//! | checkpoint | counter = mine, and I hold it or am handing it off | checkpoint, counter + 1, owner switches 0, pending cleared |
//! | prepare | same | pending checkpoint and state, counter + 1 |
//! | children | same | `childShardIds` |
//! | delete | checkpoint = `SHARD_END` | item removed |
//! | reset (an operator's, `kinesis leases reset`) | counter, owner and `checkpointOwner` as observed | checkpoint, counter + 1, owner switches 0; owner, `checkpointOwner` and pending checkpoint removed |

use std::{collections::BTreeSet, collections::HashMap, time::Duration};

use aws_sdk_dynamodb::{
    Client,
    operation::update_item::{UpdateItemError, builders::UpdateItemFluentBuilder},
    primitives::Blob,
    types::{
        AttributeDefinition, AttributeValue, BillingMode as SdkBillingMode, KeySchemaElement,
        KeyType, ProvisionedThroughput, ReturnValue, ReturnValuesOnConditionCheckFailure,
        ScalarAttributeType, TableStatus,
    },
};
use bytes::Bytes;
use tracing::{debug, warn};

use crate::{
    checkpoint::Checkpoint,
    error::Error,
    lease::{Item, ItemError, Lease, attr, n, s, string_set},
    sdk_error::{CallFailure, is_access_denied},
};

/// How the lease table is billed when this crate creates it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BillingMode {
    /// On-demand (`PAY_PER_REQUEST`), the KCL's default: no capacity to plan, and the cheapest for
    /// the small, steady traffic of a lease table.
    #[default]
    OnDemand,
    /// Provisioned read and write capacity units.
    Provisioned {
        /// Read capacity units.
        read: u64,
        /// Write capacity units.
        write: u64,
    },
}

impl BillingMode {
    /// What DynamoDB would refuse in these capacities: each must be at least 1 (and fit the
    /// service's 64-bit integer).
    pub(crate) fn problem(&self) -> Option<&'static str> {
        match *self {
            BillingMode::OnDemand => None,
            BillingMode::Provisioned { read, write } => [read, write]
                .into_iter()
                .any(|units| units == 0 || i64::try_from(units).is_err())
                .then_some("provisioned read and write capacity units must be 1 to 2^63 - 1"),
        }
    }
}

/// In which role a worker gives a lease up ([`LeaseTable::release_as`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReleaseAs {
    /// As its owner: the owner is removed and the counter raised (fenced by the counter, and by
    /// no handoff being under way).
    Owner,
    /// As the previous owner during a handoff: `checkpointOwner` is removed and the counter
    /// raised, completing the handoff (fenced by the counter).
    PreviousOwner,
    /// As the new owner of a handoff not completed yet: the request is withdrawn, the previous
    /// owner (`checkpointOwner`) is owner again and the counter unchanged (fenced by both names).
    NewOwner,
}

/// What a scan of the table found.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// The leases, in no particular order.
    pub leases: Vec<Lease>,
    /// Items that are not leases this crate can read (each was logged with a warning).
    pub unreadable: Vec<ItemError>,
    /// Items of other kinds sharing the table (KCL 3.5 `entityType`s other than `LEASE`).
    pub other_items: usize,
    /// Leases of a Java KCL multi-stream application (`account:stream:creationEpoch:shardId`),
    /// by key: a table holding any is not for a one-stream consumer.
    pub multi_stream_keys: Vec<String>,
}

/// The lease table of one application.
#[derive(Clone, Debug)]
pub struct LeaseTable {
    client: Client,
    name: String,
    /// Items per `Scan` page; `None` lets DynamoDB fill 1 MB pages.
    scan_page_size: Option<i32>,
    /// Longest wait for one call's answer.
    call_timeout: Duration,
}

/// How often to look at a table being created.
const ACTIVE_POLL: Duration = Duration::from_millis(250);

/// The default longest wait for one call's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

impl LeaseTable {
    /// The table `name`, reached through `client`. Nothing is called until an operation is.
    pub fn new(client: Client, name: impl Into<String>) -> Self {
        LeaseTable {
            client,
            name: name.into(),
            scan_page_size: None,
            call_timeout: CALL_TIMEOUT,
        }
    }

    /// The longest wait for one call's answer (default 10 s); a call without an answer by then
    /// fails as retryable (`RequestTimeout`), and a write may or may not have happened.
    #[must_use]
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Limits `Scan` pages to `items` (tests use it to exercise paging).
    #[doc(hidden)]
    #[must_use]
    pub fn with_scan_page_size(mut self, items: i32) -> Self {
        self.scan_page_size = Some(items);
        self
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates the table if it does not exist (key `leaseKey`, a string, as the Java KCL's), then
    /// waits until it is `ACTIVE`, for at most `timeout`.
    ///
    /// # Cancellation
    ///
    /// Dropping the future stops the waiting; a creation already requested goes on in DynamoDB.
    pub async fn ensure(&self, billing: BillingMode, timeout: Duration) -> Result<(), Error> {
        let started = tokio::time::Instant::now();
        if self.status().await?.is_none() {
            self.create_table(billing).await?;
        }
        loop {
            let status = self.status().await?;
            if status == Some(TableStatus::Active) {
                return Ok(());
            }
            if started.elapsed() >= timeout {
                return Err(Error::TableNotActive {
                    table: self.name.clone(),
                    waited: started.elapsed(),
                    status: status.map_or_else(|| "absent".to_owned(), |s| s.as_str().to_owned()),
                });
            }
            tokio::time::sleep(ACTIVE_POLL).await;
        }
    }

    async fn status(&self) -> Result<Option<TableStatus>, Error> {
        let request = self.client.describe_table().table_name(&self.name).send();
        match self.bounded("DescribeTable", request).await? {
            Ok(answer) => Ok(answer.table().and_then(|t| t.table_status().cloned())),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(err) => Err(self.failed("DescribeTable", CallFailure::from_sdk(err))),
        }
    }

    async fn create_table(&self, billing: BillingMode) -> Result<(), Error> {
        fn built<T>(
            table: &str,
            part: Result<T, aws_sdk_dynamodb::error::BuildError>,
        ) -> Result<T, Error> {
            part.map_err(|e| Error::InvalidConfig {
                name: "lease table",
                value: table.to_owned(),
                problem: e.to_string(),
            })
        }
        let mut request = self
            .client
            .create_table()
            .table_name(&self.name)
            .attribute_definitions(built(
                &self.name,
                AttributeDefinition::builder()
                    .attribute_name(attr::LEASE_KEY)
                    .attribute_type(ScalarAttributeType::S)
                    .build(),
            )?)
            .key_schema(built(
                &self.name,
                KeySchemaElement::builder()
                    .attribute_name(attr::LEASE_KEY)
                    .key_type(KeyType::Hash)
                    .build(),
            )?);
        request = match billing {
            BillingMode::OnDemand => request.billing_mode(SdkBillingMode::PayPerRequest),
            BillingMode::Provisioned { read, write } => {
                let units = |units: u64| {
                    i64::try_from(units)
                        .ok()
                        .filter(|units| *units >= 1)
                        .ok_or_else(|| Error::InvalidConfig {
                            name: "billing_mode",
                            value: format!("{billing:?}"),
                            problem: billing.problem().unwrap_or_default().to_owned(),
                        })
                };
                request
                    .billing_mode(SdkBillingMode::Provisioned)
                    .provisioned_throughput(built(
                        &self.name,
                        ProvisionedThroughput::builder()
                            .read_capacity_units(units(read)?)
                            .write_capacity_units(units(write)?)
                            .build(),
                    )?)
            }
        };
        match self.bounded("CreateTable", request.send()).await? {
            Ok(_) => {
                debug!(table = %self.name, "lease table created");
                Ok(())
            }
            // Another worker created it at the same moment.
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) =>
            {
                Ok(())
            }
            Err(err) => Err(self.failed("CreateTable", CallFailure::from_sdk(err))),
        }
    }

    /// Reads every item (paged, eventually consistent: decisions on what it shows are made safe
    /// by the conditional writes). Items that are not readable leases are skipped with a warning.
    pub async fn scan(&self) -> Result<Scan, Error> {
        let mut scan = Scan::default();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let request = self
                .client
                .scan()
                .table_name(&self.name)
                .set_limit(self.scan_page_size)
                .set_exclusive_start_key(start.take())
                .send();
            let page = self
                .bounded("Scan", request)
                .await?
                .map_err(|e| self.failed("Scan", CallFailure::from_sdk(e)))?;
            for item in page.items() {
                match Lease::from_item(item) {
                    Ok(Item::Lease(lease)) => scan.leases.push(lease),
                    Ok(Item::Other { key, entity_type }) => {
                        debug!(table = %self.name, key, entity_type, "not a lease; skipped");
                        scan.other_items += 1;
                    }
                    Ok(Item::MultiStream { key }) => scan.multi_stream_keys.push(key),
                    Err(error) => {
                        warn!(table = %self.name, %error, "lease table item skipped");
                        scan.unreadable.push(error);
                    }
                }
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(scan),
            }
        }
    }

    /// Reads one lease, strongly consistent. `None` if there is no such item or it is not a
    /// readable lease (logged).
    pub async fn get(&self, lease_key: &str) -> Result<Option<Lease>, Error> {
        let request = self
            .client
            .get_item()
            .table_name(&self.name)
            .key(attr::LEASE_KEY, s(lease_key))
            .consistent_read(true)
            .send();
        let answer = self
            .bounded("GetItem", request)
            .await?
            .map_err(|e| self.failed("GetItem", CallFailure::from_sdk(e)))?;
        Ok(answer.item().and_then(|item| self.readable(item)))
    }

    /// Creates `lease` unless an item with its key exists. Returns whether it was created.
    pub async fn create(&self, lease: &Lease) -> Result<bool, Error> {
        let request = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(lease.to_item()))
            .condition_expression("attribute_not_exists(#key)")
            .expression_attribute_names("#key", attr::LEASE_KEY)
            .send();
        let result = self.bounded("PutItem", request).await?;
        match result {
            Ok(_) => Ok(true),
            Err(err) => self.refused("PutItem", err),
        }
    }

    /// Raises the counter of a lease `me` holds, or is handing off (the previous owner keeps
    /// renewing until it releases, as the KCL's does, so that nobody takes the lease as expired
    /// meanwhile). The answer shows whether a handoff was asked for (`checkpoint_owner` is `me`).
    pub async fn renew(&self, lease: &Lease, me: &str) -> Result<Lease, Error> {
        self.holder_update(lease, me)
            .update_expression("SET #counter = :next")
            .send_fenced(self, lease, "renew")
            .await
    }

    /// Takes `observed` (as last read) for `me`: it must still have the observed counter and
    /// owner. Clears any handoff.
    pub async fn take(&self, observed: &Lease, me: &str) -> Result<Lease, Error> {
        let switches = if observed.owner.as_deref() == Some(me) {
            0
        } else {
            1
        };
        let request = self
            .update(observed)
            .update_expression(
                "SET #owner = :me, #counter = :next ADD #switches :switches REMOVE #handoff",
            )
            .expression_attribute_names("#owner", attr::LEASE_OWNER)
            .expression_attribute_names("#counter", attr::LEASE_COUNTER)
            .expression_attribute_names("#switches", attr::OWNER_SWITCHES)
            .expression_attribute_names("#handoff", attr::CHECKPOINT_OWNER)
            .expression_attribute_values(":me", s(me))
            .expression_attribute_values(":counter", n(observed.counter))
            .expression_attribute_values(":next", n(observed.counter + 1))
            .expression_attribute_values(":switches", n(switches));
        let request = match &observed.owner {
            Some(owner) => request
                .condition_expression("#counter = :counter AND #owner = :observed")
                .expression_attribute_values(":observed", s(owner)),
            None => {
                request.condition_expression("#counter = :counter AND attribute_not_exists(#owner)")
            }
        };
        request.send_fenced(self, observed, "take").await
    }

    /// Asks the owner of `observed` to hand it to `to`: the lease names `to` as owner and the old
    /// owner as `checkpointOwner`, which may still renew and checkpoint until it releases (the
    /// answer to its next renewal, or its next scan, tells it). The counter is unchanged.
    pub async fn hand_off(&self, observed: &Lease, to: &str) -> Result<Lease, Error> {
        let Some(from) = &observed.owner else {
            return Err(Error::LeaseLost {
                lease_key: observed.key.clone(),
                operation: "hand off",
                current: Some(Box::new(observed.clone())),
            });
        };
        self.update(observed)
            .condition_expression("#owner = :from AND attribute_not_exists(#handoff)")
            .update_expression("SET #owner = :to, #handoff = :from")
            .expression_attribute_names("#owner", attr::LEASE_OWNER)
            .expression_attribute_names("#handoff", attr::CHECKPOINT_OWNER)
            .expression_attribute_values(":from", s(from))
            .expression_attribute_values(":to", s(to))
            .send_fenced(self, observed, "hand off")
            .await
    }

    /// Gives up a lease `me` holds, so that another worker takes it at once: removes the owner
    /// (or, when `me` is handing it off, the `checkpointOwner`, completing the handoff) and raises
    /// the counter. Whether `me` is handing it off is read from `lease`.
    pub async fn release(&self, lease: &Lease, me: &str) -> Result<Lease, Error> {
        let role = if lease.checkpoint_owner.as_deref() == Some(me) {
            ReleaseAs::PreviousOwner
        } else {
            ReleaseAs::Owner
        };
        self.release_as(lease, me, role).await
    }

    /// Gives up a lease in the role `role` (see [`ReleaseAs`]).
    pub async fn release_as(
        &self,
        lease: &Lease,
        me: &str,
        role: ReleaseAs,
    ) -> Result<Lease, Error> {
        let request = self
            .update(lease)
            .expression_attribute_names("#handoff", attr::CHECKPOINT_OWNER)
            .expression_attribute_values(":me", s(me));
        let request = match role {
            ReleaseAs::Owner => request
                .condition_expression(
                    "#owner = :me AND #counter = :counter AND attribute_not_exists(#handoff)",
                )
                .update_expression("SET #counter = :next REMOVE #owner")
                .expression_attribute_names("#owner", attr::LEASE_OWNER)
                .expression_attribute_names("#counter", attr::LEASE_COUNTER)
                .expression_attribute_values(":counter", n(lease.counter))
                .expression_attribute_values(":next", n(lease.counter + 1)),
            ReleaseAs::PreviousOwner => request
                .condition_expression("#handoff = :me AND #counter = :counter")
                .update_expression("SET #counter = :next REMOVE #handoff")
                .expression_attribute_names("#counter", attr::LEASE_COUNTER)
                .expression_attribute_values(":counter", n(lease.counter))
                .expression_attribute_values(":next", n(lease.counter + 1)),
            ReleaseAs::NewOwner => {
                let Some(previous) = &lease.checkpoint_owner else {
                    return Err(Error::LeaseLost {
                        lease_key: lease.key.clone(),
                        operation: "withdraw a handoff request",
                        current: Some(Box::new(lease.clone())),
                    });
                };
                request
                    .condition_expression("#owner = :me AND #handoff = :previous")
                    .update_expression("SET #owner = :previous REMOVE #handoff")
                    .expression_attribute_names("#owner", attr::LEASE_OWNER)
                    .expression_attribute_values(":previous", s(previous))
            }
        };
        request.send_fenced(self, lease, "release").await
    }

    /// Records `checkpoint` for a lease `me` holds or is handing off; clears any prepared
    /// checkpoint and the owner-switch count, and raises the counter.
    pub async fn checkpoint(
        &self,
        lease: &Lease,
        me: &str,
        checkpoint: &Checkpoint,
    ) -> Result<Lease, Error> {
        self.holder_write(lease, me, HolderWrite::Checkpoint(checkpoint))
            .await
    }

    /// Records a prepared (two-phase) checkpoint and the application's state with it, for a lease
    /// `me` holds or is handing off.
    pub async fn prepare_checkpoint(
        &self,
        lease: &Lease,
        me: &str,
        pending: &Checkpoint,
        state: Option<&Bytes>,
    ) -> Result<Lease, Error> {
        self.holder_write(lease, me, HolderWrite::Prepare(pending, state))
            .await
    }

    /// Records the children of a shard that ended, on a lease `me` holds or is handing off.
    pub async fn set_children(
        &self,
        lease: &Lease,
        me: &str,
        children: &BTreeSet<String>,
    ) -> Result<Lease, Error> {
        self.holder_write(lease, me, HolderWrite::SetChildren(children))
            .await
    }

    /// Sets the checkpoint of `observed` (as last read) from outside the fleet, for an operator:
    /// the lease must still have the observed counter, owner and `checkpointOwner`. The owner
    /// and any handoff are removed, a prepared checkpoint is dropped, and the counter raised.
    ///
    /// What follows for a processor running the shard: every write of its holder is fenced by
    /// the counter, so its next renewal or checkpoint is refused (the lease is lost; this crate's
    /// worker stops the processor with `lease_lost` and writes nothing); the lease is then free,
    /// and the worker that takes it starts after `checkpoint`. Keeping the owner would not stop
    /// the holder any sooner, and would make other workers wait for the lease to expire.
    ///
    /// # Cancellation
    ///
    /// If the future is dropped, the write may or may not have happened.
    pub async fn reset_checkpoint(
        &self,
        observed: &Lease,
        checkpoint: &Checkpoint,
    ) -> Result<Lease, Error> {
        let mut conditions = vec!["#counter = :counter"];
        let mut request = self
            .update(observed)
            .update_expression(
                "SET #cp = :cp, #cpsub = :cpsub, #switches = :zero, #counter = :next \
                 REMOVE #owner, #handoff, #pending, #pendingsub, #pendingstate",
            )
            .checkpoint_values(checkpoint)
            .expression_attribute_names("#counter", attr::LEASE_COUNTER)
            .expression_attribute_names("#owner", attr::LEASE_OWNER)
            .expression_attribute_names("#handoff", attr::CHECKPOINT_OWNER)
            .expression_attribute_values(":counter", n(observed.counter))
            .expression_attribute_values(":next", n(observed.counter + 1));
        match &observed.owner {
            Some(owner) => {
                conditions.push("#owner = :owner");
                request = request.expression_attribute_values(":owner", s(owner));
            }
            None => conditions.push("attribute_not_exists(#owner)"),
        }
        match &observed.checkpoint_owner {
            Some(previous) => {
                conditions.push("#handoff = :previous");
                request = request.expression_attribute_values(":previous", s(previous));
            }
            None => conditions.push("attribute_not_exists(#handoff)"),
        }
        request
            .condition_expression(conditions.join(" AND "))
            .send_fenced(self, observed, "reset checkpoint")
            .await
    }

    /// Deletes a finished lease (checkpoint `SHARD_END`). Returns whether it was deleted; a lease
    /// that is absent or not finished is left alone.
    pub async fn delete_finished(&self, lease_key: &str) -> Result<bool, Error> {
        let request = self
            .client
            .delete_item()
            .table_name(&self.name)
            .key(attr::LEASE_KEY, s(lease_key))
            .condition_expression("#cp = :end")
            .expression_attribute_names("#cp", attr::CHECKPOINT)
            .expression_attribute_values(":end", s(Checkpoint::ShardEnd.attribute_text()))
            .send();
        let result = self.bounded("DeleteItem", request).await?;
        match result {
            Ok(_) => Ok(true),
            Err(err) => self.refused("DeleteItem", err),
        }
    }

    /// An update of `lease`'s item returning the new item, or the current one if refused.
    fn update(&self, lease: &Lease) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.name)
            .key(attr::LEASE_KEY, s(&lease.key))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
    }

    /// An update allowed to the holder of the lease, or to the previous holder while it hands
    /// the lease off; fenced by the counter, which it raises.
    fn holder_update(&self, lease: &Lease, me: &str) -> UpdateItemFluentBuilder {
        self.update(lease)
            .condition_expression(
                "#counter = :counter AND ((#owner = :me AND attribute_not_exists(#handoff)) \
                 OR #handoff = :me)",
            )
            .expression_attribute_names("#owner", attr::LEASE_OWNER)
            .expression_attribute_names("#counter", attr::LEASE_COUNTER)
            .expression_attribute_names("#handoff", attr::CHECKPOINT_OWNER)
            .expression_attribute_values(":me", s(me))
            .expression_attribute_values(":counter", n(lease.counter))
            .expression_attribute_values(":next", n(lease.counter + 1))
    }

    /// Makes a holder write of a shard's task (from `lease`, the task's copy) and, when it is
    /// refused only because an earlier write of `me` itself landed after `me` stopped waiting for
    /// its answer ([`Lease::raised_by_own_write`]), makes it again from the item the refusal
    /// returned, [`HOLDER_WRITE_ATTEMPTS`] attempts in all; see [`after_refusal`]. Without this,
    /// a renewal or checkpoint whose answer was lost would cost the lease at the next
    /// checkpoint: its processor stopped, the shard started again elsewhere, records processed
    /// twice.
    async fn holder_write(
        &self,
        lease: &Lease,
        me: &str,
        write: HolderWrite<'_>,
    ) -> Result<Lease, Error> {
        let mut again: Option<Lease> = None;
        let mut attempts = 1;
        loop {
            let base = again.as_ref().unwrap_or(lease);
            let result = self.send_holder_write(write, base, me).await;
            let Err(Error::LeaseLost {
                current: Some(current),
                operation,
                ..
            }) = &result
            else {
                return result;
            };
            match after_refusal(write, base, current, me) {
                AfterRefusal::Lost => return result,
                AfterRefusal::Done => return Ok((**current).clone()),
                AfterRefusal::Behind => {
                    return Err(Error::InvalidCheckpoint {
                        lease_key: base.key.clone(),
                        requested: match write {
                            HolderWrite::Checkpoint(at) => at.to_string(),
                            _ => String::new(),
                        },
                        problem: "behind the current checkpoint",
                    });
                }
                AfterRefusal::Again if attempts < HOLDER_WRITE_ATTEMPTS => {
                    debug!(lease = %base.key, operation, counter = current.counter,
                        "an earlier write of this worker landed after its answer was lost; \
                         written again from the item");
                    attempts += 1;
                    again = Some((**current).clone());
                }
                AfterRefusal::Again => return result,
            }
        }
    }

    /// One attempt at a holder write, from `base`.
    async fn send_holder_write(
        &self,
        write: HolderWrite<'_>,
        base: &Lease,
        me: &str,
    ) -> Result<Lease, Error> {
        let request = self.holder_update(base, me);
        let (request, operation) = match write {
            HolderWrite::Checkpoint(checkpoint) => (
                request
                    .update_expression(
                        "SET #cp = :cp, #cpsub = :cpsub, #switches = :zero, #counter = :next \
                         REMOVE #pending, #pendingsub, #pendingstate",
                    )
                    .checkpoint_values(checkpoint),
                "checkpoint",
            ),
            HolderWrite::Prepare(pending, state) => {
                let request = request
                    .expression_attribute_names("#pending", attr::PENDING_CHECKPOINT)
                    .expression_attribute_names("#pendingsub", attr::PENDING_CHECKPOINT_SUB)
                    .expression_attribute_names("#pendingstate", attr::PENDING_CHECKPOINT_STATE)
                    .expression_attribute_values(":pending", s(pending.attribute_text()))
                    .expression_attribute_values(":pendingsub", n(pending.sub_sequence_number()));
                let request = match state {
                    Some(state) => request
                        .update_expression(
                            "SET #pending = :pending, #pendingsub = :pendingsub, \
                             #pendingstate = :state, #counter = :next",
                        )
                        .expression_attribute_values(
                            ":state",
                            AttributeValue::B(Blob::new(state.to_vec())),
                        ),
                    None => request.update_expression(
                        "SET #pending = :pending, #pendingsub = :pendingsub, #counter = :next \
                         REMOVE #pendingstate",
                    ),
                };
                (request, "prepare checkpoint")
            }
            HolderWrite::SetChildren(children) => {
                // An empty set is no call at all.
                let Some(set) = string_set(children) else {
                    return Ok(base.clone());
                };
                (
                    request
                        .update_expression("SET #children = :children, #counter = :next")
                        .expression_attribute_names("#children", attr::CHILD_SHARD_IDS)
                        .expression_attribute_values(":children", set),
                    "set children",
                )
            }
        };
        request.send_fenced(self, base, operation).await
    }

    /// Waits for `call` at most the call timeout.
    async fn bounded<T>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = T>,
    ) -> Result<T, Error> {
        tokio::time::timeout(self.call_timeout, call)
            .await
            .map_err(|_| self.failed(operation, CallFailure::timeout(self.call_timeout)))
    }

    fn readable(&self, item: &HashMap<String, AttributeValue>) -> Option<Lease> {
        match Lease::from_item(item) {
            Ok(Item::Lease(lease)) => Some(lease),
            Ok(Item::Other { .. } | Item::MultiStream { .. }) => None,
            Err(error) => {
                warn!(table = %self.name, %error, "lease table item skipped");
                None
            }
        }
    }

    /// `Ok(false)` when a write failed only because its condition did not hold.
    fn refused<E>(
        &self,
        operation: &'static str,
        err: aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
    ) -> Result<bool, Error>
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
    {
        if err.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException")
        {
            return Ok(false);
        }
        Err(self.failed(operation, CallFailure::from_sdk(err)))
    }

    fn failed(&self, operation: &'static str, failure: CallFailure) -> Error {
        if is_access_denied(&failure) {
            return Error::AccessDenied {
                service: "DynamoDB",
                operation,
                resource: self.name.clone(),
                code: failure.code,
                request_id: failure.request_id,
                source: failure.source,
            };
        }
        if failure.code == "ResourceNotFoundException" {
            return Error::TableNotFound {
                table: self.name.clone(),
                operation,
            };
        }
        Error::lease_table(operation, self.name.clone(), failure)
    }
}

/// The names and values a checkpoint write uses: `#cp`/`:cp` and `#cpsub`/`:cpsub` (the
/// checkpoint), `#switches`/`:zero` (owner switches reset), and `#pending`, `#pendingsub`,
/// `#pendingstate` (the prepared checkpoint, which such a write removes).
trait CheckpointValues {
    fn checkpoint_values(self, checkpoint: &Checkpoint) -> Self;
}

impl CheckpointValues for UpdateItemFluentBuilder {
    fn checkpoint_values(self, checkpoint: &Checkpoint) -> Self {
        self.expression_attribute_names("#cp", attr::CHECKPOINT)
            .expression_attribute_names("#cpsub", attr::CHECKPOINT_SUB)
            .expression_attribute_names("#switches", attr::OWNER_SWITCHES)
            .expression_attribute_names("#pending", attr::PENDING_CHECKPOINT)
            .expression_attribute_names("#pendingsub", attr::PENDING_CHECKPOINT_SUB)
            .expression_attribute_names("#pendingstate", attr::PENDING_CHECKPOINT_STATE)
            .expression_attribute_values(":cp", s(checkpoint.attribute_text()))
            .expression_attribute_values(":cpsub", n(checkpoint.sub_sequence_number()))
            .expression_attribute_values(":zero", n(0))
    }
}

/// A holder write, as [`after_refusal`] tells what follows its refusal.
///
/// Renewals are not among them: their refusals go to the coordination machine, which makes a
/// renewal again only for the lease's current run (`Machine::on_renewed`), and a renewal of an
/// earlier run, answered late, is not made again at all.
#[derive(Clone, Copy, Debug)]
pub enum HolderWrite<'a> {
    /// A checkpoint ([`LeaseTable::checkpoint`]).
    Checkpoint(&'a Checkpoint),
    /// A prepared checkpoint and its state ([`LeaseTable::prepare_checkpoint`]).
    Prepare(&'a Checkpoint, Option<&'a Bytes>),
    /// A shard's children ([`LeaseTable::set_children`]).
    SetChildren(&'a BTreeSet<String>),
}

/// What follows a holder write's refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterRefusal {
    /// The lease is not `me`'s to write any more: the refusal stands.
    Lost,
    /// Refused only by an earlier write of `me`'s own: write again from the refused item.
    Again,
    /// Refused only by an earlier write of `me`'s own that already wrote what this write
    /// would (a checkpoint sent again after its answer was lost): the item is the answer.
    Done,
    /// A checkpoint refused only by an earlier checkpoint of `me`'s own, past this one: writing
    /// it would move the checkpoint back. Answered as any checkpoint behind the current one.
    Behind,
}

/// Attempts of a task's holder write, the first included, while its refusals come only from
/// the worker's own earlier writes (see [`after_refusal`]). Each such refusal means one more
/// write of the worker's own landed while its answer was lost (the SDK sends a call again after
/// its connection dropped, and that call is refused), so the loop ends with the first answer
/// that arrives; the bound only stops a table that keeps losing answers. A task's write is also
/// dropped when its lease's trust runs out.
pub const HOLDER_WRITE_ATTEMPTS: u32 = 10;

/// What follows the refusal of `write`, sent by `me` from `base`, when the table answered with
/// `current`: the decision of [`LeaseTable`]'s holder writes, and of the simulation's.
pub fn after_refusal(
    write: HolderWrite<'_>,
    base: &Lease,
    current: &Lease,
    me: &str,
) -> AfterRefusal {
    if !current.raised_by_own_write(base, me) {
        return AfterRefusal::Lost;
    }
    match write {
        HolderWrite::Checkpoint(at) => {
            if current.checkpoint == *at && current.pending_checkpoint.is_none() {
                AfterRefusal::Done
            } else if current.checkpoint > *at {
                AfterRefusal::Behind
            } else {
                AfterRefusal::Again
            }
        }
        HolderWrite::Prepare(at, state) => {
            if current.pending_checkpoint.as_ref() == Some(at)
                && current.pending_checkpoint_state.as_ref() == state
            {
                AfterRefusal::Done
            } else {
                AfterRefusal::Again
            }
        }
        HolderWrite::SetChildren(children) => {
            if current.child_shard_ids == *children {
                AfterRefusal::Done
            } else {
                AfterRefusal::Again
            }
        }
    }
}

/// Sending a fenced update and reading its answer.
trait FencedUpdate {
    async fn send_fenced(
        self,
        table: &LeaseTable,
        lease: &Lease,
        operation: &'static str,
    ) -> Result<Lease, Error>;
}

impl FencedUpdate for UpdateItemFluentBuilder {
    async fn send_fenced(
        self,
        table: &LeaseTable,
        lease: &Lease,
        operation: &'static str,
    ) -> Result<Lease, Error> {
        match table.bounded("UpdateItem", self.send()).await? {
            Ok(answer) => answer
                .attributes()
                .and_then(|item| table.readable(item))
                .ok_or_else(|| {
                    let mut failure = CallFailure::new(
                        "UnreadableItem",
                        "the answer's item is not a lease",
                        None,
                    );
                    failure.kind = kinesis_calls::ErrorKind::Rejected;
                    Error::lease_table("UpdateItem", table.name.clone(), failure)
                }),
            Err(err) => {
                if let Some(UpdateItemError::ConditionalCheckFailedException(refused)) =
                    err.as_service_error()
                {
                    return Err(Error::LeaseLost {
                        lease_key: lease.key.clone(),
                        operation,
                        current: refused
                            .item()
                            .and_then(|item| table.readable(item))
                            .map(Box::new),
                    });
                }
                Err(table.failed("UpdateItem", CallFailure::from_sdk(err)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::SequenceNumber;

    fn at(n: u64) -> Checkpoint {
        match SequenceNumber::parse(&n.to_string()) {
            Ok(sequence_number) => Checkpoint::At {
                sequence_number,
                sub_sequence_number: 0,
            },
            Err(error) => panic!("{error}"),
        }
    }

    fn item(owner: &str, counter: u64, checkpoint: Checkpoint) -> Lease {
        let mut lease = Lease::new("shardId-1", checkpoint);
        lease.owner = Some(owner.to_owned());
        lease.counter = counter;
        lease
    }

    #[test]
    fn a_refused_holder_write_is_made_again_only_when_its_own_earlier_write_refused_it() {
        let base = item("me", 5, at(10));
        let children: BTreeSet<String> = ["shardId-2".to_owned()].into();
        let state = Bytes::from_static(b"state");
        let mut prepared = item("me", 6, at(10));
        prepared.pending_checkpoint = Some(at(12));
        prepared.pending_checkpoint_state = Some(state.clone());
        let mut with_children = item("me", 6, at(10));
        with_children.child_shard_ids = children.clone();
        let mut pending = item("me", 6, at(12));
        pending.pending_checkpoint = Some(at(13));
        // (write, the refused item, what follows)
        let cases = [
            // Taken by another: the lease is lost, whatever the write.
            (HolderWrite::Checkpoint(&at(12)), item("other", 6, at(10)), AfterRefusal::Lost),
            (HolderWrite::SetChildren(&children), item("other", 6, at(10)), AfterRefusal::Lost),
            // The same checkpoint already written (asked again after its answer was lost).
            (HolderWrite::Checkpoint(&at(12)), item("me", 6, at(12)), AfterRefusal::Done),
            // Written, but a prepared checkpoint since: written again, which clears it.
            (HolderWrite::Checkpoint(&at(12)), pending, AfterRefusal::Again),
            // An earlier write (a renewal, an earlier checkpoint): written again.
            (HolderWrite::Checkpoint(&at(12)), item("me", 7, at(11)), AfterRefusal::Again),
            // A later checkpoint of its own already written: this one would move it back.
            (HolderWrite::Checkpoint(&at(12)), item("me", 6, at(14)), AfterRefusal::Behind),
            (
                HolderWrite::Prepare(&at(12), Some(&state)),
                prepared.clone(),
                AfterRefusal::Done,
            ),
            (HolderWrite::Prepare(&at(12), None), prepared, AfterRefusal::Again),
            (HolderWrite::SetChildren(&children), with_children, AfterRefusal::Done),
            (HolderWrite::SetChildren(&children), item("me", 6, at(10)), AfterRefusal::Again),
        ];
        for (write, current, expected) in cases {
            assert_eq!(
                after_refusal(write, &base, &current, "me"),
                expected,
                "{write:?} refused with {current:?}"
            );
        }
    }
}
