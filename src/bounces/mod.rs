//! Email bounces: each message's return path names its delivery (VERP,
//! [`msghub_providers::BounceAddresses`]), and an SMTP listener — the MX of the bounce domain
//! — takes the delivery status notifications mail servers send there.
//!
//! The listener refuses at `RCPT` every address this hub did not make (`550 5.1.1`), and at
//! the end of `DATA` every message that is not a notification (`554 5.6.0`). A notification is
//! applied as the receipt of the delivery its recipient address names: `failed` marks it
//! undelivered with the notification's status code (`5.1.1`), and suppresses the address when
//! the code says the mailbox is gone (`5.1.0`–`5.1.3`, `5.1.6`, `5.1.10`, `5.2.1`);
//! `delivered` marks it delivered;
//! `delayed`, `relayed` and `expanded` change nothing. The `250` that ends the transaction
//! comes after the receipt's commit; a storage failure answers `451 4.3.0` so the sender
//! tries again. Abuse feedback reports (ARF) at [`BounceAddresses::feedback_address`] (or a
//! return path) opt the address of the message they name out of marketing.

pub mod dsn;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use msghub_actors::provider::ChannelType;
use msghub_providers::BounceAddresses;
use msghub_providers::smtp::wire::{self, Conn, Handler, Next, angle_addr, read_data, strip_ci};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::http::AppState;
use crate::settings::BounceSettings;
use crate::storage::crypto::Crypto;
use crate::storage::now_ms;
use crate::storage::receipts::{Receipt, ReceiptKind};
use crate::storage::suppressions::SuppressReason;
use dsn::{Action, RecipientStatus, Report};

/// The most recipients of one transaction (a notification has one: its return path).
const MAX_RECIPIENTS: usize = 100;
/// How long the listener waits for a command.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a message's DATA may take.
const DATA_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a whole session may last, replies included (a client that never reads them, or
/// that keeps a session alive with NOOPs, gives its place back).
const SESSION_LIMIT: Duration = Duration::from_secs(600);
/// Most `bounces.max_sessions`.
const MAX_SESSIONS: usize = 10_000;

/// The hub's return paths, when a bounce domain is configured.
pub fn addresses(settings: &BounceSettings, crypto: &Crypto) -> Option<BounceAddresses> {
    (!settings.domain.trim().is_empty()).then(|| BounceAddresses {
        local: settings.local_part.trim().to_string(),
        domain: settings.domain.trim().to_ascii_lowercase(),
        key: crypto.derived_key("email-bounces"),
    })
}

/// Refuse settings that cannot make valid return paths or a listener.
pub fn check(settings: &BounceSettings) -> anyhow::Result<()> {
    let domain = settings.domain.trim();
    let local = settings.local_part.trim();
    if !domain.is_empty() {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        anyhow::ensure!(
            domain.contains('.') && domain.split('.').all(label_ok),
            "bounces.domain must be a domain name such as bounces.example.com"
        );
        anyhow::ensure!(
            !local.is_empty()
                && local.len() <= 16
                && local
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "bounces.local_part must be 1 to 16 letters, digits, '-' or '_'"
        );
    }
    if !settings.smtp_listen.trim().is_empty() {
        anyhow::ensure!(
            !domain.is_empty(),
            "bounces.smtp_listen needs bounces.domain (the return paths it takes bounces for)"
        );
        anyhow::ensure!(
            settings.max_message_bytes >= 1024
                && (1..=MAX_SESSIONS).contains(&settings.max_sessions),
            "bounces.max_message_bytes must be at least 1024 and bounces.max_sessions between 1 and {MAX_SESSIONS}"
        );
    }
    Ok(())
}

/// Bind the bounce listener when one is configured and serve it on the current (actix)
/// runtime; returns the address it listens on.
pub fn start(
    settings: &BounceSettings,
    state: Arc<AppState>,
) -> anyhow::Result<Option<SocketAddr>> {
    let listen = settings.smtp_listen.trim();
    if listen.is_empty() {
        return Ok(None);
    }
    let Some(addresses) = addresses(settings, &state.crypto) else {
        anyhow::bail!("bounces.smtp_listen needs bounces.domain");
    };
    let std_listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("binding the bounce listener on {listen}"))?;
    std_listener.set_nonblocking(true)?;
    let local = std_listener.local_addr()?;
    let listener = TcpListener::from_std(std_listener)?;
    let shared = Arc::new(Listener {
        state,
        addresses,
        max_bytes: settings.max_message_bytes,
        sessions: Arc::new(Semaphore::new(settings.max_sessions)),
        soft: SoftBounces {
            limit: i64::from(settings.soft_limit),
            gap_ms: i64::from(settings.soft_gap_hours) * 3_600_000,
            window_ms: i64::from(settings.soft_window_days) * 86_400_000,
        },
    });
    actix_web::rt::spawn(serve(listener, shared));
    Ok(Some(local))
}

