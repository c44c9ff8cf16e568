//! DingTalk work notices (工作通知) on the legacy `oapi` API: access tokens (`GET /gettoken`),
//! asynchronous sends (`POST /topapi/message/corpconversation/asyncsend_v2`, up to 5000 userids
//! in `userid_list`), their progress and results (`getsendprogress`, `getsendresult`) and
//! recalls (`recall`), with DingTalk's errcodes. Written from DingTalk's published behaviour on
//! its own, apart from the hub's adapter, so the two check each other.
//!
//! A send only says the task was accepted; each recipient's fate is decided then and read back
//! by polling `getsendresult`. A userid on the channel's `perm_addresses` is not a member of the
//! organisation (`invalid_user_id_list` at once). A userid that already received
//! `SimConfig::dingtalk_daily_limit` notices from the application since the simulator started
//! or was reset (the simulator's "day") is over DingTalk's per-user daily limit: it lands in
//! `forbidden_list` at once, with code [`FORBIDDEN_CODE`] — the simulator's choice, DingTalk
//! documents the list but not its codes. Every other recipient draws its fate with the
//! channel's receipt configuration (`POST /sim/receipts` with channel `dingtalk_cc`): delivered
//! ones are listed unread `delay_ms` after acceptance and, when also clicked, read
//! `click_delay_ms` later; failed ones are listed failed after `delay_ms`; silent ones are never
//! listed. Nothing is pushed back.
//!
//! Not simulated: `dept_id_list` and `to_all_user` (refused with 40035), the once-a-day dedup
//! of identical content to a user, the 2048-byte limit of `msg`, the organisation's QPS plans
//! and the per-minute recipient limits (only the channel's `rate_limit_per_minute`, 143103).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Map, Value, json};

use crate::issued_token::{IssuedToken, TokenCheck, query, token_answer};
use crate::receipts::{Fate, ReceiptReport};
use crate::state::{Channel, Injected, SimState, lock};

/// The channel of every DingTalk call.
const C: Channel = Channel::DingtalkCc;
/// Userids a send may name (internal applications).
const MAX_USERIDS: usize = 5000;
/// The message types of a work notice; the message is the object of the same name in `msg`.
const MSG_TYPES: &[&str] = &[
    "text",
    "image",
    "voice",
    "file",
    "link",
    "oa",
    "markdown",
    "action_card",
];
/// The `code` of a `forbidden_list` entry over the daily limit (the simulator's choice).
pub(crate) const FORBIDDEN_CODE: &str = "143105";
/// Invalid parameter: every refused body.
const INVALID_PARAMETER: i64 = 40035;
/// The application's recipient-count rate limit.
const RATE_LIMITED: i64 = 143103;
/// Task ids start above the simulator's start time in milliseconds times 1000, so a
/// simulator started again does not hand out a task id of an earlier run (as DingTalk never
/// does): a hub following the old task would apply the new one's reports to it.
fn task_base() -> u64 {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
        ms.saturating_mul(1000)
    })
}

/// What became of one recipient at acceptance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Not a member the application can reach (`perm_addresses`).
    Invalid,
    /// Over the daily limit.
    Forbidden,
    /// Drawn with the receipt configuration: the fate and whether it is read.
    Drawn(Fate, bool),
}

/// The list a recipient is in at some moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listed {
    Invalid,
    Forbidden,
    Failed,
    Unread,
    Read,
    /// Delivered or failed, but not listed yet.
    Pending,
    /// Silent: never listed.
    Nowhere,
}

/// The list of a recipient with `outcome`, `elapsed` after its task was accepted.
fn listed(outcome: Outcome, elapsed: Duration, delay: Duration, click_delay: Duration) -> Listed {
    match outcome {
        Outcome::Invalid => Listed::Invalid,
        Outcome::Forbidden => Listed::Forbidden,
        Outcome::Drawn(Fate::Silent, _) => Listed::Nowhere,
        Outcome::Drawn(_, _) if elapsed < delay => Listed::Pending,
        Outcome::Drawn(Fate::Failed, _) => Listed::Failed,
        Outcome::Drawn(Fate::Delivered, true) if elapsed >= delay + click_delay => Listed::Read,
        Outcome::Drawn(Fate::Delivered, _) => Listed::Unread,
    }
}

