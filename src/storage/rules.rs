//! Stored sending rules (`/api/rules`).

use sea_orm::{DbErr, QueryResult};
use serde_json::Value;

use super::{Db, now_ms};
use crate::domain::rules::{self, RuleDef};

#[derive(Debug, Clone, PartialEq)]
pub struct RuleRow {
    pub id: i64,
    pub name: String,
    pub def: RuleDef,
    pub created_at: i64,
    pub updated_at: i64,
}

fn row(r: &QueryResult) -> Result<RuleRow, DbErr> {
    let text: String = r.try_get("", "definition")?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| DbErr::Custom(format!("stored rule definition: {e}")))?;
    let def =
        rules::parse_stored(&value).map_err(|e| DbErr::Custom(format!("stored rule: {e}")))?;
    Ok(RuleRow {
        id: r.try_get("", "id")?,
        name: r.try_get("", "name")?,
        def,
        created_at: r.try_get("", "created_at")?,
        updated_at: r.try_get("", "updated_at")?,
    })
}

const COLUMNS: &str = "id, name, definition, created_at, updated_at";

impl Db {
    pub async fn create_rule(&self, name: &str, def: &RuleDef) -> Result<RuleRow, DbErr> {
        let now = now_ms();
        let r = self
            .query_one_rw(
                &format!(
                    "INSERT INTO rules (name, kind, definition, created_at, updated_at) \
                     VALUES (?, ?, ?, ?, ?) RETURNING {COLUMNS}"
                ),
                vec![
                    name.into(),
                    def.kind().into(),
                    def.to_json().to_string().into(),
                    now.into(),
                    now.into(),
                ],
            )
            .await?
            .ok_or(DbErr::RecordNotInserted)?;
        row(&r)
    }

    pub async fn rule(&self, id: i64) -> Result<Option<RuleRow>, DbErr> {
        self.query_one(
            &format!("SELECT {COLUMNS} FROM rules WHERE id = ?"),
            vec![id.into()],
        )
        .await?
        .as_ref()
        .map(row)
        .transpose()
    }

    pub async fn list_rules(&self) -> Result<Vec<RuleRow>, DbErr> {
        self.query_all(&format!("SELECT {COLUMNS} FROM rules ORDER BY id"), vec![])
            .await?
            .iter()
            .map(row)
            .collect()
    }

    /// Replace a rule's name and definition; `None` when it does not exist.
    pub async fn update_rule(
        &self,
        id: i64,
        name: &str,
        def: &RuleDef,
    ) -> Result<Option<RuleRow>, DbErr> {
        self.query_one_rw(
            &format!(
                "UPDATE rules SET name = ?, kind = ?, definition = ?, updated_at = ? WHERE id = ? \
                 RETURNING {COLUMNS}"
            ),
            vec![
                name.into(),
                def.kind().into(),
                def.to_json().to_string().into(),
                now_ms().into(),
                id.into(),
            ],
        )
        .await?
        .as_ref()
        .map(row)
        .transpose()
    }

    /// Delete a rule. Messages already accepted keep the chain they were planned with.
    pub async fn delete_rule(&self, id: i64) -> Result<bool, DbErr> {
        Ok(self
            .execute("DELETE FROM rules WHERE id = ?", vec![id.into()])
            .await?
            > 0)
    }
}
