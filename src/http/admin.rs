//! `/api/sources`, `/api/channels` and grants: the management API (admin bearer token).
//! Source secrets are shown once, at creation; channel credentials are masked on every read.

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use msghub_actors::provider::ChannelType;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};

use super::State;
use super::auth::require_admin;
use crate::error::ApiError;
use crate::storage::channels::{ChannelPatch, ChannelRow, NewChannel};
use crate::storage::sources::SourceRow;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api")
            .route("/sources", web::get().to(list_sources))
            .route("/sources", web::post().to(create_source))
            .route("/sources/{id}", web::get().to(get_source))
            .route("/sources/{id}", web::patch().to(update_source))
            .route("/sources/{id}/secret", web::post().to(rotate_secret))
            .route("/sources/{id}/grants", web::get().to(list_grants))
            .route("/sources/{id}/grants/{channel_id}", web::put().to(grant))
            .route(
                "/sources/{id}/grants/{channel_id}",
                web::delete().to(revoke),
            )
            .route("/channels", web::get().to(list_channels))
            .route("/channels", web::post().to(create_channel))
            .route("/channels/{id}", web::get().to(get_channel))
            .route("/channels/{id}", web::patch().to(update_channel))
            .configure(super::messages::api_routes)
            .configure(super::callback_urls::api_routes)
            .configure(super::rules::api_routes)
            .configure(super::lists::api_routes)
            .configure(super::suppressions::api_routes),
    );
}

/// What a secret credential field reads as.
const MASK: &str = "******";

/// Credential fields holding URLs, whose query string and password may carry tokens.
const URL_FIELDS: [&str; 2] = ["url", "base_url"];

