//! Feishu (Lark) bot messages under `/open-apis`: tenant access tokens (`POST
//! /auth/v3/tenant_access_token/internal`), sends (`POST /im/v1/messages?receive_id_type=…`,
//! deduped by `uuid` for an hour) and recalls (`DELETE /im/v1/messages/{message_id}`), with
//! Feishu's codes. Written from Feishu's published behaviour on its own, apart from the hub's
//! adapter, so the two check each other. A recipient on the channel's `perm_addresses` is one
//! the bot is not available to (230013). Not simulated: the per-user and per-group limits,
//! read receipts.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use crate::issued_token::{IssuedToken, TokenCheck};
use crate::state::{Channel, Injected, SimState, lock};

/// A send's `uuid` makes a repeat within this long the same message.
const UUID_WINDOW: Duration = Duration::from_secs(3600);
const MSG_TYPES: &[&str] = &[
    "text",
    "post",
    "image",
    "file",
    "audio",
    "media",
    "sticker",
    "interactive",
    "share_chat",
    "share_user",
];
const ID_TYPES: &[&str] = &["open_id", "user_id", "union_id", "email", "chat_id"];

/// The token issued, the uuids seen, the messages sent and those recalled.
#[derive(Default)]
pub(crate) struct FeishuState {
    token: IssuedToken,
    uuids: HashMap<String, (String, Instant)>,
    sent: HashSet<String>,
    recalled: Vec<String>,
}

impl FeishuState {
    pub(crate) fn expire_token(&mut self) {
        self.token.expire();
    }

    pub(crate) fn recalled(&self) -> Vec<String> {
        self.recalled.clone()
    }
}

fn answer(state: &SimState, status: u16, code: i64, msg: &str) -> HttpResponse {
    state.fail(Channel::Feishu);
    let mut response =
        HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST));
    if code == FREQUENCY_LIMITED {
        // Feishu's frequency control says when its window resets.
        response.insert_header(("x-ogw-ratelimit-reset", "1"));
    }
    response.json(json!({"code": code, "msg": msg}))
}

/// The app's API frequency limit.
const FREQUENCY_LIMITED: i64 = 99991400;

/// `POST /open-apis/auth/v3/tenant_access_token/internal` with `{"app_id", "app_secret"}`:
/// the same token while it is valid.
pub(crate) async fn tenant_token(body: web::Bytes, state: web::Data<SimState>) -> HttpResponse {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let cfg = state.config();
    if v.get("app_id").and_then(Value::as_str) != Some(cfg.feishu_app_id.as_str()) {
        return answer(&state, 400, 10003, "invalid param");
    }
    if v.get("app_secret").and_then(Value::as_str) != Some(cfg.feishu_app_secret.as_str()) {
        return answer(&state, 400, 10014, "app secret invalid");
    }
    let (token, left) = lock(&state.feishu)
        .token
        .current_or_new("t-sim", state.next_id());
    HttpResponse::Ok()
        .json(json!({"code": 0, "msg": "ok", "tenant_access_token": token, "expire": left}))
}

/// The answer refusing a call's bearer token, if it is missing, unknown or expired.
fn refused_token(state: &SimState, req: &HttpRequest) -> Option<HttpResponse> {
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty());
    let Some(token) = bearer else {
        return Some(answer(
            state,
            400,
            99991661,
            "Missing access token for authorization",
        ));
    };
    let check = lock(&state.feishu).token.check(token);
    match check {
        TokenCheck::Valid => None,
        TokenCheck::Expired => Some(answer(
            state,
            400,
            99991668,
            "Invalid access token: expired",
        )),
        TokenCheck::Unknown => Some(answer(
            state,
            400,
            99991663,
            "Invalid access token for authorization",
        )),
    }
}

/// The receive id and uuid of a send body, or the code refusing it.
fn send_errors(body: &Value) -> Result<(String, Option<String>), (i64, &'static str)> {
    let invalid = (
        230001,
        "Your request contains an invalid request parameter.",
    );
    let object = body.as_object().ok_or(invalid)?;
    let receive_id = object
        .get("receive_id")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or(invalid)?;
    let msg_type = object
        .get("msg_type")
        .and_then(Value::as_str)
        .filter(|t| MSG_TYPES.contains(t))
        .ok_or(invalid)?;
    // `content` is the JSON text of an object.
    let content = object
        .get("content")
        .and_then(Value::as_str)
        .and_then(|c| serde_json::from_str::<Value>(c).ok())
        .filter(Value::is_object)
        .ok_or((230001, "invalid message content"))?;
    if msg_type == "text"
        && content
            .get("text")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        return Err((230001, "invalid message content"));
    }
    let uuid = object
        .get("uuid")
        .and_then(Value::as_str)
        .map(str::to_string);
    if uuid.as_ref().is_some_and(|u| u.len() > 50) {
        return Err(invalid);
    }
    Ok((receive_id.trim().to_string(), uuid))
}