/// One accepted send.
struct Task {
    agent_id: u64,
    accepted: Instant,
    delay: Duration,
    click_delay: Duration,
    recipients: Vec<(String, Outcome)>,
}

impl Task {
    /// Each recipient with its list now.
    fn lists(&self, now: Instant) -> impl Iterator<Item = (&str, Listed)> {
        let elapsed = now.saturating_duration_since(self.accepted);
        self.recipients.iter().map(move |(userid, outcome)| {
            let list = listed(*outcome, elapsed, self.delay, self.click_delay);
            (userid.as_str(), list)
        })
    }

    /// `(progress_in_percent, status)` now: finished (2) once `delay` has passed, else running
    /// (1) at the elapsed share.
    fn progress(&self, now: Instant) -> (u64, u8) {
        let elapsed = now.saturating_duration_since(self.accepted);
        if elapsed >= self.delay {
            return (100, 2);
        }
        let share = elapsed.as_micros() * 100 / self.delay.as_micros().max(1);
        (u64::try_from(share).unwrap_or(99).min(99), 1)
    }
}

/// The token issued, the tasks accepted and recalled, and the notices each userid received.
#[derive(Default)]
pub(crate) struct DingtalkState {
    token: IssuedToken,
    tasks: HashMap<u64, Task>,
    recalled: Vec<u64>,
    /// Accepted notices per userid since the start or the last reset.
    received: HashMap<String, u32>,
    /// `getsendresult` answers given, per task.
    reports: HashMap<u64, u32>,
}

impl DingtalkState {
    pub(crate) fn expire_token(&mut self) {
        self.token.expire();
    }

    pub(crate) fn recalled(&self) -> Vec<u64> {
        self.recalled.clone()
    }

    /// How often `getsendresult` answered for `task_id`.
    pub(crate) fn reports(&self, task_id: u64) -> u32 {
        self.reports.get(&task_id).copied().unwrap_or(0)
    }
}

/// A `request_id` as DingTalk answers it (12 lowercase hex characters here).
fn request_id() -> String {
    format!("{:012x}", rand::random::<u64>() >> 16)
}

fn dt_error(state: &SimState, errcode: i64, errmsg: &str) -> HttpResponse {
    state.fail(C);
    HttpResponse::Ok()
        .json(json!({"errcode": errcode, "errmsg": errmsg, "request_id": request_id()}))
}

fn invalid(state: &SimState, detail: &str) -> HttpResponse {
    dt_error(state, INVALID_PARAMETER, detail)
}

/// The answer of the channel's next injected fault, if one is due (sends and send reports):
/// `Status(429)` → 143103, another status → that status with an HTML body, `Code(c)` → errcode
/// `c` (88 with `sub_code` 60011, no permission).
fn injected_fault(state: &SimState) -> Option<HttpResponse> {
    let answer = match state.take_fault(C)? {
        Injected::Status(429) => dt_error(state, RATE_LIMITED, "超过发送频率限制"),
        Injected::Status(s) => {
            state.fail(C);
            HttpResponse::build(StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY))
                .body("<html><body>upstream error</body></html>")
        }
        Injected::Code(code) => {
            let errcode = code.parse().unwrap_or(-1);
            if errcode == 88 {
                state.fail(C);
                return Some(HttpResponse::Ok().json(json!({"errcode": 88,
                    "errmsg": "simulated error", "sub_code": "60011",
                    "sub_msg": "no permission", "request_id": request_id()})));
            }
            dt_error(state, errcode, "simulated error")
        }
    };
    Some(answer)
}

