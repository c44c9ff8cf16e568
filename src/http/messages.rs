//! `/api/messages/{msgid}`: a message's state and per-channel counts, and its deliveries.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::State;
use super::auth::require_admin;
use crate::error::ApiError;

/// Mounted inside the `/api` scope by [`super::admin::routes`].
pub fn api_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/messages/{msgid}", web::get().to(status))
        .route("/messages/{msgid}/deliveries", web::get().to(deliveries));
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
    state
        .db
        .message_source(id)
        .await
        .map_err(|e| ApiError::internal("message lookup", &e))?
        .ok_or_else(|| ApiError::not_found("message"))?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let rows = state
        .db
        .deliveries(id, query.userid.as_deref(), query.after, limit)
        .await
        .map_err(|e| ApiError::internal("deliveries", &e))?;
    let next = (rows.len() as u64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({"deliveries": rows, "next_after": next})))
}
