//! Bounces from the SMTP sink: delivery status notifications (RFC 3464) mailed to a message's
//! return path, the way a receiving mail server reports, after accepting it, that it could not
//! deliver it. Set with `POST /sim/bounces` (`{"relay": "127.0.0.1:2526", "delay_ms": 50,
//! "failed_ratio": 0.0}`); `DELETE` stops them.
//!
//! Which recipients bounce: a local part starting with `hardbounce` (failed, `5.1.1` user
//! unknown), `fullbox` (failed, `5.2.2` mailbox full) or `delayed` (delayed, `4.4.1`); any
//! other with probability `failed_ratio` (failed, `5.1.1`). A recipient whose local part
//! starts with `complainer` marks the message as spam: with a `feedback_address`, an abuse
//! feedback report (ARF, RFC 5965) goes there, naming the return path. The notification goes from the
//! null sender to the return path (the message's `MAIL FROM`) through `relay`, the mail
//! exchanger of the return path's domain; a 4xx answer is retried after 1 s and 5 s, a 5xx
//! answer is final. `GET /sim/bounces` counts what was sent and refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::client::Tls;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::{Deserialize, Serialize};

use crate::state::{SimState, lock};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BounceConfig {
    /// `host:port` of the mail exchanger bounces are handed to.
    pub relay: String,
    #[serde(default = "default_delay")]
    pub delay_ms: u64,
    /// Share of other recipients that bounce (failed, `5.1.1`).
    #[serde(default)]
    pub failed_ratio: f64,
    /// Where the simulated mailbox provider's feedback loop sends abuse reports (the address
    /// the sender registered); `None`: no complaints.
    #[serde(default)]
    pub feedback_address: Option<String>,
}

fn default_delay() -> u64 {
    50
}

impl BounceConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        relay_target(&self.relay)?;
        if let Some(address) = &self.feedback_address
            && address.parse::<lettre::Address>().is_err()
        {
            return Err("feedback_address must be an email address".into());
        }
        if !(0.0..=1.0).contains(&self.failed_ratio) {
            return Err("failed_ratio must be between 0 and 1".into());
        }
        Ok(())
    }
}

/// The host (IPv6 without brackets) and port of `relay`, which must be `host:port` on a
/// loopback address or `localhost`: like its receipts, the simulator's bounces stay on this
/// machine.
fn relay_target(relay: &str) -> Result<(String, u16), String> {
    let url = format!("http://{relay}");
    let parsed = url::Url::parse(&url).ok();
    let port = parsed.as_ref().and_then(url::Url::port);
    let (Some(parsed), Some(port)) = (parsed, port) else {
        return Err("relay must be host:port".into());
    };
    let bare = parsed.path() == "/"
        && parsed.username().is_empty()
        && parsed.password().is_none()
        && parsed.query().is_none();
    if !bare || crate::receipts::loopback_host(&url).is_none() {
        return Err(
            "relay must be host:port on a loopback address (127.0.0.0/8, ::1 or localhost)".into(),
        );
    }
    let host = match parsed.host() {
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => parsed.host_str().unwrap_or_default().to_string(),
    };
    Ok((host, port))
}

/// The configured sender: its settings and the SMTP client to the relay.
pub(crate) struct Bouncer {
    config: BounceConfig,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

#[derive(Default)]
pub(crate) struct BounceCounts {
    pub sent: AtomicU64,
    pub refused: AtomicU64,
}

/// What a recipient's notification reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bounce {
    UserUnknown,
    MailboxFull,
    Delayed,
}

impl Bounce {
    fn action(self) -> &'static str {
        match self {
            Bounce::Delayed => "delayed",
            _ => "failed",
        }
    }

    fn status(self) -> &'static str {
        match self {
            Bounce::UserUnknown => "5.1.1",
            Bounce::MailboxFull => "5.2.2",
            Bounce::Delayed => "4.4.1",
        }
    }

    fn diagnostic(self) -> &'static str {
        match self {
            Bounce::UserUnknown => "smtp; 550 5.1.1 User unknown",
            Bounce::MailboxFull => "smtp; 552 5.2.2 Mailbox full",
            Bounce::Delayed => "smtp; 421 4.4.1 Connection timed out",
        }
    }
}

/// The bounce scripted for `recipient`, if any.
fn scripted(recipient: &str) -> Option<Bounce> {
    let local = recipient.split('@').next().unwrap_or_default();
    let local = local.to_ascii_lowercase();
    if local.starts_with("hardbounce") {
        Some(Bounce::UserUnknown)
    } else if local.starts_with("fullbox") {
        Some(Bounce::MailboxFull)
    } else if local.starts_with("delayed") {
        Some(Bounce::Delayed)
    } else {
        None
    }
}

pub(crate) fn configure(state: &SimState, config: Option<BounceConfig>) -> Result<(), String> {
    let bouncer = match config {
        None => None,
        Some(config) => {
            config.validate()?;
            let (host, port) = relay_target(&config.relay)?;
            let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                .port(port)
                .tls(Tls::None)
                .timeout(Some(Duration::from_secs(10)))
                .build();
            Some(Arc::new(Bouncer { config, transport }))
        }
    };
    *lock(&state.bouncer) = bouncer;
    Ok(())
}