/// `GET /gettoken?appkey=…&appsecret=…`: the same token while it is valid.
pub(crate) async fn gettoken(req: HttpRequest, state: web::Data<SimState>) -> HttpResponse {
    let q = query(&req);
    let cfg = state.config();
    if q.get("appkey") != Some(&cfg.dingtalk_appkey) {
        return dt_error(&state, 40089, "不合法的appKey或appSecret");
    }
    if q.get("appsecret") != Some(&cfg.dingtalk_appsecret) {
        return dt_error(&state, 40001, "获取access_token时Secret错误");
    }
    token_answer(&mut lock(&state.dingtalk).token, "simdt", state.next_id())
}

/// The errcode refusing a call's `access_token`, if it is missing, unknown or expired.
fn refused_token(state: &SimState, req: &HttpRequest) -> Option<HttpResponse> {
    let token = query(req).remove("access_token").unwrap_or_default();
    let check = lock(&state.dingtalk).token.check(&token);
    match check {
        TokenCheck::Valid => None,
        TokenCheck::Expired => Some(dt_error(state, 42001, "access_token超时")),
        TokenCheck::Unknown => Some(dt_error(state, 40014, "不合法的access_token")),
    }
}

/// The JSON object of a body, or the detail refusing it.
fn object(body: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        _ => Err("the body must be a JSON object".into()),
    }
}

/// Refuses a body whose `agent_id` (a JSON number) is not the application's.
fn check_agent(object: &Map<String, Value>, agent_id: u64) -> Result<(), String> {
    if object.get("agent_id").and_then(Value::as_u64) == Some(agent_id) {
        Ok(())
    } else {
        Err("invalid agent_id: not this application's AgentId".into())
    }
}

/// Whether `object[key]` is a non-empty string.
fn has_text(object: &Map<String, Value>, key: &str) -> bool {
    object
        .get(key)
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
}

/// Refuses a `msg` that DingTalk would: not an object, an unknown `msgtype`, or its message
/// missing or without the fields its type needs.
fn msg_errors(msg: Option<&Value>) -> Result<(), String> {
    let msg = msg
        .and_then(Value::as_object)
        .ok_or("msg must be a JSON object")?;
    let msgtype = msg
        .get("msgtype")
        .and_then(Value::as_str)
        .filter(|t| MSG_TYPES.contains(t))
        .ok_or_else(|| format!("msg.msgtype must be one of {}", MSG_TYPES.join(", ")))?;
    let message = msg
        .get(msgtype)
        .and_then(Value::as_object)
        .ok_or_else(|| format!("msg.{msgtype} is required"))?;
    let needed: &[&str] = match msgtype {
        "text" => &["content"],
        "markdown" => &["title", "text"],
        "link" => &["messageUrl", "picUrl", "title", "text"],
        "action_card" => &["title", "markdown"],
        "oa" => &["message_url"],
        _ => &["media_id"],
    };
    if let Some(missing) = needed.iter().find(|k| !has_text(message, k)) {
        return Err(format!("msg.{msgtype}.{missing} is missing or empty"));
    }
    match msgtype {
        "oa" if !message.get("body").is_some_and(Value::is_object) => {
            Err("msg.oa.body is required".into())
        }
        "action_card" => {
            let single = has_text(message, "single_title") && has_text(message, "single_url");
            let buttons = message
                .get("btn_json_list")
                .and_then(Value::as_array)
                .is_some_and(|b| !b.is_empty());
            if single || buttons {
                Ok(())
            } else {
                Err("msg.action_card needs single_title and single_url, or btn_json_list".into())
            }
        }
        _ => Ok(()),
    }
}

