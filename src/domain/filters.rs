//! Audience filter settings: a source's dedup window and frequency caps, black- and whitelists,
//! and the filters a message carries, decided when it is accepted.

use std::collections::BTreeMap;

use msghub_actors::filters::AudienceFilters;
use msghub_actors::local_time::parse_utc_offset;
use msghub_actors::provider::ChannelType;
use serde::{Deserialize, Serialize};

use crate::error::{JumsError, jums};

/// Longest dedup window: 30 days.
pub const MAX_DEDUP_WINDOW_SECONDS: u32 = 30 * 24 * 3600;

/// A source's filter settings (stored as JSON with the source).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceFilters {
    /// The same content to the same target and channel type within this window is sent once;
    /// 0 is off.
    pub dedup_window_seconds: u32,
    /// Most messages per target (userid, or address for raw sends), channel type and day.
    pub caps: BTreeMap<ChannelType, u32>,
    /// The caps' day is the local day at this UTC offset.
    pub day_utc_offset: String,
}

impl Default for SourceFilters {
    fn default() -> Self {
        SourceFilters {
            dedup_window_seconds: 0,
            caps: BTreeMap::new(),
            day_utc_offset: "+08:00".into(),
        }
    }
}

impl SourceFilters {
    /// Check values a client set; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.dedup_window_seconds > MAX_DEDUP_WINDOW_SECONDS {
            return Err(format!(
                "dedup_window_seconds must be from 0 (off) to {MAX_DEDUP_WINDOW_SECONDS}"
            ));
        }
        if let Some((t, _)) = self.caps.iter().find(|(_, n)| **n == 0) {
            return Err(format!(
                "caps.{t}: a cap is at least 1; leave the channel type out for no cap"
            ));
        }
        parse_utc_offset(&self.day_utc_offset)
            .map(|_| ())
            .map_err(|e| format!("day_utc_offset: {e}"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListKind {
    Black,
    White,
}

impl ListKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListKind::Black => "black",
            ListKind::White => "white",
        }
    }

    pub fn parse(s: &str) -> Option<ListKind> {
        match s {
            "black" => Some(ListKind::Black),
            "white" => Some(ListKind::White),
            _ => None,
        }
    }
}

/// A list a source may use: global or its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListRef {
    pub id: i64,
    pub kind: ListKind,
    pub always: bool,
}

/// The filters of a message: the source's `always` lists and the ones `option.black_id` /
/// `white_id` name, its dedup window, and its caps on the channel types the message uses.
/// `None` when nothing filters (the common case, which then costs nothing downstream).
pub fn message_filters(
    settings: &SourceFilters,
    lists: &[ListRef],
    black_id: Option<i64>,
    white_id: Option<i64>,
    channel_types: &[ChannelType],
) -> Result<Option<Box<AudienceFilters>>, JumsError> {
    let mut f = AudienceFilters::default();
    for l in lists.iter().filter(|l| l.always) {
        match l.kind {
            ListKind::Black => f.blacklists.push(l.id),
            ListKind::White => f.whitelists.push(l.id),
        }
    }
    for (field, id, kind) in [
        ("black_id", black_id, ListKind::Black),
        ("white_id", white_id, ListKind::White),
    ] {
        let Some(id) = id else { continue };
        match lists.iter().find(|l| l.id == id) {
            Some(l) if l.kind == kind => {
                let ids = match kind {
                    ListKind::Black => &mut f.blacklists,
                    ListKind::White => &mut f.whitelists,
                };
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            Some(l) => {
                return Err(JumsError::invalid(format!(
                    "option.{field}: list {id} is a {}list",
                    l.kind.as_str()
                )));
            }
            None => {
                return Err(JumsError::invalid(format!(
                    "option.{field}: no {}list {id} for this source (create it with POST /api/lists)",
                    kind.as_str()
                )));
            }
        }
    }
    f.dedup_window_seconds = settings.dedup_window_seconds;
    f.caps = settings
        .caps
        .iter()
        .filter(|(t, _)| channel_types.contains(t))
        .map(|(t, n)| (*t, *n))
        .collect();
    if !f.caps.is_empty() {
        f.day_offset_seconds = parse_utc_offset(&settings.day_utc_offset).unwrap_or(0);
    }
    Ok((!f.is_empty()).then(|| Box::new(f)))
}

/// `option.black_id` / `option.white_id` together are refused the JUMS way.
pub fn check_one_list(black_id: Option<i64>, white_id: Option<i64>) -> Result<(), JumsError> {
    if black_id.is_some() && white_id.is_some() {
        return Err(JumsError::new(
            jums::BLACK_AND_WHITE_LIST,
            "option.black_id and option.white_id cannot be used together",
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn list(id: i64, kind: ListKind, always: bool) -> ListRef {
        ListRef { id, kind, always }
    }

    #[test]
    fn nothing_configured_means_no_filters() {
        let f = message_filters(
            &SourceFilters::default(),
            &[list(1, ListKind::Black, false)],
            None,
            None,
            &[ChannelType::Sms],
        )
        .unwrap();
        assert_eq!(f, None);
    }

    #[test]
    fn always_lists_named_lists_and_caps_of_used_types_are_taken() {
        let settings = SourceFilters {
            dedup_window_seconds: 60,
            caps: BTreeMap::from([(ChannelType::Sms, 3), (ChannelType::App, 10)]),
            day_utc_offset: "+01:00".into(),
        };
        let lists = [
            list(1, ListKind::Black, true),
            list(2, ListKind::Black, false),
            list(3, ListKind::White, false),
        ];
        let f = message_filters(&settings, &lists, Some(2), None, &[ChannelType::Sms])
            .unwrap()
            .unwrap();
        assert_eq!(f.blacklists, [1, 2]);
        assert!(f.whitelists.is_empty());
        assert_eq!(f.caps, BTreeMap::from([(ChannelType::Sms, 3)]));
        assert_eq!((f.dedup_window_seconds, f.day_offset_seconds), (60, 3600));
    }

    #[test]
    fn unknown_or_wrong_kind_lists_are_refused_with_4004() {
        let lists = [list(3, ListKind::White, false)];
        let s = SourceFilters::default();
        let e = message_filters(&s, &lists, Some(3), None, &[]).unwrap_err();
        assert_eq!(e.code, jums::INVALID_PARAMETER);
        assert!(e.message.contains("is a whitelist"), "{}", e.message);
        let e = message_filters(&s, &lists, None, Some(9), &[]).unwrap_err();
        assert!(e.message.contains("no whitelist 9"), "{}", e.message);
        assert_eq!(
            check_one_list(Some(1), Some(3)).unwrap_err().code,
            jums::BLACK_AND_WHITE_LIST
        );
    }

    #[test]
    fn settings_are_validated() {
        let mut s = SourceFilters::default();
        assert!(s.validate().is_ok());
        s.caps.insert(ChannelType::Sms, 0);
        assert!(s.validate().unwrap_err().contains("caps.sms"));
        s.caps.clear();
        s.day_utc_offset = "8".into();
        assert!(s.validate().unwrap_err().contains("day_utc_offset"));
    }
}
