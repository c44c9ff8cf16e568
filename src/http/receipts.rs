//! Receipts in: provider callbacks on `/receipts/{channel_id}/{token}` and client events on
//! `POST /v1/events`.
//!
//! Each channel has its own receipt URL (`GET /api/channels/{id}` shows it), carrying a token
//! derived from the master key, because some providers (Aliyun SmsReport, Tencent SMS status
//! callbacks) cannot sign their callbacks; JPush callbacks must also carry the app's Basic
//! credentials. The body is read in the provider's own format and applied through the receipts
//! writer, many requests per transaction. The provider gets its success answer only after the
//! commit, so a failure makes it retry. Receipts naming no delivery of this channel are counted
//! as unknown, never applied.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use msghub_actors::batcher::Batcher;
use msghub_actors::plan::DeliveryStatus;
use msghub_actors::provider::ChannelType;
use msghub_providers::{SmsVendor, constant_time_eq};
use serde_json::{Value, json};

use super::sms_replies;
use super::wechat_events::{self, WechatEvent};
use super::{AppState, State};
use crate::callbacks::{CallbackEvent, CallbackKind, Callbacks};
use crate::domain::{kind_of, parse_json, plain_text};
use crate::error::{ApiError, JumsError};
use crate::storage::crypto::Crypto;
use crate::storage::receipts::{Changed, Receipt, ReceiptCounts, ReceiptKind};
use crate::storage::suppressions::SuppressReason;

pub type ReceiptWriter = Batcher<Vec<Receipt>, ReceiptCounts>;

/// Most receipts or events in one request.
pub const MAX_ITEMS: usize = 1000;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/receipts/{channel_id}/{token}",
        web::post().to(provider_receipts),
    )
    .route("/receipts/{channel_id}/{token}", web::get().to(probe))
    .route("/v1/events", web::post().to(client_events));
}

fn token_purpose(channel_id: i64) -> String {
    format!("receipts/{channel_id}")
}

/// The receipt URL of a channel under `base` (`http://host:port`).
pub fn receipt_url(base: &str, crypto: &Crypto, channel_id: i64) -> String {
    format!(
        "{}/receipts/{channel_id}/{}",
        base.trim_end_matches('/'),
        crypto.url_token(&token_purpose(channel_id))
    )
}

/// The receipt format a channel's provider sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReceiptFormat {
    /// JPush push callbacks (`app`).
    JPush,
    /// Aliyun SmsReport (`sms` on Aliyun).
    AliyunReport,
    /// Tencent SMS status callbacks (`sms` on Tencent).
    TencentStatus,
    /// WeChat event pushes (`wechatoa`, `wechatmp`): XML, signed with the server (message
    /// push) configuration's Token.
    WechatEvent,
    /// The channel type has no provider receipts.
    None,
}

/// How long a receipt that names its delivery by provider id (Tencent `sid`, WeChat `MsgID`)
/// waits, in steps, for the id to be stored: the receipt can overtake the outcome of the very
/// call it reports (the provider answers the call, then reports; the hub commits the answer in
/// its next outcome batch).
const ID_WAITS: [Duration; 2] = [Duration::from_millis(250), Duration::from_secs(1)];

/// What the endpoint needs to know about a channel, cached for a few seconds.
#[derive(Clone)]
struct ChannelAuth {
    channel_type: ChannelType,
    format: ReceiptFormat,
    /// The exact `Authorization` header the provider must send, when it signs.
    basic: Option<String>,
    /// The Token WeChat signs event pushes with (`wechatoa` and `wechatmp` channels that set
    /// one).
    wechat_token: Option<String>,
    /// The key of encrypted pushes (`encoding_aes_key`), and the appid they must be for.
    wechat_aes: Option<wechat_events::AesKey>,
    wechat_appid: String,
}

pub struct ReceiptChannels {
    cache: RwLock<HashMap<i64, (Instant, Option<ChannelAuth>)>>,
}

impl Default for ReceiptChannels {
    fn default() -> Self {
        ReceiptChannels {
            cache: RwLock::new(HashMap::new()),
        }
    }
}

const CACHE_TTL: Duration = Duration::from_secs(5);

impl ReceiptChannels {
    /// Drop what is cached of a channel whose credentials changed: its next receipt reads them
    /// again (a new token or key applies at once, not after the cache's few seconds).
    pub fn forget(&self, channel_id: i64) {
        if let Ok(mut cache) = self.cache.write() {
            cache.remove(&channel_id);
        }
    }

