//! `/api/rules`: fallback chains and routing rules, referenced by `rule_id` on send.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::State;
use super::auth::require_admin;
use crate::domain::rules::{self, RuleDef};
use crate::error::ApiError;
use crate::storage::Db;
use crate::storage::rules::RuleRow;

/// Mounted inside the `/api` scope by [`super::admin::routes`].
pub fn api_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/rules", web::get().to(list))
        .route("/rules", web::post().to(create))
        .route("/rules/{id}", web::get().to(get))
        .route("/rules/{id}", web::put().to(update))
        .route("/rules/{id}", web::delete().to(delete));
}

/// Rules by id for the send path; a miss reads the database once.
pub struct RuleCache {
    db: Db,
    rules: RwLock<HashMap<i64, Option<Arc<RuleDef>>>>,
}

impl RuleCache {
    pub fn new(db: Db) -> RuleCache {
        RuleCache {
            db,
            rules: RwLock::new(HashMap::new()),
        }
    }

    /// The rule's definition, `None` when no such rule exists.
    pub async fn get(&self, id: i64) -> Result<Option<Arc<RuleDef>>, sea_orm::DbErr> {
        if let Ok(rules) = self.rules.read()
            && let Some(hit) = rules.get(&id)
        {
            return Ok(hit.clone());
        }
        let def = self.db.rule(id).await?.map(|r| Arc::new(r.def));
        if let Ok(mut rules) = self.rules.write() {
            if rules.len() > 10_000 {
                rules.clear();
            }
            rules.insert(id, def.clone());
        }
        Ok(def)
    }

    fn invalidate(&self, id: i64) {
        if let Ok(mut rules) = self.rules.write() {
            rules.remove(&id);
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleBody {
    name: String,
    rule: Value,
}

fn rule_json(r: &RuleRow) -> Value {
    json!({"id": r.id, "name": r.name, "rule": r.def.to_json(),
           "created_at": r.created_at, "updated_at": r.updated_at})
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal("rules", &e)
}

fn validate(body: &RuleBody) -> Result<(String, RuleDef), ApiError> {
    let name = super::valid_name(&body.name)?;
    let def = rules::parse(&body.rule).map_err(ApiError::invalid)?;
    Ok((name.to_string(), def))
}

fn rule_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::invalid(format!("rule id {raw:?} is not a rule id")))
}

async fn create(
    state: State,
    req: HttpRequest,
    body: web::Json<RuleBody>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let (name, def) = validate(&body)?;
    let row = state.db.create_rule(&name, &def).await.map_err(internal)?;
    state.rules.invalidate(row.id);
    Ok(HttpResponse::Created().json(rule_json(&row)))
}

async fn list(state: State, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let rows = state.db.list_rules().await.map_err(internal)?;
    Ok(HttpResponse::Ok().json(json!({"rules": rows.iter().map(rule_json).collect::<Vec<_>>()})))
}

async fn get(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let id = rule_id(&path)?;
    let row = state.db.rule(id).await.map_err(internal)?;
    let row = row.ok_or_else(|| ApiError::not_found("rule"))?;
    Ok(HttpResponse::Ok().json(rule_json(&row)))
}

async fn update(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<RuleBody>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let id = rule_id(&path)?;
    let (name, def) = validate(&body)?;
    let row = state
        .db
        .update_rule(id, &name, &def)
        .await
        .map_err(internal)?;
    state.rules.invalidate(id);
    let row = row.ok_or_else(|| ApiError::not_found("rule"))?;
    Ok(HttpResponse::Ok().json(rule_json(&row)))
}

async fn delete(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.admin_token_hash)?;
    let id = rule_id(&path)?;
    let deleted = state.db.delete_rule(id).await.map_err(internal)?;
    state.rules.invalidate(id);
    if !deleted {
        return Err(ApiError::not_found("rule"));
    }
    Ok(HttpResponse::NoContent().finish())
}
