//! `email` channel adapter: SMTP submission through a pooled lettre `AsyncSmtpTransport`.
//!
//! SMTP answers per recipient, so each call carries one recipient (`max_batch` 1); throughput
//! comes from the connection pool, not from batching. With unsubscribe links configured, each
//! message carries its recipient's one-click unsubscribe (`List-Unsubscribe` and
//! `List-Unsubscribe-Post`, RFC 8058). With the hub's bounce addresses configured, each
//! message's envelope sender (the return path bounces go to) names its delivery (VERP).

pub(crate) mod classify;
pub use classify::status_says_gone;
pub(crate) mod config;
pub mod wire;

use std::sync::Arc;

use async_trait::async_trait;
use lettre::address::Envelope;
use lettre::message::Mailbox;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use msghub_actors::provider::{ChannelType, Outcome, OutcomeClass, Provider, SendRequest, Target};
use serde_json::Value;

use crate::http::per_target;
use crate::{
    AdapterOptions, BounceAddresses, ConfigError, INVALID_CONTENT, UnsubscribeLinks, rejected,
};
use config::{SmtpConfig, TlsMode};

pub(crate) const MAX_BATCH: usize = 1;

const INVALID_ADDRESS: &str = "invalid_address";

pub(crate) fn build(
    credentials: &Value,
    options: &AdapterOptions,
) -> Result<Arc<dyn Provider>, ConfigError> {
    let config = config::parse(credentials)?;
    // lettre's pool spawns its idle-cleanup task with `tokio::spawn`, which panics outside a
    // runtime; refuse instead so `build` stays panic-free.
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(ConfigError::Client {
            kind: ChannelType::Email,
            reason: "email adapters must be built inside a Tokio runtime".into(),
        });
    }
    let pool_size = config
        .pool_size
        .unwrap_or_else(|| u32::try_from(options.pool_size).unwrap_or(u32::MAX))
        .max(1);
    let transport = transport(&config, options, pool_size)?;
    Ok(Arc::new(SmtpProvider {
        transport,
        from: config.from,
        concurrency: pool_size as usize,
        unsubscribe: options.unsubscribe.clone(),
        // A relay that wants the account as envelope sender gets no return paths.
        bounces: options.bounces.clone().filter(|_| config.verp),
    }))
}

fn transport(
    config: &SmtpConfig,
    options: &AdapterOptions,
    pool_size: u32,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, ConfigError> {
    let tls = match config.tls {
        TlsMode::None => Tls::None,
        mode => {
            let params =
                TlsParameters::new(config.host.clone()).map_err(|_| ConfigError::Invalid {
                    kind: ChannelType::Email,
                    field: "host".into(),
                    reason: "is not a valid TLS server name".into(),
                })?;
            if mode == TlsMode::Tls {
                Tls::Wrapper(params)
            } else {
                Tls::Required(params)
            }
        }
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.host.clone())
        .port(config.port)
        .tls(tls)
        .timeout(Some(options.request_timeout))
        .pool_config(PoolConfig::new().max_size(pool_size));
    if let Some((user, pass)) = &config.auth {
        builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
    }
    // The builder's `build` is generic over the executor; the annotation picks Tokio.
    let transport: AsyncSmtpTransport<Tokio1Executor> = builder.build();
    Ok(transport)
}

struct SmtpProvider {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    concurrency: usize,
    unsubscribe: Option<UnsubscribeLinks>,
    bounces: Option<BounceAddresses>,
}

/// The `msg_email` content (JUMS shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EmailContent {
    pub subject: String,
    /// `text` is HTML in JUMS.
    pub html: String,
}

pub(crate) fn parse_content(content: &Value) -> Result<EmailContent, Outcome> {
    let Some(object) = content.as_object() else {
        return Err(rejected("msg_email must be a JSON object"));
    };
    let text = |key: &str| match object.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        _ => Err(rejected(format!(
            "msg_email.{key} must be a non-empty string"
        ))),
    };
    match object.get("files") {
        None | Some(Value::Null) => {}
        Some(Value::Array(files)) if files.is_empty() => {}
        Some(Value::Array(_)) => return Err(rejected("attachments not supported yet")),
        Some(_) => return Err(rejected("msg_email.files must be an array")),
    }
    Ok(EmailContent {
        subject: text("subject")?,
        html: text("text")?,
    })
}