    async fn get(&self, state: &State, channel_id: i64) -> Result<Option<ChannelAuth>, ApiError> {
        if let Ok(cache) = self.cache.read()
            && let Some((at, hit)) = cache.get(&channel_id)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(hit.clone());
        }
        let spec = state
            .db
            .channel_spec(&state.crypto, channel_id)
            .await
            .map_err(|e| ApiError::internal("receipt channel", &e))?;
        let auth = spec.map(|spec| {
            let basic = match spec.channel_type {
                ChannelType::App => {
                    let field = |k: &str| {
                        spec.credentials
                            .get(k)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    };
                    Some(format!(
                        "Basic {}",
                        B64.encode(format!("{}:{}", field("app_key"), field("master_secret")))
                    ))
                }
                _ => None,
            };
            let format = match spec.channel_type {
                ChannelType::App => ReceiptFormat::JPush,
                ChannelType::Sms => match SmsVendor::of(&spec.credentials) {
                    Ok(SmsVendor::Tencent) => ReceiptFormat::TencentStatus,
                    _ => ReceiptFormat::AliyunReport,
                },
                ChannelType::Wechatoa | ChannelType::Wechatmp => ReceiptFormat::WechatEvent,
                _ => ReceiptFormat::None,
            };
            let text = |k: &str| {
                spec.credentials
                    .get(k)
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty() && format == ReceiptFormat::WechatEvent)
            };
            let wechat_token = text("token").map(str::to_string);
            let wechat_aes = text("encoding_aes_key").and_then(wechat_events::AesKey::parse);
            let wechat_appid = text("appid").unwrap_or_default().to_string();
            ChannelAuth {
                channel_type: spec.channel_type,
                format,
                basic,
                wechat_token,
                wechat_aes,
                wechat_appid,
            }
        });
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(channel_id, (Instant::now(), auth.clone()));
        }
        Ok(auth)
    }
}

/// The channel behind a receipt URL, or 404 for a wrong token or an unknown channel (the
/// answer does not tell which).
async fn channel_for(
    state: &State,
    path: &(String, String),
) -> Result<(i64, ChannelAuth), ApiError> {
    let not_found = || ApiError::not_found("receipt endpoint");
    let channel_id: i64 = path.0.parse().map_err(|_| not_found())?;
    if !state
        .crypto
        .check_url_token(&token_purpose(channel_id), &path.1)
    {
        metrics::counter!("msghub_receipt_requests_rejected_total", "reason" => "token")
            .increment(1);
        return Err(not_found());
    }
    let auth = state
        .receipt_channels
        .get(state, channel_id)
        .await?
        .ok_or_else(not_found)?;
    Ok((channel_id, auth))
}

/// `GET` on a receipt URL: Aliyun's console probes it and expects `{"code":0}`; WeChat
/// verifies a server URL by sending `signature`, `timestamp`, `nonce` and `echostr`, and
/// expects `echostr` back when the signature is made with the configured Token.
async fn probe(
    state: State,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (_, auth) = channel_for(&state, &path).await?;
    if auth.format == ReceiptFormat::WechatEvent {
        let query = wechat_query(&req);
        verify_wechat(&auth, &query)?;
        let echostr = query.get("echostr").cloned().unwrap_or_default();
        return Ok(HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(echostr));
    }
    Ok(HttpResponse::Ok().json(json!({"code": 0, "msg": "成功"})))
}

fn wechat_query(req: &HttpRequest) -> HashMap<String, String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect()
}

/// A WeChat push or URL check must be signed with the channel's Token, and recently.
fn verify_wechat(auth: &ChannelAuth, query: &HashMap<String, String>) -> Result<(), ApiError> {
    let token = wechat_token(auth)?;
    let field = |k: &str| query.get(k).map(String::as_str).unwrap_or_default();
    let expected = wechat_events::signature(&[token, field("timestamp"), field("nonce")]);
    let now = chrono::Utc::now().timestamp();
    if !constant_time_eq(field("signature").as_bytes(), expected.as_bytes())
        || !wechat_events::fresh(field("timestamp"), now)
    {
        return Err(wechat_unsigned());
    }
    Ok(())
}

fn wechat_token(auth: &ChannelAuth) -> Result<&str, ApiError> {
    auth.wechat_token.as_deref().ok_or_else(|| {
        metrics::counter!("msghub_receipt_requests_rejected_total", "reason" => "no_token")
            .increment(1);
        ApiError::new(
            403,
            "forbidden",
            format!(
                "this {} channel has no token: set credentials.token to the Token of the account's server (message push) configuration",
                auth.channel_type
            ),
        )
    })
}

fn wechat_unsigned() -> ApiError {
    metrics::counter!("msghub_receipt_requests_rejected_total", "reason" => "signature")
        .increment(1);
    ApiError::new(
        401,
        "unauthorized",
        "the WeChat signature (and, on a channel with an encoding_aes_key, the encrypted message's msg_signature) does not match the channel's token, or its timestamp is more than 5 minutes away",
    )
}

