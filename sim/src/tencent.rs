//! Tencent Cloud SMS simulator: `SendSms` of API 3.0 (version 2021-01-11) — a JSON POST to `/`
//! carrying `X-TC-Action` — with the TC3-HMAC-SHA256 signature verified as Tencent computes it.
//!
//! The signature is checked by code of its own, written from Tencent's published algorithm apart
//! from the hub's signer, so the two check each other.
//!
//! API-level failures answer HTTP 200 with `Response.Error`; otherwise each number gets its own
//! `Code` and, when accepted, a `SerialNo`. Accepted numbers get status callbacks when a
//! `report_url` is configured for `tencent_sms` (`crate::receipts`).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::state::{Channel, Injected, SimState, normalise_phone};

const VERSION: &str = "2021-01-11";
const SERVICE: &str = "sms";
const ALGORITHM: &str = "TC3-HMAC-SHA256";
const MAX_SKEW_SECS: i64 = 5 * 60;
const MAX_NUMBERS: usize = 200;

struct TcError {
    code: String,
    message: String,
}

fn error(code: &str, message: impl Into<String>) -> TcError {
    TcError {
        code: code.into(),
        message: message.into(),
    }
}

fn request_id(state: &SimState) -> String {
    format!(
        "{:08x}-0000-4000-8000-{:012x}",
        rand::random::<u32>(),
        state.next_id()
    )
}

fn error_response(state: &SimState, e: TcError) -> HttpResponse {
    state.fail(Channel::TencentSms);
    HttpResponse::Ok().json(json!({"Response": {
        "Error": {"Code": e.code, "Message": e.message}, "RequestId": request_id(state)}}))
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The parts of `Authorization: TC3-HMAC-SHA256 Credential=ID/DATE/SERVICE/tc3_request,
/// SignedHeaders=a;b, Signature=HEX`.
struct Authorization<'a> {
    secret_id: &'a str,
    date: &'a str,
    service: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let rest = value.strip_prefix(ALGORITHM)?.trim_start();
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (name, v) = part.trim().split_once('=')?;
        match name {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed_headers = Some(v),
            "Signature" => signature = Some(v),
            _ => return None,
        }
    }
    let mut scope = credential?.split('/');
    let (secret_id, date, service, terminator) =
        (scope.next()?, scope.next()?, scope.next()?, scope.next()?);
    if terminator != "tc3_request" || scope.next().is_some() {
        return None;
    }
    Some(Authorization {
        secret_id,
        date,
        service,
        signed_headers: signed_headers?,
        signature: signature?,
    })
}

/// Checks the common headers and the signature, the way the API gateway does.
fn check_gateway(req: &HttpRequest, body: &[u8], state: &SimState) -> Result<(), TcError> {
    let cfg = state.config();
    let auth = header(req, "authorization")
        .and_then(parse_authorization)
        .ok_or_else(|| {
            error(
                "AuthFailure.InvalidAuthorization",
                "Authorization is not a TC3-HMAC-SHA256 credential.",
            )
        })?;
    let timestamp: i64 = header(req, "x-tc-timestamp")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| error("MissingParameter", "X-TC-Timestamp is required."))?;
    if (chrono::Utc::now().timestamp() - timestamp).abs() > MAX_SKEW_SECS {
        return Err(error(
            "AuthFailure.SignatureExpire",
            "Signature expired: the timestamp is more than 5 minutes from the server time.",
        ));
    }
    if auth.secret_id != cfg.tencent_secret_id {
        return Err(error("AuthFailure.SecretIdNotFound", "SecretId not found."));
    }
    let date = chrono::DateTime::from_timestamp(timestamp, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string();
    let signed: Vec<&str> = auth.signed_headers.split(';').collect();
    if auth.date != date
        || auth.service != SERVICE
        || !signed.contains(&"content-type")
        || !signed.contains(&"host")
    {
        return Err(error(
            "AuthFailure.SignatureFailure",
            "The credential scope or the signed headers are wrong.",
        ));
    }
    // Canonical headers: each signed header, name and value in lower case, value trimmed.
    let mut canonical_headers = String::new();
    for name in &signed {
        let value = header(req, name).unwrap_or_default().to_ascii_lowercase();
        canonical_headers.push_str(&format!("{name}:{value}\n"));
    }
    let canonical = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{}\n{}",
        req.method().as_str(),
        req.path(),
        req.query_string(),
        auth.signed_headers,
        hex::encode(Sha256::digest(body))
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{timestamp}\n{date}/{SERVICE}/tc3_request\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let k_date = hmac(format!("TC3{}", cfg.tencent_secret_key).as_bytes(), &date);
    let k_signing = hmac(&hmac(&k_date, SERVICE), "tc3_request");
    if hex::encode(hmac(&k_signing, &string_to_sign)) != auth.signature {
        return Err(error(
            "AuthFailure.SignatureFailure",
            "The provided credentials could not be validated. Please check your signature is correct.",
        ));
    }
    if header(req, "x-tc-version") != Some(VERSION) {
        return Err(error("NoSuchVersion", "The API version does not exist."));
    }
    if header(req, "x-tc-action") != Some("SendSms") {
        return Err(error("InvalidAction", "The action does not exist."));
    }
    if header(req, "x-tc-region").is_none_or(str::is_empty) {
        return Err(error(
            "InvalidRegion",
            "X-TC-Region is required by this version.",
        ));
    }
    Ok(())
}

