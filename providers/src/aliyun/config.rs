//! Credentials of an `sms` channel: an Aliyun dysmsapi (2017-05-25) account and signature.

use msghub_actors::provider::ChannelType;
use serde_json::Value;

use crate::ConfigError;
use crate::creds::Creds;

pub(crate) const FIELDS: &[&str] = &[
    "provider",
    "access_key_id",
    "access_key_secret",
    "sign_name",
    "base_url",
    "region_id",
];
pub(crate) const DEFAULT_BASE_URL: &str = "https://dysmsapi.aliyuncs.com";
pub(crate) const DEFAULT_REGION: &str = "cn-hangzhou";

#[derive(Clone)]
pub(crate) struct AliyunConfig {
    pub access_key_id: String,
    pub access_key_secret: String,
    /// Default `SignName`; a content may override it with its own `sign_name`.
    pub sign_name: String,
    /// Without trailing `/`; requests go to `{base_url}/`.
    pub base_url: String,
    pub region_id: String,
}

impl std::fmt::Debug for AliyunConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AliyunConfig")
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &"***")
            .field("sign_name", &self.sign_name)
            .field("base_url", &self.base_url)
            .field("region_id", &self.region_id)
            .finish()
    }
}

pub(crate) fn parse(credentials: &Value) -> Result<AliyunConfig, ConfigError> {
    let c = Creds::parse(ChannelType::Sms, credentials, FIELDS)?;
    Ok(AliyunConfig {
        access_key_id: c.required_str("access_key_id")?,
        access_key_secret: c.required_str("access_key_secret")?,
        sign_name: c.required_str("sign_name")?,
        base_url: c.base_url("base_url", DEFAULT_BASE_URL)?,
        region_id: c
            .optional_str("region_id")?
            .unwrap_or_else(|| DEFAULT_REGION.to_string()),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn defaults() {
        let c =
            parse(&json!({"access_key_id": "i", "access_key_secret": "s", "sign_name": "阿里云"}))
                .unwrap();
        assert_eq!(c.base_url, "https://dysmsapi.aliyuncs.com");
        assert_eq!(c.region_id, "cn-hangzhou");
        assert_eq!(c.sign_name, "阿里云");
        assert!(!format!("{c:?}").contains("\"s\""));
    }

    #[test]
    fn errors() {
        let ok = json!({"access_key_id": "i", "access_key_secret": "s", "sign_name": "n"});
        let with = |key: &str, value: Value| {
            let mut v = ok.clone();
            v[key] = value;
            v
        };
        let without = |key: &str| {
            let mut v = ok.clone();
            v.as_object_mut().unwrap().remove(key);
            v
        };
        let table = [
            (without("access_key_id"), "sms: access_key_id is required"),
            (
                without("access_key_secret"),
                "sms: access_key_secret is required",
            ),
            (without("sign_name"), "sms: sign_name is required"),
            (
                with("region_id", json!(1)),
                "sms: region_id must be a string",
            ),
            (
                with("base_url", json!("dysmsapi")),
                "sms: base_url must be a valid URL",
            ),
            (
                with("template", json!("x")),
                "sms: unknown field \"template\"",
            ),
        ];
        for (creds, message) in table {
            assert_eq!(parse(&creds).unwrap_err().to_string(), message);
        }
    }
}
