//! JPush push v3 reply → outcome class (providers.md §6.1 error table, Appendix A).

use msghub_actors::provider::{Outcome, OutcomeClass};
use serde_json::Value;

use crate::http::{Reply, class_without_code, truncate, with_wait};

/// Class of a JPush business error code, or `None` to fall back on the HTTP status.
fn class_for_code(code: i64) -> Option<OutcomeClass> {
    Some(match code {
        1000 | 1030 => OutcomeClass::Retry,
        // 2001 is the legacy spelling of the rate-limit error; 1012 = too many timed pushes.
        2001 | 2002 | 1012 => OutcomeClass::Rate,
        2005 | 2008 => OutcomeClass::Quota,
        // "No target matches the audience": every registration id of the call is dead, so the
        // whole batch is unreachable (JPush would have pushed to the live ones otherwise).
        1011 => OutcomeClass::Gone,
        1001..=1005 | 1008 | 1009 | 1020 | 2003 | 2004 | 2006 | 2007 => OutcomeClass::Perm,
        _ => return None,
    })
}

/// One outcome for the whole call: JPush accepts or rejects a push as a unit.
pub(crate) fn classify(reply: &Reply) -> Outcome {
    let json = reply.json();
    let error = json.as_ref().and_then(|j| j.get("error"));
    if (200..300).contains(&reply.status) && error.is_none() {
        let msg_id = json.as_ref().and_then(|j| id_string(j.get("msg_id")));
        return Outcome::ok(reply.status.to_string(), msg_id);
    }
    let outcome = match error.and_then(|e| e.get("code")).and_then(Value::as_i64) {
        Some(code) => {
            let message = error
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .map(truncate)
                .unwrap_or_default();
            let class = class_for_code(code).unwrap_or_else(|| class_without_code(reply.status));
            Outcome::failed(class, code.to_string(), message)
        }
        None => reply.unrecognised(),
    };
    // JPush reports its window reset on every reply; Retry-After is the generic fallback.
    let wait = match outcome.class {
        OutcomeClass::Rate => reply.rate_reset.or(reply.retry_after),
        _ => reply.retry_after,
    };
    with_wait(outcome, wait)
}

/// JPush ids are strings in current docs but numbers in old SDKs; accept both.
fn id_string(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::time::Duration;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            body: body.as_bytes().to_vec(),
            retry_after: None,
            rate_reset: None,
        }
    }

    fn err(code: i64) -> String {
        format!(r#"{{"error":{{"code":{code},"message":"m{code}"}},"msg_id":"1"}}"#)
    }

    #[test]
    fn table() {
        let table: Vec<(u16, String, OutcomeClass, &str)> = vec![
            (
                200,
                r#"{"sendno":"42","msg_id":"54043195528459532"}"#.into(),
                OutcomeClass::Ok,
                "200",
            ),
            (500, err(1000), OutcomeClass::Retry, "1000"),
            (503, err(1030), OutcomeClass::Retry, "1030"),
            (429, err(2002), OutcomeClass::Rate, "2002"),
            (429, err(2001), OutcomeClass::Rate, "2001"),
            (400, err(1012), OutcomeClass::Rate, "1012"),
            (403, err(2005), OutcomeClass::Quota, "2005"),
            (403, err(2008), OutcomeClass::Quota, "2008"),
            (400, err(1011), OutcomeClass::Gone, "1011"),
            (401, err(1004), OutcomeClass::Perm, "1004"),
            (400, err(1008), OutcomeClass::Perm, "1008"),
            (400, err(1003), OutcomeClass::Perm, "1003"),
            (403, err(2003), OutcomeClass::Perm, "2003"),
            (403, err(2004), OutcomeClass::Perm, "2004"),
            (400, err(9999), OutcomeClass::Perm, "9999"),
            (502, err(9999), OutcomeClass::Retry, "9999"),
            (200, err(1003), OutcomeClass::Perm, "1003"),
            (429, "Too Many Requests".into(), OutcomeClass::Rate, "429"),
            (500, "<html>oops</html>".into(), OutcomeClass::Retry, "500"),
            (502, String::new(), OutcomeClass::Retry, "502"),
            (408, String::new(), OutcomeClass::Retry, "408"),
            (400, "bad".into(), OutcomeClass::Perm, "400"),
            (404, "not found".into(), OutcomeClass::Perm, "404"),
        ];
        for (status, body, class, code) in table {
            let out = classify(&reply(status, &body));
            assert_eq!(
                (out.class, out.code.as_str()),
                (class, code),
                "{status} {body}"
            );
        }
    }

    #[test]
    fn ok_keeps_msg_id() {
        let out = classify(&reply(
            200,
            r#"{"sendno":"42","msg_id":"54043195528459532"}"#,
        ));
        assert_eq!(out.provider_id.as_deref(), Some("54043195528459532"));
        let out = classify(&reply(200, r#"{"sendno":"0","msg_id":123}"#));
        assert_eq!(out.provider_id.as_deref(), Some("123"));
        let out = classify(&reply(200, "not json"));
        assert_eq!((out.class, out.provider_id), (OutcomeClass::Ok, None));
    }

    #[test]
    fn error_message_is_kept() {
        let out = classify(&reply(400, &err(1011)));
        assert_eq!(out.message, "m1011");
    }

    #[test]
    fn rate_wait_prefers_rate_reset() {
        let mut r = reply(429, &err(2002));
        r.rate_reset = Some(Duration::from_secs(12));
        r.retry_after = Some(Duration::from_secs(3));
        assert_eq!(classify(&r).retry_after, Some(Duration::from_secs(12)));
        r.rate_reset = None;
        assert_eq!(classify(&r).retry_after, Some(Duration::from_secs(3)));

        // The reset header rides on every reply; it is not a wait hint for other classes.
        let mut r = reply(400, &err(1003));
        r.rate_reset = Some(Duration::from_secs(12));
        assert_eq!(classify(&r).retry_after, None);
        let mut r = reply(500, &err(1000));
        r.rate_reset = Some(Duration::from_secs(12));
        assert_eq!(classify(&r).retry_after, None);
    }
}
