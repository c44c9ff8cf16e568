//! Receipts applied to deliveries: provider callbacks (JPush, Aliyun SmsReport, Tencent SMS
//! status, WeChat template events) and client events, many requests per transaction.
//!
//! A receipt names its delivery by (message, channel, address), the delivery's unique key.
//! Receipts that match no delivery, such as another channel's message or an unknown id, are
//! counted and never applied. States only move forward: `clicked` implies delivered, and a
//! `delivered` after a click, or a duplicate, changes nothing.

use std::collections::{HashMap, HashSet};

use msghub_actors::plan::DeliveryStatus;
use msghub_actors::provider::ChannelType;
use sea_orm::{ConnectionTrait, DatabaseBackend, DbErr, TransactionTrait, Value};

use super::suppressions::{SuppressReason, count_added, suppress_deliveries};
use super::{Db, now_ms, repeat_last_row, value_rows};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReceiptKind {
    Delivered,
    Undelivered,
    Clicked,
}

impl ReceiptKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptKind::Delivered => "delivered",
            ReceiptKind::Undelivered => "undelivered",
            ReceiptKind::Clicked => "clicked",
        }
    }

    /// The delivery status after this receipt, or `None` when it changes nothing.
    fn next(self, current: DeliveryStatus) -> Option<DeliveryStatus> {
        use DeliveryStatus::*;
        let next = match (self, current) {
            // Stopped before it was sent, or withdrawn: a late receipt changes nothing.
            (_, Retracted) => return None,
            (ReceiptKind::Clicked, Clicked) => return None,
            (ReceiptKind::Clicked, _) => Clicked,
            (ReceiptKind::Delivered, Delivered | Clicked) => return None,
            (ReceiptKind::Delivered, _) => Delivered,
            // A late "not delivered" never undoes a delivery or a click.
            (ReceiptKind::Undelivered, Delivered | Clicked | Undelivered) => return None,
            (ReceiptKind::Undelivered, _) => Undelivered,
        };
        Some(next)
    }
}

/// One receipt, naming its delivery by (message, channel, address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub msgid: i64,
    pub channel_id: i64,
    pub address: String,
    pub kind: ReceiptKind,
    /// When it happened, as the provider says (unix ms).
    pub at_ms: i64,
    /// The provider's code for a failure (`UNDELIV`, ...).
    pub code: Option<String>,
    /// The receipt also says the address is not to be sent to again (a WeChat user who
    /// blocked the account's messages): applied with the receipt, when it names a delivery.
    pub suppress: Option<SuppressReason>,
}

/// What happened to one request's receipts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiptCounts {
    pub applied: u64,
    /// Matched a delivery but changed nothing (a repeat, or older than its state).
    pub duplicate: u64,
    /// Matched no delivery of this channel: rejected.
    pub unknown: u64,
}

/// The channel types whose receipts name deliveries by provider id, as the literal their
/// partial index is built on.
fn provider_id_kind(channel_type: ChannelType) -> Option<&'static str> {
    match channel_type {
        ChannelType::Sms => Some("sms"),
        ChannelType::Wechatoa => Some("wechatoa"),
        ChannelType::Wechatmp => Some("wechatmp"),
        _ => None,
    }
}

/// The lookup of `rows` provider ids. The channel type is a literal, not a parameter, so the
/// planner sees the partial index's predicate hold (`deliveries_sms_serial`,
/// `deliveries_wechat_msgid`).
fn by_provider_id_sql(kind: &str, rows: usize) -> String {
    format!(
        "SELECT provider_id, message_id, address FROM deliveries \
         WHERE channel_type = '{kind}' AND provider_id IS NOT NULL AND channel_id = ? \
         AND provider_id IN ({})",
        super::in_list(rows)
    )
}

/// A delivery a receipt changed, for status callbacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub msgid: i64,
    pub userid: Option<String>,
    pub channel_type: String,
    pub address: String,
    pub status: DeliveryStatus,
    pub code: Option<String>,
    pub at_ms: i64,
}

struct Matched {
    id: i64,
    status: DeliveryStatus,
    userid: Option<String>,
    channel_type: String,
}

impl Db {
    /// The channel and address of email delivery `delivery_id` of message `msgid` (a bounce's
    /// return path names both), when it exists.
    pub async fn email_delivery(
        &self,
        msgid: i64,
        delivery_id: i64,
    ) -> Result<Option<(i64, String)>, DbErr> {
        let row = self
            .query_one(
                "SELECT channel_id, address FROM deliveries \
                 WHERE id = ? AND message_id = ? AND channel_type = 'email'",
                vec![delivery_id.into(), msgid.into()],
            )
            .await?;
        row.map(|r| Ok((r.try_get("", "channel_id")?, r.try_get("", "address")?)))
            .transpose()
    }

