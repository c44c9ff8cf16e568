//! Credentials of an `email` channel: an SMTP submission relay and the sender mailbox.

use lettre::message::Mailbox;
use msghub_actors::provider::ChannelType;
use serde_json::Value;

use crate::ConfigError;
use crate::creds::Creds;

pub(crate) const FIELDS: &[&str] = &[
    "host",
    "port",
    "tls",
    "username",
    "password",
    "from",
    "pool_size",
    "verp",
];
pub(crate) const SECRETS: &[&str] = &["password"];

/// Upper bound for `pool_size`: relays commonly cap concurrent sessions per client far lower.
const MAX_POOL_SIZE: u64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsMode {
    /// Plain connect, then STARTTLS is required (no silent downgrade).
    StartTls,
    /// Implicit TLS from the first byte (SMTPS).
    Tls,
    /// Plaintext, for local relays and simulators only.
    None,
}

impl TlsMode {
    pub(crate) fn default_port(self) -> u16 {
        match self {
            TlsMode::StartTls => 587,
            TlsMode::Tls => 465,
            TlsMode::None => 25,
        }
    }
}

#[derive(Clone)]
pub(crate) struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// Username and password, only together.
    pub auth: Option<(String, String)>,
    pub from: Mailbox,
    /// Overrides `AdapterOptions::pool_size` for this relay.
    pub pool_size: Option<u32>,
    /// The envelope sender is the hub's return path for the delivery (VERP, when the hub has
    /// a bounce domain), not `from`. Off for relays that require the envelope sender to be
    /// the logged-in account.
    pub verp: bool,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.auth.as_ref().map(|(user, _)| user))
            .field("password", &self.auth.as_ref().map(|_| "***"))
            .field("from", &self.from.to_string())
            .field("pool_size", &self.pool_size)
            .field("verp", &self.verp)
            .finish()
    }
}

pub(crate) fn parse(credentials: &Value) -> Result<SmtpConfig, ConfigError> {
    let c = Creds::parse(ChannelType::Email, credentials, FIELDS)?;
    let host = c.required_str("host")?.trim().to_string();
    // One colon means "host:port"; IPv6 literals have several and are accepted.
    if host.contains(['/', ' ', '@']) || host.matches(':').count() == 1 {
        return Err(c.invalid(
            "host",
            "must be a host name or IP address (set the port separately)",
        ));
    }
    let tls = match c.optional_str("tls")?.as_deref() {
        None | Some("starttls") => TlsMode::StartTls,
        Some("tls") => TlsMode::Tls,
        Some("none") => TlsMode::None,
        Some(_) => return Err(c.invalid("tls", "must be one of \"starttls\", \"tls\", \"none\"")),
    };
    // Checked here rather than when lettre builds its TLS parameters, so `validate` agrees with
    // `build`.
    if tls != TlsMode::None && rustls::pki_types::ServerName::try_from(host.as_str()).is_err() {
        return Err(c.invalid("host", "is not a valid TLS server name"));
    }
    let port = match c.optional_u64("port")? {
        None => tls.default_port(),
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| c.invalid("port", "must be between 1 and 65535"))?,
    };
    let auth = match (c.optional_str("username")?, c.optional_str("password")?) {
        (Some(user), Some(pass)) => Some((user, pass)),
        (None, None) => None,
        (Some(_), None) => return Err(c.invalid("password", "is required when username is set")),
        (None, Some(_)) => return Err(c.invalid("username", "is required when password is set")),
    };
    let from = c
        .required_str("from")?
        .trim()
        .parse::<Mailbox>()
        .map_err(|_| c.invalid("from", "must be a mailbox like \"Name <user@example.com>\""))?;
    let pool_size = match c.optional_u64("pool_size")? {
        None => None,
        Some(n @ 1..=MAX_POOL_SIZE) => u32::try_from(n).ok(),
        Some(_) => return Err(c.invalid("pool_size", "must be between 1 and 100")),
    };
    let verp = c.optional_bool("verp")?.unwrap_or(true);
    Ok(SmtpConfig {
        host,
        port,
        tls,
        auth,
        from,
        pool_size,
        verp,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_ports() {
        let c = parse(&json!({"host": "smtp.example.com", "from": "hub@example.com"})).unwrap();
        assert_eq!(
            (c.tls, c.port, c.auth.is_none(), c.pool_size),
            (TlsMode::StartTls, 587, true, None)
        );
        assert_eq!(c.from.email.to_string(), "hub@example.com");
        assert!(c.verp);
        let c = parse(&json!({"host": "h", "from": "a@b.c", "verp": false})).unwrap();
        assert!(!c.verp);
        assert!(parse(&json!({"host": "h", "from": "a@b.c", "verp": "no"})).is_err());
        for (tls, port) in [("starttls", 587), ("tls", 465), ("none", 25)] {
            let c = parse(&json!({"host": "h", "from": "a@b.c", "tls": tls})).unwrap();
            assert_eq!(c.port, port, "{tls}");
        }
        let c = parse(&json!({
            "host": "h", "from": "Hub <a@b.c>", "tls": "none", "port": 2525,
            "username": "u", "password": "p w", "pool_size": 4
        }))
        .unwrap();
        assert_eq!((c.port, c.tls, c.pool_size), (2525, TlsMode::None, Some(4)));
        assert_eq!(c.auth, Some(("u".into(), "p w".into())));
        assert_eq!(c.from.name.as_deref(), Some("Hub"));
        let debug = format!("{c:?}");
        assert!(!debug.contains("p w"), "{debug}");
    }

    #[test]
    fn errors() {
        let table = [
            (json!({"from": "a@b.c"}), "email: host is required"),
            (json!({"host": "h"}), "email: from is required"),
            (
                json!({"host": "h", "from": "not a mailbox"}),
                "email: from must be a mailbox like \"Name <user@example.com>\"",
            ),
            (
                json!({"host": "h:25", "from": "a@b.c"}),
                "email: host must be a host name or IP address (set the port separately)",
            ),
            (
                json!({"host": "h", "from": "a@b.c", "tls": "ssl"}),
                "email: tls must be one of \"starttls\", \"tls\", \"none\"",
            ),
            (
                json!({"host": "h", "from": "a@b.c", "port": 0}),
                "email: port must be between 1 and 65535",
            ),
            (
                json!({"host": "h", "from": "a@b.c", "port": 70000}),
                "email: port must be between 1 and 65535",
            ),
            (
                json!({"host": "h", "from": "a@b.c", "port": "25"}),
                "email: port must be a non-negative integer",
            ),
            (
                json!({"host": "h", "from": "a@b.c", "username": "u"}),
                "email: password is required when username is set",
            ),
            (
                json!({"host": "h", "from": "a@b.c", "password": "p"}),
                "email: username is required when password is set",
            ),
            (
                json!({"host": "h", "from": "a@b.c", "pool_size": 0}),
                "email: pool_size must be between 1 and 100",
            ),
            (
                json!({"host": "h", "from": "a@b.c", "user": "u"}),
                "email: unknown field \"user\"",
            ),
            (
                json!({"host": "bad_host!", "from": "a@b.c"}),
                "email: host is not a valid TLS server name",
            ),
        ];
        for (creds, message) in table {
            assert_eq!(parse(&creds).unwrap_err().to_string(), message);
        }
    }
}
