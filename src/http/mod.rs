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

pub fn configure(cfg: &mut web::ServiceConfig, max_body_bytes: usize) {
    cfg.app_data(web::PayloadConfig::new(max_body_bytes))
        .app_data(
            web::JsonConfig::default()
                .limit(max_body_bytes)
                .error_handler(|err, _req| {
                    ApiError::invalid(format!("request body: {err}")).into()
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