/// The message of a push. A channel with an `encoding_aes_key` takes encrypted pushes only
/// (compatible or safe mode): `encrypt_type=aes`, an `Encrypt` envelope matching
/// `msg_signature`, opened with the key — never the plaintext copy, which `signature` does not
/// cover. A channel without a key reads the plaintext (plaintext mode, or the copy of the
/// compatible mode) and cannot read safe-mode pushes.
fn wechat_message(
    auth: &ChannelAuth,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<HashMap<String, String>, ApiError> {
    let outer = wechat_events::fields(body).map_err(ApiError::invalid)?;
    let Some(key) = &auth.wechat_aes else {
        if outer.contains_key("MsgType") {
            return Ok(outer);
        }
        return Err(ApiError::invalid(
            "an encrypted (safe mode) push needs the channel's encoding_aes_key: set credentials.encoding_aes_key to the account's EncodingAESKey",
        ));
    };
    let field = |k: &str| query.get(k).map(String::as_str).unwrap_or_default();
    let encrypt = outer
        .get("Encrypt")
        .map(String::as_str)
        .filter(|e| !e.is_empty());
    let (Some(encrypt), "aes") = (encrypt, field("encrypt_type")) else {
        return Err(wechat_unsigned());
    };
    let token = wechat_token(auth)?;
    let expected = wechat_events::signature(&[token, field("timestamp"), field("nonce"), encrypt]);
    if !constant_time_eq(field("msg_signature").as_bytes(), expected.as_bytes()) {
        return Err(wechat_unsigned());
    }
    // One answer for every failure past the signature: what went wrong inside is logged, not
    // shown (an answer per cause would help someone probing the envelope).
    key.decrypt(encrypt, &auth.wechat_appid)
        .and_then(|xml| wechat_events::fields(xml.as_bytes()))
        .map_err(|e| {
            tracing::debug!(error = %e, "an encrypted WeChat push could not be read");
            ApiError::invalid("the encrypted message could not be read with the channel's encoding_aes_key and appid")
        })
}

/// A WeChat event push: verified, read, and (for template send results) applied. WeChat wants
/// `success` (or an empty answer) within 5 s and retries three times otherwise; a send result
/// naming a MsgID not stored even after the waits is answered 503, so WeChat brings it again.
async fn wechat_event(
    state: &State,
    req: &HttpRequest,
    channel_id: i64,
    auth: &ChannelAuth,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    let query = wechat_query(req);
    verify_wechat(auth, &query)?;
    let fields = wechat_message(auth, &query, body)?;
    let success = || {
        HttpResponse::Ok()
            .content_type("text/plain")
            .body("success")
    };
    let t = auth.channel_type;
    let oa = t == ChannelType::Wechatoa;
    // Each event on the kind of account that has it: a service account's own subscription
    // notices are not a mini-program's sends, nor follows of an Official Account a
    // mini-program's.
    let statuses = match wechat_events::event(&fields) {
        Ok(Some(WechatEvent::TemplateSent(status))) if oa => vec![status],
        Ok(Some(WechatEvent::SubscribeSent(statuses))) if !oa => statuses,
        // Following the account again is consent again: whatever suppressed the openid is
        // lifted; unfollowing suppresses it (template sends to it would fail with 43004).
        Ok(Some(WechatEvent::Subscribed(openid))) if oa => {
            state
                .db
                .remove_suppressions(t, &[&openid])
                .await
                .map_err(|e| ApiError::internal("lifting a suppression", &e))?;
            return Ok(success());
        }
        Ok(Some(WechatEvent::Unsubscribed(openid))) if oa => {
            state
                .db
                .add_suppressions(t, &[&openid], SuppressReason::Unsubscribed, None)
                .await
                .map_err(|e| ApiError::internal("suppressing an address", &e))?;
            return Ok(success());
        }
        Ok(_) => return Ok(success()),
        Err(e) => {
            metrics::counter!("msghub_receipts_total", "channel_type" => t.code(), "result" => "invalid")
                .increment(1);
            return Err(ApiError::invalid(e));
        }
    };
    let resolved = resolve_ids(state, t, channel_id, statuses).await?;
    // What was found is applied even when some MsgID of the push is not stored yet: WeChat
    // pushes it all again, and the repeats change nothing.
    apply(state, t, resolved.receipts, 0, resolved.mismatched).await?;
    if resolved.missing > 0 {
        metrics::counter!("msghub_receipts_total", "channel_type" => t.code(), "result" => "retry")
            .increment(resolved.missing);
        return Err(ApiError::new(
            503,
            "not_yet",
            "no delivery has this MsgID yet; WeChat will push it again",
        ));
    }
    Ok(success())
}

async fn provider_receipts(
    state: State,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let (channel_id, auth) = channel_for(&state, &path).await?;
    let body =
        super::body_or(body).map_err(|(status, m)| ApiError::new(status, "invalid_request", m))?;
    if let Some(expected) = &auth.basic {
        let given = req
            .headers()
            .get("Authorization")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !constant_time_eq(given, expected.as_bytes()) {
            metrics::counter!("msghub_receipt_requests_rejected_total", "reason" => "auth")
                .increment(1);
            return Err(ApiError::new(
                401,
                "unauthorized",
                "receipt callbacks must carry the channel's Basic credentials",
            ));
        }
    }
    if auth.format == ReceiptFormat::WechatEvent {
        return wechat_event(&state, &req, channel_id, &auth, &body).await;
    }
    let value = parse_json(&body).map_err(ApiError::invalid)?;
    if auth.format == ReceiptFormat::TencentStatus && sms_replies::is_tencent_reply(&value) {
        match sms_replies::tencent_reply(&value) {
            Ok(reply) => sms_replies::apply(&state, &[reply], 0).await?,
            Err(e) => {
                sms_replies::apply(&state, &[], 1).await?;
                return Err(ApiError::invalid(format!("reply callback: {e}")));
            }
        }
        return Ok(HttpResponse::Ok().json(json!({"result": 0, "errmsg": "OK"})));
    }
    let items = value.as_array().ok_or_else(|| {
        ApiError::invalid(format!(
            "receipts must be a JSON array, got {}",
            kind_of(&value)
        ))
    })?;
    if items.len() > MAX_ITEMS {
        return Err(ApiError::invalid(format!(
            "{} receipts in one request; at most {MAX_ITEMS}",
            items.len()
        )));
    }
    let t = auth.channel_type;
    let (receipts, invalid, unmatched) = match auth.format {
        ReceiptFormat::JPush => {
            let (receipts, invalid) = parse_jpush(items, channel_id);
            (receipts, invalid, 0)
        }
        ReceiptFormat::AliyunReport => {
            // SmsUp replies come to the same URL when it is entered for both pushes.
            let (ups, reports): (Vec<&Value>, Vec<&Value>) =
                items.iter().partition(|i| sms_replies::is_aliyun_reply(i));
            if !ups.is_empty() {
                let replies: Vec<_> = ups
                    .iter()
                    .filter_map(|i| sms_replies::aliyun_reply(i))
                    .collect();
                let invalid = (ups.len() - replies.len()) as u64;
                sms_replies::apply(&state, &replies, invalid).await?;
            }
            let (receipts, invalid) = parse_sms_report(&reports, channel_id);
            (receipts, invalid, 0)
        }
        ReceiptFormat::TencentStatus => {
            let (statuses, invalid) = parse_tencent_status(items);
            let resolved = resolve_ids(&state, t, channel_id, statuses).await?;
            (
                resolved.receipts,
                invalid,
                resolved.mismatched + resolved.missing,
            )
        }
        ReceiptFormat::None | ReceiptFormat::WechatEvent => {
            return Err(ApiError::invalid(format!(
                "{t} channels have no provider receipts"
            )));
        }
    };
    let counts = apply(&state, t, receipts, invalid, unmatched).await?;
    Ok(match auth.format {
        // Aliyun checks only the numeric code.
        ReceiptFormat::AliyunReport => {
            HttpResponse::Ok().json(json!({"code": 0, "msg": "接收成功"}))
        }
        ReceiptFormat::TencentStatus => {
            HttpResponse::Ok().json(json!({"result": 0, "errmsg": "OK"}))
        }
        _ => HttpResponse::Ok().json(counts_json(&counts, invalid)),
    })
}

fn counts_json(c: &ReceiptCounts, invalid: u64) -> Value {
    json!({"applied": c.applied, "duplicate": c.duplicate, "unknown": c.unknown, "invalid": invalid})
}

/// Hand receipts to the writer and wait for their commit.
async fn submit(
    state: &AppState,
    receipts: Vec<Receipt>,
) -> Result<ReceiptCounts, msghub_actors::batcher::BatchError> {
    if receipts.is_empty() {
        return Ok(ReceiptCounts::default());
    }
    state.receipts.submit(receipts).await
}

/// Apply `receipts`; `unmatched` more named no delivery before reaching the writer (a serial
/// never stored, or stored for another number) and count as unknown too.
pub(crate) async fn apply(
    state: &AppState,
    t: ChannelType,
    receipts: Vec<Receipt>,
    invalid: u64,
    unmatched: u64,
) -> Result<ReceiptCounts, ApiError> {
    let mut counts = submit(state, receipts)
        .await
        .map_err(|e| ApiError::internal("applying receipts", &e))?;
    counts.unknown += unmatched;
    let code = t.code();
    for (result, n) in [
        ("applied", counts.applied),
        ("duplicate", counts.duplicate),
        ("unknown", counts.unknown),
        ("invalid", invalid),
    ] {
        if n > 0 {
            metrics::counter!("msghub_receipts_total", "channel_type" => code, "result" => result)
                .increment(n);
        }
    }
    Ok(counts)
}

fn unix_ms(seconds: Option<i64>) -> i64 {
    seconds
        .filter(|s| *s > 0 && *s < 100_000_000_000)
        .map(|s| s * 1000)
        .unwrap_or_else(msghub_actors::plan::now_ms)
}

/// JPush push callbacks: `[{msg_id, registration_id, platform, type, time, params: {msgid}}]`,
/// type 1 received, 2 clicked, 4 not received (`docs/specs/receipts.md`).
fn parse_jpush(items: &[Value], channel_id: i64) -> (Vec<Receipt>, u64) {
    let mut out = Vec::with_capacity(items.len());
    let mut invalid = 0;
    for item in items {
        let msgid = item.pointer("/params/msgid").and_then(|v| match v {
            Value::String(s) => s.parse::<i64>().ok(),
            Value::Number(n) => n.as_i64(),
            _ => None,
        });
        let address = item.get("registration_id").and_then(Value::as_str);
        let kind = match item.get("type").and_then(Value::as_i64) {
            Some(1) => Some(ReceiptKind::Delivered),
            Some(2) => Some(ReceiptKind::Clicked),
            Some(4) => Some(ReceiptKind::Undelivered),
            _ => None,
        };
        // Text with a control character is in no delivery, and Postgres would refuse the
        // whole batch this receipt is written with: such an item is invalid.
        match (msgid, address, kind) {
            (Some(msgid), Some(address), Some(kind)) if plain_text(address, 256) => {
                out.push(Receipt {
                    msgid,
                    channel_id,
                    address: address.to_string(),
                    kind,
                    at_ms: unix_ms(item.get("time").and_then(Value::as_i64)),
                    code: None,
                    suppress: None,
                })
            }
            _ => invalid += 1,
        }
    }
    (out, invalid)
}

/// Aliyun SmsReport: `[{phone_number, success, err_code, out_id, biz_id, report_time, ...}]`;
/// `out_id` is the msghub msgid the adapter sent as `OutId`.
fn parse_sms_report(items: &[&Value], channel_id: i64) -> (Vec<Receipt>, u64) {
    let mut out = Vec::with_capacity(items.len());
    let mut invalid = 0;
    for item in items {
        let msgid = item
            .get("out_id")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<i64>().ok());
        let phone = item.get("phone_number").and_then(Value::as_str);
        let success = item.get("success").and_then(Value::as_bool);
        match (msgid, phone, success) {
            (Some(msgid), Some(phone), Some(success)) if plain_text(phone, 256) => {
                out.push(Receipt {
                    msgid,
                    channel_id,
                    address: phone.to_string(),
                    kind: if success {
                        ReceiptKind::Delivered
                    } else {
                        ReceiptKind::Undelivered
                    },
                    at_ms: msghub_actors::plan::now_ms(),
                    code: item
                        .get("err_code")
                        .and_then(Value::as_str)
                        .filter(|c| !success && plain_text(c, 64))
                        .map(str::to_string),
                    suppress: None,
                })
            }
            _ => invalid += 1,
        }
    }
    (out, invalid)
}

