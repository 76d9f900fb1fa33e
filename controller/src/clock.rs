//! Wall-clock time and the timestamp formats the Mobingi API uses.

use chrono::{DateTime, SecondsFormat, Utc};

/// Milliseconds since the Unix epoch, the unit every record stores.
pub fn now_ms() -> i64 {
    flotilla_common::time::now_ms()
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// RFC 3339 with milliseconds and `Z`, as in template versions'
/// `last_modified` (`2017-08-25T10:40:29.000Z`).
pub fn rfc3339_ms(ms: i64) -> String {
    at(ms).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// RFC 3339 to the second with a numeric offset, as in a stack's
/// `create_time` (`2017-08-26T19:31:25+00:00`).
pub fn rfc3339_secs(ms: i64) -> String {
    at(ms).to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// Whole seconds since the epoch, as in the container config's `updated`.
pub fn unix_secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_match_the_reference() {
        let ms = 1_503_657_629_000; // 2017-08-25T10:40:29Z
        assert_eq!(rfc3339_ms(ms), "2017-08-25T10:40:29.000Z");
        assert_eq!(rfc3339_secs(ms), "2017-08-25T10:40:29+00:00");
        assert_eq!(unix_secs(ms + 999), 1_503_657_629);
    }
}
