//! The DingTalk work notice endpoints: access tokens, sends and their validation, the
//! recipients' fates read back through getsendprogress and getsendresult, the daily limit,
//! errcodes, faults, recalls and the `/sim/receipts` report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use msghub_sim::{FaultPlan, ReceiptConfig, SimHandle};
use serde_json::{Value, json};

const APPKEY: &str = "dingsim5151000000001";
const SECRET: &str = "sim-dingtalk-secret";
const AGENT: u64 = 3000001;
const API: &str = "/topapi/message/corpconversation";

async fn get(c: &reqwest::Client, url: String) -> Value {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.unwrap()
}

async fn post(c: &reqwest::Client, url: String, body: Value) -> Value {
    let r = c.post(url).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.unwrap()
}

fn text(userids: &str) -> Value {
    json!({"agent_id": AGENT, "userid_list": userids,
           "msg": {"msgtype": "text", "text": {"content": "hi"}}})
}

/// A simulator, a client and a valid token, for one test.
struct Ding {
    sim: SimHandle,
    c: reqwest::Client,
    base: String,
    token: String,
}

impl Ding {
    async fn start(tweak: impl FnOnce(&mut msghub_sim::SimConfig)) -> Ding {
        let sim = common::sim(tweak).await;
        let c = common::client();
        let base = sim.http_url();
        let mut ding = Ding {
            sim,
            c,
            base,
            token: String::new(),
        };
        ding.token = ding.token().await;
        ding
    }

    async fn token(&self) -> String {
        let v = get(
            &self.c,
            format!("{}/gettoken?appkey={APPKEY}&appsecret={SECRET}", self.base),
        )
        .await;
        assert_eq!(
            (&v["errcode"], &v["errmsg"]),
            (&json!(0), &json!("ok")),
            "{v}"
        );
        assert!(v["expires_in"].as_u64().unwrap() > 7000, "{v}");
        v["access_token"].as_str().unwrap().to_string()
    }

    async fn call(&self, path: &str, body: Value) -> Value {
        let url = format!("{}{API}/{path}?access_token={}", self.base, self.token);
        post(&self.c, url, body).await
    }

    async fn send(&self, body: Value) -> Value {
        self.call("asyncsend_v2", body).await
    }

    /// Sends `text` to `userids` and returns the task id.
    async fn send_ok(&self, userids: &str) -> u64 {
        let v = self.send(text(userids)).await;
        assert_eq!(v["errcode"], 0, "{v}");
        v["task_id"].as_u64().unwrap()
    }

    async fn result(&self, task_id: u64) -> Value {
        let v = self
            .call(
                "getsendresult",
                json!({"agent_id": AGENT, "task_id": task_id}),
            )
            .await;
        assert_eq!(v["errcode"], 0, "{v}");
        v["send_result"].clone()
    }

    async fn progress(&self, task_id: u64) -> Value {
        let v = self
            .call(
                "getsendprogress",
                json!({"agent_id": AGENT, "task_id": task_id}),
            )
            .await;
        assert_eq!(v["errcode"], 0, "{v}");
        v["progress"].clone()
    }

