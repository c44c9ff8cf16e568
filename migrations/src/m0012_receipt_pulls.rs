//! Sends whose receipts are asked for (DingTalk work notices: `getsendresult` per `task_id`).
//! A row per accepted provider call, written with the outcomes that name it: how many
//! deliveries it carried, when it is next asked about and how often it was. The receipt
//! poller deletes a row once every delivery of it is settled (read, or not reached), or once
//! the provider's report window has passed.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0012_receipt_pulls"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(
            manager,
            &[
                "CREATE TABLE receipt_pulls (channel_id BIGINT NOT NULL, \
                 provider_id VARCHAR(128) NOT NULL, message_id BIGINT NOT NULL, \
                 targets INTEGER NOT NULL, created_at BIGINT NOT NULL, \
                 next_at BIGINT NOT NULL, pulls INTEGER NOT NULL, \
                 PRIMARY KEY (channel_id, provider_id))",
                "CREATE INDEX receipt_pulls_due ON receipt_pulls (next_at)",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(manager, &["DROP TABLE IF EXISTS receipt_pulls"]).await
    }
}
