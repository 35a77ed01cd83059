//! The one `ListShards` pager.

use std::time::Duration;

use aws_sdk_kinesis::{
    Client,
    types::{ShardFilter, ShardFilterType},
};

use crate::{CONSTRUCTION_FAILURE, CallError, StreamRef, within};

/// `ListShards` page size: the service maximum, so that stand-ins that cannot page with a bare
/// `NextToken` still answer in one page.
pub const LIST_SHARDS_PAGE: i32 = 10_000;

/// Which shards to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// Every shard still in retention, closed ones included.
    All,
    /// The open shards (`ShardFilter` `AT_LATEST`). Some stand-ins ignore the filter: look at
    /// [`ListedShard::closed`].
    Open,
}

/// One shard as `ListShards` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedShard {
    /// The shard id.
    pub id: String,
    /// `ParentShardId` and `AdjacentParentShardId`, those present (a merge has both).
    pub parents: Vec<String>,
    /// The starting and ending hash keys, as decimal strings, when listed.
    pub hash_key_range: Option<(String, String)>,
    /// Whether the shard is closed (its sequence-number range has an end).
    pub closed: bool,
}

/// Lists the stream's shards, every page, each page within `timeout`.
pub async fn list_shards(
    client: &Client,
    stream: &StreamRef,
    which: Which,
    page_size: i32,
    timeout: Duration,
) -> Result<Vec<ListedShard>, CallError> {
    let mut listed = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        let request = client.list_shards().max_results(page_size);
        // A page after the first carries the token alone: the service rejects a stream name
        // next to it.
        let request = match next_token.take() {
            Some(token) => request.next_token(token),
            None => {
                let request = request
                    .set_stream_name(stream.name().map(str::to_owned))
                    .set_stream_arn(stream.arn().map(str::to_owned));
                match which {
                    Which::All => request,
                    Which::Open => {
                        let filter = ShardFilter::builder()
                            .r#type(ShardFilterType::AtLatest)
                            .build()
                            .map_err(|e| {
                                let mut error =
                                    CallError::new(CONSTRUCTION_FAILURE, e.to_string(), None);
                                error.source = Some(Box::new(e));
                                error
                            })?;
                        request.shard_filter(filter)
                    }
                }
            }
        };
        let output = within(timeout, request.send()).await?;
        for shard in output.shards.unwrap_or_default() {
            listed.push(ListedShard {
                closed: shard
                    .sequence_number_range
                    .is_some_and(|r| r.ending_sequence_number.is_some()),
                parents: shard
                    .parent_shard_id
                    .into_iter()
                    .chain(shard.adjacent_parent_shard_id)
                    .collect(),
                hash_key_range: shard
                    .hash_key_range
                    .map(|r| (r.starting_hash_key, r.ending_hash_key)),
                id: shard.shard_id,
            });
        }
        match output.next_token {
            Some(token) if !token.is_empty() => next_token = Some(token),
            _ => return Ok(listed),
        }
    }
}
