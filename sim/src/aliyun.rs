//! Aliyun SMS (dysmsapi 2017-05-25) simulator: RPC-style `SendSms` / `SendBatchSms` at `/`.
//!
//! Verifies the common parameters and Signature V1 (HMAC-SHA1) exactly as Aliyun computes it.
//! Gateway errors use HTTP 4xx/5xx; business errors use HTTP 200 with a non-`OK` `Code`.
//! Accepted numbers get SmsReport receipts when a `report_url` is configured
//! (`crate::receipts`).

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use crate::aliyun_sign::verify;
pub use crate::aliyun_sign::{percent_encode, sign, string_to_sign};
use crate::state::{Channel, Injected, SimState, normalise_phone};

const VERSION: &str = "2017-05-25";
const MAX_SKEW_SECS: i64 = 15 * 60;
const MAX_SEND: usize = 1000;
const MAX_BATCH: usize = 100;
const HOST_ID: &str = "dysmsapi.aliyuncs.com";

struct AliError {
    status: u16,
    code: String,
    message: String,
}

fn gateway(status: u16, code: &str, message: impl Into<String>) -> AliError {
    AliError {
        status,
        code: code.into(),
        message: message.into(),
    }
}

fn business(code: &str, message: impl Into<String>) -> AliError {
    AliError {
        status: 200,
        code: code.into(),
        message: message.into(),
    }
}

fn request_id(state: &SimState) -> String {
    let r: u64 = rand::random();
    let n = state.next_id();
    format!(
        "{:08X}-{:04X}-{:04X}-{:04X}-{:012X}",
        (r >> 32) as u32,
        (r >> 16) as u16,
        r as u16,
        (n >> 48) as u16,
        n & 0xFFFF_FFFF_FFFF
    )
}

fn error_response(state: &SimState, e: AliError) -> HttpResponse {
    state.fail(Channel::Sms);
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut b = HttpResponse::build(status);
    if status == StatusCode::TOO_MANY_REQUESTS {
        b.insert_header(("Retry-After", "1"));
    }
    let body = if e.status == 200 {
        json!({"RequestId": request_id(state), "Code": e.code, "Message": e.message})
    } else {
        json!({"RequestId": request_id(state), "HostId": HOST_ID, "Code": e.code, "Message": e.message,
               "Recommend": format!("https://api.aliyun.com/troubleshoot?q={}", e.code)})
    };
    b.json(body)
}

/// HTTP status for an injected Aliyun error code.
fn status_for_code(code: &str) -> u16 {
    match code {
        "SignatureDoesNotMatch" | "SignatureNonceUsed" | "IncompleteSignature" => 400,
        c if c.starts_with("InvalidTimeStamp") || c.starts_with("Missing") => 400,
        "InvalidAccessKeyId.NotFound" | "InvalidAction.NotFound" => 404,
        "InvalidAccessKeyId.Inactive" | "Forbidden.RAM" => 403,
        c if c.starts_with("Throttling") => 429,
        "ServiceUnavailable" => 503,
        "InternalError" => 500,
        _ => 200,
    }
}

fn injected_error(f: Injected) -> AliError {
    match f {
        Injected::Status(429) => gateway(
            429,
            "Throttling.User",
            "Request was denied due to user flow control.",
        ),
        Injected::Status(503) => gateway(
            503,
            "ServiceUnavailable",
            "The request has failed due to a temporary failure of the server.",
        ),
        Injected::Status(s) if s >= 500 => gateway(s, "isp.SYSTEM_ERROR", "simulated system error"),
        Injected::Status(s) => gateway(s, "InvalidParameter", "simulated failure"),
        Injected::Code(c) => AliError {
            status: status_for_code(&c),
            message: format!("simulated {c}"),
            code: c,
        },
    }
}

fn collect_params(req: &HttpRequest, body: &[u8]) -> BTreeMap<String, String> {
    let mut params: BTreeMap<String, String> =
        url::form_urlencoded::parse(req.query_string().as_bytes())
            .into_owned()
            .collect();
    if req.method() == actix_web::http::Method::POST {
        params.extend(url::form_urlencoded::parse(body).into_owned());
    }
    params
}

