//! Concurrency and lifecycle: many parallel calls are all recorded, events are globally ordered,
//! and `stop` closes both listeners.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Instant;

use base64::Engine as _;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_jpush_and_smtp_are_all_recorded() {
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("sim-app-key:sim-master-secret")
    );
    let url = format!("{}/v3/push", sim.http_url());
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..32 {
        let (c, url, auth) = (c.clone(), url.clone(), auth.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let ids: Vec<String> = (0..200).map(|k| format!("w{w}-{i}-{k}")).collect();
                let body = json!({"platform":"all","audience":{"registration_id":ids},"message":{"msg_content":"x"}});
                let r = c.post(&url).header("Authorization", &auth).json(&body).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 200);
            }
        }));
    }
    let addr = sim.smtp_addr;
    let mut smtp_tasks = Vec::new();
    for w in 0..8 {
        smtp_tasks.push(tokio::spawn(async move {
            let (r, mut wr) = tokio::net::TcpStream::connect(addr).await.unwrap().into_split();
            let mut r = BufReader::new(r);
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            wr.write_all(b"EHLO x\r\n").await.unwrap();
            loop {
                line.clear();
                r.read_line(&mut line).await.unwrap();
                if line.starts_with("250 ") {
                    break;
                }
            }
            for i in 0..50 {
                // pipelined transaction
                let tx = format!(
                    "MAIL FROM:<b@x>\r\nRCPT TO:<m{w}-{i}@y>\r\nRCPT TO:<all@y>\r\nDATA\r\nSubject: s\r\n\r\nbody\r\n.\r\n"
                );
                wr.write_all(tx.as_bytes()).await.unwrap();
                for expect in ["250", "250", "250", "354", "250"] {
                    line.clear();
                    r.read_line(&mut line).await.unwrap();
                    assert!(line.starts_with(expect), "{line}");
                }
            }
        }));
    }
    for t in tasks.into_iter().chain(smtp_tasks) {
        t.await.unwrap();
    }
    let took = t.elapsed();
    assert_eq!(sim.state.total("app"), 32 * 25 * 200);
    assert_eq!(sim.state.received("app").len(), 32 * 25 * 200);
    assert_eq!(sim.state.total("email"), 8 * 50 * 2);
    assert_eq!(sim.state.count("email", "all@y"), 400);
    let ev = sim.state.all_events();
    assert_eq!(ev.len(), 32 * 25 + 400);
    assert!(ev.windows(2).all(|w| w[0].seq < w[1].seq));
    eprintln!("recorded {} deliveries in {took:?}", 32 * 25 * 200 + 800);

    let (http, smtp) = (sim.http_addr, sim.smtp_addr);
    sim.stop().await;
    assert!(tokio::net::TcpStream::connect(http).await.is_err());
    assert!(tokio::net::TcpStream::connect(smtp).await.is_err());
}

#[actix_web::test]
async fn start_stop_inside_actix_system() {
    for _ in 0..3 {
        let sim = common::sim(|_| {}).await;
        let r = common::client()
            .get(format!("{}/sim/healthz", sim.http_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        sim.stop().await;
    }
}

#[tokio::test]
async fn start_in_current_thread_tokio_runtime() {
    let sim = common::sim(|_| {}).await;
    let r = common::client()
        .get(format!("{}/sim/healthz", sim.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    sim.stop().await;
}