/// The userids a send body names (trimmed, empty parts dropped, in order, repeats kept), or
/// the detail refusing it (errcode 40035).
fn send_errors(body: &Value, agent_id: u64) -> Result<Vec<String>, String> {
    let object = body.as_object().ok_or("the body must be a JSON object")?;
    check_agent(object, agent_id)?;
    if object
        .get("dept_id_list")
        .is_some_and(|d| !d.is_null() && d.as_str() != Some(""))
    {
        return Err("dept_id_list is not simulated".into());
    }
    if matches!(object.get("to_all_user"), Some(Value::Bool(true)))
        || object.get("to_all_user").and_then(Value::as_str) == Some("true")
    {
        return Err("to_all_user is not simulated".into());
    }
    let list = match object.get("userid_list") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("userid_list must be a comma-separated string".into()),
    };
    let userids: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect();
    if userids.is_empty() {
        return Err("userid_list is required".into());
    }
    if userids.len() > MAX_USERIDS {
        return Err(format!("userid_list names more than {MAX_USERIDS} userids"));
    }
    msg_errors(object.get("msg"))?;
    Ok(userids)
}

/// `POST /topapi/message/corpconversation/asyncsend_v2?access_token=…`.
pub(crate) async fn send(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<SimState>,
) -> HttpResponse {
    SimState::delay(state.begin_call(C)).await;
    if let Some(refused) = refused_token(&state, &req) {
        return refused;
    }
    if state.rate(C, true).exceeded {
        return dt_error(&state, RATE_LIMITED, "超过发送频率限制");
    }
    let agent_id = state.config().dingtalk_agent_id;
    let parsed = serde_json::from_slice::<Value>(&body)
        .map_err(|_| "the body must be a JSON object".to_string())
        .and_then(|b| send_errors(&b, agent_id));
    let userids = match parsed {
        Ok(userids) => userids,
        Err(detail) => return invalid(&state, &detail),
    };
    if let Some(faulted) = injected_fault(&state) {
        return faulted;
    }
    // Userids are case-sensitive: each is sent to once.
    let mut seen = HashSet::new();
    let userids: Vec<String> = userids
        .into_iter()
        .filter(|u| seen.insert(u.clone()))
        .collect();
    let perm: Vec<bool> = userids.iter().map(|u| state.is_perm(C, u)).collect();
    let limit = state.config().dingtalk_daily_limit;
    let task_id = task_base() + state.next_id();
    let mut reached = Vec::new();
    {
        let mut dt = lock(&state.dingtalk);
        // `None`: a recipient within the limit, whose fate is drawn below.
        let outcomes: Vec<Option<Outcome>> = userids
            .iter()
            .zip(&perm)
            .map(|(userid, &perm)| {
                if perm {
                    return Some(Outcome::Invalid);
                }
                let n = dt.received.entry(userid.clone()).or_insert(0);
                if *n >= limit {
                    return Some(Outcome::Forbidden);
                }
                *n += 1;
                None
            })
            .collect();
        let to_draw = outcomes.iter().filter(|o| o.is_none()).count();
        let (config, draws) = state.receipts.dingtalk_draw(to_draw);
        let mut draws = draws.into_iter();
        let recipients = userids
            .into_iter()
            .zip(outcomes)
            .map(|(userid, outcome)| {
                let outcome = outcome.unwrap_or_else(|| {
                    let (fate, read) = draws.next().unwrap_or((Fate::Silent, false));
                    Outcome::Drawn(fate, read)
                });
                if matches!(outcome, Outcome::Drawn(..)) {
                    reached.push(userid.clone());
                }
                (userid, outcome)
            })
            .collect();
        dt.tasks.insert(
            task_id,
            Task {
                agent_id,
                accepted: Instant::now(),
                delay: Duration::from_millis(config.delay_ms),
                click_delay: Duration::from_millis(config.click_delay_ms),
                recipients,
            },
        );
    }
    if !reached.is_empty() {
        state.record(C, reached);
    }
    HttpResponse::Ok()
        .json(json!({"errcode": 0, "errmsg": "ok", "task_id": task_id, "request_id": request_id()}))
}

