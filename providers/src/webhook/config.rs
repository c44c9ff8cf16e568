//! Credentials of a `webhook` channel: the receiver URL, the signing secret and static headers.

use msghub_actors::provider::ChannelType;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::ConfigError;
use crate::creds::Creds;

pub(crate) const FIELDS: &[&str] = &["url", "secret", "headers"];
/// `headers` is listed because receivers usually authenticate with a static token header.
pub(crate) const SECRETS: &[&str] = &["secret", "headers"];

/// Headers msghub writes itself; letting a config override them would break signing or framing.
const RESERVED: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "x-msghub-timestamp",
    "x-msghub-signature",
    "x-msghub-delivery",
];

#[derive(Clone)]
pub(crate) struct WebhookConfig {
    pub url: reqwest::Url,
    pub secret: String,
    /// Values are marked sensitive so they never show up in `Debug` output.
    pub headers: HeaderMap,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url.as_str())
            .field("secret", &"***")
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

pub(crate) fn parse(credentials: &Value) -> Result<WebhookConfig, ConfigError> {
    let c = Creds::parse(ChannelType::Webhook, credentials, FIELDS)?;
    let url = c.http_url("url", &c.required_str("url")?)?;
    let secret = c.required_str("secret")?;
    let mut headers = HeaderMap::new();
    for (name, value) in c.optional_object("headers")?.into_iter().flatten() {
        // Only the header name (never the value) may appear in an error.
        let shown: String = name.chars().take(64).collect();
        let field = format!("headers.{shown}");
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| c.invalid(&field, "is not a valid header name"))?;
        if RESERVED.contains(&header.as_str()) {
            return Err(c.invalid(&field, "is set by msghub and cannot be configured"));
        }
        let Value::String(raw) = value else {
            return Err(c.invalid(&field, "must be a string"));
        };
        let mut value = HeaderValue::from_str(raw)
            .map_err(|_| c.invalid(&field, "is not a valid header value"))?;
        value.set_sensitive(true);
        headers.insert(header, value);
    }
    Ok(WebhookConfig {
        url,
        secret,
        headers,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn parses_headers() {
        let c = parse(&json!({
            "url": "https://hooks.example.com/in?team=1",
            "secret": "whsec",
            "headers": {"Authorization": "Bearer t0ken", "X-Team": "ops"}
        }))
        .unwrap();
        assert_eq!(c.url.as_str(), "https://hooks.example.com/in?team=1");
        assert_eq!(c.headers["authorization"], "Bearer t0ken");
        assert_eq!(c.headers["x-team"], "ops");
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("t0ken") && !debug.contains("whsec"),
            "{debug}"
        );
    }

    #[test]
    fn errors() {
        let table = [
            (json!({"secret": "s"}), "webhook: url is required"),
            (
                json!({"url": "https://x.test/"}),
                "webhook: secret is required",
            ),
            (
                json!({"url": "mailto:a@b", "secret": "s"}),
                "webhook: url must be an http(s) URL with a host",
            ),
            (
                json!({"url": "https://x.test/", "secret": "s", "headers": []}),
                "webhook: headers must be an object",
            ),
            (
                json!({"url": "https://x.test/", "secret": "s", "headers": {"Bad Name": "v"}}),
                "webhook: headers.Bad Name is not a valid header name",
            ),
            (
                json!({"url": "https://x.test/", "secret": "s", "headers": {"X-A": "line\nbreak"}}),
                "webhook: headers.X-A is not a valid header value",
            ),
            (
                json!({"url": "https://x.test/", "secret": "s", "headers": {"X-A": 1}}),
                "webhook: headers.X-A must be a string",
            ),
            (
                json!({"url": "https://x.test/", "secret": "s", "headers": {"X-Msghub-Signature": "v"}}),
                "webhook: headers.X-Msghub-Signature is set by msghub and cannot be configured",
            ),
            (
                json!({"url": "https://x.test/", "secret": "s", "timeout": 3}),
                "webhook: unknown field \"timeout\"",
            ),
        ];
        for (creds, message) in table {
            assert_eq!(parse(&creds).unwrap_err().to_string(), message);
        }
    }
}
