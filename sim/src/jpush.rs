//! JPush Push API v3 simulator: `POST /v3/push`, `POST /v3/push/validate` and
//! `DELETE /v3/push/{msg_id}` (withdrawal).
//!
//! Basic auth, body validation (codes 1002/1003/1005/1009), rate-limit headers, idempotent `cid`,
//! fault injection. A call whose registration ids are all in `perm_addresses` fails with 1011;
//! a call with only some of them fails entirely with 1003. An accepted push with a
//! `callback.url` gets receipts per registration id (`crate::receipts`).

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::receipts::{PushCallback, TYPE_RECEIVED};
use crate::state::{Channel, Injected, RateInfo, SimState, lock};

/// First `msg_id` value (JPush ids are large numeric strings).
const MSG_ID_BASE: u64 = 54_043_195_528_000_000;
const TOP_KEYS: &[&str] = &[
    "platform",
    "audience",
    "notification",
    "message",
    "sms_message",
    "options",
    "callback",
    "cid",
    "notification_3rd",
    "inapp_message",
    "live_activity",
];
const PLATFORMS: &[&str] = &["android", "ios", "quickapp", "hmos", "winphone"];
const AUDIENCE_KEYS: &[&str] = &[
    "registration_id",
    "alias",
    "tag",
    "tag_and",
    "tag_not",
    "segment",
    "abtest",
    "live_activity_id",
    "file",
];
const MAX_PAYLOAD: usize = 4000;
const MAX_IOS: usize = 2000;
const BROADCASTS_PER_DAY: u64 = 10;

/// Pushes issued, at most this many remembered (oldest forgotten first).
const MAX_ISSUED: usize = 1_000_000;

/// Which pushes exist and which were withdrawn.
#[derive(Default)]
pub(crate) struct Recalls {
    issued: HashSet<String>,
    issued_order: std::collections::VecDeque<String>,
    withdrawn: HashSet<String>,
    /// Withdrawn `msg_id`s in the order of their first withdrawal.
    pub(crate) recalled: Vec<String>,
}

impl Recalls {
    fn issue(&mut self, msg_id: &str) {
        if self.issued.insert(msg_id.to_string()) {
            self.issued_order.push_back(msg_id.to_string());
        }
        while self.issued_order.len() > MAX_ISSUED {
            if let Some(old) = self.issued_order.pop_front() {
                self.issued.remove(&old);
            }
        }
    }

    /// Withdraw a push; false when no push has this id. A second withdrawal succeeds again.
    fn withdraw(&mut self, msg_id: &str) -> bool {
        if !self.issued.contains(msg_id) {
            return false;
        }
        if self.withdrawn.insert(msg_id.to_string()) {
            self.recalled.push(msg_id.to_string());
        }
        true
    }
}

/// A JPush error: (JPush code, message).
struct PushError(u32, String);

fn err(code: u32, msg: impl Into<String>) -> PushError {
    PushError(code, msg.into())
}

/// HTTP status JPush uses for an error code.
pub(crate) fn status_for_code(code: u32) -> u16 {
    match code {
        1000 => 500,
        1001 => 405,
        1004 => 401,
        1020 => 404,
        1030 => 503,
        2002 | 2001 => 429,
        2003..=2008 => 403,
        _ => 400,
    }
}

fn code_for_status(status: u16) -> u32 {
    match status {
        429 => 2002,
        503 | 504 => 1030,
        401 => 1004,
        403 => 2003,
        404 => 1020,
        405 => 1001,
        400..=499 => 1003,
        _ => 1000,
    }
}

fn with_rate(mut b: actix_web::HttpResponseBuilder, r: RateInfo) -> actix_web::HttpResponseBuilder {
    b.insert_header(("X-Rate-Limit-Limit", r.limit.to_string()))
        .insert_header(("X-Rate-Limit-Remaining", r.remaining.to_string()))
        .insert_header(("X-Rate-Limit-Reset", r.reset_secs.to_string()));
    b
}

