//! The Tencent Cloud SMS endpoint: TC3-HMAC-SHA256 verification, SendSms checks, per-number
//! statuses, faults and recording.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TencentCall;
use msghub_sim::FaultPlan;
use serde_json::{Value, json};

fn send_body(phones: &[&str]) -> String {
    json!({"PhoneNumberSet": phones, "SmsSdkAppId": "1400000001", "TemplateId": "1110",
           "SignName": "msghub", "TemplateParamSet": ["1234"], "SessionContext": "77"})
    .to_string()
}

fn error_code(v: &Value) -> &str {
    v["Response"]["Error"]["Code"].as_str().unwrap_or_default()
}

#[actix_web::test]
async fn a_signed_send_gets_a_status_and_serial_per_number() {
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    let base = sim.http_url();
    let (status, v) = TencentCall::default()
        .send(
            &c,
            &base,
            &send_body(&["+8613800000001", "+8613800000002", "+86138abc"]),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let set = v["Response"]["SendStatusSet"].as_array().unwrap();
    assert_eq!(set.len(), 3, "{v}");
    for (i, s) in set.iter().take(2).enumerate() {
        assert_eq!(s["Code"], "Ok", "{v}");
        assert_eq!(s["PhoneNumber"], format!("+861380000000{}", i + 1));
        assert_eq!(s["SessionContext"], "77");
        assert_eq!(s["IsoCode"], "CN");
        assert!(s["SerialNo"].as_str().unwrap().starts_with("2433:"), "{v}");
    }
    assert_ne!(set[0]["SerialNo"], set[1]["SerialNo"]);
    assert_eq!(set[2]["Code"], "InvalidParameterValue.IncorrectPhoneNumber");
    assert_eq!(set[2]["SerialNo"], "");
    assert!(v["Response"]["RequestId"].is_string());
    // Recorded under the national number, like Aliyun's; the bad number is not.
    let got = sim.state.received("tencent_sms");
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(sim.state.count("tencent", "13800000001"), 1);
    assert_eq!(sim.state.calls("tencent_sms"), 1);
    // The Aliyun endpoint on the same path is untouched.
    assert!(sim.state.received("sms").is_empty());
    sim.stop().await;
}

#[actix_web::test]
async fn the_gateway_refuses_what_tencent_refuses() {
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    let base = sim.http_url();
    let ok = send_body(&["+8613800000001"]);
    let now = chrono::Utc::now().timestamp();
    let cases: Vec<(TencentCall, String, &str)> = vec![
        (
            TencentCall {
                secret_key: "wrong",
                ..TencentCall::default()
            },
            ok.clone(),
            "AuthFailure.SignatureFailure",
        ),
        (
            TencentCall {
                secret_id: "someone-else",
                ..TencentCall::default()
            },
            ok.clone(),
            "AuthFailure.SecretIdNotFound",
        ),
        (
            TencentCall {
                timestamp: now - 600,
                ..TencentCall::default()
            },
            ok.clone(),
            "AuthFailure.SignatureExpire",
        ),
        (
            TencentCall {
                version: "2019-07-11",
                ..TencentCall::default()
            },
            ok.clone(),
            "NoSuchVersion",
        ),
        (
            TencentCall {
                action: "PullSmsSendStatus",
                ..TencentCall::default()
            },
            ok.clone(),
            "InvalidAction",
        ),
        (
            TencentCall::default(),
            send_body(&["+8613800000001", "+14155550100"]),
            "UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber",
        ),
        (
            TencentCall::default(),
            json!({"PhoneNumberSet": vec!["+8613800000001"; 201], "SmsSdkAppId": "1400000001",
                   "TemplateId": "1110", "SignName": "s"})
            .to_string(),
            "LimitExceeded.PhoneNumberCountLimit",
        ),
        (
            TencentCall::default(),
            json!({"PhoneNumberSet": ["+8613800000001"], "SmsSdkAppId": "1400000002",
                   "TemplateId": "1110", "SignName": "s"})
            .to_string(),
            "InvalidParameterValue.SdkAppIdNotExist",
        ),
        (
            TencentCall::default(),
            json!({"PhoneNumberSet": ["+8613800000001"], "SmsSdkAppId": "1400000001",
                   "TemplateId": "SMS_1", "SignName": "s"})
            .to_string(),
            "FailedOperation.TemplateIncorrectOrUnapproved",
        ),
        (
            TencentCall::default(),
            json!({"PhoneNumberSet": ["+8613800000001"], "SmsSdkAppId": "1400000001",
                   "TemplateId": "1110"})
            .to_string(),
            "FailedOperation.SignatureIncorrectOrUnapproved",
        ),
        (
            TencentCall::default(),
            json!({"PhoneNumberSet": ["+8613800000001"], "SmsSdkAppId": "1400000001",
                   "TemplateId": "1110", "SignName": "s", "TemplateParamSet": {"1": "a"}})
            .to_string(),
            "InvalidParameterValue.TemplateParameterFormatError",
        ),
    ];
    let n = cases.len() as u64;
    for (call, body, code) in cases {
        let (status, v) = call.send(&c, &base, &body).await;
        assert_eq!((status, error_code(&v)), (200, code), "{v}");
        assert!(v["Response"]["SendStatusSet"].is_null(), "{v}");
    }
    // International numbers need no signature name.
    let (status, v) = TencentCall::default()
        .send(
            &c,
            &base,
            &json!({"PhoneNumberSet": ["+14155550100"], "SmsSdkAppId": "1400000001",
                    "TemplateId": "1110"})
            .to_string(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["Response"]["SendStatusSet"][0]["Code"], "Ok", "{v}");
    assert_eq!(sim.state.failed_calls("tencent_sms"), n);
    assert_eq!(sim.state.total("tencent_sms"), 1);
    sim.stop().await;
}

#[actix_web::test]
async fn faults_answer_as_tencent_does() {
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    let base = sim.http_url();
    let call = TencentCall::default();
    assert!(sim.state.set_faults(
        "tencent_sms",
        FaultPlan {
            perm_addresses: vec!["13800000009".into()],
            fail_code: Some("InternalError.Timeout".into()),
            fail_code_next: 1,
            ..FaultPlan::default()
        },
    ));
    let (_, v) = call.send(&c, &base, &send_body(&["+8613800000001"])).await;
    assert_eq!(error_code(&v), "InternalError.Timeout", "{v}");
    let (_, v) = call
        .send(&c, &base, &send_body(&["+8613800000001", "+8613800000009"]))
        .await;
    let set = &v["Response"]["SendStatusSet"];
    assert_eq!(set[0]["Code"], "Ok", "{v}");
    assert_eq!(
        set[1]["Code"], "FailedOperation.PhoneNumberInBlacklist",
        "{v}"
    );
    assert_eq!(sim.state.count("tencent_sms", "13800000009"), 0);

    sim.state.set_faults(
        "tencent_sms",
        FaultPlan {
            fail_next: 2,
            fail_status: 503,
            ..FaultPlan::default()
        },
    );
    let (status, v) = call.send(&c, &base, &send_body(&["+8613800000001"])).await;
    assert_eq!((status, v), (503, Value::Null));
    sim.state.set_faults(
        "tencent_sms",
        FaultPlan {
            fail_next: 1,
            fail_status: 429,
            ..FaultPlan::default()
        },
    );
    let (status, v) = call.send(&c, &base, &send_body(&["+8613800000001"])).await;
    assert_eq!(
        (status, error_code(&v)),
        (200, "RequestLimitExceeded"),
        "{v}"
    );
    assert_eq!(sim.state.count("tencent_sms", "13800000001"), 1);
    sim.stop().await;
}
