//! Tencent SendSms reply → one outcome per number (providers.md §5.2 error table, Appendix A).
//!
//! An API-level failure (`Response.Error`) fails every number of the call alike; otherwise each
//! number has its own `Code` in `Response.SendStatusSet`, and an accepted number's `SerialNo`
//! is kept as its provider id: status callbacks name deliveries by it alone.

use std::collections::HashMap;

use msghub_actors::provider::{Outcome, OutcomeClass};
use serde_json::Value;

use crate::http::{Reply, class_without_code, truncate, with_wait};

/// Class of a Tencent code, or `None` when only the HTTP status can tell. `one_number`: the
/// code concerns a single known number (a per-number status, or a call with one number).
fn class_for_code(code: &str, one_number: bool) -> Option<OutcomeClass> {
    Some(match code {
        "Ok" => OutcomeClass::Ok,
        // The caller's clock is off: the same request signed again later can pass.
        "AuthFailure.SignatureExpire" => OutcomeClass::Retry,
        c if c.starts_with("AuthFailure") => OutcomeClass::Perm,
        c if c.starts_with("RequestLimitExceeded") => OutcomeClass::Rate,
        // More than 200 numbers: the request itself is wrong.
        "LimitExceeded.PhoneNumberCountLimit" => OutcomeClass::Perm,
        // The application's own daily caps (mainland, global, per region).
        c if c.starts_with("LimitExceeded.App") || c == "LimitExceeded.DailyLimit" => {
            OutcomeClass::Quota
        }
        // Per-recipient frequency control (30 s, 1 h, daily, same content).
        c if c.starts_with("LimitExceeded.") => OutcomeClass::Rate,
        c if c == "InternalError" || c.starts_with("InternalError.") => OutcomeClass::Retry,
        // Unsubscribed or carrier do-not-disturb: this address will not take SMS.
        // Only a code about one known number may mark that number: for a whole call it does
        // not say which.
        "FailedOperation.PhoneNumberInBlacklist" | "InvalidParameterValue.IncorrectPhoneNumber"
            if one_number =>
        {
            OutcomeClass::Gone
        }
        _ => return None,
    })
}

