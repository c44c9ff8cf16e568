//! Credentials of a `wechatwk` channel: one WeCom (企业微信) application.
//!
//! `{"corpid", "corpsecret", "agentid", "base_url"}`: `corpid`/`corpsecret` (the application's
//! own Secret) get access tokens (`/cgi-bin/gettoken`); `agentid` is the application the
//! messages come from.

use msghub_actors::provider::ChannelType;
use serde_json::Value;

use crate::ConfigError;
use crate::creds::Creds;

pub(crate) const FIELDS: &[&str] = &["corpid", "corpsecret", "agentid", "base_url"];
pub(crate) const SECRETS: &[&str] = &["corpsecret"];
pub(crate) const DEFAULT_BASE_URL: &str = "https://qyapi.weixin.qq.com";

#[derive(Clone)]
pub(crate) struct WecomConfig {
    pub corpid: String,
    pub corpsecret: String,
    pub agentid: u64,
    /// Without trailing `/`.
    pub base_url: String,
}

impl std::fmt::Debug for WecomConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WecomConfig")
            .field("corpid", &self.corpid)
            .field("corpsecret", &"***")
            .field("agentid", &self.agentid)
            .field("base_url", &self.base_url)
            .finish()
    }
}

pub(crate) fn parse(credentials: &Value) -> Result<WecomConfig, ConfigError> {
    let c = Creds::parse(ChannelType::Wechatwk, credentials, FIELDS)?;
    let corpid = c.required_str("corpid")?;
    if !corpid.bytes().all(|b| b.is_ascii_alphanumeric()) || corpid.len() > 32 {
        return Err(c.invalid(
            "corpid",
            "must be the company's CorpID (letters and digits)",
        ));
    }
    let agentid = c.agent_id("agentid")?;
    Ok(WecomConfig {
        corpid,
        corpsecret: c.required_str("corpsecret")?,
        agentid,
        base_url: c.base_url("base_url", DEFAULT_BASE_URL)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    fn ok() -> Value {
        json!({"corpid": "ww1234567890abcdef", "corpsecret": "s3cret-app", "agentid": 1000002})
    }

    #[test]
    fn defaults() {
        let c = parse(&ok()).unwrap();
        assert_eq!(c.base_url, "https://qyapi.weixin.qq.com");
        assert_eq!(c.agentid, 1000002);
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret-app"), "{shown}");
        let mut quoted = ok();
        quoted["agentid"] = json!(" 1000003 ");
        quoted["base_url"] = json!("http://127.0.0.1:9/wecom/");
        let c = parse(&quoted).unwrap();
        assert_eq!(
            (c.agentid, c.base_url.as_str()),
            (1000003, "http://127.0.0.1:9/wecom")
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
        let bad_agent = "wechatwk: agentid must be the application's AgentId (a positive integer)";
        let table = [
            (without("corpid"), "wechatwk: corpid is required"),
            (without("corpsecret"), "wechatwk: corpsecret is required"),
            (without("agentid"), "wechatwk: agentid is required"),
            (with("agentid", json!(0)), bad_agent),
            (with("agentid", json!(-5)), bad_agent),
            (with("agentid", json!("abc")), bad_agent),
            (with("agentid", json!(1.5)), bad_agent),
            (with("agentid", json!(5_000_000_000u64)), bad_agent),
            (
                with("corpid", json!("ww-12")),
                "wechatwk: corpid must be the company's CorpID (letters and digits)",
            ),
            (
                with("corpsecret", json!(["s3cret-app"])),
                "wechatwk: corpsecret must be a string",
            ),
            (
                with("base_url", json!("ftp://x")),
                "wechatwk: base_url must be an http(s) URL with a host",
            ),
            (
                with("secret", json!("x")),
                "wechatwk: unknown field \"secret\"",
            ),
        ];
        for (creds, message) in table {
            let err = parse(&creds).unwrap_err().to_string();
            assert_eq!(err, message);
            assert!(!err.contains("s3cret-app"));
        }
    }
}