/// Who a receipt without a msgid says it is for, checked against the delivery it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Recipient {
    /// Tencent's `nationcode` and national number (`mobile`): `+86138…`, `86138…` and `138…`
    /// are all (`86`, `138…`).
    Mobile { nationcode: String, mobile: String },
    /// WeChat's openid (`FromUserName`), exactly.
    Openid(String),
}

impl Recipient {
    fn is(&self, address: &str) -> bool {
        match self {
            Recipient::Mobile { nationcode, mobile } => same_number(address, nationcode, mobile),
            Recipient::Openid(openid) => address == openid,
        }
    }
}

/// One receipt that names its delivery by the provider's id (Tencent `sid`, WeChat `MsgID`),
/// before the id is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IdStatus {
    pub(super) id: String,
    pub(super) recipient: Recipient,
    pub(super) kind: ReceiptKind,
    pub(super) code: Option<String>,
    pub(super) at_ms: i64,
    /// See [`Receipt::suppress`].
    pub(super) suppress: Option<SuppressReason>,
}

/// `user_receive_time` (`yyyy-MM-dd HH:mm:ss`, China Standard Time) as unix ms.
fn china_time_ms(text: &str) -> Option<i64> {
    let naive = chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S").ok()?;
    let offset = chrono::FixedOffset::east_opt(8 * 3600)?;
    Some(
        naive
            .and_local_timezone(offset)
            .single()?
            .timestamp_millis(),
    )
}