/// A `SendSms` body that passed the checks.
struct SendSms {
    phones: Vec<String>,
    session: String,
}

fn string_field<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
    body.get(name).and_then(Value::as_str).map(str::trim)
}

fn check_body(body: &[u8], state: &SimState) -> Result<SendSms, TcError> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|_| error("InvalidParameter", "The request body is not JSON."))?;
    let phones: Vec<String> = match body.get("PhoneNumberSet") {
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|p| p.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| error("InvalidParameterValue", "PhoneNumberSet must hold strings."))?,
        _ => return Err(error("MissingParameter", "PhoneNumberSet is required.")),
    };
    if phones.len() > MAX_NUMBERS {
        return Err(error(
            "LimitExceeded.PhoneNumberCountLimit",
            format!("at most {MAX_NUMBERS} numbers per call"),
        ));
    }
    let mainland = phones.iter().filter(|p| p.starts_with("+86")).count();
    if mainland != 0 && mainland != phones.len() {
        return Err(error(
            "UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber",
            "A call may not mix mainland and international numbers.",
        ));
    }
    if string_field(&body, "SmsSdkAppId") != Some(state.config().tencent_sdk_app_id.as_str()) {
        return Err(error(
            "InvalidParameterValue.SdkAppIdNotExist",
            "SmsSdkAppId does not exist.",
        ));
    }
    if !string_field(&body, "TemplateId")
        .is_some_and(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(error(
            "FailedOperation.TemplateIncorrectOrUnapproved",
            "The template is not approved or does not exist.",
        ));
    }
    let sign = string_field(&body, "SignName").unwrap_or_default();
    if mainland > 0 && (sign.is_empty() || sign.chars().count() > 64) {
        return Err(error(
            "FailedOperation.SignatureIncorrectOrUnapproved",
            "The signature is not approved or does not exist.",
        ));
    }
    match body.get("TemplateParamSet") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
        Some(_) => {
            return Err(error(
                "InvalidParameterValue.TemplateParameterFormatError",
                "TemplateParamSet must be an array of strings.",
            ));
        }
    }
    let session = string_field(&body, "SessionContext")
        .unwrap_or_default()
        .to_string();
    if session.len() >= 512 {
        return Err(error(
            "InvalidParameterValue",
            "SessionContext must be shorter than 512 bytes.",
        ));
    }
    Ok(SendSms { phones, session })
}

/// What an injected fault answers: a Tencent API error, or a gateway failure in front of the
/// API with no Tencent body at all.
enum Fault {
    Api(TcError),
    Gateway(StatusCode),
}

fn injected_error(f: Injected) -> Fault {
    match f {
        Injected::Status(429) => Fault::Api(error(
            "RequestLimitExceeded",
            "simulated request rate limit",
        )),
        Injected::Status(s) if s >= 500 => {
            Fault::Gateway(StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY))
        }
        Injected::Status(_) => Fault::Api(error("InvalidParameter", "simulated failure")),
        Injected::Code(c) => Fault::Api(TcError {
            message: format!("simulated {c}"),
            code: c,
        }),
    }
}