/// Stable per delivery, so a retried send carries the same id and receivers can dedupe it; the
/// sender's domain keeps it plausible to spam filters.
pub(crate) fn message_id(msgid: i64, delivery_id: i64, from: &Mailbox) -> String {
    format!("<{msgid}.{delivery_id}@{}>", from.email.domain())
}

/// What a message carries besides its content: the one-click unsubscribe links and the
/// return paths (both optional).
#[derive(Clone, Copy, Default)]
pub(crate) struct Extras<'a> {
    pub unsubscribe: Option<&'a UnsubscribeLinks>,
    pub bounces: Option<&'a BounceAddresses>,
}

/// The message for one recipient, with its one-click unsubscribe and its delivery's return
/// path when `extras` has them, and its Message-ID.
pub(crate) fn build_message(
    from: &Mailbox,
    content: &EmailContent,
    target: &Target,
    msgid: i64,
    extras: Extras<'_>,
) -> Result<(Message, String), Outcome> {
    let to: Mailbox = target.address.trim().parse().map_err(|_| {
        Outcome::failed(
            OutcomeClass::Gone,
            INVALID_ADDRESS,
            "recipient is not a valid email address",
        )
    })?;
    let id = message_id(msgid, target.delivery_id, from);
    let mut builder = Message::builder();
    if let Some(bounces) = extras.bounces {
        let return_path = bounces
            .return_path(msgid, target.delivery_id)
            .and_then(|path| path.parse().ok())
            .ok_or_else(|| {
                Outcome::failed(
                    OutcomeClass::Perm,
                    INVALID_CONTENT,
                    "the bounce domain does not make a valid return path",
                )
            })?;
        let envelope = Envelope::new(Some(return_path), vec![to.email.clone()])
            .map_err(|e| Outcome::failed(OutcomeClass::Perm, INVALID_CONTENT, e.to_string()))?;
        builder = builder.envelope(envelope);
    }
    let mut builder = builder
        .from(from.clone())
        .to(to)
        .subject(content.subject.clone())
        .message_id(Some(id.clone()))
        .header(ContentType::TEXT_HTML);
    if let Some(links) = extras.unsubscribe {
        builder = builder
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                // The address as bound (the suppression it makes must match the binding).
                format!("<{}>", links.link(&target.address)),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                "List-Unsubscribe=One-Click".into(),
            ));
    }
    let message = builder
        .body(content.html.clone())
        .map_err(|e| Outcome::failed(OutcomeClass::Perm, INVALID_CONTENT, e.to_string()))?;
    Ok((message, id))
}

impl SmtpProvider {
    async fn send_one(&self, content: &EmailContent, target: &Target, msgid: i64) -> Outcome {
        let extras = Extras {
            unsubscribe: self.unsubscribe.as_ref(),
            bounces: self.bounces.as_ref(),
        };
        let built = build_message(&self.from, content, target, msgid, extras);
        let (message, id) = match built {
            Ok(built) => built,
            Err(rejected) => return rejected,
        };
        match self.transport.send(message).await {
            Ok(response) => Outcome::ok(response.code().to_string(), Some(id)),
            Err(err) => classify::outcome_for(&err),
        }
    }
}

