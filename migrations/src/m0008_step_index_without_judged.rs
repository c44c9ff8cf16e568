//! `deliveries_step` without `judged`: a fallback firing marks every user of a shard's step it
//! judged (`UPDATE deliveries SET judged = 1`), and with `judged` in the index each of those
//! rows cost an index entry deleted and one inserted. The firing reads a step's rows from the
//! table anyway (it needs `sent_at` and `status`), so `(message_id, shard_seq, step)` finds
//! them as well, and the judgement becomes a plain row update.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0008_step_index_without_judged"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(
            manager,
            &[
                "DROP INDEX IF EXISTS deliveries_step",
                "CREATE INDEX deliveries_step ON deliveries (message_id, shard_seq, step)",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(
            manager,
            &[
                "DROP INDEX IF EXISTS deliveries_step",
                "CREATE INDEX deliveries_step ON deliveries (message_id, shard_seq, step, judged)",
            ],
        )
        .await
    }
}
