//! Audience filters, applied where deliveries are created: suppressed addresses, black- and
//! whitelists, dedup and frequency caps, decided and recorded in the transaction that inserts
//! the deliveries.
//!
//! Filtered-out targets are not dropped: they get a delivery with status `Skipped` and the
//! reason as its `code`, already judged, so they are counted and never sent or retried. In a
//! fallback chain a user whose rows at a step are all skipped moves on to the next step at
//! once, as if they had no address there.
//!
//! Cost: a message without filters whose targets have no suppressed address never gets here. With filters, a shard costs one query per
//! filter kind in use (list entries, dedup keys, cap counters) and one upsert each, whatever
//! its size. Dedup and caps read and write their tables under a per-source lock on Postgres
//! (SQLite has one writer), so two shards of the same source never both pass the same check.

use std::collections::{HashMap, HashSet};

use msghub_actors::filters::{AudienceFilters, SkipReason};
use msghub_actors::local_time::local_day;
use msghub_actors::plan::{DeliveryStatus, MessagePlan};
use sea_orm::{ConnectionTrait, DatabaseBackend, DbErr, Value};
use sha2::{Digest, Sha256};

use super::{Resolved, Store, first_steps};
use crate::storage::{in_list, value_rows};

/// Skipped deliveries: the row, its step and why.
pub(super) type SkippedRow<'a> = (&'a Resolved, i16, SkipReason);

/// What the filters decided for a set of candidate deliveries.
pub(super) struct Chosen<'a> {
    /// Deliveries to send, with their step.
    pub live: Vec<(&'a Resolved, i16)>,
    pub skipped: Vec<SkippedRow<'a>>,
    /// Targets (users, or raw addresses) with at least one live delivery.
    pub reached: u64,
}

/// One option of a target: its rows on one channel type, at one step.
struct Choice<'a> {
    step: i16,
    channel_type: &'a str,
    rows: Vec<&'a Resolved>,
}

/// A target's options in order; the first with a row that passes the filters is sent. A
/// concurrent message has one chain per target and channel type, each with one option; a
/// fallback chain has one per user, with an option per step they have addresses for.
struct Chain<'a> {
    target: String,
    options: Vec<Choice<'a>>,
}

fn target_of(r: &Resolved) -> String {
    match &r.userid {
        Some(u) => format!("u:{u}"),
        None => format!("a:{}", r.address),
    }
}

/// A fixed-width key for the dedup and cap tables.
fn key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..16])
}

/// Namespace of msghub's Postgres advisory locks ("mh" in the high bits).
const LOCK_SPACE: i64 = 0x6d68 << 48;

fn chains<'a>(plan: &MessagePlan, resolved: &'a [Resolved], from: usize) -> Vec<Chain<'a>> {
    let steps = plan.strategy.steps();
    let mut out: Vec<Chain<'a>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    if steps.is_empty() {
        for r in resolved {
            let target = target_of(r);
            let k = format!("{target}\u{0}{}", r.channel_type);
            let i = *index.entry(k).or_insert_with(|| {
                out.push(Chain {
                    target,
                    options: vec![Choice {
                        step: 0,
                        channel_type: &r.channel_type,
                        rows: Vec::new(),
                    }],
                });
                out.len() - 1
            });
            out[i].options[0].rows.push(r);
        }
        return out;
    }
    let mut by_user: Vec<(String, Vec<&'a Resolved>)> = Vec::new();
    for r in resolved {
        let Some(u) = &r.userid else { continue };
        let i = *index.entry(u.clone()).or_insert_with(|| {
            by_user.push((target_of(r), Vec::new()));
            by_user.len() - 1
        });
        by_user[i].1.push(r);
    }
    for (target, rows) in by_user {
        let options: Vec<Choice<'a>> = steps
            .iter()
            .enumerate()
            .skip(from)
            .filter_map(|(j, s)| {
                let rows: Vec<&Resolved> = rows
                    .iter()
                    .copied()
                    .filter(|r| r.channel_type == s.channel_type.code())
                    .collect();
                (!rows.is_empty()).then(|| Choice {
                    step: i16::try_from(j).unwrap_or(i16::MAX),
                    channel_type: s.channel_type.code(),
                    rows,
                })
            })
            .collect();
        if !options.is_empty() {
            out.push(Chain { target, options });
        }
    }
    out
}

/// List memberships of the candidates: `(list id, is a userid entry)` → values.
type ListHits = HashMap<(i64, bool), HashSet<String>>;

