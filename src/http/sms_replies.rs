//! SMS replies ("上行短信"), pushed to an `sms` channel's receipt URL: Aliyun SmsUp (a JSON
//! array of `{phone_number, send_time, content, sign_name, dest_code, sequence_id}`, the same
//! shape as its SmsReport pushes but with `content`) and Tencent's reply callback (one JSON
//! object `{extend, mobile, nationcode, sign, text, time}`). A reply that is an unsubscribe
//! keyword (`strategies.sms_unsubscribe_replies`: "TD", "T", "R", "退订", …) opts the number
//! out of marketing: suppressed with reason `opted_out` and the keyword as its code, so
//! priority-3 messages skip it while verification codes and notices still reach it. Other
//! replies are counted and left alone. Replies carry no message id: the opt-out is the number's.

use std::collections::HashSet;

use msghub_actors::provider::ChannelType;
use serde_json::Value;

use super::State;
use crate::error::ApiError;
use crate::storage::suppressions::SuppressReason;

/// One reply: the number as the provider names it, and what the user wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SmsReply {
    pub(super) number: String,
    pub(super) text: String,
}

/// The replies that unsubscribe, normalised as [`normalise`] reads a reply.
#[derive(Debug, Clone, Default)]
pub struct UnsubscribeReplies(HashSet<String>);

impl UnsubscribeReplies {
    /// From the setting; a keyword that normalises to nothing is refused.
    pub fn new(keywords: &[String]) -> Result<Self, String> {
        let mut set = HashSet::new();
        for k in keywords {
            let n = normalise(k);
            if n.is_empty() || n.chars().count() > 32 {
                return Err(format!(
                    "{k:?}: a keyword must have 1 to 32 characters besides spaces and punctuation"
                ));
            }
            set.insert(n);
        }
        Ok(UnsubscribeReplies(set))
    }

    /// The keyword `text` is, if it is one.
    pub(super) fn keyword(&self, text: &str) -> Option<String> {
        let n = normalise(text);
        self.0.contains(&n).then_some(n)
    }
}

/// A reply as it is compared: full-width ASCII forms read as ASCII, ASCII letters upper case,
/// spaces dropped wherever they are and punctuation around it ("td。", " Ｔ Ｄ " and "TD!" are
/// "TD").
fn normalise(text: &str) -> String {
    let ascii: String = text
        .chars()
        .map(|c| match u32::from(c) {
            0xFF01..=0xFF5E => char::from_u32(u32::from(c) - 0xFEE0).unwrap_or(c),
            0x3000 => ' ',
            _ => c,
        })
        .filter(|c| !c.is_whitespace())
        .collect();
    ascii
        .trim_matches(|c: char| {
            c.is_ascii_punctuation() || "。，、！？；：“”‘’【】《》…".contains(c)
        })
        .to_ascii_uppercase()
}

fn text_of(item: &Value, key: &str) -> Option<String> {
    item.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 1024)
        .map(str::to_string)
}

/// Whether an item of an Aliyun push is an SmsUp reply (it has `content`) rather than an
/// SmsReport (`success`, `biz_id`).
pub(super) fn is_aliyun_reply(item: &Value) -> bool {
    item.get("content").is_some() && item.get("success").is_none()
}

