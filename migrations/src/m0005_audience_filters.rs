//! Audience filters: black- and whitelists with their entries, dedup keys and frequency
//! counters (both with an expiry), and per-source filter settings. The not-before time that
//! keeps a priority-3 message waiting through quiet hours is `messages.not_before`, added by
//! m0004_schedule.

use sea_orm_migration::prelude::*;

use crate::id_column;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0005_audience_filters"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let id = id_column(manager.get_database_backend());
        let statements = [
            // kind: 'black' or 'white'; source_id NULL = global; applies_always: used by every
            // send of its source (or of every source, when global) without option.black_id.
            format!(
                "CREATE TABLE audience_lists ({id}, name VARCHAR(200) NOT NULL, kind VARCHAR(8) NOT NULL, \
                 source_id BIGINT, applies_always BOOLEAN NOT NULL, \
                 created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)"
            ),
            "CREATE INDEX audience_lists_source ON audience_lists (source_id)".to_string(),
            // kind: 'userid' or 'address'. Keyed by value first: a shard looks up all its
            // userids and addresses at once.
            "CREATE TABLE audience_list_entries (list_id BIGINT NOT NULL, value VARCHAR(256) NOT NULL, \
             kind VARCHAR(8) NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (list_id, value, kind))"
                .to_string(),
            // dedup_key: hash of (target, channel type, content hash).
            "CREATE TABLE dedup_keys (source_id BIGINT NOT NULL, dedup_key VARCHAR(64) NOT NULL, \
             expires_at BIGINT NOT NULL, PRIMARY KEY (source_id, dedup_key))"
                .to_string(),
            "CREATE INDEX dedup_keys_expiry ON dedup_keys (expires_at)".to_string(),
            // target_key: hash of (target, channel type); local_day: days since 1970 in the
            // source's caps offset.
            "CREATE TABLE frequency_counts (source_id BIGINT NOT NULL, local_day BIGINT NOT NULL, \
             target_key VARCHAR(64) NOT NULL, n INTEGER NOT NULL, \
             PRIMARY KEY (source_id, local_day, target_key))"
                .to_string(),
            // JSON: {"dedup_window_seconds", "caps", "day_utc_offset"}; NULL = none.
            "ALTER TABLE sources ADD COLUMN filters TEXT".to_string(),
            // messages.not_before (quiet hours) is added by m0004_schedule, shared with
            // scheduled sends.
        ];
        let db = manager.get_connection();
        for sql in statements {
            db.execute_unprepared(&sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for sql in [
            "ALTER TABLE sources DROP COLUMN filters",
            "DROP TABLE IF EXISTS frequency_counts",
            "DROP INDEX IF EXISTS dedup_keys_expiry",
            "DROP TABLE IF EXISTS dedup_keys",
            "DROP TABLE IF EXISTS audience_list_entries",
            "DROP INDEX IF EXISTS audience_lists_source",
            "DROP TABLE IF EXISTS audience_lists",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}
