//! Suppressed addresses: a channel address the provider called gone (an invalid registration
//! id, a mobile number the carrier refuses, a mailbox that does not exist, a WeChat user who
//! unsubscribed or blocked the account's messages), or an operator suppressed by hand. Audience
//! resolution skips bound addresses found here, so a user is not sent to — nor billed for — an
//! address that cannot be reached; a fallback chain moves such a user on at once, as it does a
//! user without a binding. The business's bindings stay as given: lifting a suppression
//! (`DELETE /api/suppressions`, or a WeChat `subscribe` event) makes the binding usable again.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0010_suppressions"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(
            manager,
            &[
                "CREATE TABLE suppressions (channel_type VARCHAR(32) NOT NULL, \
                 address VARCHAR(256) NOT NULL, reason VARCHAR(16) NOT NULL, code VARCHAR(64), \
                 channel_id BIGINT, message_id BIGINT, created_at BIGINT NOT NULL, \
                 PRIMARY KEY (channel_type, address))",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(manager, &["DROP TABLE IF EXISTS suppressions"]).await
    }
}
