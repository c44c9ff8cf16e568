//! The `alipay_life` adapter against a local gateway: the request's query, form body and
//! RSA2 signature as the gateway sees them, outcomes in target order, answers believed only
//! when their node verifies, a tampered success refused, a 5xx retried, refused content making
//! no call.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use common::{Canned, Captured, MockServer, install_crypto, options, targets};
use msghub_actors::provider::{ChannelType, OutcomeClass, SendRequest};
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use serde_json::{Value, json};

const APP_KEY: &str = include_str!("../src/alipay/test_key.pem");
const PLATFORM_KEY: &str = include_str!("alipay_platform_key.pem");
const NODE: &str = "alipay_open_public_message_single_send_response";

fn public_pem(private: &str) -> String {
    rsa::RsaPublicKey::from(&rsa::RsaPrivateKey::from_pkcs8_pem(private).unwrap())
        .to_public_key_pem(LineEnding::LF)
        .unwrap()
}

fn adapter(base_url: &str) -> Arc<dyn msghub_actors::provider::Provider> {
    install_crypto();
    msghub_providers::build(
        ChannelType::AlipayLife,
        &json!({"app_id": "2021000000000001", "private_key": APP_KEY,
                "alipay_public_key": public_pem(PLATFORM_KEY), "base_url": format!("{base_url}/gateway.do")}),
        &options(),
    )
    .unwrap()
}

fn content() -> Value {
    json!({"template_id": "TPL_1", "context": {"head_color": "#85be53", "url": "https://x.test/详情",
        "action_name": "查看详情", "keyword1": "HU7142"}})
}

/// `node_text` as the gateway sends it, with a signature over `signed_text`.
fn signed(node_text: &str, signed_text: &str) -> Canned {
    let signer =
        SigningKey::<Sha256>::new(rsa::RsaPrivateKey::from_pkcs8_pem(PLATFORM_KEY).unwrap());
    let sign = base64::engine::general_purpose::STANDARD
        .encode(signer.sign(signed_text.as_bytes()).to_bytes());
    Canned::new(
        200,
        format!("{{\"{NODE}\": {node_text},\"sign\":\"{sign}\"}}"),
    )
}

/// Every parameter of a captured request: the query's and the form body's.
fn params(r: &Captured) -> BTreeMap<String, String> {
    let url = reqwest::Url::parse(&format!("http://gateway.test{}", r.path)).unwrap();
    let mut all: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    let body = reqwest::Url::parse(&format!("http://b.test/?{}", r.text())).unwrap();
    all.extend(body.query_pairs().into_owned());
    all
}

#[tokio::test]
async fn requests_are_signed_and_outcomes_kept_in_order() {
    let server = MockServer::start(|r: &Captured| {
        let biz: Value = serde_json::from_str(&params(r)["biz_content"]).unwrap();
        if biz["to_user_id"] == "2088000000000002" {
            let node = r#"{"code":"40004","msg":"Business Failed","sub_code":"PUB.USER_NOT_FOLLOW","sub_msg":"用户未关注"}"#;
            return signed(node, node);
        }
        let node = r#"{"code":"10000","msg":"Success"}"#;
        signed(node, node)
    })
    .await;
    let provider = adapter(&server.base_url);
    let targets = targets(&["2088000000000001", "2088000000000002", "bad id!"]);
    let content = content();
    let out = provider
        .send(SendRequest {
            msgid: 5,
            content: &content,
            targets: &targets,
            ttl: None,
        })
        .await;
    let classes: Vec<(OutcomeClass, &str)> =
        out.iter().map(|o| (o.class, o.code.as_str())).collect();
    assert_eq!(
        classes,
        vec![
            (OutcomeClass::Ok, "10000"),
            (OutcomeClass::Perm, "PUB.USER_NOT_FOLLOW"),
            (OutcomeClass::Gone, "invalid_address"),
        ]
    );
    assert_eq!(out[1].message, "Business Failed: 用户未关注");
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "no call for the bad address");
    let r = requests
        .iter()
        .find(|r| params(r)["biz_content"].contains("2088000000000001"))
        .unwrap();
    assert_eq!(r.method, "POST");
    assert!(r.path.starts_with("/gateway.do?"), "{}", r.path);
    assert_eq!(
        r.header("content-type"),
        Some("application/x-www-form-urlencoded;charset=utf-8")
    );
    assert!(
        r.text().starts_with("biz_content="),
        "biz_content alone in the body"
    );
    let p = params(r);
    for (k, v) in [
        ("app_id", "2021000000000001"),
        ("method", "alipay.open.public.message.single.send"),
        ("format", "JSON"),
        ("charset", "utf-8"),
        ("sign_type", "RSA2"),
        ("version", "1.0"),
    ] {
        assert_eq!(p[k], v, "{k}");
    }
    let biz: Value = serde_json::from_str(&p["biz_content"]).unwrap();
    assert_eq!(
        biz["template"]["context"]["keyword1"],
        json!({"value": "HU7142"})
    );
    // The signature, checked the gateway's way: sorted raw pairs without sign, app public key.
    let content: Vec<String> = p
        .iter()
        .filter(|(k, v)| *k != "sign" && !v.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let signature = base64::engine::general_purpose::STANDARD
        .decode(&p["sign"])
        .unwrap();
    let app_public = rsa::RsaPublicKey::from(&rsa::RsaPrivateKey::from_pkcs8_pem(APP_KEY).unwrap());
    VerifyingKey::<Sha256>::new(app_public)
        .verify(
            content.join("&").as_bytes(),
            &Signature::try_from(signature.as_slice()).unwrap(),
        )
        .expect("the request's signature verifies with the app's public key");
}

#[tokio::test]
async fn a_success_that_does_not_verify_is_not_counted_and_a_5xx_is_retried() {
    // The signature covers a failure; the node says success.
    let tampered = MockServer::fixed(signed(
        r#"{"code":"10000","msg":"Success"}"#,
        r#"{"code":"40004","msg":"Business Failed"}"#,
    ))
    .await;
    let targets = targets(&["2088000000000001"]);
    let content = content();
    let req = SendRequest {
        msgid: 1,
        content: &content,
        targets: &targets,
        ttl: None,
    };
    let out = adapter(&tampered.base_url).send(req).await;
    assert_eq!(
        (out[0].class, out[0].code.as_str()),
        (OutcomeClass::Perm, "invalid_response_signature")
    );
    let busy = MockServer::fixed(Canned::new(502, "<html>bad gateway</html>")).await;
    let out = adapter(&busy.base_url).send(req).await;
    assert_eq!(
        (out[0].class, out[0].code.as_str()),
        (OutcomeClass::Retry, "502")
    );
}

#[tokio::test]
async fn refused_contents_make_no_call() {
    let server = MockServer::fixed(Canned::new(500, "must not be called")).await;
    let targets = targets(&["2088000000000001"]);
    let content = json!({"template_id": "TPL_1", "context": {"head_color": "#85be53"}});
    let out = adapter(&server.base_url)
        .send(SendRequest {
            msgid: 1,
            content: &content,
            targets: &targets,
            ttl: None,
        })
        .await;
    assert_eq!(
        (out[0].class, out[0].code.as_str()),
        (OutcomeClass::Perm, "invalid_content")
    );
    assert!(server.requests().is_empty());
}
