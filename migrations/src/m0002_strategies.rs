//! Strategies and receipts: stored rules, fallback timers (one row per shard and step, with a
//! persisted deadline), and the delivery columns fallback chains and receipts need.

use sea_orm_migration::prelude::*;

use crate::id_column;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0002_strategies"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let id = id_column(manager.get_database_backend());
        let statements = [
            format!(
                "CREATE TABLE rules ({id}, name VARCHAR(200) NOT NULL, kind VARCHAR(16) NOT NULL, \
                 definition TEXT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)"
            ),
            "CREATE TABLE fallback_timers (message_id BIGINT NOT NULL, shard_seq INTEGER NOT NULL, \
             step SMALLINT NOT NULL, due_at BIGINT NOT NULL, PRIMARY KEY (message_id, shard_seq, step))"
                .to_string(),
            "CREATE INDEX fallback_timers_due ON fallback_timers (due_at)".to_string(),
            // When the delivery was created and when its provider call's outcome was recorded
            // (a fallback step's wait counts from there), and whether the chain has already
            // decided about this delivery's user at its step.
            "ALTER TABLE deliveries ADD COLUMN created_at BIGINT NOT NULL DEFAULT 0".to_string(),
            "ALTER TABLE deliveries ADD COLUMN sent_at BIGINT".to_string(),
            "ALTER TABLE deliveries ADD COLUMN judged SMALLINT NOT NULL DEFAULT 0".to_string(),
            "ALTER TABLE deliveries ADD COLUMN receipt_at BIGINT".to_string(),
            // Bumped whenever a fallback timer queues more work on a shard, so a worker that
            // opened an older generation cannot mark the newer work done.
            "ALTER TABLE shards ADD COLUMN generation INTEGER NOT NULL DEFAULT 0".to_string(),
            "CREATE INDEX deliveries_step ON deliveries (message_id, shard_seq, step, judged)"
                .to_string(),
        ];
        crate::run(manager, &statements).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(
            manager,
            &[
                "DROP INDEX IF EXISTS deliveries_step",
                "ALTER TABLE shards DROP COLUMN generation",
                "ALTER TABLE deliveries DROP COLUMN receipt_at",
                "ALTER TABLE deliveries DROP COLUMN judged",
                "ALTER TABLE deliveries DROP COLUMN sent_at",
                "ALTER TABLE deliveries DROP COLUMN created_at",
                "DROP TABLE IF EXISTS fallback_timers",
                "DROP TABLE IF EXISTS rules",
            ],
        )
        .await
    }
}
