//! Positions in a shard as the command line gives them (`tail --from`, `leases reset --to`), and
//! timestamps as they are read and printed.

use std::time::{Duration, SystemTime};

use aws_smithy_types::date_time::{DateTime, Format};
use kinesis_consumer::SequenceNumber;

/// Where to start (`tail --from`) or what to record (`leases reset --to`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Position {
    /// The oldest record in retention.
    TrimHorizon,
    /// After the newest record.
    Latest,
    /// A time: the first record that arrived at or after it.
    At(SystemTime),
    /// A user record: a Kinesis record's sequence number and the place in its aggregate (0 for
    /// a record that was not aggregated).
    Sequence(SequenceNumber, u64),
}

/// The longest number read as epoch seconds; a longer one is a sequence number (Kinesis
/// sequence numbers have 56 digits, epoch seconds 10 until the year 2286).
const MAX_EPOCH_DIGITS: usize = 12;

/// What `--from` and `--to` accept, for the error messages.
pub(crate) const POSITION_FORMS: &str = "trim-horizon, latest, a time (RFC 3339 such as \
     2026-12-05T10:00:00Z, or epoch seconds such as 1796464800), or a sequence number \
     (SEQUENCE or SEQUENCE/SUBSEQUENCE)";

impl Position {
    /// Reads `trim-horizon`, `latest`, a time (RFC 3339, or epoch seconds with up to 12 digits
    /// and an optional fraction), or a sequence number (`SEQUENCE` of more than 12 digits, or
    /// `SEQUENCE/SUBSEQUENCE`).
    pub(crate) fn parse(text: &str) -> Result<Position, String> {
        let text = text.trim();
        match text.to_ascii_lowercase().replace('_', "-").as_str() {
            "trim-horizon" => return Ok(Position::TrimHorizon),
            "latest" => return Ok(Position::Latest),
            _ => {}
        }
        if let Some((sequence, sub)) = text.split_once('/') {
            let sequence = SequenceNumber::parse(sequence)
                .map_err(|_| format!("{sequence:?} is not a sequence number"))?;
            let sub: u64 = sub
                .parse()
                .map_err(|_| format!("{sub:?} is not a subsequence number"))?;
            return Ok(Position::Sequence(sequence, sub));
        }
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if digits(text) && text.len() > MAX_EPOCH_DIGITS {
            let sequence = SequenceNumber::parse(text)
                .map_err(|_| format!("{text:?} is not a sequence number"))?;
            return Ok(Position::Sequence(sequence, 0));
        }
        parse_time(text)
            .map(Position::At)
            .map_err(|problem| format!("{text:?}: {problem}; expected {POSITION_FORMS}"))
    }
}

/// A time as RFC 3339 (`2026-12-05T10:00:00Z`, `2026-12-05T11:00:00.5+01:00`) or epoch seconds
/// (`1796464800`, `1796464800.25`).
pub(crate) fn parse_time(text: &str) -> Result<SystemTime, String> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if digits(whole) && (fraction.is_empty() || digits(fraction)) {
        if whole.len() > MAX_EPOCH_DIGITS || fraction.len() > 9 {
            return Err("too many digits for epoch seconds".to_owned());
        }
        let seconds: u64 = whole
            .parse()
            .map_err(|_| "not a number of seconds".to_owned())?;
        let nanos: u32 = if fraction.is_empty() {
            0
        } else {
            format!("{fraction:0<9}")
                .parse()
                .map_err(|_| "not a fraction of a second".to_owned())?
        };
        return Ok(SystemTime::UNIX_EPOCH + Duration::new(seconds, nanos));
    }
    let parsed = DateTime::from_str(text, Format::DateTimeWithOffset)
        .map_err(|e| format!("not a time ({e})"))?;
    SystemTime::try_from(parsed).map_err(|_| "a time before 1970".to_owned())
}

/// A time as RFC 3339 in UTC with milliseconds: `2026-12-05T10:01:02.123Z`.
pub(crate) fn format_time(at: SystemTime) -> String {
    let since = match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => since,
        // Before 1970: not a Kinesis arrival time; shown as the epoch.
        Err(_) => Duration::ZERO,
    };
    let secs = since.as_secs();
    let millis = since.subsec_millis();
    let (days, of_day) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, millis: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn times_print_as_rfc3339_utc_with_milliseconds() {
        assert_eq!(format_time(at(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_time(at(1_796_464_862, 123)),
            "2026-12-05T10:01:02.123Z"
        );
        // A leap day, and the end of a leap year.
        assert_eq!(format_time(at(951_782_400, 0)), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            format_time(at(1_735_603_199, 999)),
            "2024-12-30T23:59:59.999Z"
        );
        assert_eq!(
            format_time(at(1_735_689_599, 5)),
            "2024-12-31T23:59:59.005Z"
        );
    }

    #[test]
    fn times_parse_from_rfc3339_and_epoch_seconds() {
        assert_eq!(
            parse_time("2026-12-05T10:01:02.123Z"),
            Ok(at(1_796_464_862, 123))
        );
        assert_eq!(
            parse_time("2026-12-05T11:01:02.123+01:00"),
            Ok(at(1_796_464_862, 123))
        );
        assert_eq!(parse_time("1796464862"), Ok(at(1_796_464_862, 0)));
        assert_eq!(parse_time("1796464862.5"), Ok(at(1_796_464_862, 500)));
        for bad in [
            "yesterday",
            "2026-12-05",
            "2026-13-05T10:00:00Z",
            "12.x",
            "",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        for millis in [0, 1, 999] {
            let t = at(1_796_464_862, millis);
            assert_eq!(parse_time(&format_time(t)), Ok(t));
        }
    }

    #[test]
    fn positions_parse_each_form() {
        let seq = "49590338271490256608559692538361571095921575989136588818";
        let parsed = |s: &str| Position::parse(s);
        assert_eq!(parsed("trim-horizon"), Ok(Position::TrimHorizon));
        assert_eq!(parsed("TRIM_HORIZON"), Ok(Position::TrimHorizon));
        assert_eq!(parsed("latest"), Ok(Position::Latest));
        assert_eq!(parsed("LATEST"), Ok(Position::Latest));
        assert_eq!(
            parsed(seq),
            Ok(Position::Sequence(
                SequenceNumber::parse(seq).unwrap_or_else(|e| panic!("{e}")),
                0
            ))
        );
        assert_eq!(
            parsed(&format!("{seq}/3")),
            Ok(Position::Sequence(
                SequenceNumber::parse(seq).unwrap_or_else(|e| panic!("{e}")),
                3
            ))
        );
        assert_eq!(parsed("1796464862"), Ok(Position::At(at(1_796_464_862, 0))));
        assert_eq!(
            parsed("2026-12-05T10:01:02Z"),
            Ok(Position::At(at(1_796_464_862, 0)))
        );
        for (bad, named) in [
            ("soon", "\"soon\""),
            ("12/x", "\"x\""),
            ("x/1", "\"x\""),
            ("2026-12-05T10:01:02", "2026-12-05T10:01:02"),
            ("-5", "\"-5\""),
        ] {
            let err = parsed(bad).expect_err(bad);
            assert!(err.contains(named), "{err}");
        }
    }
}
