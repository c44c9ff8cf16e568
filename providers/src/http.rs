//! Helpers shared by the HTTP adapters: client construction, reply capture, wait headers,
//! transport-error outcomes and order-preserving fan-out.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use msghub_actors::provider::{ChannelType, Outcome, OutcomeClass, Target};
use reqwest::header::HeaderMap;

use crate::{AdapterOptions, ConfigError};

/// Longest provider text copied into an [`Outcome`] message; bodies can be whole HTML pages.
const MAX_MESSAGE_CHARS: usize = 300;

/// One shared client per adapter: its idle pool is reused by every call.
pub(crate) fn client(
    kind: ChannelType,
    options: &AdapterOptions,
) -> Result<reqwest::Client, ConfigError> {
    // reqwest is built with `rustls-no-provider` and panics without a process-wide provider. The
    // binary installs ring at start-up; installing it here too (a no-op when one is already set)
    // keeps `build` panic-free for embedders and tests that forgot.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::builder()
        .timeout(options.request_timeout)
        .connect_timeout(options.request_timeout)
        .pool_max_idle_per_host(options.pool_size.max(options.max_calls).max(1))
        // Provider APIs never redirect; following one would re-send signed bodies (and webhook
        // signatures) to a host nobody configured. A 3xx is classified as Perm instead.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("msghub/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ConfigError::Client {
            kind,
            reason: describe(&e.without_url()),
        })
}

/// What classification needs from an HTTP answer, detached from reqwest so it can be unit-tested.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// `Retry-After`, delta-seconds or HTTP-date.
    pub retry_after: Option<Duration>,
    /// JPush's `X-Rate-Limit-Reset`: seconds until the rate window resets.
    pub rate_reset: Option<Duration>,
}

impl Reply {
    pub(crate) fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// A short, printable excerpt of the body for outcome messages.
    pub(crate) fn excerpt(&self) -> String {
        truncate(String::from_utf8_lossy(&self.body).trim())
    }

    /// The outcome of an answer that carries no code the adapter knows (a proxy or load
    /// balancer answered, or the body is not the provider's): classed by status
    /// ([`class_without_code`]), quoting the body.
    pub(crate) fn unrecognised(&self) -> Outcome {
        Outcome::failed(
            class_without_code(self.status),
            self.status.to_string(),
            format!("HTTP {}: {}", self.status, self.excerpt()),
        )
    }
}

/// The most of a reply's body that is kept. Providers answer in a few hundred bytes and only
/// the start of a body is ever quoted; a receiver that streams more (a webhook's own server, a
/// misbehaving proxy) is cut off here, its connection not reused, instead of being held in
/// memory whole for each of the calls in flight.
pub(crate) const MAX_REPLY_BYTES: usize = 256 * 1024;

/// Send a prepared request and capture the reply, or turn the failure into a `Retry` outcome.
pub(crate) async fn execute(request: reqwest::RequestBuilder) -> Result<Reply, Outcome> {
    let mut response = request.send().await.map_err(transport_outcome)?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_outcome)? {
        let room = MAX_REPLY_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_REPLY_BYTES {
            break;
        }
    }
    Ok(Reply {
        status,
        body,
        retry_after: header_wait(&headers, "retry-after"),
        // JPush's header, or Feishu's (its frequency control's seconds until the window resets).
        rate_reset: header_wait(&headers, "x-rate-limit-reset")
            .or_else(|| header_wait(&headers, "x-ogw-ratelimit-reset")),
    })
}

/// A wait duration from a header holding delta-seconds, or (for `Retry-After`) an HTTP-date.
pub(crate) fn header_wait(headers: &HeaderMap, name: &str) -> Option<Duration> {
    let value = headers.get(name)?.to_str().ok()?;
    parse_wait(value, chrono::Utc::now())
}

pub(crate) fn parse_wait(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    // A date in the past means "now": still a throttle signal, just no extra wait.
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// Transport failures (connect, TLS, timeout, broken body) are always worth another try.
pub(crate) fn transport_outcome(err: reqwest::Error) -> Outcome {
    let code = if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect"
    } else {
        "transport"
    };
    // `without_url`: webhook URLs may carry receiver tokens in their query.
    Outcome::failed(OutcomeClass::Retry, code, describe(&err.without_url()))
}

/// An error and its sources on one line (reqwest's own Display is just "error sending request").
pub(crate) fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    truncate(&text)
}

