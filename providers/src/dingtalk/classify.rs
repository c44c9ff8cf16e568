//! DingTalk replies → outcome class (providers.md §3, Appendix A), and send reports
//! (`getsendresult`) → [`SendReport`].
//!
//! Every answer carries `errcode` (0: done). 88 is an authorisation failure whose reason is in
//! `sub_code` (60011: the application may not call this API); −1 means busy.

use msghub_actors::provider::{Outcome, OutcomeClass, SendReport, Undelivered};
use serde_json::Value;

use crate::http::{Reply, truncate};
use crate::token::errcode_outcome;

/// Invalid parameter: answered to a report on a task DingTalk does not know.
const UNKNOWN_TASK: &str = "40035";

/// The errcodes that mean the access token was refused or missing: refresh it and call again.
pub(crate) fn is_token_error(errcode: i64) -> bool {
    matches!(errcode, 40014 | 42001 | 41001)
}

fn class_for_errcode(errcode: i64) -> OutcomeClass {
    match errcode {
        0 => OutcomeClass::Ok,
        -1 => OutcomeClass::Retry,
        c if is_token_error(c) => OutcomeClass::Token,
        // Recipients per minute over the application's (143103) or the organisation's
        // (143104) limit.
        143103 | 143104 => OutcomeClass::Rate,
        // 88 (no permission, see sub_code), 40035 invalid parameter, and every code not
        // listed.
        _ => OutcomeClass::Perm,
    }
}

