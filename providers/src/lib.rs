//! Delivery adapters: one [`Provider`] per configured channel, built from its credential JSON.
//!
//! The dispatch topology only knows the port trait in `msghub_actors::provider`; this crate turns
//! a channel row (type + credentials) into an implementation of it. The contract every adapter
//! follows is written down in `docs/specs/provider.md`.

use std::sync::Arc;
use std::time::Duration;

use msghub_actors::provider::{ChannelType, Provider};

mod alipay;
mod aliyun;
mod creds;
mod dingtalk;
mod feishu;
mod http;
mod jpush;
mod sms;
pub mod smtp;
mod tencent;
mod token;
mod webhook;
mod wechat;
mod wecom;

/// The code of a content an adapter refuses before any call: permanent, the request is wrong.
pub(crate) const INVALID_CONTENT: &str = "invalid_content";

/// A content refused before any call, with the reason.
pub(crate) fn rejected(message: impl Into<String>) -> msghub_actors::provider::Outcome {
    msghub_actors::provider::Outcome::failed(
        msghub_actors::provider::OutcomeClass::Perm,
        INVALID_CONTENT,
        message,
    )
}

/// The E.164 form in which the `sms` adapters send a number (an 11-digit mainland number gets
/// `+86`, `00` reads as `+`), `None` for what they do not send. Receipts that name a number are
/// compared in this form.
pub fn sms_e164(address: &str) -> Option<String> {
    tencent::e164(address)
}

/// Every spelling of `address` that the `sms` adapters send as the same number — for a
/// mainland number `+86138…`, `0086138…`, `138…` and `86138…`; for another `+852…`, `00852…`
/// and `852…` (Aliyun takes international numbers without a prefix, when the digits alone are
/// no other number) — E.164 first. Just the address (trimmed) for what is no number.
pub fn sms_spellings(address: &str) -> Vec<String> {
    let a = address.trim();
    let e164 = tencent::e164(a).or_else(|| {
        // Digits alone that are no mainland number: an international one, as Aliyun reads it.
        ((6..=15).contains(&a.len()) && a.bytes().all(|b| b.is_ascii_digit()))
            .then(|| format!("+{a}"))
    });
    let Some(e164) = e164 else {
        return vec![a.to_string()];
    };
    let digits = &e164[1..];
    let mut out = vec![e164.clone(), format!("00{digits}")];
    match e164
        .strip_prefix("+86")
        .filter(|n| n.len() == 11 && n.starts_with('1'))
    {
        Some(national) => {
            out.push(national.to_string());
            out.push(format!("86{national}"));
        }
        // Unless the digits alone read as another number (`1…` of eleven digits is mainland
        // China to the adapters, so `+1 312…` has no such spelling).
        None if tencent::e164(digits).is_none() => out.push(digits.to_string()),
        None => {}
    }
    out
}

/// The message key of a `wechatoa` channel's `encoding_aes_key`, as its credentials are
/// validated.
pub fn wechat_aes_key(encoding_aes_key: &str) -> Option<[u8; 32]> {
    wechat::config::aes_key(encoding_aes_key)
}

/// Knobs for the adapters built by [`build`]: process-wide ones plus the channel's receipt URL.
#[derive(Clone, PartialEq, Eq)]
pub struct AdapterOptions {
    /// Upper bound for one provider call (HTTP request or SMTP transaction), connect included.
    pub request_timeout: Duration,
    /// Connections kept per adapter (HTTP idle pool per host, SMTP pool size), and the number of
    /// concurrent calls a max-batch-1 adapter makes when handed several targets at once.
    pub pool_size: usize,
    /// The most calls the dispatcher has under way on one channel at once (its lanes'
    /// in-flight budgets). An HTTP adapter keeps at least that many idle connections, so a
    /// busy channel reuses its connections instead of closing the surplus after each call and
    /// opening new ones (a connect per request, on both ends).
    pub max_calls: usize,
    /// The channel's receipt endpoint (`http://HOST:PORT/receipts/{channel_id}/{token}`), for
    /// providers that take a receipt address per request (JPush `callback.url`). `None` asks for
    /// no receipts. It carries a token, so `Debug` redacts it.
    pub receipt_url: Option<String>,
    /// The channel's one-click unsubscribe links, for media that carry them (email's
    /// `List-Unsubscribe`). `None`: none are added.
    pub unsubscribe: Option<UnsubscribeLinks>,
    /// The hub's return paths for email (VERP), so bounces name their delivery. `None`: the
    /// envelope sender is the channel's from address and bounces go wherever that leads.
    pub bounces: Option<BounceAddresses>,
}

