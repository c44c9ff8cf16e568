//! Sources (upstream business systems) and their grants.

use sea_orm::{DbErr, QueryResult};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::crypto::Crypto;
use super::{Db, now_ms};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SourceRow {
    pub id: i64,
    pub key: String,
    pub name: String,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(skip)]
    pub secret_hash: String,
    /// Dedup window and frequency caps.
    pub filters: crate::domain::filters::SourceFilters,
}

fn seal(crypto: &Crypto, secret: &str) -> Result<String, DbErr> {
    crypto
        .encrypt(secret.as_bytes())
        .map_err(|e| DbErr::Custom(format!("encrypting source secret: {e}")))
}

/// Source secrets are 32 random bytes, so a plain SHA-256 is enough to make the stored value
/// useless to a reader of the database, and it keeps per-request verification in microseconds
/// (a password KDF would cap the send rate at a few hundred requests per second).
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn row(r: &QueryResult) -> Result<SourceRow, DbErr> {
    Ok(SourceRow {
        id: r.try_get("", "id")?,
        key: r.try_get("", "source_key")?,
        name: r.try_get("", "name")?,
        enabled: r.try_get("", "enabled")?,
        created_at: r.try_get("", "created_at")?,
        updated_at: r.try_get("", "updated_at")?,
        secret_hash: r.try_get("", "secret_hash")?,
        filters: super::lists::parse_source_filters(r.try_get("", "filters")?)?,
    })
}

const COLUMNS: &str = "id, source_key, name, enabled, created_at, updated_at, secret_hash, filters";

impl Db {
    /// Store a new source. The secret is kept as a hash (to authenticate) and encrypted (to sign
    /// status callbacks with it).
    pub async fn create_source(
        &self,
        crypto: &Crypto,
        key: &str,
        secret: &str,
        name: &str,
    ) -> Result<SourceRow, DbErr> {
        let now = now_ms();
        let sealed = seal(crypto, secret)?;
        self.execute(
            "INSERT INTO sources (source_key, secret_hash, secret_enc, name, enabled, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
            vec![
                key.into(),
                hash_secret(secret).into(),
                sealed.into(),
                name.into(),
                true.into(),
                now.into(),
                now.into(),
            ],
        )
        .await?;
        self.source_by_key_rw(key)
            .await?
            .ok_or_else(|| DbErr::RecordNotInserted)
    }

    async fn source_by_key_rw(&self, key: &str) -> Result<Option<SourceRow>, DbErr> {
        use sea_orm::ConnectionTrait;
        let stmt = self.stmt(
            &format!("SELECT {COLUMNS} FROM sources WHERE source_key = ?"),
            vec![key.into()],
        );
        self.write()
            .query_one_raw(stmt)
            .await?
            .as_ref()
            .map(row)
            .transpose()
    }

    pub async fn source_by_key(&self, key: &str) -> Result<Option<SourceRow>, DbErr> {
        let r = self
            .query_one(
                &format!("SELECT {COLUMNS} FROM sources WHERE source_key = ?"),
                vec![key.into()],
            )
            .await?;
        r.as_ref().map(row).transpose()
    }

    pub async fn source(&self, id: i64) -> Result<Option<SourceRow>, DbErr> {
        let r = self
            .query_one(
                &format!("SELECT {COLUMNS} FROM sources WHERE id = ?"),
                vec![id.into()],
            )
            .await?;
        r.as_ref().map(row).transpose()
    }

    pub async fn list_sources(&self) -> Result<Vec<SourceRow>, DbErr> {
        let rows = self
            .query_all(
                &format!("SELECT {COLUMNS} FROM sources ORDER BY id"),
                vec![],
            )
            .await?;
        rows.iter().map(row).collect()
    }

