//! The JUMS callback item: event kinds, channel (`sender`) codes, and the JSON one item is.

use std::sync::Arc;

use msghub_actors::provider::ChannelType;
use serde::{Serialize, Serializer};
use serde_json::Value;

/// The JUMS item `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CallbackKind {
    TargetValid = 0,
    TargetInvalid = 1,
    Submitted = 2,
    SubmitFailed = 3,
    Delivered = 4,
    DeliveryFailed = 5,
    Clicked = 6,
    Retracted = 7,
    RetractFailed = 8,
}

impl CallbackKind {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Kinds whose items carry `error` (JUMS: target invalid, submit failed, delivery failed,
    /// retract failed).
    pub fn has_error(self) -> bool {
        matches!(
            self,
            CallbackKind::TargetInvalid
                | CallbackKind::SubmitFailed
                | CallbackKind::DeliveryFailed
                | CallbackKind::RetractFailed
        )
    }
}

/// Something that happened to one delivery, to be reported to the message's callback URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackEvent {
    pub kind: CallbackKind,
    /// The customer's userid; `None` for raw-address sends (reported as `""`).
    pub userid: Option<String>,
    pub channel_type: ChannelType,
    /// The channel address (`sender_id`): registration id, openid, phone, email, ...
    pub address: String,
    /// `(code, message)`, reported for the kinds where [`CallbackKind::has_error`].
    pub error: Option<(String, String)>,
    /// When it happened, unix milliseconds (`sent_time` is reported in seconds).
    pub at_ms: i64,
}

/// The JUMS `sender` code of a channel type. JUMS defines 1–7; for WeCom its SDK's enum yields
/// 10 (its comments say 9), and msghub uses 10. Feishu and webhook are msghub's own channel
/// types and get codes outside the JUMS range.
pub fn sender_code(t: ChannelType) -> u16 {
    match t {
        ChannelType::App => 1,
        ChannelType::Wechatoa => 2,
        ChannelType::Wechatmp => 3,
        ChannelType::Email => 4,
        ChannelType::Sms => 5,
        ChannelType::DingtalkCc => 6,
        ChannelType::AlipayLife => 7,
        ChannelType::Wechatwk => 10,
        ChannelType::Webhook => 100,
        ChannelType::Feishu => 101,
    }
}

/// `callback.params`, shared by every item of a message rather than copied into each.
#[derive(Debug, Clone, PartialEq)]
pub struct Params(pub Arc<Value>);

impl Serialize for Params {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemError {
    /// JUMS clients read an integer: the provider's code when it is numeric, else -1 with the
    /// code at the start of `message`.
    pub code: i64,
    pub message: String,
}

impl ItemError {
    pub fn new(code: &str, message: &str) -> ItemError {
        match code.trim().parse::<i64>() {
            Ok(n) => ItemError {
                code: n,
                message: message.to_string(),
            },
            Err(_) if message.is_empty() => ItemError {
                code: -1,
                message: code.to_string(),
            },
            Err(_) => ItemError {
                code: -1,
                message: format!("{code}: {message}"),
            },
        }
    }
}

/// One element of the POSTed array, field for field as JUMS sends it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallbackItem {
    #[serde(rename = "type")]
    pub kind: u8,
    pub channelkey: Arc<str>,
    pub msgid: String,
    pub userid: String,
    pub sender_id: String,
    pub sender: u16,
    pub sent_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ItemError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<Params>,
}

impl CallbackItem {
    pub fn new(
        channelkey: Arc<str>,
        msgid: i64,
        event: CallbackEvent,
        params: Option<Params>,
    ) -> CallbackItem {
        let error = event.kind.has_error().then(|| match &event.error {
            Some((code, message)) => ItemError::new(code, message),
            None => ItemError {
                code: -1,
                message: String::new(),
            },
        });
        CallbackItem {
            kind: event.kind.code(),
            channelkey,
            msgid: msgid.to_string(),
            userid: event.userid.unwrap_or_default(),
            sender_id: event.address,
            sender: sender_code(event.channel_type),
            sent_time: event.at_ms.div_euclid(1000),
            error,
            params,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(kind: CallbackKind, error: Option<(&str, &str)>) -> CallbackEvent {
        CallbackEvent {
            kind,
            userid: Some("u1".into()),
            channel_type: ChannelType::Sms,
            address: "13900000001".into(),
            error: error.map(|(c, m)| (c.into(), m.into())),
            at_ms: 1_700_000_000_999,
        }
    }

    #[test]
    fn items_have_the_jums_fields() {
        let params = Params(Arc::new(json!({"order": "A1"})));
        let item = CallbackItem::new(
            "src_k".into(),
            42,
            event(CallbackKind::Submitted, None),
            Some(params),
        );
        assert_eq!(
            serde_json::to_value(&item).unwrap(),
            json!({"type": 2, "channelkey": "src_k", "msgid": "42", "userid": "u1",
                   "sender_id": "13900000001", "sender": 5, "sent_time": 1_700_000_000,
                   "params": {"order": "A1"}})
        );
    }

    #[test]
    fn errors_appear_only_on_failure_kinds_with_an_integer_code() {
        let failed = CallbackItem::new(
            "k".into(),
            1,
            event(CallbackKind::SubmitFailed, Some(("1011", "no such regid"))),
            None,
        );
        let v = serde_json::to_value(&failed).unwrap();
        assert_eq!(
            v["error"],
            json!({"code": 1011, "message": "no such regid"})
        );
        assert!(v.get("params").is_none());
        let named = ItemError::new("isv.MOBILE_NUMBER_ILLEGAL", "bad number");
        assert_eq!(named.code, -1);
        assert_eq!(named.message, "isv.MOBILE_NUMBER_ILLEGAL: bad number");
        let ok = CallbackItem::new(
            "k".into(),
            1,
            event(CallbackKind::Delivered, Some(("x", "y"))),
            None,
        );
        assert_eq!(ok.error, None);
    }
}