impl Default for AdapterOptions {
    fn default() -> Self {
        AdapterOptions {
            request_timeout: Duration::from_secs(10),
            pool_size: 8,
            max_calls: 8,
            receipt_url: None,
            unsubscribe: None,
            bounces: None,
        }
    }
}

/// Whether `a` and `b` are equal, in a time that depends on their lengths only: for comparing
/// signatures and tokens.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The first `bytes` bytes (at most 32) of the HMAC-SHA256 of `data` under `key`, in hex.
fn hmac_hex(key: &[u8; 32], data: &[u8], bytes: usize) -> String {
    use hmac::{KeyInit as _, Mac as _};
    let Ok(mut mac) = <hmac::Hmac<sha2::Sha256>>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(data);
    hex::encode(&mac.finalize().into_bytes()[..bytes.min(32)])
}

/// One-click unsubscribe links (RFC 8058) of a channel: `{base}?a=<address>&s=<signature>`,
/// the signature an HMAC-SHA256 of the address under a key of the channel's own, so a link
/// unsubscribes the address it was sent to and no other. The adapter makes them; the hub's
/// endpoint checks them with the same key.
#[derive(Clone, PartialEq, Eq)]
pub struct UnsubscribeLinks {
    /// `http://HOST:PORT/unsubscribe/{channel_id}`.
    pub base: String,
    /// Derived from the hub's master key, per channel.
    pub key: [u8; 32],
}

impl std::fmt::Debug for UnsubscribeLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnsubscribeLinks")
            .field("base", &self.base)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl UnsubscribeLinks {
    /// The signature of `address` (32 hex digits).
    pub fn signature(&self, address: &str) -> String {
        hmac_hex(&self.key, address.as_bytes(), 16)
    }

    /// Whether `signature` is `address`'s, compared in constant time.
    pub fn verify(&self, address: &str, signature: &str) -> bool {
        constant_time_eq(self.signature(address).as_bytes(), signature.as_bytes())
    }

    /// The link for `address`.
    pub fn link(&self, address: &str) -> String {
        use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
        format!(
            "{}?a={}&s={}",
            self.base,
            utf8_percent_encode(address, NON_ALPHANUMERIC),
            self.signature(address)
        )
    }
}

/// Return paths (SMTP envelope senders) that name the delivery they were sent for (VERP):
/// `{local}+{msgid}.{delivery id}.{tag}@{domain}`, the ids in base 36 and the tag 16 hex
/// digits of an HMAC-SHA256 of both under a key derived from the hub's master key. Mail
/// servers send bounces (delivery status notifications) to the return path; the hub's bounce
/// listener, the MX of `domain`, reads the delivery from the recipient address and refuses
/// addresses it did not make. The local part stays within SMTP's 64 characters.
#[derive(Clone, PartialEq, Eq)]
pub struct BounceAddresses {
    pub local: String,
    pub domain: String,
    pub key: [u8; 32],
}

impl std::fmt::Debug for BounceAddresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BounceAddresses")
            .field("local", &self.local)
            .field("domain", &self.domain)
            .field("key", &"<redacted>")
            .finish()
    }
}

const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