pub(crate) fn config(state: &SimState) -> Option<BounceConfig> {
    lock(&state.bouncer).as_ref().map(|b| b.config.clone())
}

/// After the sink accepted a message from `return_path` for `recipients` (whose header block
/// is `headers`): schedule the notifications of the recipients that bounce. Runs on the
/// SMTP sink's runtime.
pub(crate) fn after_accept(
    state: &Arc<SimState>,
    return_path: &str,
    recipients: &[String],
    headers: &str,
) {
    let Some(bouncer) = lock(&state.bouncer).clone() else {
        return;
    };
    // The null sender's mail (a bounce itself) never bounces.
    if return_path.is_empty() {
        return;
    }
    let Ok(to) = return_path.parse() else {
        return;
    };
    for recipient in recipients {
        if complains(recipient) {
            let Some(feedback) = bouncer.config.feedback_address.as_deref() else {
                continue;
            };
            let (Ok(from), Ok(fbl)) = (FEEDBACK_SENDER.parse(), feedback.parse()) else {
                continue;
            };
            let Ok(envelope) = Envelope::new(Some(from), vec![fbl]) else {
                continue;
            };
            let report = complaint(recipient, return_path, feedback, headers, state.next_id());
            tokio::spawn(deliver(bouncer.clone(), state.clone(), envelope, report));
            continue;
        }
        let bounce = scripted(recipient).or_else(|| {
            (bouncer.config.failed_ratio > 0.0
                && rand::random::<f64>() < bouncer.config.failed_ratio)
                .then_some(Bounce::UserUnknown)
        });
        let Some(bounce) = bounce else { continue };
        let Ok(envelope) = Envelope::new(None, vec![Clone::clone(&to)]) else {
            continue;
        };
        let report = notification(bounce, recipient, return_path, headers, state.next_id());
        tokio::spawn(deliver(bouncer.clone(), state.clone(), envelope, report));
    }
}

/// Hand `report` to the relay after the configured delay; a 4xx answer is retried after 1 s
/// and 5 s, a 5xx answer is final.
async fn deliver(bouncer: Arc<Bouncer>, state: Arc<SimState>, envelope: Envelope, report: String) {
    tokio::time::sleep(Duration::from_millis(bouncer.config.delay_ms)).await;
    for wait in [Some(1000), Some(5000), None] {
        match bouncer
            .transport
            .send_raw(&envelope, report.as_bytes())
            .await
        {
            Ok(_) => {
                state.bounce_counts.sent.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(e) if e.is_transient() || e.is_timeout() => {
                tracing::debug!(error = %e, "sim bounce not taken; retrying");
            }
            Err(e) => {
                tracing::debug!(error = %e, "sim bounce refused");
                break;
            }
        }
        match wait {
            Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            None => break,
        }
    }
    state.bounce_counts.refused.fetch_add(1, Ordering::Relaxed);
}

/// The sender of the simulated feedback loop's reports.
const FEEDBACK_SENDER: &str = "fbl@msghub-sim.example";

/// Whether `recipient` marks the message as spam (its local part starts with `complainer`).
fn complains(recipient: &str) -> bool {
    recipient
        .split('@')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
        .starts_with("complainer")
}

/// A `multipart/report` (RFC 6522) of `kind` (`delivery-status`, `feedback-report`): a
/// human-readable part, the machine-readable part (`message/{kind}`, its `fields`), and the
/// original message's headers (`text/rfc822-headers`).
struct ReportMail<'a> {
    from: &'a str,
    to: &'a str,
    subject: &'a str,
    kind: &'a str,
    /// Boundary and Message-ID prefix.
    tag: &'a str,
    id: u64,
    text: &'a str,
    fields: &'a str,
    headers: &'a str,
}

impl ReportMail<'_> {
    fn render(&self) -> String {
        let ReportMail {
            from,
            to,
            subject,
            kind,
            tag,
            id,
            text,
            fields,
            headers,
        } = self;
        let boundary = format!("sim-{tag}-{id:012x}");
        let date = chrono::Utc::now().to_rfc2822();
        format!(
            "From: {from}\r\n\
             To: <{to}>\r\n\
             Subject: {subject}\r\n\
             Date: {date}\r\n\
             Message-ID: <{tag}-{id:012x}@msghub-sim>\r\n\
             Auto-Submitted: auto-replied\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type={kind};\r\n\
             \tboundary=\"{boundary}\"\r\n\
             \r\n\
             This is a MIME-encapsulated message.\r\n\
             \r\n\
             --{boundary}\r\n\
             Content-Type: text/plain; charset=us-ascii\r\n\
             \r\n\
             {text}\r\n\
             \r\n\
             --{boundary}\r\n\
             Content-Type: message/{kind}\r\n\
             \r\n\
             {fields}\
             \r\n\
             --{boundary}\r\n\
             Content-Type: text/rfc822-headers\r\n\
             \r\n\
             {headers}\
             \r\n\
             --{boundary}--\r\n"
        )
    }
}