/// The answer to a call naming one task by `task_field` (progress, result, recall): refused
/// for a bad token, a body that is not an object, another agent or an unknown task (40035),
/// else errcode 0 with the fields `answer` gives for the task (a JSON object).
fn task_call(
    state: &SimState,
    req: &HttpRequest,
    body: &[u8],
    task_field: &str,
    answer: impl FnOnce(&mut DingtalkState, u64) -> Value,
) -> HttpResponse {
    if let Some(refused) = refused_token(state, req) {
        return refused;
    }
    let agent_id = state.config().dingtalk_agent_id;
    let object = match object(body).and_then(|o| check_agent(&o, agent_id).map(|()| o)) {
        Ok(object) => object,
        Err(detail) => return invalid(state, &detail),
    };
    let task_id = object.get(task_field).and_then(Value::as_u64);
    let fields = task_id.and_then(|id| {
        let mut dt = lock(&state.dingtalk);
        let ours = dt.tasks.get(&id).is_some_and(|t| t.agent_id == agent_id);
        ours.then(|| answer(&mut dt, id))
    });
    let Some(fields) = fields else {
        return invalid(state, &format!("invalid {task_field}"));
    };
    let mut out = json!({"errcode": 0, "errmsg": "ok"});
    if let (Some(out), Value::Object(fields)) = (out.as_object_mut(), fields) {
        out.extend(fields);
        out.insert("request_id".into(), request_id().into());
    }
    HttpResponse::Ok().json(out)
}

/// `POST /topapi/message/corpconversation/getsendprogress?access_token=…` with `{"agent_id",
/// "task_id"}`.
pub(crate) async fn progress(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<SimState>,
) -> HttpResponse {
    let now = Instant::now();
    task_call(&state, &req, &body, "task_id", |dt, id| {
        let (percent, status) = dt.tasks.get(&id).map_or((0, 0), |t| t.progress(now));
        json!({"progress": {"progress_in_percent": percent, "status": status}})
    })
}

/// `POST /topapi/message/corpconversation/getsendresult?access_token=…` with `{"agent_id",
/// "task_id"}`: the recipients' lists as they stand now.
pub(crate) async fn result(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<SimState>,
) -> HttpResponse {
    if let Some(faulted) = injected_fault(&state) {
        return faulted;
    }
    let now = Instant::now();
    let limit = state.config().dingtalk_daily_limit;
    task_call(&state, &req, &body, "task_id", |dt, id| {
        *dt.reports.entry(id).or_default() += 1;
        let lists = dt.tasks.get(&id).map(|t| send_result(t, now, limit));
        json!({"send_result": lists})
    })
}

/// The `send_result` object of `task` at `now`.
fn send_result(task: &Task, now: Instant, limit: u32) -> Value {
    let (mut invalid, mut forbidden, mut failed, mut read, mut unread) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (userid, list) in task.lists(now) {
        match list {
            Listed::Invalid => invalid.push(userid),
            Listed::Forbidden => {
                forbidden.push(json!({"code": FORBIDDEN_CODE, "count": limit, "userid": userid}))
            }
            Listed::Failed => failed.push(userid),
            Listed::Read => read.push(userid),
            Listed::Unread => unread.push(userid),
            Listed::Pending | Listed::Nowhere => {}
        }
    }
    json!({"invalid_user_id_list": invalid, "forbidden_list": forbidden,
           "failed_user_id_list": failed, "read_user_id_list": read,
           "unread_user_id_list": unread, "invalid_dept_id_list": []})
}

/// `POST /topapi/message/corpconversation/recall?access_token=…` with `{"agent_id",
/// "msg_task_id"}`: the task is recorded as recalled, once.
pub(crate) async fn recall(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<SimState>,
) -> HttpResponse {
    task_call(&state, &req, &body, "msg_task_id", |dt, id| {
        if !dt.recalled.contains(&id) {
            dt.recalled.push(id);
        }
        json!({})
    })
}

