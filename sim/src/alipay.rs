//! Alipay OpenAPI gateway (`POST /gateway.do`) for life account template messages
//! (`alipay.open.public.message.single.send`, providers.md §4): the request's RSA2 signature
//! checked with the app's public key, the timestamp and system parameters checked as the
//! gateway checks them, and every answer signed with the simulator's own "Alipay" key over the
//! exact text of its response node. Written apart from the hub's adapter, so the two check each
//! other.
//!
//! The keys are the simulator's own throwaway test keys ([`APP_PRIVATE_KEY`] for the app, whose
//! public half the gateway checks with; [`platform_public_key_pem`] for the hub's
//! `alipay_public_key`). A user on the channel's `perm_addresses` does not follow the account:
//! 40004 `PUB.USER_NOT_FOLLOW` (the simulator's name for it; Alipay's sub-code for it is not
//! known). `to_open_id` is taken like `to_user_id` (providers.md marks it unconfirmed). Not
//! simulated: rate limits, `app_auth_token`, certificate mode.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{Value, json};

use crate::state::{Channel, Injected, SimState};

/// The simulated app's private key (PKCS#8 PEM): the hub's `private_key`.
pub const APP_PRIVATE_KEY: &str = include_str!("alipay_app_key.pem");
/// The simulated platform's private key: signs the gateway's answers.
const PLATFORM_PRIVATE_KEY: &str = include_str!("alipay_platform_key.pem");
const METHOD: &str = "alipay.open.public.message.single.send";
const NODE: &str = "alipay_open_public_message_single_send_response";
/// How far a request's timestamp may be from the gateway's clock.
const TIMESTAMP_SKEW_SECONDS: i64 = 15 * 60;

fn private_key(pem: &str) -> Option<RsaPrivateKey> {
    RsaPrivateKey::from_pkcs8_pem(pem).ok()
}

/// The platform's public key (SubjectPublicKeyInfo PEM): the hub's `alipay_public_key`.
pub fn platform_public_key_pem() -> String {
    private_key(PLATFORM_PRIVATE_KEY)
        .and_then(|k| {
            RsaPublicKey::from(&k)
                .to_public_key_pem(LineEnding::LF)
                .ok()
        })
        .unwrap_or_default()
}

/// An answer: `node` (the method's, or `error_response`) holding `content`, signed.
fn answer(node: &str, content: Value) -> HttpResponse {
    let text = content.to_string();
    let sign = private_key(PLATFORM_PRIVATE_KEY)
        .map(|k| {
            let signature = SigningKey::<Sha256>::new(k).sign(text.as_bytes());
            base64::engine::general_purpose::STANDARD.encode(signature.to_bytes())
        })
        .unwrap_or_default();
    HttpResponse::Ok()
        .content_type("application/json;charset=utf-8")
        .body(format!("{{\"{node}\":{text},\"sign\":\"{sign}\"}}"))
}

