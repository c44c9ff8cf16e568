//! Audience filters a message carries: the black- and whitelists that apply to it, dedup and
//! frequency caps. They are fixed when the message is accepted (from `option.black_id` /
//! `white_id` and the source's settings), so a message without filters costs nothing when
//! its shards are opened.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::provider::ChannelType;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudienceFilters {
    /// A target (userid or address) in any of these lists is skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blacklists: Vec<i64>,
    /// A target missing from any of these lists is skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub whitelists: Vec<i64>,
    /// The same content to the same target on the same channel type within this window is
    /// sent once; 0 is off.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dedup_window_seconds: u32,
    /// At most this many messages per target, channel type and local day.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub caps: BTreeMap<ChannelType, u32>,
    /// The caps' day is local to this offset east of UTC.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub day_offset_seconds: i32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

impl AudienceFilters {
    /// Whether nothing would be filtered (then the message carries no filters at all).
    pub fn is_empty(&self) -> bool {
        self.blacklists.is_empty()
            && self.whitelists.is_empty()
            && self.dedup_window_seconds == 0
            && self.caps.is_empty()
    }
}

/// Why a target got no delivery; stored as the skipped delivery's `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    Blacklisted,
    NotWhitelisted,
    /// The same content reached the target within the source's dedup window.
    Duplicate,
    /// The target's frequency cap for the day is used up.
    Capped,
    /// The address is suppressed (gone, unsubscribed, blocked or by hand).
    Suppressed,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Blacklisted => "blacklisted",
            SkipReason::NotWhitelisted => "not_whitelisted",
            SkipReason::Duplicate => "duplicate",
            SkipReason::Capped => "capped",
            SkipReason::Suppressed => "suppressed",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn filters_round_trip_compactly() {
        let f = AudienceFilters {
            blacklists: vec![3],
            caps: BTreeMap::from([(ChannelType::Sms, 3)]),
            day_offset_seconds: 28_800,
            ..AudienceFilters::default()
        };
        let text = serde_json::to_string(&f).unwrap();
        assert_eq!(
            text,
            r#"{"blacklists":[3],"caps":{"sms":3},"day_offset_seconds":28800}"#
        );
        assert_eq!(serde_json::from_str::<AudienceFilters>(&text).unwrap(), f);
        assert!(AudienceFilters::default().is_empty());
    }
}
