//! WeChat Official Account simulator: access tokens (`GET /cgi-bin/token`, `POST
//! /cgi-bin/stable_token`) and template messages (`POST /cgi-bin/message/template/send`), with
//! WeChat's errcodes. Written from WeChat's published behaviour on its own, apart from the
//! hub's adapter, so the two check each other. Not simulated: `force_refresh`'s limits (20 a
//! day, 30 s apart). Accepted sends get `TEMPLATESENDJOBFINISH` events pushed to the
//! configured `report_url` of `wechatoa`, one XML event per POST, signed in the query with the
//! server configuration's Token (`crate::receipts`).
//!
//! The same app also sends mini-program subscribe messages (`POST
//! /cgi-bin/message/subscribe/send`, [`subscribe_send`]): a user's subscription is per
//! template, unlimited (long-term) unless one-time subscriptions were granted for it
//! ([`SimState::grant_subscriptions`], `POST /sim/subscriptions`), each send using one; a user
//! with none left, or on the channel's `perm_addresses`, is refused with 43101. The simulated
//! app stands for both the account and the mini-program: one AppID, one token store, one
//! server configuration (real ones are separate apps). Accepted subscribe sends get
//! `subscribe_msg_sent_event` events pushed to the configured `report_url` of `wechatmp`,
//! signed and encrypted like the account's (`crate::receipts`). Not simulated: the
//! `subscribe_msg_popup_event` and `subscribe_msg_change_event` pushes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use crate::state::{Channel, Injected, SimState, lock};

/// Lifetime of every token the simulator issues (WeChat: "a value within 7200 s").
pub const TOKEN_SECONDS: u64 = 7200;
/// How long a classic token stays valid once a newer one was issued.
const CLASSIC_GRACE: Duration = Duration::from_secs(300);
/// `client_msg_id` dedupes sends to the same openid for this long.
const DEDUPE_WINDOW: Duration = Duration::from_secs(600);

/// Tokens issued, and the sends already made per `openid + client_msg_id`.
#[derive(Default)]
pub(crate) struct WechatState {
    /// The stable token (`stable_token` normal mode returns it while it is valid).
    stable: Option<(String, Instant)>,
    /// Classic tokens: when each expires, and when a newer one retired it. Each call issues
    /// one and leaves the previous ones valid for [`CLASSIC_GRACE`], as WeChat does while a
    /// refresh spreads; past that they are unknown (40001), not expired (42001).
    classic: HashMap<String, (Instant, Option<Instant>)>,
    sent: HashMap<(String, String), (u64, Instant)>,
    /// One-time subscriptions left per (openid, template_id); absent: a long-term one.
    subscriptions: HashMap<(String, String), u32>,
}

impl WechatState {
    fn issue(state: &SimState) -> String {
        format!(
            "SIMTOKEN_{:016x}{:08x}",
            rand::random::<u64>(),
            state.next_id()
        )
    }

    /// Set the one-time subscriptions `openid` has to `template_id` to `remaining`.
    pub(crate) fn grant(&mut self, openid: &str, template_id: &str, remaining: u32) {
        self.subscriptions
            .insert((openid.to_string(), template_id.to_string()), remaining);
    }

    pub(crate) fn expire_all(&mut self) {
        let now = Instant::now();
        if let Some((_, at)) = &mut self.stable {
            *at = now;
        }
        for (at, _) in self.classic.values_mut() {
            *at = now;
        }
    }

    /// How a presented access token stands: valid, expired (42001) or unknown (40001).
    fn check(&self, token: &str, now: Instant) -> Result<(), i64> {
        let (expiry, retired) = match &self.stable {
            Some((t, at)) if t == token => (Some(*at), None),
            _ => match self.classic.get(token) {
                Some((at, retired)) => (Some(*at), *retired),
                None => (None, None),
            },
        };
        match (expiry, retired) {
            (_, Some(end)) if end <= now => Err(40001),
            (Some(at), _) if at > now => Ok(()),
            (Some(_), _) => Err(42001),
            (None, _) => Err(40001),
        }
    }
}

fn wx_error(state: &SimState, errcode: i64, errmsg: &str) -> HttpResponse {
    state.fail(Channel::Wechatoa);
    HttpResponse::Ok().json(json!({"errcode": errcode, "errmsg": errmsg}))
}

