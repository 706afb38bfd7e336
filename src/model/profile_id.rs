//! The id of one stored profile: the series it belongs to and its time, written as a UUID
//! (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, Pyroscope's exemplar `profile_id` form).
//!
//! It is derived, not stored: the first 16 hex digits are the series' label fingerprint
//! ([`series_fingerprint`], the labels include `__profile_type__`), the last 16 the profile's
//! time in ms. A heatmap or series exemplar carries it and a merge decodes it back into
//! "this series' rows at this time", so no block or WAL field is needed. Profiles of one series
//! pushed at the same millisecond are one profile for it (as they are one entry of
//! [`crate::block::ProfileTotals`]); the id a client sent with its push (push.v1
//! `RawSample.ID`) is not kept, so it opens nothing.

use std::fmt;

use super::Labels;

/// A profile id that is not 32 hex digits in UUID form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("profile id {0:?} is not a UUID (32 hex digits as 8-4-4-4-12)")]
pub struct ProfileIdError(pub String);

/// One profile: series fingerprint and time (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProfileId {
    pub series: u64,
    pub time_ms: i64,
}

impl ProfileId {
    /// The profile at `time_ms` of the series with these (full, stored) labels.
    pub fn new(labels: &Labels, time_ms: i64) -> Self {
        Self {
            series: series_fingerprint(labels),
            time_ms,
        }
    }

    /// Reads the UUID form [`fmt::Display`] writes (hex digits in either case).
    pub fn parse(text: &str) -> Result<Self, ProfileIdError> {
        let bad = || ProfileIdError(text.chars().take(64).collect());
        let bytes = text.as_bytes();
        if bytes.len() != 36 || [8, 13, 18, 23].iter().any(|&dash| bytes[dash] != b'-') {
            return Err(bad());
        }
        let digits: String = text.chars().filter(|&c| c != '-').collect();
        if digits.len() != 32 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let value = u128::from_str_radix(&digits, 16).map_err(|_| bad())?;
        Ok(Self {
            series: (value >> 64) as u64,
            time_ms: value as u64 as i64,
        })
    }
}

impl fmt::Display for ProfileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = format!("{:016x}{:016x}", self.series, self.time_ms as u64);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }
}

/// A label set's fingerprint: 64-bit FNV-1a over `name 0xff value 0xff` of each pair in order.
/// Stable across processes and versions (ids handed out stay valid), unlike the seeded hashes
/// of in-memory maps; 0xff never occurs in UTF-8, so pairs cannot run into each other.
pub fn series_fingerprint(labels: &Labels) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for &byte in bytes {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    for (name, value) in labels.iter() {
        feed(name.as_bytes());
        feed(&[0xff]);
        feed(value.as_bytes());
        feed(&[0xff]);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::new(pairs.iter().map(|(n, v)| (n.to_string(), v.to_string()))).unwrap()
    }

    #[test]
    fn ids_round_trip_through_their_uuid_form() {
        let series = labels(&[("service_name", "api"), ("__profile_type__", "a:b:c:d:e")]);
        for time_ms in [0, 1, 1_700_000_000_123, i64::MAX, -5] {
            let id = ProfileId::new(&series, time_ms);
            let text = id.to_string();
            assert_eq!(text.len(), 36, "{text}");
            assert_eq!(ProfileId::parse(&text), Ok(id));
            assert_eq!(ProfileId::parse(&text.to_uppercase()), Ok(id));
        }
    }

    #[test]
    fn fingerprints_are_fixed_and_tell_label_sets_apart() {
        // FNV-1a of the empty input is its offset basis: the hash is the documented one.
        assert_eq!(series_fingerprint(&Labels::default()), 0xcbf2_9ce4_8422_2325);
        let a = series_fingerprint(&labels(&[("a", "bc")]));
        assert_ne!(a, series_fingerprint(&labels(&[("ab", "c")])));
        assert_ne!(a, series_fingerprint(&labels(&[("a", "bc"), ("d", "e")])));
        assert_eq!(a, series_fingerprint(&labels(&[("a", "bc")])));
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "7c9e6679",
            "7c9e6679742540de944be07fc1f90ae7",
            "7c9e6679-7425-40de-944b-e07fc1f90ae",
            "7c9e6679-7425-40de-944b-e07fc1f90ae7a",
            "7c9e6679-7425-40de-944be-07fc1f90ae7",
            "7c9e6679-7425-40de-944b-e07fc1f90aeg",
            "+c9e6679-7425-40de-944b-e07fc1f90ae7",
            "7c9e6679-7425-40de-944b-e07fc1f9€",
        ] {
            assert!(ProfileId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
