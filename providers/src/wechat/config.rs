//! Credentials of a `wechatoa` channel — a WeChat Official Account (服务号) and the server
//! configuration its events come back through — or of a `wechatmp` channel, a mini-program and
//! its message push configuration.
//!
//! `{"appid", "secret", "token", "encoding_aes_key", "base_url"}`: `appid`/`secret` get access
//! tokens (`/cgi-bin/stable_token`); `token` is the "Token" of the account's server (message
//! push) configuration, with which WeChat signs the event pushes (`TEMPLATESENDJOBFINISH`,
//! `subscribe_msg_sent_event`) it sends to the channel's receipt URL, and `encoding_aes_key`
//! its "EncodingAESKey", which opens them in the compatible and safe encryption modes. Without
//! `token` the channel sends but cannot verify, so it accepts no receipts.

use msghub_actors::provider::ChannelType;
use serde_json::Value;

use crate::ConfigError;
use crate::creds::Creds;

pub(crate) const FIELDS: &[&str] = &["appid", "secret", "token", "encoding_aes_key", "base_url"];
pub(crate) const SECRETS: &[&str] = &["secret", "token", "encoding_aes_key"];
pub(crate) const DEFAULT_BASE_URL: &str = "https://api.weixin.qq.com";

#[derive(Clone)]
pub(crate) struct WechatConfig {
    pub appid: String,
    pub secret: String,
    /// The server configuration's Token (3–32 letters and digits), when events are wanted.
    pub token: Option<String>,
    /// Without trailing `/`.
    pub base_url: String,
}

impl std::fmt::Debug for WechatConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatConfig")
            .field("appid", &self.appid)
            .field("secret", &"***")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("base_url", &self.base_url)
            .finish()
    }
}

/// The 32-byte message key of a 43-character `EncodingAESKey`: `base64(key + "=")`.
/// WeChat's keys are 43 random letters and digits, so the last one's low bits are not zero as
/// strict base64 wants; WeChat's own samples decode them anyway.
pub(crate) fn aes_key(encoding_aes_key: &str) -> Option<[u8; 32]> {
    use base64::Engine;
    if encoding_aes_key.len() != 43 {
        return None;
    }
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    lenient
        .decode(format!("{encoding_aes_key}="))
        .ok()?
        .try_into()
        .ok()
}

/// The credentials of a `wechatoa` or (with `kind`) `wechatmp` channel.
pub(crate) fn parse(kind: ChannelType, credentials: &Value) -> Result<WechatConfig, ConfigError> {
    let c = Creds::parse(kind, credentials, FIELDS)?;
    let appid = c.required_str("appid")?;
    if !appid.bytes().all(|b| b.is_ascii_alphanumeric()) || appid.len() > 32 {
        return Err(c.invalid("appid", "must be the account's AppID (letters and digits)"));
    }
    if let Some(key) = c.optional_str("encoding_aes_key")?
        && aes_key(&key).is_none()
    {
        return Err(c.invalid(
            "encoding_aes_key",
            "must be the account's 43-character EncodingAESKey",
        ));
    }
    let token = c.optional_str("token")?;
    if let Some(t) = &token
        && (!(3..=32).contains(&t.len()) || !t.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return Err(c.invalid("token", "must be 3 to 32 letters and digits"));
    }
    Ok(WechatConfig {
        appid,
        secret: c.required_str("secret")?,
        token,
        base_url: c.base_url("base_url", DEFAULT_BASE_URL)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    fn ok() -> Value {
        json!({"appid": "wx1234567890abcdef", "secret": "s3cret", "token": "hubToken1"})
    }

    #[test]
    fn defaults() {
        let mut with_key = ok();
        with_key["encoding_aes_key"] = json!("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG");
        assert!(parse(ChannelType::Wechatoa, &with_key).is_ok());
        let c = parse(ChannelType::Wechatoa, &ok()).unwrap();
        assert_eq!(c.base_url, "https://api.weixin.qq.com");
        assert_eq!(c.token.as_deref(), Some("hubToken1"));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("hubToken1"),
            "{shown}"
        );
        let mut without = ok();
        without.as_object_mut().unwrap().remove("token");
        assert_eq!(parse(ChannelType::Wechatoa, &without).unwrap().token, None);
    }

    #[test]
    fn a_mini_program_has_an_appid_a_secret_and_its_push_configuration() {
        let mp = json!({"appid": "wx5151000000000002", "secret": "s3cret"});
        assert_eq!(
            parse(ChannelType::Wechatmp, &mp).unwrap().appid,
            "wx5151000000000002"
        );
        // Its message push configuration signs the subscribe events.
        assert_eq!(
            parse(ChannelType::Wechatmp, &ok())
                .unwrap()
                .token
                .as_deref(),
            Some("hubToken1")
        );
        let mut bad = ok();
        bad["encoding_aes_key"] = json!("short");
        assert_eq!(
            parse(ChannelType::Wechatmp, &bad).unwrap_err().to_string(),
            "wechatmp: encoding_aes_key must be the account's 43-character EncodingAESKey"
        );
        let mut without = mp.clone();
        without.as_object_mut().unwrap().remove("secret");
        assert_eq!(
            parse(ChannelType::Wechatmp, &without)
                .unwrap_err()
                .to_string(),
            "wechatmp: secret is required"
        );
    }

    #[test]
    fn errors() {
        let with = |key: &str, value: Value| {
            let mut v = ok();
            v[key] = value;
            v
        };
        let without = |key: &str| {
            let mut v = ok();
            v.as_object_mut().unwrap().remove(key);
            v
        };
        let table = [
            (without("appid"), "wechatoa: appid is required"),
            (without("secret"), "wechatoa: secret is required"),
            (
                with("appid", json!("wx-12")),
                "wechatoa: appid must be the account's AppID (letters and digits)",
            ),
            (
                with("token", json!("a b")),
                "wechatoa: token must be 3 to 32 letters and digits",
            ),
            (with("token", json!(7)), "wechatoa: token must be a string"),
            (
                with("encoding_aes_key", json!("short")),
                "wechatoa: encoding_aes_key must be the account's 43-character EncodingAESKey",
            ),
            (
                with("aes_key", json!("x")),
                "wechatoa: unknown field \"aes_key\"",
            ),
        ];
        for (creds, message) in table {
            assert_eq!(
                parse(ChannelType::Wechatoa, &creds)
                    .unwrap_err()
                    .to_string(),
                message
            );
        }
    }
}
