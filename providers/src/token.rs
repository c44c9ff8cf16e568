//! Cached access tokens of the providers that hand out expiring ones (WeChat `stable_token`,
//! WeCom `gettoken`, Feishu's tenant access token): one fetch at a time, the token kept until a minute before it expires,
//! and a failed fetch held for a second so a failing token endpoint costs one call per second,
//! not one per send.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use msghub_actors::provider::{Outcome, OutcomeClass};
use serde_json::Value;

use crate::http::{self, Reply, truncate};

/// A cached token is refreshed this long before the provider says it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// How long a failed token fetch answers the sends that waited for it, and those after: one
/// fetch per second at most while the token endpoint fails, and a retry hint past it.
const FAILED_FETCH_HOLD: Duration = Duration::from_secs(1);
/// The providers' token lifetime (WeChat, WeCom: 7200 s); a longer `expires_in` is read as
/// this.
const MAX_TOKEN_SECONDS: u64 = 7200;

#[derive(Clone)]
struct Token {
    value: Arc<str>,
    /// When it stops being used (the provider's expiry less [`TOKEN_MARGIN`]).
    until: Instant,
}

/// One adapter's access token.
#[derive(Default)]
pub(crate) struct TokenCache {
    token: RwLock<Option<Token>>,
    /// The last fetch, when it failed: when, and the outcome it gave.
    failed: RwLock<Option<(Instant, Outcome)>>,
    /// Held while a token is being fetched, so concurrent sends wait for one fetch.
    refreshing: tokio::sync::Mutex<()>,
}

/// A failed fetch's outcome for a send during its hold: a transient class waits at least the
/// rest of the hold (or longer, when the token endpoint asked so).
fn after_hold(outcome: Outcome, hold: Duration) -> Outcome {
    let wait = outcome.retry_after.map_or(hold, |asked| asked.max(hold));
    http::with_wait(outcome, Some(wait))
}

impl TokenCache {
    /// The cached token, or a fresh one from `fetch` (one fetch at a time). A fetch that
    /// failed is the answer for [`FAILED_FETCH_HOLD`] to every send that waited for it and
    /// those after.
    pub(crate) async fn get<F, Fut>(&self, fetch: F) -> Result<Arc<str>, Outcome>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(Arc<str>, Duration), Outcome>>,
    {
        let cached = || {
            self.token
                .read()
                .ok()
                .and_then(|t| t.clone())
                .filter(|t| t.until > Instant::now())
                .map(|t| t.value)
        };
        if let Some(token) = cached() {
            return Ok(token);
        }
        let _one = self.refreshing.lock().await;
        if let Some(token) = cached() {
            return Ok(token);
        }
        if let Some((at, outcome)) = self.failed.read().ok().and_then(|f| f.clone())
            && at.elapsed() < FAILED_FETCH_HOLD
        {
            // A transient failure asks the retry to come after the hold, not spend its
            // attempts on the same answer.
            let hold = FAILED_FETCH_HOLD.saturating_sub(at.elapsed());
            return Err(after_hold(outcome, hold));
        }
        let fetched = fetch().await;
        if let Ok(mut failed) = self.failed.write() {
            *failed = fetched.as_ref().err().map(|o| (Instant::now(), o.clone()));
        }
        let (value, lifetime) = fetched.map_err(|o| after_hold(o, FAILED_FETCH_HOLD))?;
        let now = Instant::now();
        if let Ok(mut slot) = self.token.write() {
            *slot = Some(Token {
                value: value.clone(),
                until: now
                    .checked_add(lifetime.saturating_sub(TOKEN_MARGIN))
                    .unwrap_or(now),
            });
        }
        Ok(value)
    }

    /// `call` with the token; a reply `refused` says refused the token drops the cached token
    /// and is made once more with a fresh one. The second reply is the answer, whatever it
    /// says.
    pub(crate) async fn call<F, Fut, C, CFut>(
        &self,
        fetch: F,
        call: C,
        refused: impl Fn(&Reply) -> bool,
    ) -> Result<Reply, Outcome>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(Arc<str>, Duration), Outcome>>,
        C: Fn(Arc<str>) -> CFut,
        CFut: Future<Output = Result<Reply, Outcome>>,
    {
        let mut refreshed = false;
        loop {
            let token = self.get(&fetch).await?;
            let reply = call(token.clone()).await?;
            if refused(&reply) && !refreshed {
                self.forget(&token);
                refreshed = true;
                continue;
            }
            return Ok(reply);
        }
    }

    /// POST `body` as JSON to `url` with the token in the `access_token` query parameter, as
    /// WeChat and WeCom take it, once more with a fresh token when the reply's errcode says it
    /// was refused (`is_token_error`).
    pub(crate) async fn post_json<F, Fut>(
        &self,
        client: &reqwest::Client,
        url: &str,
        body: &Value,
        fetch: F,
        is_token_error: fn(i64) -> bool,
    ) -> Result<Reply, Outcome>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(Arc<str>, Duration), Outcome>>,
    {
        let send = |token: Arc<str>| async move {
            let Ok(with_token) = reqwest::Url::parse_with_params(url, [("access_token", &*token)])
            else {
                return Err(Outcome::failed(
                    OutcomeClass::Perm,
                    "base_url",
                    "the send URL is not valid",
                ));
            };
            http::execute(client.post(with_token).json(body)).await
        };
        let refused = |reply: &Reply| {
            reply
                .json()
                .as_ref()
                .and_then(errcode)
                .is_some_and(|(code, _)| is_token_error(code))
        };
        self.call(fetch, send, refused).await
    }

