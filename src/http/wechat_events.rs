//! WeChat event pushes to a `wechatoa` or `wechatmp` channel's receipt URL (providers.md §1.4,
//! §2): the query signature, the XML message, `TEMPLATESENDJOBFINISH` and
//! `subscribe_msg_sent_event`, and the AES-256-CBC envelope of the compatible and safe
//! encryption modes (the "消息加解密" scheme of the official samples).

use std::collections::HashMap;

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockModeDecrypt, KeyIvInit};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::receipts::{IdStatus, Recipient};
use crate::storage::receipts::ReceiptKind;
use crate::storage::suppressions::SuppressReason;

/// Pushes signed longer ago (or further ahead) than this are refused: a signed URL seen once
/// (in a proxy log, say) cannot be replayed later. WeChat's own retries come within 15 s.
pub const MAX_SKEW_SECS: i64 = 300;

/// Most elements read from one message (top-level ones and list items' fields).
const MAX_FIELDS: usize = 64;
/// The top-level elements whose list items are read (`Parent/Item/n/Field`): the mini-program
/// subscribe events. Other nested elements (a mass send's `ResultList`, `SendPicsInfo`) are
/// skipped.
const LISTED: &[&str] = &[
    "SubscribeMsgSentEvent",
    "SubscribeMsgPopupEvent",
    "SubscribeMsgChangeEvent",
];

/// Lowercase hex `sha1` of the parts, sorted and joined: `signature` over (Token, timestamp,
/// nonce), `msg_signature` over those and the `Encrypt` text.
pub fn signature(parts: &[&str]) -> String {
    use sha1::Digest;
    let mut sorted = parts.to_vec();
    sorted.sort_unstable();
    hex::encode(sha1::Sha1::digest(sorted.concat().as_bytes()))
}

/// Whether a push's `timestamp` (unix seconds) is within [`MAX_SKEW_SECS`] of `now`.
pub fn fresh(timestamp: &str, now: i64) -> bool {
    timestamp
        .parse::<i64>()
        .is_ok_and(|t| now.abs_diff(t) <= MAX_SKEW_SECS.unsigned_abs())
}

/// The elements of a WeChat XML message (`<xml><Name>text</Name>…</xml>`), CDATA or escaped
/// text alike: a top-level element by its name, and the fields of the items a [`LISTED`]
/// element lists (`<SubscribeMsgSentEvent><List><MsgID>…`) as `Parent/Item/n/Field`, `n`
/// counting that parent's items of that name from 0. Other nested elements are skipped; no entity is
/// expanded beyond the five predefined ones and character references (a DOCTYPE's entities are
/// unknown here). An element named twice in one place is refused rather than joined.
pub fn fields(body: &[u8]) -> Result<HashMap<String, String>, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut buf = Vec::new();
    let mut depth = 0usize;
    let mut current: Option<String> = None;
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut rooted = false;
    // The top-level element and the item (`Parent/Item/n`) being read, and each item name's
    // count under the current top-level element.
    let mut parent = String::new();
    let mut item = String::new();
    let mut items: HashMap<String, usize> = HashMap::new();
    let open = |fields: &mut HashMap<String, String>, name: String| -> Result<(), String> {
        if fields.len() >= MAX_FIELDS {
            return Err(format!("more than {MAX_FIELDS} elements"));
        }
        if fields.insert(name.clone(), String::new()).is_some() {
            return Err(format!("<{name}> appears twice"));
        }
        Ok(())
    };
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("not well-formed XML: {e}"))?;
        match event {
            Event::Start(e) => {
                depth += 1;
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                if depth == 1 {
                    if name != "xml" || rooted {
                        return Err("the root element must be <xml>".into());
                    }
                    rooted = true;
                } else if depth == 2 {
                    open(&mut fields, name.clone())?;
                    parent = name.clone();
                    items.clear();
                    current = Some(name);
                } else if depth == 3 {
                    item.clear();
                    if LISTED.contains(&parent.as_str()) {
                        let n = items.entry(name.clone()).or_insert(0);
                        item = format!("{parent}/{name}/{n}");
                        *n += 1;
                    }
                    current = None;
                } else if depth == 4 && !item.is_empty() {
                    let key = format!("{item}/{name}");
                    open(&mut fields, key.clone())?;
                    current = Some(key);
                }
            }
            Event::Empty(e) if depth == 1 => {
                open(
                    &mut fields,
                    String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                )?;
            }
            Event::End(_) => {
                if depth == 2 || depth == 4 {
                    current = None;
                }
                depth = depth.saturating_sub(1);
            }
            Event::Text(t) if depth == 2 || depth == 4 => {
                let text = t.decode().map_err(|e| e.to_string())?;
                if let Some(name) = &current {
                    fields.entry(name.clone()).or_default().push_str(&text);
                }
            }
            // `&amp;` and friends, and character references, arrive as events of their own.
            Event::GeneralRef(r) if depth == 2 || depth == 4 => {
                let text = match r.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(|e| e.to_string())?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| format!("unknown entity &{name};"))?
                            .to_string()
                    }
                };
                if let Some(name) = &current {
                    fields.entry(name.clone()).or_default().push_str(&text);
                }
            }
            Event::CData(t) if depth == 2 || depth == 4 => {
                if let Some(name) = &current {
                    fields
                        .entry(name.clone())
                        .or_default()
                        .push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !rooted || depth != 0 {
        return Err("the root element must be <xml>".into());
    }
    Ok(fields)
}

/// The events of an account's push msghub acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum WechatEvent {
    /// `TEMPLATESENDJOBFINISH`: a template send's result, as a receipt to look up.
    TemplateSent(IdStatus),
    /// `subscribe_msg_sent_event`: mini-program subscribe sends' results, as receipts to look
    /// up.
    SubscribeSent(Vec<IdStatus>),
    /// `subscribe`: the user (`FromUserName`) follows the account (again).
    Subscribed(String),
    /// `unsubscribe`: the user stopped following the account.
    Unsubscribed(String),
}

