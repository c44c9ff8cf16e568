//! WeCom (企业微信) application messages: access tokens (`GET /cgi-bin/gettoken`), sends
//! (`POST /cgi-bin/message/send`, up to 1000 members in `touser`) and recalls (`POST
//! /cgi-bin/message/recall`), with WeCom's errcodes. Written from WeCom's published behaviour
//! on its own, apart from the hub's adapter, so the two check each other.
//!
//! A send answers for the call: the members on the channel's `perm_addresses` list are not
//! members the application can reach, and come back in `invaliduser` (lower-cased, as WeCom
//! does); when nobody is left the call fails with 81013. Not simulated: the per-member limits
//! (30 a minute, 1000 an hour, the excess silently dropped), departments and tags, `@all`.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use crate::issued_token::{IssuedToken, TokenCheck, query, token_answer};
use crate::state::{Channel, Injected, SimState, lock};

/// Members a send may name.
const MAX_MEMBERS: usize = 1000;
/// The message types WeCom sends; the message is the object of the same name.
const MSG_TYPES: &[&str] = &[
    "text",
    "image",
    "voice",
    "video",
    "file",
    "textcard",
    "news",
    "mpnews",
    "markdown",
    "miniprogram_notice",
    "template_card",
];

/// The token issued, and the sends accepted (msgid → members), for recalls.
#[derive(Default)]
pub(crate) struct WecomState {
    token: IssuedToken,
    sent: HashMap<String, Vec<String>>,
    recalled: Vec<String>,
}

impl WecomState {
    pub(crate) fn expire_token(&mut self) {
        self.token.expire();
    }

    pub(crate) fn recalled(&self) -> Vec<String> {
        self.recalled.clone()
    }
}

fn wk_error(state: &SimState, errcode: i64, errmsg: &str) -> HttpResponse {
    state.fail(Channel::Wechatwk);
    HttpResponse::Ok().json(json!({"errcode": errcode, "errmsg": errmsg}))
}

/// `GET /cgi-bin/gettoken?corpid=…&corpsecret=…`: the same token while it is valid.
pub(crate) async fn gettoken(req: HttpRequest, state: web::Data<SimState>) -> HttpResponse {
    let q = query(&req);
    let cfg = state.config();
    if q.get("corpid") != Some(&cfg.wecom_corpid) {
        return wk_error(&state, 40013, "invalid corpid");
    }
    if q.get("corpsecret") != Some(&cfg.wecom_corpsecret) {
        return wk_error(&state, 40001, "invalid secret");
    }
    token_answer(
        &mut lock(&state.wecom).token,
        "SIMWKTOKEN_",
        state.next_id(),
    )
}

/// The errcode refusing a call's `access_token`, if it is missing, unknown or expired.
fn refused_token(state: &SimState, req: &HttpRequest) -> Option<HttpResponse> {
    let token = query(req).remove("access_token").filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Some(wk_error(state, 41001, "access_token missing"));
    };
    let check = lock(&state.wecom).token.check(&token);
    match check {
        TokenCheck::Valid => None,
        TokenCheck::Expired => Some(wk_error(state, 42001, "access_token expired")),
        TokenCheck::Unknown => Some(wk_error(state, 40014, "invalid access_token")),
    }
}

/// The members a send body names, or the errcode refusing it.
fn send_errors(body: &Value, agentid: u64) -> Result<Vec<String>, (i64, String)> {
    let Some(object) = body.as_object() else {
        return Err((47001, "data format error".into()));
    };
    if object.get("agentid").and_then(Value::as_u64) != Some(agentid) {
        return Err((40056, "invalid agentid".into()));
    }
    let msgtype = object
        .get("msgtype")
        .and_then(Value::as_str)
        .filter(|t| MSG_TYPES.contains(t))
        .ok_or((40008, "invalid message type".to_string()))?;
    let Some(message) = object.get(msgtype).and_then(Value::as_object) else {
        return Err((40058, format!("{msgtype} is required")));
    };
    if msgtype == "text"
        && message
            .get("content")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        return Err((44004, "text content is empty".into()));
    }
    let members: Vec<String> = object
        .get("touser")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .split('|')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect();
    if members.len() > MAX_MEMBERS {
        return Err((
            40058,
            format!("touser names more than {MAX_MEMBERS} members"),
        ));
    }
    if members.is_empty() {
        return Err((81013, "user & party & tag all invalid".into()));
    }
    Ok(members)
}

