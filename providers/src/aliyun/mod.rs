//! `sms` channel adapter: Aliyun dysmsapi `SendSms` (RPC style, Signature V1, form POST).
//!
//! One call carries up to 1000 comma-separated numbers with the same template; Aliyun answers
//! for the call as a whole, so every target of a call gets the same outcome and `BizId`.

pub(crate) mod classify;
pub(crate) mod config;
pub(crate) mod sign;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use msghub_actors::provider::{ChannelType, Outcome, OutcomeClass, Provider, SendRequest, Target};
use reqwest::header::CONTENT_TYPE;
use serde_json::Value;

use crate::http::{self, per_chunk};
use crate::{AdapterOptions, ConfigError, rejected, sms};
use config::AliyunConfig;

/// `PhoneNumbers` accepts at most 1000 numbers.
pub(crate) const MAX_BATCH: usize = 1000;

const API_VERSION: &str = "2017-05-25";
const INVALID_ADDRESS: &str = "invalid_address";

pub(crate) fn build(
    credentials: &Value,
    options: &AdapterOptions,
) -> Result<Arc<dyn Provider>, ConfigError> {
    let config = config::parse(credentials)?;
    let client = http::client(ChannelType::Sms, options)?;
    let endpoint = format!("{}/", config.base_url);
    Ok(Arc::new(AliyunProvider {
        client,
        config,
        endpoint,
    }))
}

struct AliyunProvider {
    client: reqwest::Client,
    config: AliyunConfig,
    endpoint: String,
}

/// The template part of a `msg_sms` content (JUMS JSMS shape mapped onto Aliyun names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SmsTemplate {
    /// `temp_id` → `TemplateCode`.
    pub template_code: String,
    /// `temp_para` serialised → `TemplateParam`.
    pub template_param: Option<String>,
    /// `sign_name` → `SignName`, overriding the channel's.
    pub sign_name: Option<String>,
}

pub(crate) fn parse_content(content: &Value) -> Result<SmsTemplate, Outcome> {
    let object = sms::object(content)?;
    let template_code = sms::template_id(object, "Aliyun")?;
    let template_param = match object.get("temp_para") {
        None | Some(Value::Null) => None,
        Some(para @ Value::Object(_)) => Some(para.to_string()),
        Some(_) => return Err(rejected("msg_sms.temp_para must be an object")),
    };
    let sign_name = sms::sign_name(object)?;
    Ok(SmsTemplate {
        template_code,
        template_param,
        sign_name,
    })
}

/// A number that cannot be put in a comma-separated list as-is would corrupt the whole call.
fn usable_number(address: &str) -> bool {
    !address.is_empty() && address.chars().all(|c| c.is_ascii_digit() || c == '+')
}

/// All `SendSms` parameters except `Signature`. Nonce and timestamp are arguments so the exact
/// map is unit-testable; `send` passes a fresh UUID and the current UTC time.
pub(crate) fn send_sms_params(
    config: &AliyunConfig,
    template: &SmsTemplate,
    phones: &[&str],
    msgid: i64,
    nonce: &str,
    timestamp: &str,
) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        p.insert(k.to_string(), v.to_string());
    };
    put("AccessKeyId", &config.access_key_id);
    put("Action", "SendSms");
    put("Format", "JSON");
    put("OutId", &msgid.to_string());
    put("PhoneNumbers", &phones.join(","));
    put("RegionId", &config.region_id);
    put(
        "SignName",
        template.sign_name.as_deref().unwrap_or(&config.sign_name),
    );
    put("SignatureMethod", "HMAC-SHA1");
    put("SignatureNonce", nonce);
    put("SignatureVersion", "1.0");
    put("TemplateCode", &template.template_code);
    if let Some(param) = &template.template_param {
        put("TemplateParam", param);
    }
    put("Timestamp", timestamp);
    put("Version", API_VERSION);
    p
}

impl AliyunProvider {
    async fn send_chunk(
        &self,
        template: &SmsTemplate,
        targets: &[Target],
        msgid: i64,
    ) -> Vec<Outcome> {
        let phones: Vec<&str> = targets
            .iter()
            .map(|t| t.address.trim())
            .filter(|a| usable_number(a))
            .collect();
        let outcome = if phones.is_empty() {
            None
        } else {
            Some(self.call(template, &phones, msgid).await)
        };
        targets
            .iter()
            .map(|t| match (&outcome, usable_number(t.address.trim())) {
                (Some(o), true) => o.clone(),
                _ => Outcome::failed(
                    OutcomeClass::Gone,
                    INVALID_ADDRESS,
                    "phone number must be digits with an optional +",
                ),
            })
            .collect()
    }

