//! `/api/lists`: black- and whitelists (admin bearer token), and the source filter settings
//! `PATCH /api/sources/{id}` takes.
//!
//! A list is global (`source_id: null`, usable by every source) or a source's own. A send
//! names one with `option.black_id` / `option.white_id`; an `always` list applies to every send
//! of its source (of every source when global) without being named. Entries are userids or
//! channel addresses, added and removed in bulk.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use msghub_actors::provider::ChannelType;
use serde::Deserialize;
use serde_json::{Value, json};

use super::State;
use super::auth::require_admin;
use crate::domain::filters::{ListKind, SourceFilters};
use crate::error::ApiError;
use crate::storage::lists::ListRow;

/// Most entries per call to add or remove.
pub const MAX_ENTRIES_PER_CALL: usize = 10_000;

/// Mounted inside the `/api` scope by [`super::admin::routes`].
pub fn api_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/lists", web::get().to(list_lists))
        .route("/lists", web::post().to(create_list))
        .route("/lists/{id}", web::get().to(get_list))
        .route("/lists/{id}", web::delete().to(delete_list))
        .route("/lists/{id}/entries", web::get().to(list_entries))
        .route("/lists/{id}/entries", web::post().to(add_entries))
        .route("/lists/{id}/entries", web::delete().to(remove_entries));
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal("lists API", &e)
}

