//! Which shard owns which hash keys: built from `ListShards`, looked up by binary search.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use kinesis_aggregation::{HashKey, HashKeyRange};

/// One open shard as `ListShards` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ShardInfo {
    pub(crate) id: Arc<str>,
    pub(crate) range: HashKeyRange,
}

/// A shard as listed, before the open ones are picked out.
#[derive(Clone, Debug)]
pub(crate) struct ListedShard {
    pub(crate) id: String,
    pub(crate) start: String,
    pub(crate) end: String,
    /// A closed shard has an ending sequence number. Some stand-ins ignore `ShardFilter` and list
    /// closed shards too; this is how they are told apart.
    pub(crate) closed: bool,
}

/// Why a listing cannot become a map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MapProblem {
    NoOpenShards,
    BadRange { shard: String },
    Gap { after: String },
    Overlap { shard: String },
}

impl std::fmt::Display for MapProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MapProblem::NoOpenShards => write!(f, "the stream lists no open shard"),
            MapProblem::BadRange { shard } => {
                write!(f, "shard {shard} has an invalid hash key range")
            }
            MapProblem::Gap { after } => write!(
                f,
                "the open shards leave a gap in the hash key space after {after}"
            ),
            MapProblem::Overlap { shard } => write!(f, "shard {shard} overlaps another open shard"),
        }
    }
}

/// The open shards of a stream, sorted by hash key range, covering the whole key space.
#[derive(Clone, Debug)]
pub(crate) struct ShardMap {
    shards: Vec<ShardInfo>,
    positions: HashMap<Arc<str>, usize>,
    /// When the `ListShards` call that produced this map started: an answer from a call that
    /// started earlier is older and must not replace it.
    pub(crate) fetched_at: Instant,
}

impl ShardMap {
    /// The map of the open shards in `listed`, which must tile the hash key space exactly.
    pub(crate) fn from_listing(
        listed: &[ListedShard],
        fetched_at: Instant,
    ) -> Result<Self, MapProblem> {
        let mut shards = Vec::with_capacity(listed.len());
        for shard in listed.iter().filter(|s| !s.closed) {
            let range = HashKeyRange::parse(&shard.start, &shard.end).map_err(|_| {
                MapProblem::BadRange {
                    shard: shard.id.clone(),
                }
            })?;
            shards.push(ShardInfo {
                id: Arc::from(shard.id.as_str()),
                range,
            });
        }
        shards.sort_by_key(|s| s.range.start());
        let Some(first) = shards.first() else {
            return Err(MapProblem::NoOpenShards);
        };
        if first.range.start() != HashKey::MIN {
            return Err(MapProblem::Gap {
                after: "the start of the key space".into(),
            });
        }
        for pair in shards.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let next = a.range.end().get().checked_add(1);
            match next {
                Some(n) if n == b.range.start().get() => {}
                Some(n) if n > b.range.start().get() => {
                    return Err(MapProblem::Overlap {
                        shard: b.id.to_string(),
                    });
                }
                None => {
                    return Err(MapProblem::Overlap {
                        shard: b.id.to_string(),
                    });
                }
                Some(_) => {
                    return Err(MapProblem::Gap {
                        after: a.id.to_string(),
                    });
                }
            }
        }
        if shards.last().map(|s| s.range.end()) != Some(HashKey::MAX) {
            let last = shards.last().map(|s| s.id.to_string()).unwrap_or_default();
            return Err(MapProblem::Gap { after: last });
        }
        let positions = shards
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        Ok(ShardMap {
            shards,
            positions,
            fetched_at,
        })
    }

    /// Whether this map may replace `current`: it must come from a `ListShards` call that started
    /// no earlier than the one behind `current`, so that a slow, stale answer never replaces a
    /// newer map.
    pub(crate) fn supersedes(&self, current: &ShardMap) -> bool {
        self.fetched_at >= current.fetched_at
    }

    /// Index of the shard that owns `key`. The map tiles the key space, so there always is one.
    pub(crate) fn lookup(&self, key: HashKey) -> usize {
        self.shards
            .partition_point(|s| s.range.end() < key)
            .min(self.shards.len().saturating_sub(1))
    }

    pub(crate) fn shards(&self) -> &[ShardInfo] {
        &self.shards
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.len()
    }

    pub(crate) fn position(&self, shard_id: &str) -> Option<usize> {
        self.positions.get(shard_id).copied()
    }

    pub(crate) fn get(&self, index: usize) -> Option<&ShardInfo> {
        self.shards.get(index)
    }
}

