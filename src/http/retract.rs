//! `POST /v1/retract/{msgid}`: retract a message of the calling source (JUMS 消息撤回).
//!
//! Answers once the message is stopped in storage; the recall of what was already sent and
//! the status callbacks (7 retracted, 8 retract failed) follow in the background
//! (`crate::retract`).

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::State;
use crate::error::{JumsError, jums};
use crate::storage::retract::RetractOutcome;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/retract/{msgid}", web::post().to(retract));
}

async fn retract(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, JumsError> {
    let source = state.sources.authenticate(&req).await?;
    let raw = path.into_inner();
    let msgid: i64 = raw
        .trim()
        .parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| JumsError::invalid(format!("msgid {raw:?} is not a message id")))?;
    if !state.settle_message(msgid).await {
        return Err(JumsError::new(
            jums::SERVER_ERROR,
            format!("message {msgid} is still being stored; retry shortly"),
        ));
    }
    let outcome = state
        .db
        .retract_message(msgid, source.id)
        .await
        .map_err(|e| JumsError::internal("retracting a message", &e))?;
    match outcome {
        RetractOutcome::Retracted { was, stopped } => {
            state.dispatch.retract(msgid);
            metrics::counter!("msghub_messages_retracted_total").increment(1);
            tracing::info!(msgid, was = %was, stopped, "message retracted");
            actix_web::rt::spawn(crate::retract::follow_up(
                state.db.clone(),
                state.dispatch.clone(),
                state.callbacks.clone(),
                msgid,
            ));
            Ok(HttpResponse::Ok()
                .json(json!({"code": 0, "message": "success", "msgid": msgid.to_string()})))
        }
        RetractOutcome::NotFound => Err(JumsError::invalid(format!(
            "msgid {msgid} does not name a message of this source"
        ))),
        RetractOutcome::AlreadyRetracted => Err(JumsError::new(
            jums::ALREADY_RETRACTED,
            format!("message {msgid} was already retracted"),
        )),
        RetractOutcome::Cancelled => Err(JumsError::invalid(format!(
            "message {msgid} was cancelled before it was sent; there is nothing to retract"
        ))),
        RetractOutcome::TooOld => Err(JumsError::invalid(format!(
            "message {msgid} was sent more than 24 hours ago; only messages of the last 24 hours \
             can be retracted"
        ))),
    }
}