    async fn call(&self, template: &SmsTemplate, phones: &[&str], msgid: i64) -> Outcome {
        let nonce = uuid::Uuid::new_v4().to_string();
        let timestamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let params = send_sms_params(&self.config, template, phones, msgid, &nonce, &timestamp);
        let body = sign::signed_query("POST", &params, &self.config.access_key_secret);
        let request = self
            .client
            .post(&self.endpoint)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        match http::execute(request).await {
            Ok(reply) => classify::classify(&reply, phones.len()),
            Err(transport) => transport,
        }
    }
}

#[async_trait]
impl Provider for AliyunProvider {
    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    async fn send(&self, req: SendRequest<'_>) -> Vec<Outcome> {
        if req.targets.is_empty() {
            return Vec::new();
        }
        let template = match parse_content(req.content) {
            Ok(template) => template,
            Err(rejected) => return vec![rejected; req.targets.len()],
        };
        let outcomes = per_chunk(req.targets, MAX_BATCH, |chunk| {
            self.send_chunk(&template, chunk, req.msgid)
        })
        .await;
        if let Some(first) = outcomes.first() {
            tracing::debug!(channel = "sms", msgid = req.msgid, targets = outcomes.len(), class = first.class.as_str(), code = %first.code, "aliyun SendSms");
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::INVALID_CONTENT;
    use serde_json::json;

    fn config() -> AliyunConfig {
        config::parse(
            &json!({"access_key_id": "AKID", "access_key_secret": "sec", "sign_name": "默认签名"}),
        )
        .unwrap()
    }

    #[test]
    fn content_mapping() {
        let t =
            parse_content(&json!({"temp_id": "SMS_123", "temp_para": {"code": "1234"}})).unwrap();
        assert_eq!(
            t,
            SmsTemplate {
                template_code: "SMS_123".into(),
                template_param: Some(r#"{"code":"1234"}"#.into()),
                sign_name: None,
            }
        );
        let t = parse_content(&json!({"temp_id": 5678, "sign_name": "其他"})).unwrap();
        assert_eq!(t.template_code, "5678");
        assert_eq!(t.template_param, None);
        assert_eq!(t.sign_name.as_deref(), Some("其他"));
    }

    #[test]
    fn content_rejections() {
        let out = parse_content(&json!({"content": "hello"})).unwrap_err();
        assert_eq!(out.class, OutcomeClass::Perm);
        assert_eq!(
            out.message,
            "free-text SMS not supported by Aliyun; use temp_id"
        );
        for bad in [
            json!([]),
            json!({}),
            json!({"temp_id": ""}),
            json!({"temp_id": true}),
            json!({"temp_id": "SMS_1", "temp_para": "code=1"}),
            json!({"temp_id": "SMS_1", "sign_name": 3}),
        ] {
            let out = parse_content(&bad).unwrap_err();
            assert_eq!(
                (out.class, out.code.as_str()),
                (OutcomeClass::Perm, INVALID_CONTENT),
                "{bad}"
            );
        }
    }

    #[test]
    fn param_map() {
        let template =
            parse_content(&json!({"temp_id": "SMS_123", "temp_para": {"code": "1234"}})).unwrap();
        let p = send_sms_params(
            &config(),
            &template,
            &["13800000000", "+8613900000000"],
            77,
            "nonce-1",
            "2026-01-02T03:04:05Z",
        );
        let expected: BTreeMap<String, String> = [
            ("AccessKeyId", "AKID"),
            ("Action", "SendSms"),
            ("Format", "JSON"),
            ("OutId", "77"),
            ("PhoneNumbers", "13800000000,+8613900000000"),
            ("RegionId", "cn-hangzhou"),
            ("SignName", "默认签名"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "nonce-1"),
            ("SignatureVersion", "1.0"),
            ("TemplateCode", "SMS_123"),
            ("TemplateParam", r#"{"code":"1234"}"#),
            ("Timestamp", "2026-01-02T03:04:05Z"),
            ("Version", "2017-05-25"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(p, expected);

        let override_sign =
            parse_content(&json!({"temp_id": "SMS_1", "sign_name": "覆盖"})).unwrap();
        let p = send_sms_params(&config(), &override_sign, &["1"], 1, "n", "t");
        assert_eq!(p["SignName"], "覆盖");
        assert!(!p.contains_key("TemplateParam"));
    }

    #[test]
    fn number_screening() {
        assert!(usable_number("13800000000"));
        assert!(usable_number("+8613800000000"));
        for bad in ["", "138,139", "138 000", "abc"] {
            assert!(!usable_number(bad), "{bad}");
        }
    }
}