#[async_trait]
impl Provider for SmtpProvider {
    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    async fn send(&self, req: SendRequest<'_>) -> Vec<Outcome> {
        let content = match parse_content(req.content) {
            Ok(content) => content,
            Err(rejected) => return vec![rejected; req.targets.len()],
        };
        let outcomes = per_target(req.targets, self.concurrency, |target| {
            self.send_one(&content, target, req.msgid)
        })
        .await;
        for outcome in &outcomes {
            tracing::debug!(channel = "email", msgid = req.msgid, class = outcome.class.as_str(), code = %outcome.code, "smtp send");
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    fn target(address: &str) -> Target {
        Target {
            delivery_id: 77,
            address: address.into(),
            userid: None,
        }
    }

    #[test]
    fn content_rules() {
        let c = parse_content(&json!({"subject": "Hi", "text": "<b>x</b>", "files": []})).unwrap();
        assert_eq!(
            c,
            EmailContent {
                subject: "Hi".into(),
                html: "<b>x</b>".into()
            }
        );
        let table = [
            (
                json!({"subject": "Hi", "text": "x", "files": ["https://f/1.pdf"]}),
                "attachments not supported yet",
            ),
            (
                json!({"subject": "Hi", "text": "x", "files": "a"}),
                "msg_email.files must be an array",
            ),
            (
                json!({"text": "x"}),
                "msg_email.subject must be a non-empty string",
            ),
            (
                json!({"subject": "Hi"}),
                "msg_email.text must be a non-empty string",
            ),
            (json!("x"), "msg_email must be a JSON object"),
        ];
        for (content, message) in table {
            let out = parse_content(&content).unwrap_err();
            assert_eq!(
                (out.class, out.message.as_str()),
                (OutcomeClass::Perm, message)
            );
        }
    }

    #[test]
    fn message_headers() {
        let from: Mailbox = "Hub <hub@example.com>".parse().unwrap();
        let content = EmailContent {
            subject: "订单通知".into(),
            html: "<p>你好</p>".into(),
        };
        let (message, id) = build_message(
            &from,
            &content,
            &target("user@example.org"),
            42,
            Extras::default(),
        )
        .unwrap();
        assert_eq!(id, "<42.77@example.com>");
        let raw = String::from_utf8(message.formatted()).unwrap();
        assert!(raw.contains("Message-ID: <42.77@example.com>"), "{raw}");
        assert!(raw.contains("From: Hub <hub@example.com>"), "{raw}");
        assert!(raw.contains("To: user@example.org"), "{raw}");
        assert!(
            raw.contains("Content-Type: text/html; charset=utf-8"),
            "{raw}"
        );
        // Non-ASCII subject/body are encoded so relays without 8BITMIME accept them.
        assert!(raw.is_ascii(), "{raw}");
        assert_eq!(
            message.envelope().from().unwrap().to_string(),
            "hub@example.com"
        );
        assert!(!raw.contains("List-Unsubscribe"), "{raw}");
        // With links: the recipient's own, and the one-click POST marker.
        let links = UnsubscribeLinks {
            base: "http://127.0.0.1:8080/unsubscribe/4".into(),
            key: [1u8; 32],
        };
        let extras = Extras {
            unsubscribe: Some(&links),
            bounces: None,
        };
        let (message, _) =
            build_message(&from, &content, &target("user@example.org"), 42, extras).unwrap();
        let raw = String::from_utf8(message.formatted()).unwrap();
        assert!(
            raw.contains(&format!(
                "List-Unsubscribe: <{}>",
                links.link("user@example.org")
            )),
            "{raw}"
        );
        assert!(
            raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
            "{raw}"
        );
    }

    #[test]
    fn the_envelope_sender_is_the_deliverys_return_path() {
        let from: Mailbox = "Hub <hub@example.com>".parse().unwrap();
        let content = EmailContent {
            subject: "s".into(),
            html: "t".into(),
        };
        let bounces = BounceAddresses {
            local: "bounce".into(),
            domain: "bounces.example.com".into(),
            key: [3u8; 32],
        };
        let extras = Extras {
            unsubscribe: None,
            bounces: Some(&bounces),
        };
        let (message, _) =
            build_message(&from, &content, &target("user@example.org"), 42, extras).unwrap();
        let sender = message.envelope().from().unwrap().to_string();
        assert_eq!(Some(sender.clone()), bounces.return_path(42, 77));
        assert_eq!(bounces.parse(&sender), Some((42, 77)));
        assert_eq!(
            message
                .envelope()
                .to()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["user@example.org"]
        );
        // The From header stays the channel's.
        let raw = String::from_utf8(message.formatted()).unwrap();
        assert!(raw.contains("From: Hub <hub@example.com>"), "{raw}");
    }

    #[test]
    fn bad_recipient_is_gone() {
        let from: Mailbox = "hub@example.com".parse().unwrap();
        let content = EmailContent {
            subject: "s".into(),
            html: "t".into(),
        };
        let out = build_message(
            &from,
            &content,
            &target("not an address"),
            1,
            Extras::default(),
        )
        .unwrap_err();
        assert_eq!(
            (out.class, out.code.as_str()),
            (OutcomeClass::Gone, INVALID_ADDRESS)
        );
    }

    #[test]
    fn build_needs_a_runtime() {
        let err = build(
            &json!({"host": "h", "from": "a@b.c"}),
            &AdapterOptions::default(),
        )
        .err();
        assert!(matches!(err, Some(ConfigError::Client { .. })));
    }
}