fn refuse(state: &SimState, node: &str, code: &str, msg: &str, sub_code: &str) -> HttpResponse {
    state.fail(Channel::AlipayLife);
    answer(
        node,
        json!({"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_code}),
    )
}

/// The request's content to sign: every parameter but `sign` and the empty ones, sorted, raw.
fn sign_content(params: &BTreeMap<String, String>) -> String {
    params
        .iter()
        .filter(|(k, v)| *k != "sign" && !v.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn signature_valid(params: &BTreeMap<String, String>, sign: &str) -> bool {
    let Some(app) = private_key(APP_PRIVATE_KEY) else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(sign) else {
        return false;
    };
    let Ok(signature) = Signature::try_from(bytes.as_slice()) else {
        return false;
    };
    VerifyingKey::<Sha256>::new(RsaPublicKey::from(&app))
        .verify(sign_content(params).as_bytes(), &signature)
        .is_ok()
}

/// Whether a `yyyy-MM-dd HH:mm:ss` Beijing time is within the skew of now.
fn timestamp_fresh(timestamp: &str) -> bool {
    let Ok(at) = chrono::NaiveDateTime::parse_from_str(timestamp, "%Y-%m-%d %H:%M:%S") else {
        return false;
    };
    let now = (chrono::Utc::now() + chrono::Duration::hours(8)).naive_utc();
    (now - at).num_seconds().abs() <= TIMESTAMP_SKEW_SECONDS
}

/// The user a `biz_content` names and its business errors (sub-code).
fn biz_errors(biz: &Value) -> Result<String, &'static str> {
    let to = biz
        .get("to_user_id")
        .or_else(|| biz.get("to_open_id"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or("isv.missing-to-user-id")?;
    let template = biz.get("template").ok_or("PUB.TEMPLATE_MISSING")?;
    if template
        .get("template_id")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err("PUB.TEMPLATE_MISSING");
    }
    let context = template
        .get("context")
        .ok_or("PUB.TEMPLATE_CONTEXT_ERROR")?;
    for field in ["head_color", "url", "action_name"] {
        if context
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err("PUB.TEMPLATE_CONTEXT_ERROR");
        }
    }
    Ok(to.to_string())
}

/// `POST /gateway.do`: system parameters and `sign` in the query, `biz_content` in the form
/// body (or everything in the form).
pub(crate) async fn gateway(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<SimState>,
) -> HttpResponse {
    let c = Channel::AlipayLife;
    SimState::delay(state.begin_call(c)).await;
    let mut params: BTreeMap<String, String> =
        url::form_urlencoded::parse(req.query_string().as_bytes())
            .into_owned()
            .collect();
    params.extend(url::form_urlencoded::parse(&body).into_owned());
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or_default();
    if get("method") != METHOD {
        return refuse(
            &state,
            "error_response",
            "40002",
            "Invalid Arguments",
            "isv.invalid-method",
        );
    }
    if get("app_id") != state.config().alipay_app_id {
        return refuse(
            &state,
            NODE,
            "40002",
            "Invalid Arguments",
            "isv.invalid-app-id",
        );
    }
    if get("version").is_empty() {
        return refuse(
            &state,
            NODE,
            "40001",
            "Missing Required Arguments",
            "isv.missing-version",
        );
    }
    if get("version") != "1.0" {
        return refuse(
            &state,
            NODE,
            "40002",
            "Invalid Arguments",
            "isv.invalid-version",
        );
    }
    if !get("format").eq_ignore_ascii_case("json") {
        return refuse(
            &state,
            NODE,
            "40002",
            "Invalid Arguments",
            "isv.invalid-format",
        );
    }
    if !matches!(
        get("charset").to_ascii_lowercase().as_str(),
        "utf-8" | "utf8"
    ) {
        return refuse(
            &state,
            NODE,
            "40002",
            "Invalid Arguments",
            "isv.invalid-charset",
        );
    }
    if get("sign_type") != "RSA2" {
        return refuse(
            &state,
            NODE,
            "40002",
            "Invalid Arguments",
            "isv.invalid-signature-type",
        );
    }
    if !timestamp_fresh(get("timestamp")) {
        return refuse(
            &state,
            NODE,
            "40002",
            "Invalid Arguments",
            "isv.invalid-timestamp",
        );
    }
    let sign = get("sign").to_string();
    if sign.is_empty() {
        return refuse(
            &state,
            NODE,
            "40001",
            "Missing Required Arguments",
            "isv.missing-signature",
        );
    }
    if !signature_valid(&params, &sign) {
        return refuse(
            &state,
            NODE,
            "40002",
            "Invalid Arguments",
            "isv.invalid-signature",
        );
    }
    let biz: Value = serde_json::from_str(get("biz_content")).unwrap_or(Value::Null);
    let user = match biz_errors(&biz) {
        Ok(user) => user,
        Err(sub_code) => return refuse(&state, NODE, "40004", "Business Failed", sub_code),
    };
    if let Some(f) = state.take_fault(c) {
        return match f {
            Injected::Status(s) => {
                state.fail(c);
                HttpResponse::build(StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY))
                    .body("<html><body>upstream error</body></html>")
            }
            Injected::Code(code) if code == "20000" => refuse(
                &state,
                NODE,
                "20000",
                "Service Currently Unavailable",
                "isp.unknow-error",
            ),
            Injected::Code(code) => refuse(&state, NODE, "40004", "Business Failed", &code),
        };
    }
    if state.is_perm(c, &user) {
        return refuse(
            &state,
            NODE,
            "40004",
            "Business Failed",
            "PUB.USER_NOT_FOLLOW",
        );
    }
    state.record(c, vec![user]);
    answer(NODE, json!({"code": "10000", "msg": "Success"}))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_load_and_business_errors_are_named() {
        assert!(private_key(APP_PRIVATE_KEY).is_some());
        assert!(platform_public_key_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
        let ok = json!({"to_user_id": "2088", "template": {"template_id": "T",
            "context": {"head_color": "#fff", "url": "https://x.test", "action_name": "go"}}});
        assert_eq!(biz_errors(&ok), Ok("2088".to_string()));
        let mut no_user = ok.clone();
        no_user.as_object_mut().unwrap().remove("to_user_id");
        assert_eq!(biz_errors(&no_user), Err("isv.missing-to-user-id"));
        let mut no_url = ok.clone();
        no_url["template"]["context"]["url"] = json!("");
        assert_eq!(biz_errors(&no_url), Err("PUB.TEMPLATE_CONTEXT_ERROR"));
        assert!(timestamp_fresh(
            &(chrono::Utc::now() + chrono::Duration::hours(8))
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        ));
        assert!(!timestamp_fresh("2020-01-01 00:00:00"));
    }
}
