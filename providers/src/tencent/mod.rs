//! `sms` channel adapter on Tencent Cloud SMS: `SendSms` of API 3.0 (version 2021-01-11), a
//! JSON POST signed with TC3-HMAC-SHA256 (providers.md §5.2).
//!
//! One call carries up to 200 E.164 numbers, all mainland or all international, with the same
//! template. Each number gets its own status and `SerialNo`; the serial is kept as the
//! delivery's provider id, because Tencent's status callbacks name a delivery by it alone.

pub(crate) mod classify;
pub(crate) mod config;
pub(crate) mod sign;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use msghub_actors::provider::{ChannelType, Outcome, OutcomeClass, Provider, SendRequest, Target};
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use crate::http;
use crate::{AdapterOptions, ConfigError, rejected, sms};
use config::TencentConfig;

/// `PhoneNumberSet` holds at most 200 numbers.
pub(crate) const MAX_BATCH: usize = 200;

const SERVICE: &str = "sms";
const ACTION: &str = "SendSms";
const API_VERSION: &str = "2021-01-11";
const INVALID_ADDRESS: &str = "invalid_address";

pub(crate) fn build(
    credentials: &Value,
    options: &AdapterOptions,
) -> Result<Arc<dyn Provider>, ConfigError> {
    let config = config::parse(credentials)?;
    let client = http::client(ChannelType::Sms, options)?;
    let endpoint = format!("{}/", config.base_url);
    let url = reqwest::Url::parse(&endpoint).map_err(|_| ConfigError::Invalid {
        kind: ChannelType::Sms,
        field: "base_url".into(),
        reason: "must be a valid URL".into(),
    })?;
    // Signed exactly as the `Host` header reqwest sends: the port only when it is not the
    // scheme's default.
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    Ok(Arc::new(TencentProvider {
        client,
        uri: url.path().to_string(),
        host,
        endpoint,
        config,
    }))
}

struct TencentProvider {
    client: reqwest::Client,
    config: TencentConfig,
    endpoint: String,
    /// Path and `Host` of the endpoint, as signed.
    uri: String,
    host: String,
}

/// The template part of a `msg_sms` content (JUMS JSMS shape mapped onto Tencent names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SmsTemplate {
    /// `temp_id` → `TemplateId`.
    pub template_id: String,
    /// `temp_para` → `TemplateParamSet`, in the template's `{1}`, `{2}`, … order.
    pub params: Vec<String>,
    /// `sign_name` → `SignName`, overriding the channel's.
    pub sign_name: Option<String>,
}

fn param_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Tencent templates take positional parameters: `temp_para` is an array, or an object keyed
/// `"1"`, `"2"`, … (each position once, none missing).
fn positional(para: &Value) -> Result<Vec<String>, Outcome> {
    const SHAPE: &str = "msg_sms.temp_para must be an array of strings, or an object keyed \"1\", \"2\", ... (Tencent templates are positional)";
    match para {
        Value::Array(items) => items
            .iter()
            .map(|v| param_text(v).ok_or_else(|| rejected(SHAPE)))
            .collect(),
        Value::Object(map) => {
            let mut slots: Vec<Option<String>> = vec![None; map.len()];
            for (key, value) in map {
                let position = key
                    .parse::<usize>()
                    .ok()
                    .filter(|p| (1..=map.len()).contains(p))
                    .ok_or_else(|| rejected(SHAPE))?;
                slots[position - 1] = Some(param_text(value).ok_or_else(|| rejected(SHAPE))?);
            }
            slots
                .into_iter()
                .map(|s| s.ok_or_else(|| rejected(SHAPE)))
                .collect()
        }
        _ => Err(rejected(SHAPE)),
    }
}

pub(crate) fn parse_content(content: &Value) -> Result<SmsTemplate, Outcome> {
    let object = sms::object(content)?;
    let template_id = sms::template_id(object, "Tencent")?;
    let params = match object.get("temp_para") {
        None | Some(Value::Null) => Vec::new(),
        Some(para) => positional(para)?,
    };
    let sign_name = sms::sign_name(object)?;
    Ok(SmsTemplate {
        template_id,
        params,
        sign_name,
    })
}

