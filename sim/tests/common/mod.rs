//! Shared helpers for the simulator integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use msghub_sim::{SimConfig, SimHandle};

/// Starts a simulator with the default config (plus optional tweaks).
pub async fn sim(tweak: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut cfg = SimConfig::default();
    tweak(&mut cfg);
    msghub_sim::start(cfg).await.expect("start sim")
}

/// A reqwest client with the ring provider installed.
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().expect("client")
}

/// A Tencent API 3.0 call signed with TC3-HMAC-SHA256, computed here step by step from the
/// published algorithm (not through the simulator's code).
pub struct TencentCall<'a> {
    pub secret_id: &'a str,
    pub secret_key: &'a str,
    pub timestamp: i64,
    pub action: &'a str,
    pub version: &'a str,
}

impl Default for TencentCall<'_> {
    fn default() -> Self {
        TencentCall {
            secret_id: "sim-tencent-id",
            secret_key: "sim-tencent-key",
            timestamp: chrono::Utc::now().timestamp(),
            action: "SendSms",
            version: "2021-01-11",
        }
    }
}

fn hmac256(key: &[u8], data: &str) -> Vec<u8> {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

impl TencentCall<'_> {
    /// POSTs `body` to `base` (`http://127.0.0.1:PORT`); returns the status and the JSON answer
    /// (`Null` when the answer is not JSON).
    pub async fn send(
        &self,
        c: &reqwest::Client,
        base: &str,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let host = base.trim_start_matches("http://");
        let content_type = "application/json; charset=utf-8";
        let canonical = format!(
            "POST\n/\n\ncontent-type:{content_type}\nhost:{host}\n\ncontent-type;host\n{}",
            sha256_hex(body.as_bytes())
        );
        let date = chrono::DateTime::from_timestamp(self.timestamp, 0)
            .unwrap()
            .format("%Y-%m-%d")
            .to_string();
        let string_to_sign = format!(
            "TC3-HMAC-SHA256\n{}\n{date}/sms/tc3_request\n{}",
            self.timestamp,
            sha256_hex(canonical.as_bytes())
        );
        let k_date = hmac256(format!("TC3{}", self.secret_key).as_bytes(), &date);
        let k_signing = hmac256(&hmac256(&k_date, "sms"), "tc3_request");
        let signature = hex::encode(hmac256(&k_signing, &string_to_sign));
        let r = c
            .post(format!("{base}/"))
            .header("Content-Type", content_type)
            .header(
                "Authorization",
                format!(
                    "TC3-HMAC-SHA256 Credential={}/{date}/sms/tc3_request, SignedHeaders=content-type;host, Signature={signature}",
                    self.secret_id
                ),
            )
            .header("X-TC-Action", self.action)
            .header("X-TC-Version", self.version)
            .header("X-TC-Region", "ap-guangzhou")
            .header("X-TC-Timestamp", self.timestamp.to_string())
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }
}