/// The event of a push, `None` for any other message or event (WeChat pushes every message
/// and event of the account to the same URL).
pub(super) fn event(fields: &HashMap<String, String>) -> Result<Option<WechatEvent>, String> {
    let get = |k: &str| fields.get(k).map(|v| v.trim()).unwrap_or_default();
    if get("MsgType") != "event" {
        return Ok(None);
    }
    let kind = get("Event");
    if !matches!(
        kind,
        "TEMPLATESENDJOBFINISH" | "subscribe" | "unsubscribe" | "subscribe_msg_sent_event"
    ) {
        return Ok(None);
    }
    let openid = get("FromUserName");
    if !crate::domain::plain_text(openid, 128) {
        return Err("FromUserName must be the user's openid".into());
    }
    let at_ms = get("CreateTime")
        .parse::<i64>()
        .ok()
        .filter(|s| *s > 0 && *s < 100_000_000_000)
        .map_or_else(msghub_actors::plan::now_ms, |s| s * 1000);
    match kind {
        "subscribe" => return Ok(Some(WechatEvent::Subscribed(openid.to_string()))),
        "unsubscribe" => return Ok(Some(WechatEvent::Unsubscribed(openid.to_string()))),
        "subscribe_msg_sent_event" => {
            return subscribe_sent(fields, openid, at_ms)
                .map(|s| Some(WechatEvent::SubscribeSent(s)));
        }
        _ => {}
    }
    let msgid = get("MsgID");
    if !is_msgid(msgid) {
        return Err("MsgID must be the template send's msgid".into());
    }
    let status = get("Status");
    let (kind, code, suppress) = match status {
        "success" => (ReceiptKind::Delivered, None, None),
        // The user refused the account's template messages: not sent them again.
        "failed:user block" => (
            ReceiptKind::Undelivered,
            Some("user_block"),
            Some(SuppressReason::Blocked),
        ),
        s if s.starts_with("failed") => (ReceiptKind::Undelivered, Some("system_failed"), None),
        _ => {
            return Err(format!(
                "unknown Status {:?}",
                status.chars().take(64).collect::<String>()
            ));
        }
    };
    Ok(Some(WechatEvent::TemplateSent(IdStatus {
        id: msgid.to_string(),
        recipient: Recipient::Openid(openid.to_string()),
        kind,
        code: code.map(str::to_string),
        at_ms,
        suppress,
    })))
}

