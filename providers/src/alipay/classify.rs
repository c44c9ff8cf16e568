//! Alipay gateway answers → outcome class (providers.md §4.3, Appendix A).
//!
//! An answer is `{"<method>_response": {"code", "msg", "sub_code"?, "sub_msg"?}, "sign"}` or
//! `{"error_response": {...}, "sign"}`. `code` 10000 is success; a success counts only when its
//! signature verifies with Alipay's public key.

use msghub_actors::provider::{Outcome, OutcomeClass};
use serde_json::Value;

use crate::http::{Reply, truncate, with_wait};

/// What the adapter found of an answer's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signed {
    /// The node's signature verifies.
    Valid,
    /// No signature, or one that does not verify.
    Invalid,
}

/// The class of a gateway code and sub-code.
fn class_of(code: &str, sub_code: &str) -> OutcomeClass {
    match code {
        "10000" => OutcomeClass::Ok,
        "20000" => OutcomeClass::Retry,
        // `isp.*`: the service provider's own trouble, whatever the code.
        _ if sub_code.starts_with("isp.") => OutcomeClass::Retry,
        // 20001 (authorisation: msghub holds no refreshable token for Alipay), 40001 missing
        // parameter, 40002 invalid parameter (signature, timestamp, app id), 40004 business
        // failure (the user does not follow the account, the template, ...), 40006
        // permission, and every other code.
        _ => OutcomeClass::Perm,
    }
}

/// The outcome of one call given its response node (the text cut from the body, if any) and
/// what its signature said.
pub(crate) fn classify(reply: &Reply, node: Option<&str>, signed: Signed) -> Outcome {
    let parsed = node.and_then(|n| serde_json::from_str::<Value>(n).ok());
    let text = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let outcome = match parsed {
        Some(v) if v.get("code").and_then(Value::as_str).is_some() => {
            let (code, sub_code) = (text(&v, "code"), text(&v, "sub_code"));
            match class_of(&code, &sub_code) {
                OutcomeClass::Ok if signed == Signed::Valid && reply.status == 200 => {
                    Outcome::ok(code, None)
                }
                // A success whose signature does not verify is not to be believed: the
                // alipay_public_key is wrong, or the answer did not come from Alipay.
                OutcomeClass::Ok => Outcome::failed(
                    OutcomeClass::Perm,
                    "invalid_response_signature",
                    "the answer's signature does not verify with alipay_public_key",
                ),
                class => {
                    let message = match text(&v, "sub_msg") {
                        m if m.is_empty() => text(&v, "msg"),
                        m => format!("{}: {m}", text(&v, "msg")),
                    };
                    // The sub-code says more than the code.
                    let shown = if sub_code.is_empty() { code } else { sub_code };
                    Outcome::failed(class, shown, truncate(&message))
                }
            }
        }
        _ => reply.unrecognised(),
    };
    with_wait(outcome, reply.retry_after)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn reply(status: u16) -> Reply {
        Reply {
            status,
            body: b"<html>busy</html>".to_vec(),
            retry_after: None,
            rate_reset: None,
        }
    }

    #[test]
    fn table() {
        let table = [
            (
                r#"{"code":"20000","msg":"Service Currently Unavailable","sub_code":"isp.unknow-error"}"#,
                OutcomeClass::Retry,
                "isp.unknow-error",
            ),
            (
                r#"{"code":"40004","msg":"Business Failed","sub_code":"isp.ACQ.SYSTEM_ERROR"}"#,
                OutcomeClass::Retry,
                "isp.ACQ.SYSTEM_ERROR",
            ),
            (
                r#"{"code":"20001","msg":"Insufficient Token Permissions","sub_code":"aop.invalid-auth-token"}"#,
                OutcomeClass::Perm,
                "aop.invalid-auth-token",
            ),
            (
                r#"{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-signature"}"#,
                OutcomeClass::Perm,
                "isv.invalid-signature",
            ),
            (
                r#"{"code":"40004","msg":"Business Failed","sub_code":"PUB.USER_NOT_FOLLOW"}"#,
                OutcomeClass::Perm,
                "PUB.USER_NOT_FOLLOW",
            ),
            (
                r#"{"code":"40006","msg":"Insufficient Permissions"}"#,
                OutcomeClass::Perm,
                "40006",
            ),
        ];
        for (node, class, code) in table {
            // Failures are failures whether or not their signature verifies.
            for signed in [Signed::Valid, Signed::Invalid] {
                let o = classify(&reply(200), Some(node), signed);
                assert_eq!((o.class, o.code.as_str()), (class, code), "{node}");
            }
        }
        let o = classify(
            &reply(200),
            Some(
                r#"{"code":"40004","msg":"Business Failed","sub_code":"X","sub_msg":"not following"}"#,
            ),
            Signed::Valid,
        );
        assert_eq!(o.message, "Business Failed: not following");
    }

    #[test]
    fn a_success_counts_only_when_its_signature_verifies() {
        let node = r#"{"code":"10000","msg":"Success"}"#;
        assert_eq!(
            classify(&reply(200), Some(node), Signed::Valid).class,
            OutcomeClass::Ok
        );
        let forged = classify(&reply(200), Some(node), Signed::Invalid);
        assert_eq!(
            (forged.class, forged.code.as_str()),
            (OutcomeClass::Perm, "invalid_response_signature")
        );
    }

    #[test]
    fn answers_without_a_node_go_by_status() {
        assert_eq!(
            classify(&reply(502), None, Signed::Invalid).class,
            OutcomeClass::Retry
        );
        assert_eq!(
            classify(&reply(200), None, Signed::Invalid).class,
            OutcomeClass::Perm
        );
        assert_eq!(
            classify(&reply(200), Some("{\"msg\":\"x\"}"), Signed::Valid).class,
            OutcomeClass::Perm
        );
    }
}