/// `POST /cgi-bin/message/send?access_token=…`.
pub(crate) async fn send(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<SimState>,
) -> HttpResponse {
    let c = Channel::Wechatwk;
    SimState::delay(state.begin_call(c)).await;
    if let Some(refused) = refused_token(&state, &req) {
        return refused;
    }
    if state.rate(c, true).exceeded {
        return wk_error(&state, 45009, "api freq out of limit");
    }
    let parsed = serde_json::from_slice::<Value>(&body)
        .map_err(|_| (47001, "data format error".to_string()))
        .and_then(|b| send_errors(&b, state.config().wecom_agentid));
    let members = match parsed {
        Ok(members) => members,
        Err((code, message)) => return wk_error(&state, code, &message),
    };
    if let Some(f) = state.take_fault(c) {
        return match f {
            Injected::Status(429) => wk_error(&state, 45009, "api freq out of limit"),
            Injected::Status(s) => {
                state.fail(c);
                HttpResponse::build(StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY))
                    .body("<html><body>upstream error</body></html>")
            }
            Injected::Code(code) => wk_error(&state, code.parse().unwrap_or(-1), "simulated error"),
        };
    }
    // Member ids are case-insensitive: each is sent to once, and answered lower-cased.
    let mut seen = std::collections::HashSet::new();
    let (mut reached, mut invalid) = (Vec::new(), Vec::new());
    for m in members {
        let lower = m.to_ascii_lowercase();
        if !seen.insert(lower.clone()) {
            continue;
        }
        if state.is_perm(c, &lower) || state.is_perm(c, &m) {
            invalid.push(lower);
        } else {
            reached.push(m);
        }
    }
    let invaliduser = invalid.join("|");
    if reached.is_empty() {
        state.fail(c);
        return HttpResponse::Ok().json(json!({"errcode": 81013,
            "errmsg": "user & party & tag all invalid", "invaliduser": invaliduser}));
    }
    let msgid = format!("SIMWK{:012}", state.next_id());
    lock(&state.wecom)
        .sent
        .insert(msgid.clone(), reached.clone());
    state.record(c, reached);
    HttpResponse::Ok().json(
        json!({"errcode": 0, "errmsg": "ok", "invaliduser": invaliduser,
        "invalidparty": "", "invalidtag": "", "unlicenseduser": "", "msgid": msgid}),
    )
}

/// `POST /cgi-bin/message/recall?access_token=…` with `{"msgid"}`.
pub(crate) async fn recall(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<SimState>,
) -> HttpResponse {
    if let Some(refused) = refused_token(&state, &req) {
        return refused;
    }
    let msgid = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|b| b.get("msgid").and_then(Value::as_str).map(str::to_string));
    let Some(msgid) = msgid else {
        return wk_error(&state, 47001, "data format error");
    };
    let mut wecom = lock(&state.wecom);
    if !wecom.sent.contains_key(&msgid) {
        drop(wecom);
        return wk_error(&state, 40058, "invalid msgid");
    }
    if !wecom.recalled.contains(&msgid) {
        wecom.recalled.push(msgid);
    }
    HttpResponse::Ok().json(json!({"errcode": 0, "errmsg": "ok"}))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn send_bodies_are_checked_like_wecom() {
        let ok =
            json!({"touser": "a|B| c", "agentid": 7, "msgtype": "text", "text": {"content": "hi"}});
        assert_eq!(
            send_errors(&ok, 7),
            Ok(vec!["a".to_string(), "B".to_string(), "c".to_string()])
        );
        let with = |key: &str, value: Value| {
            let mut v = ok.clone();
            v[key] = value;
            v
        };
        let many = (0..1001)
            .map(|i| format!("u{i}"))
            .collect::<Vec<_>>()
            .join("|");
        for (body, code) in [
            (json!([]), 47001),
            (with("agentid", json!(8)), 40056),
            (with("msgtype", json!("sms")), 40008),
            (with("text", json!({"content": ""})), 44004),
            (with("msgtype", json!("markdown")), 40058),
            (with("touser", json!(many)), 40058),
            (with("touser", json!("")), 81013),
        ] {
            assert_eq!(send_errors(&body, 7).unwrap_err().0, code, "{body}");
        }
    }
}