/// The errcode and errmsg refusing a token request's appid and secret, if they are wrong.
fn bad_credentials(
    state: &SimState,
    appid: Option<&str>,
    secret: Option<&str>,
) -> Option<(i64, &'static str)> {
    let cfg = state.config();
    if appid != Some(cfg.wechat_appid.as_str()) {
        return Some((40013, "invalid appid"));
    }
    if secret != Some(cfg.wechat_secret.as_str()) {
        return Some((
            40001,
            "invalid credential, access_token is invalid or not latest",
        ));
    }
    None
}

fn token_answer(token: &str, expires_at: Instant) -> HttpResponse {
    let left = expires_at
        .saturating_duration_since(Instant::now())
        .as_secs();
    HttpResponse::Ok().json(json!({"access_token": token, "expires_in": left}))
}

/// `GET /cgi-bin/token?grant_type=client_credential&appid=…&secret=…`: a new token per call.
pub(crate) async fn classic_token(req: HttpRequest, state: web::Data<SimState>) -> HttpResponse {
    let q: HashMap<String, String> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    if q.get("grant_type").map(String::as_str) != Some("client_credential") {
        return wx_error(&state, 40002, "invalid grant_type");
    }
    if let Some((code, message)) = bad_credentials(
        &state,
        q.get("appid").map(String::as_str),
        q.get("secret").map(String::as_str),
    ) {
        return wx_error(&state, code, message);
    }
    let token = WechatState::issue(&state);
    let now = Instant::now();
    let at = now + Duration::from_secs(TOKEN_SECONDS);
    let mut wechat = lock(&state.wechat);
    // Older tokens end within the grace; those ended a day ago are forgotten.
    let day = Duration::from_secs(86_400);
    wechat.classic.retain(|_, (until, retired)| {
        now.saturating_duration_since((*retired).unwrap_or(*until).min(*until)) < day
    });
    for (_, retired) in wechat.classic.values_mut() {
        retired.get_or_insert(now + CLASSIC_GRACE);
    }
    wechat.classic.insert(token.clone(), (at, None));
    token_answer(&token, at)
}

/// `POST /cgi-bin/stable_token` (JSON): the same token while it is valid, unless
/// `force_refresh`, which issues a new one and invalidates the old.
pub(crate) async fn stable_token(body: web::Bytes, state: web::Data<SimState>) -> HttpResponse {
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return wx_error(&state, 47001, "data format error");
    };
    if v.get("grant_type").and_then(Value::as_str) != Some("client_credential") {
        return wx_error(&state, 40002, "invalid grant_type");
    }
    if let Some((code, message)) = bad_credentials(
        &state,
        v.get("appid").and_then(Value::as_str),
        v.get("secret").and_then(Value::as_str),
    ) {
        return wx_error(&state, code, message);
    }
    let force = v
        .get("force_refresh")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let now = Instant::now();
    let mut wechat = lock(&state.wechat);
    match &wechat.stable {
        Some((token, at)) if *at > now && !force => token_answer(token, *at),
        _ => {
            let token = WechatState::issue(&state);
            let at = now + Duration::from_secs(TOKEN_SECONDS);
            wechat.stable = Some((token.clone(), at));
            token_answer(&token, at)
        }
    }
}