/// What `GET /sim/receipts?channel=dingtalk_cc` shows: the configuration, and from every task
/// as it stands now the userids delivered (unread or read), clicked (read) and failed (failed,
/// invalid or forbidden), sorted and unique; `pending` counts recipients delivered or failed
/// whose list has not come yet (silent ones never come and are not counted). Nothing is
/// posted, so the post counters are 0.
pub(crate) fn report(state: &SimState) -> ReceiptReport {
    let config = state.receipts.dingtalk_config();
    let now = Instant::now();
    let (mut delivered, mut failed, mut clicked) = (Vec::new(), Vec::new(), Vec::new());
    let mut pending = 0u64;
    {
        let dt = lock(&state.dingtalk);
        for (userid, list) in dt.tasks.values().flat_map(|t| t.lists(now)) {
            let userid = userid.to_string();
            match list {
                Listed::Unread => delivered.push(userid),
                Listed::Read => {
                    delivered.push(userid.clone());
                    clicked.push(userid);
                }
                Listed::Failed | Listed::Invalid | Listed::Forbidden => failed.push(userid),
                Listed::Pending => pending += 1,
                Listed::Nowhere => {}
            }
        }
    }
    for list in [&mut delivered, &mut failed, &mut clicked] {
        list.sort_unstable();
        list.dedup();
    }
    ReceiptReport {
        config,
        posted_batches: 0,
        posted_items: 0,
        failed_posts: 0,
        dropped_items: 0,
        pending,
        delivered,
        failed,
        clicked,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn send_bodies_are_checked_like_dingtalk() {
        let ok = json!({"agent_id": 7, "userid_list": "a, B,,a ",
                        "msg": {"msgtype": "text", "text": {"content": "hi"}}});
        assert_eq!(
            send_errors(&ok, 7),
            Ok(vec!["a".to_string(), "B".to_string(), "a".to_string()])
        );
        let with = |key: &str, value: Value| {
            let mut v = ok.clone();
            v[key] = value;
            v
        };
        let msg = |m: Value| with("msg", m);
        let many = (0..5001)
            .map(|i| format!("u{i}"))
            .collect::<Vec<_>>()
            .join(",");
        for (body, needle) in [
            (json!([]), "JSON object"),
            (with("agent_id", json!(8)), "agent_id"),
            (with("agent_id", json!("7")), "agent_id"),
            (with("userid_list", json!("")), "userid_list is required"),
            (with("userid_list", json!(" , ")), "userid_list is required"),
            (with("userid_list", json!(["a"])), "comma-separated"),
            (
                with("dept_id_list", json!("1,2")),
                "dept_id_list is not simulated",
            ),
            (
                with("to_all_user", json!(true)),
                "to_all_user is not simulated",
            ),
            (with("userid_list", json!(many)), "more than 5000"),
            (msg(json!("text")), "msg must be a JSON object"),
            (msg(json!({"msgtype": "sms"})), "msg.msgtype"),
            (
                msg(json!({"msgtype": "markdown"})),
                "msg.markdown is required",
            ),
            (
                msg(json!({"msgtype": "text", "text": {"content": ""}})),
                "msg.text.content",
            ),
            (
                msg(json!({"msgtype": "markdown", "markdown": {"title": "t"}})),
                "msg.markdown.text",
            ),
            (
                msg(
                    json!({"msgtype": "link", "link": {"messageUrl": "u", "title": "t", "text": "x"}}),
                ),
                "msg.link.picUrl",
            ),
            (
                msg(
                    json!({"msgtype": "action_card", "action_card": {"title": "t", "markdown": "m"}}),
                ),
                "single_title and single_url, or btn_json_list",
            ),
            (
                msg(
                    json!({"msgtype": "action_card", "action_card": {"markdown": "m",
                    "btn_json_list": [{"title": "b", "action_url": "u"}]}}),
                ),
                "msg.action_card.title",
            ),
            (
                msg(json!({"msgtype": "oa", "oa": {"message_url": "u"}})),
                "msg.oa.body",
            ),
            (
                msg(json!({"msgtype": "oa", "oa": {"body": {}}})),
                "msg.oa.message_url",
            ),
            (
                msg(json!({"msgtype": "image", "image": {}})),
                "msg.image.media_id",
            ),
            (
                msg(json!({"msgtype": "voice", "voice": {"media_id": ""}})),
                "msg.voice.media_id",
            ),
            (
                msg(json!({"msgtype": "file", "file": {}})),
                "msg.file.media_id",
            ),
        ] {
            let e = send_errors(&body, 7).unwrap_err();
            assert!(e.contains(needle), "{body}: {e}");
        }
        for good in [
            json!({"msgtype": "markdown", "markdown": {"title": "t", "text": "x"}}),
            json!({"msgtype": "link", "link": {"messageUrl": "u", "picUrl": "p", "title": "t", "text": "x"}}),
            json!({"msgtype": "action_card", "action_card": {"title": "t", "markdown": "m",
                "single_title": "s", "single_url": "u"}}),
            json!({"msgtype": "action_card", "action_card": {"title": "t", "markdown": "m",
                "btn_orientation": "1", "btn_json_list": [{"title": "b", "action_url": "u"}]}}),
            json!({"msgtype": "oa", "oa": {"message_url": "u", "head": {"text": "h"}, "body": {"title": "t"}}}),
            json!({"msgtype": "image", "image": {"media_id": "@lA"}}),
            json!({"msgtype": "voice", "voice": {"media_id": "@lA", "duration": "10"}}),
            json!({"msgtype": "file", "file": {"media_id": "@lA"}}),
        ] {
            assert!(send_errors(&msg(good.clone()), 7).is_ok(), "{good}");
        }
        // An explicit "nobody else" is fine.
        let mut explicit = with("to_all_user", json!(false));
        explicit["dept_id_list"] = json!("");
        assert!(send_errors(&explicit, 7).is_ok());
    }

    #[test]
    fn lists_follow_the_delays() {
        let ms = Duration::from_millis;
        let (delay, click) = (ms(100), ms(50));
        let at = |outcome, elapsed| listed(outcome, ms(elapsed), delay, click);
        let read = Outcome::Drawn(Fate::Delivered, true);
        let unread = Outcome::Drawn(Fate::Delivered, false);
        let failed = Outcome::Drawn(Fate::Failed, false);
        let silent = Outcome::Drawn(Fate::Silent, false);
        assert_eq!(at(Outcome::Invalid, 0), Listed::Invalid);
        assert_eq!(at(Outcome::Forbidden, 0), Listed::Forbidden);
        for o in [read, unread, failed] {
            assert_eq!(at(o, 99), Listed::Pending, "{o:?}");
        }
        assert_eq!(at(silent, 0), Listed::Nowhere);
        assert_eq!(at(silent, 10_000), Listed::Nowhere);
        assert_eq!(at(failed, 100), Listed::Failed);
        assert_eq!(at(unread, 100), Listed::Unread);
        assert_eq!(at(unread, 10_000), Listed::Unread);
        assert_eq!(at(read, 149), Listed::Unread);
        assert_eq!(at(read, 150), Listed::Read);
        assert_eq!(listed(read, ms(0), ms(0), ms(0)), Listed::Read);
    }

    #[test]
    fn progress_is_the_elapsed_share_until_done() {
        let now = Instant::now();
        let task = |delay_ms, ago_ms| Task {
            agent_id: 1,
            accepted: now - Duration::from_millis(ago_ms),
            delay: Duration::from_millis(delay_ms),
            click_delay: Duration::ZERO,
            recipients: Vec::new(),
        };
        assert_eq!(task(0, 0).progress(now), (100, 2));
        assert_eq!(task(100, 50).progress(now), (50, 1));
        assert_eq!(task(100, 0).progress(now), (0, 1));
        assert_eq!(task(100, 100).progress(now), (100, 2));
    }
}