fn text(v: &Value, name: &str) -> String {
    v.get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// One outcome per number of `phones` (E.164, as sent in `PhoneNumberSet`), in order.
pub(crate) fn classify(reply: &Reply, phones: &[String]) -> Vec<Outcome> {
    let response = reply
        .json()
        .and_then(|mut j| j.get_mut("Response").map(Value::take));
    let Some(response) = response else {
        // No `Response` object: a proxy or load balancer answered.
        return vec![with_wait(reply.unrecognised(), reply.retry_after); phones.len()];
    };
    if let Some(error) = response.get("Error") {
        let code = text(error, "Code");
        let class = class_for_code(&code, phones.len() == 1)
            .unwrap_or_else(|| class_without_code(reply.status));
        let class = if class == OutcomeClass::Ok {
            OutcomeClass::Perm
        } else {
            class
        };
        let outcome = Outcome::failed(class, code, truncate(&text(error, "Message")));
        return vec![with_wait(outcome, reply.retry_after); phones.len()];
    }
    let statuses: HashMap<String, &Value> = response
        .get("SendStatusSet")
        .and_then(Value::as_array)
        .map(|set| {
            set.iter()
                .map(|s| (text(s, "PhoneNumber"), s))
                .collect::<HashMap<_, _>>()
        })
        .unwrap_or_default();
    phones
        .iter()
        .map(|phone| match statuses.get(phone) {
            Some(status) => {
                let code = text(status, "Code");
                match class_for_code(&code, true).unwrap_or(OutcomeClass::Perm) {
                    OutcomeClass::Ok => {
                        let serial = text(status, "SerialNo");
                        Outcome::ok(code, (!serial.is_empty()).then_some(serial))
                    }
                    class => Outcome::failed(class, code, truncate(&text(status, "Message"))),
                }
            }
            None => Outcome::failed(
                OutcomeClass::Perm,
                "missing_status",
                "the reply has no status for this number",
            ),
        })
        .collect()
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

    fn error(code: &str) -> String {
        format!(
            r#"{{"Response":{{"Error":{{"Code":"{code}","Message":"m {code}"}},"RequestId":"r"}}}}"#
        )
    }

    fn phones(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("+861380000000{i}")).collect()
    }

    #[test]
    fn api_errors_fail_every_number_alike() {
        let table = [
            ("AuthFailure.SignatureFailure", 2, OutcomeClass::Perm),
            ("AuthFailure.SecretIdNotFound", 2, OutcomeClass::Perm),
            ("AuthFailure.SignatureExpire", 2, OutcomeClass::Retry),
            ("RequestLimitExceeded", 2, OutcomeClass::Rate),
            (
                "RequestLimitExceeded.GlobalRegionUinLimitExceeded",
                2,
                OutcomeClass::Rate,
            ),
            ("InternalError", 2, OutcomeClass::Retry),
            ("InternalError.Timeout", 2, OutcomeClass::Retry),
            ("LimitExceeded.PhoneNumberCountLimit", 2, OutcomeClass::Perm),
            ("LimitExceeded.AppDailyLimit", 2, OutcomeClass::Quota),
            (
                "LimitExceeded.DeliveryFrequencyLimit",
                2,
                OutcomeClass::Rate,
            ),
            (
                "FailedOperation.TemplateIncorrectOrUnapproved",
                2,
                OutcomeClass::Perm,
            ),
            (
                "InvalidParameterValue.IncorrectPhoneNumber",
                2,
                OutcomeClass::Perm,
            ),
            (
                "InvalidParameterValue.IncorrectPhoneNumber",
                1,
                OutcomeClass::Gone,
            ),
            (
                "UnauthorizedOperation.RequestIpNotInWhitelist",
                2,
                OutcomeClass::Perm,
            ),
            (
                "FailedOperation.PhoneNumberInBlacklist",
                2,
                OutcomeClass::Perm,
            ),
            (
                "FailedOperation.PhoneNumberInBlacklist",
                1,
                OutcomeClass::Gone,
            ),
            ("Ok", 2, OutcomeClass::Perm),
        ];
        for (code, n, class) in table {
            let out = classify(&reply(200, &error(code)), &phones(n));
            assert_eq!(out.len(), n, "{code}");
            for o in &out {
                assert_eq!((o.class, o.code.as_str()), (class, code), "{code}");
                assert_eq!(o.message, format!("m {code}"));
                assert_eq!(o.provider_id, None);
            }
        }
    }

    #[test]
    fn each_number_has_its_own_outcome_and_serial() {
        let body = r#"{"Response":{"SendStatusSet":[
            {"SerialNo":"5000:104571066915705365784949619","PhoneNumber":"+8613800000001","Fee":1,"SessionContext":"7","Code":"Ok","Message":"send success","IsoCode":"CN"},
            {"SerialNo":"","PhoneNumber":"+8613800000000","Fee":0,"SessionContext":"7","Code":"FailedOperation.PhoneNumberInBlacklist","Message":"blacklisted","IsoCode":"CN"},
            {"SerialNo":"","PhoneNumber":"+8613800000002","Fee":0,"SessionContext":"7","Code":"LimitExceeded.PhoneNumberThirtySecondLimit","Message":"30s","IsoCode":"CN"},
            {"SerialNo":"","PhoneNumber":"+8613800000003","Fee":0,"SessionContext":"7","Code":"InvalidParameterValue.IncorrectPhoneNumber","Message":"bad","IsoCode":"CN"},
            {"SerialNo":"","PhoneNumber":"+8613800000004","Fee":0,"SessionContext":"7","Code":"FailedOperation.Unknown","Message":"?","IsoCode":"CN"}
        ],"RequestId":"r"}}"#;
        let mut sent = phones(5);
        sent.push("+8613800000009".into());
        let out = classify(&reply(200, body), &sent);
        let got: Vec<(OutcomeClass, &str, Option<&str>)> = out
            .iter()
            .map(|o| (o.class, o.code.as_str(), o.provider_id.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    OutcomeClass::Gone,
                    "FailedOperation.PhoneNumberInBlacklist",
                    None
                ),
                (
                    OutcomeClass::Ok,
                    "Ok",
                    Some("5000:104571066915705365784949619")
                ),
                (
                    OutcomeClass::Rate,
                    "LimitExceeded.PhoneNumberThirtySecondLimit",
                    None
                ),
                (
                    OutcomeClass::Gone,
                    "InvalidParameterValue.IncorrectPhoneNumber",
                    None
                ),
                (OutcomeClass::Perm, "FailedOperation.Unknown", None),
                (OutcomeClass::Perm, "missing_status", None),
            ]
        );
    }

    #[test]
    fn replies_without_a_response_fall_back_to_the_status() {
        let mut r = reply(503, "<html>busy</html>");
        r.retry_after = Some(Duration::from_secs(2));
        let out = classify(&r, &phones(2));
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].class, out[0].code.as_str()),
            (OutcomeClass::Retry, "503")
        );
        assert_eq!(out[0].retry_after, Some(Duration::from_secs(2)));
        assert!(out[0].message.contains("busy"), "{}", out[0].message);
        let out = classify(&reply(200, "not json"), &phones(1));
        assert_eq!(out[0].class, OutcomeClass::Perm);
        let out = classify(&reply(429, "{}"), &phones(1));
        assert_eq!(out[0].class, OutcomeClass::Rate);
    }
}
