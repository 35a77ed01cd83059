//! The crate's one error type.

use std::fmt;

/// Everything this crate can reject, each naming the field and the limit it broke.
///
/// None of these is worth retrying: the same input fails the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The partition key is the empty string.
    #[error("partition key is empty; it must be 1 to {max} Unicode characters")]
    EmptyPartitionKey {
        /// The most characters a partition key may have (256).
        max: usize,
    },
    /// The partition key has more Unicode characters than Kinesis accepts.
    #[error("partition key has {chars} Unicode characters; the limit is {max}")]
    PartitionKeyTooLong {
        /// Characters (Unicode scalar values) in the key.
        chars: usize,
        /// The most characters a partition key may have (256).
        max: usize,
    },
    /// An explicit hash key is not a decimal integer in `0..=2^128-1` written as Kinesis accepts it.
    #[error("explicit hash key {value:?} is invalid: {problem}")]
    InvalidExplicitHashKey {
        /// The text that was rejected.
        value: String,
        /// What is wrong with it.
        problem: HashKeyProblem,
    },
    /// Partition key plus data is larger than the maximum record size.
    #[error(
        "record is {size} bytes (partition key + data); the maximum record size is {max} bytes"
    )]
    RecordTooLarge {
        /// UTF-8 bytes of the partition key plus bytes of data.
        size: usize,
        /// The configured maximum record size.
        max: usize,
    },
    /// A configuration value is outside its allowed range.
    #[error("{name} is {value}; it must be between {min} and {max}")]
    OutOfRange {
        /// Which setting.
        name: &'static str,
        /// The value given.
        value: u128,
        /// The smallest value allowed.
        min: u128,
        /// The largest value allowed.
        max: u128,
    },
    /// A sequence number reported as failed is not one of the Lambda event's Kinesis records
    /// (feature `lambda`), so a partial batch response cannot name it.
    #[cfg(feature = "lambda")]
    #[error(
        "sequence number {sequence_number:?} is not one of the event's Kinesis records; a partial \
         batch response may name only records of the batch it answers"
    )]
    RecordNotInEvent {
        /// The sequence number that was reported.
        sequence_number: String,
    },
}

impl Error {
    /// Whether trying the same thing again could succeed. Never, for this crate's errors: they are
    /// all about the input itself.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// What is wrong with a hash key written in decimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HashKeyProblem {
    /// The string is empty.
    Empty,
    /// A character other than `0`-`9` (a sign, a space, a letter...) at this byte offset.
    NotADigit {
        /// Byte offset of the first offending character.
        at: usize,
    },
    /// More than one digit with a leading zero, which Kinesis rejects (`0|[1-9][0-9]{0,38}`).
    LeadingZero,
    /// The value is 2^128 or more.
    TooLarge,
}

impl fmt::Display for HashKeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("it is empty; expected a decimal integer from 0 to 2^128-1"),
            Self::NotADigit { at } => write!(
                f,
                "byte {at} is not a decimal digit (no signs, spaces or other characters are allowed)"
            ),
            Self::LeadingZero => f.write_str("it has a leading zero, which Kinesis rejects"),
            Self::TooLarge => f.write_str("it is 2^128 or more; the largest hash key is 2^128-1"),
        }
    }
}
