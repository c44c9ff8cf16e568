//! Reports mailed to the hub's return paths: delivery status notifications (RFC 3464) — the
//! per-recipient statuses of a `multipart/report; report-type=delivery-status` message (also
//! when another multipart encloses it), from its `message/delivery-status` part (or
//! `message/global-delivery-status`, RFC 6533) — and abuse feedback reports (ARF, RFC 5965),
//! a mailbox provider's word that its user marked a message as spam, with the return path the
//! message was sent with. Parts are decoded from base64 or quoted-printable when they say so.

use base64::Engine as _;

/// How deep multiparts are searched for the status part.
const MAX_DEPTH: usize = 4;

/// What a report says of one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    /// `Final-Recipient` (the address the reporting server tried), without its type.
    pub recipient: String,
    pub action: Action,
    /// The RFC 3463 code, `5.1.1`.
    pub status: String,
    /// `Diagnostic-Code`, the remote server's answer, cut to 200 characters.
    pub diagnostic: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    Relayed,
    Expanded,
}

impl Action {
    fn parse(text: &str) -> Option<Action> {
        // A comment may follow (`failed (bad destination mailbox address)`).
        let word = text.split_whitespace().next()?.to_ascii_lowercase();
        Some(match word.as_str() {
            "failed" => Action::Failed,
            "delayed" => Action::Delayed,
            "delivered" => Action::Delivered,
            "relayed" => Action::Relayed,
            "expanded" => Action::Expanded,
            _ => return None,
        })
    }
}

impl RecipientStatus {
    /// A permanent failure of the address itself, mail to it will keep failing
    /// ([`msghub_providers::smtp::status_says_gone`]: `5.1.0`–`5.1.3`, `5.1.6`, `5.1.10`,
    /// `5.2.1`). A full mailbox (`5.2.2`), a policy refusal (`5.7.x`) or the sender's own
    /// problem (`5.1.7`, `5.1.8`) says nothing of the address.
    pub fn address_is_gone(&self) -> bool {
        self.action == Action::Failed && msghub_providers::smtp::status_says_gone(&self.status)
    }

    /// A failure that may pass (a soft bounce), counted toward suppressing an address that
    /// keeps failing: the mailbox's state (`x.2.0` undefined, `x.2.2` full) or the network
    /// and routing to it (`x.4.x`, such as a domain the sender could not reach before giving
    /// up), the mailbox not gone. A message too long (`x.2.3`) or a list expansion (`x.2.4`),
    /// policy refusals (`x.7.x`), the sender's own address (`x.1.7`, `x.1.8`) and the
    /// message's content (`x.6.x`) say nothing of the address.
    pub fn is_soft_bounce(&self) -> bool {
        let mut parts = self.status.split('.');
        let class = parts.next();
        let (subject, detail) = (parts.next(), parts.next());
        self.action == Action::Failed
            && !self.address_is_gone()
            && matches!(class, Some("4" | "5"))
            && matches!(
                (subject, detail),
                (Some("2"), Some("0" | "2")) | (Some("4"), Some(_))
            )
    }
}

/// A feedback report: what kind (`abuse`, `fraud`, ...) and the return path of the message
/// it is about (`Original-Mail-From`, or else the quoted original's `Return-Path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    pub kind: String,
    pub return_path: Option<String>,
}

impl Feedback {
    /// The user marked the message as spam or fraud (`abuse`, `fraud`); `not-spam`, `virus`
    /// and `other` are no wish of the recipient's.
    pub fn is_complaint(&self) -> bool {
        matches!(self.kind.as_str(), "abuse" | "fraud")
    }
}

/// What a report mailed to the hub says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Delivery(Vec<RecipientStatus>),
    Feedback(Feedback),
}

/// Why a message is not a report the hub reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsnError {
    #[error(
        "not a delivery status notification or feedback report (no message/delivery-status or message/feedback-report part)"
    )]
    NotAReport,
    #[error("the delivery status names no recipient with an action and a status")]
    NoRecipients,
    #[error("the feedback report has no Feedback-Type")]
    NoFeedbackType,
}

const STATUS_TYPES: &[&str] = &["message/delivery-status", "message/global-delivery-status"];
const FEEDBACK_TYPES: &[&str] = &["message/feedback-report"];
const ORIGINAL_TYPES: &[&str] = &[
    "message/rfc822",
    "text/rfc822-headers",
    "message/global",
    "message/global-headers",
];

