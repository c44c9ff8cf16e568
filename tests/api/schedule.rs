//! Scheduled sends (`option.send_at`: listed, rescheduled, cancelled, released on time, also
//! after a restart) and retracts (`POST /v1/retract/{msgid}`: stop, recall, report).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::callbacks::{FLUSH_MS, start_receiver};
use crate::crash::spawn_process_app;
use crate::helpers::{ADMIN_TOKEN, TestApp, app_msg, spawn_app, spawn_app_with};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `send_at` `ms` from now, as RFC 3339 (in +08:00, as a JUMS client in China writes it), and
/// as unix ms.
fn at(ms: i64) -> (String, i64) {
    let t = now_ms() + ms;
    let text = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(t)
        .unwrap()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, false);
    (text, t)
}

fn one_user_send(userid: &str, send_at: &str) -> Value {
    json!({"aud_userid": [userid], "msg_app": app_msg(),
           "option": {"send_at": send_at, "sendno": format!("s-{userid}")}})
}

async fn add_app_user(app: &TestApp, userid: &str) -> String {
    let regid = format!("reg-{userid}");
    app.add_users(std::iter::once(
        json!({"userid": userid, "add": {"app": [regid.clone()]}}),
    ))
    .await;
    regid
}

/// Sleep until the wall clock passes `t` (unix ms).
async fn sleep_past(t: i64) {
    let left = t - now_ms();
    if left > 0 {
        tokio::time::sleep(Duration::from_millis(left.unsigned_abs())).await;
    }
}

impl TestApp {
    /// An `/api` request that may fail: (status, body).
    pub(crate) async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn reschedule(&self, msgid: &str, send_at: &str) -> (u16, Value) {
        self.admin(
            reqwest::Method::PATCH,
            &format!("/api/messages/{msgid}"),
            Some(json!({"send_at": send_at})),
        )
        .await
    }

    async fn cancel(&self, msgid: &str) -> (u16, Value) {
        self.admin(
            reqwest::Method::POST,
            &format!("/api/messages/{msgid}/cancel"),
            None,
        )
        .await
    }

    async fn scheduled(&self, query: &str) -> Value {
        let (status, body) = self
            .admin(
                reqwest::Method::GET,
                &format!("/api/messages?state=scheduled{query}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn scheduled_ids(&self) -> Vec<String> {
        self.scheduled("").await["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["msgid"].as_str().unwrap().to_string())
            .collect()
    }

    async fn retract(&self, msgid: &str) -> (u16, Value) {
        self.v1(&format!("/v1/retract/{msgid}"), &json!({})).await
    }

    /// Every delivery of a message, through the paged API.
    pub(crate) async fn all_deliveries(&self, msgid: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page: Value = self
                .admin_get(&format!(
                    "/api/messages/{msgid}/deliveries?after={after}&limit=1000"
                ))
                .await
                .json()
                .await
                .unwrap();
            out.extend(page["deliveries"].as_array().unwrap().iter().cloned());
            match page["next_after"].as_i64() {
                Some(next) => after = next,
                None => return out,
            }
        }
    }
}

#[actix_web::test]
async fn a_scheduled_message_due_while_the_server_is_down_is_sent_once_after_restart() {
    let (app, process, mut server) = spawn_process_app().await;
    let regid = add_app_user(&app, "sleeper").await;

    let (send_at, due) = at(3_000);
    let msgid = app
        .send_ok("/v1/sent", one_user_send("sleeper", &send_at))
        .await;
    let status = app.status(&msgid).await;
    assert_eq!(status["state"], "scheduled", "{status}");
    assert_eq!(status["not_before"].as_i64(), Some(due));
    assert_eq!(app.scheduled_ids().await, vec![msgid.clone()]);
    server.kill();
    if now_ms() < due {
        assert_eq!(
            app.sim.state.count("app", &regid),
            0,
            "sent before its time"
        );
    }

    // Down past the send time: it is due when the server returns.
    sleep_past(due + 1_000).await;
    let mut server = process.start().await;
    let status = app.wait_done(&msgid, Duration::from_secs(30)).await;
    // Long enough for a second release or sweep to show.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(app.scheduled_ids().await.is_empty());
    server.kill();
    assert_eq!(crate::helpers::totals(&status), (1, 1, 0), "{status}");
    assert_eq!(app.sim.state.count("app", &regid), 1, "exactly once");
}

#[actix_web::test]
async fn a_cancelled_message_is_never_sent_and_cannot_be_edited_or_retracted() {
    let app = spawn_app().await;
    let regid = add_app_user(&app, "u1").await;
    let (send_at, due) = at(2_000);
    let msgid = app.send_ok("/v1/sent", one_user_send("u1", &send_at)).await;

    let (status, body) = app.cancel(&msgid).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("cancelled")),
        "{body}"
    );
    sleep_past(due + 1_500).await;
    assert_eq!(app.sim.state.count("app", &regid), 0);
    assert_eq!(app.status(&msgid).await["state"], "cancelled");
    assert!(app.scheduled_ids().await.is_empty());

