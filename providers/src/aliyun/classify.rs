//! Aliyun SendSms reply → outcome class (providers.md §5.1 error table, Appendix A).

use msghub_actors::provider::{Outcome, OutcomeClass};
use serde_json::Value;

use crate::http::{Reply, class_without_code, truncate, with_wait};

/// Class of a `Code`, or `None` when only the HTTP status can tell.
fn class_for_code(code: &str, targets: usize) -> Option<OutcomeClass> {
    Some(match code {
        "OK" => OutcomeClass::Ok,
        // Per-number anti-abuse flow control and gateway API throttling.
        "isv.BUSINESS_LIMIT_CONTROL" => OutcomeClass::Rate,
        c if c == "Throttling" || c.starts_with("Throttling.") => OutcomeClass::Rate,
        "isv.DAY_LIMIT_CONTROL" | "isv.MONTH_LIMIT_CONTROL" => OutcomeClass::Quota,
        "isp.SYSTEM_ERROR" => OutcomeClass::Retry,
        // The reply does not say which number is bad, so only a single-number call can blame
        // (and mark) its recipient; in a batch the whole call failed for everyone.
        "isv.MOBILE_NUMBER_ILLEGAL" if targets == 1 => OutcomeClass::Gone,
        _ => return None,
    })
}

/// One outcome for the whole call: SendSms accepts or rejects all numbers together.
pub(crate) fn classify(reply: &Reply, targets: usize) -> Outcome {
    let json = reply.json();
    let field = |name: &str| {
        json.as_ref()
            .and_then(|j| j.get(name))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let outcome = match field("Code") {
        Some(code) => {
            let class =
                class_for_code(&code, targets).unwrap_or_else(|| class_without_code(reply.status));
            if class == OutcomeClass::Ok {
                Outcome::ok(code, field("BizId"))
            } else {
                Outcome::failed(class, code, truncate(&field("Message").unwrap_or_default()))
            }
        }
        // No JSON `Code`: a proxy or load balancer answered.
        None => reply.unrecognised(),
    };
    with_wait(outcome, reply.retry_after)
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

    fn code(c: &str) -> String {
        format!(r#"{{"RequestId":"r","Code":"{c}","Message":"m {c}"}}"#)
    }

    #[test]
    fn table() {
        let table: Vec<(u16, String, usize, OutcomeClass, &str)> = vec![
            (200, code("OK"), 3, OutcomeClass::Ok, "OK"),
            (
                200,
                code("isv.BUSINESS_LIMIT_CONTROL"),
                1,
                OutcomeClass::Rate,
                "isv.BUSINESS_LIMIT_CONTROL",
            ),
            (
                400,
                code("Throttling.User"),
                2,
                OutcomeClass::Rate,
                "Throttling.User",
            ),
            (400, code("Throttling"), 2, OutcomeClass::Rate, "Throttling"),
            (
                200,
                code("isv.DAY_LIMIT_CONTROL"),
                1,
                OutcomeClass::Quota,
                "isv.DAY_LIMIT_CONTROL",
            ),
            (
                200,
                code("isv.MONTH_LIMIT_CONTROL"),
                1,
                OutcomeClass::Quota,
                "isv.MONTH_LIMIT_CONTROL",
            ),
            (
                200,
                code("isp.SYSTEM_ERROR"),
                1,
                OutcomeClass::Retry,
                "isp.SYSTEM_ERROR",
            ),
            (
                200,
                code("isv.MOBILE_NUMBER_ILLEGAL"),
                1,
                OutcomeClass::Gone,
                "isv.MOBILE_NUMBER_ILLEGAL",
            ),
            (
                200,
                code("isv.MOBILE_NUMBER_ILLEGAL"),
                2,
                OutcomeClass::Perm,
                "isv.MOBILE_NUMBER_ILLEGAL",
            ),
            (
                200,
                code("isv.SMS_TEMPLATE_ILLEGAL"),
                1,
                OutcomeClass::Perm,
                "isv.SMS_TEMPLATE_ILLEGAL",
            ),
            (
                200,
                code("isv.AMOUNT_NOT_ENOUGH"),
                1,
                OutcomeClass::Perm,
                "isv.AMOUNT_NOT_ENOUGH",
            ),
            (
                400,
                code("SignatureDoesNotMatch"),
                1,
                OutcomeClass::Perm,
                "SignatureDoesNotMatch",
            ),
            (
                404,
                code("InvalidAccessKeyId.NotFound"),
                1,
                OutcomeClass::Perm,
                "InvalidAccessKeyId.NotFound",
            ),
            (
                503,
                code("ServiceUnavailable"),
                1,
                OutcomeClass::Retry,
                "ServiceUnavailable",
            ),
            (
                500,
                "<html>gateway</html>".into(),
                1,
                OutcomeClass::Retry,
                "500",
            ),
            (502, String::new(), 1, OutcomeClass::Retry, "502"),
            (429, String::new(), 1, OutcomeClass::Rate, "429"),
            (400, "bad".into(), 1, OutcomeClass::Perm, "400"),
            (200, "{}".into(), 1, OutcomeClass::Perm, "200"),
        ];
        for (status, body, targets, class, c) in table {
            let out = classify(&reply(status, &body), targets);
            assert_eq!(
                (out.class, out.code.as_str()),
                (class, c),
                "{status} {body} {targets}"
            );
        }
    }

    #[test]
    fn ok_keeps_biz_id_and_errors_keep_message() {
        let out = classify(
            &reply(
                200,
                r#"{"RequestId":"r","Code":"OK","Message":"OK","BizId":"9006197469364984^0"}"#,
            ),
            2,
        );
        assert_eq!(out.provider_id.as_deref(), Some("9006197469364984^0"));
        let out = classify(&reply(200, &code("isv.SMS_TEMPLATE_ILLEGAL")), 1);
        assert_eq!(out.message, "m isv.SMS_TEMPLATE_ILLEGAL");
    }

    #[test]
    fn retry_after_is_passed_on_for_rate() {
        let mut r = reply(429, "");
        r.retry_after = Some(Duration::from_secs(5));
        assert_eq!(classify(&r, 1).retry_after, Some(Duration::from_secs(5)));
        let mut r = reply(200, &code("isv.SMS_TEMPLATE_ILLEGAL"));
        r.retry_after = Some(Duration::from_secs(5));
        assert_eq!(classify(&r, 1).retry_after, None);
    }
}
