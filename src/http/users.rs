//! `POST /v1/user/opt` and `POST /v1/user/delete`: the JUMS user API.

use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::State;
use crate::domain::{kind_of, parse_json, user_opt};
use crate::error::JumsError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/user/opt", web::post().to(opt))
        .route("/v1/user/delete", web::post().to(delete));
}

async fn opt(
    state: State,
    req: HttpRequest,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, JumsError> {
    state.sources.authenticate(&req).await?;
    let body = super::jums_body(body)?;
    let value = parse_json(&body).map_err(JumsError::invalid)?;
    let (ops, fail) = user_opt::parse(&value).map_err(JumsError::invalid)?;
    if !ops.is_empty() {
        state
            .db
            .apply_user_ops(&ops)
            .await
            .map_err(|e| JumsError::internal("applying user operations", &e))?;
    }
    let success: Vec<&str> = ops.iter().map(|o| o.userid.as_str()).collect();
    Ok(HttpResponse::Ok().json(json!({
        "code": 0,
        "message": if fail.is_empty() { "success" } else { "partial success" },
        "data": {"success": success, "fail": fail},
    })))
}

async fn delete(
    state: State,
    req: HttpRequest,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, JumsError> {
    state.sources.authenticate(&req).await?;
    let body = super::jums_body(body)?;
    let value = parse_json(&body).map_err(JumsError::invalid)?;
    let ids = userids(&value)?;
    let deleted = state
        .db
        .delete_users(&ids)
        .await
        .map_err(|e| JumsError::internal("deleting users", &e))?;
    Ok(HttpResponse::Ok()
        .json(json!({"code": 0, "message": "success", "data": {"deleted": deleted}})))
}

/// `["u1","u2"]` or `{"userids": [...]}`.
fn userids(value: &Value) -> Result<Vec<String>, JumsError> {
    let list = match value {
        Value::Object(o) => {
            if let Some(k) = o.keys().find(|k| *k != "userids") {
                return Err(JumsError::invalid(format!("unknown field {k:?}")));
            }
            o.get("userids").ok_or_else(|| {
                JumsError::invalid("expected an array of userids or {\"userids\": [...]}")
            })?
        }
        other => other,
    };
    let arr = list.as_array().ok_or_else(|| {
        JumsError::invalid(format!(
            "expected an array of userids, got {}",
            kind_of(list)
        ))
    })?;
    if arr.is_empty() || arr.len() > user_opt::MAX_USERS_PER_CALL {
        return Err(JumsError::invalid(format!(
            "give 1 to {} userids per call",
            user_opt::MAX_USERS_PER_CALL
        )));
    }
    arr.iter()
        .map(|v| match v.as_str() {
            Some(u) if user_opt::valid_userid(u) => Ok(u.to_string()),
            _ => Err(JumsError::invalid(format!("invalid userid {v}"))),
        })
        .collect()
}
