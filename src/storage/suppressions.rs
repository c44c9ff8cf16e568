//! Suppressed addresses (`/api/suppressions`): channel addresses audience resolution skips.
//!
//! An address is suppressed when its provider answers that it is gone (an outcome of class
//! `gone`: an unknown registration id, a number the carrier refuses, a mailbox that does not
//! exist, a WeChat user who never followed the account), when WeChat reports that the user
//! unsubscribed or blocked the account's template messages, or by an operator. An SMS reply
//! "TD" or an email's one-click unsubscribe opts the address out of marketing (reason
//! `opted_out`): only priority-3 messages skip it. A binding read returns each address's
//! reason ([`SUPPRESSED`]) and each message decides ([`Suppressed::skips`]); a skipped target
//! gets a `skipped` delivery with code `suppressed`, so a fallback chain moves on at once, while
//! the business's bindings stay as given. Raw-address sends (`audience.raw`) name their
//! addresses themselves and are not filtered, except that a marketing one skips addresses
//! opted out of marketing ([`opted_out`]).

use msghub_actors::provider::ChannelType;
use sea_orm::{ConnectionTrait, DbErr, TransactionTrait, Value};
use serde::Serialize;

use super::{Db, in_list, now_ms, repeat_last_row, value_rows};

/// The suppression of a binding `b`'s address, as a column: its reason, or NULL (one
/// primary-key probe). See [`Suppressed::of`].
pub const SUPPRESSED: &str = "(SELECT s.reason FROM suppressions s \
     WHERE s.channel_type = b.channel_type AND s.address = b.address)";

/// Which messages a binding's suppression stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Suppressed {
    /// Not suppressed.
    No,
    /// Opted out of marketing: priority-3 messages skip it.
    Marketing,
    /// Every message skips it.
    All,
}

impl Suppressed {
    /// From the [`SUPPRESSED`] column.
    pub fn of(reason: Option<&str>) -> Self {
        match reason {
            None => Suppressed::No,
            Some(r) if r == SuppressReason::OptedOut.as_str() => Suppressed::Marketing,
            Some(_) => Suppressed::All,
        }
    }

    /// Whether a message that is (or is not) marketing skips the address.
    pub fn skips(self, marketing: bool) -> bool {
        match self {
            Suppressed::No => false,
            Suppressed::Marketing => marketing,
            Suppressed::All => true,
        }
    }
}

/// Why an address is suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressReason {
    /// The provider answered that the recipient does not exist or cannot be reached.
    Gone,
    /// The user unsubscribed (a WeChat `unsubscribe` event: template messages to them fail).
    Unsubscribed,
    /// The user asked for no more marketing (an SMS unsubscribe reply, "TD"): only priority-3
    /// messages skip the address; verification codes and notices still reach it.
    OptedOut,
    /// The user refused the account's template messages (`failed:user block`).
    Blocked,
    /// An operator suppressed it.
    Manual,
}

impl SuppressReason {
    pub const ALL: [SuppressReason; 5] = [
        SuppressReason::Gone,
        SuppressReason::Unsubscribed,
        SuppressReason::OptedOut,
        SuppressReason::Blocked,
        SuppressReason::Manual,
    ];

    /// The reason named `text` ([`SuppressReason::as_str`]).
    pub fn parse(text: &str) -> Option<SuppressReason> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SuppressReason::Gone => "gone",
            SuppressReason::Unsubscribed => "unsubscribed",
            SuppressReason::OptedOut => "opted_out",
            SuppressReason::Blocked => "blocked",
            SuppressReason::Manual => "manual",
        }
    }
}

/// One suppressed address as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Suppression {
    pub channel_type: String,
    pub address: String,
    pub reason: String,
    /// The provider's code (`1011`, `43004`, `5.1.1`, …) when a provider said so.
    pub code: Option<String>,
    /// The channel and message whose delivery found the address gone.
    pub channel_id: Option<i64>,
    pub msgid: Option<i64>,
    pub created_at: i64,
}