fn error_response(
    status: u16,
    code: u32,
    message: &str,
    msg_id: u64,
    rate: RateInfo,
) -> HttpResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut b = with_rate(HttpResponse::build(status), rate);
    if status == StatusCode::TOO_MANY_REQUESTS {
        b.insert_header(("X-Rate-Limit-Remaining", "0"))
            .insert_header(("Retry-After", rate.reset_secs.to_string()));
    }
    b.json(json!({"error": {"code": code, "message": message}, "msg_id": msg_id.to_string()}))
}

fn authorized(req: &HttpRequest, state: &SimState) -> bool {
    let Some(v) = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut parts = v.trim().splitn(2, ' ');
    let (Some(scheme), Some(cred)) = (parts.next(), parts.next()) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(cred.trim()) else {
        return false;
    };
    let cfg = state.config();
    raw == format!("{}:{}", cfg.jpush_app_key, cfg.jpush_master_secret).into_bytes()
}

/// What a valid push request targets.
struct Push {
    /// Recorded addresses: registration ids, then `alias:<name>` entries.
    addresses: Vec<String>,
    /// How many leading `addresses` are registration ids (the ones that get receipts).
    regids: usize,
    broadcast: bool,
    sendno: String,
    cid: Option<String>,
    callback: Option<PushCallback>,
}

fn id_list(v: &Value, key: &str, max: usize) -> Result<Vec<String>, PushError> {
    let arr = v
        .as_array()
        .ok_or_else(|| err(1003, format!("audience.{key} must be an array")))?;
    if arr.is_empty() || arr.len() > max {
        return Err(err(
            1003,
            format!("audience.{key} must hold 1..={max} values"),
        ));
    }
    arr.iter()
        .map(|x| match x.as_str().map(str::trim) {
            Some(s) if !s.is_empty() => Ok(s.to_string()),
            _ => Err(err(
                1003,
                format!("audience.{key} contains an empty or non-string value"),
            )),
        })
        .collect()
}

fn validate_platform(v: Option<&Value>) -> Result<(), PushError> {
    match v {
        None | Some(Value::Null) => Err(err(1002, "missing platform")),
        Some(Value::String(s)) if s == "all" => Ok(()),
        Some(Value::Array(a)) if !a.is_empty() => {
            if a.iter()
                .all(|p| p.as_str().is_some_and(|p| PLATFORMS.contains(&p)))
            {
                Ok(())
            } else {
                Err(err(1003, "invalid platform"))
            }
        }
        _ => Err(err(1003, "invalid platform")),
    }
}

/// The audience's recorded addresses (registration ids first, then `alias:` entries), how many
/// of them are registration ids, and whether it is a broadcast.
fn validate_audience(v: Option<&Value>) -> Result<(Vec<String>, usize, bool), PushError> {
    let aud = match v {
        None | Some(Value::Null) => return Err(err(1002, "missing audience")),
        Some(Value::String(s)) if s == "all" => return Ok((Vec::new(), 0, true)),
        Some(Value::Object(o)) => o,
        _ => return Err(err(1003, "invalid audience")),
    };
    if aud.is_empty() {
        return Err(err(1003, "audience has no target"));
    }
    let mut out = Vec::new();
    let mut aliases = Vec::new();
    for (k, val) in aud {
        match k.as_str() {
            "registration_id" => out.extend(id_list(val, k, 1000)?),
            "alias" => aliases.extend(
                id_list(val, k, 1000)?
                    .into_iter()
                    .map(|a| format!("alias:{a}")),
            ),
            "tag" | "tag_and" | "tag_not" => {
                id_list(val, k, 20)?;
            }
            other if AUDIENCE_KEYS.contains(&other) => {}
            other => return Err(err(1003, format!("unsupported audience key {other}"))),
        }
    }
    let regids = out.len();
    out.append(&mut aliases);
    Ok((out, regids, false))
}

