//! Mini-program subscribe send results (`subscribe_msg_sent_event`) name their delivery by the
//! send's `MsgID` alone, as WeChat template events do: the same partial index for `wechatmp`
//! deliveries, so a receipt finds its delivery without a scan.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0013_miniprogram_msgid_index"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(
            manager,
            &[
                "CREATE INDEX deliveries_wechatmp_msgid ON deliveries (channel_id, provider_id) \
               WHERE channel_type = 'wechatmp' AND provider_id IS NOT NULL",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(manager, &["DROP INDEX IF EXISTS deliveries_wechatmp_msgid"]).await
    }
}
