//! Credentials of an `app` channel: a JPush application (push API v3).

use msghub_actors::provider::ChannelType;
use serde_json::Value;

use crate::ConfigError;
use crate::creds::Creds;

pub(crate) const FIELDS: &[&str] = &["app_key", "master_secret", "base_url", "apns_production"];
pub(crate) const SECRETS: &[&str] = &["master_secret"];
pub(crate) const DEFAULT_BASE_URL: &str = "https://api.jpush.cn";

#[derive(Clone)]
pub(crate) struct JpushConfig {
    pub app_key: String,
    pub master_secret: String,
    /// Without trailing `/`; `/v3/push` is appended.
    pub base_url: String,
    /// Used when the content's `options` does not say. JPush treats an omitted flag as
    /// production, so it is always sent explicitly; default `false` as in the official SDKs.
    pub apns_production: bool,
}

impl std::fmt::Debug for JpushConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JpushConfig")
            .field("app_key", &self.app_key)
            .field("master_secret", &"***")
            .field("base_url", &self.base_url)
            .field("apns_production", &self.apns_production)
            .finish()
    }
}

pub(crate) fn parse(credentials: &Value) -> Result<JpushConfig, ConfigError> {
    let c = Creds::parse(ChannelType::App, credentials, FIELDS)?;
    Ok(JpushConfig {
        app_key: c.required_str("app_key")?,
        master_secret: c.required_str("master_secret")?,
        base_url: c.base_url("base_url", DEFAULT_BASE_URL)?,
        apns_production: c.optional_bool("apns_production")?.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn defaults() {
        let c = parse(&json!({"app_key": "k", "master_secret": "s"})).unwrap();
        assert_eq!(c.base_url, "https://api.jpush.cn");
        assert!(!c.apns_production);
        assert!(!format!("{c:?}").contains("\"s\""));
    }

    #[test]
    fn explicit_values() {
        let c = parse(&json!({
            "app_key": "k", "master_secret": "s",
            "base_url": "http://127.0.0.1:8080/jpush/", "apns_production": true
        }))
        .unwrap();
        assert_eq!(c.base_url, "http://127.0.0.1:8080/jpush");
        assert!(c.apns_production);
    }

    #[test]
    fn errors() {
        let table = [
            (json!({"master_secret": "s"}), "app: app_key is required"),
            (json!({"app_key": "k"}), "app: master_secret is required"),
            (
                json!({"app_key": "k", "master_secret": ""}),
                "app: master_secret is required",
            ),
            (
                json!({"app_key": 1, "master_secret": "s"}),
                "app: app_key must be a string",
            ),
            (
                json!({"app_key": "k", "master_secret": "s", "apns_production": "yes"}),
                "app: apns_production must be a boolean",
            ),
            (
                json!({"app_key": "k", "master_secret": "s", "base_url": "ftp://x"}),
                "app: base_url must be an http(s) URL with a host",
            ),
            (
                json!({"app_key": "k", "master_secret": "s", "appkey": "k"}),
                "app: unknown field \"appkey\"",
            ),
        ];
        for (creds, message) in table {
            assert_eq!(parse(&creds).unwrap_err().to_string(), message);
        }
    }
}
