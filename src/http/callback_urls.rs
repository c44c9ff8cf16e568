//! `/api/sources/{id}/callback_urls`: the verified status callback URLs of a source (at most
//! five; the oldest is the default). A URL is stored only after it answered the echostr
//! handshake signed with the source's credentials.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::State;
use super::auth::require_admin;
use crate::domain::callback::{MAX_URLS_PER_SOURCE, check_url};
use crate::error::ApiError;
use crate::storage::callbacks::AddedUrl;

/// Registered inside the `/api` scope.
pub fn api_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/sources/{id}/callback_urls", web::get().to(list))
        .route("/sources/{id}/callback_urls", web::post().to(add))
        .route("/sources/{id}/callback_urls", web::delete().to(remove));
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal("callback URLs", &e)
}

async fn require_source(state: &State, id: i64) -> Result<(), ApiError> {
    state
        .db
        .source(id)
        .await
        .map_err(internal)?
        .map(|_| ())
        .ok_or_else(|| ApiError::not_found("source"))
}

async fn list_json(state: &State, id: i64) -> Result<serde_json::Value, ApiError> {
    let urls = state.db.callback_urls(id).await.map_err(internal)?;
    let urls: Vec<_> = urls
        .iter()
        .enumerate()
        .map(|(i, u)| json!({"url": u.url, "default": i == 0, "created_at": u.created_at}))
        .collect();
    Ok(json!({"callback_urls": urls}))
}

async fn list(
    state: State,
    req: HttpRequest,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    require_source(&state, *id).await?;
    Ok(HttpResponse::Ok().json(list_json(&state, *id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddUrl {
    url: String,
}

async fn add(
    state: State,
    req: HttpRequest,
    id: web::Path<i64>,
    body: web::Json<AddUrl>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let id = *id;
    let url = body.url.trim();
    check_url(url).map_err(ApiError::invalid)?;
    let (key, secret) = state
        .db
        .source_signing_secret(&state.crypto, id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::not_found("source"))?;
    let Some(secret) = secret else {
        return Err(ApiError::new(
            409,
            "secret_rotation_required",
            format!(
                "this source was created before status callbacks existed, so msghub keeps only a \
                 hash of its secret and cannot sign callbacks; rotate the secret \
                 (POST /api/sources/{id}/secret) and register the URL again"
            ),
        ));
    };
    let existing = state.db.callback_urls(id).await.map_err(internal)?;
    if existing.iter().any(|u| u.url == url) {
        return Ok(HttpResponse::Ok().json(list_json(&state, id).await?));
    }
    if existing.len() >= MAX_URLS_PER_SOURCE {
        return Err(too_many());
    }
    state
        .callbacks
        .verify_url(url, &key, &secret)
        .await
        .map_err(|e| {
            ApiError::new(
                422,
                "callback_unverified",
                format!("{url} was not verified: {e}"),
            )
        })?;
    match state
        .db
        .add_callback_url(id, url, MAX_URLS_PER_SOURCE)
        .await
        .map_err(internal)?
    {
        AddedUrl::Full => return Err(too_many()),
        AddedUrl::Added | AddedUrl::AlreadyRegistered => {}
    }
    state.sources.invalidate();
    Ok(HttpResponse::Created().json(list_json(&state, id).await?))
}

fn too_many() -> ApiError {
    ApiError::new(
        409,
        "too_many_callback_urls",
        format!("a source has at most {MAX_URLS_PER_SOURCE} callback URLs; delete one first"),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveUrl {
    url: String,
}

async fn remove(
    state: State,
    req: HttpRequest,
    id: web::Path<i64>,
    query: web::Query<RemoveUrl>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    require_source(&state, *id).await?;
    if !state
        .db
        .remove_callback_url(*id, super::plain_param("url", query.url.trim())?)
        .await
        .map_err(internal)?
    {
        return Err(ApiError::not_found("callback URL"));
    }
    state.sources.invalidate();
    Ok(HttpResponse::NoContent().finish())
}
