//! The HTTP API: one module per resource. `/v1` is the JUMS-compatible send and user API
//! (source Basic auth); `/api` is msghub's management API (admin bearer token); `/healthz`,
//! `/readyz` and `/metrics` are for operators.

pub mod admin;
pub mod auth;
pub mod callback_urls;
pub mod lists;
pub mod messages;
pub mod ops;
pub mod receipts;
pub mod retract;
pub mod rules;
pub mod send;
pub mod sms_replies;
pub mod suppressions;
pub mod unsubscribe;
pub mod users;
mod wechat_events;

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use metrics_exporter_prometheus::PrometheusHandle;
use msghub_actors::Dispatch;
use msghub_actors::batcher::Batcher;

use serde_json::json;

use crate::error::ApiError;
use crate::storage::Db;
use crate::storage::crypto::Crypto;
use crate::storage::messages::{Accepted, MessageIds, NewMessage};

/// Everything a request handler may use; shared by all HTTP workers.
pub struct AppState {
    pub db: Db,
    pub crypto: Crypto,
    pub dispatch: Dispatch,
    pub accept: Batcher<NewMessage, Accepted>,
    /// The intake journal accepts are stored in first (SQLite); reads of messages settle it.
    pub intake: Option<Arc<crate::storage::intake::Intake>>,
    /// Where the journal's accept writer runs; stopped with the state.
    pub _accept_runtime: Option<msghub_actors::threads::OwnRuntime>,
    pub ids: MessageIds,
    pub sources: auth::SourceCache,
    pub callbacks: crate::callbacks::Callbacks,
    pub rules: rules::RuleCache,
    pub receipts: receipts::ReceiptWriter,
    pub receipt_channels: receipts::ReceiptChannels,
    /// SMS replies that unsubscribe their number (`strategies.sms_unsubscribe_replies`).
    pub unsubscribe_replies: sms_replies::UnsubscribeReplies,
    /// How providers reach this server (`http://host:port`), for receipt URLs.
    pub public_url: String,
    pub admin_token_hash: String,
    pub metrics: Option<PrometheusHandle>,
}

pub type State = web::Data<Arc<AppState>>;

impl AppState {
    /// Before reading message `msgid`: wait until it is out of the intake journal, so a
    /// message answered a moment ago is found. False when it may still be there (the mover is
    /// failing): a read then shows what is stored, an edit must not answer "not found".
    pub async fn settle_message(&self, msgid: i64) -> bool {
        match &self.intake {
            Some(intake) => intake.settle_message(msgid).await,
            None => true,
        }
    }

    /// Before listing messages: wait until those answered before are out of the journal (a
    /// list shows what is stored when that wait gives up).
    pub async fn settle_all(&self) {
        if let Some(intake) = &self.intake {
            intake.settle_all().await;
        }
    }
}

/// A name an operator gives a source, channel, list or rule: trimmed, 1 to 200 bytes (the
/// columns hold 200 characters), without control characters.
pub(crate) fn valid_name(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    if !crate::domain::plain_text(name, 200) {
        return Err(ApiError::invalid(
            "name must be 1 to 200 characters, without control characters",
        ));
    }
    Ok(name)
}

/// The body of a request, or why it could not be read, with the HTTP status actix gives
/// that (413 for a body over `server.max_body_bytes`, 400 for one that broke off or could
/// not be decoded): handlers take `Result<Bytes, actix_web::Error>` and answer in their own
/// error format instead of actix's plain text.
pub(crate) fn body_or(
    body: Result<actix_web::web::Bytes, actix_web::Error>,
) -> Result<actix_web::web::Bytes, (u16, String)> {
    body.map_err(|e| {
        let status = e.as_response_error().status_code().as_u16();
        (status, format!("request body: {e}"))
    })
}

/// [`body_or`] for `/v1`: JUMS code 4004 with the status that says why.
pub(crate) fn jums_body(
    body: Result<actix_web::web::Bytes, actix_web::Error>,
) -> Result<actix_web::web::Bytes, crate::error::JumsError> {
    body_or(body).map_err(|(status, m)| crate::error::JumsError::invalid(m).with_status(status))
}

/// A text query parameter that is looked up in storage: refused when it holds a control
/// character, which no stored value has (and Postgres refuses a NUL in text).
pub(crate) fn plain_param<'a>(field: &str, value: &'a str) -> Result<&'a str, ApiError> {
    if value.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(value)
}

pub fn configure(cfg: &mut web::ServiceConfig, max_body_bytes: usize) {
    cfg.app_data(web::PayloadConfig::new(max_body_bytes))
        .app_data(
            web::JsonConfig::default()
                .limit(max_body_bytes)
                .error_handler(|err, _req| {
                    use actix_web::ResponseError;
                    // A body over the limit is 413, as on `/v1`; anything else the client's 400.
                    let status = match err.status_code().as_u16() {
                        413 => 413,
                        _ => 400,
                    };
                    ApiError::new(status, "invalid_request", format!("request body: {err}")).into()
                }),
        )
        .app_data(
            web::PathConfig::default()
                .error_handler(|err, _req| ApiError::invalid(format!("path: {err}")).into()),
        )
        .app_data(
            web::QueryConfig::default()
                .error_handler(|err, _req| ApiError::invalid(format!("query: {err}")).into()),
        )
        .configure(ops::routes)
        .configure(send::routes)
        .configure(retract::routes)
        .configure(receipts::routes)
        .configure(unsubscribe::routes)
        .configure(users::routes)
        .configure(admin::routes)
        .default_service(web::to(not_found));
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    let message = format!("no such route: {} {}", req.method(), req.path());
    if req.path().starts_with("/v1/") {
        HttpResponse::NotFound()
            .json(json!({"code": crate::error::jums::INVALID_PARAMETER, "message": message}))
    } else {
        HttpResponse::NotFound().json(json!({"error": {"code": "not_found", "message": message}}))
    }
}
