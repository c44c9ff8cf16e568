//! SMTP sink tests over real TCP: raw conversation with AUTH, faults, and lettre's pooled client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use msghub_sim::FaultPlan;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Client {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> (Self, String) {
        let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut c = Client {
            r: BufReader::new(r),
            w,
        };
        let greeting = c.read_reply().await;
        (c, greeting)
    }

    /// Reads a (possibly multi-line) reply and returns it joined with '\n'.
    async fn read_reply(&mut self) -> String {
        let mut all = Vec::new();
        loop {
            let mut line = String::new();
            assert!(
                self.r.read_line(&mut line).await.unwrap() > 0,
                "connection closed"
            );
            let line = line.trim_end().to_string();
            let more = line.as_bytes().get(3) == Some(&b'-');
            all.push(line);
            if !more {
                return all.join("\n");
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.w
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.read_reply().await
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_with_auth_and_multiple_rcpt() {
    let sim = common::sim(|c| {
        c.smtp_username = Some("user".into());
        c.smtp_password = Some("pass".into());
    })
    .await;
    let (mut c, greet) = Client::connect(sim.smtp_addr).await;
    assert!(greet.starts_with("220 "));
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"));
    assert!(c.cmd("MAIL FROM:<a@x.test>").await.starts_with("530"));
    assert!(
        c.cmd(&format!("AUTH PLAIN {}", b64("\0user\0bad")))
            .await
            .starts_with("535")
    );
    assert!(
        c.cmd(&format!("AUTH PLAIN {}", b64("\0user\0pass")))
            .await
            .starts_with("235")
    );

    for round in 0..2 {
        assert!(
            c.cmd("MAIL FROM:<bounce@x.test> BODY=8BITMIME")
                .await
                .starts_with("250")
        );
        assert!(c.cmd("RCPT TO:<one@y.test>").await.starts_with("250"));
        assert!(c.cmd("RCPT TO:<Two@y.test>").await.starts_with("250"));
        assert!(
            c.cmd("RCPT TO:<unknown-3@y.test>")
                .await
                .starts_with("550 5.1.1")
        );
        assert!(c.cmd("DATA").await.starts_with("354"));
        c.w.write_all(b"Subject: hi\r\n\r\n..leading dot\r\nbody\r\n")
            .await
            .unwrap();
        let done = c.cmd(".").await;
        assert!(done.starts_with("250"), "round {round}: {done}");
    }
    assert!(c.cmd("NOOP").await.starts_with("250"));
    assert!(c.cmd("MAIL FROM:<bounce@x.test>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<three@y.test>").await.starts_with("250"));
    assert!(c.cmd("RSET").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("503"));
    assert!(c.cmd("QUIT").await.starts_with("221"));

    assert_eq!(sim.state.count("email", "one@y.test"), 2);
    assert_eq!(sim.state.count("email", "Two@y.test"), 2);
    assert_eq!(sim.state.count("email", "three@y.test"), 0);
    assert_eq!(sim.state.count("email", "unknown-3@y.test"), 0);
    assert_eq!(sim.state.total("email"), 4);
    assert_eq!(sim.state.events("email").len(), 2);

    // AUTH LOGIN on a new connection
    let (mut c, _) = Client::connect(sim.smtp_addr).await;
    c.cmd("EHLO client.test").await;
    assert!(c.cmd("AUTH LOGIN").await.starts_with("334"));
    assert!(c.cmd(&b64("user")).await.starts_with("334"));
    assert!(c.cmd(&b64("pass")).await.starts_with("235"));
    sim.stop().await;
}

async fn send(c: &mut Client, to: &str) -> String {
    assert!(c.cmd("MAIL FROM:<b@x.test>").await.starts_with("250"));
    let rc = c.cmd(&format!("RCPT TO:<{to}>")).await;
    if !rc.starts_with("250") {
        return rc;
    }
    c.cmd("DATA").await;
    c.w.write_all(b"Subject: x\r\n\r\nhello\r\n").await.unwrap();
    c.cmd(".").await
}

#[actix_web::test]
async fn faults() {
    let sim = common::sim(|_| {}).await;
    let (mut c, _) = Client::connect(sim.smtp_addr).await;
    c.cmd("HELO client.test").await;
    sim.state.set_faults(
        "email",
        FaultPlan {
            fail_next: 1,
            fail_status: 503,
            ..FaultPlan::default()
        },
    );
    assert!(send(&mut c, "a@y.test").await.starts_with("451 4.3.0"));
    sim.state.set_faults(
        "email",
        FaultPlan {
            fail_code: Some("552".into()),
            fail_code_next: 1,
            ..FaultPlan::default()
        },
    );
    assert!(send(&mut c, "a@y.test").await.starts_with("552 5.2.2"));
    sim.state.set_faults(
        "email",
        FaultPlan {
            perm_addresses: vec!["dead@y.test".into()],
            ..FaultPlan::default()
        },
    );
    assert!(send(&mut c, "dead@y.test").await.starts_with("550 5.1.1"));
    c.cmd("RSET").await;
    assert!(send(&mut c, "a@y.test").await.starts_with("250"));
    sim.state.set_faults(
        "email",
        FaultPlan {
            fail_next: 1,
            fail_status: 429,
            ..FaultPlan::default()
        },
    );
    assert!(send(&mut c, "a@y.test").await.starts_with("421"));
    assert_eq!(sim.state.count("email", "a@y.test"), 1);
    assert_eq!(sim.state.calls("email"), 4);
    assert_eq!(sim.state.failed_calls("email"), 3);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lettre_pooled_client() {
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let sim = common::sim(|c| {
        c.smtp_username = Some("u".into());
        c.smtp_password = Some("p".into());
    })
    .await;
    for mech in [Mechanism::Plain, Mechanism::Login] {
        let t: AsyncSmtpTransport<Tokio1Executor> =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(sim.smtp_addr.ip().to_string())
                .port(sim.smtp_addr.port())
                .credentials(Credentials::new("u".into(), "p".into()))
                .authentication(vec![mech])
                .build();
        for i in 0..3 {
            let m = Message::builder()
                .from("Hub <hub@x.test>".parse().unwrap())
                .to(format!("r{i}@y.test").parse().unwrap())
                .cc("cc@y.test".parse().unwrap())
                .subject("hello")
                .body(".dot\nline two".to_string())
                .unwrap();
            t.send(m).await.unwrap();
        }
        let m = Message::builder()
            .from("hub@x.test".parse().unwrap())
            .to("unknown@y.test".parse().unwrap())
            .subject("x")
            .body("x".to_string())
            .unwrap();
        let e = t.send(m).await.unwrap_err();
        assert!(e.is_permanent(), "{e}");
    }
    assert_eq!(sim.state.count("email", "cc@y.test"), 6);
    assert_eq!(sim.state.count("email", "r0@y.test"), 2);

    let bad: AsyncSmtpTransport<Tokio1Executor> =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(sim.smtp_addr.ip().to_string())
            .port(sim.smtp_addr.port())
            .credentials(Credentials::new("u".into(), "wrong".into()))
            .build();
    let m = Message::builder()
        .from("hub@x.test".parse().unwrap())
        .to("a@y.test".parse().unwrap())
        .subject("x")
        .body("x".to_string())
        .unwrap();
    assert!(bad.send(m).await.is_err());
    sim.stop().await;
}