    /// Apply the receipts of several requests in one transaction; per request, the counts.
    pub async fn apply_receipts(
        &self,
        batches: &[Vec<Receipt>],
    ) -> Result<(Vec<ReceiptCounts>, Vec<Changed>), DbErr> {
        let _bulk = self.bulk_write().await;
        let txn = self.write().begin().await?;
        let all: Vec<&Receipt> = batches.iter().flatten().collect();
        // Current state of every named delivery.
        let mut found: HashMap<(i64, i64, &str), Matched> = HashMap::new();
        for chunk in all.chunks(256) {
            let rows = self.pad_to(chunk.len(), 256);
            // The receipts' own keys, to match rows without a scan of the chunk per row.
            let wanted: HashMap<(i64, i64, &str), &str> = chunk
                .iter()
                .map(|r| {
                    (
                        (r.msgid, r.channel_id, r.address.as_str()),
                        r.address.as_str(),
                    )
                })
                .collect();
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 3);
            for r in chunk {
                values.extend([
                    r.msgid.into(),
                    r.channel_id.into(),
                    r.address.clone().into(),
                ]);
            }
            repeat_last_row(&mut values, 3, rows - chunk.len());
            let sql = format!(
                "SELECT d.id, d.message_id, d.channel_id, d.address, d.status, d.userid, d.channel_type \
                 FROM deliveries d JOIN (VALUES {}) AS v ON d.message_id = v.column1 \
                 AND d.channel_id = v.column2 AND d.address = v.column3",
                value_rows(rows, 3)
            );
            let cols = [
                "id",
                "message_id",
                "channel_id",
                "address",
                "status",
                "userid",
                "channel_type",
            ];
            for row in self.query_packed(&txn, &cols, &sql, values).await? {
                let msgid = row.i64(1)?;
                let channel_id = row.i64(2)?;
                let address = row.string(3)?;
                let status = i16::try_from(row.i64(4)?).unwrap_or(-1);
                if status == DeliveryStatus::Skipped as i16 {
                    // Never sent: a receipt naming it is someone else's.
                    continue;
                }
                let Some(address) = wanted.get(&(msgid, channel_id, address.as_str())) else {
                    continue;
                };
                found.insert(
                    (msgid, channel_id, *address),
                    Matched {
                        id: row.i64(0)?,
                        status: DeliveryStatus::from_i16(status).unwrap_or(DeliveryStatus::Queued),
                        userid: row.opt_string(5)?,
                        channel_type: row.string(6)?,
                    },
                );
            }
        }
        // Receipts apply in request order, so a click after a delivery in the same batch counts.
        let mut counts = Vec::with_capacity(batches.len());
        let mut updates: HashMap<i64, (DeliveryStatus, i64)> = HashMap::new();
        // Each change with its delivery and request, to take back those a concurrent retract
        // made moot.
        let mut changed: Vec<(i64, usize, Changed)> = Vec::new();
        let mut failed_ids = Vec::new();
        let mut suppress: HashMap<(SuppressReason, Option<String>), Vec<i64>> = HashMap::new();
        for (request, batch) in batches.iter().enumerate() {
            let mut c = ReceiptCounts::default();
            for r in batch {
                let Some(m) = found.get_mut(&(r.msgid, r.channel_id, r.address.as_str())) else {
                    c.unknown += 1;
                    continue;
                };
                if let Some(reason) = r.suppress {
                    suppress
                        .entry((reason, r.code.clone()))
                        .or_default()
                        .push(m.id);
                }
                match r.kind.next(m.status) {
                    Some(next) => {
                        c.applied += 1;
                        m.status = next;
                        updates.insert(m.id, (next, r.at_ms));
                        if next == DeliveryStatus::Undelivered {
                            failed_ids.push(m.id);
                        }
                        changed.push((
                            m.id,
                            request,
                            Changed {
                                msgid: r.msgid,
                                userid: m.userid.clone(),
                                channel_type: m.channel_type.clone(),
                                address: r.address.clone(),
                                status: next,
                                code: r.code.clone(),
                                at_ms: r.at_ms,
                            },
                        ));
                    }
                    None => c.duplicate += 1,
                }
            }
            counts.push(c);
        }
        let now = now_ms();
        // Rows are locked in id order, like the outcome writer's: on Postgres the two run
        // concurrently, and opposite orders deadlock.
        let mut updates: Vec<(i64, (DeliveryStatus, i64))> = updates.into_iter().collect();
        updates.sort_unstable_by_key(|(id, _)| *id);
        let mut updated: HashSet<i64> = HashSet::with_capacity(updates.len());
        for chunk in updates.chunks(512) {
            let rows = self.pad_to(chunk.len(), 512);
            let mut values: Vec<Value> = Vec::with_capacity(1 + rows * 3);
            values.push(now.into());
            for (id, (status, at)) in chunk {
                values.extend([(*id).into(), (*status as i16).into(), (*at).into()]);
            }
            repeat_last_row(&mut values, 3, rows - chunk.len());
            let sql = format!(
                "UPDATE deliveries SET updated_at = ?, status = v.column2, receipt_at = v.column3 \
                 FROM (VALUES {}) AS v WHERE deliveries.id = v.column1",
                value_rows(rows, 3)
            );
            if self.backend() != DatabaseBackend::Postgres {
                // One writer: nothing changed the rows since they were read.
                txn.execute_raw(self.stmt(&sql, values)).await?;
                continue;
            }
            // On Postgres a retract's recall (`mark_recalled`) may have committed beside this
            // transaction since the rows were read: a delivery retracted meanwhile stays
            // retracted, and its receipt is taken back below.
            let sql = format!(
                "{sql} AND deliveries.status <> {} RETURNING deliveries.id",
                DeliveryStatus::Retracted as i16
            );
            for row in txn.query_all_raw(self.stmt(&sql, values)).await? {
                updated.insert(row.try_get::<i64>("", "id")?);
            }
        }
        if self.backend() == DatabaseBackend::Postgres {
            let moot: HashSet<i64> = updates
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| !updated.contains(id))
                .collect();
            // The suppressions stand: what the receipt says of the address holds whatever
            // became of this delivery.
            if !moot.is_empty() {
                failed_ids.retain(|id| !moot.contains(id));
                for (id, request, _) in &changed {
                    if moot.contains(id)
                        && let Some(c) = counts.get_mut(*request)
                    {
                        c.applied = c.applied.saturating_sub(1);
                        c.duplicate += 1;
                    }
                }
                changed.retain(|(id, _, _)| !moot.contains(id));
            }
        }
        let changed: Vec<Changed> = changed.into_iter().map(|(_, _, c)| c).collect();
        // "Not delivered" moves a fallback user on at once, like a permanent failure.
        super::dispatch::bring_timers_forward(self, &txn, &failed_ids, now).await?;
        let mut suppressed = Vec::new();
        for ((reason, code), ids) in &suppress {
            let n = suppress_deliveries(self, &txn, ids, *reason, code.as_deref(), now).await?;
            suppressed.push((*reason, n));
        }
        txn.commit().await?;
        for (reason, n) in suppressed {
            count_added(reason, n);
        }
        Ok((counts, changed))
    }

    /// The deliveries of a channel named by the provider's ids, for receipts that carry no
    /// msgid (Tencent SMS `SerialNo`, WeChat template and subscribe `MsgID`): `(provider_id,
    /// msgid, address)` per match, found through the partial indexes `deliveries_sms_serial`,
    /// `deliveries_wechat_msgid` and `deliveries_wechatmp_msgid`. Other channel types have no such receipts and find nothing.
    pub async fn by_provider_id(
        &self,
        channel_type: ChannelType,
        channel_id: i64,
        serials: &[&str],
    ) -> Result<Vec<(String, i64, String)>, DbErr> {
        let Some(kind) = provider_id_kind(channel_type) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(serials.len());
        for chunk in serials.chunks(256) {
            let Some(last) = chunk.last() else {
                continue;
            };
            let rows = self.pad_to(chunk.len(), 256);
            let mut values: Vec<Value> = Vec::with_capacity(rows + 1);
            values.push(channel_id.into());
            values.extend(chunk.iter().map(|s| Value::from(*s)));
            values.extend((chunk.len()..rows).map(|_| Value::from(*last)));
            let sql = by_provider_id_sql(kind, rows);
            let cols = ["provider_id", "message_id", "address"];
            for row in self.query_packed(self.read(), &cols, &sql, values).await? {
                out.push((row.string(0)?, row.i64(1)?, row.string(2)?));
            }
        }
        Ok(out)
    }

    /// The (channel, address) pairs of a user's deliveries of a message on one channel type,
    /// for client events, restricted to messages of `source_id`.
    pub async fn client_event_targets(
        &self,
        source_id: i64,
        msgid: i64,
        userid: &str,
        channel_type: &str,
    ) -> Result<Vec<(i64, String)>, DbErr> {
        let rows = self
            .query_all(
                "SELECT d.channel_id, d.address FROM deliveries d JOIN messages m ON m.id = d.message_id \
                 WHERE d.message_id = ? AND d.userid = ? AND d.channel_type = ? AND m.source_id = ?",
                vec![
                    msgid.into(),
                    userid.into(),
                    channel_type.into(),
                    source_id.into(),
                ],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("", "channel_id")?, r.try_get("", "address")?)))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Provider ids find their SMS and WeChat deliveries on their channel only, through the
    /// partial indexes.
    #[tokio::test]
    async fn deliveries_are_found_by_provider_id_through_the_partial_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::storage::test_sqlite(&dir).await;
        let rows = [
            (1i64, 7i64, "sms", "13800000001", Some("2433:1")),
            (1, 7, "sms", "13800000002", Some("2433:2")),
            (2, 7, "sms", "+8613800000001", Some("2433:3")),
            (1, 7, "sms", "13800000003", None),
            // Another channel's serial, and an app delivery with a look-alike id.
            (1, 8, "sms", "13800000004", Some("2433:4")),
            (1, 9, "app", "reg-1", Some("2433:5")),
            (1, 10, "wechatoa", "oUser0000001", Some("200000001")),
        ];
        for (msgid, channel, kind, address, provider_id) in rows {
            db.execute(
                "INSERT INTO deliveries (message_id, shard_seq, channel_id, channel_type, address, \
                 step, status, attempts, provider_id, updated_at) VALUES (?, 0, ?, ?, ?, 0, 1, 1, ?, 0)",
                vec![
                    msgid.into(),
                    channel.into(),
                    kind.into(),
                    address.into(),
                    provider_id.map(str::to_string).into(),
                ],
            )
            .await
            .unwrap();
        }
        let mut found = db
            .by_provider_id(
                ChannelType::Sms,
                7,
                &["2433:1", "2433:3", "2433:4", "2433:5", "2433:9"],
            )
            .await
            .unwrap();
        found.sort();
        assert_eq!(
            found,
            vec![
                ("2433:1".to_string(), 1, "13800000001".to_string()),
                ("2433:3".to_string(), 2, "+8613800000001".to_string()),
            ]
        );
        assert_eq!(
            db.by_provider_id(ChannelType::Sms, 8, &["2433:4"])
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(
            db.by_provider_id(ChannelType::App, 9, &["2433:5"])
                .await
                .unwrap()
                .is_empty()
        );
        // 300 serials: two statements, each padded.
        let many: Vec<String> = (0..300).map(|i| format!("2433:{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            db.by_provider_id(ChannelType::Sms, 7, &refs)
                .await
                .unwrap()
                .len(),
            3
        );

        let found = db
            .by_provider_id(ChannelType::Wechatoa, 10, &["200000001", "2433:1"])
            .await
            .unwrap();
        assert_eq!(
            found,
            vec![("200000001".to_string(), 1, "oUser0000001".to_string())]
        );
        for (kind, index) in [
            (ChannelType::Sms, "deliveries_sms_serial"),
            (ChannelType::Wechatoa, "deliveries_wechat_msgid"),
            (ChannelType::Wechatmp, "deliveries_wechatmp_msgid"),
        ] {
            // The statement `by_provider_id` runs, at the padded size of a full chunk.
            let sql = by_provider_id_sql(provider_id_kind(kind).unwrap(), 256);
            let mut values: Vec<Value> = vec![7i64.into()];
            values.extend((0..256).map(|i| Value::from(format!("id{i}"))));
            let plan = db
                .query_all(&format!("EXPLAIN QUERY PLAN {sql}"), values)
                .await
                .unwrap();
            let detail: Vec<String> = plan
                .iter()
                .map(|r| r.try_get::<String>("", "detail").unwrap())
                .collect();
            assert!(detail.iter().any(|d| d.contains(index)), "{detail:?}");
        }
    }

    #[test]
    fn receipts_only_move_a_delivery_forward() {
        use DeliveryStatus::*;
        assert_eq!(ReceiptKind::Delivered.next(Submitted), Some(Delivered));
        assert_eq!(ReceiptKind::Delivered.next(Queued), Some(Delivered));
        assert_eq!(ReceiptKind::Delivered.next(Delivered), None);
        assert_eq!(ReceiptKind::Delivered.next(Clicked), None);
        assert_eq!(ReceiptKind::Clicked.next(Submitted), Some(Clicked));
        assert_eq!(ReceiptKind::Clicked.next(Clicked), None);
        assert_eq!(ReceiptKind::Undelivered.next(Submitted), Some(Undelivered));
        assert_eq!(ReceiptKind::Undelivered.next(Delivered), None);
        assert_eq!(ReceiptKind::Undelivered.next(Undelivered), None);
    }
}
