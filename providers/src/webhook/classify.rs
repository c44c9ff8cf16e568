//! Webhook receiver reply → outcome class. Only the HTTP status counts: receiver bodies are free.

use msghub_actors::provider::{Outcome, OutcomeClass};

use crate::http::{Reply, class_for_status, with_wait};

pub(crate) fn classify(reply: &Reply) -> Outcome {
    let class = match reply.status {
        // 410 is the receiver's way to say "this target no longer exists".
        410 => OutcomeClass::Gone,
        status => class_for_status(status),
    };
    let code = reply.status.to_string();
    let outcome = if class == OutcomeClass::Ok {
        Outcome::ok(code, None)
    } else {
        Outcome::failed(
            class,
            code,
            format!("HTTP {}: {}", reply.status, reply.excerpt()),
        )
    };
    with_wait(outcome, reply.retry_after)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::time::Duration;

    #[test]
    fn table() {
        let table = [
            (200, OutcomeClass::Ok),
            (201, OutcomeClass::Ok),
            (202, OutcomeClass::Ok),
            (204, OutcomeClass::Ok),
            (301, OutcomeClass::Perm),
            (400, OutcomeClass::Perm),
            (401, OutcomeClass::Perm),
            (403, OutcomeClass::Perm),
            (404, OutcomeClass::Perm),
            (408, OutcomeClass::Retry),
            (410, OutcomeClass::Gone),
            (422, OutcomeClass::Perm),
            (429, OutcomeClass::Rate),
            (500, OutcomeClass::Retry),
            (502, OutcomeClass::Retry),
            (503, OutcomeClass::Retry),
        ];
        for (status, class) in table {
            let reply = Reply {
                status,
                body: b"body".to_vec(),
                ..Reply::default()
            };
            let out = classify(&reply);
            assert_eq!(
                (out.class, out.code.as_str()),
                (class, status.to_string().as_str())
            );
        }
    }

    #[test]
    fn retry_after_for_rate_and_retry_only() {
        let wait = Some(Duration::from_secs(30));
        for (status, expected) in [(429, wait), (503, wait), (400, None), (200, None)] {
            let reply = Reply {
                status,
                retry_after: wait,
                ..Reply::default()
            };
            assert_eq!(classify(&reply).retry_after, expected, "{status}");
        }
    }
}
