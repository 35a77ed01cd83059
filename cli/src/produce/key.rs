//! Where each line's partition key comes from, and what a line that cannot give one is.
//!
//! Pure: a line in, a key and a payload (or the line's failure) out.

use kinesis_producer::Bytes;

/// How a line becomes a partition key and a payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeyMode {
    /// A random key per record (spreads records over every shard).
    Random,
    /// The same key for every record.
    Fixed(String),
    /// The value of a top-level field of the line, a JSON object; the payload is the whole line.
    Field(String),
    /// `key<TAB>payload`.
    Tab,
}

/// Why a line gave no key. The name is the code in reports (`FILE:LINE: code: message`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeyError {
    /// `--key-field`: the line is not a JSON object.
    NotJson(String),
    /// `--key-field`: the object has no such field, or it is null.
    NoKeyField(String),
    /// `--key-field`: the field is an object or an array.
    BadKeyField(String),
    /// `--tab`: no TAB in the line.
    NoTab,
}

impl KeyError {
    /// The code reported for it.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            KeyError::NotJson(_) => "NotJson",
            KeyError::NoKeyField(_) => "NoKeyField",
            KeyError::BadKeyField(_) => "BadKeyField",
            KeyError::NoTab => "NoTab",
        }
    }
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::NotJson(problem) => write!(f, "the line is not a JSON object ({problem})"),
            KeyError::NoKeyField(field) => write!(f, "the line has no field {field:?}"),
            KeyError::BadKeyField(field) => write!(
                f,
                "field {field:?} is an object or an array, not a string, number or boolean"
            ),
            KeyError::NoTab => f.write_str("no TAB between the key and the payload"),
        }
    }
}

impl KeyMode {
    /// The partition key and payload of `line`. `random` is called for a random key.
    pub(crate) fn split(
        &self,
        line: Bytes,
        random: impl FnOnce() -> String,
    ) -> Result<(String, Bytes), KeyError> {
        match self {
            KeyMode::Random => Ok((random(), line)),
            KeyMode::Fixed(key) => Ok((key.clone(), line)),
            KeyMode::Field(field) => Ok((field_of(&line, field)?, line)),
            KeyMode::Tab => {
                let at = line
                    .iter()
                    .position(|&b| b == b'\t')
                    .ok_or(KeyError::NoTab)?;
                // A key that is not UTF-8 is replaced character by character (Kinesis keys are
                // Unicode text).
                let key = String::from_utf8_lossy(&line[..at]).into_owned();
                Ok((key, line.slice(at + 1..)))
            }
        }
    }
}

/// The text of top-level `field` of a JSON object: a string as it is, a number or boolean as
/// written.
fn field_of(line: &[u8], field: &str) -> Result<String, KeyError> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(line).map_err(|e| KeyError::NotJson(e.to_string()))?;
    match object.get(field) {
        None | Some(serde_json::Value::Null) => Err(KeyError::NoKeyField(field.to_owned())),
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => Ok(v.to_string()),
        Some(_) => Err(KeyError::BadKeyField(field.to_owned())),
    }
}

/// A random partition key: 16 hex digits (64 random bits; the shard is chosen by the MD5 of the
/// key, so any spread of keys spreads the records).
pub(crate) fn random_key() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(mode: &KeyMode, line: &str) -> Result<(String, String), KeyError> {
        mode.split(Bytes::copy_from_slice(line.as_bytes()), || "R".to_owned())
            .map(|(k, p)| (k, String::from_utf8(p.to_vec()).unwrap()))
    }

    fn ok(key: &str, payload: &str) -> Result<(String, String), KeyError> {
        Ok((key.to_owned(), payload.to_owned()))
    }

    #[test]
    fn keys_from_each_mode() {
        let field = KeyMode::Field("user".to_owned());
        let cases = [
            (KeyMode::Random, "hello", ok("R", "hello")),
            (
                KeyMode::Fixed("ключ-🔑".to_owned()),
                "hi",
                ok("ключ-🔑", "hi"),
            ),
            (KeyMode::Tab, "k\tv", ok("k", "v")),
            (KeyMode::Tab, "k\tv\tw", ok("k", "v\tw")),
            (KeyMode::Tab, "\tv", ok("", "v")),
            (KeyMode::Tab, "k\t", ok("k", "")),
            (KeyMode::Tab, "no tab", Err(KeyError::NoTab)),
            (KeyMode::Tab, "", Err(KeyError::NoTab)),
            (
                field.clone(),
                r#"{"user":"ü-1","n":1}"#,
                ok("ü-1", r#"{"user":"ü-1","n":1}"#),
            ),
            (field.clone(), r#"{"user":42}"#, ok("42", r#"{"user":42}"#)),
            (
                field.clone(),
                r#"{"user":true}"#,
                ok("true", r#"{"user":true}"#),
            ),
            (
                field.clone(),
                r#"{"x":1}"#,
                Err(KeyError::NoKeyField("user".into())),
            ),
            (
                field.clone(),
                r#"{"user":null}"#,
                Err(KeyError::NoKeyField("user".into())),
            ),
            (
                field.clone(),
                r#"{"user":[1]}"#,
                Err(KeyError::BadKeyField("user".into())),
            ),
            (
                field.clone(),
                r#"{"user":{}}"#,
                Err(KeyError::BadKeyField("user".into())),
            ),
        ];
        for (mode, line, expected) in cases {
            assert_eq!(split(&mode, line), expected, "{mode:?} {line:?}");
        }
        for line in ["not json", "[1,2]", "\"s\"", "", "{\"user\":\"a\""] {
            let error = split(&field, line).unwrap_err();
            assert_eq!(error.code(), "NotJson", "{line:?}");
        }
    }

    #[test]
    fn random_keys_differ() {
        let (a, b) = (random_key(), random_key());
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
    }
}