/// The report `raw` is: a delivery status notification or a feedback report.
pub fn read(raw: &[u8]) -> Result<Report, DsnError> {
    let text = String::from_utf8_lossy(raw);
    if let Some(status) = find_part(&text, 0, STATUS_TYPES) {
        let recipients = recipients(&status);
        if recipients.is_empty() {
            return Err(DsnError::NoRecipients);
        }
        return Ok(Report::Delivery(recipients));
    }
    let report = find_part(&text, 0, FEEDBACK_TYPES).ok_or(DsnError::NotAReport)?;
    let f = fields(&report.replace("\r\n", "\n"));
    let kind = field(&f, "feedback-type")
        .and_then(|k| k.split_whitespace().next())
        .map(|k| k.chars().take(32).collect::<String>().to_ascii_lowercase())
        .ok_or(DsnError::NoFeedbackType)?;
    let original_return_path = || {
        let original = find_part(&text, 0, ORIGINAL_TYPES)?;
        let (headers, _) = split(&original);
        field(&headers, "return-path").map(str::to_string)
    };
    let return_path = field(&f, "original-mail-from")
        .and_then(angle)
        .or_else(|| original_return_path().and_then(|p| angle(&p)));
    Ok(Report::Feedback(Feedback { kind, return_path }))
}

/// `<a@b>` or `a@b` → `a@b`; nothing for the null path or a value without an address.
fn angle(value: &str) -> Option<String> {
    let value = value.trim();
    let inner = match value.strip_prefix('<') {
        Some(rest) => rest.split('>').next().unwrap_or_default(),
        None => value.split_whitespace().next().unwrap_or_default(),
    };
    inner.contains('@').then(|| inner.trim().to_string())
}

/// A message or body part split into its unfolded header fields (names lower-cased) and
/// its body.
fn split(entity: &str) -> (Vec<(String, String)>, &str) {
    // No header fields: the part starts with its blank line.
    if let Some(body) = entity
        .strip_prefix("\r\n")
        .or_else(|| entity.strip_prefix('\n'))
    {
        return (Vec::new(), body);
    }
    let crlf = entity.find("\r\n\r\n").map(|i| (i, 4));
    let lf = entity.find("\n\n").map(|i| (i, 2));
    let cut = match (crlf, lf) {
        (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
        (a, b) => a.or(b),
    };
    match cut {
        Some((i, n)) => (fields(&entity[..i]), &entity[i + n..]),
        None => (fields(entity), ""),
    }
}

/// Header fields, unfolded: a line starting with white space continues the one before.
fn fields(block: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in block.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = out.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    out
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// `type/subtype` (lower-cased) and the `boundary` parameter of a Content-Type value.
fn content_type(value: &str) -> (String, Option<String>) {
    let mut parts = value.split(';');
    let mime = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let boundary = parts.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_string())
    });
    (mime, boundary)
}

/// The decoded text of the first part in `entity` of one of the `types`.
fn find_part(entity: &str, depth: usize, types: &[&str]) -> Option<String> {
    let (headers, body) = split(entity);
    let (mime, boundary) = content_type(field(&headers, "content-type").unwrap_or("text/plain"));
    match mime.as_str() {
        m if types.contains(&m) => {
            let encoding = field(&headers, "content-transfer-encoding").unwrap_or("7bit");
            Some(decode(body, encoding))
        }
        m if m.starts_with("multipart/") && depth < MAX_DEPTH => {
            let boundary = boundary.filter(|b| !b.is_empty())?;
            parts(body, &boundary).find_map(|part| find_part(part, depth + 1, types))
        }
        _ => None,
    }
}

/// The body parts of a multipart body: the text between `--boundary` lines, up to
/// `--boundary--`.
fn parts<'a>(body: &'a str, boundary: &str) -> impl Iterator<Item = &'a str> {
    let delimiter = format!("--{boundary}");
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut offset = 0;
    for line in body.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\r', '\n']);
        if let Some(rest) = bare.strip_prefix(delimiter.as_str()) {
            let closing = rest.starts_with("--");
            if rest.trim_start_matches('-').trim().is_empty() {
                if let Some(s) = start {
                    // The line break before the delimiter belongs to it.
                    let end = offset;
                    let part = &body[s..end];
                    out.push(
                        part.strip_suffix('\n')
                            .map_or(part, |p| p.strip_suffix('\r').unwrap_or(p)),
                    );
                }
                start = (!closing).then_some(offset + line.len());
                if closing {
                    break;
                }
            }
        }
        offset += line.len();
    }
    out.into_iter()
}

fn decode(body: &str, encoding: &str) -> String {
    match encoding.trim().to_ascii_lowercase().as_str() {
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact.as_bytes())
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_default()
        }
        "quoted-printable" => quoted_printable(body),
        _ => body.to_string(),
    }
}