fn template_errors(body: &Value) -> Result<(String, String), (i64, &'static str)> {
    let Some(object) = body.as_object() else {
        return Err((47001, "data format error"));
    };
    let touser = object
        .get("touser")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or((40003, "invalid openid"))?;
    object
        .get("template_id")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or((40037, "invalid template_id"))?;
    match object.get("data") {
        Some(Value::Object(fields))
            if fields
                .values()
                .all(|f| f.get("value").is_some_and(Value::is_string)) => {}
        _ => return Err((47003, "argument invalid! data.value is required")),
    }
    if let Some(mp) = object.get("miniprogram")
        && !mp.get("appid").is_some_and(Value::is_string)
    {
        return Err((47003, "argument invalid! miniprogram.appid is required"));
    }
    let client_msg_id = object
        .get("client_msg_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Ok((touser.trim().to_string(), client_msg_id))
}

/// msghub's msgid inside a `client_msg_id` of the form `msghub-{msgid}-{delivery}`, for the
/// per-msgid receipt lists; empty otherwise.
fn msghub_msgid(client_msg_id: &str) -> &str {
    client_msg_id
        .strip_prefix("msghub-")
        .and_then(|rest| rest.split('-').next())
        .unwrap_or_default()
}

/// `POST /cgi-bin/message/template/send?access_token=…`.
pub(crate) async fn template_send(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<SimState>,
) -> HttpResponse {
    let c = Channel::Wechatoa;
    SimState::delay(state.begin_call(c)).await;
    let token = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned());
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return wx_error(&state, 41001, "access_token missing");
    };
    if let Err(code) = lock(&state.wechat).check(&token, Instant::now()) {
        let message = if code == 42001 {
            "access_token expired"
        } else {
            "invalid credential, access_token is invalid or not latest"
        };
        return wx_error(&state, code, message);
    }
    if state.rate(c, true).exceeded {
        return wx_error(&state, 45011, "api minute-quota reach limit");
    }
    let parsed = serde_json::from_slice::<Value>(&body).map_err(|_| (47001, "data format error"));
    let (openid, client_msg_id) = match parsed.and_then(|b| template_errors(&b)) {
        Ok(v) => v,
        Err((code, message)) => return wx_error(&state, code, message),
    };
    if let Some(f) = state.take_fault(c) {
        return match f {
            Injected::Status(429) => wx_error(&state, 45011, "api freq out of limit"),
            Injected::Status(s) => {
                state.fail(c);
                HttpResponse::build(StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY))
                    .body("<html><body>upstream error</body></html>")
            }
            Injected::Code(code) => wx_error(&state, code.parse().unwrap_or(-1), "simulated error"),
        };
    }
    if state.is_perm(c, &openid) {
        return wx_error(&state, 43004, "require subscribe");
    }
    let now = Instant::now();
    let key = (openid.clone(), client_msg_id.clone());
    {
        let mut wechat = lock(&state.wechat);
        wechat
            .sent
            .retain(|_, (_, at)| now.duration_since(*at) < DEDUPE_WINDOW);
        if !client_msg_id.is_empty()
            && let Some((msgid, _)) = wechat.sent.get(&key)
        {
            // Sent already: WeChat sends one message per openid and client_msg_id.
            return HttpResponse::Ok().json(json!({"errcode": 0, "errmsg": "ok", "msgid": msgid}));
        }
        let msgid = 200_000_000 + state.next_id();
        if !client_msg_id.is_empty() {
            wechat.sent.insert(key, (msgid, now));
        }
        drop(wechat);
        state.record(c, vec![openid.clone()]);
        state
            .receipts
            .wechat_accepted(msghub_msgid(&client_msg_id), msgid, &openid);
        HttpResponse::Ok().json(json!({"errcode": 0, "errmsg": "ok", "msgid": msgid}))
    }
}

/// Whether a subscribe message's value suits its key's type, as WeChat checks it (§2: `thing`
/// at most 20 characters, `number` digits with a decimal point, `phrase` at most 5, ...).
fn value_fits(key: &str, value: &str) -> bool {
    let kind = key.trim_end_matches(|c: char| c.is_ascii_digit());
    let chars = value.chars().count();
    match kind {
        "thing" => chars <= 20,
        "number" => chars <= 32 && value.chars().all(|c| c.is_ascii_digit() || c == '.'),
        "letter" => chars <= 32 && value.chars().all(|c| c.is_ascii_alphabetic()),
        "phrase" => chars <= 5,
        "character_string" => chars <= 32,
        "name" => chars <= 20,
        "phone_number" => chars <= 17,
        "car_number" => chars <= 8,
        _ => true,
    }
}

/// The openid and template of a subscribe send body, or the errcode refusing it.
fn subscribe_errors(body: &Value) -> Result<(String, String), (i64, String)> {
    let Some(object) = body.as_object() else {
        return Err((47001, "data format error".into()));
    };
    let touser = object
        .get("touser")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or((40003, "invalid openid".to_string()))?;
    let template_id = object
        .get("template_id")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or((40037, "invalid template_id".to_string()))?;
    let fields = match object.get("data") {
        Some(Value::Object(fields)) if !fields.is_empty() => fields,
        _ => return Err((47003, "argument invalid! data is required".into())),
    };
    for (key, field) in fields {
        match field.get("value").and_then(Value::as_str) {
            Some(v) if !v.is_empty() && value_fits(key, v) => {}
            _ => return Err((47003, format!("argument invalid! data.{key}.value invalid"))),
        }
    }
    if let Some(state) = object.get("miniprogram_state")
        && !matches!(state.as_str(), Some("developer" | "trial" | "formal"))
    {
        return Err((47003, "argument invalid! miniprogram_state invalid".into()));
    }
    Ok((touser.trim().to_string(), template_id.to_string()))
}