fn to_base36(mut n: u64) -> String {
    let mut digits = Vec::with_capacity(13);
    loop {
        digits.push(BASE36[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

fn from_base36(text: &str) -> Option<i64> {
    if text.is_empty() || text.len() > 13 {
        return None;
    }
    let mut n: u64 = 0;
    for c in text.bytes() {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'z' => c - b'a' + 10,
            b'A'..=b'Z' => c - b'A' + 10,
            _ => return None,
        };
        n = n.checked_mul(36)?.checked_add(u64::from(d))?;
    }
    i64::try_from(n).ok()
}

impl BounceAddresses {
    fn tag(&self, msgid: i64, delivery_id: i64) -> String {
        hmac_hex(&self.key, format!("{msgid}.{delivery_id}").as_bytes(), 8)
    }

    /// The return path of delivery `delivery_id` of message `msgid` (ids are positive; a
    /// negative one has none).
    pub fn return_path(&self, msgid: i64, delivery_id: i64) -> Option<String> {
        Some(format!(
            "{}+{}.{}.{}@{}",
            self.local,
            to_base36(u64::try_from(msgid).ok()?),
            to_base36(u64::try_from(delivery_id).ok()?),
            self.tag(msgid, delivery_id),
            self.domain
        ))
    }

    /// Where mailbox providers send abuse feedback reports (ARF) about the hub's mail:
    /// `{local}+fbl@{domain}`, registered with each provider's feedback loop.
    pub fn feedback_address(&self) -> String {
        format!("{}+fbl@{}", self.local, self.domain)
    }

    /// Whether `address` is [`BounceAddresses::feedback_address`] (case aside).
    pub fn is_feedback_address(&self, address: &str) -> bool {
        address
            .trim()
            .eq_ignore_ascii_case(&self.feedback_address())
    }

    /// The (message, delivery) a bounce to `address` is for, when this hub made the address:
    /// the local part and domain are compared without case (mail servers may change it), the
    /// tag in constant time.
    pub fn parse(&self, address: &str) -> Option<(i64, i64)> {
        let (local, domain) = address.trim().rsplit_once('@')?;
        if !domain.eq_ignore_ascii_case(&self.domain) {
            return None;
        }
        let (prefix, token) = local.split_once('+')?;
        if !prefix.eq_ignore_ascii_case(&self.local) {
            return None;
        }
        let mut parts = token.split('.');
        let (msgid, delivery, tag) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let (msgid, delivery) = (from_base36(msgid)?, from_base36(delivery)?);
        let expected = self.tag(msgid, delivery);
        constant_time_eq(expected.as_bytes(), tag.to_ascii_lowercase().as_bytes())
            .then_some((msgid, delivery))
    }
}

impl std::fmt::Debug for AdapterOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdapterOptions")
            .field("request_timeout", &self.request_timeout)
            .field("pool_size", &self.pool_size)
            .field("max_calls", &self.max_calls)
            .field(
                "receipt_url",
                &self.receipt_url.as_ref().map(|_| "<redacted>"),
            )
            .field("unsubscribe", &self.unsubscribe)
            .field("bounces", &self.bounces)
            .finish()
    }
}

/// Why a channel's credentials cannot be turned into an adapter.
///
/// Messages name the channel type and the field, never a credential value, so they can be shown
/// to API callers and logged as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{kind}: credentials must be a JSON object")]
    NotAnObject { kind: ChannelType },
    #[error("{kind}: {field} is required")]
    Missing {
        kind: ChannelType,
        field: &'static str,
    },
    #[error("{kind}: unknown field {field:?}")]
    UnknownField { kind: ChannelType, field: String },
    #[error("{kind}: {field} {reason}")]
    Invalid {
        kind: ChannelType,
        field: String,
        reason: String,
    },
    #[error("{kind}: cannot build client: {reason}")]
    Client { kind: ChannelType, reason: String },
}

/// The SMS provider behind an `sms` channel, named by its credentials' `provider` field
/// (absent: Aliyun, the first one msghub spoke).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsVendor {
    Aliyun,
    Tencent,
}

impl SmsVendor {
    pub fn of(credentials: &serde_json::Value) -> Result<SmsVendor, ConfigError> {
        match credentials.get("provider") {
            None | Some(serde_json::Value::Null) => Ok(SmsVendor::Aliyun),
            Some(serde_json::Value::String(s)) if s == "aliyun" => Ok(SmsVendor::Aliyun),
            Some(serde_json::Value::String(s)) if s == "tencent" => Ok(SmsVendor::Tencent),
            Some(_) => Err(ConfigError::Invalid {
                kind: ChannelType::Sms,
                field: "provider".into(),
                reason: "must be \"aliyun\" or \"tencent\"".into(),
            }),
        }
    }
}

/// Secret credential fields of `sms` channels, whichever their provider: Aliyun's
/// `access_key_secret` and Tencent's `secret_key`.
const SMS_SECRETS: &[&str] = &["access_key_secret", "secret_key"];

