//! Feishu replies → outcome class (providers.md §10.1, Appendix A).
//!
//! Every answer is `{"code", "msg", "data"?}`; `code` 0 is success.

use msghub_actors::provider::{Outcome, OutcomeClass};
use serde_json::Value;

use crate::http::{Reply, class_for_status, truncate, with_wait};

/// The codes that mean the tenant access token was refused (invalid, expired, missing):
/// refresh it and send again.
pub(crate) fn is_token_error(code: i64) -> bool {
    matches!(code, 99991661 | 99991663 | 99991668)
}

/// `(code, msg)` of a JSON reply, when it has a `code`.
pub(crate) fn code(json: &Value) -> Option<(i64, String)> {
    crate::token::coded(json, "code", "msg")
}

/// The class of a non-zero code: the token codes and the rate limit are Feishu's own; the
/// others (the bot not available to the user, a bad receive_id or content, permissions) are
/// told apart by the status they come with, so an internal error on a 5xx is retried.
fn class_for_code(code: i64, status: u16) -> OutcomeClass {
    match code {
        c if is_token_error(c) => OutcomeClass::Token,
        // The app's API frequency; 230020, the per-user or per-chat message frequency.
        99991400 | 230020 => OutcomeClass::Rate,
        _ => match class_for_status(status) {
            OutcomeClass::Ok => OutcomeClass::Perm,
            class => class,
        },
    }
}

/// The outcome of one call: a send (its `data.message_id` kept as the provider id), a recall,
/// or a token request.
pub(crate) fn classify(reply: &Reply) -> Outcome {
    let json = reply.json();
    let outcome = match json.as_ref().and_then(code) {
        Some((0, _)) if (200..300).contains(&reply.status) => {
            let id = json
                .as_ref()
                .and_then(|j| j.pointer("/data/message_id"))
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .map(str::to_string);
            Outcome::ok("0", id)
        }
        Some((code, message)) => Outcome::failed(
            match code {
                0 => OutcomeClass::Perm,
                _ => class_for_code(code, reply.status),
            },
            code.to_string(),
            truncate(&message),
        ),
        None => reply.unrecognised(),
    };
    // Feishu says when its window resets in `x-ogw-ratelimit-reset`.
    with_wait(outcome, reply.retry_after.or(reply.rate_reset))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            body: body.as_bytes().to_vec(),
            retry_after: None,
            rate_reset: None,
        }
    }

    #[test]
    fn table() {
        let table = [
            (400, 99991663, OutcomeClass::Token),
            (400, 99991668, OutcomeClass::Token),
            (400, 99991661, OutcomeClass::Token),
            (429, 99991400, OutcomeClass::Rate),
            (400, 230020, OutcomeClass::Rate),
            (400, 230013, OutcomeClass::Perm),
            (400, 230001, OutcomeClass::Perm),
            (200, 12345, OutcomeClass::Perm),
            (500, 1000004, OutcomeClass::Retry),
            (503, 230099, OutcomeClass::Retry),
        ];
        for (status, code, class) in table {
            let o = classify(&reply(
                status,
                &format!(r#"{{"code":{code},"msg":"m{code}"}}"#),
            ));
            assert_eq!(
                (o.class, o.code.clone(), o.message.clone()),
                (class, code.to_string(), format!("m{code}")),
                "{code}"
            );
        }
    }

    #[test]
    fn a_sent_message_keeps_its_message_id() {
        let o = classify(&reply(
            200,
            r#"{"code":0,"msg":"success","data":{"message_id":"om_dc13264520392913993dd051dba21dcf","chat_id":"oc_1"}}"#,
        ));
        assert_eq!(
            (o.class, o.provider_id.as_deref()),
            (
                OutcomeClass::Ok,
                Some("om_dc13264520392913993dd051dba21dcf")
            )
        );
        // code 0 on an error status is no send.
        assert_eq!(
            classify(&reply(500, r#"{"code":0}"#)).class,
            OutcomeClass::Perm
        );
    }

    #[test]
    fn answers_without_a_code_go_by_status() {
        assert_eq!(
            classify(&reply(502, "bad gateway")).class,
            OutcomeClass::Retry
        );
        assert_eq!(classify(&reply(200, "<html/>")).class, OutcomeClass::Perm);
        let mut limited = reply(429, "");
        limited.retry_after = Some(Duration::from_secs(2));
        let o = classify(&limited);
        assert_eq!(
            (o.class, o.retry_after),
            (OutcomeClass::Rate, Some(Duration::from_secs(2)))
        );
        // Feishu's own header, read into `rate_reset`.
        let mut frequency = reply(
            429,
            r#"{"code":99991400,"msg":"request trigger frequency limit"}"#,
        );
        frequency.rate_reset = Some(Duration::from_secs(7));
        assert_eq!(
            classify(&frequency).retry_after,
            Some(Duration::from_secs(7))
        );
    }
}
