//! Scheduled sends: a message with a future `option.send_at` is stored in state `scheduled` with
//! the time it may be sent (`not_before`, unix ms), which the scheduler polls by index. Quiet
//! hours (m0005) use the same column to keep an accepted message waiting.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0004_schedule"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(
            manager,
            &[
                // NULL for messages sent at once.
                "ALTER TABLE messages ADD COLUMN not_before BIGINT",
                "CREATE INDEX messages_schedule ON messages (state, not_before)",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(
            manager,
            &[
                "DROP INDEX IF EXISTS messages_schedule",
                "ALTER TABLE messages DROP COLUMN not_before",
            ],
        )
        .await
    }
}
