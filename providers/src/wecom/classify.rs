//! WeCom replies → outcome class (providers.md §10.2, Appendix A).
//!
//! A send names its members in one `touser`; WeCom answers for the call and lists the members
//! it did not send to (`invaliduser`: not members the application can reach; `unlicenseduser`:
//! members without an interface licence), lower-cased, as member ids are case-insensitive.

use std::collections::HashSet;

use msghub_actors::provider::{Outcome, OutcomeClass};
use serde_json::Value;

use crate::http::Reply;
use crate::token::{errcode, errcode_outcome};

/// The errcodes that mean the access token was refused or missing: refresh it and send again.
pub(crate) fn is_token_error(errcode: i64) -> bool {
    matches!(errcode, 40014 | 42001 | 41001)
}

fn class_for_errcode(errcode: i64) -> OutcomeClass {
    match errcode {
        0 => OutcomeClass::Ok,
        -1 => OutcomeClass::Retry,
        c if is_token_error(c) => OutcomeClass::Token,
        // API frequency, and concurrent calls, over the limit.
        45009 | 45033 => OutcomeClass::Rate,
        // 40056 agentid, 60020 IP not allowed, 48002 API forbidden, 40008 message type,
        // 44004 empty content, 81013 nobody could be sent to, and every code not listed.
        _ => OutcomeClass::Perm,
    }
}

/// The outcome of a call for the call as a whole: a token request, a recall, or a send
/// that failed for every member alike.
pub(crate) fn classify(reply: &Reply) -> Outcome {
    errcode_outcome(reply, class_for_errcode)
}

/// The members a reply lists under `field` (`"u1|u2"`), lower-cased.
fn listed(json: &Value, field: &str) -> HashSet<String> {
    json.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .split('|')
        .map(|u| u.trim().to_ascii_lowercase())
        .filter(|u| !u.is_empty())
        .collect()
}

/// The outcome of a send to `members` (as sent, in order): one per member.
pub(crate) fn classify_send(reply: &Reply, members: &[&str]) -> Vec<Outcome> {
    let json = reply.json().unwrap_or(Value::Null);
    match errcode(&json) {
        Some((0, _)) if reply.status == 200 => {
            let msgid = match json.get("msgid") {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            let invalid = listed(&json, "invaliduser");
            let unlicensed = listed(&json, "unlicenseduser");
            members
                .iter()
                .map(|m| {
                    let m = m.to_ascii_lowercase();
                    if invalid.contains(&m) {
                        Outcome::failed(
                            OutcomeClass::Gone,
                            "invaliduser",
                            "not a member the application can reach",
                        )
                    } else if unlicensed.contains(&m) {
                        Outcome::failed(
                            OutcomeClass::Perm,
                            "unlicenseduser",
                            "the member has no interface licence",
                        )
                    } else {
                        Outcome::ok("0", msgid.clone())
                    }
                })
                .collect()
        }
        // 81013, nobody could be sent to, is Perm even for one member: it may as well be the
        // application's visible range, and suppressing each recipient of a misconfigured
        // application one send at a time would outlast the fix.
        _ => vec![classify(reply); members.len()],
    }
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
            (-1, OutcomeClass::Retry),
            (40014, OutcomeClass::Token),
            (42001, OutcomeClass::Token),
            (41001, OutcomeClass::Token),
            (45009, OutcomeClass::Rate),
            (45033, OutcomeClass::Rate),
            (40056, OutcomeClass::Perm),
            (60020, OutcomeClass::Perm),
            (48002, OutcomeClass::Perm),
            (44004, OutcomeClass::Perm),
            (99999, OutcomeClass::Perm),
        ];
        for (code, class) in table {
            let body = format!(r#"{{"errcode":{code},"errmsg":"m{code}"}}"#);
            let o = classify(&reply(200, &body));
            assert_eq!(
                (o.class, o.code.clone(), o.message.clone()),
                (class, code.to_string(), format!("m{code}")),
                "{code}"
            );
            // A send fails for every member alike.
            let all = classify_send(&reply(200, &body), &["a", "b"]);
            assert_eq!(all.len(), 2);
            assert!(
                all.iter()
                    .all(|a| a.class == class && a.code == code.to_string())
            );
        }
    }

    #[test]
    fn members_wecom_did_not_send_to_are_told_apart() {
        let r = reply(
            200,
            r#"{"errcode":0,"errmsg":"ok","invaliduser":"gone1|GONE2","unlicenseduser":"nolicence",
                "msgid":"MSGID_1"}"#,
        );
        let out = classify_send(&r, &["ok1", "Gone1", "gone2", "NoLicence", "ok2"]);
        let classes: Vec<(OutcomeClass, &str)> =
            out.iter().map(|o| (o.class, o.code.as_str())).collect();
        assert_eq!(
            classes,
            vec![
                (OutcomeClass::Ok, "0"),
                (OutcomeClass::Gone, "invaliduser"),
                (OutcomeClass::Gone, "invaliduser"),
                (OutcomeClass::Perm, "unlicenseduser"),
                (OutcomeClass::Ok, "0"),
            ]
        );
        assert_eq!(out[0].provider_id.as_deref(), Some("MSGID_1"));
        assert_eq!(out[1].provider_id, None);
    }

    #[test]
    fn nobody_reached_suppresses_nobody() {
        let r = reply(
            200,
            r#"{"errcode":81013,"errmsg":"user & party & tag all invalid","invaliduser":"a"}"#,
        );
        for members in [&["a"][..], &["a", "b"]] {
            let out = classify_send(&r, members);
            assert_eq!(out.len(), members.len());
            assert!(out.iter().all(|o| o.class == OutcomeClass::Perm), "{out:?}");
        }
    }

    #[test]
    fn answers_without_an_errcode_go_by_status() {
        assert_eq!(
            classify(&reply(502, "bad gateway")).class,
            OutcomeClass::Retry
        );
        assert_eq!(classify(&reply(200, "<html/>")).class, OutcomeClass::Perm);
        assert_eq!(
            classify(&reply(500, r#"{"errcode":0}"#)).class,
            OutcomeClass::Perm
        );
        let mut limited = reply(429, "");
        limited.retry_after = Some(Duration::from_secs(3));
        let o = classify_send(&limited, &["a"]);
        assert_eq!(
            (o[0].class, o[0].retry_after),
            (OutcomeClass::Rate, Some(Duration::from_secs(3)))
        );
    }
}
