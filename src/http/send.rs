//! `POST /v1/sent` and `POST /v1/broadcast`: validate, store durably (group commit), answer,
//! then hand the message to the dispatch topology.

use std::time::Instant;

use actix_web::http::header::ContentType;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use msghub_actors::plan::{CallbackSpec, MessagePlan, PlannedChannel, Strategy};
use serde_json::json;

use super::State;
use super::auth::CachedSource;
use crate::domain::callback::CallbackRequest;
use crate::domain::filters::message_filters;
use crate::domain::parse_json;
use crate::domain::rules;
use crate::domain::send::{SendKind, SendRequest, parse};
use crate::error::{JumsError, channel_unavailable_code, jums};
use crate::storage::messages::{Accepted, NewMessage};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/sent", web::post().to(sent))
        .route("/v1/broadcast", web::post().to(broadcast));
}

async fn sent(
    state: State,
    req: HttpRequest,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, JumsError> {
    accept(&state, &req, &super::jums_body(body)?, SendKind::Targeted).await
}

async fn broadcast(
    state: State,
    req: HttpRequest,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, JumsError> {
    accept(&state, &req, &super::jums_body(body)?, SendKind::Broadcast).await
}

async fn accept(
    state: &State,
    req: &HttpRequest,
    body: &[u8],
    kind: SendKind,
) -> Result<HttpResponse, JumsError> {
    let started = Instant::now();
    let result = accept_inner(state, req, body, kind).await;
    match &result {
        Ok(_) => metrics::histogram!("msghub_accept_duration_seconds")
            .record(started.elapsed().as_secs_f64()),
        Err(e) => metrics::counter!("msghub_messages_rejected_total", "code" => e.code.to_string())
            .increment(1),
    }
    result
}

async fn accept_inner(
    state: &State,
    req: &HttpRequest,
    body: &[u8],
    kind: SendKind,
) -> Result<HttpResponse, JumsError> {
    let source = state.sources.authenticate(req).await?;
    let value = parse_json(body).map_err(JumsError::invalid)?;
    let mut send = parse(&value, kind)?;
    let strategy = match send.rule_id {
        None => Strategy::Concurrent,
        Some(id) => {
            let def = state
                .rules
                .get(id)
                .await
                .map_err(|e| JumsError::internal("loading rule", &e))?
                .ok_or_else(|| {
                    JumsError::new(jums::INVALID_RULE, format!("rule_id {id} does not exist"))
                })?;
            rules::apply(id, &def, &mut send.contents, &send.audience, &send.params)
                .map_err(|reason| JumsError::new(jums::INVALID_RULE, reason))?
        }
    };
    let channels = choose_channels(&source, &send)?;
    let callback = callback_of(&source, send.callback.as_ref())?;
    let types: Vec<_> = channels.iter().map(|c| c.channel_type).collect();
    let filters = message_filters(
        &source.filters,
        &source.lists,
        send.black_id,
        send.white_id,
        &types,
    )?;
    let idempotency_key = idempotency_key(req)?;
    let msgid = state.ids.next();
    let mut response = json!({"code": 0, "message": "success", "msgid": msgid.to_string()});
    if let Some(sendno) = &send.sendno {
        response["sendno"] = json!(sendno);
    }
    let lane = send.lane();
    let plan = MessagePlan {
        msgid,
        source_id: source.id,
        lane,
        audience: send.audience.clone(),
        channels,
        ttl_seconds: send.ttl_seconds,
        send_at_ms: send.send_at,
        spread_seconds: send.spread_seconds,
        strategy,
        callback,
        priority: send.priority,
        filters,
    };
    let new = NewMessage {
        plan,
        kind: kind.as_str(),
        priority: i16::from(send.priority_or_default()),
        sendno: send.sendno.clone(),
        idempotency_key,
        response: response.to_string(),
        not_before: send.send_at,
    };
    let accepted = state
        .accept
        .submit(new)
        .await
        .map_err(|e| storing_failed(state.intake.as_deref(), &e))?;
    match accepted {
        Accepted::Stored { .. } | Accepted::Opened | Accepted::Journaled => {
            metrics::counter!("msghub_messages_accepted_total", "kind" => kind.as_str(), "lane" => lane.as_str()).increment(1);
            // The accept writer (or the intake journal's mover) dispatches it.
            Ok(HttpResponse::Ok()
                .content_type(ContentType::json())
                .body(response.to_string()))
        }
        Accepted::Replayed { response } => Ok(HttpResponse::Ok()
            .content_type(ContentType::json())
            .insert_header(("Idempotent-Replayed", "true"))
            .body(response)),
    }
}

/// A send that could not be stored: "slow down" (429, JUMS 1015030) when the intake journal
/// stayed full (delivery is far behind the senders), a server error otherwise.
pub(crate) fn storing_failed(
    intake: Option<&crate::storage::intake::Intake>,
    cause: &dyn std::fmt::Display,
) -> JumsError {
    if intake.is_some_and(|i| i.is_full()) {
        tracing::warn!(error = %cause, "a send was refused: the intake journal is full");
        return JumsError::new(
            jums::RATE_LIMITED,
            "msghub is behind on delivery and not accepting more sends for now; retry later",
        );
    }
    JumsError::internal("storing message", cause)
}

/// For every `msg_<type>`, the source's first granted and enabled channel of that type.
fn choose_channels(
    source: &CachedSource,
    send: &SendRequest,
) -> Result<Vec<PlannedChannel>, JumsError> {
    send.contents
        .iter()
        .map(|(t, content)| {
            let granted: Vec<_> = source
                .channels
                .iter()
                .filter(|(_, ct, _)| ct == t)
                .collect();
            match granted.iter().find(|(_, _, enabled)| *enabled) {
                Some((id, _, _)) => Ok(PlannedChannel {
                    channel_id: *id,
                    channel_type: *t,
                    content: content.clone(),
                }),
                None if granted.is_empty() => Err(JumsError::new(
                    channel_unavailable_code(*t),
                    format!("no {t} channel is granted to this source"),
                )),
                None => Err(JumsError::new(
                    channel_unavailable_code(*t),
                    format!("the {t} channel granted to this source is disabled"),
                )),
            }
        })
        .collect()
}

/// The message's status callback: the URL the request names, which must be one the source
/// verified (JUMS 4004 otherwise), else the source's default URL; `params` are echoed.
fn callback_of(
    source: &CachedSource,
    req: Option<&CallbackRequest>,
) -> Result<Option<CallbackSpec>, JumsError> {
    let params = req
        .and_then(|r| r.params.clone())
        .unwrap_or(serde_json::Value::Null);
    let url = match req.and_then(|r| r.url.as_ref()) {
        Some(url) if source.callback_urls.contains(url) => url.clone(),
        Some(url) => {
            return Err(JumsError::invalid(format!(
                "callback.url {url:?} is not a verified callback URL of this source; \
                 register it first (POST /api/sources/{}/callback_urls)",
                source.id
            )));
        }
        None => match source.callback_urls.first() {
            Some(default) => default.clone(),
            None if !params.is_null() => {
                return Err(JumsError::invalid(
                    "callback.params given, but there is no callback.url and this source has no \
                     default callback URL",
                ));
            }
            None => return Ok(None),
        },
    };
    Ok(Some(CallbackSpec { url, params }))
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, JumsError> {
    let Some(v) = req.headers().get("Idempotency-Key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .map_err(|_| JumsError::invalid("Idempotency-Key must be printable ASCII"))?
        .trim();
    if key.is_empty() || key.len() > 128 {
        return Err(JumsError::invalid(
            "Idempotency-Key must be 1 to 128 characters",
        ));
    }
    Ok(Some(key.to_string()))
}