struct Listener {
    state: Arc<AppState>,
    addresses: BounceAddresses,
    max_bytes: usize,
    sessions: Arc<Semaphore>,
    soft: SoftBounces,
}

/// When soft bounces suppress an address (`bounces.soft_limit`, `soft_gap_hours`,
/// `soft_window_days`).
#[derive(Debug, Clone, Copy)]
struct SoftBounces {
    /// 0: never.
    limit: i64,
    gap_ms: i64,
    window_ms: i64,
}

async fn serve(listener: TcpListener, shared: Arc<Listener>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                actix_web::rt::spawn(async move {
                    let mut conn = Conn::new(stream);
                    // Full: the sending server tries again later, as it does for any 421.
                    let Ok(_permit) = shared.sessions.clone().try_acquire_owned() else {
                        count("busy");
                        let busy = conn.reply("421 4.3.2 msghub Too busy, try again later");
                        let _ = tokio::time::timeout(IDLE_TIMEOUT, busy).await;
                        return;
                    };
                    let mut session = Session {
                        shared: &shared,
                        in_transaction: false,
                        recipients: Vec::new(),
                        feedback: false,
                    };
                    let run = wire::run(&mut conn, &mut session, IDLE_TIMEOUT);
                    match tokio::time::timeout(SESSION_LIMIT, run).await {
                        Ok(Err(e)) => tracing::debug!(error = %e, "bounce session ended"),
                        Ok(Ok(())) => {}
                        Err(_) => tracing::debug!("bounce session closed at its time limit"),
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "bounce listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn count(result: &'static str) {
    metrics::counter!("msghub_bounces_total", "result" => result).increment(1);
}

/// One session's transaction: the (message, delivery) of each accepted recipient.
struct Session<'a> {
    shared: &'a Listener,
    in_transaction: bool,
    recipients: Vec<(i64, i64)>,
    /// The feedback address is among the recipients.
    feedback: bool,
}

impl Handler for Session<'_> {
    fn host(&self) -> &str {
        "msghub"
    }

    fn extensions(&self) -> Vec<String> {
        vec![
            "PIPELINING".into(),
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
            format!("SIZE {}", self.shared.max_bytes),
        ]
    }

    fn reset(&mut self) {
        self.in_transaction = false;
        self.recipients.clear();
        self.feedback = false;
    }

    async fn mail(&mut self, conn: &mut Conn, arg: &str) -> std::io::Result<()> {
        if self.in_transaction {
            return conn.reply("503 5.5.1 Nested MAIL command").await;
        }
        // Any sender: notifications come from the null sender (`<>`).
        if strip_ci(arg, "FROM:").and_then(angle_addr).is_none() {
            return conn.reply("501 5.5.4 Syntax: MAIL FROM:<address>").await;
        }
        // A larger notification is taken and cut (see `data`): its status part comes before
        // the quoted original.
        self.in_transaction = true;
        conn.reply("250 2.1.0 OK").await
    }

    async fn rcpt(&mut self, conn: &mut Conn, arg: &str) -> std::io::Result<()> {
        if !self.in_transaction {
            return conn.reply("503 5.5.1 MAIL first").await;
        }
        let Some(to) = strip_ci(arg, "TO:").and_then(angle_addr) else {
            return conn.reply("501 5.5.4 Syntax: RCPT TO:<address>").await;
        };
        if self.shared.addresses.is_feedback_address(&to) {
            self.feedback = true;
            return conn.reply("250 2.1.5 OK").await;
        }
        let Some(ids) = self.shared.addresses.parse(&to) else {
            count("unknown_address");
            return conn.reply("550 5.1.1 No such bounce address here").await;
        };
        if self.recipients.len() >= MAX_RECIPIENTS {
            return conn.reply("452 4.5.3 Too many recipients").await;
        }
        if !self.recipients.contains(&ids) {
            self.recipients.push(ids);
        }
        conn.reply("250 2.1.5 OK").await
    }

    async fn data(&mut self, conn: &mut Conn) -> std::io::Result<Next> {
        if !self.in_transaction {
            conn.reply("503 5.5.1 MAIL first").await?;
            return Ok(Next::Continue);
        }
        if self.recipients.is_empty() && !self.feedback {
            conn.reply("554 5.5.1 No valid recipients").await?;
            return Ok(Next::Continue);
        }
        conn.reply("354 End data with <CR><LF>.<CR><LF>").await?;
        // The first `max_message_bytes` are kept (up to the line that would pass them), the
        // rest read and dropped.
        let max = self.shared.max_bytes;
        let mut message: Vec<u8> = Vec::with_capacity(8 * 1024);
        let mut cut = false;
        let read = read_data(&mut conn.reader, |piece, complete| {
            if cut || message.len() + piece.len() + 2 > max {
                cut = true;
                return;
            }
            message.extend_from_slice(piece);
            if complete {
                message.extend_from_slice(b"\r\n");
            }
        });
        match tokio::time::timeout(DATA_TIMEOUT, read).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => return Ok(Next::Close),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                conn.reply("421 4.4.2 msghub Too slow, closing").await?;
                return Ok(Next::Close);
            }
        };
        let recipients = std::mem::take(&mut self.recipients);
        self.reset();
        if cut {
            count("cut");
        }
        let applied = match dsn::read(&message) {
            Ok(Report::Delivery(statuses)) if !recipients.is_empty() => {
                apply(&self.shared.state, self.shared.soft, &recipients, &statuses).await
            }
            Ok(Report::Feedback(feedback)) if !feedback.is_complaint() => {
                // `not-spam`, `virus`, `other`: nothing the address asked for.
                count("no_change");
                Ok(())
            }
            Ok(Report::Feedback(feedback)) => {
                // The report's own return path, or else the one it was mailed to.
                let ids = feedback
                    .return_path
                    .as_deref()
                    .and_then(|path| self.shared.addresses.parse(path))
                    .or(match recipients.as_slice() {
                        [only] => Some(*only),
                        _ => None,
                    });
                let Some(ids) = ids else {
                    count("unknown_complaint");
                    conn.reply("554 5.6.0 The report names no message of this hub")
                        .await?;
                    return Ok(Next::Continue);
                };
                complain(&self.shared.state, ids, &feedback.kind).await
            }
            Ok(Report::Delivery(_)) => {
                count("unknown_address");
                conn.reply("554 5.6.0 Delivery status notifications go to the return path")
                    .await?;
                return Ok(Next::Continue);
            }
            Err(e) => {
                count("not_a_report");
                conn.reply(&format!("554 5.6.0 {e}")).await?;
                return Ok(Next::Continue);
            }
        };
        match applied {
            Ok(()) => conn.reply("250 2.0.0 OK").await?,
            Err(e) => {
                tracing::warn!(error = %e, "a bounce could not be applied; the sender will retry");
                conn.reply("451 4.3.0 Try again later").await?;
            }
        }
        Ok(Next::Continue)
    }
}

