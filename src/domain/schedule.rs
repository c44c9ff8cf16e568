//! `send_at` (`option.send_at` on `/v1` sends, the body of a reschedule on `/api`): when a
//! scheduled message may be sent.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use super::kind_of;

/// A message may be scheduled at most this far ahead.
pub const MAX_AHEAD_DAYS: i64 = 365;
const MAX_AHEAD_MS: i64 = MAX_AHEAD_DAYS * 24 * 3600 * 1000;
/// A send time closer than this (or past) means "now": scheduling it would only add the
/// scheduler's poll delay.
pub const NEAR_NOW_MS: i64 = 1000;

/// Parse an RFC 3339 `send_at`: `Ok(Some(unix ms))` for a time worth scheduling, `Ok(None)`
/// for a past or near-now time (send at once), `Err` (naming `field`) otherwise.
pub fn parse_send_at(v: &Value, field: &str, now_ms: i64) -> Result<Option<i64>, String> {
    let text = v.as_str().ok_or_else(|| {
        format!(
            "{field} must be an RFC 3339 time string such as \"2026-01-02T08:00:00+08:00\", got {}",
            kind_of(v)
        )
    })?;
    let at = DateTime::parse_from_rfc3339(text.trim())
        .map_err(|e| {
            format!(
                "{field} {text:?} is not an RFC 3339 time (e.g. \"2026-01-02T08:00:00+08:00\"): {e}"
            )
        })?
        .timestamp_millis();
    if at <= now_ms + NEAR_NOW_MS {
        return Ok(None);
    }
    if at > now_ms + MAX_AHEAD_MS {
        return Err(format!(
            "{field} is more than {MAX_AHEAD_DAYS} days ahead; a message can be scheduled at most \
             {MAX_AHEAD_DAYS} days in advance"
        ));
    }
    Ok(Some(at))
}

/// A stored time (unix ms) as RFC 3339 in UTC, with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_780_000_000_000;

    #[test]
    fn a_future_time_is_scheduled_in_any_offset() {
        let at = rfc3339(NOW + 60_000);
        assert_eq!(
            parse_send_at(&json!(at), "option.send_at", NOW),
            Ok(Some(NOW + 60_000))
        );
        let shifted = DateTime::<Utc>::from_timestamp_millis(NOW + 60_000)
            .unwrap()
            .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
            .to_rfc3339();
        assert_eq!(
            parse_send_at(&json!(shifted), "option.send_at", NOW),
            Ok(Some(NOW + 60_000))
        );
    }

    #[test]
    fn past_and_near_now_times_send_at_once() {
        for at in [NOW - 86_400_000, NOW, NOW + NEAR_NOW_MS] {
            assert_eq!(
                parse_send_at(&json!(rfc3339(at)), "option.send_at", NOW),
                Ok(None)
            );
        }
    }

    #[test]
    fn far_future_malformed_and_non_string_times_are_refused_by_name() {
        let e = parse_send_at(
            &json!(rfc3339(NOW + MAX_AHEAD_MS + 1)),
            "option.send_at",
            NOW,
        )
        .unwrap_err();
        assert!(e.contains("365 days"), "{e}");
        for bad in [
            json!("tomorrow"),
            json!("2026-01-02 08:00:00"),
            json!(1_780_000_000),
        ] {
            let e = parse_send_at(&bad, "option.send_at", NOW).unwrap_err();
            assert!(e.starts_with("option.send_at"), "{e}");
        }
    }

    #[test]
    fn stored_times_are_shown_in_utc_with_milliseconds() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
