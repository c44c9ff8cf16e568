//! The echostr handshake that proves a business system owns a callback URL: msghub sends
//! `GET <url>?echostr=<random>` signed like the callbacks, and the answer must be that string.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::AUTHORIZATION;

/// Why a URL was not verified; the message is shown to the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unverified {
    #[error("the URL could not be reached: {0}")]
    Unreachable(String),
    #[error("the URL answered HTTP {0}; it must answer 200 with the echostr value as the body")]
    Status(u16),
    #[error("the URL answered 200 but its body was not the echostr value it was sent")]
    BodyMismatch,
}

/// Longest body read back: the echo is 32 characters.
const MAX_BODY_BYTES: usize = 1024;

pub async fn echostr(
    client: &reqwest::Client,
    timeout: Duration,
    url: &str,
    key: &str,
    secret: &str,
) -> Result<(), Unverified> {
    let echostr = crate::startup::random_hex(16);
    let mut target =
        url::Url::parse(url).map_err(|e| Unverified::Unreachable(format!("invalid URL: {e}")))?;
    target.query_pairs_mut().append_pair("echostr", &echostr);
    let mut resp = client
        .get(target)
        .header(AUTHORIZATION, super::basic_auth(key, secret))
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| Unverified::Unreachable(describe(e)))?;
    if resp.status() != StatusCode::OK {
        return Err(Unverified::Status(resp.status().as_u16()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Unverified::Unreachable(describe(e)))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BODY_BYTES {
            return Err(Unverified::BodyMismatch);
        }
    }
    if body == echostr.as_bytes() {
        Ok(())
    } else {
        Err(Unverified::BodyMismatch)
    }
}

/// A transport error in words, without the URL (which may carry a token in its query).
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        e.without_url().to_string()
    }
}