fn list_json(row: &ListRow) -> Value {
    json!({"id": row.id, "name": row.name, "kind": row.kind, "source_id": row.source_id,
           "always": row.always, "created_at": row.created_at, "updated_at": row.updated_at})
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateList {
    name: String,
    kind: String,
    #[serde(default)]
    source_id: Option<i64>,
    #[serde(default)]
    always: bool,
}

async fn create_list(
    state: State,
    req: HttpRequest,
    body: web::Json<CreateList>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let name = super::valid_name(&body.name)?;
    let kind = ListKind::parse(&body.kind)
        .ok_or_else(|| ApiError::invalid("kind must be \"black\" or \"white\""))?;
    if let Some(source_id) = body.source_id {
        state
            .db
            .source(source_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| ApiError::not_found("source"))?;
    }
    let row = state
        .db
        .create_list(name, kind, body.source_id, body.always)
        .await
        .map_err(internal)?;
    state.sources.invalidate();
    Ok(HttpResponse::Created().json(list_json(&row)))
}

async fn list_lists(state: State, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let rows = state.db.lists().await.map_err(internal)?;
    Ok(HttpResponse::Ok().json(json!({"lists": rows.iter().map(list_json).collect::<Vec<_>>()})))
}

async fn found(state: &State, id: i64) -> Result<ListRow, ApiError> {
    state
        .db
        .list(id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::not_found("list"))
}

async fn get_list(
    state: State,
    req: HttpRequest,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let row = found(&state, *id).await?;
    let (userids, addresses) = state.db.list_sizes(*id).await.map_err(internal)?;
    let mut out = list_json(&row);
    out["userids"] = json!(userids);
    out["addresses"] = json!(addresses);
    Ok(HttpResponse::Ok().json(out))
}

/// Deleting a list also deletes its entries; messages that named it are no longer filtered by
/// it (a whitelist that is gone keeps nobody).
async fn delete_list(
    state: State,
    req: HttpRequest,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    if !state.db.delete_list(*id).await.map_err(internal)? {
        return Err(ApiError::not_found("list"));
    }
    state.sources.invalidate();
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entries {
    #[serde(default)]
    userids: Vec<String>,
    #[serde(default)]
    addresses: Vec<String>,
}

impl Entries {
    /// Every entry as (kind, value), validated.
    fn validated(&self) -> Result<Vec<(&'static str, &str)>, ApiError> {
        if self.userids.len() + self.addresses.len() > MAX_ENTRIES_PER_CALL {
            return Err(ApiError::invalid(format!(
                "at most {MAX_ENTRIES_PER_CALL} userids and addresses per call"
            )));
        }
        let mut out = Vec::with_capacity(self.userids.len() + self.addresses.len());
        for (field, kind, max, values) in [
            ("userids", "userid", 64, &self.userids),
            ("addresses", "address", 256, &self.addresses),
        ] {
            for (i, v) in values.iter().enumerate() {
                if !crate::domain::plain_text(v, max) {
                    return Err(ApiError::invalid(format!(
                        "{field}[{i}] must be 1 to {max} bytes without control characters"
                    )));
                }
                out.push((kind, v.as_str()));
            }
        }
        Ok(out)
    }
}

async fn add_entries(
    state: State,
    req: HttpRequest,
    id: web::Path<i64>,
    body: web::Json<Entries>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let entries = body.validated()?;
    found(&state, *id).await?;
    let added = state
        .db
        .add_list_entries(*id, &entries)
        .await
        .map_err(internal)?;
    Ok(HttpResponse::Ok().json(json!({"added": added})))
}

async fn remove_entries(
    state: State,
    req: HttpRequest,
    id: web::Path<i64>,
    body: web::Json<Entries>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    body.validated()?;
    found(&state, *id).await?;
    let mut removed = 0;
    for (kind, values) in [("userid", &body.userids), ("address", &body.addresses)] {
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        removed += state
            .db
            .remove_list_entries(*id, kind, &values)
            .await
            .map_err(internal)?;
    }
    Ok(HttpResponse::Ok().json(json!({"removed": removed})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryQuery {
    /// Keyset pagination: the `next` of the previous page.
    after: Option<String>,
    limit: Option<u64>,
}

async fn list_entries(
    state: State,
    req: HttpRequest,
    id: web::Path<i64>,
    query: web::Query<EntryQuery>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    found(&state, *id).await?;
    let after = match query
        .after
        .as_deref()
        .map(|a| super::plain_param("after", a))
        .transpose()?
    {
        None => None,
        Some(a) => match a.split_once(':') {
            Some((kind @ ("userid" | "address"), value)) => Some((kind, value)),
            _ => {
                return Err(ApiError::invalid(
                    "after must be the `next` of the previous page",
                ));
            }
        },
    };
    let limit = query.limit.unwrap_or(1000).clamp(1, 10_000);
    let entries = state
        .db
        .list_entries(*id, after, limit)
        .await
        .map_err(internal)?;
    let next = (entries.len() as u64 == limit)
        .then(|| entries.last().map(|e| format!("{}:{}", e.kind, e.value)))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({"entries": entries, "next": next})))
}

/// The filter fields of `PATCH /api/sources/{id}`; absent fields keep their value.
#[derive(Debug, Default, Deserialize)]
pub struct FilterPatch {
    pub dedup_window_seconds: Option<u32>,
    /// Replaces the caps: `{"sms": 3, "app": 10}`; `{}` removes them.
    pub caps: Option<BTreeMap<String, u32>>,
    pub day_utc_offset: Option<String>,
}

impl FilterPatch {
    pub fn is_empty(&self) -> bool {
        self.dedup_window_seconds.is_none() && self.caps.is_none() && self.day_utc_offset.is_none()
    }

    /// The settings after this patch, validated.
    pub fn apply(&self, current: &SourceFilters) -> Result<SourceFilters, ApiError> {
        let mut f = current.clone();
        if let Some(w) = self.dedup_window_seconds {
            f.dedup_window_seconds = w;
        }
        if let Some(caps) = &self.caps {
            f.caps = caps
                .iter()
                .map(|(code, n)| {
                    ChannelType::from_code(code)
                        .map(|t| (t, *n))
                        .ok_or_else(|| ApiError::invalid(format!("caps: no channel type {code:?}")))
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(offset) = &self.day_utc_offset {
            f.day_utc_offset = offset.trim().to_string();
        }
        f.validate().map_err(ApiError::invalid)?;
        Ok(f)
    }
}

/// The filter fields of a source as the API shows them.
pub fn source_filters_json(f: &SourceFilters) -> Value {
    json!({"dedup_window_seconds": f.dedup_window_seconds, "caps": f.caps,
           "day_utc_offset": f.day_utc_offset})
}