fn check_gateway(
    method: &str,
    p: &BTreeMap<String, String>,
    state: &SimState,
) -> Result<(), AliError> {
    for name in [
        "AccessKeyId",
        "Signature",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "Timestamp",
        "Version",
        "Action",
    ] {
        if p.get(name).is_none_or(|v| v.is_empty()) {
            return Err(gateway(
                400,
                &format!("Missing{name}"),
                format!("{name} is mandatory for this action."),
            ));
        }
    }
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or_default();
    if let Some(f) = p.get("Format")
        && !f.eq_ignore_ascii_case("JSON")
    {
        return Err(gateway(
            400,
            "InvalidParameter.Format",
            "The simulator only supports Format=JSON.",
        ));
    }
    if get("Version") != VERSION {
        return Err(gateway(
            400,
            "InvalidVersion",
            "Specified parameter Version is not valid.",
        ));
    }
    if get("SignatureMethod") != "HMAC-SHA1" {
        return Err(gateway(
            400,
            "InvalidSignatureMethod",
            "Specified signature method is not valid.",
        ));
    }
    if get("SignatureVersion") != "1.0" {
        return Err(gateway(
            400,
            "InvalidSignatureVersion",
            "Specified signature version is not valid.",
        ));
    }
    let ts = chrono::DateTime::parse_from_rfc3339(get("Timestamp")).map_err(|_| {
        gateway(
            400,
            "InvalidTimeStamp.Format",
            "Specified time stamp or date value is not well formatted.",
        )
    })?;
    if (chrono::Utc::now().timestamp() - ts.timestamp()).abs() > MAX_SKEW_SECS {
        return Err(gateway(
            400,
            "InvalidTimeStamp.Expired",
            "Specified time stamp or date value is expired.",
        ));
    }
    let cfg = state.config();
    if get("AccessKeyId") != cfg.aliyun_access_key_id {
        return Err(gateway(
            404,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
        ));
    }
    let sts = string_to_sign(method, p);
    if !verify(&cfg.aliyun_access_key_secret, &sts, get("Signature")) {
        return Err(gateway(
            400,
            "SignatureDoesNotMatch",
            format!(
                "Specified signature is not matched with our calculation. server string to sign is:{sts}"
            ),
        ));
    }
    if !state
        .nonces
        .insert(get("AccessKeyId"), get("SignatureNonce"))
    {
        return Err(gateway(
            400,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        ));
    }
    Ok(())
}

fn required<'a>(p: &'a BTreeMap<String, String>, name: &str) -> Result<&'a str, AliError> {
    match p.get(name).map(|s| s.trim()) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(business(
            "isv.INVALID_PARAMETERS",
            format!("parameter {name} is required"),
        )),
    }
}

fn check_template(p: &BTreeMap<String, String>) -> Result<(), AliError> {
    if !required(p, "TemplateCode")?.starts_with("SMS_") {
        return Err(business(
            "isv.SMS_TEMPLATE_ILLEGAL",
            "The template is not valid.",
        ));
    }
    Ok(())
}

fn check_sign_name(s: &str) -> Result<(), AliError> {
    if s.trim().is_empty() || s.chars().count() > 64 {
        return Err(business(
            "isv.SMS_SIGNATURE_ILLEGAL",
            "The signature is not valid.",
        ));
    }
    Ok(())
}

/// A valid mainland number, returned as the caller wrote it (trimmed): reports echo it so.
fn phone(raw: &str) -> Result<String, AliError> {
    let raw = raw.trim();
    match normalise_phone(raw) {
        Some(_) => Ok(raw.to_string()),
        None => Err(business(
            "isv.MOBILE_NUMBER_ILLEGAL",
            format!("illegal mobile number {raw}"),
        )),
    }
}

fn json_array(p: &BTreeMap<String, String>, name: &str) -> Result<Vec<Value>, AliError> {
    match serde_json::from_str::<Value>(required(p, name)?) {
        Ok(Value::Array(a)) => Ok(a),
        _ => Err(business(
            "isv.INVALID_JSON_PARAM",
            format!("{name} must be a JSON array"),
        )),
    }
}