/// `callback: {url?, params?, type?}`. Without `type` only "received" receipts are sent.
fn parse_callback(v: Option<&Value>) -> Result<Option<PushCallback>, PushError> {
    let cb = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(cb)) => cb,
        Some(_) => return Err(err(1003, "callback must be an object")),
    };
    let url = match cb.get("url") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(_) => return Err(err(1003, "callback.url must be a non-empty string")),
    };
    let params = match cb.get("params") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => return Err(err(1003, "callback.params must be an object")),
    };
    let types = match cb.get("type") {
        None | Some(Value::Null) => TYPE_RECEIVED,
        Some(Value::Number(n)) => match n.as_u64().and_then(|t| u8::try_from(t).ok()) {
            Some(t @ 1..=15) => t,
            _ => {
                return Err(err(
                    1003,
                    "callback.type must be a bitmask between 1 and 15",
                ));
            }
        },
        Some(_) => return Err(err(1003, "callback.type must be an integer")),
    };
    Ok(Some(PushCallback { url, params, types }))
}

fn validate_content(o: &Map<String, Value>) -> Result<(), PushError> {
    let notification = o.get("notification").filter(|v| !v.is_null());
    let message = o.get("message").filter(|v| !v.is_null());
    if notification.is_none() && message.is_none() {
        return Err(err(1002, "one of notification or message is required"));
    }
    let mut size = 0;
    if let Some(n) = notification {
        let n = n
            .as_object()
            .ok_or_else(|| err(1003, "notification must be an object"))?;
        if n.is_empty() {
            return Err(err(1003, "notification is empty"));
        }
        if n.get("ios")
            .is_some_and(|ios| ios.to_string().len() > MAX_IOS)
        {
            return Err(err(1005, "ios notification exceeds 2000 bytes"));
        }
        size += Value::Object(n.clone()).to_string().len();
    }
    if let Some(m) = message {
        let m = m
            .as_object()
            .ok_or_else(|| err(1003, "message must be an object"))?;
        match m.get("msg_content") {
            Some(Value::String(_)) => {}
            None | Some(Value::Null) => return Err(err(1002, "message.msg_content is required")),
            Some(_) => return Err(err(1003, "message.msg_content must be a string")),
        }
        size += Value::Object(m.clone()).to_string().len();
    }
    if size > MAX_PAYLOAD {
        return Err(err(
            1005,
            format!("notification+message is {size} bytes (max {MAX_PAYLOAD})"),
        ));
    }
    Ok(())
}

fn parse_push(body: &[u8]) -> Result<Push, PushError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| err(1003, format!("invalid JSON: {e}")))?;
    let o = v
        .as_object()
        .ok_or_else(|| err(1003, "push payload must be a JSON object"))?;
    if let Some(k) = o.keys().find(|k| !TOP_KEYS.contains(&k.as_str())) {
        return Err(err(1009, format!("unsupported key in push object: {k}")));
    }
    validate_platform(o.get("platform"))?;
    let (addresses, regids, broadcast) = validate_audience(o.get("audience"))?;
    validate_content(o)?;
    let sendno = match o.get("options") {
        None | Some(Value::Null) => "0".to_string(),
        Some(Value::Object(opts)) => match opts.get("sendno") {
            None | Some(Value::Null) => "0".to_string(),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            Some(_) => return Err(err(1003, "options.sendno must be an integer")),
        },
        Some(_) => return Err(err(1003, "options must be an object")),
    };
    let cid = match o.get("cid") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => return Err(err(1003, "cid must be a non-empty string")),
    };
    let callback = parse_callback(o.get("callback"))?;
    Ok(Push {
        addresses,
        regids,
        broadcast,
        sendno,
        cid,
        callback,
    })
}

/// `POST /v3/push`.
pub(crate) async fn push(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<SimState>,
) -> HttpResponse {
    handle(&req, &body, &state, true).await
}

/// `POST /v3/push/validate`: same checks, records nothing, consumes no faults.
pub(crate) async fn validate(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<SimState>,
) -> HttpResponse {
    handle(&req, &body, &state, false).await
}

/// Any non-POST method on the push endpoints.
pub(crate) async fn method_not_allowed(state: web::Data<SimState>) -> HttpResponse {
    let rate = state.rate(Channel::App, false);
    error_response(
        405,
        1001,
        "only POST is supported",
        state.next_id() + MSG_ID_BASE,
        rate,
    )
}

