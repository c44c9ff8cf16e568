//! Credentials of a `wechatoa` channel: a WeChat Official Account (服务号) and the server
//! configuration its events come back through.
//!
//! `{"appid", "secret", "token", "base_url"}`: `appid`/`secret` get access tokens
//! (`/cgi-bin/stable_token`); `token` is the "Token" of the account's server configuration,
//! with which WeChat signs the event pushes (`TEMPLATESENDJOBFINISH`) it sends to the channel's
//! receipt URL. Without `token` the channel sends but cannot verify, so it accepts no receipts.

use msghub_actors::provider::ChannelType;
use serde_json::Value;

use crate::ConfigError;
use crate::creds::Creds;

pub(crate) const FIELDS: &[&str] = &["appid", "secret", "token", "base_url"];
pub(crate) const SECRETS: &[&str] = &["secret", "token"];
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

pub(crate) fn parse(credentials: &Value) -> Result<WechatConfig, ConfigError> {
    let c = Creds::parse(ChannelType::Wechatoa, credentials, FIELDS)?;
    let appid = c.required_str("appid")?;
    if !appid.bytes().all(|b| b.is_ascii_alphanumeric()) || appid.len() > 32 {
        return Err(c.invalid("appid", "must be the account's AppID (letters and digits)"));
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
        let c = parse(&ok()).unwrap();
        assert_eq!(c.base_url, "https://api.weixin.qq.com");
        assert_eq!(c.token.as_deref(), Some("hubToken1"));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("hubToken1"),
            "{shown}"
        );
        let mut without = ok();
        without.as_object_mut().unwrap().remove("token");
        assert_eq!(parse(&without).unwrap().token, None);
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
                with("aes_key", json!("x")),
                "wechatoa: unknown field \"aes_key\"",
            ),
        ];
        for (creds, message) in table {
            assert_eq!(parse(&creds).unwrap_err().to_string(), message);
        }
    }
}