/// The E.164 form Tencent requires: `+` and digits kept, `00` read as `+`, and an 11-digit
/// mainland number (or one written `86…`) given `+86`. `None`: not a number Tencent takes.
pub(crate) fn e164(address: &str) -> Option<String> {
    let a = address.trim();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let international =
        |rest: &str| (digits(rest) && (6..=15).contains(&rest.len())).then(|| format!("+{rest}"));
    if let Some(rest) = a.strip_prefix('+') {
        international(rest)
    } else if let Some(rest) = a.strip_prefix("00") {
        international(rest)
    } else if a.len() == 11 && a.starts_with('1') && digits(a) {
        Some(format!("+86{a}"))
    } else if a.len() == 13 && a.starts_with("861") && digits(a) {
        Some(format!("+{a}"))
    } else {
        None
    }
}

/// The `SendSms` body for `phones` (E.164, all mainland or all international).
pub(crate) fn send_sms_body(
    config: &TencentConfig,
    template: &SmsTemplate,
    phones: &[String],
    msgid: i64,
) -> Value {
    let mut body = json!({
        "PhoneNumberSet": phones,
        "SmsSdkAppId": config.sdk_app_id,
        "TemplateId": template.template_id,
        "SignName": template.sign_name.as_deref().unwrap_or(&config.sign_name),
        "SessionContext": msgid.to_string(),
    });
    if !template.params.is_empty() {
        body["TemplateParamSet"] = json!(template.params);
    }
    body
}

impl TencentProvider {
    async fn call(&self, template: &SmsTemplate, phones: &[String], msgid: i64) -> Vec<Outcome> {
        let body = send_sms_body(&self.config, template, phones, msgid).to_string();
        let timestamp = chrono::Utc::now().timestamp();
        let canonical = sign::canonical_request(&self.uri, &self.host, body.as_bytes());
        let authorization = sign::authorization(
            &self.config.secret_id,
            &self.config.secret_key,
            SERVICE,
            timestamp,
            &canonical,
        );
        let request = self
            .client
            .post(&self.endpoint)
            .header(CONTENT_TYPE, sign::CONTENT_TYPE)
            .header("Authorization", authorization)
            .header("X-TC-Action", ACTION)
            .header("X-TC-Version", API_VERSION)
            .header("X-TC-Region", &self.config.region)
            .header("X-TC-Timestamp", timestamp.to_string())
            .body(body);
        match http::execute(request).await {
            Ok(reply) => classify::classify(&reply, phones),
            Err(transport) => vec![transport; phones.len()],
        }
    }
}