/// `POST /cgi-bin/message/subscribe/send?access_token=…`.
pub(crate) async fn subscribe_send(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<SimState>,
) -> HttpResponse {
    let c = Channel::Wechatmp;
    SimState::delay(state.begin_call(c)).await;
    let token = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned())
        .filter(|t| !t.is_empty());
    let refuse = |code: i64, message: &str| {
        state.fail(c);
        HttpResponse::Ok().json(json!({"errcode": code, "errmsg": message}))
    };
    let Some(token) = token else {
        return refuse(41001, "access_token missing");
    };
    if let Err(code) = lock(&state.wechat).check(&token, Instant::now()) {
        return refuse(
            code,
            "invalid credential, access_token is invalid or not latest",
        );
    }
    if state.rate(c, true).exceeded {
        return refuse(45011, "api minute-quota reach limit");
    }
    let parsed = serde_json::from_slice::<Value>(&body)
        .map_err(|_| (47001, "data format error".to_string()))
        .and_then(|b| subscribe_errors(&b));
    let (openid, template_id) = match parsed {
        Ok(v) => v,
        Err((code, message)) => return refuse(code, &message),
    };
    if let Some(f) = state.take_fault(c) {
        return match f {
            Injected::Status(429) => refuse(45011, "api freq out of limit"),
            Injected::Status(s) => {
                state.fail(c);
                HttpResponse::build(StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY))
                    .body("<html><body>upstream error</body></html>")
            }
            Injected::Code(code) => refuse(code.parse().unwrap_or(-1), "simulated error"),
        };
    }
    const REFUSED: &str = "user refuse to accept the msg";
    if state.is_perm(c, &openid) {
        return refuse(43101, REFUSED);
    }
    {
        let mut wechat = lock(&state.wechat);
        if let Some(left) = wechat
            .subscriptions
            .get_mut(&(openid.clone(), template_id.clone()))
        {
            if *left == 0 {
                drop(wechat);
                return refuse(43101, REFUSED);
            }
            *left -= 1;
        }
    }
    let msgid = 1_800_000_000_000_000_000 + state.next_id();
    state.record(c, vec![openid.clone()]);
    state
        .receipts
        .subscribe_accepted(msgid, &openid, &template_id);
    HttpResponse::Ok().json(json!({"errcode": 0, "errmsg": "ok", "msgid": msgid}))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_values_are_checked_by_their_key_s_type() {
        let body = |key: &str, value: &str| json!({"touser": "o1", "template_id": "S", "data": {key: {"value": value}}});
        assert_eq!(
            subscribe_errors(&body("thing1", "Parcel shipped")),
            Ok(("o1".into(), "S".into()))
        );
        for (key, value) in [
            ("thing1", "x".repeat(21)),
            ("number2", "12a".to_string()),
            ("phrase3", "six ch".to_string()),
            ("thing4", String::new()),
        ] {
            assert_eq!(
                subscribe_errors(&body(key, &value)).unwrap_err().0,
                47003,
                "{key}"
            );
        }
        assert_eq!(
            subscribe_errors(&json!({"template_id": "S", "data": {}}))
                .unwrap_err()
                .0,
            40003
        );
        assert_eq!(
            subscribe_errors(&json!({"touser": "o", "data": {}}))
                .unwrap_err()
                .0,
            40037
        );
    }

    #[test]
    fn the_msghub_msgid_is_read_from_the_client_msg_id() {
        assert_eq!(msghub_msgid("msghub-77-5"), "77");
        assert_eq!(msghub_msgid("order-1"), "");
        assert_eq!(msghub_msgid(""), "");
    }

    #[test]
    fn template_bodies_are_checked_like_wechat() {
        let ok = json!({"touser": "o1", "template_id": "T", "data": {"a": {"value": "b"}}, "client_msg_id": "c"});
        assert_eq!(template_errors(&ok), Ok(("o1".into(), "c".into())));
        for (body, code) in [
            (json!([]), 47001),
            (json!({"template_id": "T", "data": {}}), 40003),
            (json!({"touser": "o1", "data": {}}), 40037),
            (
                json!({"touser": "o1", "template_id": "T", "data": {"a": "b"}}),
                47003,
            ),
            (
                json!({"touser": "o1", "template_id": "T", "data": {}, "miniprogram": {}}),
                47003,
            ),
        ] {
            assert_eq!(template_errors(&body).unwrap_err().0, code, "{body}");
        }
    }
}
