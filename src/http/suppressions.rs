//! `/api/suppressions` (admin bearer token): the addresses audience resolution skips — those
//! their provider called gone, WeChat users who unsubscribed or blocked the account, and those
//! an operator suppressed — listed, added and lifted in bulk. See `storage::suppressions`.

use actix_web::{HttpRequest, HttpResponse, web};
use msghub_actors::provider::ChannelType;
use serde::Deserialize;
use serde_json::json;

use super::State;
use super::auth::require_admin;
use super::lists::MAX_ENTRIES_PER_CALL;
use crate::error::ApiError;
use crate::storage::suppressions::SuppressReason;

/// Mounted inside the `/api` scope by [`super::admin::routes`].
pub fn api_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/suppressions", web::get().to(list))
        .route("/suppressions", web::post().to(add))
        .route("/suppressions", web::delete().to(remove));
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal("suppressions API", &e)
}

fn channel_type(code: &str) -> Result<ChannelType, ApiError> {
    ChannelType::from_code(code)
        .ok_or_else(|| ApiError::invalid(format!("channel_type: no channel type {code:?}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Addresses {
    channel_type: String,
    addresses: Vec<String>,
    /// On `POST`: `manual` (the default; every message skips them) or `opted_out` (only
    /// marketing, priority-3, messages do).
    reason: Option<String>,
}

impl Addresses {
    fn validated(&self) -> Result<(ChannelType, Vec<&str>), ApiError> {
        let t = channel_type(&self.channel_type)?;
        if self.addresses.is_empty() || self.addresses.len() > MAX_ENTRIES_PER_CALL {
            return Err(ApiError::invalid(format!(
                "addresses: 1 to {MAX_ENTRIES_PER_CALL} per call"
            )));
        }
        for (i, a) in self.addresses.iter().enumerate() {
            if !crate::domain::plain_text(a, 256) {
                return Err(ApiError::invalid(format!(
                    "addresses[{i}] must be 1 to 256 bytes without control characters"
                )));
            }
        }
        Ok((t, self.addresses.iter().map(String::as_str).collect()))
    }
}

/// Suppress addresses by hand (reason `manual`, or `opted_out` for marketing only); those
/// suppressed already keep their reason.
async fn add(
    state: State,
    req: HttpRequest,
    body: web::Json<Addresses>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let (t, addresses) = body.validated()?;
    let reason = match body.reason.as_deref() {
        None | Some("manual") => SuppressReason::Manual,
        Some("opted_out") => SuppressReason::OptedOut,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "reason: {other:?} is neither \"manual\" nor \"opted_out\""
            )));
        }
    };
    let added = state
        .db
        .add_suppressions(t, &addresses, reason, None)
        .await
        .map_err(internal)?;
    Ok(HttpResponse::Ok().json(json!({"added": added})))
}

/// Lift suppressions: the addresses' bindings are resolved again from the next send on.
async fn remove(
    state: State,
    req: HttpRequest,
    body: web::Json<Addresses>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let (t, addresses) = body.validated()?;
    if body.reason.is_some() {
        return Err(ApiError::invalid(
            "reason: lifting takes no reason; every suppression of the addresses is lifted",
        ));
    }
    let removed = state
        .db
        .remove_suppressions(t, &addresses)
        .await
        .map_err(internal)?;
    Ok(HttpResponse::Ok().json(json!({"removed": removed})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    channel_type: Option<String>,
    address: Option<String>,
    reason: Option<String>,
    /// Keyset pagination: the `next` of the previous page.
    after: Option<String>,
    limit: Option<u64>,
}

async fn list(
    state: State,
    req: HttpRequest,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let t = query
        .channel_type
        .as_deref()
        .map(channel_type)
        .transpose()?;
    let address = query
        .address
        .as_deref()
        .map(|a| super::plain_param("address", a))
        .transpose()?;
    let after = match query
        .after
        .as_deref()
        .map(|a| super::plain_param("after", a))
        .transpose()?
    {
        None => None,
        Some(a) => match a.split_once(':') {
            Some((t, address)) if ChannelType::from_code(t).is_some() => Some((t, address)),
            _ => {
                return Err(ApiError::invalid(
                    "after must be the `next` of the previous page",
                ));
            }
        },
    };
    let reason = match query.reason.as_deref() {
        None => None,
        Some(r) => Some(SuppressReason::parse(r).ok_or_else(|| {
            ApiError::invalid(format!(
                "reason: {r:?} is none of gone, unsubscribed, opted_out, blocked, manual"
            ))
        })?),
    };
    let limit = query.limit.unwrap_or(1000).clamp(1, 10_000);
    let rows = state
        .db
        .suppressions(t, address, reason, after, limit)
        .await
        .map_err(internal)?;
    let next = (rows.len() as u64 == limit)
        .then(|| {
            rows.last()
                .map(|s| format!("{}:{}", s.channel_type, s.address))
        })
        .flatten();
    Ok(HttpResponse::Ok().json(json!({"suppressions": rows, "next": next})))
}
