//! Soft bounces per email address: a delivery status notification that says a message failed
//! without saying the mailbox is gone (a full mailbox, a domain that could not be reached
//! before the sending server gave up) is counted here. An address that keeps bouncing that way
//! (`bounces.soft_limit` bounces, each within `bounces.soft_window_days` of the one before) is
//! suppressed as gone; a bounce after a longer quiet spell starts the count again.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0011_soft_bounces"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(
            manager,
            &[
                "CREATE TABLE soft_bounces (address VARCHAR(256) NOT NULL PRIMARY KEY, \
               bounces INTEGER NOT NULL, last_delivery_id BIGINT NOT NULL, \
               last_at BIGINT NOT NULL)",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(manager, &["DROP TABLE IF EXISTS soft_bounces"]).await
    }
}
