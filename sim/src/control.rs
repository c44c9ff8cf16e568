//! Control and inspection API under `/sim/`: received addresses, reset, health, faults, events,
//! receipts, JPush withdrawals.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::receipts::{parse_request, receipt_channel};
use crate::state::{Channel, FaultPlan, SimState};

/// Registers the `/sim/...` routes.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/sim/healthz").route(web::get().to(healthz)))
        .service(
            web::resource("/sim/received")
                .route(web::get().to(received))
                .route(web::delete().to(reset)),
        )
        .service(web::resource("/sim/reset").route(web::post().to(reset)))
        .service(
            web::resource("/sim/faults")
                .route(web::get().to(get_faults))
                .route(web::post().to(set_faults)),
        )
        .service(web::resource("/sim/events").route(web::get().to(events)))
        .service(
            web::resource("/sim/receipts")
                .route(web::get().to(get_receipts))
                .route(web::post().to(set_receipts)),
        )
        .service(web::resource("/sim/recalls").route(web::get().to(recalls)))
        .service(web::resource("/sim/subscriptions").route(web::post().to(subscriptions)))
        .service(
            web::resource("/sim/bounces")
                .route(web::get().to(get_bounces))
                .route(web::post().to(set_bounces))
                .route(web::delete().to(stop_bounces)),
        );
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Subscriptions {
    openid: String,
    template_id: String,
    remaining: u32,
}

/// `POST /sim/subscriptions {"openid", "template_id", "remaining"}`: the one-time subscriptions
/// a mini-program user has to a template (see `SimState::grant_subscriptions`).
async fn subscriptions(body: web::Json<Subscriptions>, state: web::Data<SimState>) -> HttpResponse {
    state.grant_subscriptions(&body.openid, &body.template_id, body.remaining);
    HttpResponse::Ok().json(json!({"ok": true}))
}

/// `GET /sim/recalls` → `{"app": {"count": N, "msg_ids": [...]}, "wechatwk": {...},
/// "feishu": {...}, "dingtalk_cc": {"count": N, "task_ids": [...]}}`: JPush pushes withdrawn
/// (`DELETE /v3/push/{msg_id}`), WeCom messages (`POST /cgi-bin/message/recall`), Feishu
/// messages (`DELETE /im/v1/messages/{id}`) and DingTalk work notices (`POST
/// /topapi/message/corpconversation/recall`, task ids as numbers), each once, in the order of
/// their first withdrawal.
async fn recalls(state: web::Data<SimState>) -> HttpResponse {
    let (app, wecom, feishu, dingtalk) = (
        state.recalled(),
        state.wecom_recalled(),
        state.feishu_recalled(),
        state.dingtalk_recalled(),
    );
    HttpResponse::Ok().json(json!({"app": {"count": app.len(), "msg_ids": app},
                                   "wechatwk": {"count": wecom.len(), "msg_ids": wecom},
                                   "feishu": {"count": feishu.len(), "msg_ids": feishu},
                                   "dingtalk_cc": {"count": dingtalk.len(), "task_ids": dingtalk}}))
}

/// `GET /sim/bounces`: the configuration and the notifications sent and refused so far.
async fn get_bounces(state: web::Data<SimState>) -> HttpResponse {
    use std::sync::atomic::Ordering;
    HttpResponse::Ok().json(json!({
        "config": crate::bounces::config(&state),
        "sent": state.bounce_counts.sent.load(Ordering::Relaxed),
        "refused": state.bounce_counts.refused.load(Ordering::Relaxed),
    }))
}

/// `POST /sim/bounces` with a [`crate::BounceConfig`]: the SMTP sink sends bounces.
async fn set_bounces(body: web::Bytes, state: web::Data<SimState>) -> HttpResponse {
    let config: crate::BounceConfig = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return HttpResponse::BadRequest().json(json!({"error": e.to_string()})),
    };
    match crate::bounces::configure(&state, Some(config)) {
        Ok(()) => {
            HttpResponse::Ok().json(json!({"ok": true, "config": crate::bounces::config(&state)}))
        }
        Err(e) => HttpResponse::BadRequest().json(json!({"error": e})),
    }
}

async fn stop_bounces(state: web::Data<SimState>) -> HttpResponse {
    let _ = crate::bounces::configure(&state, None);
    HttpResponse::Ok().json(json!({"ok": true}))
}

#[derive(Deserialize)]
struct ChannelQuery {
    channel: Option<String>,
    limit: Option<usize>,
}

fn bad_channel(name: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({
        "error": format!("unknown channel {name:?}; use app, sms, email or webhook")
    }))
}

fn channel_summary(state: &SimState, c: Channel) -> Value {
    let name = c.as_str();
    json!({
        "channel": name,
        "total": state.total(name),
        "calls": state.calls(name),
        "failed_calls": state.failed_calls(name),
        "addresses": state.received(name),
    })
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"ok": true}))
}

