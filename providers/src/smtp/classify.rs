//! SMTP failure → outcome class (providers.md §9.2; RFC 3463 enhanced status codes).

use msghub_actors::provider::{Outcome, OutcomeClass};

use crate::http::truncate;

/// What went wrong, detached from lettre's error type so the rules are unit-testable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure<'a> {
    /// A negative reply from the server (`550 5.1.1 user unknown`).
    Reply { code: u16, text: &'a str },
    /// No usable answer: connect, TLS, I/O, timeout, garbled reply, pool shut down.
    Transport { timeout: bool, text: &'a str },
    /// Refused on our side: no common AUTH mechanism, STARTTLS missing, non-ASCII envelope ...
    /// These are configuration problems that repeat on every attempt.
    Client(&'a str),
}

/// `class.subject.detail` from the reply text, e.g. `(5, 1, 1)`.
fn enhanced_status(text: &str) -> Option<(u8, u16, u16)> {
    text.split_whitespace().find_map(|word| {
        let mut parts = word.trim_end_matches([',', ';', ':']).split('.');
        let class = parts
            .next()?
            .parse::<u8>()
            .ok()
            .filter(|c| matches!(c, 2 | 4 | 5))?;
        let subject = parts.next()?.parse::<u16>().ok()?;
        let detail = parts.next()?.parse::<u16>().ok()?;
        parts.next().is_none().then_some((class, subject, detail))
    })
}

/// Whether an RFC 3463 status says the recipient's mailbox is gone for good: a bad
/// destination mailbox, system or address (5.1.0–5.1.3), moved away (5.1.6), a domain that
/// takes no mail (5.1.10), a disabled mailbox (5.2.1). The sender's own problems (5.1.7,
/// 5.1.8), a full mailbox (5.2.2) and policy refusals (5.7.x) say nothing of the address.
pub fn mailbox_gone((class, subject, detail): (u8, u16, u16)) -> bool {
    class == 5 && matches!((subject, detail), (1, 0..=3 | 6 | 10) | (2, 1))
}

/// [`mailbox_gone`] of a status written `5.1.1` (the first word of `text`).
pub fn status_says_gone(text: &str) -> bool {
    enhanced_status(text.split_whitespace().next().unwrap_or_default()).is_some_and(mailbox_gone)
}

fn reply_class(code: u16, text: &str) -> OutcomeClass {
    let enhanced = enhanced_status(text);
    match code {
        // "Service not available, closing channel": the relay sheds load.
        421 => OutcomeClass::Rate,
        400..=499 => OutcomeClass::Retry,
        // Authentication failed: the channel's credentials are wrong, not the recipient.
        535 => OutcomeClass::Perm,
        500..=599 => match enhanced {
            Some(status) if mailbox_gone(status) => OutcomeClass::Gone,
            // 5.2.2 mailbox full is a soft bounce even with a 5xx reply.
            Some((5, 2, 2)) => OutcomeClass::Retry,
            Some(_) => OutcomeClass::Perm,
            // A bare 553 is as often the relay refusing the sender ("Mail from must equal
            // authorized user") as a bad recipient: not a reason to suppress the address.
            None if matches!(code, 550 | 551) => OutcomeClass::Gone,
            None => OutcomeClass::Perm,
        },
        // Positive or malformed codes should never arrive as errors; do not drop the delivery.
        _ => OutcomeClass::Retry,
    }
}

pub(crate) fn classify(failure: Failure<'_>) -> Outcome {
    match failure {
        Failure::Reply { code, text } => {
            Outcome::failed(reply_class(code, text), code.to_string(), truncate(text))
        }
        Failure::Transport { timeout, text } => Outcome::failed(
            OutcomeClass::Retry,
            if timeout { "timeout" } else { "connection" },
            truncate(text),
        ),
        Failure::Client(text) => Outcome::failed(OutcomeClass::Perm, "client", truncate(text)),
    }
}

/// Map a lettre error onto [`Failure`] and classify it.
pub(crate) fn outcome_for(err: &lettre::transport::smtp::Error) -> Outcome {
    let full = crate::http::describe(err);
    // lettre keeps the server's reply text as the error source.
    let reply_text = std::error::Error::source(err)
        .map(ToString::to_string)
        .unwrap_or_default();
    let failure = match err
        .status()
        .and_then(|code| code.to_string().parse::<u16>().ok())
    {
        Some(code) => Failure::Reply {
            code,
            text: &reply_text,
        },
        None if err.is_client() => Failure::Client(&full),
        None => Failure::Transport {
            timeout: err.is_timeout(),
            text: &full,
        },
    };
    classify(failure)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn enhanced_codes() {
        assert_eq!(
            enhanced_status("5.1.1 <a@b>: user unknown"),
            Some((5, 1, 1))
        );
        assert_eq!(
            enhanced_status("Requested action aborted 4.7.1, try later"),
            Some((4, 7, 1))
        );
        assert_eq!(enhanced_status("version 1.2.3 of the server"), None);
        assert_eq!(enhanced_status("5.1 partial"), None);
        assert_eq!(enhanced_status(""), None);
        for (status, gone) in [
            ("5.1.1", true),
            ("5.1.10", true),
            ("5.2.1", true),
            ("5.1.0 (other address status)", true),
            ("5.1.7", false),
            ("5.1.8", false),
            ("5.2.2", false),
            ("5.7.1", false),
            ("4.1.1", false),
            ("", false),
        ] {
            assert_eq!(status_says_gone(status), gone, "{status}");
        }
    }

    #[test]
    fn reply_table() {
        let table = [
            (
                550,
                "5.1.1 <x@example.com>: Recipient address rejected: User unknown",
                OutcomeClass::Gone,
            ),
            (
                550,
                "5.1.10 RESOLVER.ADR.RecipientNotFound",
                OutcomeClass::Gone,
            ),
            (553, "5.1.3 bad address syntax", OutcomeClass::Gone),
            (550, "mailbox unavailable", OutcomeClass::Gone),
            (551, "user not local", OutcomeClass::Gone),
            (553, "mailbox name not allowed", OutcomeClass::Perm),
            (
                553,
                "Mail from must equal authorized user",
                OutcomeClass::Perm,
            ),
            (
                550,
                "5.1.8 Sender address rejected: Domain not found",
                OutcomeClass::Perm,
            ),
            (550, "5.1.7 bad sender mailbox syntax", OutcomeClass::Perm),
            (550, "5.1.6 mailbox has moved", OutcomeClass::Gone),
            (550, "5.2.1 mailbox disabled", OutcomeClass::Gone),
            (550, "5.7.1 Message rejected as spam", OutcomeClass::Perm),
            (554, "5.7.1 policy", OutcomeClass::Perm),
            (554, "transaction failed", OutcomeClass::Perm),
            (552, "5.2.2 mailbox full", OutcomeClass::Retry),
            (552, "5.3.4 message too big", OutcomeClass::Perm),
            (
                535,
                "5.7.8 Authentication credentials invalid",
                OutcomeClass::Perm,
            ),
            (530, "5.7.0 Authentication required", OutcomeClass::Perm),
            (421, "4.7.0 too many connections", OutcomeClass::Rate),
            (450, "4.2.1 mailbox busy", OutcomeClass::Retry),
            (451, "4.7.1 greylisted, try again", OutcomeClass::Retry),
            (452, "4.5.3 too many recipients", OutcomeClass::Retry),
        ];
        for (code, text, class) in table {
            let out = classify(Failure::Reply { code, text });
            assert_eq!(
                (out.class, out.code.as_str()),
                (class, code.to_string().as_str()),
                "{code} {text}"
            );
            assert_eq!(out.message, text);
        }
    }

    #[test]
    fn non_reply_failures() {
        let out = classify(Failure::Transport {
            timeout: true,
            text: "timed out",
        });
        assert_eq!(
            (out.class, out.code.as_str()),
            (OutcomeClass::Retry, "timeout")
        );
        let out = classify(Failure::Transport {
            timeout: false,
            text: "Connection error: refused",
        });
        assert_eq!(
            (out.class, out.code.as_str()),
            (OutcomeClass::Retry, "connection")
        );
        let out = classify(Failure::Client(
            "No compatible authentication mechanism was found",
        ));
        assert_eq!(
            (out.class, out.code.as_str()),
            (OutcomeClass::Perm, "client")
        );
    }
}
