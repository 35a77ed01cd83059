//! A stream named by name or by ARN.

use std::fmt;

/// A Kinesis stream, by name (in the client's account and region) or by ARN.
///
/// A string that starts with `arn:` is an ARN, anything else a name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StreamRef {
    /// A stream name in the client's account and region.
    Name(String),
    /// A stream ARN (`arn:aws:kinesis:REGION:ACCOUNT:stream/NAME`).
    Arn(String),
}

impl StreamRef {
    /// The name or ARN, as given.
    pub fn as_str(&self) -> &str {
        match self {
            StreamRef::Name(s) | StreamRef::Arn(s) => s,
        }
    }

    /// The name, if the stream was named by name.
    pub fn name(&self) -> Option<&str> {
        match self {
            StreamRef::Name(s) => Some(s),
            StreamRef::Arn(_) => None,
        }
    }

    /// The ARN, if the stream was named by ARN.
    pub fn arn(&self) -> Option<&str> {
        match self {
            StreamRef::Arn(s) => Some(s),
            StreamRef::Name(_) => None,
        }
    }

    /// What is wrong with the name or ARN, if anything: the service's rules (a name of 1 to 128
    /// characters from `a-z A-Z 0-9 _ . -`; an ARN `arn:PARTITION:kinesis:REGION:ACCOUNT:stream/NAME`).
    pub fn problem(&self) -> Option<&'static str> {
        let valid_name = |name: &str| {
            (1..=128).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        };
        match self {
            StreamRef::Name(name) if name.is_empty() => Some("must not be empty"),
            StreamRef::Name(name) if !valid_name(name) => {
                Some("a stream name has 1 to 128 characters from a-z A-Z 0-9 _ . -")
            }
            StreamRef::Arn(arn) => {
                let parts: Vec<&str> = arn.splitn(6, ':').collect();
                match parts.as_slice() {
                    ["arn", partition, "kinesis", region, account, resource]
                        if !partition.is_empty()
                            && !region.is_empty()
                            && !account.is_empty()
                            && resource.strip_prefix("stream/").is_some_and(valid_name) =>
                    {
                        None
                    }
                    _ => {
                        Some("a stream ARN reads arn:PARTITION:kinesis:REGION:ACCOUNT:stream/NAME")
                    }
                }
            }
            StreamRef::Name(_) => None,
        }
    }

    /// The stream's name: as given, or the part of the ARN after `stream/`.
    pub fn stream_name(&self) -> &str {
        match self {
            StreamRef::Name(s) => s,
            StreamRef::Arn(arn) => arn
                .rsplit_once(":stream/")
                .map_or(arn.as_str(), |(_, name)| name),
        }
    }
}

impl fmt::Display for StreamRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for StreamRef {
    fn from(s: &str) -> Self {
        StreamRef::from(s.to_owned())
    }
}

impl From<&String> for StreamRef {
    fn from(s: &String) -> Self {
        StreamRef::from(s.clone())
    }
}

impl From<String> for StreamRef {
    fn from(s: String) -> Self {
        if s.starts_with("arn:") {
            StreamRef::Arn(s)
        } else {
            StreamRef::Name(s)
        }
    }
}
