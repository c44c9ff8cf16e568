//! Credentials of an `alipay_life` channel: an Alipay open-platform app that owns a life
//! account (生活号).
//!
//! `{"app_id", "private_key", "alipay_public_key", "base_url"}`: the app signs its requests with
//! its RSA2 `private_key` (PKCS#8, PEM or the one base64 line Alipay's key tool gives) and checks
//! Alipay's answers with `alipay_public_key` (the "支付宝公钥" of the app's settings);
//! `base_url` is the gateway (`https://openapi.alipay.com/gateway.do`).

use msghub_actors::provider::ChannelType;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::Value;

use crate::ConfigError;
use crate::alipay::sign;
use crate::creds::Creds;

pub(crate) const FIELDS: &[&str] = &["app_id", "private_key", "alipay_public_key", "base_url"];
pub(crate) const SECRETS: &[&str] = &["private_key"];
pub(crate) const DEFAULT_BASE_URL: &str = "https://openapi.alipay.com/gateway.do";

#[derive(Clone)]
pub(crate) struct AlipayConfig {
    pub app_id: String,
    pub private_key: RsaPrivateKey,
    pub alipay_public_key: RsaPublicKey,
    /// The gateway, without trailing `/`.
    pub base_url: String,
}

impl std::fmt::Debug for AlipayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlipayConfig")
            .field("app_id", &self.app_id)
            .field("private_key", &"***")
            .field("base_url", &self.base_url)
            .finish()
    }
}

pub(crate) fn parse(credentials: &Value) -> Result<AlipayConfig, ConfigError> {
    let c = Creds::parse(ChannelType::AlipayLife, credentials, FIELDS)?;
    let app_id = c.required_str("app_id")?;
    if !(8..=32).contains(&app_id.len()) || !app_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(c.invalid("app_id", "must be the app's APPID (digits)"));
    }
    let private_key = sign::private_key(&c.required_str("private_key")?).ok_or_else(|| {
        c.invalid(
            "private_key",
            "must be the app's RSA private key, PKCS#8 (PEM or base64)",
        )
    })?;
    let alipay_public_key =
        sign::public_key(&c.required_str("alipay_public_key")?).ok_or_else(|| {
            c.invalid(
                "alipay_public_key",
                "must be Alipay's RSA public key for the app (PEM or base64)",
            )
        })?;
    Ok(AlipayConfig {
        app_id,
        private_key,
        alipay_public_key,
        base_url: c.base_url("base_url", DEFAULT_BASE_URL)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    const KEY: &str = include_str!("test_key.pem");

    fn public_pem() -> String {
        use rsa::pkcs8::EncodePublicKey;
        RsaPublicKey::from(&sign::private_key(KEY).unwrap())
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
    }

    fn ok() -> Value {
        json!({"app_id": "2021005151000001", "private_key": KEY, "alipay_public_key": public_pem()})
    }

    #[test]
    fn defaults() {
        let c = parse(&ok()).unwrap();
        assert_eq!(c.base_url, "https://openapi.alipay.com/gateway.do");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("PRIVATE") && !shown.contains("RsaPrivateKey"),
            "{shown}"
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
            (without("app_id"), "alipay_life: app_id is required"),
            (
                without("private_key"),
                "alipay_life: private_key is required",
            ),
            (
                without("alipay_public_key"),
                "alipay_life: alipay_public_key is required",
            ),
            (
                with("app_id", json!("2021-x")),
                "alipay_life: app_id must be the app's APPID (digits)",
            ),
            (
                with("private_key", json!("MIIBogus")),
                "alipay_life: private_key must be the app's RSA private key, PKCS#8 (PEM or base64)",
            ),
            (
                with("alipay_public_key", json!(KEY)),
                "alipay_life: alipay_public_key must be Alipay's RSA public key for the app (PEM or base64)",
            ),
            (
                with("sign_type", json!("RSA")),
                "alipay_life: unknown field \"sign_type\"",
            ),
        ];
        for (creds, message) in table {
            let err = parse(&creds).unwrap_err().to_string();
            assert_eq!(err, message);
            assert!(!err.contains("MII"), "{err}");
        }
    }
}
