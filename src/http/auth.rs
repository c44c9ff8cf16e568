//! Who is calling: sources by HTTP Basic `key:secret` on `/v1`, the operator by bearer token on
//! `/api`. Source lookups are cached for a couple of seconds (and dropped on every management
//! change) so the send path does not read the database to authenticate.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use actix_web::http::header;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use msghub_actors::provider::ChannelType;
use msghub_providers::constant_time_eq;

use crate::error::{ApiError, JumsError, jums};
use crate::storage::Db;
use crate::storage::sources::hash_secret;

const TTL: Duration = Duration::from_secs(2);

/// A source as the send path needs it.
#[derive(Debug, Clone)]
pub struct CachedSource {
    pub id: i64,
    pub enabled: bool,
    secret_hash: String,
    /// Granted channels: (id, type, enabled), lowest id first.
    pub channels: Vec<(i64, ChannelType, bool)>,
    /// Verified status callback URLs, the default first.
    pub callback_urls: Vec<String>,
    /// Dedup window and frequency caps.
    pub filters: crate::domain::filters::SourceFilters,
    /// Black- and whitelists the source may use (global ones and its own).
    pub lists: Vec<crate::domain::filters::ListRef>,
}

pub struct SourceCache {
    db: Db,
    entries: RwLock<HashMap<String, (Instant, Arc<CachedSource>)>>,
}

impl SourceCache {
    pub fn new(db: Db) -> SourceCache {
        SourceCache {
            db,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// Forget everything; called after any change to sources, channels, grants or lists.
    pub fn invalidate(&self) {
        if let Ok(mut e) = self.entries.write() {
            e.clear();
        }
    }

    async fn load(&self, key: &str) -> Result<Option<Arc<CachedSource>>, JumsError> {
        if let Ok(e) = self.entries.read()
            && let Some((at, s)) = e.get(key)
            && at.elapsed() < TTL
        {
            return Ok(Some(s.clone()));
        }
        let Some(row) = self
            .db
            .source_by_key(key)
            .await
            .map_err(|e| JumsError::internal("loading source", &e))?
        else {
            return Ok(None);
        };
        let channels = self
            .db
            .granted_channels(row.id)
            .await
            .map_err(|e| JumsError::internal("loading grants", &e))?
            .into_iter()
            .filter_map(|(id, t, enabled)| ChannelType::from_code(&t).map(|t| (id, t, enabled)))
            .collect();
        let callback_urls = self
            .db
            .callback_urls(row.id)
            .await
            .map_err(|e| JumsError::internal("loading callback URLs", &e))?
            .into_iter()
            .map(|u| u.url)
            .collect();
        let lists = self
            .db
            .lists_for_source(row.id)
            .await
            .map_err(|e| JumsError::internal("loading lists", &e))?;
        let source = Arc::new(CachedSource {
            id: row.id,
            enabled: row.enabled,
            secret_hash: row.secret_hash,
            channels,
            callback_urls,
            filters: row.filters,
            lists,
        });
        if let Ok(mut e) = self.entries.write() {
            if e.len() > 10_000 {
                e.clear();
            }
            e.insert(key.to_string(), (Instant::now(), source.clone()));
        }
        Ok(Some(source))
    }

    /// The calling source, refused with JUMS 4005 (bad credentials) or 1015005 (disabled).
    pub async fn authenticate(&self, req: &HttpRequest) -> Result<Arc<CachedSource>, JumsError> {
        let failed = || {
            JumsError::new(
                jums::AUTH_FAILED,
                "authentication failed: use Basic base64(source_key:source_secret)",
            )
        };
        let (key, secret) = basic_credentials(req).ok_or_else(failed)?;
        let source = self.load(&key).await?.ok_or_else(failed)?;
        if !constant_time_eq(
            hash_secret(&secret).as_bytes(),
            source.secret_hash.as_bytes(),
        ) {
            return Err(failed());
        }
        if !source.enabled {
            return Err(JumsError::new(
                jums::SOURCE_CLOSED,
                "this source is disabled",
            ));
        }
        Ok(source)
    }
}

/// The size of the `source_key` column: no longer key names a source.
const MAX_KEY_BYTES: usize = 64;

fn basic_credentials(req: &HttpRequest) -> Option<(String, String)> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = String::from_utf8(B64.decode(encoded.trim()).ok()?).ok()?;
    let (key, secret) = decoded.split_once(':')?;
    // No stored key is longer or holds a control character (a NUL would make Postgres
    // refuse the lookup): such a key names no source, without asking the database.
    if !crate::domain::plain_text(key, MAX_KEY_BYTES) {
        return None;
    }
    Some((key.to_string(), secret.to_string()))
}

/// Check the operator's bearer token against the stored hash.
pub fn require_admin(req: &HttpRequest, token_hash: &str) -> Result<(), ApiError> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(ApiError::unauthorized)?;
    if constant_time_eq(hash_secret(token.trim()).as_bytes(), token_hash.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}
