//! The three protobuf messages of the aggregated-record format, derived by hand (no protoc).
//!
//! The schema is proto2 with `required` fields. prost has no presence for `required` scalars, so
//! they are declared `optional` here: the bytes on the wire are the same, and decoding can tell a
//! missing field apart, which the Java KCL's parser rejects. Key tables are read as bytes and
//! turned into text lossily, as Java's protobuf runtime does for proto2 strings.

use bytes::Bytes;

/// `AggregatedRecord`: the key tables and the records pointing into them.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AggregatedRecord {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub(crate) partition_key_table: Vec<Bytes>,
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub(crate) explicit_hash_key_table: Vec<Bytes>,
    #[prost(message, repeated, tag = "3")]
    pub(crate) records: Vec<Record>,
}

/// `Record`: one user record inside an aggregate.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Record {
    /// `required uint64` in the schema.
    #[prost(uint64, optional, tag = "1")]
    pub(crate) partition_key_index: Option<u64>,
    #[prost(uint64, optional, tag = "2")]
    pub(crate) explicit_hash_key_index: Option<u64>,
    /// `required bytes` in the schema.
    #[prost(bytes = "bytes", optional, tag = "3")]
    pub(crate) data: Option<Bytes>,
    #[prost(message, repeated, tag = "4")]
    pub(crate) tags: Vec<Tag>,
}

/// `Tag`: defined by the format, used by neither the KPL nor the KCL.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Tag {
    /// `required string` in the schema.
    #[prost(string, optional, tag = "1")]
    pub(crate) key: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub(crate) value: Option<String>,
}

/// `AggregatedRecord.partition_key_table`: field 1, length-delimited.
pub(crate) const TAG_PARTITION_KEY_TABLE: u8 = (1 << 3) | 2;
/// `AggregatedRecord.explicit_hash_key_table`: field 2, length-delimited.
pub(crate) const TAG_EXPLICIT_HASH_KEY_TABLE: u8 = (2 << 3) | 2;
/// `AggregatedRecord.records`: field 3, length-delimited.
pub(crate) const TAG_RECORDS: u8 = (3 << 3) | 2;
/// `Record.partition_key_index`: field 1, varint.
pub(crate) const TAG_RECORD_PARTITION_KEY_INDEX: u8 = 1 << 3;
/// `Record.explicit_hash_key_index`: field 2, varint.
pub(crate) const TAG_RECORD_EXPLICIT_HASH_KEY_INDEX: u8 = 2 << 3;
/// `Record.data`: field 3, length-delimited.
pub(crate) const TAG_RECORD_DATA: u8 = (3 << 3) | 2;

/// Bytes a length-delimited field of `len` payload bytes takes: tag, length varint, payload.
/// Every field number here is below 16, so the tag is one byte.
pub(crate) fn delimited_field_len(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// Bytes a varint field takes: tag plus varint.
pub(crate) fn varint_field_len(value: u64) -> usize {
    1 + prost::encoding::encoded_len_varint(value)
}
