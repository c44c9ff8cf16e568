//! One index fewer on `deliveries`, the hottest table: `deliveries_shard (message_id,
//! shard_seq, status)` was maintained on every status change (outcomes, receipts) but no hot
//! query needs it — a shard's deliveries are found through `deliveries_step (message_id,
//! shard_seq, step, judged)`, and the rare whole-message status scans (retract, counts) go
//! through `deliveries_once (message_id, ...)`.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0006_lean_delivery_indexes"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(manager, &["DROP INDEX IF EXISTS deliveries_shard"]).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(
            manager,
            &["CREATE INDEX deliveries_shard ON deliveries (message_id, shard_seq, status)"],
        )
        .await
    }
}
