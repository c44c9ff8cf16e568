//! Signed webhook sink: `POST /webhook/{name}` verifying `X-Msghub-Signature`.
//!
//! Signature: `sha256=<hex(HMAC-SHA256(webhook_secret, timestamp + "." + raw_body))>` with the
//! timestamp (unix seconds) from `X-Msghub-Timestamp`. No clock-skew check is applied. A
//! repeated `X-Msghub-Delivery` id is acknowledged and not recorded twice (idempotent
//! receiver).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::state::{Channel, Injected, SimState};

fn mac(secret: &str, timestamp: &str, body: &[u8]) -> Option<Hmac<Sha256>> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).ok()?;
    m.update(timestamp.as_bytes());
    m.update(b".");
    m.update(body);
    Some(m)
}

/// Computes the `X-Msghub-Signature` header value for a body.
pub fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    mac(secret, timestamp, body)
        .map(|m| format!("sha256={}", hex::encode(m.finalize().into_bytes())))
        .unwrap_or_default()
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn verified(req: &HttpRequest, body: &[u8], secret: &str) -> Result<(), &'static str> {
    let ts = header(req, "x-msghub-timestamp").ok_or("missing X-Msghub-Timestamp")?;
    if ts.is_empty() || ts.parse::<i64>().is_err() {
        return Err("X-Msghub-Timestamp must be unix seconds");
    }
    let sig = header(req, "x-msghub-signature").ok_or("missing X-Msghub-Signature")?;
    let hex_sig = sig
        .strip_prefix("sha256=")
        .ok_or("signature must start with sha256=")?;
    let raw = hex::decode(hex_sig).map_err(|_| "signature is not hex")?;
    let m = mac(secret, ts, body).ok_or("bad secret")?;
    m.verify_slice(&raw).map_err(|_| "signature mismatch")
}

fn plain(status: u16, msg: &str) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .json(json!({"ok": false, "error": msg}))
}

/// `POST /webhook/{name}`.
pub(crate) async fn receive(
    req: HttpRequest,
    name: web::Path<String>,
    body: web::Bytes,
    state: web::Data<SimState>,
) -> HttpResponse {
    let c = Channel::Webhook;
    SimState::delay(state.begin_call(c)).await;
    if let Err(msg) = verified(&req, &body, &state.config().webhook_secret) {
        state.fail(c);
        return plain(401, msg);
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        state.fail(c);
        return plain(400, "body must be JSON");
    };
    let target = v
        .get("target")
        .and_then(Value::as_str)
        .map_or_else(|| name.into_inner(), str::to_string);
    match state.take_fault(c) {
        Some(Injected::Status(s)) => {
            state.fail(c);
            let mut r = plain(s, "simulated failure");
            if s == 429 || s == 503 {
                r.headers_mut().insert(
                    actix_web::http::header::RETRY_AFTER,
                    actix_web::http::header::HeaderValue::from_static("1"),
                );
            }
            return r;
        }
        Some(Injected::Code(code)) => {
            state.fail(c);
            return plain(
                code.trim().parse().unwrap_or(400),
                &format!("simulated {code}"),
            );
        }
        None => {}
    }
    if state.is_perm(c, &target) {
        state.fail(c);
        return plain(410, "target gone");
    }
    if let Some(id) = header(&req, "x-msghub-delivery")
        && !crate::state::lock(&state.webhook_deliveries).insert(id.to_string())
    {
        // Already accepted: an idempotent receiver answers OK and does nothing.
        return HttpResponse::Ok().json(json!({"ok": true, "duplicate": true}));
    }
    state.record(c, vec![c.normalise(&target)]);
    HttpResponse::Ok().json(json!({"ok": true}))
}
