//! The `email` adapter against a scripted local SMTP server (plaintext, AUTH PLAIN): the
//! submitted message and the classification of per-recipient replies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use base64::Engine;
use common::{closed_port_url, options, targets};
use msghub_actors::provider::{ChannelType, OutcomeClass, SendRequest};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Debug, Default, Clone)]
struct Session {
    auth: Option<String>,
    mail_from: Option<String>,
    rcpt: Vec<String>,
    data: Vec<String>,
}

/// Replies to `RCPT TO` by local part: `gone`, `spam`, `busy`, `grey`, `full`; anything else 250.
fn rcpt_reply(address: &str) -> &'static str {
    match address
        .split('@')
        .next()
        .unwrap_or_default()
        .trim_start_matches('<')
    {
        "gone" => "550 5.1.1 <gone@example.org>: Recipient address rejected: User unknown",
        "spam" => "550 5.7.1 Message rejected as spam",
        "busy" => "421 4.7.0 Too many connections, try later",
        "grey" => "451 4.7.1 Greylisted, try again",
        "full" => "552 5.2.2 Mailbox full",
        _ => "250 2.1.5 OK",
    }
}

async fn smtp_server(password: &'static str) -> (u16, Arc<Mutex<Vec<Session>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sessions = Arc::new(Mutex::new(Vec::new()));
    let store = sessions.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                let mut s = Session::default();
                write.write_all(b"220 mock ESMTP\r\n").await.unwrap();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: String = if upper.starts_with("EHLO") {
                        "250-mock\r\n250-8BITMIME\r\n250 AUTH PLAIN LOGIN".into()
                    } else if upper.starts_with("AUTH PLAIN") {
                        let b64 = line.split_whitespace().nth(2).unwrap_or_default();
                        let decoded = base64::engine::general_purpose::STANDARD
                            .decode(b64)
                            .unwrap_or_default();
                        let decoded = String::from_utf8_lossy(&decoded).to_string();
                        s.auth = Some(decoded.clone());
                        if decoded.ends_with(&format!("\0{password}")) {
                            "235 2.7.0 Authentication successful".into()
                        } else {
                            "535 5.7.8 Authentication credentials invalid".into()
                        }
                    } else if upper.starts_with("MAIL FROM:") {
                        s.mail_from = Some(line[10..].trim().to_string());
                        s.rcpt.clear();
                        "250 2.1.0 OK".into()
                    } else if upper.starts_with("RCPT TO:") {
                        let address = line[8..].trim().to_string();
                        let reply = rcpt_reply(&address);
                        s.rcpt.push(address);
                        reply.into()
                    } else if upper == "DATA" {
                        write.write_all(b"354 go ahead\r\n").await.unwrap();
                        let mut body = Vec::new();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            body.push(l);
                        }
                        s.data.push(body.join("\r\n"));
                        store.lock().unwrap().push(s.clone());
                        "250 2.0.0 queued".into()
                    } else if upper.starts_with("QUIT") {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        break;
                    } else {
                        // RSET, NOOP and anything else.
                        "250 OK".into()
                    };
                    if write
                        .write_all(format!("{reply}\r\n").as_bytes())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    (port, sessions)
}

fn adapter(port: u16, password: &str) -> Arc<dyn msghub_actors::provider::Provider> {
    msghub_providers::build(
        ChannelType::Email,
        &json!({
            "host": "127.0.0.1", "port": port, "tls": "none",
            "username": "hub", "password": password,
            "from": "Msghub <hub@example.com>", "pool_size": 2
        }),
        &options(),
    )
    .unwrap()
}

fn content() -> Value {
    json!({"subject": "订单已发货", "text": "<p>Your order shipped.</p>", "files": []})
}