/// An address suppressed already keeps its first reason — unless that was only an opt-out of
/// marketing and the new one stops every message (an opted-out address found gone, or
/// suppressed by hand): the stronger one replaces it.
const ON_CONFLICT: &str = "ON CONFLICT (channel_type, address) DO UPDATE SET \
     reason = excluded.reason, code = excluded.code, channel_id = excluded.channel_id, \
     message_id = excluded.message_id, created_at = excluded.created_at \
     WHERE suppressions.reason = 'opted_out' AND excluded.reason <> 'opted_out'";

/// Count addresses newly suppressed for `reason` (after their transaction committed).
pub fn count_added(reason: SuppressReason, added: u64) {
    if added > 0 {
        metrics::counter!("msghub_suppressions_added_total", "reason" => reason.as_str())
            .increment(added);
    }
}

/// Suppress, inside `txn`, the addresses of the deliveries `ids` for `reason`, with `code`
/// (or, when `None`, the delivery's own code: the provider's answer); an address suppressed
/// before keeps its first reason. How many were newly suppressed. Rows go in key order, as
/// every insert here does, so two writers on Postgres never wait for each other's keys in
/// opposite orders; the id list is padded like every keyed statement (few shapes).
pub(super) async fn suppress_deliveries<C: ConnectionTrait>(
    db: &Db,
    txn: &C,
    ids: &[i64],
    reason: SuppressReason,
    code: Option<&str>,
    now: i64,
) -> Result<u64, DbErr> {
    let mut added = 0;
    for chunk in ids.chunks(512) {
        let rows = db.pad_to(chunk.len(), 512);
        let mut values: Vec<Value> = vec![code.map(str::to_string).into(), now.into()];
        values.extend(chunk.iter().map(|id| Value::from(*id)));
        repeat_last_row(&mut values, 1, rows - chunk.len());
        // One row per address (deliveries of several messages may share one): Postgres refuses
        // an upsert that would update the same row twice.
        let sql = format!(
            "INSERT INTO suppressions (channel_type, address, reason, code, channel_id, message_id, created_at) \
             SELECT channel_type, address, '{}', COALESCE(?, MIN(code)), MIN(channel_id), MIN(message_id), ? \
             FROM deliveries WHERE id IN ({}) GROUP BY channel_type, address \
             ORDER BY channel_type, address {ON_CONFLICT}",
            reason.as_str(),
            in_list(rows)
        );
        added += txn
            .execute_raw(db.stmt(&sql, values))
            .await?
            .rows_affected();
    }
    Ok(added)
}

