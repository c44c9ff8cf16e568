//! WeChat OA and mini-program replies → outcome class (providers.md §1.3 and §2 error tables,
//! Appendix A).

use msghub_actors::provider::{ChannelType, Outcome, OutcomeClass};
use serde_json::Value;

use crate::http::Reply;
use crate::token::errcode_outcome;

/// The errcodes that mean the access token was refused: refresh it and send again.
pub(crate) fn is_token_error(errcode: i64) -> bool {
    matches!(errcode, 40001 | 40014 | 42001)
}

/// The class of an errcode of a `kind` (`wechatoa` or `wechatmp`) channel's send.
fn class_for_errcode(errcode: i64, kind: ChannelType) -> OutcomeClass {
    match (errcode, kind) {
        (0, _) => OutcomeClass::Ok,
        (-1, _) => OutcomeClass::Retry,
        (c, _) if is_token_error(c) => OutcomeClass::Token,
        (45009, _) => OutcomeClass::Quota,
        (45011, _) => OutcomeClass::Rate,
        // Not a follower of this account / another account's openid, unsubscribed, blocked.
        (40003 | 43004 | 43019, ChannelType::Wechatoa) => OutcomeClass::Gone,
        // A mini-program's concurrent sends to one user collided.
        (43108, ChannelType::Wechatmp) => OutcomeClass::Retry,
        // 43101, the user has no subscription to this template (refused, cancelled, or a
        // one-time one used up), is Perm, not Gone: subscriptions are per template, and a
        // suppressed openid would not get the templates it did subscribe to. 41001 no token
        // (a bug), 40003 a mini-program's bad openid, 40037 template, 47001/47003 body,
        // 41030 page, 43107/48001/48004/43116 permissions and bans, 45168 sensitive words,
        // and every code not listed.
        _ => OutcomeClass::Perm,
    }
}

/// The outcome of one send of a `kind` channel.
pub(crate) fn classify(reply: &Reply, kind: ChannelType) -> Outcome {
    let mut outcome = errcode_outcome(reply, |code| class_for_errcode(code, kind));
    if outcome.class == OutcomeClass::Ok {
        outcome.provider_id = reply
            .json()
            .as_ref()
            .and_then(|j| j.get("msgid"))
            .and_then(|m| match m {
                Value::Number(n) => Some(n.to_string()),
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                _ => None,
            });
    }
    outcome
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn classify_oa(reply: &Reply) -> Outcome {
        classify(reply, ChannelType::Wechatoa)
    }

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
            (40001, OutcomeClass::Token),
            (40014, OutcomeClass::Token),
            (42001, OutcomeClass::Token),
            (41001, OutcomeClass::Perm),
            (40003, OutcomeClass::Gone),
            (43004, OutcomeClass::Gone),
            (43019, OutcomeClass::Gone),
            (40037, OutcomeClass::Perm),
            (45009, OutcomeClass::Quota),
            (45011, OutcomeClass::Rate),
            (47001, OutcomeClass::Perm),
            (47003, OutcomeClass::Perm),
            (48001, OutcomeClass::Perm),
            (99999, OutcomeClass::Perm),
        ];
        for (code, class) in table {
            let o = classify_oa(&reply(
                200,
                &format!(r#"{{"errcode":{code},"errmsg":"m{code}"}}"#),
            ));
            assert_eq!(
                (o.class, o.code.clone(), o.message.clone()),
                (class, code.to_string(), format!("m{code}")),
                "{code}"
            );
            assert_eq!(o.provider_id, None);
        }
    }

    #[test]
    fn mini_program_codes() {
        let table = [
            (43101, OutcomeClass::Perm),
            (43108, OutcomeClass::Retry),
            (40003, OutcomeClass::Perm),
            (47003, OutcomeClass::Perm),
            (41030, OutcomeClass::Perm),
            (45168, OutcomeClass::Perm),
            (40001, OutcomeClass::Token),
            (45009, OutcomeClass::Quota),
            (45011, OutcomeClass::Rate),
            (-1, OutcomeClass::Retry),
        ];
        for (code, class) in table {
            let body = format!(r#"{{"errcode":{code},"errmsg":"m{code}"}}"#);
            let o = classify(&reply(200, &body), ChannelType::Wechatmp);
            assert_eq!(
                (o.class, o.code.clone()),
                (class, code.to_string()),
                "{code}"
            );
        }
        let sent = classify(
            &reply(
                200,
                r#"{"errcode":0,"errmsg":"ok","msgid":1864323726461255680}"#,
            ),
            ChannelType::Wechatmp,
        );
        assert_eq!(
            (sent.class, sent.provider_id.as_deref()),
            (OutcomeClass::Ok, Some("1864323726461255680"))
        );
        let without = classify(
            &reply(200, r#"{"errcode":0,"errmsg":"ok"}"#),
            ChannelType::Wechatmp,
        );
        assert_eq!(
            (without.class, without.provider_id),
            (OutcomeClass::Ok, None)
        );
    }

    #[test]
    fn a_sent_message_keeps_its_msgid() {
        let o = classify_oa(&reply(
            200,
            r#"{"errcode":0,"errmsg":"ok","msgid":200228332}"#,
        ));
        assert_eq!(
            (o.class, o.provider_id.as_deref()),
            (OutcomeClass::Ok, Some("200228332"))
        );
    }

    #[test]
    fn answers_without_an_errcode_go_by_status() {
        assert_eq!(
            classify_oa(&reply(502, "bad gateway")).class,
            OutcomeClass::Retry
        );
        assert_eq!(classify_oa(&reply(429, "")).class, OutcomeClass::Rate);
        assert_eq!(
            classify_oa(&reply(200, "<html/>")).class,
            OutcomeClass::Perm
        );
        assert_eq!(
            classify_oa(&reply(500, r#"{"errcode":0}"#)).class,
            OutcomeClass::Perm
        );
    }
}
