//! Local wall-clock time for strategies that follow the recipients' day: quiet hours and the
//! day of frequency caps. A local time is UTC plus a fixed offset (`+08:00`), which is what
//! the settings name; msghub keeps no time-zone database.

const DAY_MS: i64 = 86_400_000;

/// Parse a UTC offset, `+08:00`, `-05:30`, `+00:00` or `Z`, into seconds east of UTC.
pub fn parse_utc_offset(text: &str) -> Result<i32, String> {
    let t = text.trim();
    if t == "Z" {
        return Ok(0);
    }
    let bad = || format!("{text:?} is not a UTC offset like \"+08:00\" or \"-05:30\"");
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: i32 = h.parse().map_err(|_| bad())?;
    let m: i32 = m.parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

/// The local calendar day of `now_ms` (days since 1970-01-01 in local time).
pub fn local_day(now_ms: i64, offset_seconds: i32) -> i64 {
    (now_ms + i64::from(offset_seconds) * 1000).div_euclid(DAY_MS)
}

/// A daily window of local time, `22:00-08:00`; a window whose end is before its start spans
/// midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    /// Milliseconds after local midnight; the start is inside the window, the end is not.
    start_ms: i64,
    end_ms: i64,
    offset_seconds: i32,
}

impl QuietHours {
    /// `window` is `HH:MM-HH:MM` (seconds allowed, `HH:MM:SS`); empty means no quiet hours.
    pub fn parse(window: &str, utc_offset: &str) -> Result<Option<QuietHours>, String> {
        let window = window.trim();
        if window.is_empty() {
            return Ok(None);
        }
        let (start, end) = window
            .split_once('-')
            .ok_or_else(|| format!("quiet hours {window:?} must look like \"22:00-08:00\""))?;
        let q = QuietHours {
            start_ms: time_of_day_ms(start)?,
            end_ms: time_of_day_ms(end)?,
            offset_seconds: parse_utc_offset(utc_offset)?,
        };
        if q.start_ms == q.end_ms {
            return Err(format!(
                "quiet hours {window:?} start and end at the same time"
            ));
        }
        Ok(Some(q))
    }

    /// When the window holding `now_ms` ends, or `None` outside the window.
    pub fn end_of_window(&self, now_ms: i64) -> Option<i64> {
        let local = now_ms + i64::from(self.offset_seconds) * 1000;
        let t = local.rem_euclid(DAY_MS);
        let (start, end) = (self.start_ms, self.end_ms);
        let until_end = if start < end {
            (start <= t && t < end).then(|| end - t)
        } else if t >= start {
            Some(DAY_MS - t + end)
        } else {
            (t < end).then(|| end - t)
        }?;
        Some(now_ms + until_end)
    }
}

fn time_of_day_ms(text: &str) -> Result<i64, String> {
    let bad = || format!("{text:?} is not a time of day like \"22:00\" or \"07:30:00\"");
    let parts: Vec<&str> = text.trim().split(':').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.len() != 2) {
        return Err(bad());
    }
    let mut n = [0i64; 3];
    for (i, p) in parts.iter().enumerate() {
        n[i] = p.parse().map_err(|_| bad())?;
    }
    if n[0] > 24 || n[1] > 59 || n[2] > 59 || (n[0] == 24 && (n[1] > 0 || n[2] > 0)) {
        return Err(bad());
    }
    Ok(((n[0] * 60 + n[1]) * 60 + n[2]) * 1000)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    #[test]
    fn offsets_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_utc_offset("+08:00"), Ok(8 * 3600));
        assert_eq!(parse_utc_offset("-05:30"), Ok(-(5 * 3600 + 1800)));
        assert_eq!(parse_utc_offset("Z"), Ok(0));
        for bad in ["8", "+8:00", "+25:00", "08:00", "+08:60", ""] {
            assert!(parse_utc_offset(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_window_across_midnight_ends_the_next_morning() {
        let q = QuietHours::parse("22:00-08:00", "+08:00").unwrap().unwrap();
        // 15:00 UTC is 23:00 local: the window ends 9 hours later.
        let day = 20_000 * 24 * H;
        assert_eq!(q.end_of_window(day + 15 * H), Some(day + 24 * H));
        // 23:00 UTC is 07:00 local: one hour left.
        assert_eq!(q.end_of_window(day + 23 * H), Some(day + 24 * H));
        // 02:00 UTC is 10:00 local: outside.
        assert_eq!(q.end_of_window(day + 2 * H), None);
        // The end itself is outside; the start inside.
        assert_eq!(q.end_of_window(day), None);
        assert_eq!(q.end_of_window(day + 14 * H), Some(day + 24 * H));
    }

    #[test]
    fn a_daytime_window_with_seconds() {
        let q = QuietHours::parse("12:00:00-12:00:30", "Z")
            .unwrap()
            .unwrap();
        let noon = 20_000 * 24 * H + 12 * H;
        assert_eq!(q.end_of_window(noon + 10_000), Some(noon + 30_000));
        assert_eq!(q.end_of_window(noon + 30_000), None);
        assert_eq!(q.end_of_window(noon - 1), None);
    }

    #[test]
    fn empty_means_off_and_nonsense_is_refused() {
        assert_eq!(QuietHours::parse("", "+08:00"), Ok(None));
        for bad in [
            "22-08",
            "22:00",
            "22:00-22:00",
            "25:00-01:00",
            "aa:bb-cc:dd",
        ] {
            assert!(QuietHours::parse(bad, "+08:00").is_err(), "{bad}");
        }
    }

    #[test]
    fn local_days_follow_the_offset() {
        let day = 20_000 * 24 * H;
        assert_eq!(local_day(day + 15 * H, 0), 20_000);
        assert_eq!(local_day(day + 17 * H, 8 * 3600), 20_001);
        assert_eq!(local_day(day + 2 * H, -3 * 3600), 19_999);
    }
}
