//! `/api/messages`: messages by state (scheduled ones above all), a message's state and
//! per-channel counts, its deliveries, and the edits of a scheduled message (reschedule,
//! cancel), allowed only while it is still scheduled.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::State;
use super::auth::require_admin;
use crate::error::ApiError;
use crate::storage::schedule::ScheduleEdit;

/// Mounted inside the `/api` scope by [`super::admin::routes`].
pub fn api_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/messages", web::get().to(list))
        .route("/messages/{msgid}", web::get().to(status))
        .route("/messages/{msgid}", web::patch().to(reschedule))
        .route("/messages/{msgid}/cancel", web::post().to(cancel))
        .route("/messages/{msgid}/deliveries", web::get().to(deliveries));
}

/// Every state a message can be in.
const STATES: [&str; 6] = [
    "scheduled",
    "accepted",
    "waiting",
    "done",
    "cancelled",
    "retracted",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    /// Keyset pagination: messages with an id greater than this.
    #[serde(default)]
    after: i64,
    limit: Option<u64>,
}

/// `GET /api/messages?state=scheduled&after=<msgid>&limit=100`, by id.
async fn list(
    state: State,
    req: HttpRequest,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    if let Some(s) = &query.state
        && !STATES.contains(&s.as_str())
    {
        return Err(ApiError::invalid(format!(
            "state {s:?} is not a message state; use one of {}",
            STATES.join(", ")
        )));
    }
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    state.settle_all().await;
    let items = state
        .db
        .list_messages(query.state.as_deref(), query.after, limit)
        .await
        .map_err(|e| ApiError::internal("listing messages", &e))?;
    let next = (items.len() as u64 == limit)
        .then(|| items.last().map(|m| m.msgid.clone()))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({"messages": items, "next_after": next})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reschedule {
    /// RFC 3339; a past or near-now time sends the message at once.
    send_at: serde_json::Value,
}

/// `PATCH /api/messages/{msgid}` `{"send_at": "..."}`: move a scheduled message.
async fn reschedule(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<Reschedule>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let id = msgid(&path)?;
    settled(&state, id).await?;
    let now = crate::storage::now_ms();
    let at = crate::domain::schedule::parse_send_at(&body.send_at, "send_at", now)
        .map_err(ApiError::invalid)?
        .unwrap_or(now);
    let edit = state
        .db
        .reschedule(id, at)
        .await
        .map_err(|e| ApiError::internal("rescheduling a message", &e))?;
    edited(&state, id, edit, "rescheduled").await
}

/// `POST /api/messages/{msgid}/cancel`: a scheduled message becomes `cancelled`, never sent.
async fn cancel(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let id = msgid(&path)?;
    settled(&state, id).await?;
    let edit = state
        .db
        .cancel_scheduled(id)
        .await
        .map_err(|e| ApiError::internal("cancelling a message", &e))?;
    edited(&state, id, edit, "cancelled").await
}

/// The answer to an edit of a scheduled message: the message as it is now, or why not.
async fn edited(
    state: &State,
    id: i64,
    edit: ScheduleEdit,
    verb: &str,
) -> Result<HttpResponse, ApiError> {
    match edit {
        ScheduleEdit::Done => {}
        ScheduleEdit::NotFound => return Err(ApiError::not_found("message")),
        ScheduleEdit::NotScheduled(current) => {
            return Err(ApiError::new(
                409,
                "not_scheduled",
                format!("message {id} is {current}; only a message still scheduled can be {verb}"),
            ));
        }
    }
    let item = state
        .db
        .message_item(id)
        .await
        .map_err(|e| ApiError::internal("reading a message", &e))?
        .ok_or_else(|| ApiError::not_found("message"))?;
    Ok(HttpResponse::Ok().json(item))
}

/// Before an edit: the message must be out of the intake journal, or the edit could answer
/// "not found" for a message that is still going to be stored and sent.
async fn settled(state: &State, id: i64) -> Result<(), ApiError> {
    if state.settle_message(id).await {
        Ok(())
    } else {
        Err(ApiError::new(
            503,
            "not_stored_yet",
            format!("message {id} is still being stored; retry shortly"),
        ))
    }
}

fn msgid(raw: &str) -> Result<i64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::invalid(format!("msgid {raw:?} is not a message id")))
}

async fn status(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let id = msgid(&path)?;
    state.settle_message(id).await;
    let status = state
        .db
        .message_status(id)
        .await
        .map_err(|e| ApiError::internal("message status", &e))?
        .ok_or_else(|| ApiError::not_found("message"))?;
    Ok(HttpResponse::Ok().json(status))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryQuery {
    userid: Option<String>,
    /// Keyset pagination: deliveries with an id greater than this.
    #[serde(default)]
    after: i64,
    limit: Option<u64>,
}

async fn deliveries(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<DeliveryQuery>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let id = msgid(&path)?;
    state.settle_message(id).await;
    state
        .db
        .message_source(id)
        .await
        .map_err(|e| ApiError::internal("message lookup", &e))?
        .ok_or_else(|| ApiError::not_found("message"))?;
    let userid = query
        .userid
        .as_deref()
        .map(|u| super::plain_param("userid", u))
        .transpose()?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let rows = state
        .db
        .deliveries(id, userid, query.after, limit)
        .await
        .map_err(|e| ApiError::internal("deliveries", &e))?;
    let next = (rows.len() as u64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({"deliveries": rows, "next_after": next})))
}