/// An Aliyun SmsUp item; `None` when it names no number or carries no text.
pub(super) fn aliyun_reply(item: &Value) -> Option<SmsReply> {
    let number = text_of(item, "phone_number").filter(|n| {
        let digits = n.strip_prefix('+').unwrap_or(n);
        (5..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    })?;
    let text = item.get("content").and_then(Value::as_str)?.to_string();
    Some(SmsReply { number, text })
}

/// Whether a Tencent push is a reply callback (one object), not status callbacks (an array).
pub(super) fn is_tencent_reply(body: &Value) -> bool {
    body.is_object()
}

/// A Tencent reply callback; the number as `+{nationcode}{mobile}` when it has a nation code.
pub(super) fn tencent_reply(body: &Value) -> Result<SmsReply, String> {
    let mobile = text_of(body, "mobile")
        .filter(|m| m.len() <= 20 && m.bytes().all(|b| b.is_ascii_digit()))
        .ok_or("mobile: a national number of digits")?;
    // Documented as a string; a number is read as one.
    let nationcode = match body.get("nationcode") {
        Some(Value::Number(n)) => n.to_string(),
        _ => text_of(body, "nationcode").unwrap_or_default(),
    };
    if !nationcode.bytes().all(|b| b.is_ascii_digit()) || nationcode.len() > 4 {
        return Err("nationcode: 1 to 4 digits".into());
    }
    let text = body
        .get("text")
        .and_then(Value::as_str)
        .ok_or("text: the reply")?
        .to_string();
    // "0086" is 86.
    let nationcode = nationcode.trim_start_matches('0');
    let number = if nationcode.is_empty() {
        mobile
    } else {
        format!("+{nationcode}{mobile}")
    };
    Ok(SmsReply { number, text })
}

/// Suppress the numbers whose reply unsubscribes; count every reply by what it came to.
pub(super) async fn apply(
    state: &State,
    replies: &[SmsReply],
    invalid: u64,
) -> Result<(), ApiError> {
    let mut by_keyword: Vec<(String, &str)> = Vec::new();
    for r in replies {
        match state.unsubscribe_replies.keyword(&r.text) {
            Some(k) => by_keyword.push((k, &r.number)),
            None => metrics::counter!("msghub_sms_replies_total", "result" => "other").increment(1),
        }
    }
    if invalid > 0 {
        metrics::counter!("msghub_sms_replies_total", "result" => "invalid").increment(invalid);
    }
    by_keyword.sort_unstable();
    for group in by_keyword.chunk_by(|a, b| a.0 == b.0) {
        let numbers: Vec<&str> = group.iter().map(|(_, n)| *n).collect();
        state
            .db
            .add_suppressions(
                ChannelType::Sms,
                &numbers,
                SuppressReason::OptedOut,
                Some(&group[0].0),
            )
            .await
            .map_err(|e| ApiError::internal("opting numbers out of marketing", &e))?;
        metrics::counter!("msghub_sms_replies_total", "result" => "unsubscribe")
            .increment(numbers.len() as u64);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn unsubscribe_keywords_match_however_the_reply_is_written() {
        let k = UnsubscribeReplies::new(&["TD".into(), "退订".into(), "t".into()]).unwrap();
        for text in [
            "TD",
            "td",
            " Td。",
            "ＴＤ",
            "Ｔ Ｄ!",
            "退订",
            "【退订】",
            "t",
            "T.",
        ] {
            assert!(k.keyword(text).is_some(), "{text:?}");
        }
        assert_eq!(k.keyword("ｔｄ").as_deref(), Some("TD"));
        for text in ["TDX", "please TD", "好的", "", "1", "退订了吗"] {
            assert_eq!(k.keyword(text), None, "{text:?}");
        }
        assert!(UnsubscribeReplies::new(&["。".into()]).is_err());
        assert!(
            UnsubscribeReplies::new(&[])
                .unwrap()
                .keyword("TD")
                .is_none()
        );
    }

    #[test]
    fn replies_are_read_in_their_documented_shapes() {
        let up = json!({"phone_number": "1381111222", "send_time": "2017-09-01 00:00:00",
                        "content": "TD", "sign_name": "签名", "dest_code": "1234",
                        "sequence_id": 1234567890});
        let report = json!({"phone_number": "13811112222", "success": true, "biz_id": "1^2",
                            "out_id": "5", "err_code": "DELIVERED"});
        assert!(is_aliyun_reply(&up));
        assert!(!is_aliyun_reply(&report));
        assert_eq!(
            aliyun_reply(&up),
            Some(SmsReply {
                number: "1381111222".into(),
                text: "TD".into()
            })
        );
        assert_eq!(aliyun_reply(&json!({"content": "TD"})), None);
        assert_eq!(
            aliyun_reply(&json!({"phone_number": "138-1111", "content": "TD"})),
            None
        );

        let reply = json!({"extend": "", "mobile": "13800000001", "nationcode": "86",
                           "sign": "签名", "text": "退订", "time": 1457336869});
        assert!(is_tencent_reply(&reply));
        assert!(!is_tencent_reply(&json!([reply.clone()])));
        assert_eq!(
            tencent_reply(&reply).unwrap(),
            SmsReply {
                number: "+8613800000001".into(),
                text: "退订".into()
            }
        );
        assert!(tencent_reply(&json!({"mobile": "138-0000", "text": "TD"})).is_err());
        assert!(
            tencent_reply(&json!({"mobile": "13800000001", "nationcode": "x", "text": "TD"}))
                .is_err()
        );
        assert!(tencent_reply(&json!({"mobile": "13800000001", "nationcode": "86"})).is_err());
        assert!(is_tencent_reply(&json!({"mobile": "13800000001"})));
        assert_eq!(
            tencent_reply(&json!({"mobile": "91234567", "nationcode": 852, "text": "TD"}))
                .unwrap()
                .number,
            "+85291234567"
        );
        assert_eq!(
            tencent_reply(&json!({"mobile": "13800000001", "nationcode": "0086", "text": "TD"}))
                .unwrap()
                .number,
            "+8613800000001"
        );
    }
}
