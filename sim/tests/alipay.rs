//! The Alipay gateway: requests' RSA2 signatures and timestamps checked, answers signed over
//! their node's exact text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use base64::Engine;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use serde_json::{Value, json};

const NODE: &str = "alipay_open_public_message_single_send_response";

fn beijing_now() -> String {
    (chrono::Utc::now() + chrono::Duration::hours(8))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// POST a single.send for `to`, signed with `key` (PEM) at `timestamp`: the answer's text.
async fn call(base: &str, key: &str, timestamp: &str, to: &str) -> String {
    call_with(base, key, timestamp, to, |_| {}).await
}

/// [`call`] with the system parameters changed by `tweak` before signing.
async fn call_with(
    base: &str,
    key: &str,
    timestamp: &str,
    to: &str,
    tweak: impl Fn(&mut BTreeMap<&str, String>),
) -> String {
    let biz = json!({"to_user_id": to, "template": {"template_id": "T", "context": {
        "head_color": "#fff", "url": "https://x.test", "action_name": "go"}}})
    .to_string();
    let mut params: BTreeMap<&str, String> = [
        ("app_id", "2021005151000001"),
        ("method", "alipay.open.public.message.single.send"),
        ("format", "JSON"),
        ("charset", "utf-8"),
        ("sign_type", "RSA2"),
        ("timestamp", timestamp),
        ("version", "1.0"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    tweak(&mut params);
    params.insert("biz_content", biz.clone());
    let content: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let signer = SigningKey::<Sha256>::new(rsa::RsaPrivateKey::from_pkcs8_pem(key).unwrap());
    let sign = base64::engine::general_purpose::STANDARD
        .encode(signer.sign(content.join("&").as_bytes()).to_bytes());
    params.remove("biz_content");
    params.insert("sign", sign);
    let url = reqwest::Url::parse_with_params(&format!("{base}/gateway.do"), &params).unwrap();
    common::client()
        .post(url)
        .form(&[("biz_content", biz)])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The node's code and sub-code, after checking the answer's signature over its node text.
fn read(answer: &str) -> (String, String) {
    let v: Value = serde_json::from_str(answer).unwrap();
    let node = &v[NODE];
    let text = node.to_string();
    assert!(
        answer.contains(&text),
        "the node is signed as sent: {answer}"
    );
    let public =
        rsa::RsaPublicKey::from_public_key_pem(&msghub_sim::alipay::platform_public_key_pem())
            .unwrap();
    let sign = base64::engine::general_purpose::STANDARD
        .decode(v["sign"].as_str().unwrap())
        .unwrap();
    VerifyingKey::<Sha256>::new(public)
        .verify(
            text.as_bytes(),
            &Signature::try_from(sign.as_slice()).unwrap(),
        )
        .expect("the answer verifies with the platform's public key");
    (
        node["code"].as_str().unwrap().to_string(),
        node["sub_code"].as_str().unwrap_or_default().to_string(),
    )
}

#[actix_web::test]
async fn requests_are_checked_and_answers_signed_like_the_gateway() {
    let sim = common::sim(|_| {}).await;
    let base = sim.http_url();
    let app_key = msghub_sim::alipay::APP_PRIVATE_KEY;
    let ok = call(&base, app_key, &beijing_now(), "2088000000000001").await;
    assert_eq!(read(&ok), ("10000".to_string(), String::new()));
    assert_eq!(sim.state.count("alipay_life", "2088000000000001"), 1);

    let stale = call(&base, app_key, "2020-01-01 00:00:00", "2088000000000001").await;
    assert_eq!(read(&stale).1, "isv.invalid-timestamp");
    // Signed with another key than the app's: refused, nothing sent.
    let other_pem = include_str!("alipay_other_key.pem");
    let forged = call(&base, other_pem, &beijing_now(), "2088000000000001").await;
    assert_eq!(read(&forged).1, "isv.invalid-signature");
    // The system parameters the gateway requires, each signed but wrong or missing.
    let now = beijing_now();
    for (key, value, sub_code) in [
        ("version", None, "isv.missing-version"),
        ("version", Some("2.0"), "isv.invalid-version"),
        ("format", Some("XML"), "isv.invalid-format"),
        ("charset", Some("GBK"), "isv.invalid-charset"),
        ("sign_type", Some("RSA"), "isv.invalid-signature-type"),
    ] {
        let answer = call_with(&base, app_key, &now, "2088000000000001", |p| match value {
            Some(v) => {
                p.insert(key, v.to_string());
            }
            None => {
                p.remove(key);
            }
        })
        .await;
        assert_eq!(read(&answer).1, sub_code, "{key}");
    }
    assert_eq!(sim.state.total("alipay_life"), 1);
}
