//! `deliveries_sms_serial`: SMS deliveries by the provider's id for the number. Tencent SMS
//! status callbacks name a delivery by its `SerialNo` (`sid`) alone, with no msgid, so the
//! receipt endpoint looks deliveries up by `(channel_id, provider_id)`. The index is partial:
//! only `sms` rows pay for it, not the push and webhook deliveries of a broadcast.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0009_sms_serial_index"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(
            manager,
            &[
                "CREATE INDEX deliveries_sms_serial ON deliveries (channel_id, provider_id) \
               WHERE channel_type = 'sms'",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(manager, &["DROP INDEX IF EXISTS deliveries_sms_serial"]).await
    }
}
