//! The `sms` adapter on Tencent Cloud SMS against a local HTTP server: the signed JSON POST,
//! mainland and international numbers in separate calls, and per-number outcomes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Canned, Captured, MockServer, closed_port_url, install_crypto, options, targets};
use hmac::{Hmac, KeyInit, Mac};
use msghub_actors::provider::{ChannelType, OutcomeClass, SendRequest};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const SECRET: &str = "tencent-secret-key";

fn adapter(base_url: &str) -> std::sync::Arc<dyn msghub_actors::provider::Provider> {
    install_crypto();
    msghub_providers::build(
        ChannelType::Sms,
        &json!({
            "provider": "tencent",
            "secret_id": "AKID-test",
            "secret_key": SECRET,
            "sdk_app_id": "1400006666",
            "sign_name": "腾讯云短信测试",
            "region": "ap-shanghai",
            "base_url": base_url
        }),
        &options(),
    )
    .unwrap()
}

/// Answers every number of the call `Ok` with a serial made from the number, except numbers
/// ending in 9, which are blacklisted.
fn per_number(r: &Captured) -> Canned {
    let body = r.json();
    let set: Vec<Value> = body["PhoneNumberSet"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let p = p.as_str().unwrap();
            if p.ends_with('9') {
                json!({"SerialNo": "", "PhoneNumber": p, "Fee": 0, "Code": "FailedOperation.PhoneNumberInBlacklist",
                       "Message": "blacklisted", "IsoCode": "CN"})
            } else {
                json!({"SerialNo": format!("5000:{p}"), "PhoneNumber": p, "Fee": 1, "Code": "Ok",
                       "Message": "send success", "IsoCode": "CN"})
            }
        })
        .collect();
    Canned::new(
        200,
        json!({"Response": {"SendStatusSet": set, "RequestId": "r"}}).to_string(),
    )
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Recompute the TC3 signature of a captured request from its own headers and body,
/// independently of the crate.
fn expected_authorization(r: &Captured, host: &str) -> String {
    let timestamp: i64 = r.header("x-tc-timestamp").unwrap().parse().unwrap();
    let date = chrono::DateTime::from_timestamp(timestamp, 0)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    let canonical = format!(
        "POST\n/\n\ncontent-type:{}\nhost:{host}\n\ncontent-type;host\n{}",
        r.header("content-type").unwrap(),
        hex::encode(Sha256::digest(&r.body))
    );
    let sts = format!(
        "TC3-HMAC-SHA256\n{timestamp}\n{date}/sms/tc3_request\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key = hmac(
        &hmac(&hmac(format!("TC3{SECRET}").as_bytes(), &date), "sms"),
        "tc3_request",
    );
    format!(
        "TC3-HMAC-SHA256 Credential=AKID-test/{date}/sms/tc3_request, SignedHeaders=content-type;host, Signature={}",
        hex::encode(hmac(&key, &sts))
    )
}