    let (status, body) = app.cancel(&msgid).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_scheduled"))
    );
    let (status, body) = app.reschedule(&msgid, &at(60_000).0).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_scheduled"))
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cancelled"),
        "{body}"
    );
    let (status, body) = app.retract(&msgid).await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(4004)), "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("cancelled"),
        "{body}"
    );
}

#[actix_web::test]
async fn rescheduling_moves_when_a_message_is_sent() {
    let app = spawn_app().await;
    let early = add_app_user(&app, "early").await;
    let late = add_app_user(&app, "late").await;
    // Brought forward from an hour to two seconds.
    let a = app
        .send_ok("/v1/sent", one_user_send("early", &at(3_600_000).0))
        .await;
    // Put back from four seconds to an hour.
    let (b_send_at, b_due) = at(4_000);
    let b = app
        .send_ok("/v1/sent", one_user_send("late", &b_send_at))
        .await;

    let (new_at, _) = at(2_000);
    let (status, item) = app.reschedule(&a, &new_at).await;
    assert_eq!(status, 200, "{item}");
    assert_eq!(item["state"], "scheduled");
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(item["send_at"].as_str().unwrap()).unwrap(),
        chrono::DateTime::parse_from_rfc3339(&new_at).unwrap()
    );
    let (status, item) = app.reschedule(&b, &at(3_600_000).0).await;
    assert_eq!(status, 200, "{item}");

    app.wait_done(&a, Duration::from_secs(30)).await;
    assert_eq!(app.sim.state.count("app", &early), 1);
    sleep_past(b_due + 1_500).await;
    assert_eq!(app.sim.state.count("app", &late), 0, "sent at its old time");
    assert_eq!(app.scheduled_ids().await, vec![b.clone()]);

    // A time in the past sends it at once.
    let (status, _) = app.reschedule(&b, &at(-60_000).0).await;
    assert_eq!(status, 200);
    app.wait_done(&b, Duration::from_secs(30)).await;
    assert_eq!(app.sim.state.count("app", &late), 1);
}

#[actix_web::test]
async fn a_scheduled_message_is_valid_for_its_ttl_from_its_send_time() {
    let app = spawn_app().await;
    let on_time = add_app_user(&app, "on-time").await;
    let moved = add_app_user(&app, "moved").await;
    let body = |userid: &str, send_at: &str| {
        json!({"aud_userid": [userid], "msg_app": app_msg(),
               "option": {"send_at": send_at, "ttl_seconds": 1}})
    };
    // Valid for a second from its send time, 2.5 s after its acceptance.
    let a = app.send_ok("/v1/sent", body("on-time", &at(2_500).0)).await;
    // Put back from 2 s to 4.5 s: valid for a second from the new time.
    let b = app.send_ok("/v1/sent", body("moved", &at(2_000).0)).await;
    let (status, item) = app.reschedule(&b, &at(4_500).0).await;
    assert_eq!(status, 200, "{item}");
    for (msgid, regid) in [(&a, &on_time), (&b, &moved)] {
        let status = app.wait_done(msgid, Duration::from_secs(30)).await;
        assert_eq!(crate::helpers::totals(&status), (1, 1, 0), "{status}");
        assert_eq!(app.sim.state.count("app", regid), 1, "{msgid}");
    }
}

