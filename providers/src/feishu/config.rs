//! Credentials of a `feishu` channel: one Feishu (Lark) custom app with its bot.
//!
//! `{"app_id", "app_secret", "receive_id_type", "base_url"}`: `app_id`/`app_secret` get tenant
//! access tokens; `receive_id_type` says what the channel's addresses are (`open_id` by
//! default, or `user_id`, `union_id`, `email`); `base_url` is Feishu's
//! (`https://open.feishu.cn/open-apis`) or Lark's (`https://open.larksuite.com/open-apis`).

use msghub_actors::provider::ChannelType;
use serde_json::Value;

use crate::ConfigError;
use crate::creds::Creds;

pub(crate) const FIELDS: &[&str] = &["app_id", "app_secret", "receive_id_type", "base_url"];
pub(crate) const SECRETS: &[&str] = &["app_secret"];
pub(crate) const DEFAULT_BASE_URL: &str = "https://open.feishu.cn/open-apis";
/// What an address can be.
const ID_TYPES: &[&str] = &["open_id", "user_id", "union_id", "email"];

#[derive(Clone)]
pub(crate) struct FeishuConfig {
    pub app_id: String,
    pub app_secret: String,
    pub receive_id_type: String,
    /// Without trailing `/`.
    pub base_url: String,
}

impl std::fmt::Debug for FeishuConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeishuConfig")
            .field("app_id", &self.app_id)
            .field("app_secret", &"***")
            .field("receive_id_type", &self.receive_id_type)
            .field("base_url", &self.base_url)
            .finish()
    }
}

pub(crate) fn parse(credentials: &Value) -> Result<FeishuConfig, ConfigError> {
    let c = Creds::parse(ChannelType::Feishu, credentials, FIELDS)?;
    let app_id = c.required_str("app_id")?;
    if app_id.len() > 64
        || !app_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(c.invalid(
            "app_id",
            "must be the app's App ID (letters, digits and _, like cli_a1b2c3)",
        ));
    }
    let receive_id_type = c
        .optional_str("receive_id_type")?
        .unwrap_or_else(|| "open_id".to_string());
    if !ID_TYPES.contains(&receive_id_type.as_str()) {
        return Err(c.invalid(
            "receive_id_type",
            format!("must be one of {}", ID_TYPES.join(", ")),
        ));
    }
    Ok(FeishuConfig {
        app_id,
        app_secret: c.required_str("app_secret")?,
        receive_id_type,
        base_url: c.base_url("base_url", DEFAULT_BASE_URL)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    fn ok() -> Value {
        json!({"app_id": "cli_a1b2c3d4e5", "app_secret": "s3cret-app"})
    }

    #[test]
    fn defaults() {
        let c = parse(&ok()).unwrap();
        assert_eq!(
            (c.receive_id_type.as_str(), c.base_url.as_str()),
            ("open_id", "https://open.feishu.cn/open-apis")
        );
        assert!(!format!("{c:?}").contains("s3cret-app"));
        let mut lark = ok();
        lark["receive_id_type"] = json!("email");
        lark["base_url"] = json!("https://open.larksuite.com/open-apis/");
        let c = parse(&lark).unwrap();
        assert_eq!(
            (c.receive_id_type.as_str(), c.base_url.as_str()),
            ("email", "https://open.larksuite.com/open-apis")
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
            (without("app_id"), "feishu: app_id is required"),
            (without("app_secret"), "feishu: app_secret is required"),
            (
                with("app_id", json!("cli-1")),
                "feishu: app_id must be the app's App ID (letters, digits and _, like cli_a1b2c3)",
            ),
            (
                with("receive_id_type", json!("chat_id")),
                "feishu: receive_id_type must be one of open_id, user_id, union_id, email",
            ),
            (
                with("app_secret", json!(["s3cret-app"])),
                "feishu: app_secret must be a string",
            ),
            (
                with("secret", json!("x")),
                "feishu: unknown field \"secret\"",
            ),
        ];
        for (creds, message) in table {
            let err = parse(&creds).unwrap_err().to_string();
            assert_eq!(err, message);
            assert!(!err.contains("s3cret-app"));
        }
    }
}