/// The status of `address` in a notification: the one naming it, or — when the
/// notification went to one return path and reports one recipient — that one (a forwarding
/// server may report the address it forwarded to).
fn status_for<'s>(
    statuses: &'s [RecipientStatus],
    address: &str,
    one_return_path: bool,
) -> Option<&'s RecipientStatus> {
    statuses
        .iter()
        .find(|s| s.recipient.eq_ignore_ascii_case(address.trim()))
        .or(match statuses {
            [only] if one_return_path => Some(only),
            _ => None,
        })
}

/// The receipt a status makes for a delivery, if it changes anything.
fn receipt_for(
    status: &RecipientStatus,
    msgid: i64,
    channel_id: i64,
    address: String,
) -> Option<Receipt> {
    let kind = match status.action {
        Action::Failed => ReceiptKind::Undelivered,
        Action::Delivered => ReceiptKind::Delivered,
        Action::Delayed | Action::Relayed | Action::Expanded => return None,
    };
    Some(Receipt {
        msgid,
        channel_id,
        address,
        kind,
        at_ms: now_ms(),
        code: (kind == ReceiptKind::Undelivered).then(|| status.status.clone()),
        suppress: status.address_is_gone().then_some(SuppressReason::Gone),
    })
}

/// Apply a notification to the deliveries its recipients name, through the receipts writer
/// (counted in `msghub_receipts_total{channel_type="email"}`).
///
/// A soft bounce is counted for its address before the receipts are written, and the receipt
/// suppresses the address once the count reaches the limit; a notification retried after a
/// failed write finds its delivery already counted and suppresses it then.
async fn apply(
    state: &AppState,
    soft: SoftBounces,
    recipients: &[(i64, i64)],
    statuses: &[RecipientStatus],
) -> anyhow::Result<()> {
    let mut receipts = Vec::with_capacity(recipients.len());
    let (mut unmatched, mut unnamed) = (0, 0);
    for &(msgid, delivery_id) in recipients {
        let Some((channel_id, address)) = state.db.email_delivery(msgid, delivery_id).await? else {
            // A return path this hub made, for a delivery it no longer has.
            unmatched += 1;
            continue;
        };
        let Some(status) = status_for(statuses, &address, recipients.len() == 1) else {
            unnamed += 1;
            continue;
        };
        let worn_out = if soft.limit > 0 && status.is_soft_bounce() {
            let (bounces, counted) = state
                .db
                .count_soft_bounce(&address, delivery_id, soft.gap_ms, soft.window_ms)
                .await?;
            if counted && bounces >= soft.limit {
                count("soft_limit");
            }
            bounces >= soft.limit
        } else {
            false
        };
        match receipt_for(status, msgid, channel_id, address) {
            Some(mut receipt) => {
                if worn_out {
                    receipt.suppress = Some(SuppressReason::Gone);
                }
                receipts.push(receipt);
            }
            None => count("no_change"),
        }
    }
    crate::http::receipts::apply(state, ChannelType::Email, receipts, unnamed, unmatched)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

/// Apply a feedback report about delivery `ids`: the message reached its recipient, who
/// marked it as spam (or another `kind`) — delivered, and the address opted out of marketing
/// (code `complaint`), as RFC 6449 asks of senders. Notices and verification codes still
/// reach it.
async fn complain(
    state: &AppState,
    (msgid, delivery_id): (i64, i64),
    kind: &str,
) -> anyhow::Result<()> {
    let found = state.db.email_delivery(msgid, delivery_id).await?;
    let receipts: Vec<Receipt> = found
        .into_iter()
        .map(|(channel_id, address)| Receipt {
            msgid,
            channel_id,
            address,
            kind: ReceiptKind::Delivered,
            at_ms: now_ms(),
            code: Some("complaint".into()),
            suppress: Some(SuppressReason::OptedOut),
        })
        .collect();
    let unmatched = u64::from(receipts.is_empty());
    count(if receipts.is_empty() {
        "unknown_complaint"
    } else {
        "complaint"
    });
    tracing::info!(
        msgid,
        feedback_type = kind,
        "a feedback report about an email"
    );
    crate::http::receipts::apply(state, ChannelType::Email, receipts, 0, unmatched)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn status(recipient: &str, action: Action, code: &str) -> RecipientStatus {
        RecipientStatus {
            recipient: recipient.into(),
            action,
            status: code.into(),
            diagnostic: None,
        }
    }

    #[test]
    fn a_notification_names_its_delivery_by_address_or_alone() {
        let one = [status("fwd@elsewhere.org", Action::Failed, "5.1.1")];
        assert_eq!(status_for(&one, "a@example.org", true), Some(&one[0]));
        // Sent to two return paths, one block names neither: it is applied to none.
        assert_eq!(status_for(&one, "a@example.org", false), None);
        assert_eq!(status_for(&one, "FWD@elsewhere.org", false), Some(&one[0]));
        let two = [
            status("b@example.org", Action::Delayed, "4.4.7"),
            status("A@Example.org", Action::Failed, "5.2.2"),
        ];
        assert_eq!(status_for(&two, "a@example.org", true), Some(&two[1]));
        assert_eq!(status_for(&two, "c@example.org", true), None);
    }

    #[test]
    fn statuses_make_receipts() {
        let gone = receipt_for(
            &status("a@x.org", Action::Failed, "5.1.1"),
            1,
            2,
            "a@x.org".into(),
        )
        .unwrap();
        assert_eq!(
            (gone.kind, gone.code.as_deref(), gone.suppress),
            (
                ReceiptKind::Undelivered,
                Some("5.1.1"),
                Some(SuppressReason::Gone)
            )
        );
        let full = receipt_for(
            &status("a@x.org", Action::Failed, "5.2.2"),
            1,
            2,
            "a@x.org".into(),
        )
        .unwrap();
        assert_eq!((full.kind, full.suppress), (ReceiptKind::Undelivered, None));
        let delivered = receipt_for(
            &status("a@x.org", Action::Delivered, "2.0.0"),
            1,
            2,
            "a@x.org".into(),
        )
        .unwrap();
        assert_eq!(
            (delivered.kind, delivered.code),
            (ReceiptKind::Delivered, None)
        );
        assert!(
            receipt_for(
                &status("a@x.org", Action::Delayed, "4.4.1"),
                1,
                2,
                "a@x.org".into()
            )
            .is_none()
        );
    }

    #[test]
    fn settings_are_checked() {
        let mut s = BounceSettings::default();
        assert!(check(&s).is_ok());
        let sessions = BounceSettings {
            domain: "bounces.example.com".into(),
            smtp_listen: "127.0.0.1:0".into(),
            max_sessions: MAX_SESSIONS + 1,
            ..BounceSettings::default()
        };
        assert!(check(&sessions).is_err(), "too many sessions");
        s.smtp_listen = "127.0.0.1:0".into();
        assert!(check(&s).is_err(), "a listener without a domain");
        s.domain = "bounces.example.com".into();
        assert!(check(&s).is_ok());
        for (domain, local) in [
            ("localhost", "bounce"),
            ("a..b", "bounce"),
            ("b.example.com", "a+b"),
            ("b.example.com", ""),
        ] {
            let bad = BounceSettings {
                domain: domain.into(),
                local_part: local.into(),
                ..BounceSettings::default()
            };
            assert!(check(&bad).is_err(), "{domain} {local}");
        }
    }
}