/// An abuse feedback report (ARF, RFC 5965) about the message from `return_path` to
/// `recipient`, with the original's headers.
fn complaint(recipient: &str, return_path: &str, feedback: &str, headers: &str, id: u64) -> String {
    let date = chrono::Utc::now().to_rfc2822();
    let fields = format!(
        "Feedback-Type: abuse\r\n\
         User-Agent: msghub-sim/1\r\n\
         Version: 1\r\n\
         Original-Mail-From: <{return_path}>\r\n\
         Original-Rcpt-To: <{recipient}>\r\n\
         Arrival-Date: {date}\r\n"
    );
    ReportMail {
        from: &format!("<{FEEDBACK_SENDER}>"),
        to: feedback,
        subject: "Abuse report",
        kind: "feedback-report",
        tag: "arf",
        id,
        text: "A user marked a message from you as spam.",
        fields: &fields,
        headers,
    }
    .render()
}

/// An RFC 3464 report: a human-readable part, the `message/delivery-status` part, and the
/// original message's headers (`text/rfc822-headers`, RFC 6522).
fn notification(
    bounce: Bounce,
    recipient: &str,
    return_path: &str,
    headers: &str,
    id: u64,
) -> String {
    let date = chrono::Utc::now().to_rfc2822();
    let action = bounce.action();
    let what = if action == "failed" {
        "could not be delivered"
    } else {
        "has not been delivered yet"
    };
    let fields = format!(
        "Reporting-MTA: dns; msghub-sim\r\n\
         Arrival-Date: {date}\r\n\
         \r\n\
         Final-Recipient: rfc822; {recipient}\r\n\
         Action: {action}\r\n\
         Status: {status}\r\n\
         Remote-MTA: dns; mx.msghub-sim\r\n\
         Diagnostic-Code: {diagnostic}\r\n",
        status = bounce.status(),
        diagnostic = bounce.diagnostic(),
    );
    ReportMail {
        from: "Mail Delivery System <MAILER-DAEMON@msghub-sim>",
        to: return_path,
        subject: "Delivery Status Notification",
        kind: "delivery-status",
        tag: "dsn",
        id,
        text: &format!("Your message to <{recipient}> {what}."),
        fields: &fields,
        headers,
    }
    .render()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn scripted_recipients() {
        assert_eq!(
            scripted("HardBounce-1@example.org"),
            Some(Bounce::UserUnknown)
        );
        assert_eq!(scripted("fullbox@example.org"), Some(Bounce::MailboxFull));
        assert_eq!(scripted("delayed.2@example.org"), Some(Bounce::Delayed));
        assert_eq!(scripted("user@hardbounce.org"), None);
        assert!(complains("Complainer-7@example.org"));
        assert!(!complains("user@complainer.org"));
    }

    #[test]
    fn configs_are_checked() {
        let ok = BounceConfig {
            relay: "127.0.0.1:2526".into(),
            delay_ms: 0,
            failed_ratio: 0.5,
            feedback_address: Some("bounce+fbl@b.example.com".into()),
        };
        assert_eq!(ok.validate(), Ok(()));
        for (relay, host) in [
            ("localhost:25", "localhost"),
            ("[::1]:2526", "::1"),
            ("127.0.0.2:25", "127.0.0.2"),
        ] {
            let ok = BounceConfig {
                relay: relay.into(),
                ..ok.clone()
            };
            assert_eq!(ok.validate(), Ok(()), "{relay}");
            assert_eq!(relay_target(relay).unwrap().0, host);
        }
        for (relay, ratio) in [
            ("127.0.0.1", 0.0),
            (":25", 0.0),
            ("h:x", 0.0),
            ("h:25", 1.5),
        ] {
            let bad = BounceConfig {
                relay: relay.into(),
                delay_ms: 0,
                failed_ratio: ratio,
                feedback_address: None,
            };
            assert!(bad.validate().is_err(), "{relay} {ratio}");
        }
    }

    #[test]
    fn the_report_names_the_recipient_and_status() {
        let report = notification(
            Bounce::MailboxFull,
            "a@example.org",
            "bounce+1.2.ab@b.example.com",
            "Subject: hi\r\n",
            7,
        );
        assert!(report.contains("report-type=delivery-status"), "{report}");
        assert!(
            report.contains(
                "Final-Recipient: rfc822; a@example.org\r\nAction: failed\r\nStatus: 5.2.2"
            ),
            "{report}"
        );
        assert!(
            report.contains("To: <bounce+1.2.ab@b.example.com>"),
            "{report}"
        );
        assert!(report.ends_with("--sim-dsn-000000000007--\r\n"), "{report}");
        let arf = complaint(
            "a@example.org",
            "bounce+1.2.ab@b.example.com",
            "bounce+fbl@b.example.com",
            "Subject: hi\r\n",
            8,
        );
        assert!(arf.contains("report-type=feedback-report"), "{arf}");
        assert!(arf.contains("Feedback-Type: abuse\r\n"), "{arf}");
        assert!(
            arf.contains("Original-Mail-From: <bounce+1.2.ab@b.example.com>\r\n"),
            "{arf}"
        );
    }
}
