//! Black- and whitelists and their entries (`/api/lists`), and the sources' filter settings.

use sea_orm::{ConnectionTrait, DbErr, QueryResult, TransactionTrait, Value};
use serde::Serialize;

use super::{Db, in_list, now_ms, value_rows};
use crate::domain::filters::{ListKind, ListRef, SourceFilters};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ListRow {
    pub id: i64,
    pub name: String,
    pub kind: String,
    /// `None`: global, usable by every source.
    pub source_id: Option<i64>,
    pub always: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An entry: a userid or a channel address.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ListEntry {
    pub kind: String,
    pub value: String,
}

fn row(r: &QueryResult) -> Result<ListRow, DbErr> {
    Ok(ListRow {
        id: r.try_get("", "id")?,
        name: r.try_get("", "name")?,
        kind: r.try_get("", "kind")?,
        source_id: r.try_get("", "source_id")?,
        always: r.try_get("", "applies_always")?,
        created_at: r.try_get("", "created_at")?,
        updated_at: r.try_get("", "updated_at")?,
    })
}

const COLUMNS: &str = "id, name, kind, source_id, applies_always, created_at, updated_at";

impl Db {
    pub async fn create_list(
        &self,
        name: &str,
        kind: ListKind,
        source_id: Option<i64>,
        always: bool,
    ) -> Result<ListRow, DbErr> {
        let now = now_ms();
        let r = self
            .query_one_rw(
                &format!(
                    "INSERT INTO audience_lists (name, kind, source_id, applies_always, created_at, updated_at) \
                     VALUES (?, ?, ?, ?, ?, ?) RETURNING {COLUMNS}"
                ),
                vec![
                    name.into(),
                    kind.as_str().into(),
                    source_id.into(),
                    always.into(),
                    now.into(),
                    now.into(),
                ],
            )
            .await?
            .ok_or(DbErr::RecordNotInserted)?;
        row(&r)
    }

    pub async fn lists(&self) -> Result<Vec<ListRow>, DbErr> {
        let rows = self
            .query_all(
                &format!("SELECT {COLUMNS} FROM audience_lists ORDER BY id"),
                vec![],
            )
            .await?;
        rows.iter().map(row).collect()
    }

    pub async fn list(&self, id: i64) -> Result<Option<ListRow>, DbErr> {
        let r = self
            .query_one(
                &format!("SELECT {COLUMNS} FROM audience_lists WHERE id = ?"),
                vec![id.into()],
            )
            .await?;
        r.as_ref().map(row).transpose()
    }

    /// Entries per kind: (userids, addresses).
    pub async fn list_sizes(&self, id: i64) -> Result<(i64, i64), DbErr> {
        let rows = self
            .query_all(
                "SELECT kind, COUNT(*) AS n FROM audience_list_entries WHERE list_id = ? GROUP BY kind",
                vec![id.into()],
            )
            .await?;
        let mut sizes = (0, 0);
        for r in rows {
            let kind: String = r.try_get("", "kind")?;
            let n: i64 = r.try_get("", "n")?;
            if kind == "userid" {
                sizes.0 = n;
            } else {
                sizes.1 = n;
            }
        }
        Ok(sizes)
    }

    /// Delete a list and its entries. False when there is no such list.
    pub async fn delete_list(&self, id: i64) -> Result<bool, DbErr> {
        let txn = self.write().begin().await?;
        txn.execute_raw(self.stmt(
            "DELETE FROM audience_list_entries WHERE list_id = ?",
            vec![id.into()],
        ))
        .await?;
        let n = txn
            .execute_raw(self.stmt("DELETE FROM audience_lists WHERE id = ?", vec![id.into()]))
            .await?
            .rows_affected();
        txn.commit().await?;
        Ok(n > 0)
    }

    /// Add entries in one transaction; how many were new.
    pub async fn add_list_entries(
        &self,
        id: i64,
        entries: &[(&'static str, &str)],
    ) -> Result<u64, DbErr> {
        let now = now_ms();
        let txn = self.write().begin().await?;
        let mut added = 0;
        for chunk in entries.chunks(1000) {
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 4);
            for (kind, value) in chunk {
                values.extend([id.into(), (*value).into(), (*kind).into(), now.into()]);
            }
            let sql = format!(
                "INSERT INTO audience_list_entries (list_id, value, kind, created_at) VALUES {} \
                 ON CONFLICT (list_id, value, kind) DO NOTHING",
                value_rows(chunk.len(), 4)
            );
            added += txn
                .execute_raw(self.stmt(&sql, values))
                .await?
                .rows_affected();
        }
        txn.execute_raw(self.stmt(
            "UPDATE audience_lists SET updated_at = ? WHERE id = ?",
            vec![now.into(), id.into()],
        ))
        .await?;
        txn.commit().await?;
        Ok(added)
    }

    /// Remove entries in one transaction; how many there were.
    pub async fn remove_list_entries(
        &self,
        id: i64,
        kind: &'static str,
        values: &[&str],
    ) -> Result<u64, DbErr> {
        let txn = self.write().begin().await?;
        let mut removed = 0;
        for chunk in values.chunks(1000) {
            let sql = format!(
                "DELETE FROM audience_list_entries WHERE list_id = ? AND kind = ? AND value IN ({})",
                in_list(chunk.len())
            );
            let mut params: Vec<Value> = vec![id.into(), kind.into()];
            params.extend(chunk.iter().map(|v| Value::from(*v)));
            removed += txn
                .execute_raw(self.stmt(&sql, params))
                .await?
                .rows_affected();
        }
        txn.execute_raw(self.stmt(
            "UPDATE audience_lists SET updated_at = ? WHERE id = ?",
            vec![now_ms().into(), id.into()],
        ))
        .await?;
        txn.commit().await?;
        Ok(removed)
    }

    /// A page of entries ordered by (value, kind), after the given one.
    pub async fn list_entries(
        &self,
        id: i64,
        after: Option<(&str, &str)>,
        limit: u64,
    ) -> Result<Vec<ListEntry>, DbErr> {
        let mut values: Vec<Value> = vec![id.into()];
        let mut sql = "SELECT kind, value FROM audience_list_entries WHERE list_id = ?".to_string();
        if let Some((kind, value)) = after {
            sql.push_str(" AND (value > ? OR (value = ? AND kind > ?))");
            values.extend([value.into(), value.into(), kind.into()]);
        }
        sql.push_str(" ORDER BY value, kind LIMIT ?");
        values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
        let rows = self.query_all(&sql, values).await?;
        rows.iter()
            .map(|r| {
                Ok(ListEntry {
                    kind: r.try_get("", "kind")?,
                    value: r.try_get("", "value")?,
                })
            })
            .collect()
    }

    /// The lists a source may use: global ones and its own.
    pub async fn lists_for_source(&self, source_id: i64) -> Result<Vec<ListRef>, DbErr> {
        let rows = self
            .query_all(
                "SELECT id, kind, applies_always FROM audience_lists WHERE source_id IS NULL OR source_id = ?",
                vec![source_id.into()],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let kind: String = r.try_get("", "kind")?;
            if let Some(kind) = ListKind::parse(&kind) {
                out.push(ListRef {
                    id: r.try_get("", "id")?,
                    kind,
                    always: r.try_get("", "applies_always")?,
                });
            }
        }
        Ok(out)
    }
}

/// A source's stored filter settings; NULL means none.
pub fn parse_source_filters(text: Option<String>) -> Result<SourceFilters, DbErr> {
    match text {
        None => Ok(SourceFilters::default()),
        Some(t) => serde_json::from_str(&t)
            .map_err(|e| DbErr::Custom(format!("stored source filters: {e}"))),
    }
}