/// A number Tencent takes: `+` and 6–15 digits.
fn valid_e164(phone: &str) -> bool {
    phone
        .strip_prefix('+')
        .is_some_and(|d| (6..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

/// `POST /` with `X-TC-Action`: the API 3.0 entry point.
pub(crate) async fn api(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<SimState>,
) -> HttpResponse {
    let c = Channel::TencentSms;
    SimState::delay(state.begin_call(c)).await;
    if let Err(e) = check_gateway(&req, &body, &state) {
        return error_response(&state, e);
    }
    if state.rate(c, true).exceeded {
        return error_response(
            &state,
            error(
                "RequestLimitExceeded",
                "The request rate limit is exceeded.",
            ),
        );
    }
    let send = match check_body(&body, &state) {
        Ok(send) => send,
        Err(e) => return error_response(&state, e),
    };
    if let Some(f) = state.take_fault(c) {
        return match injected_error(f) {
            Fault::Api(e) => error_response(&state, e),
            Fault::Gateway(status) => {
                state.fail(c);
                HttpResponse::build(status).body("<html><body>gateway error</body></html>")
            }
        };
    }
    let mut statuses = Vec::with_capacity(send.phones.len());
    let mut accepted = Vec::new();
    for phone in &send.phones {
        let recorded = normalise_phone(phone).unwrap_or_else(|| phone.clone());
        let (code, message, serial) = if !valid_e164(phone) {
            (
                "InvalidParameterValue.IncorrectPhoneNumber",
                "incorrect phone number",
                String::new(),
            )
        } else if state.is_perm(c, phone) {
            (
                "FailedOperation.PhoneNumberInBlacklist",
                "the number is in the blacklist",
                String::new(),
            )
        } else {
            let serial = format!("2433:{}", 104_571_066_915_705_365u64 + state.next_id());
            accepted.push((serial.clone(), phone.clone(), recorded));
            ("Ok", "send success", serial)
        };
        statuses.push(json!({
            "SerialNo": serial, "PhoneNumber": phone, "Fee": u8::from(code == "Ok"),
            "SessionContext": send.session, "Code": code, "Message": message,
            "IsoCode": if phone.starts_with("+86") { "CN" } else { "" },
        }));
    }
    if !accepted.is_empty() {
        let pairs: Vec<(String, String)> = accepted
            .iter()
            .map(|(serial, phone, _)| (serial.clone(), phone.clone()))
            .collect();
        state.receipts.tencent_accepted(&send.session, &pairs);
        state.record(c, accepted.into_iter().map(|(_, _, n)| n).collect());
    }
    HttpResponse::Ok().json(json!({"Response": {
        "SendStatusSet": statuses, "RequestId": request_id(&state)}}))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn authorization_header_parts() {
        let a = parse_authorization(
            "TC3-HMAC-SHA256 Credential=AKID/2026-01-02/sms/tc3_request, SignedHeaders=content-type;host, Signature=abc",
        )
        .unwrap();
        assert_eq!(
            (
                a.secret_id,
                a.date,
                a.service,
                a.signed_headers,
                a.signature
            ),
            ("AKID", "2026-01-02", "sms", "content-type;host", "abc")
        );
        for bad in [
            "HMAC-SHA256 Credential=AKID/2026-01-02/sms/tc3_request, SignedHeaders=host, Signature=abc",
            "TC3-HMAC-SHA256 Credential=AKID/2026-01-02/sms, SignedHeaders=host, Signature=abc",
            "TC3-HMAC-SHA256 Credential=AKID/2026-01-02/sms/tc3_request, Signature=abc",
            "TC3-HMAC-SHA256 Credential=AKID/2026-01-02/sms/tc3_request, SignedHeaders=host, Signature=abc, X=1",
        ] {
            assert!(parse_authorization(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn e164_numbers() {
        assert!(valid_e164("+8613800138000"));
        assert!(valid_e164("+14155550100"));
        for bad in ["13800138000", "+", "+86 138", "+1234567890123456"] {
            assert!(!valid_e164(bad), "{bad}");
        }
    }
}
