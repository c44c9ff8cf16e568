//! Credentials of an `sms` channel on Tencent Cloud SMS (API 3.0, version 2021-01-11):
//! `{"provider": "tencent", "secret_id", "secret_key", "sdk_app_id", "sign_name", "region",
//! "base_url"}`.

use msghub_actors::provider::ChannelType;
use serde_json::Value;

use crate::ConfigError;
use crate::creds::Creds;

pub(crate) const FIELDS: &[&str] = &[
    "provider",
    "secret_id",
    "secret_key",
    "sdk_app_id",
    "sign_name",
    "region",
    "base_url",
];
pub(crate) const DEFAULT_BASE_URL: &str = "https://sms.tencentcloudapi.com";
pub(crate) const DEFAULT_REGION: &str = "ap-guangzhou";

#[derive(Clone)]
pub(crate) struct TencentConfig {
    pub secret_id: String,
    pub secret_key: String,
    /// `SmsSdkAppId`: the SMS application (digits, e.g. `1400006666`).
    pub sdk_app_id: String,
    /// Default `SignName`, required for mainland numbers; a content may override it.
    pub sign_name: String,
    /// `X-TC-Region`, required by version 2021-01-11.
    pub region: String,
    /// Without trailing `/`; requests go to `{base_url}/`.
    pub base_url: String,
}

impl std::fmt::Debug for TencentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TencentConfig")
            .field("secret_id", &self.secret_id)
            .field("secret_key", &"***")
            .field("sdk_app_id", &self.sdk_app_id)
            .field("sign_name", &self.sign_name)
            .field("region", &self.region)
            .field("base_url", &self.base_url)
            .finish()
    }
}

pub(crate) fn parse(credentials: &Value) -> Result<TencentConfig, ConfigError> {
    let c = Creds::parse(ChannelType::Sms, credentials, FIELDS)?;
    let sdk_app_id = c.required_str("sdk_app_id")?;
    if !sdk_app_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(c.invalid("sdk_app_id", "must be the SMS application's digits"));
    }
    let region = c
        .optional_str("region")?
        .unwrap_or_else(|| DEFAULT_REGION.to_string());
    if !region
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(c.invalid("region", "must be a region name such as ap-guangzhou"));
    }
    Ok(TencentConfig {
        secret_id: c.required_str("secret_id")?,
        secret_key: c.required_str("secret_key")?,
        sdk_app_id,
        sign_name: c.required_str("sign_name")?,
        region,
        base_url: c.base_url("base_url", DEFAULT_BASE_URL)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    fn ok() -> Value {
        json!({"provider": "tencent", "secret_id": "AKID", "secret_key": "k", "sdk_app_id": "1400006666",
               "sign_name": "腾讯云"})
    }

    #[test]
    fn defaults() {
        let c = parse(&ok()).unwrap();
        assert_eq!(c.base_url, "https://sms.tencentcloudapi.com");
        assert_eq!(c.region, "ap-guangzhou");
        assert_eq!(c.sdk_app_id, "1400006666");
        assert!(!format!("{c:?}").contains("\"k\""));
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
            (without("secret_id"), "sms: secret_id is required"),
            (without("secret_key"), "sms: secret_key is required"),
            (without("sdk_app_id"), "sms: sdk_app_id is required"),
            (without("sign_name"), "sms: sign_name is required"),
            (
                with("sdk_app_id", json!("14000x")),
                "sms: sdk_app_id must be the SMS application's digits",
            ),
            (
                with("region", json!("Guangzhou")),
                "sms: region must be a region name such as ap-guangzhou",
            ),
            (
                with("base_url", json!("sms.tencentcloudapi.com")),
                "sms: base_url must be a valid URL",
            ),
            (
                with("access_key_id", json!("x")),
                "sms: unknown field \"access_key_id\"",
            ),
        ];
        for (creds, message) in table {
            assert_eq!(parse(&creds).unwrap_err().to_string(), message);
        }
    }
}
