//! Email bounces end to end: the hub sends with return paths naming each delivery, the
//! simulator's mail server bounces some recipients with delivery status notifications to
//! those return paths, and the hub's bounce listener applies them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, spawn_app_with};

const DOMAIN: &str = "bounces.msghub.test";

/// Held by the tests that count email receipts and bounce results: the metrics recorder is
/// the process's, shared by every test running at the same time.
static EMAIL_METRICS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const APPLIED: &str = r#"msghub_receipts_total{channel_type="email",result="applied"}"#;
const SOFT_LIMIT: &str = r#"msghub_bounces_total{result="soft_limit"}"#;

impl TestApp {
    /// How much `series` grew since `before` (counters are the process's, and other tests
    /// ran before this one).
    async fn grown(&self, series: &str, before: &BTreeMap<String, u64>) -> u64 {
        self.metric(series).await - before.get(series).copied().unwrap_or(0)
    }

    async fn snapshot(&self, series: &[&str]) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for s in series {
            out.insert(s.to_string(), self.metric(s).await);
        }
        out
    }
}

/// An SMTP conversation with the bounce listener: each command's reply (its last line).
struct Smtp {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Smtp {
    async fn connect(addr: std::net::SocketAddr) -> (Smtp, String) {
        let (r, w) = TcpStream::connect(addr)
            .await
            .expect("connect")
            .into_split();
        let mut smtp = Smtp {
            reader: BufReader::new(r),
            writer: w,
        };
        let greeting = smtp.reply().await;
        (smtp, greeting)
    }

    async fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).await.expect("reply");
            assert!(!line.is_empty(), "connection closed");
            // `250-…` continues, `250 …` ends a reply.
            if line.as_bytes().get(3) != Some(&b'-') {
                return line.trim_end().to_string();
            }
        }
    }

    async fn say(&mut self, command: &str) -> String {
        self.writer
            .write_all(format!("{command}\r\n").as_bytes())
            .await
            .expect("write");
        self.reply().await
    }
}

fn code(reply: &str) -> &str {
    reply.get(..3).unwrap_or(reply)
}

/// A notification for `recipient` in the shape mail servers send.
fn notification(return_path: &str, recipient: &str, action: &str, status: &str) -> String {
    format!(
        "From: MAILER-DAEMON@mx.example.org\r\nTo: <{return_path}>\r\nSubject: Undelivered Mail\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n\
--b1\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n\
--b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n\
Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n\
Diagnostic-Code: smtp; 550 {status} no such user\r\n\r\n--b1--\r\n"
    )
}

impl TestApp {
    /// Address → status of one message's deliveries.
    async fn email_states(&self, msgid: &str) -> BTreeMap<String, String> {
        self.deliveries(msgid)
            .await
            .into_iter()
            .map(|d| {
                let text = |k: &str| d[k].as_str().expect(k).to_string();
                (text("address"), text("status"))
            })
            .collect()
    }

    async fn send_email(&self, addresses: &[&str]) -> String {
        let msgid = self
            .send_ok(
                "/v1/sent",
                json!({"aud_email": [{"data": addresses}],
                       "msg_email": {"subject": "Your order", "text": "<p>shipped</p>"}}),
            )
            .await;
        self.wait_done(&msgid, Duration::from_secs(30)).await;
        msgid
    }

    async fn sim_bounces(&self) -> Value {
        self.client
            .get(format!("{}/sim/bounces", self.sim.http_url()))
            .send()
            .await
            .expect("sim bounces")
            .json()
            .await
            .expect("json")
    }

    /// The return path the simulator's mail server received `address`'s last message with.
    fn return_path(&self, address: &str) -> String {
        let headers = self.sim.state.mail_headers(address).expect("mail");
        let line = headers
            .lines()
            .find_map(|l| l.strip_prefix("Return-Path: <"))
            .expect("Return-Path");
        line.trim_end_matches('>').to_string()
    }
}

/// A hub with return paths on [`DOMAIN`] and its bounce listener, set further by `tweak`;
/// the listener's address.
async fn spawn_with_bounces(
    tweak: impl FnOnce(&mut msghub::settings::BounceSettings),
) -> (TestApp, std::net::SocketAddr) {
    let app = spawn_app_with(|s| {
        s.bounces.domain = DOMAIN.into();
        s.bounces.smtp_listen = "127.0.0.1:0".into();
        tweak(&mut s.bounces);
    })
    .await;
    let listener = app.bounce_addr.expect("bounce listener");
    (app, listener)
}