    /// Change what is given of a source's name, state and audience filter settings, in one
    /// statement: all of it or nothing. False when there is no such source.
    pub async fn update_source(
        &self,
        id: i64,
        name: Option<&str>,
        enabled: Option<bool>,
        filters: Option<&crate::domain::filters::SourceFilters>,
    ) -> Result<bool, DbErr> {
        let filters = filters
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| DbErr::Custom(e.to_string()))?;
        let n = self
            .execute(
                "UPDATE sources SET name = COALESCE(?, name), enabled = COALESCE(?, enabled), \
                 filters = COALESCE(?, filters), updated_at = ? WHERE id = ?",
                vec![
                    name.map(str::to_string).into(),
                    enabled.into(),
                    filters.into(),
                    now_ms().into(),
                    id.into(),
                ],
            )
            .await?;
        Ok(n > 0)
    }

    /// Replace a source's secret (hash and encrypted copy). False when there is no such source.
    pub async fn rotate_source_secret(
        &self,
        crypto: &Crypto,
        id: i64,
        secret: &str,
    ) -> Result<bool, DbErr> {
        let n = self
            .execute(
                "UPDATE sources SET secret_hash = ?, secret_enc = ?, updated_at = ? WHERE id = ?",
                vec![
                    hash_secret(secret).into(),
                    seal(crypto, secret)?.into(),
                    now_ms().into(),
                    id.into(),
                ],
            )
            .await?;
        Ok(n > 0)
    }

    /// The source's key and, when it has one, its secret in clear, for signing status
    /// callbacks (`Basic base64(key:secret)`). `None` when there is no such source.
    pub async fn source_signing_secret(
        &self,
        crypto: &Crypto,
        id: i64,
    ) -> Result<Option<(String, Option<String>)>, DbErr> {
        let Some(r) = self
            .query_one(
                "SELECT source_key, secret_enc FROM sources WHERE id = ?",
                vec![id.into()],
            )
            .await?
        else {
            return Ok(None);
        };
        let key: String = r.try_get("", "source_key")?;
        let sealed: Option<String> = r.try_get("", "secret_enc")?;
        let secret = match sealed {
            Some(s) => {
                let bytes = crypto
                    .decrypt(&s)
                    .map_err(|e| DbErr::Custom(format!("source {id} secret: {e}")))?;
                Some(
                    String::from_utf8(bytes)
                        .map_err(|_| DbErr::Custom(format!("source {id} secret is not UTF-8")))?,
                )
            }
            None => None,
        };
        Ok(Some((key, secret)))
    }

    pub async fn grant(&self, source_id: i64, channel_id: i64) -> Result<(), DbErr> {
        self.execute(
            "INSERT INTO grants (source_id, channel_id, created_at) VALUES (?, ?, ?) \
             ON CONFLICT (source_id, channel_id) DO NOTHING",
            vec![source_id.into(), channel_id.into(), now_ms().into()],
        )
        .await
        .map(|_| ())
    }

    pub async fn revoke(&self, source_id: i64, channel_id: i64) -> Result<bool, DbErr> {
        let n = self
            .execute(
                "DELETE FROM grants WHERE source_id = ? AND channel_id = ?",
                vec![source_id.into(), channel_id.into()],
            )
            .await?;
        Ok(n > 0)
    }

    /// The channels granted to a source: (channel id, type code, enabled), lowest id first.
    pub async fn granted_channels(
        &self,
        source_id: i64,
    ) -> Result<Vec<(i64, String, bool)>, DbErr> {
        let rows = self
            .query_all(
                "SELECT c.id, c.channel_type, c.enabled FROM grants g JOIN channels c ON c.id = g.channel_id \
                 WHERE g.source_id = ? ORDER BY c.id",
                vec![source_id.into()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("", "id")?,
                    r.try_get("", "channel_type")?,
                    r.try_get("", "enabled")?,
                ))
            })
            .collect()
    }

    /// A named setting (admin token hash, ...).
    pub async fn setting(&self, name: &str) -> Result<Option<String>, DbErr> {
        let r = self
            .query_one(
                "SELECT value FROM settings WHERE name = ?",
                vec![name.into()],
            )
            .await?;
        r.map(|r| r.try_get("", "value")).transpose()
    }

    pub async fn put_setting(&self, name: &str, value: &str) -> Result<(), DbErr> {
        self.execute(
            "INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            vec![name.into(), value.into()],
        )
        .await
        .map(|_| ())
    }
}
