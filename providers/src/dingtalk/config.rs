//! Credentials of a `dingtalk_cc` channel: one DingTalk (钉钉) internal application.
//!
//! `{"appkey", "appsecret", "agent_id", "base_url"}`: `appkey`/`appsecret` get access tokens
//! (`/gettoken`); `agent_id` is the application the work notices come from.

use msghub_actors::provider::ChannelType;
use serde_json::Value;

use crate::ConfigError;
use crate::creds::Creds;

pub(crate) const FIELDS: &[&str] = &["appkey", "appsecret", "agent_id", "base_url"];
pub(crate) const SECRETS: &[&str] = &["appsecret"];
pub(crate) const DEFAULT_BASE_URL: &str = "https://oapi.dingtalk.com";

#[derive(Clone)]
pub(crate) struct DingtalkConfig {
    pub appkey: String,
    pub appsecret: String,
    pub agent_id: u64,
    /// Without trailing `/`.
    pub base_url: String,
}

impl std::fmt::Debug for DingtalkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DingtalkConfig")
            .field("appkey", &self.appkey)
            .field("appsecret", &"***")
            .field("agent_id", &self.agent_id)
            .field("base_url", &self.base_url)
            .finish()
    }
}

pub(crate) fn parse(credentials: &Value) -> Result<DingtalkConfig, ConfigError> {
    let c = Creds::parse(ChannelType::DingtalkCc, credentials, FIELDS)?;
    let appkey = c.required_str("appkey")?;
    if !appkey.bytes().all(|b| b.is_ascii_alphanumeric()) || appkey.len() > 64 {
        return Err(c.invalid(
            "appkey",
            "must be the application's AppKey (letters and digits)",
        ));
    }
    Ok(DingtalkConfig {
        appkey,
        appsecret: c.required_str("appsecret")?,
        agent_id: c.agent_id("agent_id")?,
        base_url: c.base_url("base_url", DEFAULT_BASE_URL)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    fn ok() -> Value {
        json!({"appkey": "dingabc123", "appsecret": "s3cret-app", "agent_id": 3000001})
    }

    #[test]
    fn defaults() {
        let c = parse(&ok()).unwrap();
        assert_eq!(c.base_url, "https://oapi.dingtalk.com");
        assert_eq!(c.agent_id, 3000001);
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret-app"), "{shown}");
        let mut quoted = ok();
        quoted["agent_id"] = json!("3000002");
        quoted["base_url"] = json!("http://127.0.0.1:9/ding/");
        let c = parse(&quoted).unwrap();
        assert_eq!(
            (c.agent_id, c.base_url.as_str()),
            (3000002, "http://127.0.0.1:9/ding")
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
        let bad_agent =
            "dingtalk_cc: agent_id must be the application's AgentId (a positive integer)";
        let table = [
            (without("appkey"), "dingtalk_cc: appkey is required"),
            (without("appsecret"), "dingtalk_cc: appsecret is required"),
            (without("agent_id"), "dingtalk_cc: agent_id is required"),
            (with("agent_id", json!(0)), bad_agent),
            (with("agent_id", json!("x1")), bad_agent),
            (
                with("appkey", json!("ding key")),
                "dingtalk_cc: appkey must be the application's AppKey (letters and digits)",
            ),
            (
                with("appsecret", json!(7)),
                "dingtalk_cc: appsecret must be a string",
            ),
            (
                with("agentid", json!(1)),
                "dingtalk_cc: unknown field \"agentid\"",
            ),
        ];
        for (creds, message) in table {
            let err = parse(&creds).unwrap_err().to_string();
            assert_eq!(err, message);
            assert!(!err.contains("s3cret-app"));
        }
    }
}
