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

/// A field's tag and varints, assembled on the stack and appended to a buffer in one copy.
///
/// `BytesMut` has no `put_u8` of its own: each byte written through `BufMut::put_u8` (as
/// `prost::encoding::encode_varint` writes) is a one-byte `put_slice`, a call to `memmove`. A
/// record's header (up to four tags and four varints) written that way costs seven such calls.
pub(crate) struct Header {
    bytes: [u8; Header::CAPACITY],
    len: usize,
}

impl Header {
    /// Four tags and four varints of at most ten bytes each.
    const CAPACITY: usize = 4 * (1 + 10);

    pub(crate) fn new() -> Self {
        Header {
            bytes: [0; Header::CAPACITY],
            len: 0,
        }
    }

    /// Appends a tag byte.
    pub(crate) fn tag(&mut self, tag: u8) -> &mut Self {
        self.bytes[self.len] = tag;
        self.len += 1;
        self
    }

    /// Appends `value` as a base-128 varint (protobuf's encoding, as `encode_varint` writes it).
    pub(crate) fn varint(&mut self, mut value: u64) -> &mut Self {
        while value >= 0x80 {
            self.bytes[self.len] = (value as u8 & 0x7F) | 0x80;
            self.len += 1;
            value >>= 7;
        }
        self.bytes[self.len] = value as u8;
        self.len += 1;
        self
    }

    /// The bytes written so far.
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn prost_bytes(fields: &[(u8, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(tag, value) in fields {
            out.push(tag);
            prost::encoding::encode_varint(value, &mut out);
        }
        out
    }

    #[test]
    fn a_header_writes_what_prost_writes_at_every_varint_length() {
        // Each boundary of the base-128 encoding: 1 to 10 bytes.
        let mut values = vec![0, 1, 0x7F, 0x80, 0x3FFF, 0x4000, u64::MAX];
        values.extend((1..64).map(|bit| 1u64 << bit));
        values.extend((1..64).map(|bit| (1u64 << bit) - 1));
        for value in values {
            let mut header = Header::new();
            header.tag(TAG_RECORD_DATA).varint(value);
            assert_eq!(header.as_slice(), prost_bytes(&[(TAG_RECORD_DATA, value)]));
        }
        // Four fields of ten bytes each: the capacity.
        let full = [(TAG_RECORDS, u64::MAX); 4];
        let mut header = Header::new();
        for (tag, value) in full {
            header.tag(tag).varint(value);
        }
        assert_eq!(header.as_slice(), prost_bytes(&full));
    }

    proptest! {
        #[test]
        fn a_header_of_up_to_four_fields_is_prosts_encoding(
            fields in proptest::collection::vec((any::<u8>(), any::<u64>()), 0..=4)
        ) {
            let mut header = Header::new();
            for &(tag, value) in &fields {
                header.tag(tag).varint(value);
            }
            let expected = prost_bytes(&fields);
            prop_assert_eq!(header.as_slice(), expected.as_slice());
        }
    }
}