/// The outcome of a call as a whole: a token request, a send, a recall or a report that
/// failed. 88's reason is its `sub_code`, kept in the code (`88:60011`).
pub(crate) fn classify(reply: &Reply) -> Outcome {
    let mut outcome = errcode_outcome(reply, class_for_errcode);
    let sub = reply
        .json()
        .and_then(|j| j.get("sub_code").cloned())
        .and_then(|s| match s {
            Value::String(s) if !s.is_empty() => Some(s),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
    if let (Some(sub), false) = (sub, outcome.class == OutcomeClass::Ok) {
        outcome.code = truncate(&format!("{}:{sub}", outcome.code));
    }
    outcome
}

/// The id of an accepted send (`task_id`, a number; a string is taken as it is).
pub(crate) fn task_id(json: &Value) -> Option<String> {
    match json.get("task_id") {
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    }
}

/// The outcome of a send: the call's, and on success its `task_id` as the provider id.
pub(crate) fn classify_send(reply: &Reply) -> Outcome {
    let outcome = classify(reply);
    if outcome.class != OutcomeClass::Ok {
        return outcome;
    }
    let json = reply.json().unwrap_or(Value::Null);
    Outcome::ok("0", task_id(&json))
}

/// The user ids of a list of a send report (strings; numbers as their digits).
fn ids(result: &Value, field: &str) -> Vec<String> {
    result
        .get(field)
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|v| match v {
                    Value::String(s) if !s.is_empty() => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A send report: `send_result` at the top, or inside `result` as some gateways wrap it.
/// Forbidden recipients come as `forbidden_list` (`[{code, count, userid}]`) or as
/// `forbidden_user_id_list`; both are read. A recipient listed twice counts once, in the
/// first of read, unread, invalid, forbidden, failed.
pub(crate) fn send_report(reply: &Reply) -> Result<SendReport, Outcome> {
    let outcome = classify(reply);
    // 40035 names the task: DingTalk does not know it, and never will (a `sub_code` may
    // follow the errcode).
    if outcome.code.split(':').next() == Some(UNKNOWN_TASK) {
        return Err(Outcome {
            class: OutcomeClass::Gone,
            ..outcome
        });
    }
    if outcome.class != OutcomeClass::Ok {
        return Err(outcome);
    }
    let json = reply.json().unwrap_or(Value::Null);
    let Some(result) = json
        .get("send_result")
        .or_else(|| json.get("result").and_then(|r| r.get("send_result")))
        .filter(|r| r.is_object())
    else {
        return Err(Outcome::failed(
            OutcomeClass::Retry,
            "no_send_result",
            "the answer holds no send_result",
        ));
    };
    let mut seen = std::collections::HashSet::new();
    let mut first = |id: &String| seen.insert(id.clone());
    let read = ids(result, "read_user_id_list")
        .into_iter()
        .filter(|u| first(u))
        .collect();
    let delivered = ids(result, "unread_user_id_list")
        .into_iter()
        .filter(|u| first(u))
        .collect();
    let mut report = SendReport {
        read,
        delivered,
        undelivered: Vec::new(),
    };
    let mut undelivered = |address: String, code: String, gone: bool| {
        if first(&address) {
            report.undelivered.push(Undelivered {
                address,
                code,
                gone,
            });
        }
    };
    for u in ids(result, "invalid_user_id_list") {
        undelivered(u, "invalid_user".into(), true);
    }
    if let Some(list) = result.get("forbidden_list").and_then(Value::as_array) {
        for item in list {
            let Some(user) = item.get("userid").and_then(Value::as_str) else {
                continue;
            };
            let code = match item.get("code") {
                Some(Value::String(c)) if !c.is_empty() => format!("forbidden:{c}"),
                Some(Value::Number(n)) => format!("forbidden:{n}"),
                _ => "forbidden".into(),
            };
            undelivered(user.to_string(), truncate(&code), false);
        }
    }
    for u in ids(result, "forbidden_user_id_list") {
        undelivered(u, "forbidden".into(), false);
    }
    for u in ids(result, "failed_user_id_list") {
        undelivered(u, "failed".into(), false);
    }
    Ok(report)
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
            (143103, OutcomeClass::Rate),
            (143104, OutcomeClass::Rate),
            (40035, OutcomeClass::Perm),
            (99999, OutcomeClass::Perm),
        ];
        for (code, class) in table {
            let body = format!(r#"{{"errcode":{code},"errmsg":"m{code}"}}"#);
            let o = classify_send(&reply(200, &body));
            assert_eq!(
                (o.class, o.code.clone(), o.message.clone()),
                (class, code.to_string(), format!("m{code}")),
                "{code}"
            );
            let report_class = if code == 40035 {
                OutcomeClass::Gone
            } else {
                class
            };
            assert_eq!(
                send_report(&reply(200, &body)).unwrap_err().class,
                report_class
            );
        }
        let denied = classify(&reply(
            200,
            r#"{"errcode":88,"errmsg":"auth","sub_code":"60011","sub_msg":"no permission"}"#,
        ));
        assert_eq!(
            (denied.class, denied.code.as_str()),
            (OutcomeClass::Perm, "88:60011")
        );
        let unknown = send_report(&reply(
            200,
            r#"{"errcode":40035,"errmsg":"invalid task","sub_code":"40035"}"#,
        ))
        .unwrap_err();
        assert_eq!(
            (unknown.class, unknown.code.as_str()),
            (OutcomeClass::Gone, "40035:40035")
        );
    }

    #[test]
    fn an_accepted_send_is_named_by_its_task() {
        let o = classify_send(&reply(
            200,
            r#"{"errcode":0,"task_id":256271667526,"request_id":"4jzllmte0wau"}"#,
        ));
        assert_eq!(
            (o.class, o.provider_id.as_deref()),
            (OutcomeClass::Ok, Some("256271667526"))
        );
        let o = classify_send(&reply(200, r#"{"errcode":0,"task_id":"77"}"#));
        assert_eq!(o.provider_id.as_deref(), Some("77"));
        assert_eq!(
            classify_send(&reply(500, r#"{"errcode":0}"#)).class,
            OutcomeClass::Perm
        );
    }

    #[test]
    fn reports_in_either_shape_list_each_user_once() {
        let body = r#"{"errcode":0,"send_result":{
            "read_user_id_list":["r1","r2"],"unread_user_id_list":["u1","r1"],
            "invalid_user_id_list":["x1"],"failed_user_id_list":["f1"],
            "forbidden_list":[{"code":"143105","count":500,"userid":"b1"},{"count":1}],
            "forbidden_user_id_list":["b1","b2"],"invalid_dept_id_list":[]}}"#;
        let r = send_report(&reply(200, body)).unwrap();
        assert_eq!(r.read, vec!["r1", "r2"]);
        assert_eq!(r.delivered, vec!["u1"]);
        let undelivered: Vec<(&str, &str, bool)> = r
            .undelivered
            .iter()
            .map(|u| (u.address.as_str(), u.code.as_str(), u.gone))
            .collect();
        assert_eq!(
            undelivered,
            vec![
                ("x1", "invalid_user", true),
                ("b1", "forbidden:143105", false),
                ("b2", "forbidden", false),
                ("f1", "failed", false),
            ]
        );
        assert_eq!(r.settled(), 6);
        let wrapped = r#"{"errcode":0,"result":{"send_result":{"unread_user_id_list":["u1"]}}}"#;
        assert_eq!(
            send_report(&reply(200, wrapped)).unwrap().delivered,
            vec!["u1"]
        );
        let empty = send_report(&reply(200, r#"{"errcode":0,"send_result":{}}"#)).unwrap();
        assert_eq!(empty, SendReport::default());
        assert_eq!(
            send_report(&reply(200, r#"{"errcode":0}"#))
                .unwrap_err()
                .class,
            OutcomeClass::Retry
        );
    }

    #[test]
    fn answers_without_an_errcode_go_by_status() {
        assert_eq!(
            classify(&reply(502, "bad gateway")).class,
            OutcomeClass::Retry
        );
        assert_eq!(classify(&reply(200, "<html/>")).class, OutcomeClass::Perm);
        let mut limited = reply(429, "");
        limited.retry_after = Some(Duration::from_secs(3));
        let o = classify_send(&limited);
        assert_eq!(
            (o.class, o.retry_after),
            (OutcomeClass::Rate, Some(Duration::from_secs(3)))
        );
    }
}