/// Backoff between failed refreshes: 1 s growing by half up to 30 s, as the KPL does.
pub(crate) fn refresh_backoff(failures: u32) -> Duration {
    let secs = 1.5f64.powi(failures.saturating_sub(1).min(20) as i32);
    Duration::from_secs_f64(secs.min(30.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(id: &str, start: u128, end: u128, closed: bool) -> ListedShard {
        ListedShard {
            id: id.into(),
            start: start.to_string(),
            end: end.to_string(),
            closed,
        }
    }

    const HALF: u128 = u128::MAX / 2;

    #[test]
    fn open_shards_tile_the_key_space() {
        let now = Instant::now();
        let map = ShardMap::from_listing(
            &[
                listed("s-2", HALF + 1, u128::MAX, false),
                listed("s-0", 0, u128::MAX, true), // closed parent, listed by stand-ins
                listed("s-1", 0, HALF, false),
            ],
            now,
        )
        .unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(&*map.shards()[map.lookup(HashKey::MIN)].id, "s-1");
        assert_eq!(&*map.shards()[map.lookup(HashKey::new(HALF))].id, "s-1");
        assert_eq!(&*map.shards()[map.lookup(HashKey::new(HALF + 1))].id, "s-2");
        assert_eq!(&*map.shards()[map.lookup(HashKey::MAX)].id, "s-2");
        assert_eq!(map.position("s-2"), Some(1));
        assert_eq!(map.position("s-0"), None);
    }

    #[test]
    fn listings_that_do_not_tile_are_refused() {
        let now = Instant::now();
        let cases: Vec<(Vec<ListedShard>, MapProblem)> = vec![
            (vec![], MapProblem::NoOpenShards),
            (vec![listed("a", 0, 5, true)], MapProblem::NoOpenShards),
            (
                vec![listed("a", 1, u128::MAX, false)],
                MapProblem::Gap {
                    after: "the start of the key space".into(),
                },
            ),
            (
                vec![listed("a", 0, 5, false)],
                MapProblem::Gap { after: "a".into() },
            ),
            (
                vec![listed("a", 0, 5, false), listed("b", 7, u128::MAX, false)],
                MapProblem::Gap { after: "a".into() },
            ),
            (
                vec![listed("a", 0, 5, false), listed("b", 5, u128::MAX, false)],
                MapProblem::Overlap { shard: "b".into() },
            ),
            (
                vec![ListedShard {
                    id: "a".into(),
                    start: "x".into(),
                    end: "1".into(),
                    closed: false,
                }],
                MapProblem::BadRange { shard: "a".into() },
            ),
        ];
        for (listing, want) in cases {
            assert_eq!(
                ShardMap::from_listing(&listing, now).unwrap_err(),
                want,
                "{listing:?}"
            );
        }
    }

    #[test]
    fn an_answer_older_than_the_map_never_replaces_it() {
        let t0 = Instant::now();
        let listing = [listed("s-0", 0, u128::MAX, false)];
        let older = ShardMap::from_listing(&listing, t0).unwrap();
        let newer = ShardMap::from_listing(&listing, t0 + Duration::from_secs(1)).unwrap();
        assert!(newer.supersedes(&older));
        assert!(
            !older.supersedes(&newer),
            "a refresh started before the map's must be dropped"
        );
        assert!(newer.supersedes(&newer));
    }

    #[test]
    fn refresh_backoff_grows_to_thirty_seconds() {
        assert_eq!(refresh_backoff(1), Duration::from_secs(1));
        assert_eq!(refresh_backoff(2), Duration::from_millis(1500));
        assert_eq!(refresh_backoff(50), Duration::from_secs(30));
    }
}