/// Tencent SMS status callbacks: `[{user_receive_time, nationcode, mobile, report_status,
/// errmsg, description, sid}]`; `sid` is the `SerialNo` the send returned for the number.
fn parse_tencent_status(items: &[Value]) -> (Vec<IdStatus>, u64) {
    let mut out = Vec::with_capacity(items.len());
    let mut invalid = 0;
    for item in items {
        let field = |k: &str| item.get(k).and_then(Value::as_str);
        let sid = field("sid").filter(|s| plain_text(s, 128));
        let mobile = field("mobile")
            .map(str::trim)
            .filter(|m| all_digits(m, 5..=20));
        let nationcode = field("nationcode")
            .map(str::trim)
            .filter(|c| all_digits(c, 1..=4))
            .unwrap_or_default();
        let kind = match field("report_status") {
            Some("SUCCESS") => Some(ReceiptKind::Delivered),
            Some("FAIL") => Some(ReceiptKind::Undelivered),
            _ => None,
        };
        match (sid, mobile, kind) {
            (Some(sid), Some(mobile), Some(kind)) => out.push(IdStatus {
                id: sid.to_string(),
                recipient: Recipient::Mobile {
                    nationcode: nationcode.to_string(),
                    mobile: mobile.to_string(),
                },
                kind,
                code: field("errmsg")
                    .filter(|c| kind == ReceiptKind::Undelivered && plain_text(c, 64))
                    .map(str::to_string),
                at_ms: field("user_receive_time")
                    .and_then(china_time_ms)
                    .unwrap_or_else(msghub_actors::plan::now_ms),
                suppress: None,
            }),
            _ => invalid += 1,
        }
    }
    (out, invalid)
}

