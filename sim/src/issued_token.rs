//! The one access token a simulated provider (WeCom, DingTalk, Feishu) has issued: the same token is
//! handed out again while it is valid, a new one once it has expired.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;

/// Lifetime of the tokens issued (WeCom: 7200 s; Feishu: at most 2 hours).
pub(crate) const TOKEN_SECONDS: u64 = 7200;

/// How a presented token stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenCheck {
    Valid,
    Expired,
    Unknown,
}

#[derive(Default)]
pub(crate) struct IssuedToken(Option<(String, Instant)>);

impl IssuedToken {
    /// The valid token and the seconds it has left, or a new one (`{prefix}` and random hex,
    /// `id` making it unique) when there is none.
    pub(crate) fn current_or_new(&mut self, prefix: &str, id: u64) -> (String, u64) {
        let now = Instant::now();
        let (token, at) = match &self.0 {
            Some((token, at)) if *at > now => (token.clone(), *at),
            _ => {
                let token = format!("{prefix}{:016x}{id:08x}", rand::random::<u64>());
                let at = now + Duration::from_secs(TOKEN_SECONDS);
                self.0 = Some((token.clone(), at));
                (token, at)
            }
        };
        (token, at.saturating_duration_since(now).as_secs())
    }

    pub(crate) fn check(&self, presented: &str) -> TokenCheck {
        match &self.0 {
            Some((t, at)) if t == presented && *at > Instant::now() => TokenCheck::Valid,
            Some((t, _)) if t == presented => TokenCheck::Expired,
            _ => TokenCheck::Unknown,
        }
    }

    /// End the token now, as its expiry would.
    pub(crate) fn expire(&mut self) {
        if let Some((_, at)) = &mut self.0 {
            *at = Instant::now();
        }
    }
}

/// A request's query parameters (the last of a repeated name).
pub(crate) fn query(req: &HttpRequest) -> HashMap<String, String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect()
}

/// A `gettoken` answer as WeCom and DingTalk give it: `{"errcode": 0, "errmsg": "ok",
/// "access_token", "expires_in"}`, with `token`'s valid token or a new one.
pub(crate) fn token_answer(token: &mut IssuedToken, prefix: &str, id: u64) -> HttpResponse {
    let (token, left) = token.current_or_new(prefix, id);
    HttpResponse::Ok()
        .json(json!({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": left}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_token_while_valid_then_a_new_one() {
        let mut t = IssuedToken::default();
        assert_eq!(t.check("x"), TokenCheck::Unknown);
        let (first, left) = t.current_or_new("p-", 1);
        assert!(first.starts_with("p-") && left > 7000, "{first} {left}");
        assert_eq!(t.current_or_new("p-", 2).0, first);
        assert_eq!(t.check(&first), TokenCheck::Valid);
        t.expire();
        assert_eq!(t.check(&first), TokenCheck::Expired);
        assert_ne!(t.current_or_new("p-", 3).0, first);
        assert_eq!(t.check(&first), TokenCheck::Unknown);
    }
}
