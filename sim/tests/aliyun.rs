//! Aliyun SMS simulator tests with an independent Signature V1 implementation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use msghub_sim::FaultPlan;
use serde_json::Value;
use sha1::Sha1;

/// Straightforward RFC 3986 encoder (unreserved = A-Z a-z 0-9 - _ . ~), independent of the sim.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Returns the encoded query (including `Signature`) for `action_params`.
fn signed_query(method: &str, secret: &str, action_params: &[(&str, &str)], nonce: &str) -> String {
    let ts = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mut params: Vec<(String, String)> = vec![
        ("Format".into(), "JSON".into()),
        ("Version".into(), "2017-05-25".into()),
        ("AccessKeyId".into(), "sim-ak".into()),
        ("SignatureMethod".into(), "HMAC-SHA1".into()),
        ("Timestamp".into(), ts),
        ("SignatureVersion".into(), "1.0".into()),
        ("SignatureNonce".into(), nonce.into()),
        ("RegionId".into(), "cn-hangzhou".into()),
    ];
    params.extend(
        action_params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    params.sort();
    let canonical: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    let canonical = canonical.join("&");
    let sts = format!("{method}&{}&{}", enc("/"), enc(&canonical));
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(format!("{secret}&").as_bytes()).unwrap();
    mac.update(sts.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("Signature={}&{canonical}", enc(&sig))
}

fn nonce() -> String {
    format!("n-{}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    t ^ N
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

async fn get(c: &reqwest::Client, base: &str, query: &str) -> (u16, Value) {
    let r = c.get(format!("{base}/?{query}")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn post_form(c: &reqwest::Client, base: &str, body: String) -> (u16, Value) {
    let r = c
        .post(format!("{base}/"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn send_sms(numbers: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Action", "SendSms".into()),
        ("PhoneNumbers", numbers.into()),
        ("SignName", "阿里云 短信*测试".into()),
        ("TemplateCode", "SMS_153055065".into()),
        ("TemplateParam", r#"{"code":"1234 ~x"}"#.into()),
    ]
}

fn q(method: &str, secret: &str, p: &[(&'static str, String)], n: &str) -> String {
    let refs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
    signed_query(method, secret, &refs, n)
}

#[actix_web::test]
async fn signature_send_and_batch() {
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    let base = sim.http_url();

    let (s, v) = get(
        &c,
        &base,
        &q(
            "GET",
            "sim-ak-secret",
            &send_sms("+8613800138000,13900139000"),
            &nonce(),
        ),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["Code"], "OK");
    assert!(v["BizId"].as_str().unwrap().ends_with("^0"));
    assert!(v["RequestId"].is_string());
    assert_eq!(sim.state.count("sms", "13800138000"), 1);
    assert_eq!(sim.state.count("sms", "+8613900139000"), 1);

    // POST form
    let (s, v) = post_form(
        &c,
        &base,
        q(
            "POST",
            "sim-ak-secret",
            &send_sms("008613800138000"),
            &nonce(),
        ),
    )
    .await;
    assert_eq!((s, v["Code"].as_str()), (200, Some("OK")), "{v}");
    assert_eq!(sim.state.count("sms", "13800138000"), 2);

    // wrong secret → SignatureDoesNotMatch; tampered value → same
    let (s, v) = get(
        &c,
        &base,
        &q("GET", "wrong", &send_sms("13800138000"), &nonce()),
    )
    .await;
    assert_eq!(
        (s, v["Code"].as_str()),
        (400, Some("SignatureDoesNotMatch"))
    );
    let good = q("GET", "sim-ak-secret", &send_sms("13800138000"), &nonce());
    let tampered = good.replace("13800138000", "13800138001");
    let (s, v) = get(&c, &base, &tampered).await;
    assert_eq!(
        (s, v["Code"].as_str()),
        (400, Some("SignatureDoesNotMatch"))
    );
    // method is part of the signature
    let (s, _) = post_form(&c, &base, good.clone()).await;
    assert_eq!(s, 400);
    // nonce reuse
    let (s, _) = get(&c, &base, &good).await;
    assert_eq!(s, 200);
    let (s, v) = get(&c, &base, &good).await;
    assert_eq!((s, v["Code"].as_str()), (400, Some("SignatureNonceUsed")));
    // unknown key
    let bad_key = q("GET", "sim-ak-secret", &send_sms("13800138000"), &nonce())
        .replace("AccessKeyId=sim-ak", "AccessKeyId=other");
    let (s, v) = get(&c, &base, &bad_key).await;
    assert_eq!(
        (s, v["Code"].as_str()),
        (404, Some("InvalidAccessKeyId.NotFound"))
    );

    // business errors: HTTP 200 with non-OK code
    let (s, v) = get(
        &c,
        &base,
        &q("GET", "sim-ak-secret", &send_sms("12345"), &nonce()),
    )
    .await;
    assert_eq!(
        (s, v["Code"].as_str()),
        (200, Some("isv.MOBILE_NUMBER_ILLEGAL"))
    );
    let many: Vec<String> = (0..1001).map(|i| format!("138{i:08}")).collect();
    let (s, v) = post_form(
        &c,
        &base,
        q(
            "POST",
            "sim-ak-secret",
            &send_sms(&many.join(",")),
            &nonce(),
        ),
    )
    .await;
    assert_eq!(
        (s, v["Code"].as_str()),
        (200, Some("isv.MOBILE_COUNT_OVER_LIMIT"))
    );
    let mut p = send_sms("13800138000");
    p[3].1 = "TPL_1".into();
    let (_, v) = get(&c, &base, &q("GET", "sim-ak-secret", &p, &nonce())).await;
    assert_eq!(v["Code"], "isv.SMS_TEMPLATE_ILLEGAL");
    p.remove(3);
    let (_, v) = get(&c, &base, &q("GET", "sim-ak-secret", &p, &nonce())).await;
    assert_eq!(v["Code"], "isv.INVALID_PARAMETERS");

    // SendBatchSms
    let batch = vec![
        ("Action", "SendBatchSms".to_string()),
        (
            "PhoneNumberJson",
            r#"["13700137000","+8613600136000"]"#.to_string(),
        ),
        ("SignNameJson", r#"["签名","签名"]"#.to_string()),
        ("TemplateCode", "SMS_1".to_string()),
        ("TemplateParamJson", r#"[{"a":"1"},{"a":"2"}]"#.to_string()),
    ];
    let (s, v) = post_form(&c, &base, q("POST", "sim-ak-secret", &batch, &nonce())).await;
    assert_eq!((s, v["Code"].as_str()), (200, Some("OK")), "{v}");
    assert_eq!(sim.state.count("sms", "13600136000"), 1);
    let mut bad = batch.clone();
    bad[2].1 = r#"["签名"]"#.into();
    let (_, v) = post_form(&c, &base, q("POST", "sim-ak-secret", &bad, &nonce())).await;
    assert_eq!(v["Code"], "isv.INVALID_PARAMETERS");
    assert_eq!(sim.state.total("sms"), 6);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults() {
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    let base = sim.http_url();
    let st = &sim.state;
    let send = |n: &str| q("GET", "sim-ak-secret", &send_sms(n), &nonce());

    st.set_faults(
        "sms",
        FaultPlan {
            fail_next: 1,
            fail_status: 500,
            ..FaultPlan::default()
        },
    );
    let (s, v) = get(&c, &base, &send("13800138000")).await;
    assert_eq!((s, v["Code"].as_str()), (500, Some("isp.SYSTEM_ERROR")));
    st.set_faults(
        "sms",
        FaultPlan {
            fail_next: 1,
            fail_status: 429,
            ..FaultPlan::default()
        },
    );
    let (s, v) = get(&c, &base, &send("13800138000")).await;
    assert_eq!((s, v["Code"].as_str()), (429, Some("Throttling.User")));
    st.set_faults(
        "sms",
        FaultPlan {
            fail_code: Some("isv.BUSINESS_LIMIT_CONTROL".into()),
            fail_code_next: 1,
            ..FaultPlan::default()
        },
    );
    let (s, v) = get(&c, &base, &send("13800138000")).await;
    assert_eq!(
        (s, v["Code"].as_str()),
        (200, Some("isv.BUSINESS_LIMIT_CONTROL"))
    );
    st.set_faults(
        "sms",
        FaultPlan {
            perm_addresses: vec!["+8613800138099".into()],
            ..FaultPlan::default()
        },
    );
    let (s, v) = get(&c, &base, &send("13800138000,13800138099")).await;
    assert_eq!(
        (s, v["Code"].as_str()),
        (200, Some("isv.MOBILE_NUMBER_ILLEGAL"))
    );
    assert_eq!(st.total("sms"), 0);
    let (_, v) = get(&c, &base, &send("13800138000")).await;
    assert_eq!(v["Code"], "OK");
    assert_eq!(st.calls("sms"), 5);
    assert_eq!(st.failed_calls("sms"), 4);
    st.set_faults(
        "sms",
        FaultPlan {
            rate_limit_per_minute: Some(1),
            ..FaultPlan::default()
        },
    );
    let (_, v) = get(&c, &base, &send("13800138000")).await;
    assert_eq!(v["Code"], "OK");
    let (s, v) = get(&c, &base, &send("13800138000")).await;
    assert_eq!((s, v["Code"].as_str()), (429, Some("Throttling.User")));
    sim.stop().await;
}