fn all_digits(text: &str, lengths: std::ops::RangeInclusive<usize>) -> bool {
    lengths.contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
}

/// Whether a delivery's address is the callback's number: with a `nationcode`, the address in
/// the E.164 form the adapter sent it in (`138…`, `86138…`, `+86138…`, `0086138…` all are
/// `+86138…`) is `+{nationcode}{mobile}`; without one, the address is `mobile` as written.
fn same_number(address: &str, nationcode: &str, mobile: &str) -> bool {
    if nationcode.is_empty() {
        return address.trim() == mobile;
    }
    msghub_providers::sms_e164(address).is_some_and(|sent| sent == format!("+{nationcode}{mobile}"))
}

/// What receipts named by provider id came to.
struct Resolved {
    receipts: Vec<Receipt>,
    /// Named a delivery of another recipient: foreign, or forged.
    mismatched: u64,
    /// Named no delivery at all, even after the waits.
    missing: u64,
}

/// The deliveries receipts name by provider id. An id not stored yet is looked up again
/// after each of [`ID_WAITS`].
async fn resolve_ids(
    state: &State,
    channel_type: ChannelType,
    channel_id: i64,
    mut pending: Vec<IdStatus>,
) -> Result<Resolved, ApiError> {
    let mut receipts = Vec::with_capacity(pending.len());
    let mut mismatched = 0u64;
    let mut waits = ID_WAITS.iter();
    loop {
        let mut ids: Vec<&str> = pending.iter().map(|s| s.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let found = state
            .db
            .by_provider_id(channel_type, channel_id, &ids)
            .await
            .map_err(|e| ApiError::internal("receipt provider ids", &e))?;
        let mut by_serial: HashMap<&str, Vec<(i64, &str)>> = HashMap::new();
        for (serial, msgid, address) in &found {
            by_serial
                .entry(serial.as_str())
                .or_default()
                .push((*msgid, address.as_str()));
        }
        pending.retain(|status| {
            let Some(deliveries) = by_serial.get(status.id.as_str()) else {
                return true;
            };
            let before = receipts.len();
            receipts.extend(
                deliveries
                    .iter()
                    .filter(|(_, address)| status.recipient.is(address))
                    .map(|(msgid, address)| Receipt {
                        msgid: *msgid,
                        channel_id,
                        address: (*address).to_string(),
                        kind: status.kind,
                        at_ms: status.at_ms,
                        code: status.code.clone(),
                        suppress: status.suppress,
                    }),
            );
            if receipts.len() == before {
                mismatched += 1;
            }
            false
        });
        match waits.next() {
            Some(wait) if !pending.is_empty() => {
                metrics::counter!("msghub_receipt_id_waits_total").increment(1);
                tokio::time::sleep(*wait).await;
            }
            _ => break,
        }
    }
    Ok(Resolved {
        receipts,
        mismatched,
        missing: pending.len() as u64,
    })
}

/// `POST /v1/events`: clicks, reads and deliveries reported by the business's own app,
/// `{"events": [{"msgid", "userid", "type": "clicked"|"read"|"delivered", "channel": "app"}]}`.
/// A read counts as a click. Only the source's own messages are affected.
async fn client_events(
    state: State,
    req: HttpRequest,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, JumsError> {
    let source = state.sources.authenticate(&req).await?;
    let body = super::jums_body(body)?;
    let value = parse_json(&body).map_err(JumsError::invalid)?;
    let events = value
        .get("events")
        .and_then(Value::as_array)
        .ok_or_else(|| JumsError::invalid("body must be {\"events\": [...]}"))?;
    if events.is_empty() || events.len() > MAX_ITEMS {
        return Err(JumsError::invalid(format!(
            "events must hold 1 to {MAX_ITEMS} items"
        )));
    }
    if let Some(k) = value
        .as_object()
        .and_then(|o| o.keys().find(|k| *k != "events"))
    {
        return Err(JumsError::invalid(format!("unknown field {k:?}")));
    }
    // Validate everything before applying anything.
    let mut parsed = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        let field = |k: &str| e.get(k).and_then(Value::as_str);
        let msgid = field("msgid")
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| {
                JumsError::invalid(format!("events[{i}].msgid must be a msgid string"))
            })?;
        let userid = field("userid")
            .filter(|u| crate::domain::user_opt::valid_userid(u))
            .ok_or_else(|| {
                JumsError::invalid(format!(
                    "events[{i}].userid is required: 1 to 64 printable characters"
                ))
            })?;
        let kind = match field("type") {
            Some("clicked" | "read") => ReceiptKind::Clicked,
            Some("delivered") => ReceiptKind::Delivered,
            _ => {
                return Err(JumsError::invalid(format!(
                    "events[{i}].type must be \"clicked\", \"read\" or \"delivered\""
                )));
            }
        };
        let channel = match e.get("channel") {
            None => ChannelType::App,
            Some(v) => v.as_str().and_then(ChannelType::from_code).ok_or_else(|| {
                JumsError::invalid(format!("events[{i}].channel is not a channel type"))
            })?,
        };
        if let Some(k) = e.as_object().and_then(|o| {
            o.keys()
                .find(|k| !["msgid", "userid", "type", "channel", "time"].contains(&k.as_str()))
        }) {
            return Err(JumsError::invalid(format!(
                "events[{i}]: unknown field {k:?}"
            )));
        }
        let at = unix_ms(e.get("time").and_then(Value::as_i64));
        parsed.push((msgid, userid.to_string(), kind, channel, at));
    }
    let mut receipts = Vec::new();
    let mut unknown = 0u64;
    // The events' messages out of the intake journal, all at once.
    let msgids: std::collections::BTreeSet<i64> = parsed.iter().map(|p| p.0).collect();
    futures::future::join_all(msgids.into_iter().map(|m| state.settle_message(m))).await;
    for (msgid, userid, kind, channel, at) in parsed {
        let targets = state
            .db
            .client_event_targets(source.id, msgid, &userid, channel.code())
            .await
            .map_err(|e| JumsError::internal("client events", &e))?;
        if targets.is_empty() {
            unknown += 1;
        }
        receipts.extend(targets.into_iter().map(|(channel_id, address)| Receipt {
            msgid,
            channel_id,
            address,
            kind,
            at_ms: at,
            code: None,
            suppress: None,
        }));
    }
    let counts = submit(&state, receipts)
        .await
        .map_err(|e| JumsError::internal("applying client events", &e))?;
    let unknown = unknown + counts.unknown;
    metrics::counter!("msghub_client_events_total", "result" => "applied")
        .increment(counts.applied);
    metrics::counter!("msghub_client_events_total", "result" => "unknown").increment(unknown);
    Ok(
        HttpResponse::Ok().json(json!({"code": 0, "message": "success",
        "applied": counts.applied, "duplicate": counts.duplicate, "unknown": unknown})),
    )
}