fn send_sms(p: &BTreeMap<String, String>) -> Result<Vec<String>, AliError> {
    let numbers = required(p, "PhoneNumbers")?;
    check_sign_name(required(p, "SignName")?)?;
    check_template(p)?;
    if let Some(tp) = p.get("TemplateParam").filter(|s| !s.trim().is_empty())
        && !matches!(serde_json::from_str::<Value>(tp), Ok(Value::Object(_)))
    {
        return Err(business(
            "isv.INVALID_JSON_PARAM",
            "TemplateParam must be a JSON object",
        ));
    }
    let list: Vec<&str> = numbers.split(',').map(str::trim).collect();
    if list.len() > MAX_SEND {
        return Err(business(
            "isv.MOBILE_COUNT_OVER_LIMIT",
            format!("at most {MAX_SEND} numbers per call"),
        ));
    }
    list.into_iter().map(phone).collect()
}

fn send_batch_sms(p: &BTreeMap<String, String>) -> Result<Vec<String>, AliError> {
    let numbers = json_array(p, "PhoneNumberJson")?;
    let signs = json_array(p, "SignNameJson")?;
    check_template(p)?;
    if numbers.is_empty() {
        return Err(business(
            "isv.INVALID_PARAMETERS",
            "PhoneNumberJson is empty",
        ));
    }
    if numbers.len() > MAX_BATCH {
        return Err(business(
            "isv.MOBILE_COUNT_OVER_LIMIT",
            format!("at most {MAX_BATCH} numbers per call"),
        ));
    }
    if signs.len() != numbers.len() {
        return Err(business(
            "isv.INVALID_PARAMETERS",
            "SignNameJson must have one entry per number",
        ));
    }
    for s in &signs {
        check_sign_name(s.as_str().unwrap_or_default())?;
    }
    if p.get("TemplateParamJson")
        .is_some_and(|s| !s.trim().is_empty())
    {
        let params = json_array(p, "TemplateParamJson")?;
        if params.len() != numbers.len() || !params.iter().all(Value::is_object) {
            return Err(business(
                "isv.INVALID_JSON_PARAM",
                "TemplateParamJson must hold one object per number",
            ));
        }
    }
    numbers
        .iter()
        .map(|n| match n {
            Value::String(s) => phone(s),
            other => phone(&other.to_string()),
        })
        .collect()
}

/// `GET /` or `POST /` (form): the RPC entry point.
pub(crate) async fn rpc(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<SimState>,
) -> HttpResponse {
    let c = Channel::Sms;
    SimState::delay(state.begin_call(c)).await;
    let params = collect_params(&req, &body);
    if let Err(e) = check_gateway(req.method().as_str(), &params, &state) {
        return error_response(&state, e);
    }
    if state.rate(c, true).exceeded {
        return error_response(
            &state,
            gateway(
                429,
                "Throttling.User",
                "Request was denied due to user flow control.",
            ),
        );
    }
    let numbers = match params.get("Action").map(String::as_str) {
        Some("SendSms") => send_sms(&params),
        Some("SendBatchSms") => send_batch_sms(&params),
        other => Err(gateway(
            404,
            "InvalidAction.NotFound",
            format!(
                "Specified api {} is not found, please check your url and method.",
                other.unwrap_or_default()
            ),
        )),
    };
    let sent = match numbers {
        Ok(n) => n,
        Err(e) => return error_response(&state, e),
    };
    let numbers: Vec<String> = sent
        .iter()
        .map(|n| normalise_phone(n).unwrap_or_else(|| n.clone()))
        .collect();
    if let Some(f) = state.take_fault(c) {
        return error_response(&state, injected_error(f));
    }
    if state.perm_check(c, &numbers).0 {
        return error_response(
            &state,
            business("isv.MOBILE_NUMBER_ILLEGAL", "illegal mobile number"),
        );
    }
    let biz_id = format!("{}^0", 900_619_746_936_000 + state.next_id());
    let out_id = params.get("OutId").map(String::as_str).unwrap_or_default();
    state.receipts.sms_accepted(&biz_id, out_id, &sent);
    state.record(c, numbers);
    HttpResponse::Ok().json(json!({
        "RequestId": request_id(&state), "Code": "OK", "Message": "OK", "BizId": biz_id
    }))
}
