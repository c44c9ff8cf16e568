//! Status callbacks: the verified callback URLs of each source (at most five, the oldest is the
//! default) and the source secret kept encrypted, since signing a callback needs it in clear.

use sea_orm_migration::prelude::*;

use crate::id_column;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0003_callbacks"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let id = id_column(manager.get_database_backend());
        let statements = [
            format!(
                "CREATE TABLE source_callback_urls ({id}, source_id BIGINT NOT NULL, \
                 url VARCHAR(512) NOT NULL, created_at BIGINT NOT NULL)"
            ),
            "CREATE UNIQUE INDEX source_callback_urls_once ON source_callback_urls (source_id, url)"
                .to_string(),
            // Nullable: sources created before this column hold only the secret's hash, and
            // cannot sign callbacks until their secret is rotated.
            "ALTER TABLE sources ADD COLUMN secret_enc TEXT".to_string(),
        ];
        crate::run(manager, &statements).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(
            manager,
            &[
                "ALTER TABLE sources DROP COLUMN secret_enc",
                "DROP INDEX IF EXISTS source_callback_urls_once",
                "DROP TABLE IF EXISTS source_callback_urls",
            ],
        )
        .await
    }
}