    /// Polls the task's result until `done` holds (at most 10 s).
    async fn settle(&self, task_id: u64, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.result(task_id).await;
            if done(&r) {
                return r;
            }
            assert!(Instant::now() < deadline, "never settled: {r}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn receipts(&self, config: ReceiptConfig) {
        self.sim.state.set_receipts("dingtalk_cc", config).unwrap();
    }
}

fn fates(delivered: f64, failed: f64, clicked: f64, delay_ms: u64) -> ReceiptConfig {
    ReceiptConfig {
        delivered_ratio: delivered,
        failed_ratio: failed,
        clicked_ratio: clicked,
        delay_ms,
        click_delay_ms: 0,
        ..ReceiptConfig::default()
    }
}

#[actix_web::test]
async fn tokens_are_reused_refused_and_expire() {
    let d = Ding::start(|_| {}).await;
    let wrong = get(
        &d.c,
        format!("{}/gettoken?appkey=other&appsecret={SECRET}", d.base),
    )
    .await;
    assert_eq!(wrong["errcode"], 40089, "{wrong}");
    let wrong = get(
        &d.c,
        format!("{}/gettoken?appkey={APPKEY}&appsecret=nope", d.base),
    )
    .await;
    assert_eq!(wrong["errcode"], 40001, "{wrong}");
    assert_eq!(d.token().await, d.token, "the same token while valid");

    let send_with = |token: &str| {
        let url = format!("{}{API}/asyncsend_v2?access_token={token}", d.base);
        let c = d.c.clone();
        async move { post(&c, url, text("u1")).await }
    };
    assert_eq!(send_with("nope").await["errcode"], 40014);
    let missing = post(&d.c, format!("{}{API}/asyncsend_v2", d.base), text("u1")).await;
    assert_eq!(missing["errcode"], 40014);
    assert_eq!(send_with(&d.token).await["errcode"], 0);

    d.sim.state.expire_dingtalk_token();
    assert_eq!(send_with(&d.token).await["errcode"], 42001);
    let result = post(
        &d.c,
        format!("{}{API}/getsendresult?access_token={}", d.base, d.token),
        json!({"agent_id": AGENT, "task_id": 1}),
    )
    .await;
    assert_eq!(result["errcode"], 42001, "every call checks the token");
    let fresh = d.token().await;
    assert_ne!(fresh, d.token);
    assert_eq!(send_with(&fresh).await["errcode"], 0);
    assert_eq!(
        send_with(&d.token).await["errcode"],
        40014,
        "the old one is gone"
    );
}

#[actix_web::test]
async fn invalid_sends_are_refused_with_40035() {
    let d = Ding::start(|_| {}).await;
    let with = |key: &str, value: Value| {
        let mut v = text("u1");
        v[key] = value;
        v
    };
    let many = (0..5001)
        .map(|i| format!("u{i}"))
        .collect::<Vec<_>>()
        .join(",");
    for (body, needle) in [
        (json!(["u1"]), "JSON object"),
        (with("agent_id", json!(1)), "agent_id"),
        (with("userid_list", json!("")), "userid_list"),
        (with("dept_id_list", json!("1")), "not simulated"),
        (with("to_all_user", json!(true)), "not simulated"),
        (with("userid_list", json!(many)), "5000"),
        (with("msg", json!({"msgtype": "video"})), "msgtype"),
        (
            with("msg", json!({"msgtype": "text", "text": {"content": ""}})),
            "text.content",
        ),
        (
            with(
                "msg",
                json!({"msgtype": "markdown", "markdown": {"text": "x"}}),
            ),
            "markdown.title",
        ),
    ] {
        let v = d.send(body.clone()).await;
        assert_eq!(v["errcode"], 40035, "{body}: {v}");
        assert!(
            v["errmsg"].as_str().unwrap().contains(needle),
            "{body}: {v}"
        );
    }
    let r =
        d.c.post(format!(
            "{}{API}/asyncsend_v2?access_token={}",
            d.base, d.token
        ))
        .body("not json")
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errcode"], 40035);
    assert_eq!(d.sim.state.total("dingtalk_cc"), 0, "nothing was sent");
    assert!(d.sim.state.failed_calls("dingtalk_cc") >= 10);
}

#[actix_web::test]
async fn a_send_answers_a_task_and_records_each_userid_once() {
    let d = Ding::start(|_| {}).await;
    let v = d.send(text("zhangsan, lisi,,zhangsan,ZhangSan")).await;
    assert_eq!(
        (&v["errcode"], &v["errmsg"]),
        (&json!(0), &json!("ok")),
        "{v}"
    );
    let task_id = v["task_id"].as_u64().unwrap();
    assert!(!v["request_id"].as_str().unwrap().is_empty(), "{v}");
    let other = d.send_ok("wangwu").await;
    assert_ne!(other, task_id, "task ids are unique");
    // Userids are case-sensitive: ZhangSan is another user; zhangsan once.
    assert_eq!(d.sim.state.count("dingtalk_cc", "zhangsan"), 1);
    assert_eq!(d.sim.state.count("dingtalk", "ZhangSan"), 1);
    assert_eq!(d.sim.state.count("dingtalk_cc", "lisi"), 1);
    assert_eq!(d.sim.state.total("dingtalk_cc"), 4);
    let received = get(&d.c, format!("{}/sim/received?channel=dingtalk_cc", d.base)).await;
    assert_eq!(received["channel"], "dingtalk_cc");
    assert_eq!(received["addresses"]["zhangsan"], 1, "{received}");
    assert_eq!(received["calls"], 2);

    // The defaults: every recipient delivered, listed unread after 50 ms, in the order sent.
    let r = d
        .settle(task_id, |r| {
            r["unread_user_id_list"].as_array().unwrap().len() == 3
        })
        .await;
    assert_eq!(
        r,
        json!({"invalid_user_id_list": [], "forbidden_list": [], "failed_user_id_list": [],
               "read_user_id_list": [], "unread_user_id_list": ["zhangsan", "lisi", "ZhangSan"],
               "invalid_dept_id_list": []})
    );
    let p = d.progress(task_id).await;
    assert_eq!(p, json!({"progress_in_percent": 100, "status": 2}));

    // Unknown tasks and the wrong agent are refused.
    for (path, body) in [
        ("getsendresult", json!({"agent_id": AGENT, "task_id": 42})),
        (
            "getsendresult",
            json!({"agent_id": AGENT, "task_id": task_id.to_string()}),
        ),
        ("getsendresult", json!({"agent_id": 1, "task_id": task_id})),
        ("getsendprogress", json!({"agent_id": AGENT, "task_id": 42})),
        (
            "getsendprogress",
            json!({"agent_id": 1, "task_id": task_id}),
        ),
        ("recall", json!({"agent_id": AGENT, "msg_task_id": 42})),
        ("recall", json!({"agent_id": 1, "msg_task_id": task_id})),
    ] {
        let v = d.call(path, body.clone()).await;
        assert_eq!(v["errcode"], 40035, "{path} {body}: {v}");
    }
    let v = d
        .call("getsendresult", json!({"agent_id": AGENT, "task_id": 42}))
        .await;
    assert_eq!(v["errmsg"], "invalid task_id");
}

#[actix_web::test]
async fn fates_follow_the_receipt_configuration() {
    let d = Ding::start(|_| {}).await;
    // Delivered and read, at once.
    d.receipts(fates(1.0, 0.0, 1.0, 0));
    let task = d.send_ok("a,b").await;
    let r = d.result(task).await;
    assert_eq!(r["read_user_id_list"], json!(["a", "b"]), "{r}");
    assert_eq!(r["unread_user_id_list"], json!([]), "{r}");
    // Delivered, never read.
    d.receipts(fates(1.0, 0.0, 0.0, 0));
    let task = d.send_ok("c,d").await;
    let r = d.result(task).await;
    assert_eq!(
        (&r["unread_user_id_list"], &r["read_user_id_list"]),
        (&json!(["c", "d"]), &json!([])),
        "{r}"
    );
    // Failed.
    d.receipts(fates(0.0, 1.0, 0.0, 0));
    let task = d.send_ok("e").await;
    let r = d.result(task).await;
    assert_eq!(r["failed_user_id_list"], json!(["e"]), "{r}");
    // Silent: never listed, also when receipts are off.
    d.receipts(fates(0.0, 0.0, 0.0, 0));
    let silent = d.send_ok("f").await;
    d.receipts(ReceiptConfig {
        enabled: false,
        ..fates(1.0, 0.0, 1.0, 0)
    });
    let off = d.send_ok("g").await;
    for task in [silent, off] {
        let r = d.result(task).await;
        for list in r.as_object().unwrap().values() {
            assert_eq!(list, &json!([]), "{r}");
        }
        assert_eq!(d.progress(task).await["status"], 2);
    }
    // The report: a user in at most one list, read users also delivered.
    let report = get(&d.c, format!("{}/sim/receipts?channel=dingtalk_cc", d.base)).await;
    assert_eq!(report["delivered"], json!(["a", "b", "c", "d"]), "{report}");
    assert_eq!(report["clicked"], json!(["a", "b"]), "{report}");
    assert_eq!(report["failed"], json!(["e"]), "{report}");
    assert_eq!(report["pending"], 0);
    assert_eq!(report["config"]["enabled"], false);
    // Recipients were reached whatever their fate.
    assert_eq!(d.sim.state.total("dingtalk_cc"), 7);
}

#[actix_web::test]
async fn lists_wait_for_the_delays_and_progress_runs_until_then() {
    let d = Ding::start(|_| {}).await;
    d.receipts(ReceiptConfig {
        click_delay_ms: 40,
        ..fates(1.0, 0.0, 1.0, 80)
    });
    let accepted = Instant::now();
    let task = d.send_ok("a,b").await;
    let early = d.result(task).await;
    let progress = d.progress(task).await;
    if accepted.elapsed() < Duration::from_millis(70) {
        for list in early.as_object().unwrap().values() {
            assert_eq!(list, &json!([]), "{early}");
        }
        assert_eq!(progress["status"], 1, "{progress}");
        assert!(progress["progress_in_percent"].as_u64().unwrap() < 100);
        let report = d.sim.state.receipts("dingtalk_cc", None).unwrap();
        assert_eq!(report.pending, 2);
        assert!(report.delivered.is_empty());
    }
    // First unread (or already read), then read; the progress finished.
    let r = d
        .settle(task, |r| {
            r["read_user_id_list"].as_array().unwrap().len() == 2
        })
        .await;
    assert!(accepted.elapsed() >= Duration::from_millis(120));
    assert_eq!(r["unread_user_id_list"], json!([]), "{r}");
    assert_eq!(
        d.progress(task).await,
        json!({"progress_in_percent": 100, "status": 2})
    );
    let report = d.sim.state.receipts("dingtalk", None).unwrap();
    assert_eq!((report.pending, report.clicked.len()), (0, 2));
    assert_eq!(report.config.delay_ms, 80);
}

#[actix_web::test]
async fn unreachable_users_are_invalid_at_once() {
    let d = Ding::start(|_| {}).await;
    d.receipts(fates(1.0, 0.0, 0.0, 10_000));
    assert!(d.sim.state.set_faults(
        "dingtalk_cc",
        FaultPlan {
            perm_addresses: vec!["left".into()],
            ..FaultPlan::default()
        },
    ));
    let task = d.send_ok("left,stays").await;
    let r = d.result(task).await;
    assert_eq!(r["invalid_user_id_list"], json!(["left"]), "{r}");
    assert_eq!(
        r["unread_user_id_list"],
        json!([]),
        "stays is not delivered yet: {r}"
    );
    assert_eq!(d.sim.state.count("dingtalk_cc", "left"), 0, "not reached");
    assert_eq!(d.sim.state.count("dingtalk_cc", "stays"), 1);
    // Only invalid users: still accepted, nothing recorded.
    let task = d.send_ok("left").await;
    assert_eq!(
        d.result(task).await["invalid_user_id_list"],
        json!(["left"])
    );
    assert_eq!(d.sim.state.total("dingtalk_cc"), 1);
    let report = d.sim.state.receipts("dingtalk_cc", None).unwrap();
    assert_eq!(
        (report.failed, report.pending),
        (vec!["left".to_string()], 1)
    );
}

#[actix_web::test]
async fn users_over_the_daily_limit_are_forbidden() {
    let d = Ding::start(|cfg| cfg.dingtalk_daily_limit = 1).await;
    d.receipts(fates(1.0, 0.0, 0.0, 0));
    let first = d.send_ok("u1").await;
    let second = d.send_ok("u1,u2").await;
    assert_eq!(d.result(first).await["unread_user_id_list"], json!(["u1"]));
    let r = d.result(second).await;
    assert_eq!(
        r["forbidden_list"],
        json!([{"code": "143105", "count": 1, "userid": "u1"}]),
        "{r}"
    );
    assert_eq!(r["unread_user_id_list"], json!(["u2"]), "{r}");
    assert_eq!(d.sim.state.count("dingtalk_cc", "u1"), 1, "reached once");
    let report = get(&d.c, format!("{}/sim/receipts?channel=dingtalk_cc", d.base)).await;
    assert_eq!(report["failed"], json!(["u1"]), "{report}");
    assert_eq!(report["delivered"], json!(["u1", "u2"]), "{report}");

    // A reset starts a new day (and forgets tokens and tasks).
    d.sim.state.reset();
    let d = Ding {
        token: d.token().await,
        ..d
    };
    let task = d.send_ok("u1").await;
    let r = d
        .settle(task, |r| r["unread_user_id_list"] == json!(["u1"]))
        .await;
    assert_eq!(r["forbidden_list"], json!([]));
    let v = d
        .call(
            "getsendresult",
            json!({"agent_id": AGENT, "task_id": first}),
        )
        .await;
    assert_eq!(v["errcode"], 40035, "tasks before the reset are gone");
}

#[actix_web::test]
async fn recalls_are_listed_once() {
    let d = Ding::start(|_| {}).await;
    let task = d.send_ok("u1").await;
    let recall = json!({"agent_id": AGENT, "msg_task_id": task});
    let v = d.call("recall", recall.clone()).await;
    assert_eq!(
        (&v["errcode"], &v["errmsg"]),
        (&json!(0), &json!("ok")),
        "{v}"
    );
    assert_eq!(
        d.call("recall", recall).await["errcode"],
        0,
        "a repeat succeeds"
    );
    assert_eq!(d.sim.state.dingtalk_recalled(), vec![task]);
    let listed = get(&d.c, format!("{}/sim/recalls", d.base)).await;
    assert_eq!(
        listed["dingtalk_cc"],
        json!({"count": 1, "task_ids": [task]})
    );
    assert_eq!(listed["wechatwk"], json!({"count": 0, "msg_ids": []}));
    d.sim.state.reset();
    assert!(d.sim.state.dingtalk_recalled().is_empty());
}

#[actix_web::test]
async fn faults_and_the_rate_limit_answer_errcodes() {
    let d = Ding::start(|_| {}).await;
    let plan = |p: FaultPlan| assert!(d.sim.state.set_faults("dingtalk", p));
    plan(FaultPlan {
        fail_code: Some("-1".into()),
        fail_code_next: 1,
        ..FaultPlan::default()
    });
    assert_eq!(d.send(text("u1")).await["errcode"], -1);
    plan(FaultPlan {
        fail_code: Some("88".into()),
        fail_code_next: 1,
        ..FaultPlan::default()
    });
    let v = d.send(text("u1")).await;
    assert_eq!(
        (&v["errcode"], &v["sub_code"], &v["sub_msg"]),
        (&json!(88), &json!("60011"), &json!("no permission")),
        "{v}"
    );
    plan(FaultPlan {
        fail_next: 1,
        fail_status: 429,
        ..FaultPlan::default()
    });
    assert_eq!(d.send(text("u1")).await["errcode"], 143103);
    plan(FaultPlan {
        fail_next: 1,
        fail_status: 503,
        ..FaultPlan::default()
    });
    let r =
        d.c.post(format!(
            "{}{API}/asyncsend_v2?access_token={}",
            d.base, d.token
        ))
        .json(&text("u1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.text().await.unwrap().contains("<html>"));
    assert_eq!(
        d.sim.state.total("dingtalk_cc"),
        0,
        "no fault sent anything"
    );

    plan(FaultPlan {
        rate_limit_per_minute: Some(1),
        ..FaultPlan::default()
    });
    assert_eq!(d.send(text("u1")).await["errcode"], 0);
    assert_eq!(d.send(text("u1")).await["errcode"], 143103);
    assert_eq!(d.sim.state.total("dingtalk_cc"), 1);
    assert_eq!(d.sim.state.failed_calls("dingtalk_cc"), 5);
}

#[actix_web::test]
async fn the_receipt_configuration_is_set_and_reported_over_http() {
    let d = Ding::start(|_| {}).await;
    let configure = |body: Value| {
        let (c, base) = (d.c.clone(), d.base.clone());
        async move {
            let r = c
                .post(format!("{base}/sim/receipts"))
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = configure(json!({"channel": "dingtalk_cc", "delivered_ratio": 0.0,
        "failed_ratio": 1.0, "delay_ms": 0}))
    .await;
    assert_eq!((s, &v["channel"]), (200, &json!("dingtalk_cc")), "{v}");
    let (s, v) =
        configure(json!({"channel": "dingtalk", "report_url": "http://127.0.0.1:9/"})).await;
    assert_eq!(s, 400, "{v}");
    let (s, _) = configure(json!({"channel": "dingtalk", "failed_ratio": 2})).await;
    assert_eq!(s, 400);

    let task = d.send_ok("x,y").await;
    assert_eq!(
        d.result(task).await["failed_user_id_list"],
        json!(["x", "y"])
    );
    let report = get(&d.c, format!("{}/sim/receipts?channel=dingtalk_cc", d.base)).await;
    assert_eq!(
        report,
        json!({"config": {"enabled": true, "delivered_ratio": 0.0, "failed_ratio": 1.0,
                          "clicked_ratio": 0.0, "delay_ms": 0, "click_delay_ms": 50,
                          "batch_max": 100, "batch_ms": 100, "retry_delays_ms": [1000, 5000, 10000],
                          "report_url": null, "wechat_mode": "plain"},
               "posted_batches": 0, "posted_items": 0, "failed_posts": 0, "dropped_items": 0,
               "pending": 0, "delivered": [], "failed": ["x", "y"], "clicked": []})
    );
    let all = get(&d.c, format!("{}/sim/receipts", d.base)).await;
    assert_eq!(all["dingtalk_cc"], report);
    assert_eq!(all["app"]["delivered"], json!([]));

    // A reset puts back the defaults and forgets the tasks.
    let r =
        d.c.post(format!("{}/sim/reset", d.base))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let report = d.sim.state.receipts("dingtalk_cc", None).unwrap();
    assert_eq!(report.config, ReceiptConfig::default());
    assert!(report.failed.is_empty());
}