#[actix_web::test]
async fn scheduled_messages_are_listed_by_page_and_refuse_edits_once_sent() {
    let app = spawn_app().await;
    add_app_user(&app, "u1").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            app.send_ok("/v1/sent", one_user_send("u1", &at(3_600_000).0))
                .await,
        );
    }
    let tags = app
        .send_ok(
            "/v1/sent",
            json!({"aud_tag": ["vip", "new"], "msg_app": app_msg(),
                   "option": {"send_at": at(7_200_000).0}}),
        )
        .await;
    ids.push(tags.clone());

    let page = app.scheduled("&limit=2").await;
    let first: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msgid"].as_str().unwrap())
        .collect();
    assert_eq!(first, vec![ids[0].as_str(), ids[1].as_str()]);
    let item = &page["messages"][0];
    assert_eq!(item["source"], "billing");
    assert_eq!(item["source_id"].as_i64(), Some(app.source_id));
    assert_eq!(item["sendno"], "s-u1");
    assert_eq!(item["audience"], json!({"kind": "userids", "count": 1}));
    assert!(item["send_at"].as_str().unwrap().ends_with('Z'), "{item}");
    let next = page["next_after"].as_str().unwrap();
    let rest = app.scheduled(&format!("&after={next}&limit=2")).await;
    assert_eq!(rest["messages"][0]["msgid"], ids[2].as_str());
    assert_eq!(
        rest["messages"][1]["audience"],
        json!({"kind": "tags", "count": 2})
    );

    // Sent: no longer listed, no longer editable.
    let (send_at, _) = at(1_500);
    let sent = app.send_ok("/v1/sent", one_user_send("u1", &send_at)).await;
    app.wait_done(&sent, Duration::from_secs(30)).await;
    assert!(!app.scheduled_ids().await.contains(&sent));
    for (status, body) in [
        app.reschedule(&sent, &at(60_000).0).await,
        app.cancel(&sent).await,
    ] {
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (409, Some("not_scheduled")),
            "{body}"
        );
        assert!(
            body["error"]["message"].as_str().unwrap().contains("done"),
            "{body}"
        );
    }
    assert_eq!(app.cancel("12345").await.0, 404);
    assert_eq!(app.reschedule("nope", &at(60_000).0).await.0, 400);

    // Refusals: more than a year ahead, not RFC 3339, an unknown state.
    let (status, body) = app
        .v1("/v1/sent", &one_user_send("u1", &at(400 * 86_400_000).0))
        .await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(4004)));
    assert!(
        body["message"].as_str().unwrap().contains("365 days"),
        "{body}"
    );
    let (status, body) = app
        .v1("/v1/sent", &one_user_send("u1", "tomorrow at nine"))
        .await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(4004)));
    assert!(
        body["message"].as_str().unwrap().contains("option.send_at"),
        "{body}"
    );
    let (status, body) = app.reschedule(&ids[0], &at(400 * 86_400_000).0).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, _) = app
        .admin(reqwest::Method::GET, "/api/messages?state=sleeping", None)
        .await;
    assert_eq!(status, 400);
    for id in &ids {
        assert_eq!(app.cancel(id).await.0, 200);
    }
    assert!(app.scheduled_ids().await.is_empty());
}

#[actix_web::test]
async fn a_retracted_scheduled_message_is_never_sent() {
    let app = spawn_app().await;
    let regid = add_app_user(&app, "u1").await;
    let (send_at, due) = at(2_000);
    let msgid = app.send_ok("/v1/sent", one_user_send("u1", &send_at)).await;

    let (status, body) = app.retract(&msgid).await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"code": 0, "message": "success", "msgid": msgid})
        )
    );
    assert_eq!(app.status(&msgid).await["state"], "retracted");
    assert!(app.scheduled_ids().await.is_empty());
    sleep_past(due + 1_500).await;
    assert_eq!(app.sim.state.count("app", &regid), 0);
    assert_eq!(app.status(&msgid).await["state"], "retracted");

    let (status, body) = app.retract(&msgid).await;
    assert_eq!(
        (status, body["code"].as_i64()),
        (400, Some(1015055)),
        "{body}"
    );
    let (status, body) = app.reschedule(&msgid, &at(60_000).0).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_scheduled"))
    );
}