/// `GET /sim/received?channel=app` → one channel; without `channel` → every channel by name.
async fn received(q: web::Query<ChannelQuery>, state: web::Data<SimState>) -> HttpResponse {
    match q.channel.as_deref() {
        Some(name) => match Channel::parse(name) {
            Some(c) => HttpResponse::Ok().json(channel_summary(&state, c)),
            None => bad_channel(name),
        },
        None => {
            let all: Map<String, Value> = Channel::ALL
                .iter()
                .map(|c| (c.as_str().to_string(), channel_summary(&state, *c)))
                .collect();
            HttpResponse::Ok().json(all)
        }
    }
}

async fn reset(state: web::Data<SimState>) -> HttpResponse {
    state.reset();
    HttpResponse::Ok().json(json!({"ok": true}))
}

/// Body of `POST /sim/faults`: `{"channel":"app", ...FaultPlan fields}`.
#[derive(Deserialize)]
struct FaultRequest {
    channel: String,
    #[serde(flatten)]
    plan: FaultPlan,
}

async fn set_faults(body: web::Bytes, state: web::Data<SimState>) -> HttpResponse {
    let req: FaultRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return HttpResponse::BadRequest().json(json!({"error": e.to_string()})),
    };
    if !state.set_faults(&req.channel, req.plan) {
        return bad_channel(&req.channel);
    }
    HttpResponse::Ok()
        .json(json!({"ok": true, "channel": req.channel, "plan": state.faults(&req.channel)}))
}

async fn get_faults(state: web::Data<SimState>) -> HttpResponse {
    let all: Map<String, Value> = Channel::ALL
        .iter()
        .map(|c| (c.as_str().to_string(), json!(state.faults(c.as_str()))))
        .collect();
    HttpResponse::Ok().json(all)
}

/// `GET /sim/events?channel=app&limit=100`: the last `limit` events (default 100) by `seq`.
async fn events(q: web::Query<ChannelQuery>, state: web::Data<SimState>) -> HttpResponse {
    let list = match q.channel.as_deref() {
        Some(name) => match Channel::parse(name) {
            Some(c) => state.events(c.as_str()),
            None => return bad_channel(name),
        },
        None => state.all_events(),
    };
    let limit = q.limit.unwrap_or(100);
    let skip = list.len().saturating_sub(limit);
    let out: Vec<Value> = list[skip..]
        .iter()
        .map(|e| {
            json!({
                "seq": e.seq,
                "channel": e.channel,
                "addresses": &*e.addresses,
                "at_us": e.received_at.saturating_duration_since(state.started).as_micros() as u64,
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({"count": list.len(), "events": out}))
}

/// `POST /sim/receipts`: `{"channel":"app"|"sms"|"tencent_sms"|"wechatoa"|"wechatmp"|"dingtalk_cc",
/// ...ReceiptConfig fields}` replaces that channel's receipt configuration; absent fields take
/// their defaults.
async fn set_receipts(body: web::Bytes, state: web::Data<SimState>) -> HttpResponse {
    let (channel, config) = match parse_request(&body) {
        Ok(parsed) => parsed,
        Err(e) => return HttpResponse::BadRequest().json(json!({"error": e})),
    };
    if let Err(e) = state.receipts.configure(channel, config.clone()) {
        return HttpResponse::BadRequest().json(json!({"error": e}));
    }
    HttpResponse::Ok().json(json!({"ok": true, "channel": channel.as_str(), "config": config}))
}

#[derive(Deserialize)]
struct ReceiptQuery {
    channel: Option<String>,
    msgid: Option<String>,
}

/// `GET /sim/receipts?channel=app[&msgid=ID]` → one channel's report; without `channel` →
/// `{"app": ..., "sms": ..., "tencent_sms": ..., "wechatoa": ..., "wechatmp": ...,
/// "dingtalk_cc": ...}` (`wechatmp` takes the WeChat msgid as `msgid`; `dingtalk_cc` ignores
/// it: its report covers every task).
async fn get_receipts(q: web::Query<ReceiptQuery>, state: web::Data<SimState>) -> HttpResponse {
    let msgid = q.msgid.as_deref();
    match q.channel.as_deref() {
        Some(name) => match receipt_channel(name) {
            Ok(c) => HttpResponse::Ok().json(state.receipt_report(c, msgid)),
            Err(e) => HttpResponse::BadRequest().json(json!({"error": e})),
        },
        None => {
            let all: Map<String, Value> = [
                Channel::App,
                Channel::Sms,
                Channel::TencentSms,
                Channel::Wechatoa,
                Channel::Wechatmp,
                Channel::DingtalkCc,
            ]
            .iter()
            .map(|c| {
                (
                    c.as_str().to_string(),
                    json!(state.receipt_report(*c, msgid)),
                )
            })
            .collect();
            HttpResponse::Ok().json(all)
        }
    }
}
