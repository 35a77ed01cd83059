//! Positions in a shard, as the lease table records them: a sequence number with the position
//! inside its aggregate, or one of the KCL's sentinels.

use std::{cmp::Ordering, fmt, str::FromStr};

/// A Kinesis sequence number: up to 129 decimal digits, compared as a number.
///
/// Kinesis sequence numbers do not fit in a `u128`, so the digits are kept as text with leading
/// zeros removed, which makes numeric order the order of (length, text).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SequenceNumber(String);

/// Longest sequence number Kinesis documents (`0|([1-9]\d{0,128})`).
const MAX_SEQUENCE_DIGITS: usize = 129;

impl SequenceNumber {
    /// Parses a sequence number: 1 to 129 ASCII digits (leading zeros are tolerated and dropped).
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        if text.is_empty()
            || text.len() > MAX_SEQUENCE_DIGITS
            || !text.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(CheckpointError::NotASequenceNumber(text.to_owned()));
        }
        let trimmed = text.trim_start_matches('0');
        Ok(SequenceNumber(if trimmed.is_empty() {
            "0".to_owned()
        } else {
            trimmed.to_owned()
        }))
    }

    /// The digits, as Kinesis writes them.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SequenceNumber {
    type Err = CheckpointError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// Where a user record is in its shard: the sequence number of the Kinesis record it came in,
/// and its place inside that record's aggregate (0 for a record that was not aggregated). What
/// [`Checkpointer::checkpoint_at_position`](crate::Checkpointer::checkpoint_at_position) and
/// [`Checkpointer::prepare_checkpoint`](crate::Checkpointer::prepare_checkpoint) take; ordered as
/// the stream is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    sequence_number: SequenceNumber,
    sub_sequence_number: u64,
}

impl Position {
    /// The position of user record `sub_sequence_number` of the Kinesis record `sequence_number`.
    pub fn new(sequence_number: SequenceNumber, sub_sequence_number: u64) -> Self {
        Position {
            sequence_number,
            sub_sequence_number,
        }
    }

    /// The position of a delivered record. Fails only for a record whose sequence number is
    /// not one (never one read from Kinesis).
    pub fn of(record: &crate::Record) -> Result<Self, CheckpointError> {
        Ok(Position::new(
            SequenceNumber::parse(&record.sequence_number)?,
            record.sub_sequence_number,
        ))
    }

    /// The Kinesis record's sequence number.
    pub fn sequence_number(&self) -> &SequenceNumber {
        &self.sequence_number
    }

    /// The place inside the aggregate.
    pub fn sub_sequence_number(&self) -> u64 {
        self.sub_sequence_number
    }
}

impl From<Position> for Checkpoint {
    fn from(position: Position) -> Self {
        Checkpoint::At {
            sequence_number: position.sequence_number,
            sub_sequence_number: position.sub_sequence_number,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.sequence_number, self.sub_sequence_number)
    }
}

/// Where a shard's processing stands: the value of a lease's `checkpoint` and
/// `checkpointSubSequenceNumber` attributes.
///
/// The order is the KCL's: the sentinels that only say where to start sort below every sequence
/// number (`AT_TIMESTAMP` < `TRIM_HORIZON` < `LATEST`), and [`Checkpoint::ShardEnd`] above all of
/// them. Between two sequence numbers, the subsequence number (the position inside an aggregate)
/// breaks ties.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Checkpoint {
    /// Start at the configured timestamp (`AT_TIMESTAMP`).
    AtTimestamp,
    /// Start at the oldest record (`TRIM_HORIZON`).
    TrimHorizon,
    /// Start after the newest record (`LATEST`).
    Latest,
    /// Everything up to and including this user record has been processed.
    At {
        /// The Kinesis record's sequence number.
        sequence_number: SequenceNumber,
        /// The user record's position inside the aggregate (0 for a record that was not
        /// aggregated, or for the whole Kinesis record).
        sub_sequence_number: u64,
    },
    /// The shard was read to its end and the application checkpointed it (`SHARD_END`).
    ShardEnd,
}

/// The text the KCL stores for each sentinel.
const AT_TIMESTAMP: &str = "AT_TIMESTAMP";
const TRIM_HORIZON: &str = "TRIM_HORIZON";
const LATEST: &str = "LATEST";
const SHARD_END: &str = "SHARD_END";

impl Checkpoint {
    /// A checkpoint at a user record.
    pub fn at(sequence_number: SequenceNumber, sub_sequence_number: u64) -> Self {
        Checkpoint::At {
            sequence_number,
            sub_sequence_number,
        }
    }

    /// Reads the two lease attributes: the sentinel name or sequence number, and the
    /// subsequence number (absent is read as 0, as the KCL does).
    pub fn from_attributes(
        checkpoint: &str,
        sub_sequence_number: u64,
    ) -> Result<Self, CheckpointError> {
        Ok(match checkpoint {
            AT_TIMESTAMP => Checkpoint::AtTimestamp,
            TRIM_HORIZON => Checkpoint::TrimHorizon,
            LATEST => Checkpoint::Latest,
            SHARD_END => Checkpoint::ShardEnd,
            digits => Checkpoint::at(SequenceNumber::parse(digits)?, sub_sequence_number),
        })
    }

    /// The `checkpoint` attribute's text.
    pub fn attribute_text(&self) -> &str {
        match self {
            Checkpoint::AtTimestamp => AT_TIMESTAMP,
            Checkpoint::TrimHorizon => TRIM_HORIZON,
            Checkpoint::Latest => LATEST,
            Checkpoint::ShardEnd => SHARD_END,
            Checkpoint::At {
                sequence_number, ..
            } => sequence_number.as_str(),
        }
    }