/// `https://user:pw@host/p?token=x` → `https://user:******@host/p?******`.
fn mask_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, _)) => (b, true),
        None => (url, false),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = base[scheme + 3..at].split(':').next().unwrap_or_default();
            format!("{}{user}:{MASK}{}", &base[..scheme + 3], &base[at..])
        }
        _ => base.to_string(),
    };
    if query {
        out.push('?');
        out.push_str(MASK);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::mask_url;

    #[test]
    fn url_tokens_and_passwords_are_masked() {
        assert_eq!(mask_url("https://h/p?token=abc"), "https://h/p?******");
        assert_eq!(mask_url("https://u:pw@h/p"), "https://u:******@h/p");
        assert_eq!(mask_url("http://127.0.0.1:8090"), "http://127.0.0.1:8090");
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal("management API", &e)
}

/// A channel's rate limit: calls per second, 0 for none; stored as a 32-bit signed integer.
fn valid_rate(rate: u32) -> Result<u32, ApiError> {
    if i32::try_from(rate).is_err() {
        return Err(ApiError::invalid(format!(
            "rate_per_second must be at most {} (0 for no limit)",
            i32::MAX
        )));
    }
    Ok(rate)
}

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    B64.encode(buf)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSource {
    name: String,
}

async fn create_source(
    state: State,
    req: HttpRequest,
    body: web::Json<CreateSource>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let name = super::valid_name(&body.name)?;
    let key = format!("src_{}", random_token(12));
    let secret = random_token(32);
    let row = state
        .db
        .create_source(&state.crypto, &key, &secret, name)
        .await
        .map_err(internal)?;
    state.sources.invalidate();
    let mut out = source_json(&row);
    out["secret"] = json!(secret);
    out["secret_notice"] = json!("store the secret now; it is not shown again");
    Ok(HttpResponse::Created().json(out))
}

/// A new secret for the source, shown once; the old one stops working at once.
async fn rotate_secret(
    state: State,
    req: HttpRequest,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let secret = random_token(32);
    if !state
        .db
        .rotate_source_secret(&state.crypto, *id, &secret)
        .await
        .map_err(internal)?
    {
        return Err(ApiError::not_found("source"));
    }
    state.sources.invalidate();
    Ok(HttpResponse::Ok().json(json!({"id": *id, "secret": secret,
        "secret_notice": "store the secret now; it is not shown again"})))
}

fn source_json(row: &SourceRow) -> Value {
    let mut out = json!({"id": row.id, "key": row.key, "name": row.name, "enabled": row.enabled,
           "created_at": row.created_at, "updated_at": row.updated_at});
    if let (Some(out), Value::Object(filters)) = (
        out.as_object_mut(),
        super::lists::source_filters_json(&row.filters),
    ) {
        out.extend(filters);
    }
    out
}

async fn list_sources(state: State, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let rows = state.db.list_sources().await.map_err(internal)?;
    Ok(HttpResponse::Ok()
        .json(json!({"sources": rows.iter().map(source_json).collect::<Vec<_>>()})))
}

async fn get_source(
    state: State,
    req: HttpRequest,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let row = state
        .db
        .source(*id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::not_found("source"))?;
    Ok(HttpResponse::Ok().json(source_json(&row)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateSource {
    name: Option<String>,
    enabled: Option<bool>,
    /// Audience filter settings (see `super::lists::FilterPatch`).
    dedup_window_seconds: Option<u32>,
    caps: Option<std::collections::BTreeMap<String, u32>>,
    day_utc_offset: Option<String>,
}

async fn update_source(
    state: State,
    req: HttpRequest,
    id: web::Path<i64>,
    body: web::Json<UpdateSource>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let name = body.name.as_deref().map(super::valid_name).transpose()?;
    let patch = super::lists::FilterPatch {
        dedup_window_seconds: body.dedup_window_seconds,
        caps: body.caps.clone(),
        day_utc_offset: body.day_utc_offset.clone(),
    };
    // Everything is checked before anything is written, and written in one statement.
    let filters = if patch.is_empty() {
        None
    } else {
        let row = state
            .db
            .source(*id)
            .await
            .map_err(internal)?
            .ok_or_else(|| ApiError::not_found("source"))?;
        Some(patch.apply(&row.filters)?)
    };
    let found = state
        .db
        .update_source(*id, name, body.enabled, filters.as_ref())
        .await
        .map_err(internal)?;
    if !found {
        return Err(ApiError::not_found("source"));
    }
    state.sources.invalidate();
    get_source(state, req, id).await
}

async fn list_grants(
    state: State,
    req: HttpRequest,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    state
        .db
        .source(*id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::not_found("source"))?;
    let grants = state.db.granted_channels(*id).await.map_err(internal)?;
    let grants: Vec<Value> = grants
        .into_iter()
        .map(|(channel_id, t, enabled)| json!({"channel_id": channel_id, "type": t, "enabled": enabled}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"grants": grants})))
}

async fn grant(
    state: State,
    req: HttpRequest,
    path: web::Path<(i64, i64)>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let (source_id, channel_id) = *path;
    state
        .db
        .source(source_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::not_found("source"))?;
    state
        .db
        .channel_row(channel_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::not_found("channel"))?;
    state
        .db
        .grant(source_id, channel_id)
        .await
        .map_err(internal)?;
    state.sources.invalidate();
    Ok(HttpResponse::NoContent().finish())
}

async fn revoke(
    state: State,
    req: HttpRequest,
    path: web::Path<(i64, i64)>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let (source_id, channel_id) = *path;
    if !state
        .db
        .revoke(source_id, channel_id)
        .await
        .map_err(internal)?
    {
        return Err(ApiError::not_found("grant"));
    }
    state.sources.invalidate();
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateChannel {
    #[serde(rename = "type")]
    channel_type: String,
    name: String,
    credentials: Value,
    #[serde(default)]
    rate_per_second: u32,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

fn parse_type(code: &str) -> Result<ChannelType, ApiError> {
    ChannelType::from_code(code).ok_or_else(|| {
        let known: Vec<&str> = ChannelType::ALL.iter().map(|t| t.code()).collect();
        ApiError::invalid(format!(
            "unknown channel type {code:?}; one of {}",
            known.join(", ")
        ))
    })
}

fn check_credentials(t: ChannelType, credentials: &Value) -> Result<(), ApiError> {
    msghub_providers::validate(t, credentials)
        .map_err(|e| ApiError::new(400, "invalid_credentials", e.to_string()))
}

async fn create_channel(
    state: State,
    req: HttpRequest,
    body: web::Json<CreateChannel>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let t = parse_type(&body.channel_type)?;
    let name = super::valid_name(&body.name)?;
    let rate_per_second = valid_rate(body.rate_per_second)?;
    check_credentials(t, &body.credentials)?;
    let row = state
        .db
        .create_channel(
            &state.crypto,
            NewChannel {
                channel_type: t,
                name,
                credentials: &body.credentials,
                rate_per_second,
                enabled: body.enabled,
            },
        )
        .await
        .map_err(internal)?;
    state.sources.invalidate();
    Ok(HttpResponse::Created().json(channel_json(&state, &row)?))
}

/// A channel as the API shows it: secret credential fields replaced by `"******"`.
fn channel_json(state: &State, row: &ChannelRow) -> Result<Value, ApiError> {
    let mut credentials = state
        .db
        .open_credentials(&state.crypto, row)
        .map_err(internal)?;
    if let (Some(t), Some(obj)) = (
        ChannelType::from_code(&row.channel_type),
        credentials.as_object_mut(),
    ) {
        for field in msghub_providers::secret_fields(t) {
            if let Some(v) = obj.get_mut(*field) {
                *v = json!(MASK);
            }
        }
        for field in URL_FIELDS {
            if let Some(Value::String(u)) = obj.get_mut(field) {
                *u = mask_url(u);
            }
        }
    }
    let mut out = json!({"id": row.id, "type": row.channel_type, "name": row.name, "credentials": credentials,
          "rate_per_second": row.rate_per_second, "enabled": row.enabled,
          "created_at": row.created_at, "updated_at": row.updated_at});
    // Where the provider posts receipts (configure it in the provider's console where the
    // provider asks for one: Aliyun SmsReport, Tencent SMS callbacks, the WeChat account's
    // server URL, the mini-program's message push URL; JPush gets it with every push).
    if matches!(
        row.channel_type.as_str(),
        "app" | "sms" | "wechatoa" | "wechatmp"
    ) {
        out["receipt_url"] = json!(super::receipts::receipt_url(
            &state.public_url,
            &state.crypto,
            row.id
        ));
    }
    Ok(out)
}

async fn list_channels(state: State, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let rows = state.db.list_channels().await.map_err(internal)?;
    let channels = rows
        .iter()
        .map(|r| channel_json(&state, r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(json!({"channels": channels})))
}

async fn get_channel(
    state: State,
    req: HttpRequest,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let row = state
        .db
        .channel_row(*id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::not_found("channel"))?;
    Ok(HttpResponse::Ok().json(channel_json(&state, &row)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateChannel {
    name: Option<String>,
    credentials: Option<Value>,
    rate_per_second: Option<u32>,
    enabled: Option<bool>,
}

async fn update_channel(
    state: State,
    req: HttpRequest,
    id: web::Path<i64>,
    body: web::Json<UpdateChannel>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let row = state
        .db
        .channel_row(*id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::not_found("channel"))?;
    let t = parse_type(&row.channel_type)?;
    let mut body = body.into_inner();
    let name = body
        .name
        .as_deref()
        .map(super::valid_name)
        .transpose()?
        .map(str::to_string);
    if let Some(c) = body.credentials.as_mut() {
        // Secret fields sent back as read (masked) keep their stored value, so a client can
        // PATCH what it GOT without overwriting the secret with the mask.
        let current = state
            .db
            .open_credentials(&state.crypto, &row)
            .map_err(internal)?;
        if let Some(obj) = c.as_object_mut() {
            for field in msghub_providers::secret_fields(t) {
                if obj.get(*field).and_then(Value::as_str) == Some(MASK)
                    && let Some(v) = current.get(*field)
                {
                    obj.insert((*field).to_string(), v.clone());
                }
            }
            for field in URL_FIELDS {
                if let (Some(sent), Some(Value::String(stored))) =
                    (obj.get(field).and_then(Value::as_str), current.get(field))
                    && sent != stored
                    && sent == mask_url(stored)
                {
                    obj.insert(field.to_string(), json!(stored));
                }
            }
        }
        check_credentials(t, c)?;
    }
    let patch = ChannelPatch {
        name,
        credentials: body.credentials,
        rate_per_second: body.rate_per_second.map(valid_rate).transpose()?,
        enabled: body.enabled,
    };
    state
        .db
        .update_channel(&state.crypto, *id, patch)
        .await
        .map_err(internal)?;
    state.sources.invalidate();
    state.receipt_channels.forget(*id);
    state.dispatch.channel_changed(*id).await;
    get_channel(state, req, id).await
}
