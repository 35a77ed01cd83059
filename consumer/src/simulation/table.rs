//! An in-memory lease table with the conditional writes of `lease_table`, condition for
//! condition and update for update, for the simulation. A differential test in the integration
//! tests applies random sequences of writes to DynamoDB (through [`LeaseTable`]) and to this model
//! and compares every answer and the items after each write.
//!
//! [`LeaseTable`]: crate::LeaseTable

use std::collections::{BTreeMap, BTreeSet};

use crate::{checkpoint::Checkpoint, lease::Lease, lease_table::ReleaseAs};

/// A refused conditional write: the item as the table held it (`None` if absent), as DynamoDB
/// returns it with `ReturnValuesOnConditionCheckFailure::ALL_OLD`.
pub type Refused = Option<Box<Lease>>;

/// The lease table, in memory.
#[derive(Clone, Debug, Default)]
pub struct TableModel {
    items: BTreeMap<String, Lease>,
}

impl TableModel {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every lease, in key order (a scan).
    pub fn scan(&self) -> Vec<Lease> {
        self.items.values().cloned().collect()
    }

    /// One lease.
    pub fn get(&self, key: &str) -> Option<&Lease> {
        self.items.get(key)
    }

    /// `PutItem` unless the key exists. Whether it was created.
    pub fn create(&mut self, lease: &Lease) -> bool {
        if self.items.contains_key(&lease.key) {
            return false;
        }
        self.items.insert(lease.key.clone(), lease.clone());
        true
    }

    /// Renewal: the holder's update, raising the counter.
    pub fn renew(&mut self, lease: &Lease, me: &str) -> Result<Lease, Refused> {
        self.holder_update(lease, me, |_| {})
    }

    /// Take `observed` for `me`: counter and owner as observed.
    pub fn take(&mut self, observed: &Lease, me: &str) -> Result<Lease, Refused> {
        let item = self.items.get_mut(&observed.key);
        let holds = item
            .as_ref()
            .is_some_and(|item| item.counter == observed.counter && item.owner == observed.owner);
        let Some(item) = item.filter(|_| holds) else {
            return Err(self.items.get(&observed.key).cloned().map(Box::new));
        };
        let switches = if observed.owner.as_deref() == Some(me) {
            0
        } else {
            1
        };
        item.owner = Some(me.to_owned());
        item.counter = observed.counter + 1;
        item.owner_switches_since_checkpoint += switches;
        item.checkpoint_owner = None;
        Ok(item.clone())
    }

    /// Ask the owner of `observed` to hand it to `to`: owner as observed, no handoff under way;
    /// the counter is unchanged. A lease observed without an owner is refused without a call.
    pub fn hand_off(&mut self, observed: &Lease, to: &str) -> Result<Lease, Refused> {
        let Some(from) = &observed.owner else {
            return Err(Some(Box::new(observed.clone())));
        };
        let item = self.items.get_mut(&observed.key);
        let holds = item.as_ref().is_some_and(|item| {
            item.owner.as_ref() == Some(from) && item.checkpoint_owner.is_none()
        });
        let Some(item) = item.filter(|_| holds) else {
            return Err(self.items.get(&observed.key).cloned().map(Box::new));
        };
        item.owner = Some(to.to_owned());
        item.checkpoint_owner = Some(from.clone());
        Ok(item.clone())
    }

    /// Release in the role `role` (see [`ReleaseAs`]).
    pub fn release_as(
        &mut self,
        lease: &Lease,
        me: &str,
        role: ReleaseAs,
    ) -> Result<Lease, Refused> {
        if role == ReleaseAs::NewOwner && lease.checkpoint_owner.is_none() {
            return Err(Some(Box::new(lease.clone())));
        }
        let item = self.items.get_mut(&lease.key);
        let holds = item.as_ref().is_some_and(|item| match role {
            ReleaseAs::Owner => {
                item.counter == lease.counter
                    && item.owner.as_deref() == Some(me)
                    && item.checkpoint_owner.is_none()
            }
            ReleaseAs::PreviousOwner => {
                item.counter == lease.counter && item.checkpoint_owner.as_deref() == Some(me)
            }
            ReleaseAs::NewOwner => {
                item.owner.as_deref() == Some(me) && item.checkpoint_owner == lease.checkpoint_owner
            }
        });
        let Some(item) = item.filter(|_| holds) else {
            return Err(self.items.get(&lease.key).cloned().map(Box::new));
        };
        match role {
            ReleaseAs::Owner => {
                item.counter = lease.counter + 1;
                item.owner = None;
            }
            ReleaseAs::PreviousOwner => {
                item.counter = lease.counter + 1;
                item.checkpoint_owner = None;
            }
            ReleaseAs::NewOwner => {
                item.owner = item.checkpoint_owner.take();
            }
        }
        Ok(item.clone())
    }

    /// A checkpoint by the holder (or the previous owner during a handoff).
    pub fn checkpoint(
        &mut self,
        lease: &Lease,
        me: &str,
        checkpoint: &Checkpoint,
    ) -> Result<Lease, Refused> {
        self.holder_update(lease, me, |item| {
            item.checkpoint = checkpoint.clone();
            item.owner_switches_since_checkpoint = 0;
            item.pending_checkpoint = None;
            item.pending_checkpoint_state = None;
        })
    }

    /// The children of an ended shard, by its holder. An empty set is no call at all.
    pub fn set_children(
        &mut self,
        lease: &Lease,
        me: &str,
        children: &BTreeSet<String>,
    ) -> Result<Lease, Refused> {
        if children.is_empty() {
            return Ok(lease.clone());
        }
        self.holder_update(lease, me, |item| {
            item.child_shard_ids = children.clone();
        })
    }

    /// Deletes a lease at `SHARD_END`. Whether it was deleted.
    pub fn delete_finished(&mut self, key: &str) -> bool {
        if self.items.get(key).is_some_and(Lease::is_finished) {
            self.items.remove(key);
            return true;
        }
        false
    }

    /// `counter = mine AND ((owner = me AND no handoff) OR handoff = me)`; raises the counter.
    fn holder_update(
        &mut self,
        lease: &Lease,
        me: &str,
        change: impl FnOnce(&mut Lease),
    ) -> Result<Lease, Refused> {
        let item = self.items.get_mut(&lease.key);
        let holds = item
            .as_ref()
            .is_some_and(|item| item.counter == lease.counter && item.held_by(me));
        let Some(item) = item.filter(|_| holds) else {
            return Err(self.items.get(&lease.key).cloned().map(Box::new));
        };
        change(item);
        item.counter = lease.counter + 1;
        Ok(item.clone())
    }
}
