//! Users, tags and bindings, written in bulk: one transaction per API call and multi-row
//! statements, so seeding a million users takes seconds, not hours.

use msghub_actors::provider::ChannelType;
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbErr, TransactionTrait, Value};

use super::{Db, in_list, now_ms, value_rows};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Add,
    Set,
    Del,
}

/// One user's changes from `/v1/user/opt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserOp {
    pub userid: String,
    pub kind: OpKind,
    /// Tags named in the operation; `None` when the operation does not mention tags.
    pub tags: Option<Vec<String>>,
    /// Bindings named per channel type: (type, bind key, addresses).
    pub bindings: Vec<(ChannelType, String, Vec<String>)>,
}

const ROWS_PER_STATEMENT: usize = 500;

impl Db {
    /// Apply every operation in one transaction.
    pub async fn apply_user_ops(&self, ops: &[UserOp]) -> Result<(), DbErr> {
        let txn = self.write().begin().await?;
        let now = now_ms();
        let creating: Vec<&str> = ops
            .iter()
            .filter(|op| op.kind != OpKind::Del)
            .map(|op| op.userid.as_str())
            .collect();
        for chunk in creating.chunks(ROWS_PER_STATEMENT) {
            let values: Vec<Value> = chunk
                .iter()
                .flat_map(|u| [(*u).into(), now.into()])
                .collect();
            let sql = format!(
                "INSERT INTO users (userid, created_at) VALUES {} ON CONFLICT (userid) DO NOTHING",
                value_rows(chunk.len(), 2)
            );
            txn.execute_raw(self.stmt(&sql, values)).await?;
        }
        let mut tag_rows: Vec<(String, String)> = Vec::new();
        let mut binding_rows: Vec<(String, &'static str, String, String)> = Vec::new();
        for op in ops {
            if op.kind != OpKind::Add && (!tag_rows.is_empty() || !binding_rows.is_empty()) {
                // Operations apply in request order: rows added by earlier operations are
                // written before this one deletes anything.
                self.insert_rows(&txn, &mut tag_rows, &mut binding_rows)
                    .await?;
            }
            match op.kind {
                OpKind::Del => self.delete_named(&txn, op).await?,
                OpKind::Set => {
                    if op.tags.is_some() {
                        let sql = "DELETE FROM user_tags WHERE userid = ?";
                        txn.execute_raw(self.stmt(sql, vec![op.userid.clone().into()]))
                            .await?;
                    }
                    for (kind, _, _) in &op.bindings {
                        let sql = "DELETE FROM bindings WHERE userid = ? AND channel_type = ?";
                        txn.execute_raw(
                            self.stmt(sql, vec![op.userid.clone().into(), kind.code().into()]),
                        )
                        .await?;
                    }
                }
                OpKind::Add => {}
            }
            if op.kind != OpKind::Del {
                for tag in op.tags.iter().flatten() {
                    tag_rows.push((tag.clone(), op.userid.clone()));
                }
                for (kind, key, addresses) in &op.bindings {
                    for address in addresses {
                        binding_rows.push((
                            op.userid.clone(),
                            kind.code(),
                            address.clone(),
                            key.clone(),
                        ));
                    }
                }
            }
        }
        self.insert_rows(&txn, &mut tag_rows, &mut binding_rows)
            .await?;
        txn.commit().await
    }

    async fn insert_rows(
        &self,
        txn: &DatabaseTransaction,
        tag_rows: &mut Vec<(String, String)>,
        binding_rows: &mut Vec<(String, &'static str, String, String)>,
    ) -> Result<(), DbErr> {
        for chunk in tag_rows.chunks(ROWS_PER_STATEMENT) {
            let values: Vec<Value> = chunk
                .iter()
                .flat_map(|(t, u)| [t.clone().into(), u.clone().into()])
                .collect();
            let sql = format!(
                "INSERT INTO user_tags (tag, userid) VALUES {} ON CONFLICT (tag, userid) DO NOTHING",
                value_rows(chunk.len(), 2)
            );
            txn.execute_raw(self.stmt(&sql, values)).await?;
        }
        for chunk in binding_rows.chunks(ROWS_PER_STATEMENT) {
            let values: Vec<Value> = chunk
                .iter()
                .flat_map(|(u, t, a, k)| {
                    [
                        u.clone().into(),
                        (*t).into(),
                        a.clone().into(),
                        k.clone().into(),
                    ]
                })
                .collect();
            let sql = format!(
                "INSERT INTO bindings (userid, channel_type, address, bind_key) VALUES {} \
                 ON CONFLICT (userid, channel_type, address) DO NOTHING",
                value_rows(chunk.len(), 4)
            );
            txn.execute_raw(self.stmt(&sql, values)).await?;
        }
        tag_rows.clear();
        binding_rows.clear();
        Ok(())
    }

    /// Delete the tags and bindings an operation names. An operation may name any number of
    /// them (the body's size is the only bound), so the lists go in chunks: one statement
    /// takes at most 32 766 parameters on SQLite and 65 535 on Postgres.
    async fn delete_named(&self, txn: &DatabaseTransaction, op: &UserOp) -> Result<(), DbErr> {
        for chunk in op
            .tags
            .iter()
            .flatten()
            .collect::<Vec<_>>()
            .chunks(ROWS_PER_STATEMENT)
        {
            let sql = format!(
                "DELETE FROM user_tags WHERE userid = ? AND tag IN ({})",
                in_list(chunk.len())
            );
            let mut values: Vec<Value> = vec![op.userid.clone().into()];
            values.extend(chunk.iter().map(|t| Value::from((*t).clone())));
            txn.execute_raw(self.stmt(&sql, values)).await?;
        }
        for (kind, _, addresses) in &op.bindings {
            let scope: Vec<Value> = vec![op.userid.clone().into(), kind.code().into()];
            if addresses.is_empty() {
                let sql = "DELETE FROM bindings WHERE userid = ? AND channel_type = ?";
                txn.execute_raw(self.stmt(sql, scope)).await?;
                continue;
            }
            for chunk in addresses.chunks(ROWS_PER_STATEMENT) {
                let sql = format!(
                    "DELETE FROM bindings WHERE userid = ? AND channel_type = ? AND address IN ({})",
                    in_list(chunk.len())
                );
                let mut values = scope.clone();
                values.extend(chunk.iter().map(|a| Value::from(a.clone())));
                txn.execute_raw(self.stmt(&sql, values)).await?;
            }
        }
        Ok(())
    }

    /// Delete users with their tags and bindings; returns how many users existed.
    pub async fn delete_users(&self, userids: &[String]) -> Result<u64, DbErr> {
        let txn = self.write().begin().await?;
        let mut deleted = 0;
        for chunk in userids.chunks(ROWS_PER_STATEMENT) {
            let values: Vec<Value> = chunk.iter().map(|u| Value::from(u.clone())).collect();
            let list = in_list(chunk.len());
            for table in ["user_tags", "bindings"] {
                let sql = format!("DELETE FROM {table} WHERE userid IN ({list})");
                txn.execute_raw(self.stmt(&sql, values.clone())).await?;
            }
            let sql = format!("DELETE FROM users WHERE userid IN ({list})");
            deleted += txn
                .execute_raw(self.stmt(&sql, values))
                .await?
                .rows_affected();
        }
        txn.commit().await?;
        Ok(deleted)
    }
}