fn quoted_printable(body: &str) -> String {
    let mut out = Vec::with_capacity(body.len());
    for line in body.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let (line, soft) = match line.trim_end().strip_suffix('=') {
            Some(l) => (l, true),
            None => (line, false),
        };
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'='
                && i + 2 < bytes.len()
                && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        if !soft {
            out.extend_from_slice(b"\r\n");
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The per-recipient blocks of a delivery-status body: groups of fields separated by blank
/// lines; the first (per-message) group names no recipient and is passed over like any
/// group without `Final-Recipient`, `Action` and a valid `Status`.
fn recipients(status: &str) -> Vec<RecipientStatus> {
    let normalised = status.replace("\r\n", "\n");
    normalised
        .split("\n\n")
        .filter_map(|block| {
            let f = fields(block);
            let recipient = address_field(field(&f, "final-recipient")?)?;
            let action = Action::parse(field(&f, "action")?)?;
            let status = status_code(field(&f, "status")?)?;
            let diagnostic = field(&f, "diagnostic-code")
                .map(|d| d.split_once(';').map_or(d, |(_, text)| text).trim())
                .filter(|d| !d.is_empty())
                .map(|d| d.chars().take(200).collect());
            Some(RecipientStatus {
                recipient,
                action,
                status,
                diagnostic,
            })
        })
        .collect()
}

/// `rfc822; user@example.org` → `user@example.org` (angle brackets dropped).
fn address_field(value: &str) -> Option<String> {
    let address = value.split_once(';').map_or(value, |(_, a)| a).trim();
    let address = address.trim_start_matches('<').trim_end_matches('>').trim();
    (address.contains('@') && !address.contains(char::is_whitespace)).then(|| address.to_string())
}

/// The first word of `Status` when it is an RFC 3463 code (`5.1.1 (user unknown)` → `5.1.1`).
fn status_code(value: &str) -> Option<String> {
    let code = value.split_whitespace().next()?;
    let mut parts = code.split('.');
    let class = parts.next()?;
    let subject = parts.next()?;
    let detail = parts.next()?;
    let number = |p: &str, max: usize| {
        !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit())
    };
    (parts.next().is_none()
        && matches!(class, "2" | "4" | "5")
        && number(subject, 3)
        && number(detail, 3))
    .then(|| code.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn soft_bounces_are_mailbox_and_routing_failures_of_a_mailbox_not_gone() {
        let status = |action: Action, code: &str| RecipientStatus {
            recipient: "a@example.org".into(),
            action,
            status: code.into(),
            diagnostic: None,
        };
        for soft in ["5.2.2", "4.2.2", "5.2.0", "4.4.7", "5.4.4", "4.4.1"] {
            assert!(status(Action::Failed, soft).is_soft_bounce(), "{soft}");
        }
        // Gone (suppressed at once), the sender's or the content's problem, a policy refusal,
        // and what is not a failure.
        for not_soft in [
            "5.1.1", "5.2.1", "5.1.7", "5.1.8", "5.6.0", "5.7.1", "4.7.0", "5.3.4", "x.2.2", "2.2",
        ] {
            assert!(
                !status(Action::Failed, not_soft).is_soft_bounce(),
                "{not_soft}"
            );
        }
        assert!(!status(Action::Delayed, "4.2.2").is_soft_bounce());
        assert!(!status(Action::Delivered, "2.0.0").is_soft_bounce());
    }

    /// The recipients' statuses of the notification `raw`; a feedback report is not one.
    fn parse(raw: &[u8]) -> Result<Vec<RecipientStatus>, DsnError> {
        match read(raw)? {
            Report::Delivery(statuses) => Ok(statuses),
            Report::Feedback(_) => Err(DsnError::NotAReport),
        }
    }

    fn feedback(raw: &str) -> Feedback {
        match read(raw.as_bytes()).unwrap() {
            Report::Feedback(f) => f,
            other => unreachable!("not feedback: {other:?}"),
        }
    }

    /// The example of RFC 3464 §10.2 (a simple failure), as a mail server sends it.
    const RFC_EXAMPLE: &str = "Date: Thu, 7 Jul 1994 17:16:05 -0400\r\n\
From: Mail Delivery Subsystem <MAILER-DAEMON@CS.UTK.EDU>\r\n\
Message-Id: <199407072116.RAA14128@CS.UTK.EDU>\r\n\
Subject: Returned mail: Cannot send message for 5 days\r\n\
To: <owner-ietf-mta-dsn@cs.utk.edu>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status;\r\n\
\tboundary=\"RAA14128.773615765/CS.UTK.EDU\"\r\n\
\r\n\
--RAA14128.773615765/CS.UTK.EDU\r\n\
\r\n\
   ----- The following addresses had delivery problems -----\r\n\
<louisl@larry.slip.umd.edu>  (unrecoverable error)\r\n\
\r\n\
--RAA14128.773615765/CS.UTK.EDU\r\n\
content-type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; cs.utk.edu\r\n\
\r\n\
Original-Recipient: rfc822;louisl@larry.slip.umd.edu\r\n\
Final-Recipient: rfc822;louisl@larry.slip.umd.edu\r\n\
Action: failed\r\n\
Status: 4.0.0\r\n\
Diagnostic-Code: smtp; 426 connection timed out\r\n\
Last-Attempt-Date: Thu, 7 Jul 1994 17:15:49 -0400\r\n\
\r\n\
--RAA14128.773615765/CS.UTK.EDU\r\n\
content-type: message/rfc822\r\n\
\r\n\
[original message goes here]\r\n\
\r\n\
--RAA14128.773615765/CS.UTK.EDU--\r\n";

    #[test]
    fn the_rfc_example_is_read() {
        let statuses = parse(RFC_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(
            statuses,
            [RecipientStatus {
                recipient: "louisl@larry.slip.umd.edu".into(),
                action: Action::Failed,
                status: "4.0.0".into(),
                diagnostic: Some("426 connection timed out".into()),
            }]
        );
        // Failed, but a 4.x.x status says nothing of the address.
        assert!(!statuses[0].address_is_gone());
    }

    fn report(status_part_headers: &str, status_body: &str) -> String {
        format!(
            "From: MAILER-DAEMON@mx.example.org\nTo: bounce+1.2.3@b.example.com\n\
Content-Type: multipart/mixed; boundary=outer\n\n--outer\nContent-Type: text/plain\n\nhi\n\
--outer\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"in ner\"\n\n\
--in ner\nContent-Type: text/plain\n\nSorry.\n--in ner\n{status_part_headers}\n{status_body}\n--in ner--\n--outer--\n"
        )
    }

    #[test]
    fn nested_reports_several_recipients_and_encodings_are_read() {
        let body = "Reporting-MTA: dns; mx.example.org\n\nFinal-Recipient: RFC822; <A@Example.org>\n\
Action: failed (bad destination mailbox address)\nStatus: 5.1.1 (user unknown)\n\n\
Final-Recipient: rfc822; b@example.org\nAction: delayed\nStatus: 4.4.7\n";
        let plain =
            parse(report("Content-Type: message/delivery-status\n", body).as_bytes()).unwrap();
        assert_eq!(plain.len(), 2);
        assert_eq!(plain[0].recipient, "A@Example.org");
        assert_eq!(
            (plain[0].action, plain[0].status.as_str()),
            (Action::Failed, "5.1.1")
        );
        assert!(plain[0].address_is_gone());
        assert_eq!(plain[0].diagnostic, None);
        assert_eq!(
            (plain[1].action, plain[1].status.as_str()),
            (Action::Delayed, "4.4.7")
        );
        assert!(!plain[1].address_is_gone());

        let encoded = base64::engine::general_purpose::STANDARD.encode(body);
        let (first, rest) = encoded.split_at(40);
        let b64 = parse(
            report(
                "Content-Type: message/global-delivery-status\nContent-Transfer-Encoding: base64\n",
                &format!("{first}\n{rest}"),
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(b64, plain);

        let qp_body = body.replace("5.1.1 (user unknown)", "5.1=2E1 (user =\nunknown)");
        let qp = parse(
            report(
                "Content-Type: message/delivery-status\nContent-Transfer-Encoding: quoted-printable\n",
                &qp_body,
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(qp, plain);
    }

    #[test]
    fn what_is_not_a_report_is_refused() {
        assert_eq!(
            parse(b"Subject: out of office\r\n\r\nI am away.\r\n"),
            Err(DsnError::NotAReport)
        );
        // A report without a usable recipient block.
        let no_recipient = report(
            "Content-Type: message/delivery-status\n",
            "Reporting-MTA: dns; mx\n\nFinal-Recipient: rfc822; x@y\nAction: failed\nStatus: 9.9.9\n",
        );
        assert_eq!(parse(no_recipient.as_bytes()), Err(DsnError::NoRecipients));
        // A multipart without a boundary, and one nested deeper than searched.
        assert_eq!(
            parse(b"Content-Type: multipart/report\r\n\r\n--x\r\n\r\n--x--\r\n"),
            Err(DsnError::NotAReport)
        );
        let mut deep = String::from(
            "Content-Type: message/delivery-status\n\nFinal-Recipient: rfc822; a@b\nAction: failed\nStatus: 5.1.1\n",
        );
        for i in 0..6 {
            deep = format!(
                "Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n{deep}\n--b{i}--\n"
            );
        }
        assert_eq!(parse(deep.as_bytes()), Err(DsnError::NotAReport));
        assert_eq!(parse(&[0xff, 0xfe, 0x00]), Err(DsnError::NotAReport));
    }

    /// The example of RFC 5965 §B.1 (an abuse report with the original message), with the
    /// original's envelope sender as `Original-Mail-From`.
    fn arf(original_mail_from: Option<&str>) -> String {
        let from_field = original_mail_from
            .map(|f| format!("Original-Mail-From: {f}\r\n"))
            .unwrap_or_default();
        format!(
            "From: <abusedesk@example.com>\r\nDate: Thu, 8 Mar 2005 17:40:36 EDT\r\n\
Subject: FW: Earn money\r\nTo: <abuse@example.net>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=feedback-report;\r\n\tboundary=\"part1_13d.2e68ed54_boundary\"\r\n\r\n\
--part1_13d.2e68ed54_boundary\r\nContent-Type: text/plain; charset=\"US-ASCII\"\r\n\r\n\
This is an email abuse report for an email message received from IP\r\n10.67.41.167 on Thu, 8 Mar 2005 14:00:00 EDT.\r\n\r\n\
--part1_13d.2e68ed54_boundary\r\nContent-Type: message/feedback-report\r\n\r\n\
Feedback-Type: abuse\r\nUser-Agent: SomeGenerator/1.0\r\nVersion: 1\r\n{from_field}\
Original-Rcpt-To: <user@example.com>\r\nArrival-Date: Thu, 8 Mar 2005 14:00:00 EDT\r\n\r\n\
--part1_13d.2e68ed54_boundary\r\nContent-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n\
Return-Path: <bounce+1.2.ab@b.example.com>\r\nFrom: <somespammer@example.net>\r\n\
Subject: Earn money\r\n\r\nSpam Spam Spam\r\n\r\n--part1_13d.2e68ed54_boundary--\r\n"
        )
    }

    #[test]
    fn feedback_reports_name_the_return_path() {
        let report = read(arf(Some("<bounce+9.9.cd@b.example.com>")).as_bytes()).unwrap();
        assert_eq!(
            report,
            Report::Feedback(Feedback {
                kind: "abuse".into(),
                return_path: Some("bounce+9.9.cd@b.example.com".into()),
            })
        );
        // Without Original-Mail-From: the quoted original's Return-Path.
        let f = feedback(&arf(None));
        assert_eq!(
            f.return_path.as_deref(),
            Some("bounce+1.2.ab@b.example.com")
        );
        // A null original sender names nothing: the quoted Return-Path does.
        let f = feedback(&arf(Some("<>")));
        assert_eq!(
            f.return_path.as_deref(),
            Some("bounce+1.2.ab@b.example.com")
        );
        let no_path = arf(Some("<>")).replace("Return-Path: <bounce+1.2.ab@b.example.com>\r\n", "");
        let f = feedback(&no_path);
        assert_eq!(f.return_path, None);
        // Not a delivery status notification.
        assert_eq!(parse(arf(None).as_bytes()), Err(DsnError::NotAReport));
        assert!(f.is_complaint());
        let not_spam =
            feedback(&arf(None).replace("Feedback-Type: abuse", "Feedback-Type: Not-Spam"));
        assert_eq!(not_spam.kind, "not-spam");
        assert!(!not_spam.is_complaint());
        let no_type = arf(None).replace("Feedback-Type: abuse\r\n", "");
        assert_eq!(read(no_type.as_bytes()), Err(DsnError::NoFeedbackType));
    }

    #[test]
    fn status_codes_and_addresses() {
        assert_eq!(status_code("5.1.1").as_deref(), Some("5.1.1"));
        assert_eq!(status_code("4.4.7 (expired)").as_deref(), Some("4.4.7"));
        for bad in ["", "5.1", "5.1.1.1", "3.1.1", "5.a.1", "5.1.1234"] {
            assert_eq!(status_code(bad), None, "{bad}");
        }
        assert_eq!(address_field("rfc822;<a@b>").as_deref(), Some("a@b"));
        assert_eq!(address_field("rfc822; not an address"), None);
    }
}
