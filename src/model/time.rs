//! Time arguments as users and clients write them: RFC 3339, unix seconds/ms/µs/ns by digit
//! count (as Pyroscope's `attime`), and `now`, `now-1h`, `now-15m`.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimeError {
    #[error("time {0:?} is not RFC 3339, unix seconds/milliseconds, or now[-duration]")]
    Unparsable(String),
    #[error("time {0:?} is outside the years 0000 to 9999")]
    OutOfRange(String),
}

/// Latest time any argument may name: the end of year 9999, in ms. Every time a client sends is
/// within `[-MAX_TIME_MS, MAX_TIME_MS]`, so sums and differences of two of them never overflow.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// A query window, `[from_ms, until_ms)` in ms since the epoch: the one rule for which rows,
/// series, blocks and head buckets a query reads, in head, blocks and peers alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    pub from_ms: i64,
    pub until_ms: i64,
}

impl TimeWindow {
    pub fn new(from_ms: i64, until_ms: i64) -> Self {
        Self { from_ms, until_ms }
    }

    /// Whether a row at `time_ms` counts.
    pub fn contains(&self, time_ms: i64) -> bool {
        self.from_ms <= time_ms && time_ms < self.until_ms
    }

    /// Whether data whose first and last rows are at `min_ms` and `max_ms` (both included, as
    /// series and block metas record them) may hold rows in the window.
    pub fn overlaps(&self, min_ms: i64, max_ms: i64) -> bool {
        min_ms < self.until_ms && max_ms >= self.from_ms
    }

    /// Whether every row of data spanning `[min_ms, max_ms]` counts.
    pub fn covers(&self, min_ms: i64, max_ms: i64) -> bool {
        min_ms >= self.from_ms && max_ms < self.until_ms
    }

    /// Whether a time bucket `[start_ms, start_ms + width_ms)` overlaps the window.
    pub fn overlaps_bucket(&self, start_ms: i64, width_ms: i64) -> bool {
        start_ms < self.until_ms && start_ms.saturating_add(width_ms) > self.from_ms
    }
}

/// Whether `time_ms` is a time a client may name (see [`MAX_TIME_MS`]).
pub fn time_in_range(time_ms: i64) -> bool {
    (-MAX_TIME_MS..=MAX_TIME_MS).contains(&time_ms)
}

/// Parses a time argument into milliseconds since the epoch, relative to `now_ms`.
///
/// Digit strings: 13 digits are milliseconds, 16 microseconds, 19 nanoseconds, anything else
/// seconds (Pyroscope's rule, so `pyroscope-go`'s nanosecond `from` works).
/// A duration in milliseconds, saturating at `i64::MAX` (for subtracting from a time).
pub fn duration_ms(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

pub fn parse_time_ms(input: &str, now_ms: i64) -> Result<i64, TimeError> {
    let time_ms = parse_unchecked(input, now_ms)?;
    if time_in_range(time_ms) {
        Ok(time_ms)
    } else {
        Err(TimeError::OutOfRange(input.to_string()))
    }
}

fn parse_unchecked(input: &str, now_ms: i64) -> Result<i64, TimeError> {
    let text = input.trim();
    let fail = || TimeError::Unparsable(input.to_string());
    if let Some(rest) = text.strip_prefix("now") {
        let rest = rest.trim();
        if rest.is_empty() {
            return Ok(now_ms);
        }
        let (sign, duration) = match rest.as_bytes()[0] {
            b'-' => (-1, &rest[1..]),
            b'+' => (1, &rest[1..]),
            _ => return Err(fail()),
        };
        let duration = parse_duration_ms(duration.trim()).ok_or_else(fail)?;
        return now_ms
            .checked_add(sign * duration)
            .ok_or_else(|| TimeError::OutOfRange(input.to_string()));
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let value: i64 = text.parse().map_err(|_| fail())?;
        return Ok(match text.len() {
            13 => value,
            16 => value / 1_000,
            19 => value / 1_000_000,
            _ => value.checked_mul(1000).ok_or_else(fail)?,
        });
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| fail())
}

/// `15m`, `1h30m`, `7d`, `500ms` in milliseconds.
fn parse_duration_ms(text: &str) -> Option<i64> {
    if text.is_empty() {
        return None;
    }
    let mut total: i64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let number: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let factor = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(number.checked_mul(factor)?)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let now = 1_700_000_000_000;
        assert_eq!(parse_time_ms("now", now), Ok(now));
        assert_eq!(parse_time_ms("now-1h", now), Ok(now - 3_600_000));
        assert_eq!(parse_time_ms("now-1h30m", now), Ok(now - 5_400_000));
        assert_eq!(parse_time_ms("1700000000", now), Ok(1_700_000_000_000));
        assert_eq!(parse_time_ms("1700000000123", now), Ok(1_700_000_000_123));
        assert_eq!(parse_time_ms("1700000000123456789", now), Ok(1_700_000_000_123));
        assert_eq!(parse_time_ms("2023-11-14T22:13:20Z", now), Ok(1_700_000_000_000));
        assert!(parse_time_ms("yesterday", now).is_err());
        assert!(parse_time_ms("now-1y", now).is_err());
    }

    #[test]
    fn out_of_range_times_are_refused_not_wrapped() {
        let now = 1_700_000_000_000;
        let huge = format!("now+{}ms", i64::MAX);
        assert_eq!(parse_time_ms(&huge, now), Err(TimeError::OutOfRange(huge.clone())));
        assert!(matches!(
            parse_time_ms("now+500000w", now),
            Err(TimeError::OutOfRange(_))
        ));
        assert!(matches!(
            parse_time_ms("9999999999999999999", now),
            Err(TimeError::Unparsable(_))
        ));
        assert!(matches!(
            parse_time_ms("99999999999999", now),
            Err(TimeError::OutOfRange(_))
        ));
        assert_eq!(parse_time_ms("253402300799", now), Ok(253_402_300_799_000));
    }
}