#[tokio::test]
async fn ok_submits_one_message_per_recipient() {
    let (port, sessions) = smtp_server("pw").await;
    let provider = adapter(port, "pw");
    assert_eq!(provider.max_batch(), 1);
    let targets = targets(&["alice@example.org", "bob@example.org"]);
    let content = content();
    let out = provider
        .send(SendRequest {
            msgid: 42,
            content: &content,
            targets: &targets,
            ttl: None,
        })
        .await;
    assert_eq!(out.len(), 2);
    assert_eq!(
        (out[0].class, out[0].code.as_str()),
        (OutcomeClass::Ok, "250")
    );
    assert_eq!(out[0].provider_id.as_deref(), Some("<42.100@example.com>"));
    assert_eq!(out[1].provider_id.as_deref(), Some("<42.101@example.com>"));

    let sessions = sessions.lock().unwrap().clone();
    assert_eq!(sessions.len(), 2);
    let mut recipients: Vec<_> = sessions.iter().flat_map(|s| s.rcpt.clone()).collect();
    recipients.sort();
    assert_eq!(recipients, ["<alice@example.org>", "<bob@example.org>"]);
    let alice = sessions
        .iter()
        .find(|s| s.rcpt[0].contains("alice"))
        .unwrap();
    assert_eq!(alice.auth.as_deref(), Some("\0hub\0pw"));
    assert_eq!(alice.mail_from.as_deref(), Some("<hub@example.com>"));
    let data = &alice.data[0];
    assert!(data.contains("Message-ID: <42.100@example.com>"), "{data}");
    assert!(
        data.contains("Content-Type: text/html; charset=utf-8"),
        "{data}"
    );
    assert!(data.contains("Subject: =?utf-8?"), "{data}");
}

#[tokio::test]
async fn recipient_replies_are_classified_in_order() {
    let (port, _) = smtp_server("pw").await;
    let targets = targets(&[
        "ok@example.org",
        "gone@example.org",
        "spam@example.org",
        "busy@example.org",
        "grey@example.org",
        "full@example.org",
        "not an address",
    ]);
    let content = content();
    let out = adapter(port, "pw")
        .send(SendRequest {
            msgid: 1,
            content: &content,
            targets: &targets,
            ttl: None,
        })
        .await;
    let got: Vec<_> = out.iter().map(|o| (o.class, o.code.as_str())).collect();
    assert_eq!(
        got,
        [
            (OutcomeClass::Ok, "250"),
            (OutcomeClass::Gone, "550"),
            (OutcomeClass::Perm, "550"),
            (OutcomeClass::Rate, "421"),
            (OutcomeClass::Retry, "451"),
            (OutcomeClass::Retry, "552"),
            (OutcomeClass::Gone, "invalid_address"),
        ]
    );
    assert!(out[1].message.contains("5.1.1"), "{}", out[1].message);
}

#[tokio::test]
async fn bad_password_is_perm_and_not_echoed() {
    let (port, _) = smtp_server("right").await;
    let targets = targets(&["ok@example.org"]);
    let content = content();
    let out = adapter(port, "wrong-password")
        .send(SendRequest {
            msgid: 1,
            content: &content,
            targets: &targets,
            ttl: None,
        })
        .await;
    assert_eq!(
        (out[0].class, out[0].code.as_str()),
        (OutcomeClass::Perm, "535")
    );
    assert!(!out[0].message.contains("wrong-password"));
}

#[tokio::test]
async fn unreachable_relay_is_retry() {
    let url = closed_port_url().await;
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let targets = targets(&["ok@example.org"]);
    let content = content();
    let out = adapter(port, "pw")
        .send(SendRequest {
            msgid: 1,
            content: &content,
            targets: &targets,
            ttl: None,
        })
        .await;
    assert_eq!(out[0].class, OutcomeClass::Retry, "{:?}", out[0]);
}

#[tokio::test]
async fn attachments_are_refused_before_connecting() {
    let (port, sessions) = smtp_server("pw").await;
    let targets = targets(&["ok@example.org"]);
    let content =
        json!({"subject": "s", "text": "t", "files": ["https://files.example.com/a.pdf"]});
    let out = adapter(port, "pw")
        .send(SendRequest {
            msgid: 1,
            content: &content,
            targets: &targets,
            ttl: None,
        })
        .await;
    assert_eq!(out[0].class, OutcomeClass::Perm);
    assert_eq!(out[0].message, "attachments not supported yet");
    assert!(sessions.lock().unwrap().is_empty());
}
