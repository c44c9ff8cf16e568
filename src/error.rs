//! The API's error types and the catalogue of stable codes.
//!
//! `/v1` answers with JUMS business codes (`{"code":4004,"message":"..."}`) so existing JUMS
//! clients understand them; `/api` answers `{"error":{"code":"not_found","message":"..."}}`.
//! Internal errors are logged with their whole chain and never echoed to the client.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use msghub_actors::provider::ChannelType;
use serde_json::json;

/// JUMS business codes used by `/v1`.
pub mod jums {
    pub const INVALID_PARAMETER: i64 = 4004;
    pub const AUTH_FAILED: i64 = 4005;
    pub const SERVER_ERROR: i64 = 5000;
    pub const TOO_MANY_USERIDS: i64 = 1015004;
    pub const SOURCE_CLOSED: i64 = 1015005;
    pub const INVALID_RULE: i64 = 1015026;
    pub const RATE_LIMITED: i64 = 1015030;
    pub const APP_PLATFORM_MISSING: i64 = 1015084;
    pub const APP_PLATFORM_INVALID: i64 = 1015085;
    /// `POST /v1/retract/{msgid}` for a message already retracted.
    pub const ALREADY_RETRACTED: i64 = 1015055;
    /// `option.black_id` and `option.white_id` in one request.
    pub const BLACK_AND_WHITE_LIST: i64 = 1015097;
    /// msghub extension: a channel type JUMS has no code for (webhook, wechatwk, feishu).
    pub const OTHER_CHANNEL_UNAVAILABLE: i64 = 1015013;
}

/// The JUMS code for "channel of this type not granted or not enabled".
pub fn channel_unavailable_code(t: ChannelType) -> i64 {
    match t {
        ChannelType::App => 1015006,
        ChannelType::Sms => 1015007,
        ChannelType::Wechatoa => 1015008,
        ChannelType::Wechatmp => 1015009,
        ChannelType::Email => 1015010,
        ChannelType::AlipayLife => 1015011,
        ChannelType::DingtalkCc => 1015012,
        _ => jums::OTHER_CHANNEL_UNAVAILABLE,
    }
}

/// An error of the JUMS-compatible `/v1` API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct JumsError {
    pub code: i64,
    pub message: String,
    /// The HTTP status when the code's own does not say it (a body too large: 413).
    pub status: Option<u16>,
}

impl JumsError {
    pub fn new(code: i64, message: impl Into<String>) -> JumsError {
        JumsError {
            code,
            message: message.into(),
            status: None,
        }
    }

    /// The same error answered with HTTP `status`.
    pub fn with_status(mut self, status: u16) -> JumsError {
        self.status = Some(status);
        self
    }

    pub fn invalid(message: impl Into<String>) -> JumsError {
        JumsError::new(jums::INVALID_PARAMETER, message)
    }

    /// Log the cause, answer a generic server error.
    pub fn internal(context: &str, cause: &dyn std::fmt::Display) -> JumsError {
        tracing::error!(error = %cause, "{context}");
        JumsError::new(
            jums::SERVER_ERROR,
            "internal error; the request was not stored",
        )
    }
}

impl ResponseError for JumsError {
    fn status_code(&self) -> StatusCode {
        if let Some(status) = self.status.and_then(|s| StatusCode::from_u16(s).ok()) {
            return status;
        }
        match self.code {
            jums::AUTH_FAILED => StatusCode::UNAUTHORIZED,
            jums::SERVER_ERROR => StatusCode::INTERNAL_SERVER_ERROR,
            jums::RATE_LIMITED => StatusCode::TOO_MANY_REQUESTS,
            1015005..=1015013 => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status_code());
        if self.code == jums::RATE_LIMITED {
            resp.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
        }
        resp.json(json!({"code": self.code, "message": self.message}))
    }
}

/// An error of the `/api` management API, with a stable string code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "invalid_request", message)
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(404, "not_found", format!("{what} not found"))
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            401,
            "unauthorized",
            "missing or wrong admin token (Authorization: Bearer ...)",
        )
    }

    pub fn internal(context: &str, cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "{context}");
        ApiError::new(500, "internal", "internal error")
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .json(json!({"error": {"code": self.code, "message": self.message}}))
    }
}
