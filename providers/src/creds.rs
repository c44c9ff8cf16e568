//! Strict reading of credential JSON objects, shared by every adapter's `config.rs`.
//!
//! Written by hand instead of `#[derive(Deserialize)]` because serde's type errors quote the
//! offending value ("invalid type: integer `123`"), which would leak secrets into API errors.

use msghub_actors::provider::ChannelType;
use serde_json::{Map, Value};

use crate::ConfigError;

pub(crate) struct Creds<'a> {
    kind: ChannelType,
    map: &'a Map<String, Value>,
}

impl<'a> Creds<'a> {
    /// Accept only an object whose keys are all in `allowed`, so typos fail loudly instead of
    /// silently falling back to a default.
    pub(crate) fn parse(
        kind: ChannelType,
        value: &'a Value,
        allowed: &[&str],
    ) -> Result<Self, ConfigError> {
        let map = value.as_object().ok_or(ConfigError::NotAnObject { kind })?;
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            // Keys are not secret, but cap them so a garbage key cannot flood an error message.
            let field: String = unknown.chars().take(64).collect();
            return Err(ConfigError::UnknownField { kind, field });
        }
        Ok(Creds { kind, map })
    }

    /// `null` counts as absent, so API clients may send explicit nulls for optional fields.
    fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    pub(crate) fn invalid(
        &self,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            kind: self.kind,
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn missing(&self, field: &'static str) -> ConfigError {
        ConfigError::Missing {
            kind: self.kind,
            field,
        }
    }

    /// A non-blank string. The value is returned untouched (passwords may hold spaces).
    pub(crate) fn required_str(&self, field: &'static str) -> Result<String, ConfigError> {
        self.optional_str(field)?.ok_or_else(|| self.missing(field))
    }

    /// A string; blank strings count as absent.
    pub(crate) fn optional_str(&self, field: &'static str) -> Result<Option<String>, ConfigError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.invalid(field, "must be a string")),
        }
    }

    pub(crate) fn optional_bool(&self, field: &'static str) -> Result<Option<bool>, ConfigError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.invalid(field, "must be a boolean")),
        }
    }

    pub(crate) fn optional_u64(&self, field: &'static str) -> Result<Option<u64>, ConfigError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.invalid(field, "must be a non-negative integer")),
        }
    }

    /// An application's AgentId: a positive integer below 2^32, or such a number in a string
    /// (consoles show it as text and it is copied that way).
    pub(crate) fn agent_id(&self, field: &'static str) -> Result<u64, ConfigError> {
        let id = match self.get(field) {
            None => return Err(self.missing(field)),
            Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
            Some(v) => v.as_u64(),
        };
        id.filter(|id| (1..=u64::from(u32::MAX)).contains(id))
            .ok_or_else(|| {
                self.invalid(
                    field,
                    "must be the application's AgentId (a positive integer)",
                )
            })
    }

    pub(crate) fn optional_object(
        &self,
        field: &'static str,
    ) -> Result<Option<&'a Map<String, Value>>, ConfigError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(_) => Err(self.invalid(field, "must be an object")),
        }
    }

    /// An http(s) base URL without query, fragment or userinfo, returned without a trailing `/`
    /// so endpoint paths can be appended (a path prefix such as a simulator mount is kept).
    pub(crate) fn base_url(
        &self,
        field: &'static str,
        default: &str,
    ) -> Result<String, ConfigError> {
        let raw = self
            .optional_str(field)?
            .unwrap_or_else(|| default.to_string());
        let url = self.http_url(field, &raw)?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(self.invalid(field, "must not have a query or fragment"));
        }
        Ok(url.as_str().trim_end_matches('/').to_string())
    }

    /// Parse an http(s) URL with a host; credentials embedded in URLs are refused because URLs
    /// end up in logs and error messages.
    pub(crate) fn http_url(
        &self,
        field: &'static str,
        raw: &str,
    ) -> Result<reqwest::Url, ConfigError> {
        let url = reqwest::Url::parse(raw.trim())
            .map_err(|_| self.invalid(field, "must be a valid URL"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(self.invalid(field, "must be an http(s) URL with a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(self.invalid(field, "must not embed credentials"));
        }
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    const KIND: ChannelType = ChannelType::App;

    #[test]
    fn rejects_non_objects_and_unknown_fields() {
        assert_eq!(
            Creds::parse(KIND, &json!("x"), &["a"]).err(),
            Some(ConfigError::NotAnObject { kind: KIND })
        );
        assert_eq!(
            Creds::parse(KIND, &json!({"a": 1, "b": 2}), &["a"]).err(),
            Some(ConfigError::UnknownField {
                kind: KIND,
                field: "b".into()
            })
        );
    }

    #[test]
    fn strings_nulls_and_blanks() {
        let v = json!({"a": "x", "b": null, "c": "  ", "d": 5});
        let c = Creds::parse(KIND, &v, &["a", "b", "c", "d"]).unwrap();
        assert_eq!(c.required_str("a").unwrap(), "x");
        assert_eq!(
            c.required_str("b").unwrap_err().to_string(),
            "app: b is required"
        );
        assert_eq!(
            c.required_str("c").unwrap_err().to_string(),
            "app: c is required"
        );
        assert_eq!(
            c.optional_str("d").unwrap_err().to_string(),
            "app: d must be a string"
        );
        assert_eq!(c.optional_u64("d").unwrap(), Some(5));
        assert!(c.optional_bool("d").is_err());
        assert!(c.optional_object("a").is_err());
    }

    #[test]
    fn base_urls() {
        let v = json!({
            "plain": "https://api.example.com/",
            "prefix": "http://127.0.0.1:9000/jpush/",
            "query": "https://x.test/?a=1",
            "ftp": "ftp://x.test/",
            "creds": "https://u:p@x.test/",
            "junk": "not a url"
        });
        let c = Creds::parse(
            KIND,
            &v,
            &["plain", "prefix", "query", "ftp", "creds", "junk", "none"],
        )
        .unwrap();
        assert_eq!(c.base_url("plain", "").unwrap(), "https://api.example.com");
        assert_eq!(
            c.base_url("prefix", "").unwrap(),
            "http://127.0.0.1:9000/jpush"
        );
        assert_eq!(
            c.base_url("none", "https://d.test").unwrap(),
            "https://d.test"
        );
        for bad in ["query", "ftp", "creds", "junk"] {
            assert!(c.base_url(bad, "").is_err(), "{bad}");
        }
        let err = c.base_url("creds", "").unwrap_err().to_string();
        assert!(!err.contains("u:p"), "{err}");
    }
}