#[actix_web::test]
async fn bounces_mark_their_delivery_and_suppress_gone_mailboxes() {
    let _metrics = EMAIL_METRICS.lock().await;
    let (app, listener) = spawn_with_bounces(|b| b.max_message_bytes = 4096).await;
    let counted = [
        APPLIED,
        r#"msghub_receipts_total{channel_type="email",result="duplicate"}"#,
        r#"msghub_bounces_total{result="unknown_address"}"#,
        r#"msghub_bounces_total{result="not_a_report"}"#,
        r#"msghub_bounces_total{result="cut"}"#,
        r#"msghub_bounces_total{result="complaint"}"#,
        r#"msghub_bounces_total{result="unknown_complaint"}"#,
        r#"msghub_bounces_total{result="no_change"}"#,
    ];
    let before = app.snapshot(&counted).await;
    app.sim_post(
        "/sim/bounces",
        json!({"relay": listener.to_string(), "delay_ms": 20,
               "feedback_address": format!("bounce+fbl@{DOMAIN}")}),
    )
    .await;

    // The simulator bounces the first three after accepting them: a mailbox that does not
    // exist, a full one, and one delayed (not final); the fourth's mailbox provider reports
    // that its user marked the message as spam.
    let addresses = [
        "hardbounce-1@example.org",
        "fullbox-1@example.org",
        "delayed-1@example.org",
        "complainer-1@example.org",
        "ok-1@example.org",
    ];
    let msgid = app.send_email(&addresses).await;
    let started = Instant::now();
    loop {
        let b = app.sim_bounces().await;
        if b["sent"] == 4 {
            assert_eq!(b["refused"], 0, "{b}");
            break;
        }
        assert!(
            b["refused"] == 0 && started.elapsed() < Duration::from_secs(30),
            "{b}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The listener answers only after the receipt's commit: nothing to wait for.
    let states = app.email_states(&msgid).await;
    let expected: BTreeMap<String, String> = [
        ("complainer-1@example.org", "delivered"),
        ("delayed-1@example.org", "submitted"),
        ("fullbox-1@example.org", "undelivered"),
        ("hardbounce-1@example.org", "undelivered"),
        ("ok-1@example.org", "submitted"),
    ]
    .into_iter()
    .map(|(a, s)| (a.to_string(), s.to_string()))
    .collect();
    assert_eq!(states, expected);
    assert_eq!(app.grown(APPLIED, &before).await, 3);
    // The mailbox that does not exist is suppressed, with the notification's status, and
    // mail to it is not sent again; the complainer is opted out of marketing.
    let suppressed: BTreeMap<String, (String, Value)> = app
        .suppressed("?channel_type=email")
        .await
        .into_iter()
        .map(|(_, address, reason, code)| (address, (reason, code)))
        .collect();
    let expected: BTreeMap<String, (String, Value)> = [
        (
            "complainer-1@example.org",
            ("opted_out", json!("complaint")),
        ),
        ("hardbounce-1@example.org", ("gone", json!("5.1.1"))),
    ]
    .into_iter()
    .map(|(a, (r, c))| (a.to_string(), (r.to_string(), c)))
    .collect();
    assert_eq!(suppressed, expected);
    // No more bounces from the simulator: the full mailbox below would bounce again, at a
    // time of the simulator's choosing, into the counts this test checks at its end.
    let stopped = app
        .client
        .delete(format!("{}/sim/bounces", app.sim.http_url()))
        .send()
        .await
        .expect("stop the simulator's bounces");
    assert!(stopped.status().is_success(), "{}", stopped.status());
    // (Raw addresses are the sender's own choice; users' bindings are checked.)
    app.add_users(
        [
            ("u-hard", "hardbounce-1@example.org"),
            ("u-full", "fullbox-1@example.org"),
        ]
        .into_iter()
        .map(|(u, a)| json!({"userid": u, "add": {"email": [a]}})),
    )
    .await;
    let again = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["u-hard", "u-full"],
                   "msg_email": {"subject": "Your order", "text": "<p>shipped</p>"}}),
        )
        .await;
    app.wait_done(&again, Duration::from_secs(30)).await;
    let again = app.email_states(&again).await;
    assert_eq!(again["hardbounce-1@example.org"], "skipped", "{again:?}");
    assert_eq!(again["fullbox-1@example.org"], "submitted", "{again:?}");

    // By hand: what the listener refuses, and a notification applied once.
    let (mut smtp, greeting) = Smtp::connect(listener).await;
    assert_eq!(code(&greeting), "220");
    assert_eq!(code(&smtp.say("MAIL FROM:<>").await), "503", "EHLO first");
    assert_eq!(code(&smtp.say("EHLO mx.example.org").await), "250");
    // A declared size over the limit is taken: the notification is cut to it.
    assert_eq!(code(&smtp.say("MAIL FROM:<> SIZE=99999999").await), "250");
    let ok_path = app.return_path("ok-1@example.org");
    assert!(ok_path.ends_with(&format!("@{DOMAIN}")), "{ok_path}");
    // Addresses this hub did not make: another domain, a forged tag.
    let (local, _) = ok_path.split_once('@').expect("@");
    let forged_tag = format!(
        "{}{}@{DOMAIN}",
        &local[..local.len() - 1],
        if local.ends_with('0') { '1' } else { '0' }
    );
    for refused in ["someone@example.org", forged_tag.as_str()] {
        let reply = smtp.say(&format!("RCPT TO:<{refused}>")).await;
        assert!(reply.starts_with("550 5.1.1"), "{refused}: {reply}");
    }
    assert_eq!(code(&smtp.say("DATA").await), "554", "no recipient");
    assert_eq!(code(&smtp.say("RSET").await), "250");
    // A message that is not a notification (an auto-reply).
    assert_eq!(code(&smtp.say("MAIL FROM:<>").await), "250");
    assert_eq!(
        code(&smtp.say(&format!("RCPT TO:<{ok_path}>")).await),
        "250"
    );
    assert_eq!(code(&smtp.say("DATA").await), "354");
    let reply = smtp
        .say("Subject: Out of office\r\n\r\nI am away.\r\n.")
        .await;
    assert!(reply.starts_with("554 5.6.0"), "{reply}");
    // A notification, twice: applied, then a duplicate — the second quoting an original
    // larger than `max_message_bytes`, cut after its status part. A line of its text starts
    // with a dot (stuffed on the wire).
    for quoted in [0, 8 * 1024] {
        assert_eq!(code(&smtp.say("MAIL FROM:<>").await), "250");
        assert_eq!(
            code(
                &smtp
                    .say(&format!("RCPT TO:<{}>", ok_path.to_uppercase()))
                    .await
            ),
            "250"
        );
        assert_eq!(code(&smtp.say("DATA").await), "354");
        let report = notification(&ok_path, "ok-1@example.org", "failed", "5.1.1")
            .replace("Sorry.", ".Sorry, from the mail system.");
        let original = "Subject: Your order\r\n\r\n".to_string()
            + &"the original message, quoted whole\r\n".repeat(quoted / 36);
        let report = report.replace(
            "--b1--",
            &format!("--b1\r\nContent-Type: message/rfc822\r\n\r\n{original}\r\n--b1--"),
        );
        assert!(report.len() > quoted, "{}", report.len());
        let stuffed = report.replace("\r\n.", "\r\n..");
        assert!(stuffed.contains("\r\n..Sorry"), "{stuffed}");
        assert_eq!(code(&smtp.say(&format!("{stuffed}.")).await), "250");
    }
    // Abuse feedback reports (ARF) at the feedback address: one about a message of this hub
    // (by its return path) opts the address out of marketing and shows the message arrived;
    // one naming a return path the hub did not make is refused; a "not spam" report changes
    // nothing.
    let delayed_path = app.return_path("delayed-1@example.org");
    let full_path = app.return_path("fullbox-1@example.org");
    for (path, kind, answer) in [
        (delayed_path.as_str(), "abuse", "250"),
        (forged_tag.as_str(), "abuse", "554"),
        (full_path.as_str(), "not-spam", "250"),
    ] {
        assert_eq!(
            code(&smtp.say("MAIL FROM:<fbl@mail.example.net>").await),
            "250"
        );
        let to_fbl = smtp.say(&format!("RCPT TO:<bounce+FBL@{DOMAIN}>")).await;
        assert_eq!(code(&to_fbl), "250", "{to_fbl}");
        assert_eq!(code(&smtp.say("DATA").await), "354");
        let report = format!(
            "From: <fbl@mail.example.net>\r\nSubject: complaint\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=feedback-report; boundary=\"f\"\r\n\r\n\
--f\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n\
--f\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: {kind}\r\nVersion: 1\r\n\
Original-Mail-From: <{path}>\r\nOriginal-Rcpt-To: <delayed-1@example.org>\r\n\r\n\
--f\r\nContent-Type: text/rfc822-headers\r\n\r\nSubject: Your order\r\n\r\n--f--\r\n."
        );
        assert_eq!(code(&smtp.say(&report).await), answer, "{path}");
    }
    assert_eq!(code(&smtp.say("QUIT").await), "221");
    let states = app.email_states(&msgid).await;
    assert_eq!(states["ok-1@example.org"], "undelivered");
    assert_eq!(states["delayed-1@example.org"], "delivered");
    assert_eq!(states["fullbox-1@example.org"], "undelivered");
    let suppressed = app.suppressed("?channel_type=email").await;
    assert!(
        suppressed.contains(&(
            "email".to_string(),
            "delayed-1@example.org".to_string(),
            "opted_out".to_string(),
            json!("complaint")
        )),
        "{suppressed:?}"
    );
    assert!(
        !suppressed.iter().any(|s| s.1 == "fullbox-1@example.org"),
        "{suppressed:?}"
    );
    for (series, n) in counted.into_iter().zip([5, 1, 2, 1, 1, 2, 1, 2]) {
        assert_eq!(app.grown(series, &before).await, n, "{series}");
    }
}

