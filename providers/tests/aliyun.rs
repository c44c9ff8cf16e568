//! The `sms` (Aliyun SendSms) adapter against a local HTTP server: signed form POST and
//! reply classification.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use base64::Engine;
use common::{Canned, Captured, MockServer, install_crypto, options, targets};
use hmac::{Hmac, KeyInit, Mac};
use msghub_actors::provider::{ChannelType, OutcomeClass, SendRequest};
use serde_json::{Value, json};

const SECRET: &str = "aliyun-secret";

fn adapter(base_url: &str) -> std::sync::Arc<dyn msghub_actors::provider::Provider> {
    install_crypto();
    msghub_providers::build(
        ChannelType::Sms,
        &json!({
            "access_key_id": "LTAI-test",
            "access_key_secret": SECRET,
            "sign_name": "阿里云短信测试",
            "base_url": base_url
        }),
        &options(),
    )
    .unwrap()
}

fn content() -> Value {
    json!({"temp_id": "SMS_154950909", "temp_para": {"code": "12 34*~"}})
}

fn form(r: &Captured) -> BTreeMap<String, String> {
    r.text()
        .split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap();
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .unwrap()
                    .to_string()
            };
            (decode(k), decode(v))
        })
        .collect()
}

/// Recompute the V1 signature from the decoded parameters, independently of the crate.
fn expected_signature(params: &BTreeMap<String, String>) -> String {
    let enc = |s: &str| {
        let mut out = String::new();
        for b in s.as_bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(b) {
                out.push(*b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    };
    let canonical = params
        .iter()
        .filter(|(k, _)| k.as_str() != "Signature")
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&");
    let sts = format!("POST&%2F&{}", enc(&canonical));
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(format!("{SECRET}&").as_bytes()).unwrap();
    mac.update(sts.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn ok_posts_signed_form() {
    let server = MockServer::fixed(Canned::new(
        200,
        r#"{"RequestId":"F655A8D5","Code":"OK","Message":"OK","BizId":"900619746936498440^0"}"#,
    ))
    .await;
    let provider = adapter(&server.base_url);
    let targets = targets(&["13800000000", "+8613900000000"]);
    let content = content();
    let req = SendRequest {
        msgid: 99,
        content: &content,
        targets: &targets,
        ttl: None,
    };
    let outcomes = provider.send(req).await;
    assert_eq!(outcomes.len(), 2);
    for o in &outcomes {
        assert_eq!((o.class, o.code.as_str()), (OutcomeClass::Ok, "OK"));
        assert_eq!(o.provider_id.as_deref(), Some("900619746936498440^0"));
    }
    provider.send(req).await;

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let r = &requests[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/"));
    assert_eq!(
        r.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    // Space must travel as %20, never `+`.
    assert!(!r.text().contains('+'), "{}", r.text());
    let p = form(r);
    assert_eq!(p["Action"], "SendSms");
    assert_eq!(p["Version"], "2017-05-25");
    assert_eq!(p["Format"], "JSON");
    assert_eq!(p["AccessKeyId"], "LTAI-test");
    assert_eq!(p["RegionId"], "cn-hangzhou");
    assert_eq!(p["SignatureMethod"], "HMAC-SHA1");
    assert_eq!(p["SignatureVersion"], "1.0");
    assert_eq!(p["PhoneNumbers"], "13800000000,+8613900000000");
    assert_eq!(p["SignName"], "阿里云短信测试");
    assert_eq!(p["TemplateCode"], "SMS_154950909");
    assert_eq!(
        serde_json::from_str::<Value>(&p["TemplateParam"]).unwrap(),
        json!({"code": "12 34*~"})
    );
    assert_eq!(p["OutId"], "99");
    assert!(chrono::NaiveDateTime::parse_from_str(&p["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").is_ok());
    assert_eq!(p["Signature"], expected_signature(&p));
    assert!(!r.text().contains(SECRET));

    // A fresh nonce per request, or Aliyun answers SignatureNonceUsed.
    let second = form(&requests[1]);
    assert_ne!(p["SignatureNonce"], second["SignatureNonce"]);
    assert_eq!(second["Signature"], expected_signature(&second));
}

#[tokio::test]
async fn replies_are_classified() {
    let code = |status: u16, code: &str| {
        Canned::new(
            status,
            format!(r#"{{"RequestId":"r","Code":"{code}","Message":"m"}}"#),
        )
    };
    let cases = [
        (
            code(200, "isv.BUSINESS_LIMIT_CONTROL"),
            2,
            OutcomeClass::Rate,
            "isv.BUSINESS_LIMIT_CONTROL",
        ),
        (
            code(400, "Throttling.User"),
            2,
            OutcomeClass::Rate,
            "Throttling.User",
        ),
        (
            code(200, "isv.DAY_LIMIT_CONTROL"),
            2,
            OutcomeClass::Quota,
            "isv.DAY_LIMIT_CONTROL",
        ),
        (
            code(200, "isp.SYSTEM_ERROR"),
            2,
            OutcomeClass::Retry,
            "isp.SYSTEM_ERROR",
        ),
        (
            code(400, "SignatureDoesNotMatch"),
            2,
            OutcomeClass::Perm,
            "SignatureDoesNotMatch",
        ),
        (
            code(200, "isv.MOBILE_NUMBER_ILLEGAL"),
            1,
            OutcomeClass::Gone,
            "isv.MOBILE_NUMBER_ILLEGAL",
        ),
        (
            code(200, "isv.MOBILE_NUMBER_ILLEGAL"),
            2,
            OutcomeClass::Perm,
            "isv.MOBILE_NUMBER_ILLEGAL",
        ),
        (
            Canned::new(500, "Internal Server Error"),
            2,
            OutcomeClass::Retry,
            "500",
        ),
        (Canned::new(429, ""), 2, OutcomeClass::Rate, "429"),
        (
            Canned::new(400, "<html>bad request</html>"),
            2,
            OutcomeClass::Perm,
            "400",
        ),
    ];
    let content = content();
    for (canned, n, class, expected_code) in cases {
        let server = MockServer::fixed(canned.clone()).await;
        let targets = targets(&["13800000000", "13900000000"][..n]);
        let outcomes = adapter(&server.base_url)
            .send(SendRequest {
                msgid: 1,
                content: &content,
                targets: &targets,
                ttl: None,
            })
            .await;
        assert_eq!(outcomes.len(), n);
        for o in outcomes {
            assert_eq!(
                (o.class, o.code.as_str()),
                (class, expected_code),
                "{canned:?}"
            );
        }
    }
}

#[tokio::test]
async fn free_text_and_bad_numbers_never_reach_the_provider() {
    let server = MockServer::fixed(Canned::new(200, r#"{"Code":"OK","BizId":"b"}"#)).await;
    let provider = adapter(&server.base_url);

    let targets1 = targets(&["13800000000"]);
    let free_text = json!({"content": "your code is 1234"});
    let out = provider
        .send(SendRequest {
            msgid: 1,
            content: &free_text,
            targets: &targets1,
            ttl: None,
        })
        .await;
    assert_eq!(out[0].class, OutcomeClass::Perm);
    assert_eq!(
        out[0].message,
        "free-text SMS not supported by Aliyun; use temp_id"
    );
    assert!(server.requests().is_empty());

    // A malformed number is answered locally; the rest of the batch still goes out.
    let mixed = targets(&["bad,number", "13800000000"]);
    let content = content();
    let out = provider
        .send(SendRequest {
            msgid: 2,
            content: &content,
            targets: &mixed,
            ttl: None,
        })
        .await;
    assert_eq!(out[0].class, OutcomeClass::Gone);
    assert_eq!(out[1].class, OutcomeClass::Ok);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(form(&requests[0])["PhoneNumbers"], "13800000000");
}