#[tokio::test]
async fn numbers_go_in_signed_calls_and_come_back_one_by_one() {
    let server = MockServer::start(per_number).await;
    let provider = adapter(&server.base_url);
    let targets = targets(&[
        "13800000001",
        "+14155550100",
        "+8613800000001",
        "13800000009",
        "not a phone",
        "8613800000002",
    ]);
    let content = json!({"temp_id": "1110", "temp_para": ["1234", "5"]});
    let outcomes = provider
        .send(SendRequest {
            msgid: 99,
            content: &content,
            targets: &targets,
            ttl: None,
        })
        .await;
    let got: Vec<(OutcomeClass, &str, Option<&str>)> = outcomes
        .iter()
        .map(|o| (o.class, o.code.as_str(), o.provider_id.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            (OutcomeClass::Ok, "Ok", Some("5000:+8613800000001")),
            (OutcomeClass::Ok, "Ok", Some("5000:+14155550100")),
            // The same number written twice was sent once and shares its outcome.
            (OutcomeClass::Ok, "Ok", Some("5000:+8613800000001")),
            (
                OutcomeClass::Gone,
                "FailedOperation.PhoneNumberInBlacklist",
                None
            ),
            (OutcomeClass::Gone, "invalid_address", None),
            (OutcomeClass::Ok, "Ok", Some("5000:+8613800000002")),
        ]
    );

    // Mainland numbers in one call, international in another.
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let host = server.base_url.trim_start_matches("http://").to_string();
    let mainland = &requests[0];
    assert_eq!(
        (mainland.method.as_str(), mainland.path.as_str()),
        ("POST", "/")
    );
    assert_eq!(
        mainland.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(mainland.header("x-tc-action"), Some("SendSms"));
    assert_eq!(mainland.header("x-tc-version"), Some("2021-01-11"));
    assert_eq!(mainland.header("x-tc-region"), Some("ap-shanghai"));
    assert_eq!(mainland.header("host"), Some(host.as_str()));
    assert_eq!(
        mainland.json(),
        json!({"PhoneNumberSet": ["+8613800000001", "+8613800000002", "+8613800000009"],
               "SmsSdkAppId": "1400006666", "TemplateId": "1110", "SignName": "腾讯云短信测试",
               "SessionContext": "99", "TemplateParamSet": ["1234", "5"]})
    );
    assert_eq!(
        requests[1].json()["PhoneNumberSet"],
        json!(["+14155550100"])
    );
    for r in &requests {
        assert_eq!(
            r.header("authorization").unwrap(),
            expected_authorization(r, &host)
        );
        let ts: i64 = r.header("x-tc-timestamp").unwrap().parse().unwrap();
        assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);
        assert!(!r.text().contains(SECRET));
    }
}

#[tokio::test]
async fn more_than_200_numbers_take_several_calls() {
    let server = MockServer::start(per_number).await;
    let provider = adapter(&server.base_url);
    let phones: Vec<String> = (0..450).map(|i| format!("+861380000{i:04}")).collect();
    let refs: Vec<&str> = phones.iter().map(String::as_str).collect();
    let targets = targets(&refs);
    let content = json!({"temp_id": "1110"});
    let outcomes = provider
        .send(SendRequest {
            msgid: 1,
            content: &content,
            targets: &targets,
            ttl: None,
        })
        .await;
    assert_eq!(outcomes.len(), 450);
    for (o, phone) in outcomes.iter().zip(&phones) {
        if phone.ends_with('9') {
            assert_eq!(o.class, OutcomeClass::Gone);
        } else {
            assert_eq!(
                o.provider_id.as_deref(),
                Some(format!("5000:{phone}").as_str())
            );
        }
    }
    let sizes: Vec<usize> = server
        .requests()
        .iter()
        .map(|r| r.json()["PhoneNumberSet"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [200, 200, 50]);
}

#[tokio::test]
async fn api_errors_content_errors_and_transport_failures() {
    let server = MockServer::fixed(Canned::new(
        200,
        r#"{"Response":{"Error":{"Code":"RequestLimitExceeded","Message":"slow down"},"RequestId":"r"}}"#,
    ))
    .await;
    let provider = adapter(&server.base_url);
    let targets = targets(&["13800000001", "13800000002"]);
    let content = json!({"temp_id": "1110"});
    let req = SendRequest {
        msgid: 1,
        content: &content,
        targets: &targets,
        ttl: None,
    };
    let out = provider.send(req).await;
    assert_eq!(out.len(), 2);
    for o in out {
        assert_eq!(
            (o.class, o.code.as_str(), o.message.as_str()),
            (OutcomeClass::Rate, "RequestLimitExceeded", "slow down")
        );
    }
    // Named parameters cannot fill a positional template: refused before any call.
    let named = json!({"temp_id": "1110", "temp_para": {"code": "1234"}});
    let before = server.requests().len();
    let out = provider
        .send(SendRequest {
            content: &named,
            ..req
        })
        .await;
    assert_eq!(out.len(), 2);
    for o in out {
        assert_eq!(
            (o.class, o.code.as_str()),
            (OutcomeClass::Perm, "invalid_content")
        );
    }
    assert_eq!(server.requests().len(), before);

    let down = adapter(&closed_port_url().await);
    let out = down.send(req).await;
    assert_eq!(out.len(), 2);
    for o in out {
        assert_eq!((o.class, o.code.as_str()), (OutcomeClass::Retry, "connect"));
    }
}