pub(crate) fn truncate(text: &str) -> String {
    if text.chars().count() <= MAX_MESSAGE_CHARS {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
    cut.push('…');
    cut
}

/// Class of an HTTP status when the body says nothing more specific.
pub(crate) fn class_for_status(status: u16) -> OutcomeClass {
    match status {
        200..=299 => OutcomeClass::Ok,
        429 => OutcomeClass::Rate,
        408 | 500..=599 => OutcomeClass::Retry,
        // 3xx (redirects are not followed) and 4xx: the request or the configuration is wrong.
        _ => OutcomeClass::Perm,
    }
}

/// Class by HTTP status of an answer without a known provider code. A 2xx that does not say the
/// send was accepted is not a confirmed send; and provider sends are not idempotent, so it is
/// not retried either: `Perm`.
pub(crate) fn class_without_code(status: u16) -> OutcomeClass {
    match class_for_status(status) {
        OutcomeClass::Ok => OutcomeClass::Perm,
        class => class,
    }
}

/// Attach the provider's wait hint to throttle and transient outcomes only.
pub(crate) fn with_wait(outcome: Outcome, wait: Option<Duration>) -> Outcome {
    match outcome.class {
        OutcomeClass::Rate | OutcomeClass::Retry => outcome.with_retry_after(wait),
        _ => outcome,
    }
}

/// Run a batch adapter over `targets` in provider-sized chunks, one outcome per target in order.
pub(crate) async fn per_chunk<'t, F, Fut>(
    targets: &'t [Target],
    size: usize,
    call: F,
) -> Vec<Outcome>
where
    F: Fn(&'t [Target]) -> Fut,
    Fut: Future<Output = Vec<Outcome>>,
{
    let mut out = Vec::with_capacity(targets.len());
    for chunk in targets.chunks(size.max(1)) {
        out.extend(exactly(call(chunk).await, chunk.len()));
    }
    out
}

/// Run one call per item concurrently (at most `limit` in flight), keeping order: the targets
/// of a one-target-per-call adapter, or the provider ids of a recall or a receipt pull.
pub(crate) async fn per_target<'t, T, O, F, Fut>(targets: &'t [T], limit: usize, call: F) -> Vec<O>
where
    F: Fn(&'t T) -> Fut,
    Fut: Future<Output = O>,
{
    // Futures are created up front (they do nothing until polled) so the stream type holds no
    // closure: a closure there trips rustc's higher-ranked `Send` check inside `async_trait`.
    let calls: Vec<Fut> = targets.iter().map(call).collect();
    // `buffered` (not `buffer_unordered`) yields results in input order.
    futures::stream::iter(calls)
        .buffered(limit.max(1))
        .collect()
        .await
}

/// Guard the one-outcome-per-target invariant of the port even if an adapter miscounts.
fn exactly(mut outcomes: Vec<Outcome>, n: usize) -> Vec<Outcome> {
    if outcomes.len() != n {
        let filler = Outcome::failed(
            OutcomeClass::Retry,
            "internal",
            "adapter returned a wrong outcome count",
        );
        outcomes.resize(n, filler);
    }
    outcomes
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use chrono::TimeZone;

    #[test]
    fn wait_headers() {
        let now = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(parse_wait("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_wait(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_wait("Thu, 01 Jan 2026 00:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_wait("Wed, 31 Dec 2025 23:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_wait("soon", now), None);
        assert_eq!(parse_wait("-3", now), None);
    }

    #[test]
    fn status_classes() {
        let table = [
            (200, OutcomeClass::Ok),
            (204, OutcomeClass::Ok),
            (302, OutcomeClass::Perm),
            (400, OutcomeClass::Perm),
            (404, OutcomeClass::Perm),
            (408, OutcomeClass::Retry),
            (429, OutcomeClass::Rate),
            (500, OutcomeClass::Retry),
            (503, OutcomeClass::Retry),
        ];
        for (status, class) in table {
            assert_eq!(class_for_status(status), class, "{status}");
        }
    }

    #[test]
    fn truncates_long_text_on_char_boundaries() {
        let long = "短".repeat(1000);
        let cut = truncate(&long);
        assert_eq!(cut.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert_eq!(truncate("short"), "short");
    }

    fn target(i: i64) -> Target {
        Target {
            delivery_id: i,
            address: format!("a{i}"),
            userid: None,
        }
    }

    #[tokio::test]
    async fn per_target_keeps_order_despite_completion_order() {
        let targets: Vec<Target> = (0..6).map(target).collect();
        let out = per_target(&targets, 3, |t| async move {
            // Later targets finish first.
            tokio::time::sleep(Duration::from_millis(30 - 5 * t.delivery_id as u64)).await;
            Outcome::ok("ok", Some(t.address.clone()))
        })
        .await;
        let ids: Vec<_> = out.into_iter().map(|o| o.provider_id.unwrap()).collect();
        assert_eq!(ids, ["a0", "a1", "a2", "a3", "a4", "a5"]);
    }

    #[tokio::test]
    async fn a_reply_body_is_kept_up_to_its_bound() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A receiver that answers 200 with 4 MiB.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let size = 4 << 20;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n");
            let _ = socket.write_all(head.as_bytes()).await;
            let block = vec![b'x'; 64 * 1024];
            for _ in 0..size / block.len() {
                if socket.write_all(&block).await.is_err() {
                    return;
                }
            }
        });
        let client = client(ChannelType::Webhook, &crate::AdapterOptions::default()).unwrap();
        let reply = execute(client.get(format!("http://{addr}/")))
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body.len(), MAX_REPLY_BYTES);
    }

    #[tokio::test]
    async fn per_chunk_splits_and_pads() {
        let targets: Vec<Target> = (0..5).map(target).collect();
        let sizes = std::sync::Mutex::new(Vec::new());
        let out = per_chunk(&targets, 2, |chunk| {
            sizes.lock().unwrap().push(chunk.len());
            async move { Vec::new() }
        })
        .await;
        assert_eq!(*sizes.lock().unwrap(), [2, 2, 1]);
        assert_eq!(out.len(), 5);
        assert!(out.iter().all(|o| o.class == OutcomeClass::Retry));
    }
}
