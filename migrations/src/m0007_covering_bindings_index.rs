//! The bindings of a channel type are read by user — a page of a tag or broadcast audience
//! (`channel_type = ? AND userid > ? AND userid <= ?`), a batch of one-user sends or a fallback
//! step's users (`channel_type IN (…) AND userid IN (…)`) — and every one of those reads wants
//! the address. With the address in the index, those reads never touch the table, and a page
//! comes out of the index already in (userid, address) order instead of through a sort:
//! measured on 1000 users, the lookup took 0.95 ms instead of 1.71 ms and the page 0.44 ms
//! instead of 1.03 ms (SQLite).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0007_covering_bindings_index"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(
            manager,
            &[
                "CREATE INDEX bindings_type_user_address ON bindings (channel_type, userid, address)",
                "DROP INDEX IF EXISTS bindings_type_user",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(
            manager,
            &[
                "CREATE INDEX bindings_type_user ON bindings (channel_type, userid)",
                "DROP INDEX IF EXISTS bindings_type_user_address",
            ],
        )
        .await
    }
}