#[actix_web::test]
async fn retracting_a_running_tag_blast_stops_the_rest_and_recalls_what_was_sent() {
    const USERS: usize = 200;
    let app = spawn_app_with(|s| {
        s.dispatch.shard_size = 10;
        s.callbacks.flush_ms = FLUSH_MS;
        s.callbacks.retry_delay_ms = 100;
    })
    .await;
    let rx = start_receiver().await;
    assert_eq!(app.add_callback_url(app.source_id, &rx.url()).await.0, 201);
    app.add_users((0..USERS).map(|i| {
        json!({"userid": format!("b{i:04}"), "add": {"tag": ["blast"],
               "app": [format!("blast-{i:04}")], "phone": format!("1370000{i:04}")}})
    }))
    .await;
    // Two JPush calls (of ten devices) a second: the blast takes ten seconds.
    app.admin_patch(
        &format!("/api/channels/{}", app.channel("app")),
        json!({"rate_per_second": 2}),
    )
    .await;
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_tag": ["blast"], "msg_app": app_msg(),
                   "msg_sms": [{"temp_id": "SMS_1", "temp_para": {}}]}),
        )
        .await;
    let started = Instant::now();
    while app.sim.state.total("app") < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the blast never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let (status, body) = app.retract(&msgid).await;
    assert_eq!((status, body["code"].as_i64()), (200, Some(0)), "{body}");
    // The follow-up recalls every JPush push that was accepted. It is over when every delivery
    // has its retract callback (7 or 8): a call under way at the retract shows its delivery
    // retracted until its outcome is recorded, then submitted until the recall answers.
    let started = Instant::now();
    let deliveries = loop {
        let all = app.all_deliveries(&msgid).await;
        let open = all.iter().any(|d| {
            d["channel_type"] == "app" && d["status"] != "retracted" && d["status"] != "failed"
        });
        let reported = rx.accepted_of(&[7, 8]).len();
        let reportable = all.iter().filter(|d| d["status"] != "failed").count();
        if !open && all.iter().all(|d| d["status"] != "queued") && reported >= reportable {
            break all;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not recalled: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let sent_app = app.sim.state.total("app");
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(
        app.sim.state.total("app"),
        sent_app,
        "sent after the retract"
    );
    assert!(
        (sent_app as usize) < USERS,
        "the retract came too late to stop anything"
    );

    // Every app delivery was either stopped (no provider id) or recalled (with one).
    let app_rows: Vec<&Value> = deliveries
        .iter()
        .filter(|d| d["channel_type"] == "app")
        .collect();
    let recalled_ids: BTreeSet<String> = app_rows
        .iter()
        .filter_map(|d| d["provider_id"].as_str().map(str::to_string))
        .collect();
    let sim_recalled: BTreeSet<String> = app.sim.state.recalled().into_iter().collect();
    assert_eq!(
        recalled_ids, sim_recalled,
        "each accepted push recalled once"
    );
    let recalled_devices = app_rows
        .iter()
        .filter(|d| !d["provider_id"].is_null())
        .count();
    assert_eq!(recalled_devices as u64, sent_app);
    let stopped = app_rows
        .iter()
        .filter(|d| d["provider_id"].is_null())
        .count();
    assert!(stopped > 0, "nothing was left to stop");

    let status = app.status(&msgid).await;
    assert_eq!(status["state"], "retracted", "{status}");
    let counts = |t: &str| {
        status["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channel_type"] == t)
            .cloned()
            .unwrap()
    };
    let app_counts = counts("app");
    assert_eq!(
        app_counts["retracted"].as_u64(),
        Some(app_rows.len() as u64),
        "{status}"
    );
    assert_eq!(app_counts["queued"].as_i64(), Some(0));
    // SMS cannot be recalled: what was sent stays sent and is reported as retract failed.
    let sms_sent = deliveries
        .iter()
        .filter(|d| d["channel_type"] == "sms" && d["status"] == "submitted")
        .count();
    let retracted = deliveries
        .iter()
        .filter(|d| d["status"] == "retracted")
        .count();
    assert_eq!(counts("sms")["sent"].as_u64(), Some(sms_sent as u64));

    // Callbacks: 7 for every delivery stopped or recalled, 8 for every one that stays sent.
    let items = rx.wait_items(retracted + sms_sent, &[7, 8]).await;
    let of = |t: i64| items.iter().filter(|i| i["type"] == t).collect::<Vec<_>>();
    assert_eq!(of(7).len(), retracted, "{items:?}");
    assert_eq!(of(8).len(), sms_sent, "{items:?}");
    assert!(of(7).iter().all(|i| i["msgid"] == msgid.as_str()));
    for item in of(8) {
        assert_eq!(item["sender"], 5, "only SMS fails to recall: {item}");
        assert!(
            item["error"]["message"]
                .as_str()
                .unwrap()
                .contains("recall_unsupported"),
            "{item}"
        );
    }
    // No more shards were opened after the retract, and nothing is left to resume.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(app.all_deliveries(&msgid).await.len(), deliveries.len());
    assert_eq!(app.status(&msgid).await["state"], "retracted");
}

#[actix_web::test]
async fn a_source_cannot_retract_another_sources_or_an_unknown_message() {
    let app = spawn_app().await;
    add_app_user(&app, "u1").await;
    let msgid = app
        .send_ok("/v1/sent", one_user_send("u1", &at(60_000).0))
        .await;
    let other = app
        .admin_post("/api/sources", json!({"name": "other"}))
        .await;
    let (key, secret) = (
        other["key"].as_str().unwrap(),
        other["secret"].as_str().unwrap(),
    );

    let resp = app
        .client
        .post(format!("{}/v1/retract/{msgid}", app.address))
        .basic_auth(key, Some(secret))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 4004, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("of this source"),
        "{body}"
    );
    assert_eq!(app.status(&msgid).await["state"], "scheduled");

    for id in ["99999", "abc", "-1"] {
        let (status, body) = app.retract(id).await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (400, Some(4004)),
            "{id}: {body}"
        );
    }
    let resp = app
        .client
        .post(format!("{}/v1/retract/{msgid}", app.address))
        .basic_auth(&app.source_key, Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(app.status(&msgid).await["state"], "scheduled");
    assert_eq!(app.retract(&msgid).await.0, 200, "its own source may");
}