/// Build the adapter for one configured channel.
///
/// Clients (HTTP pool, SMTP pool) are created here and shared by every call of the adapter, so
/// build once per channel configuration and keep the `Arc`.
pub fn build(
    kind: ChannelType,
    credentials: &serde_json::Value,
    options: &AdapterOptions,
) -> Result<Arc<dyn Provider>, ConfigError> {
    match kind {
        ChannelType::App => jpush::build(credentials, options),
        ChannelType::Sms => match SmsVendor::of(credentials)? {
            SmsVendor::Aliyun => aliyun::build(credentials, options),
            SmsVendor::Tencent => tencent::build(credentials, options),
        },
        ChannelType::Email => smtp::build(credentials, options),
        ChannelType::Wechatoa | ChannelType::Wechatmp => wechat::build(kind, credentials, options),
        ChannelType::Wechatwk => wecom::build(credentials, options),
        ChannelType::Feishu => feishu::build(credentials, options),
        ChannelType::AlipayLife => alipay::build(credentials, options),
        ChannelType::DingtalkCc => dingtalk::build(credentials, options),
        ChannelType::Webhook => webhook::build(credentials, options),
    }
}

/// Check credentials exactly as [`build`] does, without creating any client.
pub fn validate(kind: ChannelType, credentials: &serde_json::Value) -> Result<(), ConfigError> {
    match kind {
        ChannelType::App => jpush::config::parse(credentials).map(drop),
        ChannelType::Sms => match SmsVendor::of(credentials)? {
            SmsVendor::Aliyun => aliyun::config::parse(credentials).map(drop),
            SmsVendor::Tencent => tencent::config::parse(credentials).map(drop),
        },
        ChannelType::Email => smtp::config::parse(credentials).map(drop),
        ChannelType::Wechatoa | ChannelType::Wechatmp => {
            wechat::config::parse(kind, credentials).map(drop)
        }
        ChannelType::Wechatwk => wecom::config::parse(credentials).map(drop),
        ChannelType::Feishu => feishu::config::parse(credentials).map(drop),
        ChannelType::AlipayLife => alipay::config::parse(credentials).map(drop),
        ChannelType::DingtalkCc => dingtalk::config::parse(credentials).map(drop),
        ChannelType::Webhook => webhook::config::parse(credentials).map(drop),
    }
}

/// Check a `msg_<type>` content as the adapter of `kind` will before its call, for the types
/// whose check does not depend on the channel's credentials (`wechatoa`, `wechatmp`,
/// `wechatwk`, `feishu`, `alipay_life`, `dingtalk_cc`), so the
/// send API refuses what would certainly fail instead of accepting it. `Ok` for other types.
pub fn check_content(kind: ChannelType, content: &serde_json::Value) -> Result<(), String> {
    let refused = match kind {
        ChannelType::Wechatoa => wechat::parse_content(content).err(),
        ChannelType::Wechatmp => wechat::subscribe::parse_content(content).err(),
        ChannelType::Wechatwk => wecom::parse_content(content).err(),
        ChannelType::Feishu => feishu::parse_content(content).err(),
        ChannelType::AlipayLife => alipay::parse_content(content).err(),
        ChannelType::DingtalkCc => dingtalk::parse_content(content).err(),
        _ => None,
    };
    refused.map_or(Ok(()), |outcome| Err(outcome.message))
}