/// A send's `MsgID`: 1–32 digits.
fn is_msgid(msgid: &str) -> bool {
    !msgid.is_empty() && msgid.len() <= 32 && msgid.bytes().all(|b| b.is_ascii_digit())
}

/// The results a `subscribe_msg_sent_event` lists (`SubscribeMsgSentEvent/List/n/…`): per
/// send, its `MsgID` and `ErrorCode` — 0 delivered, anything else a failure of WeChat's
/// asynchronous push (undelivered, the code kept; the user is not suppressed: a later send may
/// reach them).
fn subscribe_sent(
    fields: &HashMap<String, String>,
    openid: &str,
    at_ms: i64,
) -> Result<Vec<IdStatus>, String> {
    let mut out = Vec::new();
    for n in 0.. {
        let field = |name: &str| {
            fields
                .get(&format!("SubscribeMsgSentEvent/List/{n}/{name}"))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let msgid = field("MsgID");
        if msgid.is_empty() && field("ErrorCode").is_empty() {
            break;
        }
        if !is_msgid(&msgid) {
            return Err("MsgID must be the subscribe send's msgid".into());
        }
        let code = field("ErrorCode");
        let (kind, code) = match code.parse::<i64>() {
            Ok(0) => (ReceiptKind::Delivered, None),
            Ok(c) => (ReceiptKind::Undelivered, Some(format!("sent_event:{c}"))),
            Err(_) => return Err("ErrorCode must be a number".into()),
        };
        out.push(IdStatus {
            id: msgid,
            recipient: Recipient::Openid(openid.to_string()),
            kind,
            code,
            at_ms,
            suppress: None,
        });
    }
    if out.is_empty() {
        return Err("a subscribe_msg_sent_event lists no send".into());
    }
    Ok(out)
}

/// The account's message key: `base64(EncodingAESKey + "=")`, 32 bytes; its first 16 are the
/// IV.
#[derive(Clone)]
pub struct AesKey([u8; 32]);

impl AesKey {
    /// The key of a 43-character `EncodingAESKey`, or `None` when it is not one.
    pub fn parse(encoding_aes_key: &str) -> Option<AesKey> {
        msghub_providers::wechat_aes_key(encoding_aes_key).map(AesKey)
    }

    /// The message inside an `Encrypt` text: base64 of AES-256-CBC over (16 random bytes, the
    /// message's length as 4 big-endian bytes, the message, the appid), PKCS#7-padded to 32
    /// bytes. The appid must be `appid`: another account's message is refused.
    pub fn decrypt(&self, encrypt: &str, appid: &str) -> Result<String, String> {
        let mut data = B64
            .decode(encrypt.trim())
            .map_err(|_| "Encrypt is not base64")?;
        if data.is_empty() || data.len() % 16 != 0 {
            return Err("Encrypt is not whole AES blocks".into());
        }
        let plain = cbc::Decryptor::<aes::Aes256>::new_from_slices(&self.0, &self.0[..16])
            .map_err(|_| "bad key")?
            .decrypt_padded::<NoPadding>(&mut data)
            .map_err(|_| "Encrypt is not whole AES blocks")?;
        let pad = usize::from(*plain.last().unwrap_or(&0));
        if !(1..=32).contains(&pad) || pad > plain.len() {
            return Err("Encrypt does not decrypt with this key".into());
        }
        let plain = &plain[..plain.len() - pad];
        let len_bytes: [u8; 4] = plain
            .get(16..20)
            .and_then(|b| b.try_into().ok())
            .ok_or("Encrypt does not decrypt with this key")?;
        let end = usize::try_from(u32::from_be_bytes(len_bytes))
            .ok()
            .and_then(|len| len.checked_add(20))
            .ok_or("Encrypt does not decrypt with this key")?;
        let message = plain
            .get(20..end)
            .ok_or("Encrypt does not decrypt with this key")?;
        if &plain[end..] != appid.as_bytes() {
            return Err("the message is for another appid".into());
        }
        String::from_utf8(message.to_vec()).map_err(|_| "the message is not UTF-8".into())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn signatures_sort_their_parts() {
        // sha1("12345" + "1700000000" + "simWechatToken"), computed outside the crate.
        assert_eq!(
            signature(&["simWechatToken", "1700000000", "12345"]),
            "ed04b29a4de4bcada67037f357ef33d70c3da92b"
        );
        assert!(fresh("1700000100", 1_700_000_000));
        assert!(!fresh("1700000301", 1_700_000_000));
        assert!(!fresh("1699999699", 1_700_000_000));
        assert!(!fresh("soon", 1_700_000_000));
        assert!(!fresh(&i64::MIN.to_string(), 1_700_000_000));
        assert!(!fresh(&i64::MAX.to_string(), 1_700_000_000));
    }

    /// The sample of WeChat's message encryption guide (token `QDG6eK`, appid
    /// `wx5823bf96d3bd56c7`): its `msg_signature` and the message inside.
    #[test]
    fn the_official_encrypted_sample_decrypts() {
        let encrypt = "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==";
        assert_eq!(
            signature(&["QDG6eK", "1409659813", "1372623149", encrypt]),
            "477715d11cdb4164915debcba66cb864d751f3e6"
        );
        let key = AesKey::parse("jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C").unwrap();
        let xml = key.decrypt(encrypt, "wx5823bf96d3bd56c7").unwrap();
        let f = fields(xml.as_bytes()).unwrap();
        assert_eq!(f["FromUserName"], "mycreate");
        assert_eq!(f["Content"], "hello");
        assert_eq!(f["MsgId"], "4561255354251345929");
        assert_eq!(
            key.decrypt(encrypt, "wx0000000000000000").unwrap_err(),
            "the message is for another appid"
        );
        let other = AesKey::parse("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap();
        assert!(other.decrypt(encrypt, "wx5823bf96d3bd56c7").is_err());
        for bad in ["", "not base64!", "AAAA"] {
            assert!(key.decrypt(bad, "wx5823bf96d3bd56c7").is_err(), "{bad}");
        }
        for bad in ["short", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C="] {
            assert!(AesKey::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn subscribe_send_results_are_read_from_their_list() {
        let item = |msgid: &str, code: &str, status: &str| {
            format!(
                "<List><TemplateId><![CDATA[SUB_order]]></TemplateId><MsgID>{msgid}</MsgID>\
                 <ErrorCode>{code}</ErrorCode><ErrorStatus><![CDATA[{status}]]></ErrorStatus></List>"
            )
        };
        let xml = |items: &str| {
            format!(
                "<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName>\
                 <FromUserName><![CDATA[oMini0001]]></FromUserName><CreateTime>1700000000</CreateTime>\
                 <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_sent_event]]></Event>\
                 <SubscribeMsgSentEvent>{items}</SubscribeMsgSentEvent></xml>"
            )
        };
        let two = xml(&format!(
            "{}{}",
            item("1700827132819554304", "0", "success"),
            item("1700827132819554305", "10005", "system failed")
        ));
        let f = fields(two.as_bytes()).unwrap();
        assert_eq!(
            f["SubscribeMsgSentEvent/List/1/MsgID"],
            "1700827132819554305"
        );
        let sent = |id: &str, kind, code: Option<&str>| IdStatus {
            id: id.into(),
            recipient: Recipient::Openid("oMini0001".into()),
            kind,
            code: code.map(str::to_string),
            at_ms: 1_700_000_000_000,
            suppress: None,
        };
        assert_eq!(
            event(&f).unwrap(),
            Some(WechatEvent::SubscribeSent(vec![
                sent("1700827132819554304", ReceiptKind::Delivered, None),
                sent(
                    "1700827132819554305",
                    ReceiptKind::Undelivered,
                    Some("sent_event:10005")
                ),
            ]))
        );
        // Other pushes' nested lists (a picture message's items) are skipped, not refused.
        let pics = "<xml><MsgType>event</MsgType><Event>pic_photo_or_album</Event>\
                    <FromUserName>oUser1</FromUserName><SendPicsInfo><Count>2</Count><PicList>\
                    <item><PicMd5Sum>a</PicMd5Sum></item><item><PicMd5Sum>b</PicMd5Sum></item>\
                    </PicList></SendPicsInfo></xml>";
        let f = fields(pics.as_bytes()).unwrap();
        assert_eq!(f.len(), 4, "{f:?}");
        assert_eq!(event(&f), Ok(None));
        for bad in [
            xml(""),
            xml(&item("12a", "0", "success")),
            xml(&item("1700827132819554304", "x", "success")),
            // A field twice in one item.
            xml(&item("1", "0", "success").replace("</List>", "<MsgID>2</MsgID></List>")),
        ] {
            assert!(
                fields(bad.as_bytes()).and_then(|f| event(&f)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn template_events_are_read_from_their_xml() {
        let xml = "<xml><ToUserName><![CDATA[gh_7f083739789a]]></ToUserName>\
                   <FromUserName><![CDATA[oia2TjuEGTNoeX76QEjQNrcURxG8]]></FromUserName>\
                   <CreateTime>1395658920</CreateTime><MsgType><![CDATA[event]]></MsgType>\
                   <Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>200163836</MsgID>\
                   <Status><![CDATA[success]]></Status></xml>";
        let f = fields(xml.as_bytes()).unwrap();
        assert_eq!(f["ToUserName"], "gh_7f083739789a");
        assert_eq!(
            event(&f).unwrap(),
            Some(WechatEvent::TemplateSent(IdStatus {
                id: "200163836".into(),
                recipient: Recipient::Openid("oia2TjuEGTNoeX76QEjQNrcURxG8".into()),
                kind: ReceiptKind::Delivered,
                code: None,
                at_ms: 1_395_658_920_000,
                suppress: None,
            }))
        );
        for (status, code, suppress) in [
            (
                "failed:user block",
                "user_block",
                Some(SuppressReason::Blocked),
            ),
            ("failed: system failed", "system_failed", None),
        ] {
            let failed = xml.replace("success", status);
            let read = event(&fields(failed.as_bytes()).unwrap()).unwrap();
            let sent = match read {
                Some(WechatEvent::TemplateSent(sent)) => {
                    Some((sent.kind, sent.code, sent.suppress))
                }
                _ => None,
            };
            assert_eq!(
                sent,
                Some((ReceiptKind::Undelivered, Some(code.to_string()), suppress)),
                "{status}"
            );
        }
        // Escaped text reads like CDATA; (un)subscribe events name their user.
        let plain = "<xml><MsgType>event</MsgType><Event>subscribe</Event>\
                     <FromUserName>o&amp;1&#x41;</FromUserName></xml>";
        let f = fields(plain.as_bytes()).unwrap();
        assert_eq!(f["FromUserName"], "o&1A");
        assert_eq!(event(&f), Ok(Some(WechatEvent::Subscribed("o&1A".into()))));
        let gone = plain.replace(">subscribe<", ">unsubscribe<");
        assert_eq!(
            event(&fields(gone.as_bytes()).unwrap()),
            Ok(Some(WechatEvent::Unsubscribed("o&1A".into())))
        );
        // Other events and messages are not acted on.
        for other in [
            plain.replace(">subscribe<", ">SCAN<"),
            plain.replace(">event<", ">text<"),
        ] {
            assert_eq!(
                event(&fields(other.as_bytes()).unwrap()),
                Ok(None),
                "{other}"
            );
        }
        for bad in [
            xml.replace("200163836", "12a"),
            xml.replace("success", "maybe"),
            xml.replace(
                "<FromUserName><![CDATA[oia2TjuEGTNoeX76QEjQNrcURxG8]]></FromUserName>",
                "",
            ),
            plain.replace("o&amp;1&#x41;", ""),
        ] {
            assert!(event(&fields(bad.as_bytes()).unwrap()).is_err(), "{bad}");
        }
        let many: String = (0..65).map(|i| format!("<F{i}/>")).collect();
        for bad in [
            String::new(),
            "<x><a>1</a></x>".into(),
            "<xml><a>1</xml>".into(),
            "not xml".into(),
            "<xml></xml><xml></xml>".into(),
            "<!DOCTYPE xml [<!ENTITY e \"boom\">]><xml><a>&e;</a></xml>".into(),
            "<xml><MsgID>1</MsgID><MsgID>2</MsgID></xml>".into(),
            format!("<xml>{many}</xml>"),
        ] {
            assert!(fields(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
