//! Deliveries by the provider's id, for receipts that carry no msgid: Tencent SMS status
//! callbacks name a delivery by its `SerialNo` (`sid`) alone, WeChat `TEMPLATESENDJOBFINISH`
//! events by the template send's `MsgID` (and the openid). The receipt endpoint looks such
//! deliveries up by `(channel_id, provider_id)`. The indexes are partial: only `sms` and
//! `wechatoa` rows the provider accepted (with an id) pay for them, not the push and webhook
//! deliveries of a broadcast, nor rows still queued.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0009_receipt_id_indexes"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(
            manager,
            &[
                "CREATE INDEX deliveries_sms_serial ON deliveries (channel_id, provider_id) \
                 WHERE channel_type = 'sms' AND provider_id IS NOT NULL",
                "CREATE INDEX deliveries_wechat_msgid ON deliveries (channel_id, provider_id) \
                 WHERE channel_type = 'wechatoa' AND provider_id IS NOT NULL",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(
            manager,
            &[
                "DROP INDEX IF EXISTS deliveries_sms_serial",
                "DROP INDEX IF EXISTS deliveries_wechat_msgid",
            ],
        )
        .await
    }
}