/// Post one notification to the listener, as a mail server does; the reply to its data.
async fn notify(
    listener: std::net::SocketAddr,
    return_path: &str,
    recipient: &str,
    status: &str,
) -> String {
    let (mut smtp, _) = Smtp::connect(listener).await;
    assert_eq!(code(&smtp.say("EHLO mx.example.org").await), "250");
    assert_eq!(code(&smtp.say("MAIL FROM:<>").await), "250");
    assert_eq!(
        code(&smtp.say(&format!("RCPT TO:<{return_path}>")).await),
        "250"
    );
    assert_eq!(code(&smtp.say("DATA").await), "354");
    let report = notification(return_path, recipient, "failed", status);
    smtp.say(&format!("{report}.")).await
}

/// A mailbox that keeps failing softly (full, its domain unreachable) is suppressed as gone
/// at `bounces.soft_limit` bounces; a notification sent twice counts once, policy refusals
/// never count, and lifting the suppression starts the count again.
#[actix_web::test]
async fn an_address_that_keeps_bouncing_softly_is_suppressed_at_the_limit() {
    let _metrics = EMAIL_METRICS.lock().await;
    // No gap between counted bounces: each notification below counts (the gap itself is
    // tested in storage).
    let (app, listener) = spawn_with_bounces(|b| {
        b.soft_limit = 3;
        b.soft_gap_hours = 0;
    })
    .await;
    let before = app.snapshot(&[SOFT_LIMIT]).await;
    let (full, strict) = ("full-2@example.org", "strict-2@example.org");
    let mut sent = Vec::new();
    for _ in 0..3 {
        let msgid = app.send_email(&[full, strict]).await;
        sent.push((msgid, app.return_path(full), app.return_path(strict)));
    }
    for (_, _, strict_path) in &sent {
        assert_eq!(
            code(&notify(listener, strict_path, strict, "5.7.1").await),
            "250"
        );
    }
    let (first, second, third) = (&sent[0], &sent[1], &sent[2]);
    for _ in 0..2 {
        assert_eq!(
            code(&notify(listener, &first.1, full, "5.2.2").await),
            "250"
        );
    }
    assert_eq!(
        code(&notify(listener, &second.1, full, "4.4.7").await),
        "250"
    );
    // Two soft bounces (the first notification counted once): nothing suppressed yet.
    assert!(app.suppressed("?channel_type=email").await.is_empty());
    assert_eq!(app.grown(SOFT_LIMIT, &before).await, 0);
    assert_eq!(
        code(&notify(listener, &third.1, full, "5.2.2").await),
        "250"
    );
    let suppressed = app.suppressed("?channel_type=email").await;
    assert_eq!(
        suppressed,
        vec![(
            "email".to_string(),
            full.to_string(),
            "gone".to_string(),
            json!("5.2.2")
        )]
    );
    assert_eq!(app.grown(SOFT_LIMIT, &before).await, 1);
    for (msgid, _, _) in &sent {
        let states = app.email_states(msgid).await;
        assert_eq!(states[full], "undelivered", "{states:?}");
        assert_eq!(states[strict], "undelivered", "{states:?}");
    }
    // Lifted by hand: its next soft bounce is its first.
    let (status, body) = app
        .suppressions_call(
            "DELETE",
            json!({"channel_type": "email", "addresses": [full]}),
            crate::helpers::ADMIN_TOKEN,
        )
        .await;
    assert_eq!((status, &body["removed"]), (200, &json!(1)), "{body}");
    let msgid = app.send_email(&[full]).await;
    let path = app.return_path(full);
    assert_eq!(code(&notify(listener, &path, full, "5.2.2").await), "250");
    assert!(app.suppressed("?channel_type=email").await.is_empty());
    assert_eq!(app.email_states(&msgid).await[full], "undelivered");
}

/// Sessions beyond `bounces.max_sessions` are turned away with a 421 (the sending server
/// tries again later), and a session that ends gives its place back.
#[actix_web::test]
async fn sessions_beyond_the_limit_are_told_to_come_back() {
    let (app, listener) = spawn_with_bounces(|b| b.max_sessions = 1).await;
    let (mut first, greeting) = Smtp::connect(listener).await;
    assert_eq!(code(&greeting), "220");
    let (_, busy) = Smtp::connect(listener).await;
    assert!(busy.starts_with("421 4.3.2"), "{busy}");
    assert_eq!(code(&first.say("QUIT").await), "221");
    // The first session's place is free once it has ended.
    let started = Instant::now();
    loop {
        let (_, greeting) = Smtp::connect(listener).await;
        if code(&greeting) == "220" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{greeting}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(app.metric(r#"msghub_bounces_total{result="busy"}"#).await >= 1);
}