#[async_trait]
impl Provider for TencentProvider {
    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    async fn send(&self, req: SendRequest<'_>) -> Vec<Outcome> {
        let targets: &[Target] = req.targets;
        if targets.is_empty() {
            return Vec::new();
        }
        let template = match parse_content(req.content) {
            Ok(template) => template,
            Err(rejected) => return vec![rejected; targets.len()],
        };
        let mut outcomes: Vec<Option<Outcome>> = vec![None; targets.len()];
        // Each E.164 number and the targets it stands for: a number written twice ("138…" and
        // "+86138…") is sent once and both deliveries share its outcome.
        let mut numbers: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, target) in targets.iter().enumerate() {
            if let Some(phone) = e164(&target.address) {
                numbers.entry(phone).or_default().push(i);
            }
        }
        // Mainland and international numbers may not share a call.
        for mainland in [true, false] {
            let phones: Vec<String> = numbers
                .keys()
                .filter(|p| p.starts_with("+86") == mainland)
                .cloned()
                .collect();
            for chunk in phones.chunks(MAX_BATCH) {
                let results = self.call(&template, chunk, req.msgid).await;
                for (phone, outcome) in chunk.iter().zip(results) {
                    for &i in numbers.get(phone).into_iter().flatten() {
                        outcomes[i] = Some(outcome.clone());
                    }
                }
            }
        }
        let outcomes: Vec<Outcome> = outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    Outcome::failed(
                        OutcomeClass::Gone,
                        INVALID_ADDRESS,
                        "phone number must be E.164 (+country code and digits) or an 11-digit mainland number",
                    )
                })
            })
            .collect();
        if let Some(first) = outcomes.first() {
            tracing::debug!(channel = "sms", msgid = req.msgid, targets = outcomes.len(), class = first.class.as_str(), code = %first.code, "tencent SendSms");
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::INVALID_CONTENT;

    fn config() -> TencentConfig {
        config::parse(
            &json!({"provider": "tencent", "secret_id": "AKID", "secret_key": "k",
                              "sdk_app_id": "1400006666", "sign_name": "默认签名"}),
        )
        .unwrap()
    }

    #[test]
    fn content_mapping() {
        let t = parse_content(&json!({"temp_id": "1110", "temp_para": ["1234", 5]})).unwrap();
        assert_eq!(
            t,
            SmsTemplate {
                template_id: "1110".into(),
                params: vec!["1234".into(), "5".into()],
                sign_name: None,
            }
        );
        let t = parse_content(
            &json!({"temp_id": 1110, "temp_para": {"2": "b", "1": "a"}, "sign_name": "其他"}),
        )
        .unwrap();
        assert_eq!(t.template_id, "1110");
        assert_eq!(t.params, vec!["a", "b"]);
        assert_eq!(t.sign_name.as_deref(), Some("其他"));
        assert!(
            parse_content(&json!({"temp_id": "1"}))
                .unwrap()
                .params
                .is_empty()
        );
    }

    #[test]
    fn content_rejections() {
        let out = parse_content(&json!({"content": "hello"})).unwrap_err();
        assert_eq!(
            out.message,
            "free-text SMS not supported by Tencent; use temp_id"
        );
        for bad in [
            json!([]),
            json!({}),
            json!({"temp_id": ""}),
            json!({"temp_id": true}),
            json!({"temp_id": "1", "temp_para": {"code": "1234"}}),
            json!({"temp_id": "1", "temp_para": {"1": "a", "3": "c"}}),
            json!({"temp_id": "1", "temp_para": {"0": "a"}}),
            json!({"temp_id": "1", "temp_para": ["a", {"b": 1}]}),
            json!({"temp_id": "1", "temp_para": "a"}),
            json!({"temp_id": "1", "sign_name": 3}),
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
    fn numbers_in_e164() {
        for (raw, want) in [
            ("13800000000", Some("+8613800000000")),
            (" +8613800000000 ", Some("+8613800000000")),
            ("8613800000000", Some("+8613800000000")),
            ("008613800000000", Some("+8613800000000")),
            ("+14155550100", Some("+14155550100")),
            ("0014155550100", Some("+14155550100")),
            ("23800000000", None),
            ("+", None),
            ("+86 138", None),
            ("138,139", None),
            ("", None),
        ] {
            assert_eq!(e164(raw).as_deref(), want, "{raw}");
        }
    }

    #[test]
    fn request_body() {
        let template = parse_content(&json!({"temp_id": "1110", "temp_para": ["1234"]})).unwrap();
        let body = send_sms_body(
            &config(),
            &template,
            &["+8613800000000".into(), "+8613900000000".into()],
            77,
        );
        assert_eq!(
            body,
            json!({"PhoneNumberSet": ["+8613800000000", "+8613900000000"], "SmsSdkAppId": "1400006666",
                   "TemplateId": "1110", "SignName": "默认签名", "SessionContext": "77",
                   "TemplateParamSet": ["1234"]})
        );
        let bare = parse_content(&json!({"temp_id": "1", "sign_name": "覆盖"})).unwrap();
        let body = send_sms_body(&config(), &bare, &["+14155550100".into()], 1);
        assert_eq!(body["SignName"], "覆盖");
        assert!(body.get("TemplateParamSet").is_none());
    }
}