async fn handle(req: &HttpRequest, body: &[u8], state: &SimState, live: bool) -> HttpResponse {
    let c = Channel::App;
    let latency = if live {
        state.begin_call(c)
    } else {
        state.latency(c)
    };
    SimState::delay(latency).await;
    let msg_id = MSG_ID_BASE + state.next_id();
    let peek = state.rate(c, false);
    if !authorized(req, state) {
        if live {
            state.fail(c);
        }
        return error_response(401, 1004, "Authen failed", msg_id, peek);
    }
    let rate = state.rate(c, live);
    let fail = |status: u16, code: u32, msg: &str| {
        if live {
            state.fail(c);
        }
        // An injected 429 (or 2002) tells the client to retry after one second.
        let rate = if status == 429 && !rate.exceeded {
            RateInfo {
                remaining: 0,
                reset_secs: 1,
                ..rate
            }
        } else {
            rate
        };
        error_response(status, code, msg, msg_id, rate)
    };
    if rate.exceeded {
        return fail(
            429,
            2002,
            "Request times of this AppKey exceeds the limit of current time window",
        );
    }
    let push = match parse_push(body) {
        Ok(p) => p,
        Err(PushError(code, msg)) => return fail(status_for_code(code), code, &msg),
    };
    if !live {
        return with_rate(HttpResponse::Ok(), rate)
            .json(json!({"sendno": push.sendno, "msg_id": msg_id.to_string()}));
    }
    match state.take_fault(c) {
        Some(Injected::Status(s)) => return fail(s, code_for_status(s), "simulated failure"),
        Some(Injected::Code(code)) => {
            let n: u32 = code.trim().parse().unwrap_or(1000);
            return fail(status_for_code(n), n, "simulated failure");
        }
        None => {}
    }
    let (any, all) = state.perm_check(c, &push.addresses);
    if all {
        return fail(400, 1011, "cannot find user by this audience");
    }
    if any {
        return fail(400, 1003, "audience contains an invalid registration_id");
    }
    if push.broadcast && state.broadcasts.fetch_add(1, Ordering::Relaxed) >= BROADCASTS_PER_DAY {
        return fail(
            403,
            2008,
            "broadcast frequency exceeds the limit (10 per day)",
        );
    }
    if let Some(cid) = &push.cid {
        let mut cids = lock(&state.jpush_cids);
        if let Some(prev) = cids.get(cid) {
            return with_rate(HttpResponse::Ok(), rate)
                .json(json!({"sendno": push.sendno, "msg_id": prev}));
        }
        if cids.len() >= 1_000_000 {
            cids.clear();
        }
        cids.insert(cid.clone(), msg_id.to_string());
    }
    let msg_id = msg_id.to_string();
    lock(&state.jpush_recalls).issue(&msg_id);
    if let Some(callback) = &push.callback {
        state
            .receipts
            .push_accepted(&msg_id, &push.addresses[..push.regids], callback);
    }
    state.record(c, push.addresses);
    with_rate(HttpResponse::Ok(), rate).json(json!({"sendno": push.sendno, "msg_id": msg_id}))
}