/// The rows that stand for `addresses`: for `sms`, every spelling the adapters send as the same
/// number (`138…`, `86138…`, `+86138…`, `0086138…`), so a number is skipped however a business
/// bound it; otherwise the addresses themselves. Sorted and without repeats.
fn keys(channel_type: ChannelType, addresses: &[&str]) -> Vec<String> {
    let mut keys: Vec<String> = match channel_type {
        ChannelType::Sms => addresses
            .iter()
            .flat_map(|a| msghub_providers::sms_spellings(a))
            .collect(),
        _ => addresses.iter().map(|a| (*a).to_string()).collect(),
    };
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// How many addresses (numbers, for `sms`) the rows `written` stand for.
fn addresses_in(channel_type: ChannelType, written: &[String]) -> u64 {
    let distinct: std::collections::HashSet<String> = written
        .iter()
        .map(|a| match channel_type {
            // The first spelling is the number's own (E.164), whichever was written.
            ChannelType::Sms => msghub_providers::sms_spellings(a)
                .into_iter()
                .next()
                .unwrap_or_else(|| a.clone()),
            _ => a.clone(),
        })
        .collect();
    distinct.len() as u64
}

/// Which of `keys` (channel type, address) are opted out of marketing.
pub(super) async fn opted_out<C: ConnectionTrait>(
    db: &Db,
    conn: &C,
    keys: &[(&str, &str)],
) -> Result<std::collections::HashSet<(String, String)>, DbErr> {
    let mut by_type: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for (t, a) in keys {
        by_type.entry(t).or_default().push(a);
    }
    let mut out = std::collections::HashSet::new();
    for (t, addresses) in by_type {
        for chunk in addresses.chunks(500) {
            let sql = format!(
                "SELECT address FROM suppressions WHERE channel_type = ? AND reason = '{}' \
                 AND address IN ({})",
                SuppressReason::OptedOut.as_str(),
                in_list(chunk.len())
            );
            let mut values: Vec<Value> = vec![t.into()];
            values.extend(chunk.iter().map(|a| Value::from(*a)));
            for row in conn.query_all_raw(db.stmt(&sql, values)).await? {
                out.insert((t.to_string(), row.try_get::<String>("", "address")?));
            }
        }
    }
    Ok(out)
}

impl Db {
    /// Suppress addresses in one transaction, with the provider's `code` when one reported
    /// it; how many were not suppressed before (an `sms` number counts once, and counts when
    /// any of its spellings was new).
    pub async fn add_suppressions(
        &self,
        channel_type: ChannelType,
        addresses: &[&str],
        reason: SuppressReason,
        code: Option<&str>,
    ) -> Result<u64, DbErr> {
        let now = now_ms();
        let keys = keys(channel_type, addresses);
        let txn = self.write().begin().await?;
        let mut written = Vec::new();
        for chunk in keys.chunks(1000) {
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 5);
            for address in chunk {
                values.extend([
                    channel_type.code().into(),
                    address.as_str().into(),
                    reason.as_str().into(),
                    code.map(str::to_string).into(),
                    now.into(),
                ]);
            }
            let sql = format!(
                "INSERT INTO suppressions (channel_type, address, reason, code, created_at) VALUES {} \
                 {ON_CONFLICT} RETURNING address",
                value_rows(chunk.len(), 5)
            );
            for row in txn.query_all_raw(self.stmt(&sql, values)).await? {
                written.push(row.try_get::<String>("", "address")?);
            }
        }
        txn.commit().await?;
        let added = addresses_in(channel_type, &written);
        count_added(reason, added);
        Ok(added)
    }

    /// Count a soft bounce of email `address` (delivery `delivery_id` failed without its
    /// mailbox being gone): the address's count, and whether this call added to it. A bounce
    /// counts when it comes at least `gap_ms` after the last one counted (so one short outage,
    /// or a burst of mail to a full mailbox, counts once) and is not for the same delivery as
    /// that one (a notification sent twice); the count starts again at 1 when the last one
    /// counted is older than `window_ms`.
    pub async fn count_soft_bounce(
        &self,
        address: &str,
        delivery_id: i64,
        gap_ms: i64,
        window_ms: i64,
    ) -> Result<(i64, bool), DbErr> {
        let now = now_ms();
        let counts = "soft_bounces.last_delivery_id <> excluded.last_delivery_id \
                      AND soft_bounces.last_at <= ?";
        let row = self
            .query_one_rw(
                &format!(
                    "INSERT INTO soft_bounces (address, bounces, last_delivery_id, last_at) \
                     VALUES (?, 1, ?, ?) ON CONFLICT (address) DO UPDATE SET \
                     bounces = CASE WHEN NOT ({counts}) THEN soft_bounces.bounces \
                     WHEN soft_bounces.last_at < ? THEN 1 ELSE soft_bounces.bounces + 1 END, \
                     last_delivery_id = CASE WHEN {counts} THEN excluded.last_delivery_id \
                     ELSE soft_bounces.last_delivery_id END, \
                     last_at = CASE WHEN {counts} THEN excluded.last_at \
                     ELSE soft_bounces.last_at END \
                     RETURNING bounces, last_delivery_id, last_at"
                ),
                vec![
                    address.into(),
                    delivery_id.into(),
                    now.into(),
                    now.saturating_sub(gap_ms).into(),
                    now.saturating_sub(window_ms).into(),
                    now.saturating_sub(gap_ms).into(),
                    now.saturating_sub(gap_ms).into(),
                ],
            )
            .await?;
        match row {
            // Counted: this delivery is now the last counted, at this instant.
            Some(r) => Ok((
                i64::from(r.try_get::<i32>("", "bounces")?),
                r.try_get::<i64>("", "last_delivery_id")? == delivery_id
                    && r.try_get::<i64>("", "last_at")? == now,
            )),
            None => Err(DbErr::RecordNotFound(
                "soft bounce count not returned".into(),
            )),
        }
    }

    /// Lift suppressions in one transaction (an `sms` number in every spelling); how many
    /// addresses were suppressed.
    pub async fn remove_suppressions(
        &self,
        channel_type: ChannelType,
        addresses: &[&str],
    ) -> Result<u64, DbErr> {
        let keys = keys(channel_type, addresses);
        let txn = self.write().begin().await?;
        let mut removed = Vec::new();
        for chunk in keys.chunks(1000) {
            let sql = format!(
                "DELETE FROM suppressions WHERE channel_type = ? AND address IN ({}) RETURNING address",
                in_list(chunk.len())
            );
            let mut values: Vec<Value> = vec![channel_type.code().into()];
            values.extend(chunk.iter().map(|a| Value::from(a.as_str())));
            for row in txn.query_all_raw(self.stmt(&sql, values)).await? {
                removed.push(row.try_get::<String>("", "address")?);
            }
            if channel_type == ChannelType::Email {
                // A lifted mailbox starts its soft bounces from nothing.
                let values = chunk.iter().map(|a| Value::from(a.as_str())).collect();
                let sql = format!(
                    "DELETE FROM soft_bounces WHERE address IN ({})",
                    in_list(chunk.len())
                );
                txn.execute_raw(self.stmt(&sql, values)).await?;
            }
        }
        txn.commit().await?;
        Ok(addresses_in(channel_type, &removed))
    }

    /// A page of suppressions in (channel type, address) order after `after`, of one channel
    /// type or all, optionally only those of one address or one reason.
    pub async fn suppressions(
        &self,
        channel_type: Option<ChannelType>,
        address: Option<&str>,
        reason: Option<SuppressReason>,
        after: Option<(&str, &str)>,
        limit: u64,
    ) -> Result<Vec<Suppression>, DbErr> {
        let mut sql =
            "SELECT channel_type, address, reason, code, channel_id, message_id, created_at \
                       FROM suppressions WHERE 1 = 1"
                .to_string();
        let mut values: Vec<Value> = Vec::new();
        if let Some(t) = channel_type {
            sql.push_str(" AND channel_type = ?");
            values.push(t.code().into());
        }
        if let Some(a) = address {
            sql.push_str(" AND address = ?");
            values.push(a.into());
        }
        if let Some(r) = reason {
            sql.push_str(" AND reason = ?");
            values.push(r.as_str().into());
        }
        if let Some((t, a)) = after {
            sql.push_str(" AND (channel_type > ? OR (channel_type = ? AND address > ?))");
            values.extend([t.into(), t.into(), a.into()]);
        }
        sql.push_str(" ORDER BY channel_type, address LIMIT ?");
        values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
        self.query_all(&sql, values)
            .await?
            .iter()
            .map(|r| {
                Ok(Suppression {
                    channel_type: r.try_get("", "channel_type")?,
                    address: r.try_get("", "address")?,
                    reason: r.try_get("", "reason")?,
                    code: r.try_get("", "code")?,
                    channel_id: r.try_get("", "channel_id")?,
                    msgid: r.try_get("", "message_id")?,
                    created_at: r.try_get("", "created_at")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn an_opt_out_stops_marketing_only() {
        for reason in [
            SuppressReason::Gone,
            SuppressReason::Unsubscribed,
            SuppressReason::Blocked,
            SuppressReason::Manual,
        ] {
            let s = Suppressed::of(Some(reason.as_str()));
            assert_eq!(s, Suppressed::All);
            assert!(s.skips(false) && s.skips(true));
        }
        let opted = Suppressed::of(Some(SuppressReason::OptedOut.as_str()));
        assert_eq!(opted, Suppressed::Marketing);
        assert!(opted.skips(true) && !opted.skips(false));
        assert!(!Suppressed::of(None).skips(true));
    }

    #[tokio::test]
    async fn suppressions_are_added_once_listed_in_order_and_lifted_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        suppressions_round_trip(crate::storage::test_sqlite(&dir).await).await;
    }

    #[tokio::test]
    async fn suppressions_are_added_once_listed_in_order_and_lifted_on_postgres() {
        if let Some(db) = crate::storage::test_postgres().await {
            suppressions_round_trip(db).await;
        }
    }

    #[tokio::test]
    async fn soft_bounces_are_counted_once_per_gap_and_delivery_within_their_window_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        soft_bounce_counts(crate::storage::test_sqlite(&dir).await).await;
    }

    #[tokio::test]
    async fn soft_bounces_are_counted_once_per_gap_and_delivery_within_their_window_on_postgres() {
        if let Some(db) = crate::storage::test_postgres().await {
            soft_bounce_counts(db).await;
        }
    }

    async fn soft_bounce_counts(db: Db) {
        // A gap long beside a statement's time, even on a loaded machine.
        let (gap, day) = (1000, 86_400_000);
        let count = |address: &'static str, delivery: i64, window: i64| {
            let db = db.clone();
            async move {
                db.count_soft_bounce(address, delivery, gap, window)
                    .await
                    .unwrap()
            }
        };
        let after_gap = || tokio::time::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(count("a@example.org", 1, day).await, (1, true));
        // Within the gap (one outage, a burst of mail), and the same delivery again after it
        // (a notification sent twice): not counted.
        assert_eq!(count("a@example.org", 2, day).await, (1, false));
        after_gap().await;
        assert_eq!(count("a@example.org", 1, day).await, (1, false));
        assert_eq!(count("a@example.org", 2, day).await, (2, true));
        assert_eq!(count("b@example.org", 7, day).await, (1, true));
        after_gap().await;
        assert_eq!(count("a@example.org", 3, day).await, (3, true));
        // A bounce after a quiet spell longer than the window starts again.
        after_gap().await;
        assert_eq!(count("a@example.org", 4, 500).await, (1, true));
        after_gap().await;
        assert_eq!(count("a@example.org", 5, day).await, (2, true));
        // Lifting a suppression of the address clears its count.
        db.remove_suppressions(ChannelType::Email, &["a@example.org"])
            .await
            .unwrap();
        assert_eq!(count("a@example.org", 6, day).await, (1, true));
    }

    async fn suppressions_round_trip(db: Db) {
        // A number is suppressed in every spelling, and counted once.
        let added = db
            .add_suppressions(
                ChannelType::Sms,
                &["+8613800000002", "+8613800000001", "13800000001"],
                SuppressReason::Manual,
                None,
            )
            .await
            .unwrap();
        assert_eq!(added, 2);
        // An address already suppressed keeps its first reason.
        let again = db
            .add_suppressions(
                ChannelType::Sms,
                &["008613800000001"],
                SuppressReason::Gone,
                Some("x"),
            )
            .await
            .unwrap();
        assert_eq!(again, 0);
        // Deliveries a provider called gone (the same address in two messages): suppressed with
        // their own code, each address once (the id list is padded with copies of its last id).
        for (id, kind, address, code) in [
            (1i64, "app", "regid-1", "1011"),
            (2, "app", "regid-1", "1011"),
            (3, "sms", "+8613800000001", "isv.MOBILE_NUMBER_ILLEGAL"),
        ] {
            db.execute(
                "INSERT INTO deliveries (id, message_id, shard_seq, channel_id, channel_type, address, \
                 step, status, attempts, code, updated_at) VALUES (?, ?, 0, 4, ?, ?, 0, 3, 1, ?, 0)",
                vec![id.into(), id.into(), kind.into(), address.into(), code.into()],
            )
            .await
            .unwrap();
        }
        let txn = db.write().begin().await.unwrap();
        let gone = suppress_deliveries(&db, &txn, &[1, 2, 3], SuppressReason::Gone, None, 5)
            .await
            .unwrap();
        txn.commit().await.unwrap();
        assert_eq!(gone, 1);

        let all = db.suppressions(None, None, None, None, 10).await.unwrap();
        // In the database's collation order; compared sorted here.
        let mut keys: Vec<(&str, &str, &str)> = all
            .iter()
            .map(|s| {
                (
                    s.channel_type.as_str(),
                    s.address.as_str(),
                    s.reason.as_str(),
                )
            })
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            vec![
                ("app", "regid-1", "gone"),
                ("sms", "+8613800000001", "manual"),
                ("sms", "+8613800000002", "manual"),
                ("sms", "008613800000001", "manual"),
                ("sms", "008613800000002", "manual"),
                ("sms", "13800000001", "manual"),
                ("sms", "13800000002", "manual"),
                ("sms", "8613800000001", "manual"),
                ("sms", "8613800000002", "manual"),
            ]
        );
        assert_eq!(all[0].code.as_deref(), Some("1011"));
        assert_eq!(all[1].code, None);
        // A page after a row: the rows after it, in the same order.
        let page = db
            .suppressions(None, None, None, Some(("sms", &all[1].address)), 10)
            .await
            .unwrap();
        assert_eq!(page, all[2..].to_vec());
        let sms = db
            .suppressions(
                Some(ChannelType::Sms),
                Some("+8613800000002"),
                None,
                None,
                10,
            )
            .await
            .unwrap();
        assert_eq!(sms.len(), 1);

        // Lifting a number lifts every spelling; one never suppressed counts for nothing.
        let removed = db
            .remove_suppressions(ChannelType::Sms, &["13800000001", "+8613800000009"])
            .await
            .unwrap();
        assert_eq!(removed, 1);
        let mut left: Vec<String> = db
            .suppressions(None, None, None, None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.address)
            .collect();
        left.sort_unstable();
        assert_eq!(
            left,
            vec![
                "+8613800000002",
                "008613800000002",
                "13800000002",
                "8613800000002",
                "regid-1",
            ]
        );
        // A provider's code is kept with the rows it added.
        db.add_suppressions(
            ChannelType::Sms,
            &["+8613800000003"],
            SuppressReason::OptedOut,
            Some("TD"),
        )
        .await
        .unwrap();
        let td = db
            .suppressions(
                Some(ChannelType::Sms),
                None,
                Some(SuppressReason::OptedOut),
                None,
                10,
            )
            .await
            .unwrap();
        assert_eq!(
            (td[0].reason.as_str(), td[0].code.as_deref()),
            ("opted_out", Some("TD"))
        );
        // An opt-out gives way to a suppression that stops everything; not the other way.
        let stronger = db
            .add_suppressions(
                ChannelType::Sms,
                &["13800000003"],
                SuppressReason::Manual,
                None,
            )
            .await
            .unwrap();
        assert_eq!(stronger, 1);
        let again = db
            .add_suppressions(
                ChannelType::Sms,
                &["13800000003"],
                SuppressReason::OptedOut,
                Some("TD"),
            )
            .await
            .unwrap();
        assert_eq!(again, 0);
        let rows = db
            .suppressions(
                Some(ChannelType::Sms),
                None,
                Some(SuppressReason::Manual),
                None,
                10,
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 8, "both numbers, every spelling: {rows:?}");
        assert!(rows.iter().all(|r| r.code.is_none()));
        // A gone outcome on an opted-out address: suppressed for everything, with its code.
        db.add_suppressions(
            ChannelType::App,
            &["regid-2"],
            SuppressReason::OptedOut,
            None,
        )
        .await
        .unwrap();
        db.execute(
            "INSERT INTO deliveries (id, message_id, shard_seq, channel_id, channel_type, address, \
             step, status, attempts, code, updated_at) VALUES (9, 9, 0, 4, 'app', 'regid-2', 0, 3, 1, '1011', 0)",
            vec![],
        )
        .await
        .unwrap();
        let txn = db.write().begin().await.unwrap();
        let gone = suppress_deliveries(&db, &txn, &[9], SuppressReason::Gone, None, 6)
            .await
            .unwrap();
        txn.commit().await.unwrap();
        assert_eq!(gone, 1);
        let app = db
            .suppressions(Some(ChannelType::App), Some("regid-2"), None, None, 10)
            .await
            .unwrap();
        assert_eq!(
            (app[0].reason.as_str(), app[0].code.as_deref(), app[0].msgid),
            ("gone", Some("1011"), Some(9))
        );
    }
}