    /// The `checkpointSubSequenceNumber` attribute (0 for the sentinels, as the KCL writes).
    pub fn sub_sequence_number(&self) -> u64 {
        match self {
            Checkpoint::At {
                sub_sequence_number,
                ..
            } => *sub_sequence_number,
            _ => 0,
        }
    }

    /// The sequence number, if this is a position at a record.
    pub fn sequence_number(&self) -> Option<&SequenceNumber> {
        match self {
            Checkpoint::At {
                sequence_number, ..
            } => Some(sequence_number),
            _ => None,
        }
    }

    /// Whether this only says where to start (no record processed yet).
    pub fn is_sentinel_start(&self) -> bool {
        matches!(
            self,
            Checkpoint::AtTimestamp | Checkpoint::TrimHorizon | Checkpoint::Latest
        )
    }

    fn rank(&self) -> u8 {
        match self {
            Checkpoint::AtTimestamp => 0,
            Checkpoint::TrimHorizon => 1,
            Checkpoint::Latest => 2,
            Checkpoint::At { .. } => 3,
            Checkpoint::ShardEnd => 4,
        }
    }
}

impl Ord for Checkpoint {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (
                Checkpoint::At {
                    sequence_number: a,
                    sub_sequence_number: sa,
                },
                Checkpoint::At {
                    sequence_number: b,
                    sub_sequence_number: sb,
                },
            ) => a.cmp(b).then(sa.cmp(sb)),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Checkpoint {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Checkpoint::At {
                sequence_number,
                sub_sequence_number,
            } => write!(f, "{sequence_number}/{sub_sequence_number}"),
            other => f.write_str(other.attribute_text()),
        }
    }
}

/// A checkpoint that cannot be read or written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Neither a sentinel nor 1 to 129 decimal digits.
    #[error("{0:?} is neither a sequence number (1 to 129 digits) nor a KCL sentinel")]
    NotASequenceNumber(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seq(text: &str) -> SequenceNumber {
        SequenceNumber::parse(text).unwrap()
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert!(seq("9") < seq("10"));
        assert!(seq("49590338271490256608559692538361571095921575989136588898") > seq("9"));
        assert_eq!(seq("007"), seq("7"));
        assert_eq!(seq("000").as_str(), "0");
        assert!(SequenceNumber::parse("").is_err());
        assert!(SequenceNumber::parse("12a").is_err());
        assert!(SequenceNumber::parse("-1").is_err());
        assert!(SequenceNumber::parse(&"9".repeat(130)).is_err());
        assert!(SequenceNumber::parse(&"9".repeat(129)).is_ok());
    }

    #[test]
    fn sentinels_sort_as_the_kcl_does() {
        let order = [
            Checkpoint::AtTimestamp,
            Checkpoint::TrimHorizon,
            Checkpoint::Latest,
            Checkpoint::at(seq("0"), 0),
            Checkpoint::at(seq("5"), 0),
            Checkpoint::at(seq("5"), 3),
            Checkpoint::at(seq("40"), 0),
            Checkpoint::ShardEnd,
        ];
        for pair in order.windows(2) {
            assert!(pair[0] < pair[1], "{} < {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn attributes_round_trip() {
        for (text, sub, want) in [
            ("TRIM_HORIZON", 0, Checkpoint::TrimHorizon),
            ("LATEST", 0, Checkpoint::Latest),
            ("AT_TIMESTAMP", 0, Checkpoint::AtTimestamp),
            ("SHARD_END", 0, Checkpoint::ShardEnd),
            ("123", 7, Checkpoint::at(seq("123"), 7)),
        ] {
            let cp = Checkpoint::from_attributes(text, sub).unwrap();
            assert_eq!(cp, want);
            assert_eq!(cp.attribute_text(), text);
            assert_eq!(cp.sub_sequence_number(), sub);
        }
        assert!(Checkpoint::from_attributes("trim_horizon", 0).is_err());
    }

    #[test]
    fn a_position_is_a_checkpoint_at_a_record() {
        let record = kinesis_aggregation::deaggregate(kinesis_aggregation::StreamRecord::new(
            "00042",
            "pk",
            bytes::Bytes::from_static(b"data"),
        ))
        .remove(0);
        let position = Position::of(&record).unwrap();
        assert_eq!(position, Position::new(seq("42"), 0));
        assert_eq!(position.to_string(), "42/0");
        assert_eq!(
            Checkpoint::from(position.clone()),
            Checkpoint::at(seq("42"), 0)
        );
        assert!(Position::new(seq("42"), 1) > position);
        assert!(Position::new(seq("9"), 5) < position);
        let mut bogus = record.clone();
        bogus.sequence_number = "12ab".into();
        assert!(matches!(
            Position::of(&bogus),
            Err(CheckpointError::NotASequenceNumber(text)) if text == "12ab"
        ));
    }

    proptest! {
        #[test]
        fn order_matches_big_integers(a in "[0-9]{1,60}", b in "[0-9]{1,60}", sa in 0u64..4, sb in 0u64..4) {
            // Compare against a digit-by-digit numeric comparison of the zero-stripped strings.
            let strip = |s: &str| { let t = s.trim_start_matches('0'); if t.is_empty() { "0".to_owned() } else { t.to_owned() } };
            let (na, nb) = (strip(&a), strip(&b));
            let numeric = na.len().cmp(&nb.len()).then(na.cmp(&nb));
            let ca = Checkpoint::at(seq(&a), sa);
            let cb = Checkpoint::at(seq(&b), sb);
            prop_assert_eq!(ca.cmp(&cb), numeric.then(sa.cmp(&sb)));
            prop_assert!(Checkpoint::Latest < ca && ca < Checkpoint::ShardEnd);
        }
    }
}