/// `DELETE /v3/push/{msg_id}`: withdraw a push this simulator accepted. 200 with an empty
/// body on success; an unknown id is error 1003. Recorded in [`SimState::recalled`].
pub(crate) async fn recall(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<SimState>,
) -> HttpResponse {
    let c = Channel::App;
    SimState::delay(state.latency(c)).await;
    let msg_id = path.into_inner();
    let peek = state.rate(c, false);
    let id_number = msg_id.parse::<u64>().unwrap_or(0);
    if !authorized(&req, &state) {
        return error_response(401, 1004, "Authen failed", id_number, peek);
    }
    let rate = state.rate(c, true);
    if rate.exceeded {
        return error_response(
            429,
            2002,
            "Request times of this AppKey exceeds the limit of current time window",
            id_number,
            rate,
        );
    }
    if !lock(&state.jpush_recalls).withdraw(&msg_id) {
        return error_response(400, 1003, "msg_id is invalid", id_number, rate);
    }
    with_rate(HttpResponse::Ok(), rate).finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn only_issued_pushes_can_be_withdrawn_and_each_is_recorded_once() {
        let mut r = Recalls::default();
        r.issue("10");
        r.issue("11");
        assert!(!r.withdraw("12"));
        assert!(r.withdraw("11"));
        assert!(r.withdraw("11"), "a repeat succeeds");
        assert!(r.withdraw("10"));
        assert_eq!(r.recalled, vec!["11", "10"]);
    }

    fn code(body: &str) -> u32 {
        match parse_push(body.as_bytes()) {
            Ok(_) => 0,
            Err(PushError(c, _)) => c,
        }
    }

    #[test]
    fn validation_codes() {
        let ok = r#"{"platform":"all","audience":{"registration_id":["a"]},"notification":{"alert":"x"},"options":{"sendno":7}}"#;
        assert_eq!(code(ok), 0);
        assert_eq!(parse_push(ok.as_bytes()).ok().unwrap().sendno, "7");
        assert_eq!(
            code(r#"{"audience":{"registration_id":["a"]},"notification":{"alert":"x"}}"#),
            1002
        );
        assert_eq!(
            code(r#"{"platform":"all","notification":{"alert":"x"}}"#),
            1002
        );
        assert_eq!(
            code(r#"{"platform":"all","audience":{"registration_id":["a"]}}"#),
            1002
        );
        assert_eq!(
            code(
                r#"{"platform":"all","audience":{"registration_id":[""]},"message":{"msg_content":"x"}}"#
            ),
            1003
        );
        assert_eq!(
            code(r#"{"platform":["pc"],"audience":"all","message":{"msg_content":"x"}}"#),
            1003
        );
        assert_eq!(
            code(r#"{"platform":"all","audience":"all","message":{"msg_content":"x"},"bogus":1}"#),
            1009
        );
        let many: Vec<String> = (0..1001).map(|i| format!("\"r{i}\"")).collect();
        let body = format!(
            r#"{{"platform":"all","audience":{{"registration_id":[{}]}},"message":{{"msg_content":"x"}}}}"#,
            many.join(",")
        );
        assert_eq!(code(&body), 1003);
        let big = "x".repeat(4100);
        let body =
            format!(r#"{{"platform":"all","audience":"all","notification":{{"alert":"{big}"}}}}"#);
        assert_eq!(code(&body), 1005);
        assert_eq!(status_for_code(2002), 429);
        assert_eq!(status_for_code(1011), 400);
    }

    fn push(extra: &str) -> Result<Push, PushError> {
        let body = format!(
            r#"{{"platform":"all","audience":{{"alias":["al"],"registration_id":["r1","r2"]}},"message":{{"msg_content":"x"}}{extra}}}"#
        );
        parse_push(body.as_bytes())
    }

    #[test]
    fn registration_ids_come_first_and_only_they_are_counted_for_receipts() {
        let p = push("").ok().unwrap();
        assert_eq!(p.addresses, vec!["r1", "r2", "alias:al"]);
        assert_eq!(p.regids, 2);
        assert!(p.callback.is_none());
    }

    #[test]
    fn the_callback_is_read_with_defaults_and_checked() {
        let p =
            push(r#","callback":{"url":"http://127.0.0.1:1/r","params":{"msgid":"9"},"type":7}"#)
                .ok()
                .unwrap();
        assert_eq!(
            p.callback,
            Some(PushCallback {
                url: Some("http://127.0.0.1:1/r".into()),
                params: json!({"msgid": "9"}),
                types: 7,
            })
        );
        let p = push(r#","callback":{}"#).ok().unwrap();
        assert_eq!(
            p.callback,
            Some(PushCallback {
                url: None,
                params: json!({}),
                types: TYPE_RECEIVED,
            })
        );
        for bad in [
            r#","callback":[]"#,
            r#","callback":{"url":7}"#,
            r#","callback":{"url":" "}"#,
            r#","callback":{"url":"u","params":"x"}"#,
            r#","callback":{"url":"u","type":0}"#,
            r#","callback":{"url":"u","type":16}"#,
            r#","callback":{"url":"u","type":"7"}"#,
        ] {
            assert!(
                matches!(push(bad), Err(PushError(1003, _))),
                "{bad} must be refused with 1003"
            );
        }
    }
}
