//! Verified status-callback URLs of each source, and what the callback service needs to know
//! about a message (its source and stored plan).

use sea_orm::{ConnectionTrait, DbErr, TransactionTrait};
use serde::Serialize;

use super::{Db, now_ms};

/// One verified callback URL. The oldest of a source's URLs is its default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallbackUrlRow {
    pub url: String,
    pub created_at: i64,
}

/// What adding a URL did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddedUrl {
    Added,
    AlreadyRegistered,
    /// The source already has the maximum number of URLs.
    Full,
}

impl Db {
    /// A source's callback URLs, the default (oldest) first.
    pub async fn callback_urls(&self, source_id: i64) -> Result<Vec<CallbackUrlRow>, DbErr> {
        let rows = self
            .query_all(
                "SELECT url, created_at FROM source_callback_urls WHERE source_id = ? ORDER BY id",
                vec![source_id.into()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(CallbackUrlRow {
                    url: r.try_get("", "url")?,
                    created_at: r.try_get("", "created_at")?,
                })
            })
            .collect()
    }

    /// Store a verified URL unless the source already has it or has `max` of them; the check and
    /// the insert share a transaction so concurrent registrations cannot exceed `max`.
    pub async fn add_callback_url(
        &self,
        source_id: i64,
        url: &str,
        max: usize,
    ) -> Result<AddedUrl, DbErr> {
        let txn = self.write().begin().await?;
        let rows = txn
            .query_all_raw(self.stmt(
                "SELECT url FROM source_callback_urls WHERE source_id = ?",
                vec![source_id.into()],
            ))
            .await?;
        let mut urls = Vec::with_capacity(rows.len());
        for r in &rows {
            urls.push(r.try_get::<String>("", "url")?);
        }
        if urls.iter().any(|u| u == url) {
            return Ok(AddedUrl::AlreadyRegistered);
        }
        if urls.len() >= max {
            return Ok(AddedUrl::Full);
        }
        txn.execute_raw(self.stmt(
            "INSERT INTO source_callback_urls (source_id, url, created_at) VALUES (?, ?, ?) \
             ON CONFLICT (source_id, url) DO NOTHING",
            vec![source_id.into(), url.into(), now_ms().into()],
        ))
        .await?;
        txn.commit().await?;
        Ok(AddedUrl::Added)
    }

    /// False when the source had no such URL.
    pub async fn remove_callback_url(&self, source_id: i64, url: &str) -> Result<bool, DbErr> {
        let n = self
            .execute(
                "DELETE FROM source_callback_urls WHERE source_id = ? AND url = ?",
                vec![source_id.into(), url.into()],
            )
            .await?;
        Ok(n > 0)
    }

    /// A message's source and stored plan (JSON), or `None` for an unknown message.
    pub async fn message_source_and_plan(
        &self,
        msgid: i64,
    ) -> Result<Option<(i64, String)>, DbErr> {
        let Some(r) = self
            .query_one(
                "SELECT source_id, plan FROM messages WHERE id = ?",
                vec![msgid.into()],
            )
            .await?
        else {
            return Ok(None);
        };
        Ok(Some((r.try_get("", "source_id")?, r.try_get("", "plan")?)))
    }
}
