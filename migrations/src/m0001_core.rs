//! The core schema: sources, channels, grants, users, tags, bindings, messages, shards and
//! deliveries. Times are unix milliseconds (BIGINT) so both backends compare them the same way.

use sea_orm_migration::prelude::*;

use crate::id_column;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0001_core"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let id = id_column(manager.get_database_backend());
        let statements = [
            "CREATE TABLE settings (name VARCHAR(64) PRIMARY KEY, value TEXT NOT NULL)".to_string(),
            format!(
                "CREATE TABLE sources ({id}, source_key VARCHAR(64) NOT NULL UNIQUE, \
                 secret_hash VARCHAR(128) NOT NULL, name VARCHAR(200) NOT NULL, \
                 enabled BOOLEAN NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)"
            ),
            format!(
                "CREATE TABLE channels ({id}, channel_type VARCHAR(32) NOT NULL, \
                 name VARCHAR(200) NOT NULL, credentials TEXT NOT NULL, \
                 rate_per_second INTEGER NOT NULL, enabled BOOLEAN NOT NULL, \
                 created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)"
            ),
            "CREATE TABLE grants (source_id BIGINT NOT NULL, channel_id BIGINT NOT NULL, \
             created_at BIGINT NOT NULL, PRIMARY KEY (source_id, channel_id))"
                .to_string(),
            "CREATE TABLE users (userid VARCHAR(64) PRIMARY KEY, created_at BIGINT NOT NULL)"
                .to_string(),
            "CREATE TABLE user_tags (tag VARCHAR(64) NOT NULL, userid VARCHAR(64) NOT NULL, \
             PRIMARY KEY (tag, userid))"
                .to_string(),
            "CREATE INDEX user_tags_userid ON user_tags (userid)".to_string(),
            "CREATE TABLE bindings (userid VARCHAR(64) NOT NULL, channel_type VARCHAR(32) NOT NULL, \
             address VARCHAR(256) NOT NULL, bind_key VARCHAR(64) NOT NULL, \
             PRIMARY KEY (userid, channel_type, address))"
                .to_string(),
            "CREATE INDEX bindings_type_user ON bindings (channel_type, userid)".to_string(),
            "CREATE TABLE messages (id BIGINT PRIMARY KEY, source_id BIGINT NOT NULL, \
             kind VARCHAR(16) NOT NULL, priority SMALLINT NOT NULL, lane VARCHAR(16) NOT NULL, \
             state VARCHAR(16) NOT NULL, plan TEXT NOT NULL, sendno VARCHAR(128), \
             idempotency_key VARCHAR(128), response TEXT NOT NULL, planned BOOLEAN NOT NULL, \
             plan_cursor VARCHAR(64), shard_count INTEGER NOT NULL, \
             created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)"
                .to_string(),
            "CREATE UNIQUE INDEX messages_idempotency ON messages (source_id, idempotency_key)"
                .to_string(),
            "CREATE INDEX messages_state ON messages (state, id)".to_string(),
            "CREATE TABLE shards (message_id BIGINT NOT NULL, seq INTEGER NOT NULL, \
             spec TEXT NOT NULL, state VARCHAR(16) NOT NULL, updated_at BIGINT NOT NULL, \
             PRIMARY KEY (message_id, seq))"
                .to_string(),
            "CREATE INDEX shards_state ON shards (state, message_id)".to_string(),
            format!(
                "CREATE TABLE deliveries ({id}, message_id BIGINT NOT NULL, shard_seq INTEGER NOT NULL, \
                 channel_id BIGINT NOT NULL, channel_type VARCHAR(32) NOT NULL, userid VARCHAR(64), \
                 address VARCHAR(256) NOT NULL, step SMALLINT NOT NULL, status SMALLINT NOT NULL, \
                 attempts INTEGER NOT NULL, outcome VARCHAR(16), code VARCHAR(64), \
                 provider_id VARCHAR(128), error VARCHAR(512), updated_at BIGINT NOT NULL)"
            ),
            "CREATE UNIQUE INDEX deliveries_once ON deliveries (message_id, channel_id, address)"
                .to_string(),
            "CREATE INDEX deliveries_shard ON deliveries (message_id, shard_seq, status)".to_string(),
            "CREATE INDEX deliveries_user ON deliveries (message_id, userid)".to_string(),
        ];
        crate::run(manager, &statements).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for table in [
            "deliveries",
            "shards",
            "messages",
            "bindings",
            "user_tags",
            "users",
            "grants",
            "channels",
            "sources",
            "settings",
        ] {
            db.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}"))
                .await?;
        }
        Ok(())
    }
}