/// Why the row is skipped before dedup and caps are considered: its address is suppressed, or
/// the lists skip it.
fn list_reason(f: &AudienceFilters, hits: &ListHits, r: &Resolved) -> Option<SkipReason> {
    if r.suppressed {
        return Some(SkipReason::Suppressed);
    }
    let has = |list: i64, user: bool, value: &str| {
        hits.get(&(list, user)).is_some_and(|s| s.contains(value))
    };
    let listed = |list: i64| {
        r.userid.as_deref().is_some_and(|u| has(list, true, u)) || has(list, false, &r.address)
    };
    if f.blacklists.iter().any(|l| listed(*l)) {
        return Some(SkipReason::Blacklisted);
    }
    if f.whitelists.iter().any(|l| !listed(*l)) {
        return Some(SkipReason::NotWhitelisted);
    }
    None
}

impl Store {
    /// The deliveries that open a shard (see [`first_steps`]), with the message's filters
    /// applied when it has any, and suppressed addresses skipped when there are any.
    pub(super) async fn first_steps_filtered<'a, C: ConnectionTrait>(
        &self,
        txn: &C,
        plan: &MessagePlan,
        resolved: &'a [Resolved],
        now: i64,
    ) -> Result<(Vec<(&'a Resolved, i16)>, Vec<SkippedRow<'a>>), DbErr> {
        if plan.filters.is_none() && !resolved.iter().any(|r| r.suppressed) {
            return Ok((first_steps(plan, resolved), Vec::new()));
        }
        let none = AudienceFilters::default();
        let f = plan.filters.as_deref().unwrap_or(&none);
        let chosen = self.choose(txn, plan, f, resolved, 0, now).await?;
        Ok((chosen.live, chosen.skipped))
    }

    /// Decide every candidate from step `from` on: for each target, the first option with a
    /// row the filters let through is live; the rows they stopped until then are skipped.
    pub(super) async fn choose<'a, C: ConnectionTrait>(
        &self,
        txn: &C,
        plan: &MessagePlan,
        f: &AudienceFilters,
        resolved: &'a [Resolved],
        from: usize,
        now: i64,
    ) -> Result<Chosen<'a>, DbErr> {
        let chains = chains(plan, resolved, from);
        let hits = if f.blacklists.is_empty() && f.whitelists.is_empty() {
            ListHits::new()
        } else {
            let mut values: HashSet<&str> = HashSet::new();
            for o in chains.iter().flat_map(|c| &c.options) {
                for r in &o.rows {
                    values.insert(&r.address);
                    if let Some(u) = &r.userid {
                        values.insert(u);
                    }
                }
            }
            let values: Vec<&str> = values.into_iter().collect();
            self.list_hits(txn, f, &values).await?
        };
        let content: HashMap<&str, String> = plan
            .channels
            .iter()
            .map(|c| {
                let text = serde_json::to_string(&c.content).unwrap_or_default();
                (c.channel_type.code(), key(&[&text]))
            })
            .collect();
        let dedup_key = |chain: &Chain, o: &Choice| {
            let hash = content.get(o.channel_type).map_or("", String::as_str);
            key(&[&chain.target, o.channel_type, hash])
        };
        let cap_of = |o: &Choice| {
            f.caps
                .iter()
                .find(|(t, _)| t.code() == o.channel_type)
                .map(|(_, n)| i64::from(*n))
        };
        let day = local_day(now, f.day_offset_seconds);
        let dedup = f.dedup_window_seconds > 0;
        let caps = !f.caps.is_empty();
        if (dedup || caps) && self.db.backend() == DatabaseBackend::Postgres {
            txn.execute_raw(self.db.stmt(
                "SELECT pg_advisory_xact_lock(?)",
                vec![(LOCK_SPACE | plan.source_id).into()],
            ))
            .await?;
        }
        // What the tables hold for every option that could be sent.
        let mut dedup_candidates = Vec::new();
        let mut cap_candidates = Vec::new();
        for c in &chains {
            for o in &c.options {
                if o.rows.iter().all(|r| list_reason(f, &hits, r).is_some()) {
                    continue;
                }
                if dedup {
                    dedup_candidates.push(dedup_key(c, o));
                }
                if cap_of(o).is_some() {
                    cap_candidates.push(key(&[&c.target, o.channel_type]));
                }
            }
        }
        let mut seen = self
            .recent_keys(txn, plan.source_id, &dedup_candidates, now)
            .await?;
        let mut counts = self
            .cap_counts(txn, plan.source_id, day, &cap_candidates)
            .await?;
        let mut chosen = Chosen {
            live: Vec::new(),
            skipped: Vec::new(),
            reached: 0,
        };
        let mut new_keys: Vec<String> = Vec::new();
        let mut counted: HashMap<String, i64> = HashMap::new();
        for c in &chains {
            for o in &c.options {
                let mut passed = Vec::new();
                for r in &o.rows {
                    match list_reason(f, &hits, r) {
                        Some(reason) => chosen.skipped.push((r, o.step, reason)),
                        None => passed.push(*r),
                    }
                }
                if passed.is_empty() {
                    continue;
                }
                let dk = dedup.then(|| dedup_key(c, o));
                let cap = cap_of(o).map(|cap| (cap, key(&[&c.target, o.channel_type])));
                let reason = if dk.as_ref().is_some_and(|k| seen.contains(k)) {
                    Some(SkipReason::Duplicate)
                } else if let Some((cap, k)) = &cap
                    && counts.get(k).copied().unwrap_or(0) >= *cap
                {
                    Some(SkipReason::Capped)
                } else {
                    None
                };
                if let Some(reason) = reason {
                    chosen
                        .skipped
                        .extend(passed.into_iter().map(|r| (r, o.step, reason)));
                    continue;
                }
                if let Some(k) = dk {
                    seen.insert(k.clone());
                    new_keys.push(k);
                }
                if let Some((_, k)) = cap {
                    *counts.entry(k.clone()).or_default() += 1;
                    *counted.entry(k).or_default() += 1;
                }
                chosen.live.extend(passed.into_iter().map(|r| (r, o.step)));
                chosen.reached += 1;
                break;
            }
        }
        let expires = now + i64::from(f.dedup_window_seconds) * 1000;
        self.remember_keys(txn, plan.source_id, &new_keys, expires)
            .await?;
        self.count_caps(txn, plan.source_id, day, &counted).await?;
        if (dedup || caps) && rand::random::<u8>() < 2 {
            // About one filtered shard in 128 sweeps out what can no longer match.
            self.purge(txn, plan.source_id, now, day).await?;
        }
        Ok(chosen)
    }

    /// Which of `values` (userids and addresses) the message's lists hold.
    async fn list_hits<C: ConnectionTrait>(
        &self,
        txn: &C,
        f: &AudienceFilters,
        values: &[&str],
    ) -> Result<ListHits, DbErr> {
        let lists: Vec<i64> = f.blacklists.iter().chain(&f.whitelists).copied().collect();
        let mut hits = ListHits::new();
        for chunk in values.chunks(2000) {
            let sql = format!(
                "SELECT list_id, kind, value FROM audience_list_entries WHERE list_id IN ({}) AND value IN ({})",
                in_list(lists.len()),
                in_list(chunk.len())
            );
            let mut params: Vec<Value> = lists.iter().map(|l| Value::from(*l)).collect();
            params.extend(chunk.iter().map(|v| Value::from(*v)));
            for r in txn.query_all_raw(self.db.stmt(&sql, params)).await? {
                let kind: String = r.try_get("", "kind")?;
                hits.entry((r.try_get("", "list_id")?, kind == "userid"))
                    .or_default()
                    .insert(r.try_get("", "value")?);
            }
        }
        Ok(hits)
    }

    /// The dedup keys among `keys` seen within their window.
    async fn recent_keys<C: ConnectionTrait>(
        &self,
        txn: &C,
        source_id: i64,
        keys: &[String],
        now: i64,
    ) -> Result<HashSet<String>, DbErr> {
        let mut seen = HashSet::new();
        for chunk in keys.chunks(2000) {
            let sql = format!(
                "SELECT dedup_key FROM dedup_keys WHERE source_id = ? AND expires_at > ? AND dedup_key IN ({})",
                in_list(chunk.len())
            );
            let mut params: Vec<Value> = vec![source_id.into(), now.into()];
            params.extend(chunk.iter().map(|k| Value::from(k.clone())));
            for r in txn.query_all_raw(self.db.stmt(&sql, params)).await? {
                seen.insert(r.try_get("", "dedup_key")?);
            }
        }
        Ok(seen)
    }

    async fn cap_counts<C: ConnectionTrait>(
        &self,
        txn: &C,
        source_id: i64,
        day: i64,
        keys: &[String],
    ) -> Result<HashMap<String, i64>, DbErr> {
        let mut counts = HashMap::new();
        for chunk in keys.chunks(2000) {
            let sql = format!(
                "SELECT target_key, n FROM frequency_counts WHERE source_id = ? AND local_day = ? AND target_key IN ({})",
                in_list(chunk.len())
            );
            let mut params: Vec<Value> = vec![source_id.into(), day.into()];
            params.extend(chunk.iter().map(|k| Value::from(k.clone())));
            for r in txn.query_all_raw(self.db.stmt(&sql, params)).await? {
                let n: i32 = r.try_get("", "n")?;
                counts.insert(r.try_get("", "target_key")?, i64::from(n));
            }
        }
        Ok(counts)
    }

    async fn remember_keys<C: ConnectionTrait>(
        &self,
        txn: &C,
        source_id: i64,
        keys: &[String],
        expires: i64,
    ) -> Result<(), DbErr> {
        for chunk in keys.chunks(1000) {
            let mut params: Vec<Value> = Vec::with_capacity(chunk.len() * 3);
            for k in chunk {
                params.extend([source_id.into(), k.clone().into(), expires.into()]);
            }
            let sql = format!(
                "INSERT INTO dedup_keys (source_id, dedup_key, expires_at) VALUES {} \
                 ON CONFLICT (source_id, dedup_key) DO UPDATE SET expires_at = excluded.expires_at",
                value_rows(chunk.len(), 3)
            );
            txn.execute_raw(self.db.stmt(&sql, params)).await?;
        }
        Ok(())
    }

    async fn count_caps<C: ConnectionTrait>(
        &self,
        txn: &C,
        source_id: i64,
        day: i64,
        counted: &HashMap<String, i64>,
    ) -> Result<(), DbErr> {
        let counted: Vec<(&String, &i64)> = counted.iter().collect();
        for chunk in counted.chunks(1000) {
            let mut params: Vec<Value> = Vec::with_capacity(chunk.len() * 4);
            for (k, n) in chunk {
                let n = i32::try_from(**n).unwrap_or(i32::MAX);
                params.extend([source_id.into(), day.into(), (*k).clone().into(), n.into()]);
            }
            let sql = format!(
                "INSERT INTO frequency_counts (source_id, local_day, target_key, n) VALUES {} \
                 ON CONFLICT (source_id, local_day, target_key) DO UPDATE SET n = frequency_counts.n + excluded.n",
                value_rows(chunk.len(), 4)
            );
            txn.execute_raw(self.db.stmt(&sql, params)).await?;
        }
        Ok(())
    }

    async fn purge<C: ConnectionTrait>(
        &self,
        txn: &C,
        source_id: i64,
        now: i64,
        day: i64,
    ) -> Result<(), DbErr> {
        txn.execute_raw(self.db.stmt(
            "DELETE FROM dedup_keys WHERE expires_at <= ?",
            vec![now.into()],
        ))
        .await?;
        // Yesterday's counters stay: another offset's day may still be running.
        txn.execute_raw(self.db.stmt(
            "DELETE FROM frequency_counts WHERE source_id = ? AND local_day < ?",
            vec![source_id.into(), (day - 1).into()],
        ))
        .await?;
        Ok(())
    }

    /// Record skipped deliveries: counted with the message, judged (a fallback timer never
    /// looks at them), never sent.
    pub(super) async fn insert_skipped<C: ConnectionTrait>(
        &self,
        txn: &C,
        plan: &MessagePlan,
        seq: i32,
        skipped: &[SkippedRow<'_>],
        now: i64,
    ) -> Result<(), DbErr> {
        let channel_of: HashMap<&str, i64> = plan
            .channels
            .iter()
            .map(|c| (c.channel_type.code(), c.channel_id))
            .collect();
        for chunk in skipped.chunks(1000) {
            let mut params: Vec<Value> = Vec::with_capacity(chunk.len() * 13);
            let mut n = 0;
            for (r, step, reason) in chunk {
                let Some(&channel_id) = channel_of.get(r.channel_type.as_str()) else {
                    continue;
                };
                n += 1;
                params.extend([
                    plan.msgid.into(),
                    seq.into(),
                    channel_id.into(),
                    r.channel_type.clone().into(),
                    r.userid.clone().into(),
                    r.address.clone().into(),
                    (*step).into(),
                    (DeliveryStatus::Skipped as i16).into(),
                    0i32.into(),
                    reason.as_str().into(),
                    1i16.into(),
                    now.into(),
                    now.into(),
                ]);
            }
            if n == 0 {
                continue;
            }
            let sql = format!(
                "INSERT INTO deliveries (message_id, shard_seq, channel_id, channel_type, userid, address, step, \
                 status, attempts, code, judged, updated_at, created_at) VALUES {} \
                 ON CONFLICT (message_id, channel_id, address) DO NOTHING",
                value_rows(n, 13)
            );
            txn.execute_raw(self.db.stmt(&sql, params)).await?;
        }
        Ok(())
    }
}

/// Fallback timers: the rows of `users` on the steps from `from` on.
pub(super) fn later_rows(
    plan: &MessagePlan,
    from: usize,
    bindings: &HashMap<String, Vec<super::Binding>>,
    users: &std::collections::BTreeSet<&str>,
) -> Vec<Resolved> {
    let types: Vec<&str> = plan
        .strategy
        .steps()
        .iter()
        .skip(from)
        .map(|s| s.channel_type.code())
        .collect();
    let marketing = plan.is_marketing();
    users
        .iter()
        .flat_map(|u| {
            bindings
                .get(*u)
                .into_iter()
                .flatten()
                .filter(|(t, _, _)| types.contains(&t.as_str()))
                .map(move |(t, a, suppressed)| Resolved {
                    userid: Some((*u).to_string()),
                    channel_type: t.clone(),
                    address: a.clone(),
                    suppressed: suppressed.skips(marketing),
                })
        })
        .collect()
}