/// Top-level credential fields whose whole value is secret and must be masked when read back.
pub fn secret_fields(kind: ChannelType) -> &'static [&'static str] {
    match kind {
        ChannelType::App => jpush::config::SECRETS,
        ChannelType::Sms => SMS_SECRETS,
        ChannelType::Email => smtp::config::SECRETS,
        ChannelType::Wechatoa | ChannelType::Wechatmp => wechat::config::SECRETS,
        ChannelType::Wechatwk => wecom::config::SECRETS,
        ChannelType::Feishu => feishu::config::SECRETS,
        ChannelType::AlipayLife => alipay::config::SECRETS,
        ChannelType::DingtalkCc => dingtalk::config::SECRETS,
        ChannelType::Webhook => webhook::config::SECRETS,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    #[test]
    fn return_paths_name_their_delivery_and_nothing_else() {
        let b = super::BounceAddresses {
            local: "bounce".into(),
            domain: "bounces.example.com".into(),
            key: [9u8; 32],
        };
        let msgid = 7_346_283_109_876_543_210 >> 3;
        let path = b.return_path(msgid, 123_456_789).unwrap();
        assert_eq!(b.return_path(-1, 5), None);
        assert!(b.is_feedback_address("Bounce+FBL@bounces.example.com"));
        assert!(!b.is_feedback_address("bounce+fbl@example.com"));
        assert_eq!(b.parse(&b.feedback_address()), None);
        assert_eq!(b.return_path(5, -1), None);
        let (local, domain) = path.rsplit_once('@').unwrap();
        assert_eq!(domain, "bounces.example.com");
        assert!(local.len() <= 64, "{path}");
        assert!(local.starts_with("bounce+"), "{path}");
        assert_eq!(b.parse(&path), Some((msgid, 123_456_789)));
        // Mail servers may change case.
        assert_eq!(b.parse(&path.to_uppercase()), Some((msgid, 123_456_789)));
        assert_eq!(b.parse(&format!(" {path} ")), Some((msgid, 123_456_789)));
        // Another delivery's tag, another key, another domain, a changed id: refused.
        let other = b.return_path(msgid, 123_456_790).unwrap();
        let other_tag = other.split('.').nth(2).unwrap().split('@').next().unwrap();
        let forged = format!(
            "bounce+{}.{}.{other_tag}@bounces.example.com",
            super::to_base36(msgid as u64),
            super::to_base36(123_456_789)
        );
        assert_eq!(b.parse(&forged), None);
        let mut rekeyed = b.clone();
        rekeyed.key = [8u8; 32];
        assert_eq!(rekeyed.parse(&path), None);
        assert_eq!(
            b.parse(&path.replace("bounces.example.com", "example.com")),
            None
        );
        assert_eq!(b.parse(&path.replace("bounce+", "other+")), None);
        for bad in [
            "",
            "bounce@bounces.example.com",
            "bounce+1.2@bounces.example.com",
            "bounce+1.2.3.4@bounces.example.com",
            "bounce+!.2.00@bounces.example.com",
            "bounce+zzzzzzzzzzzzzz.1.00@bounces.example.com",
        ] {
            assert_eq!(b.parse(bad), None, "{bad}");
        }
        assert_eq!(
            super::from_base36(&super::to_base36(i64::MAX as u64)),
            Some(i64::MAX)
        );
        assert_eq!(super::to_base36(0), "0");
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn unsubscribe_links_are_signed_per_address_and_channel() {
        let links = UnsubscribeLinks {
            base: "http://127.0.0.1:8080/unsubscribe/4".into(),
            key: [7u8; 32],
        };
        let link = links.link("a.b+news@example.com");
        let sig = links.signature("a.b+news@example.com");
        assert_eq!(
            link,
            format!("http://127.0.0.1:8080/unsubscribe/4?a=a%2Eb%2Bnews%40example%2Ecom&s={sig}")
        );
        assert_eq!(sig.len(), 32);
        assert!(links.verify("a.b+news@example.com", &sig));
        assert!(!links.verify("other@example.com", &sig));
        assert!(!links.verify("a.b+news@example.com", &sig[..31]));
        let other = UnsubscribeLinks {
            key: [8u8; 32],
            ..links.clone()
        };
        assert!(!other.verify("a.b+news@example.com", &sig));
        assert!(!format!("{links:?}").contains("7, 7"));
    }

    #[test]
    fn every_spelling_of_a_number_is_sent_as_that_number() {
        let mainland = sms_spellings("8613800000001");
        assert_eq!(
            mainland,
            vec![
                "+8613800000001",
                "008613800000001",
                "13800000001",
                "8613800000001"
            ]
        );
        for spelling in &mainland {
            assert_eq!(sms_e164(spelling).as_deref(), Some("+8613800000001"));
            assert_eq!(&sms_spellings(spelling), &mainland, "{spelling}");
        }
        let hk = sms_spellings("0085291234567");
        assert_eq!(hk, vec!["+85291234567", "0085291234567", "85291234567"]);
        for spelling in &hk {
            assert_eq!(&sms_spellings(spelling), &hk, "{spelling}");
        }
        assert_eq!(sms_spellings(" 12345 "), vec!["12345"]);
        // A +1 number's digits alone would be a mainland number: not one of its spellings.
        assert_eq!(
            sms_spellings("+13125550123"),
            vec!["+13125550123", "0013125550123"]
        );
        assert_eq!(
            sms_spellings("+0012345678"),
            vec!["+0012345678", "000012345678"]
        );
        assert_eq!(sms_spellings("not-a-number"), vec!["not-a-number"]);
    }

    #[test]
    fn contents_are_checked_as_their_adapters_check_them() {
        let wk = json!({"msgtype": "text", "text": {"content": "hi"}});
        assert_eq!(check_content(ChannelType::Wechatwk, &wk), Ok(()));
        assert_eq!(
            check_content(ChannelType::Wechatwk, &json!({"msgtype": "text"})),
            Err("msg_wechatwk.text is required and must be an object".to_string())
        );
        assert!(check_content(ChannelType::Wechatoa, &json!({"template_id": "T"})).is_err());
        assert!(check_content(ChannelType::Wechatmp, &json!({"template_id": "T"})).is_err());
        let mp = json!({"template_id": "T", "data": {"thing1": "x"}});
        assert_eq!(check_content(ChannelType::Wechatmp, &mp), Ok(()));
        // Types whose check needs the channel (the SMS vendor) are left to their adapter.
        assert_eq!(check_content(ChannelType::Sms, &json!({})), Ok(()));
    }

    #[test]
    fn secret_fields_per_type() {
        assert_eq!(secret_fields(ChannelType::App), &["master_secret"]);
        assert_eq!(
            secret_fields(ChannelType::Sms),
            &["access_key_secret", "secret_key"]
        );
        assert_eq!(secret_fields(ChannelType::Email), &["password"]);
        assert_eq!(secret_fields(ChannelType::Webhook), &["secret", "headers"]);
        assert_eq!(
            secret_fields(ChannelType::Wechatoa),
            &["secret", "token", "encoding_aes_key"]
        );
        assert_eq!(secret_fields(ChannelType::Wechatwk), &["corpsecret"]);
        assert_eq!(
            secret_fields(ChannelType::Wechatmp),
            &["secret", "token", "encoding_aes_key"]
        );
        assert_eq!(secret_fields(ChannelType::Feishu), &["app_secret"]);
        assert_eq!(secret_fields(ChannelType::AlipayLife), &["private_key"]);
        assert_eq!(secret_fields(ChannelType::DingtalkCc), &["appsecret"]);
    }

    #[test]
    fn error_messages_name_type_and_field() {
        let err = validate(
            ChannelType::Sms,
            &json!({"access_key_id": "id", "sign_name": "s"}),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "sms: access_key_secret is required");
        let err = validate(ChannelType::App, &json!([])).unwrap_err();
        assert_eq!(err.to_string(), "app: credentials must be a JSON object");
    }

    #[test]
    fn errors_never_echo_secret_values() {
        let secret = "TOP-SECRET-VALUE";
        let cases = [
            (
                ChannelType::App,
                json!({"app_key": "k", "master_secret": 12345, "x": secret}),
            ),
            (
                ChannelType::App,
                json!({"app_key": "k", "master_secret": [secret]}),
            ),
            (
                ChannelType::Sms,
                json!({"access_key_id": "i", "access_key_secret": {"v": secret}, "sign_name": "s"}),
            ),
            (
                ChannelType::Email,
                json!({"host": "h", "from": "a@b.c", "username": "u", "password": [secret]}),
            ),
            (
                ChannelType::Webhook,
                json!({"url": "https://x.test/", "secret": "s", "headers": {"Authorization": 7, "X": secret}}),
            ),
            (
                ChannelType::Webhook,
                json!({"url": "https://x.test/", "secret": "s", "headers": {"X-Bad\n": secret}}),
            ),
        ];
        for (kind, creds) in cases {
            let err = validate(kind, &creds).unwrap_err().to_string();
            assert!(!err.contains(secret), "{err}");
            assert!(!err.contains("12345"), "{err}");
        }
    }

    #[test]
    fn the_sms_provider_is_chosen_by_the_credentials() {
        let aliyun = json!({"access_key_id": "i", "access_key_secret": "s", "sign_name": "n"});
        assert_eq!(SmsVendor::of(&aliyun), Ok(SmsVendor::Aliyun));
        let mut named = aliyun.clone();
        named["provider"] = json!("aliyun");
        assert_eq!(SmsVendor::of(&named), Ok(SmsVendor::Aliyun));
        assert_eq!(validate(ChannelType::Sms, &named), Ok(()));
        let tencent = json!({"provider": "tencent", "secret_id": "i", "secret_key": "s",
                             "sdk_app_id": "1400000001", "sign_name": "n"});
        assert_eq!(SmsVendor::of(&tencent), Ok(SmsVendor::Tencent));
        assert_eq!(validate(ChannelType::Sms, &tencent), Ok(()));
        // Each provider's fields belong to it alone.
        let mut mixed = tencent.clone();
        mixed["access_key_id"] = json!("i");
        assert_eq!(
            validate(ChannelType::Sms, &mixed).unwrap_err().to_string(),
            "sms: unknown field \"access_key_id\""
        );
        for bad in [json!("twilio"), json!(1)] {
            let mut creds = aliyun.clone();
            creds["provider"] = bad;
            assert_eq!(
                validate(ChannelType::Sms, &creds).unwrap_err().to_string(),
                "sms: provider must be \"aliyun\" or \"tencent\""
            );
        }
    }

    #[test]
    fn debug_redacts_the_receipt_url_token() {
        let options = AdapterOptions {
            receipt_url: Some("http://127.0.0.1:8080/receipts/3/SECRET-TOKEN".into()),
            ..AdapterOptions::default()
        };
        let shown = format!("{options:?}");
        assert!(!shown.contains("SECRET-TOKEN"), "{shown}");
        assert!(
            shown.contains("receipt_url: Some(\"<redacted>\")"),
            "{shown}"
        );
        assert!(format!("{:?}", AdapterOptions::default()).contains("receipt_url: None"));
    }

    #[tokio::test]
    async fn build_succeeds_for_valid_credentials() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let options = AdapterOptions::default();
        let app = build(
            ChannelType::App,
            &json!({"app_key": "k", "master_secret": "s"}),
            &options,
        )
        .unwrap();
        assert_eq!(app.max_batch(), 1000);
        let sms = build(
            ChannelType::Sms,
            &json!({"access_key_id": "i", "access_key_secret": "s", "sign_name": "n"}),
            &options,
        )
        .unwrap();
        assert_eq!(sms.max_batch(), 1000);
        let tencent = build(
            ChannelType::Sms,
            &json!({"provider": "tencent", "secret_id": "i", "secret_key": "s", "sdk_app_id": "1400000001",
                    "sign_name": "n"}),
            &options,
        )
        .unwrap();
        assert_eq!(tencent.max_batch(), 200);
        let email = build(
            ChannelType::Email,
            &json!({"host": "smtp.example.com", "from": "Hub <hub@example.com>"}),
            &options,
        )
        .unwrap();
        assert_eq!(email.max_batch(), 1);
        let hook = build(
            ChannelType::Webhook,
            &json!({"url": "https://hooks.example.com/in", "secret": "s"}),
            &options,
        )
        .unwrap();
        assert_eq!(hook.max_batch(), 1);
        let oa = build(
            ChannelType::Wechatoa,
            &json!({"appid": "wx1234567890abcdef", "secret": "s", "token": "tok"}),
            &options,
        )
        .unwrap();
        assert_eq!(oa.max_batch(), 1);
        let mp = build(
            ChannelType::Wechatmp,
            &json!({"appid": "wx1234567890abcdef", "secret": "s"}),
            &options,
        )
        .unwrap();
        assert_eq!(mp.max_batch(), 1);
        let wecom = build(
            ChannelType::Wechatwk,
            &json!({"corpid": "ww1234567890abcdef", "corpsecret": "s", "agentid": 1000002}),
            &options,
        )
        .unwrap();
        assert_eq!(wecom.max_batch(), 1000);
        let feishu = build(
            ChannelType::Feishu,
            &json!({"app_id": "cli_a1b2c3", "app_secret": "s"}),
            &options,
        )
        .unwrap();
        assert_eq!(feishu.max_batch(), 1);
        let dingtalk = build(
            ChannelType::DingtalkCc,
            &json!({"appkey": "dingabc", "appsecret": "s", "agent_id": 3000001}),
            &options,
        )
        .unwrap();
        assert_eq!(dingtalk.max_batch(), 1000);
        // Every channel type has an adapter.
        for kind in ChannelType::ALL {
            assert!(!matches!(validate(kind, &json!([])), Ok(())), "{kind}");
        }
    }
}