    /// Forget `used` if it is still the cached token (another send may have replaced it).
    fn forget(&self, used: &str) {
        if let Ok(mut slot) = self.token.write()
            && slot.as_ref().is_some_and(|t| &*t.value == used)
        {
            *slot = None;
        }
    }
}

/// `(code, message)` of a JSON reply under the provider's names for them, when it has a code.
pub(crate) fn coded(json: &Value, code: &str, message: &str) -> Option<(i64, String)> {
    let code = json.get(code)?.as_i64()?;
    let message = json
        .get(message)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Some((code, message))
}

/// `(errcode, errmsg)` of a JSON reply of WeChat, WeCom or DingTalk, when it has an
/// `errcode`.
pub(crate) fn errcode(json: &Value) -> Option<(i64, String)> {
    coded(json, "errcode", "errmsg")
}

/// The outcome of a call answered with `errcode`/`errmsg` (WeChat, WeCom, DingTalk), for the
/// call as a whole: `class_of` gives a code's class; errcode 0 is `Ok` on HTTP 200 only (on
/// another status it is no answer: `Perm`); an answer without an errcode goes by its status.
pub(crate) fn errcode_outcome(reply: &Reply, class_of: impl Fn(i64) -> OutcomeClass) -> Outcome {
    let outcome = match reply.json().as_ref().and_then(errcode) {
        Some((0, _)) if reply.status == 200 => Outcome::ok("0", None),
        Some((code, message)) => {
            let class = match class_of(code) {
                OutcomeClass::Ok => OutcomeClass::Perm,
                class => class,
            };
            Outcome::failed(class, code.to_string(), truncate(&message))
        }
        None => reply.unrecognised(),
    };
    http::with_wait(outcome, reply.retry_after)
}

/// Where a token endpoint's answer holds the token, its lifetime in seconds, and its error
/// code (`(code, message)`).
pub(crate) struct TokenAnswer {
    pub token: &'static str,
    pub expires: &'static str,
    pub code: fn(&Value) -> Option<(i64, String)>,
}

/// WeChat's and WeCom's: `{"access_token", "expires_in", "errcode", "errmsg"}`.
pub(crate) const WECHAT_TOKEN: TokenAnswer = TokenAnswer {
    token: "access_token",
    expires: "expires_in",
    code: errcode,
};

/// The token and its lifetime from a WeChat or WeCom token endpoint's answer
/// ([`token_from_answer`] with [`WECHAT_TOKEN`]).
pub(crate) fn token_from(
    reply: &Reply,
    classify: impl Fn(&Reply) -> Outcome,
) -> Result<(Arc<str>, Duration), Outcome> {
    token_from_answer(reply, &WECHAT_TOKEN, classify)
}

/// The token and its lifetime from a token endpoint's answer, read where `answer` says, or why
/// there is none: `classify` gives the class of an answer with a non-zero code (a refused
/// token or an OK class is read as `Perm`: the account's id or secret is wrong). A failure
/// never quotes the answer's body (it may hold a token) and is never `Ok`: no send happened.
pub(crate) fn token_from_answer(
    reply: &Reply,
    answer: &TokenAnswer,
    classify: impl Fn(&Reply) -> Outcome,
) -> Result<(Arc<str>, Duration), Outcome> {
    let json = reply.json().unwrap_or(Value::Null);
    let token = json
        .get(answer.token)
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty());
    // A number, or a number in a string as some token proxies answer; the providers' own
    // limit when absent.
    let expires_in = match json.get(answer.expires) {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .unwrap_or(MAX_TOKEN_SECONDS)
    .min(MAX_TOKEN_SECONDS);
    let refused = (answer.code)(&json).filter(|(code, _)| *code != 0);
    if let (Some(token), 200, None) = (token, reply.status, &refused) {
        return Ok((token.into(), Duration::from_secs(expires_in)));
    }
    let failed = match refused {
        Some((code, message)) => {
            let class = match classify(reply).class {
                // A refused id or secret is the configuration, not a stale token.
                OutcomeClass::Token | OutcomeClass::Ok => OutcomeClass::Perm,
                class => class,
            };
            Outcome::failed(class, code.to_string(), message)
        }
        // No errcode: a proxy, a captive page, or garbled JSON. Asking again sends nothing,
        // so a 2xx is worth another try.
        None => Outcome::failed(
            match http::class_for_status(reply.status) {
                OutcomeClass::Ok => OutcomeClass::Retry,
                class => class,
            },
            reply.status.to_string(),
            format!(
                "HTTP {}: the answer holds no {}",
                reply.status, answer.token
            ),
        ),
    };
    Err(Outcome {
        message: truncate(&format!("getting an access token: {}", failed.message)),
        ..failed
    })
}

/// One token request `GET {url}?{name}={value}&…` (WeCom's `corpid`/`corpsecret`, DingTalk's
/// `appkey`/`appsecret`), its answer read as WeChat's ([`token_from`]).
pub(crate) async fn get_token(
    client: &reqwest::Client,
    url: &str,
    params: [(&str, &str); 2],
    classify: impl Fn(&Reply) -> Outcome,
) -> Result<(Arc<str>, Duration), Outcome> {
    let Ok(url) = reqwest::Url::parse_with_params(url, params) else {
        return Err(Outcome::failed(
            OutcomeClass::Perm,
            "base_url",
            "the token URL is not valid",
        ));
    };
    let reply = http::execute(client.get(url))
        .await
        .map_err(token_transport)?;
    token_from(&reply, classify)
}

/// A transport failure of a token request, named as such.
pub(crate) fn token_transport(mut transport: Outcome) -> Outcome {
    transport.message = truncate(&format!("getting an access token: {}", transport.message));
    transport
}