/// `POST /open-apis/im/v1/messages?receive_id_type=…`.
pub(crate) async fn send(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<SimState>,
) -> HttpResponse {
    let c = Channel::Feishu;
    SimState::delay(state.begin_call(c)).await;
    if let Some(refused) = refused_token(&state, &req) {
        return refused;
    }
    if state.rate(c, true).exceeded {
        return answer(
            &state,
            429,
            FREQUENCY_LIMITED,
            "request trigger frequency limit",
        );
    }
    let id_type = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "receive_id_type")
        .map(|(_, v)| v.into_owned());
    if !id_type.is_some_and(|t| ID_TYPES.contains(&t.as_str())) {
        return answer(&state, 400, 99992402, "field validation failed");
    }
    let parsed = serde_json::from_slice::<Value>(&body)
        .map_err(|_| {
            (
                230001,
                "Your request contains an invalid request parameter.",
            )
        })
        .and_then(|b| send_errors(&b));
    let (receive_id, uuid) = match parsed {
        Ok(v) => v,
        Err((code, msg)) => return answer(&state, 400, code, msg),
    };
    if let Some(f) = state.take_fault(c) {
        return match f {
            Injected::Status(429) => answer(
                &state,
                429,
                FREQUENCY_LIMITED,
                "request trigger frequency limit",
            ),
            Injected::Status(s) => {
                state.fail(c);
                HttpResponse::build(StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY))
                    .body("<html><body>upstream error</body></html>")
            }
            Injected::Code(code) => {
                answer(&state, 400, code.parse().unwrap_or(-1), "simulated error")
            }
        };
    }
    if state.is_perm(c, &receive_id) {
        return answer(&state, 400, 230013, "Bot has NO availability to this user.");
    }
    let now = Instant::now();
    let mut feishu = lock(&state.feishu);
    feishu
        .uuids
        .retain(|_, (_, at)| now.duration_since(*at) < UUID_WINDOW);
    if let Some(id) = uuid
        .as_ref()
        .and_then(|u| feishu.uuids.get(u))
        .map(|(id, _)| id.clone())
    {
        // Sent already: one message per uuid within the hour.
        return HttpResponse::Ok().json(json!({"code": 0, "msg": "success",
            "data": {"message_id": id, "chat_id": "oc_sim"}}));
    }
    let message_id = format!("om_sim{:024x}", state.next_id());
    if let Some(u) = uuid {
        feishu.uuids.insert(u, (message_id.clone(), now));
    }
    feishu.sent.insert(message_id.clone());
    drop(feishu);
    state.record(c, vec![receive_id]);
    HttpResponse::Ok().json(json!({"code": 0, "msg": "success",
        "data": {"message_id": message_id, "chat_id": "oc_sim"}}))
}

/// `DELETE /open-apis/im/v1/messages/{message_id}`.
pub(crate) async fn recall(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<SimState>,
) -> HttpResponse {
    if let Some(refused) = refused_token(&state, &req) {
        return refused;
    }
    let id = path.into_inner();
    let mut feishu = lock(&state.feishu);
    if !feishu.sent.contains(&id) {
        drop(feishu);
        return answer(
            &state,
            400,
            230001,
            "Your request contains an invalid request parameter.",
        );
    }
    if !feishu.recalled.contains(&id) {
        feishu.recalled.push(id);
    }
    HttpResponse::Ok().json(json!({"code": 0, "msg": "success"}))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn send_bodies_are_checked_like_feishu() {
        let ok = json!({"receive_id": "ou_1", "msg_type": "text", "content": "{\"text\":\"hi\"}", "uuid": "u1"});
        assert_eq!(send_errors(&ok), Ok(("ou_1".into(), Some("u1".into()))));
        let with = |key: &str, value: Value| {
            let mut v = ok.clone();
            v[key] = value;
            v
        };
        for bad in [
            json!([]),
            with("receive_id", json!("")),
            with("msg_type", json!("sms")),
            with("content", json!({"text": "hi"})),
            with("content", json!("{\"text\":\"\"}")),
            with("uuid", json!("u".repeat(51))),
        ] {
            assert_eq!(send_errors(&bad).unwrap_err().0, 230001, "{bad}");
        }
    }
}