/// The receipts writer: one transaction for many requests' receipts. Each change is then
/// reported to the business system when the message asked for status callbacks.
pub fn writer(
    db: crate::storage::Db,
    callbacks: Callbacks,
    capacity: usize,
    max_batch: usize,
) -> ReceiptWriter {
    Batcher::spawn(
        "receipts",
        capacity,
        max_batch,
        move |batches: Vec<Vec<Receipt>>| {
            let db = db.clone();
            let callbacks = callbacks.clone();
            async move {
                let (counts, changed) = db
                    .apply_receipts(&batches)
                    .await
                    .map_err(|e| e.to_string())?;
                for c in changed {
                    if let Some(event) = callback_event(c) {
                        callbacks.emit(event.0, event.1);
                    }
                }
                Ok(counts)
            }
        },
    )
}

/// The JUMS callback item for a receipt: 4 delivered, 5 delivery failed, 6 clicked.
fn callback_event(c: Changed) -> Option<(i64, CallbackEvent)> {
    let channel_type = ChannelType::from_code(&c.channel_type)?;
    let (kind, error) = match c.status {
        DeliveryStatus::Delivered => (CallbackKind::Delivered, None),
        DeliveryStatus::Clicked => (CallbackKind::Clicked, None),
        DeliveryStatus::Undelivered => (
            CallbackKind::DeliveryFailed,
            Some((
                c.code.unwrap_or_else(|| "undelivered".into()),
                "the provider reported it was not delivered".to_string(),
            )),
        ),
        _ => return None,
    };
    Some((
        c.msgid,
        CallbackEvent {
            kind,
            userid: c.userid,
            channel_type,
            address: c.address,
            error,
            at_ms: c.at_ms,
        },
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn receipts_naming_an_address_or_id_with_a_control_character_are_invalid() {
        // Such text is in no delivery, and Postgres refuses a NUL: the receipt is counted
        // invalid instead of failing the batch it would be written with.
        let jpush = serde_json::json!([
            {"registration_id": "r\u{0}", "type": 1, "params": {"msgid": "7"}},
            {"registration_id": "r1", "type": 1, "params": {"msgid": "7"}}
        ]);
        let (receipts, invalid) = parse_jpush(jpush.as_array().unwrap(), 3);
        assert_eq!((receipts.len(), invalid), (1, 1));
        assert_eq!(receipts[0].address, "r1");

        let aliyun = serde_json::json!([
            {"phone_number": "1380000\u{0}0", "success": true, "out_id": "7"},
            {"phone_number": "13800000001", "success": false, "out_id": "7", "err_code": "X\u{7}"}
        ]);
        let items: Vec<&Value> = aliyun.as_array().unwrap().iter().collect();
        let (receipts, invalid) = parse_sms_report(&items, 3);
        assert_eq!((receipts.len(), invalid), (1, 1));
        assert_eq!(
            receipts[0].code, None,
            "a code with a control character is dropped"
        );

        let tencent = serde_json::json!([
            {"mobile": "13800000001", "report_status": "SUCCESS", "sid": "\u{0}"},
            {"mobile": "13800000001", "report_status": "FAIL", "sid": "2433:1", "errmsg": "E\u{0}"}
        ]);
        let (statuses, invalid) = parse_tencent_status(tencent.as_array().unwrap());
        assert_eq!((statuses.len(), invalid), (1, 1));
        assert_eq!(statuses[0].code, None);
    }

    #[test]
    fn tencent_statuses_are_read_in_their_documented_shape() {
        let items: Vec<Value> = serde_json::from_str(
            r#"[{"user_receive_time":"2015-10-17 08:03:04","nationcode":"86","mobile":"13800000001",
                 "report_status":"SUCCESS","errmsg":"DELIVRD","description":"用户短信送达成功","sid":"2433:1"},
                {"user_receive_time":"bad","nationcode":"86","mobile":"13800000002",
                 "report_status":"FAIL","errmsg":"MK:0001","description":"失败","sid":"2433:2"},
                {"mobile":"13800000003","report_status":"SUCCESS"},
                {"mobile":"13800000004","report_status":"UNKNOWN","sid":"2433:4"},
                {"mobile":"+8613800000005","report_status":"SUCCESS","sid":"2433:5"},
                {"mobile":"13800000006","report_status":"SUCCESS","sid":""}]"#,
        )
        .unwrap();
        let before = msghub_actors::plan::now_ms();
        let (statuses, invalid) = parse_tencent_status(&items);
        assert_eq!(invalid, 4);
        assert_eq!(statuses.len(), 2);
        assert_eq!(
            statuses[0],
            IdStatus {
                id: "2433:1".into(),
                recipient: Recipient::Mobile {
                    nationcode: "86".into(),
                    mobile: "13800000001".into(),
                },
                kind: ReceiptKind::Delivered,
                code: None,
                // 08:03:04 in UTC+8.
                at_ms: 1_445_040_184_000,
                suppress: None,
            }
        );
        assert_eq!(statuses[1].kind, ReceiptKind::Undelivered);
        assert_eq!(statuses[1].code.as_deref(), Some("MK:0001"));
        assert!(statuses[1].at_ms >= before, "an unreadable time is now");
    }

    #[test]
    fn a_status_matches_its_number_however_the_address_is_written() {
        for address in ["13800000001", "+8613800000001", "8613800000001"] {
            assert!(same_number(address, "86", "13800000001"), "{address}");
        }
        assert!(same_number("13800000001", "", "13800000001"));
        assert!(same_number("008613800000001", "86", "13800000001"));
        assert!(same_number("0085291234567", "852", "91234567"));
        assert!(!same_number("13800000002", "86", "13800000001"));
        assert!(!same_number("+8613800000001", "86", "13800000002"));
        // Only the whole number: a tail or another calling code is not it.
        assert!(!same_number("+8613800000001", "86", "00000001"));
        assert!(!same_number("+8513800000001", "86", "13800000001"));
        assert!(!same_number("+8613800000001", "", "13800000001"));
    }
}
