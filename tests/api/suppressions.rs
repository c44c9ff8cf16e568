//! Suppressed addresses (`/api/suppressions`), end to end against the simulator: an address its
//! provider called gone is not sent to again — a fallback chain moves its user on at once —
//! until the suppression is lifted; WeChat users who unsubscribe or block the account's
//! template messages are suppressed, and following the account again lifts it; an SMS reply
//! "TD" opts its number out of marketing.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, TestApp, spawn_app, spawn_app_with};
use crate::strategies::wechat_signed;

impl TestApp {
    /// `/api/suppressions` with a JSON body, as (HTTP status, body).
    pub(crate) async fn suppressions_call(
        &self,
        method: &str,
        body: Value,
        token: &str,
    ) -> (u16, Value) {
        let url = format!("{}/api/suppressions", self.address);
        let req = match method {
            "POST" => self.client.post(url),
            _ => self.client.delete(url),
        };
        let resp = req
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The suppressions `query` lists, as (channel type, address, reason, code).
    pub(crate) async fn suppressed(&self, query: &str) -> Vec<(String, String, String, Value)> {
        let resp = self.admin_get(&format!("/api/suppressions{query}")).await;
        assert_eq!(resp.status().as_u16(), 200);
        let body: Value = resp.json().await.expect("json");
        body["suppressions"]
            .as_array()
            .expect("suppressions")
            .iter()
            .map(|s| {
                let text = |k: &str| s[k].as_str().expect(k).to_string();
                (
                    text("channel_type"),
                    text("address"),
                    text("reason"),
                    s["code"].clone(),
                )
            })
            .collect()
    }

    /// What `suppressed` lists, as a set (the code as JSON text): rows of one number's
    /// spellings come in the database's collation order.
    async fn suppressed_set(&self, query: &str) -> BTreeSet<(String, String, String, String)> {
        self.suppressed(query)
            .await
            .into_iter()
            .map(|(t, a, r, code)| (t, a, r, code.to_string()))
            .collect()
    }

    /// The addresses of one message's deliveries that were sent (not skipped).
    async fn delivered_to(&self, msgid: &str) -> BTreeSet<String> {
        self.deliveries_where(msgid, |r| r["status"] != "skipped")
            .await
    }

    /// The addresses of one message's deliveries skipped because they are suppressed.
    async fn suppressed_in(&self, msgid: &str) -> BTreeSet<String> {
        self.deliveries_where(msgid, |r| {
            r["status"] == "skipped" && r["code"] == "suppressed"
        })
        .await
    }

    async fn deliveries_where(
        &self,
        msgid: &str,
        keep: impl Fn(&Value) -> bool,
    ) -> BTreeSet<String> {
        self.deliveries(msgid)
            .await
            .iter()
            .filter(|r| keep(r))
            .map(|r| r["address"].as_str().expect("address").to_string())
            .collect()
    }
}

fn webhook_msg() -> Value {
    json!([{"event": "notice"}])
}

/// Webhook receivers that answer 410 are suppressed with the provider's code and the message
/// that found them gone. The next sends — to userids, and to a tag — skip them even though the
/// receivers work again, and a fallback chain sends those users its next step at once. A
/// manual suppression (an SMS number) applies the same way; lifting one makes its binding
/// usable again. Bad requests are refused with a reason.
#[actix_web::test]
async fn gone_addresses_are_skipped_until_the_suppression_is_lifted() {
    let app = spawn_app().await;
    const N: usize = 12;
    let user = |i: usize| format!("g{i:02}");
    let hook = |i: usize| format!("gwh-{i:02}");
    let phone = |i: usize| format!("1390000{i:04}");
    app.add_users((0..N).map(|i| {
        json!({"userid": user(i), "add": {"webhook": hook(i), "phone": phone(i), "tag": ["gt"]}})
    }))
    .await;
    let all: Vec<String> = (0..N).map(user).collect();
    let gone: BTreeSet<String> = (0..3).map(hook).collect();
    app.sim_post(
        "/sim/faults",
        json!({"channel": "webhook", "perm_addresses": gone.iter().collect::<Vec<_>>()}),
    )
    .await;
    let first = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": all, "msg_webhook": webhook_msg()}),
        )
        .await;
    app.wait_done(&first, Duration::from_secs(30)).await;
    let listed = app.suppressed("?channel_type=webhook").await;
    assert_eq!(
        listed,
        gone.iter()
            .map(|a| ("webhook".into(), a.clone(), "gone".into(), json!("410")))
            .collect::<Vec<_>>()
    );
    assert_eq!(app.suppressed("?reason=gone").await, listed);
    assert!(app.suppressed("?reason=manual").await.is_empty());
    let resp = app.admin_get("/api/suppressions?reason=bogus").await;
    assert_eq!(resp.status().as_u16(), 400);
    let page: Value = app
        .admin_get(&format!("/api/suppressions?address={}", hook(1)))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        page["suppressions"][0]["msgid"].to_string(),
        first,
        "{page}"
    );
    assert_eq!(
        page["suppressions"][0]["channel_id"],
        app.channel("webhook")
    );

    // The receivers work again; the suppressed ones are still skipped.
    app.sim_post(
        "/sim/faults",
        json!({"channel": "webhook", "perm_addresses": []}),
    )
    .await;
    let second = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": all, "msg_webhook": webhook_msg()}),
        )
        .await;
    app.wait_done(&second, Duration::from_secs(30)).await;
    let reachable: BTreeSet<String> = (3..N).map(hook).collect();
    assert_eq!(app.delivered_to(&second).await, reachable);
    // Counted, not dropped: each suppressed target is a skipped delivery with its reason.
    assert_eq!(app.suppressed_in(&second).await, gone);
    let s = app.status(&second).await;
    assert_eq!(s["channels"][0]["skipped"], json!(3), "{s}");
    // Each working receiver got both messages; the gone ones only the refused first one.
    let received = app.sim.state.received("webhook");
    assert!(
        gone.iter().all(|a| !received.contains_key(a)),
        "{received:?}"
    );
    assert!(reachable.iter().all(|a| received[a] == 2), "{received:?}");
    // A raw-address send names its address itself: not filtered.
    let raw = app
        .send_ok(
            "/v1/sent",
            json!({"aud_webhook": [{"data": [hook(1)]}], "msg_webhook": webhook_msg()}),
        )
        .await;
    app.wait_done(&raw, Duration::from_secs(30)).await;
    assert_eq!(app.sim.state.received("webhook").get(&hook(1)), Some(&1));

    // A fallback chain: the suppressed users have no webhook address, so they get the SMS
    // step at once instead of after the (hour-long) wait.
    let rule = app
        .create_rule(json!({"type": "fallback", "steps": [
            {"channel": "webhook", "wait_seconds": 3600, "condition": "not_clicked"},
            {"channel": "sms"}]}))
        .await;
    let sms_before = app.sim.state.total("sms");
    let chain = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": all, "rule_id": rule, "msg_webhook": webhook_msg(),
                   "msg_sms": [{"temp_id": "SMS_1", "temp_para": {"code": "7"}}]}),
        )
        .await;
    // Their SMS goes out while the others' webhook step is sent; then everyone left waits.
    let started = std::time::Instant::now();
    loop {
        let s = app.status(&chain).await;
        if s["state"] == "waiting" && app.sim.state.total("sms") - sms_before >= 3 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expected: BTreeSet<String> = (0..3).map(phone).collect();
    let delivered = app.delivered_to(&chain).await;
    assert_eq!(
        delivered
            .iter()
            .filter(|a| !a.starts_with("gwh-"))
            .cloned()
            .collect::<BTreeSet<_>>(),
        expected
    );
    let s = app.status(&chain).await;
    assert_eq!(
        s["state"], "waiting",
        "the others wait for their timer: {s}"
    );
    // The suppressed users were skipped at the webhook step (counted, never sent).
    assert_eq!(
        (&s["steps"][0]["target"], &s["steps"][0]["skipped"]),
        (&json!(N), &json!(3)),
        "{s}"
    );
    assert_eq!(s["steps"][1]["target"], json!(3), "{s}");
    assert_eq!(app.suppressed_in(&chain).await, gone);
    let sent = app.sim.state.total("sms") - sms_before;
    assert_eq!(sent, 3);

    // By hand: an SMS number. Lifted: one webhook receiver. A tag send sees both.
    let (status, body) = app
        .suppressions_call(
            "POST",
            json!({"channel_type": "sms", "addresses": [phone(5), phone(5)]}),
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!((status, &body["added"]), (200, &json!(1)), "{body}");
    let (status, body) = app
        .suppressions_call(
            "DELETE",
            json!({"channel_type": "webhook", "addresses": [hook(0), hook(7)]}),
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!((status, &body["removed"]), (200, &json!(1)), "{body}");
    let tagged = app
        .send_ok(
            "/v1/sent",
            json!({"aud_tag": ["gt"], "msg_webhook": webhook_msg(),
                   "msg_sms": [{"temp_id": "SMS_1", "temp_para": {"code": "8"}}]}),
        )
        .await;
    app.wait_done(&tagged, Duration::from_secs(30)).await;
    let mut expected: BTreeSet<String> = (0..N).filter(|i| *i != 5).map(phone).collect();
    expected.extend((0..N).filter(|i| ![1, 2].contains(i)).map(hook));
    assert_eq!(app.delivered_to(&tagged).await, expected);
    assert_eq!(
        app.suppressed_in(&tagged).await,
        BTreeSet::from([phone(5), hook(1), hook(2)])
    );
    assert_eq!(app.sim.state.received("webhook")[&hook(0)], 1);
    // A number is kept in every spelling the SMS adapters send as that number.
    assert_eq!(
        app.suppressed_set("?channel_type=sms").await,
        sms_rows(&phone(5), "manual", Value::Null)
    );

    // Pages: the `next` of a full page continues after its last row.
    let page: Value = app
        .admin_get("/api/suppressions?channel_type=webhook&limit=1")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(page["suppressions"].as_array().map(Vec::len), Some(1));
    let next = page["next"].as_str().expect("next");
    assert_eq!(next, format!("webhook:{}", hook(1)));
    let rest = app
        .suppressed(&format!("?channel_type=webhook&after={next}"))
        .await;
    assert_eq!(
        rest.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
        [hook(2)]
    );

    // Refused: unknown channel type, no addresses, a control character, a bad cursor, no token.
    for (body, token) in [
        (
            json!({"channel_type": "fax", "addresses": ["1"]}),
            ADMIN_TOKEN,
        ),
        (json!({"channel_type": "sms", "addresses": []}), ADMIN_TOKEN),
        (
            json!({"channel_type": "sms", "addresses": ["1\n2"]}),
            ADMIN_TOKEN,
        ),
        (json!({"channel_type": "sms"}), ADMIN_TOKEN),
        (
            json!({"channel_type": "sms", "addresses": ["1"], "reason": "gone"}),
            ADMIN_TOKEN,
        ),
        (json!({"channel_type": "sms", "addresses": ["1"]}), "wrong"),
    ] {
        let (status, resp) = app.suppressions_call("POST", body.clone(), token).await;
        let expected = if token == ADMIN_TOKEN { 400 } else { 401 };
        assert_eq!(status, expected, "{body}: {resp}");
        assert!(resp["error"]["code"].is_string(), "{body}: {resp}");
    }
    let resp = app.admin_get("/api/suppressions?after=nocolon").await;
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(app.suppressed("?channel_type=sms").await.len(), 4);
}

/// The spellings of a mainland number written `138…`.
fn spellings(national: &str) -> BTreeSet<String> {
    [
        national.to_string(),
        format!("86{national}"),
        format!("+86{national}"),
        format!("0086{national}"),
    ]
    .into()
}

/// The suppression rows of a mainland number: every spelling, with its reason and code, as
/// [`App::suppressed_set`] lists them.
fn sms_rows(
    national: &str,
    reason: &str,
    code: Value,
) -> BTreeSet<(String, String, String, String)> {
    spellings(national)
        .into_iter()
        .map(|a| ("sms".into(), a, reason.into(), code.to_string()))
        .collect()
}

/// SMS replies: an Aliyun SmsUp push or a Tencent reply callback whose text is an unsubscribe
/// keyword ("TD", "退订", …, however written) opts the number out of marketing in every
/// spelling: priority-3 sends skip the user whichever way the business bound the number (at
/// acceptance and when a fallback timer fires), notices still reach it; other replies change
/// nothing. Lifting the number (in any spelling) makes it reachable again.
#[actix_web::test]
async fn sms_unsubscribe_replies_suppress_the_number() {
    let app = spawn_app().await;
    let sim = msghub_sim::SimConfig::default();
    let national = |i: usize| format!("1370000{i:04}");
    // Bound as the business writes them: national, E.164, 86…, national.
    let bound = [
        national(0),
        format!("+86{}", national(1)),
        format!("86{}", national(2)),
        national(3),
    ];
    app.add_users(
        bound
            .iter()
            .enumerate()
            .map(|(i, p)| json!({"userid": format!("r{i}"), "add": {"phone": p, "tag": ["rt"]}})),
    )
    .await;
    let aliyun_url = app.receipt_url(app.channel("sms")).await;
    // Aliyun SmsUp, the reports' URL entered for replies too: a report and replies together.
    let up = |phone: &str, content: &str, seq: u64| {
        json!({"phone_number": phone, "send_time": "2026-12-01 09:00:00", "content": content,
               "sign_name": "msghub", "dest_code": "1234", "sequence_id": seq})
    };
    let resp = app
        .client
        .post(&aliyun_url)
        .json(&json!([
            up(&national(0), "TD", 1),
            up(&national(1), "好的，收到", 2),
            up(&national(2), "ｔｄ。", 3),
            {"phone_number": national(1), "success": true, "err_code": "DELIVERED",
             "biz_id": "1^1", "out_id": "1", "report_time": "2026-12-01 09:00:00"},
        ]))
        .send()
        .await
        .expect("smsup");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.json::<Value>().await.expect("json")["code"], 0);

    // A Tencent account's reply callback (its channel need not send for this source).
    let ch = app
        .admin_post(
            "/api/channels",
            json!({"type": "sms", "name": "tencent sim", "credentials": {
                "provider": "tencent", "secret_id": sim.tencent_secret_id,
                "secret_key": sim.tencent_secret_key, "sdk_app_id": sim.tencent_sdk_app_id,
                "sign_name": "msghub", "base_url": app.sim.http_url()}}),
        )
        .await;
    let tencent_url = app
        .receipt_url(ch["id"].as_i64().expect("channel id"))
        .await;
    let reply = |mobile: &str, text: &str| {
        json!({"extend": "", "mobile": mobile, "nationcode": "86", "sign": "msghub",
               "text": text, "time": 1_764_550_000})
    };
    let resp = app
        .client
        .post(&tencent_url)
        .json(&reply(&national(3), "退订"))
        .send()
        .await
        .expect("reply");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.json::<Value>().await.expect("json")["result"], 0);
    let resp = app
        .client
        .post(&tencent_url)
        .json(&reply("138-0000", "TD"))
        .send()
        .await
        .expect("reply");
    assert_eq!(resp.status().as_u16(), 400, "a malformed reply is refused");

    let mut expected = BTreeSet::new();
    for (i, code) in [(0, "TD"), (2, "TD"), (3, "退订")] {
        expected.extend(sms_rows(&national(i), "opted_out", json!(code)));
    }
    assert_eq!(app.suppressed_set("?channel_type=sms").await, expected);
    assert_eq!(
        app.metric("msghub_sms_replies_total{result=\"unsubscribe\"}")
            .await,
        3
    );
    assert_eq!(
        app.metric("msghub_sms_replies_total{result=\"other\"}")
            .await,
        1
    );

    let sms = json!([{"temp_id": "SMS_1", "temp_para": {"code": "9"}}]);
    let users = json!(["r0", "r1", "r2", "r3"]);
    let marketing = json!({"priority": 3});
    // A verification code or a notice (priority 1 or 2) still reaches every number.
    let notice = app
        .send_ok("/v1/sent", json!({"aud_userid": users, "msg_sms": sms}))
        .await;
    app.wait_done(&notice, Duration::from_secs(30)).await;
    assert_eq!(
        app.delivered_to(&notice).await,
        bound.iter().cloned().collect::<BTreeSet<_>>()
    );
    // Marketing (priority 3) skips the numbers that opted out.
    let first = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": users, "msg_sms": sms, "option": marketing}),
        )
        .await;
    app.wait_done(&first, Duration::from_secs(30)).await;
    assert_eq!(
        app.delivered_to(&first).await,
        BTreeSet::from([bound[1].clone()])
    );
    let skipped: BTreeSet<String> = [0, 2, 3].map(|i| bound[i].clone()).into();
    assert_eq!(app.suppressed_in(&first).await, skipped);

    // A fallback chain whose SMS step comes when its timer fires: the suppressed numbers are
    // skipped there, and the chain ends for those users.
    app.add_users(
        (0..4).map(|i| json!({"userid": format!("r{i}"), "add": {"webhook": format!("rwh-{i}")}})),
    )
    .await;
    let rule = app
        .create_rule(json!({"type": "fallback", "steps": [
            {"channel": "webhook", "wait_seconds": 1, "condition": "not_clicked"},
            {"channel": "sms"}]}))
        .await;
    let chain = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": users, "rule_id": rule, "msg_webhook": [{"event": "n"}],
                   "msg_sms": sms, "option": marketing}),
        )
        .await;
    let s = app.wait_done(&chain, Duration::from_secs(30)).await;
    assert_eq!(
        (
            &s["steps"][1]["target"],
            &s["steps"][1]["skipped"],
            &s["steps"][1]["sent"]
        ),
        (&json!(4), &json!(3), &json!(1)),
        "{s}"
    );
    assert_eq!(app.suppressed_in(&chain).await, skipped);

    // Lifted by hand, in another spelling than the one bound.
    let (status, body) = app
        .suppressions_call(
            "DELETE",
            json!({"channel_type": "sms", "addresses": [format!("0086{}", national(0))]}),
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!((status, &body["removed"]), (200, &json!(1)), "{body}");
    // And one opted out by hand (a business's own "no marketing" setting).
    let (status, body) = app
        .suppressions_call(
            "POST",
            json!({"channel_type": "sms", "addresses": [&bound[1]], "reason": "opted_out"}),
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!((status, &body["added"]), (200, &json!(1)), "{body}");
    let second = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": users, "msg_sms": sms, "option": marketing}),
        )
        .await;
    app.wait_done(&second, Duration::from_secs(30)).await;
    assert_eq!(
        app.delivered_to(&second).await,
        BTreeSet::from([bound[0].clone()])
    );
    // A tag send (the audience read as a range of bindings) makes the same distinction.
    let tagged = app
        .send_ok(
            "/v1/sent",
            json!({"aud_tag": ["rt"], "msg_sms": sms, "option": marketing}),
        )
        .await;
    app.wait_done(&tagged, Duration::from_secs(30)).await;
    assert_eq!(
        app.delivered_to(&tagged).await,
        BTreeSet::from([bound[0].clone()])
    );
    let tagged_notice = app
        .send_ok("/v1/sent", json!({"aud_tag": ["rt"], "msg_sms": sms}))
        .await;
    app.wait_done(&tagged_notice, Duration::from_secs(30)).await;
    assert_eq!(app.delivered_to(&tagged_notice).await.len(), 4);
    let received = app.sim.state.received("sms");
    assert_eq!(received.values().sum::<u32>(), 12, "{received:?}");
    // Suppressed by hand, an opted-out number is suppressed for every message.
    let (status, body) = app
        .suppressions_call(
            "POST",
            json!({"channel_type": "sms", "addresses": [national(2)]}),
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!((status, &body["added"]), (200, &json!(1)), "{body}");
    assert_eq!(
        app.suppressed_set("?channel_type=sms&reason=manual").await,
        sms_rows(&national(2), "manual", Value::Null)
    );
}

/// WeChat pushes: `unsubscribe` suppresses the openid, a `failed:user block` template result
/// for one of msghub's deliveries suppresses its user; the next template send skips both, and
/// `subscribe` (following again) lifts both.
#[actix_web::test]
async fn wechat_unsubscribe_and_user_block_suppress_until_subscribe() {
    let app = spawn_app().await;
    let sim = msghub_sim::SimConfig::default();
    let (_, url) = app.wechat_channel(&sim).await;
    app.sim_post(
        "/sim/receipts",
        json!({"channel": "wechatoa", "enabled": false}),
    )
    .await;
    let openid = |i: usize| format!("oSupp{i:07}");
    app.add_users(
        (0..3).map(|i| json!({"userid": format!("x{i}"), "add": {"wechatoa": openid(i)}})),
    )
    .await;
    let users = json!(["x0", "x1", "x2"]);
    let msg = json!([{"type": 0, "template_id": "TPL_notice", "data": {"thing1": "Hello"}}]);
    let send = || async {
        let msgid = app
            .send_ok(
                "/v1/sent",
                json!({"aud_userid": users, "msg_wechatoa": msg}),
            )
            .await;
        app.wait_done(&msgid, Duration::from_secs(30)).await;
        msgid
    };
    let push = |body: String| {
        let client = app.client.clone();
        let url = wechat_signed(&url, &sim.wechat_token, "");
        async move {
            let r = client.post(url).body(body).send().await.expect("post");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    let event = |openid: &str, inner: &str| {
        format!(
            "<xml><ToUserName><![CDATA[gh_5151000000001]]></ToUserName>\
             <FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>1700000000</CreateTime>\
             <MsgType><![CDATA[event]]></MsgType>{inner}</xml>"
        )
    };
    let ok = (200, "success".to_string());

    let first = send().await;
    let rows = app.deliveries(&first).await;
    let x0 = rows
        .iter()
        .find(|r| r["address"] == openid(0))
        .expect("x0's delivery");
    let wx_msgid = x0["provider_id"].as_str().expect("MsgID").to_string();
    let blocked = format!(
        "<Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>{wx_msgid}</MsgID>\
         <Status><![CDATA[failed:user block]]></Status>"
    );
    // (A block reported for another openid's MsgID suppresses nobody: see
    // `strategies::wechat_template_events_apply_by_msgid`, which counts the unknown receipts.)
    assert_eq!(push(event(&openid(0), &blocked)).await, ok);
    assert_eq!(
        push(event(&openid(1), "<Event><![CDATA[unsubscribe]]></Event>")).await,
        ok
    );
    assert_eq!(
        app.suppressed("?channel_type=wechatoa").await,
        vec![
            (
                "wechatoa".into(),
                openid(0),
                "blocked".into(),
                json!("user_block")
            ),
            (
                "wechatoa".into(),
                openid(1),
                "unsubscribed".into(),
                Value::Null
            ),
        ]
    );
    let second = send().await;
    assert_eq!(app.delivered_to(&second).await, BTreeSet::from([openid(2)]));
    assert_eq!(app.sim.state.total("wechatoa"), 4);

    for i in [0, 1] {
        assert_eq!(
            push(event(&openid(i), "<Event><![CDATA[subscribe]]></Event>")).await,
            ok
        );
    }
    assert!(app.suppressed("?channel_type=wechatoa").await.is_empty());
    let third = send().await;
    assert_eq!(app.delivered_to(&third).await.len(), 3);
    assert_eq!(app.sim.state.total("wechatoa"), 7);
}

/// Email one-click unsubscribe (RFC 8058): every message carries its recipient's signed link;
/// a `GET` only shows a confirm page, a link changed to another address is refused, and the
/// one-click `POST` opts the address out of marketing — priority-3 sends skip it, notices do
/// not.
#[actix_web::test]
async fn email_one_click_unsubscribe_opts_the_address_out_of_marketing() {
    let app = spawn_app().await;
    let users = json!(["e0", "e1"]);
    app.add_users((0..2).map(
        |i| json!({"userid": format!("e{i}"), "add": {"email": format!("e{i}@example.com")}}),
    ))
    .await;
    let email = json!({"subject": "News", "text": "<p>hello</p>"});
    let app = &app;
    let send = |option: Value| {
        let body = json!({"aud_userid": users, "msg_email": email, "option": option});
        async move {
            let msgid = app.send_ok("/v1/sent", body).await;
            app.wait_done(&msgid, Duration::from_secs(30)).await;
            msgid
        }
    };
    let notice = send(json!({})).await;
    assert_eq!(app.delivered_to(&notice).await.len(), 2);
    let headers = app.sim.state.mail_headers("e0@example.com").expect("mail");
    let header = |name: &str| {
        headers
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
            .unwrap_or_else(|| panic!("{name} in {headers}"))
            .to_string()
    };
    assert_eq!(
        header("List-Unsubscribe-Post"),
        "List-Unsubscribe=One-Click"
    );
    let link = header("List-Unsubscribe");
    let url = link
        .strip_prefix('<')
        .and_then(|l| l.strip_suffix('>'))
        .expect("<url>")
        .to_string();
    let prefix = format!(
        "{}/unsubscribe/{}?a=e0%40example%2Ecom&s=",
        app.address,
        app.channel("email")
    );
    assert!(url.starts_with(&prefix), "{url}");

    // A GET (a link scanner, a preview) shows a page and changes nothing.
    let resp = app.client.get(&url).send().await.expect("get");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.text()
            .await
            .expect("page")
            .contains("<form method=\"post\"")
    );
    assert!(app.suppressed("?channel_type=email").await.is_empty());
    // The link of e0 changed to name e1 unsubscribes nobody.
    let forged = url.replace("a=e0%40", "a=e1%40");
    let resp = app.client.post(&forged).send().await.expect("post");
    assert_eq!(resp.status().as_u16(), 403);
    // The one-click POST, as a mailbox provider sends it.
    let resp = app
        .client
        .post(&url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 200);
    let done = resp.text().await.expect("page");
    assert!(
        done.contains("Unsubscribed") && done.contains("e0@example.com"),
        "{done}"
    );
    assert_eq!(
        app.suppressed_set("?channel_type=email").await,
        BTreeSet::from([(
            "email".to_string(),
            "e0@example.com".to_string(),
            "opted_out".to_string(),
            "\"list-unsubscribe\"".to_string()
        )])
    );

    let marketing = send(json!({"priority": 3})).await;
    assert_eq!(
        app.delivered_to(&marketing).await,
        BTreeSet::from(["e1@example.com".to_string()])
    );
    assert_eq!(
        app.suppressed_in(&marketing).await,
        BTreeSet::from(["e0@example.com".to_string()])
    );
    let notice = send(json!({})).await;
    assert_eq!(app.delivered_to(&notice).await.len(), 2);
    // Raw addresses: a marketing send honours the opt-out, a notice does not need to.
    for (option, sent) in [(json!({"priority": 3}), false), (json!({}), true)] {
        let msgid = app
            .send_ok(
                "/v1/sent",
                json!({"aud_email": [{"data": ["e0@example.com"]}], "msg_email": email,
                       "option": option}),
            )
            .await;
        app.wait_done(&msgid, Duration::from_secs(30)).await;
        assert_eq!(
            app.delivered_to(&msgid).await.len(),
            usize::from(sent),
            "{option}"
        );
        assert_eq!(
            app.suppressed_in(&msgid).await.len(),
            usize::from(!sent),
            "{option}"
        );
    }
}

/// `providers.email_list_unsubscribe = false`: email goes out without unsubscribe headers.
#[actix_web::test]
async fn email_unsubscribe_links_can_be_left_out() {
    let app = spawn_app_with(|s| s.providers.email_list_unsubscribe = false).await;
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_email": [{"data": ["n0@example.com"]}],
                   "msg_email": {"subject": "s", "text": "t"}}),
        )
        .await;
    app.wait_done(&msgid, Duration::from_secs(30)).await;
    let headers = app.sim.state.mail_headers("n0@example.com").expect("mail");
    assert!(headers.contains("Message-ID: "), "{headers}");
    assert!(!headers.contains("List-Unsubscribe"), "{headers}");
}
