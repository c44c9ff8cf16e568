//! The JUMS send request (`/v1/sent`, `/v1/broadcast`), validated.

use msghub_actors::plan::{Audience, Lane, RawAddresses, now_ms};
use msghub_actors::provider::ChannelType;
use serde_json::{Map, Value};

use super::kind_of;
use crate::error::{JumsError, jums};

pub const MAX_USERIDS: usize = 1000;
pub const MAX_TAGS: usize = 20;
pub const MAX_RAW_PER_TYPE: usize = 1000;
pub const MAX_TTL_SECONDS: u64 = 10 * 24 * 3600;
pub const MAX_PARAMS_BYTES: usize = 4096;
/// Pacing over at most a day.
pub const MAX_SPREAD_SECONDS: u64 = 24 * 3600;

/// Which endpoint the request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendKind {
    Targeted,
    Broadcast,
}

impl SendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SendKind::Targeted => "sent",
            SendKind::Broadcast => "broadcast",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SendRequest {
    pub audience: Audience,
    /// `msg_<type>` contents, in channel type order.
    pub contents: Vec<(ChannelType, Value)>,
    pub sendno: Option<String>,
    pub priority: Option<u8>,
    pub ttl_seconds: Option<u32>,
    /// Pace the deliveries evenly over this many seconds (`option.spread_seconds`).
    pub spread_seconds: Option<u32>,
    /// A stored rule (`rule_id` above 0); 0 or absent is the concurrent default.
    pub rule_id: Option<i64>,
    /// Message parameters that routing conditions read (`option.params`, a msghub extension).
    pub params: Map<String, Value>,
    /// The `callback` field: status callback URL and echoed parameters.
    pub callback: Option<super::callback::CallbackRequest>,
    /// `option.send_at` when in the future (unix ms): the message waits until then.
    pub send_at: Option<i64>,
    /// `option.black_id` / `option.white_id`: a list to filter the audience with.
    pub black_id: Option<i64>,
    pub white_id: Option<i64>,
}

impl SendRequest {
    /// Real-time work: priority 1, or a targeted send that names no priority. Everything else
    /// (tags, broadcasts, explicit priority 2 and 3) is bulk.
    pub fn lane(&self) -> Lane {
        match self.priority {
            Some(1) => Lane::Realtime,
            None if matches!(self.audience, Audience::Userids(_) | Audience::Raw(_)) => {
                Lane::Realtime
            }
            _ => Lane::Bulk,
        }
    }

    pub fn priority_or_default(&self) -> u8 {
        self.priority.unwrap_or(2)
    }
}

fn invalid(msg: impl Into<String>) -> JumsError {
    JumsError::invalid(msg)
}

fn string_list(v: &Value, field: &str, max_len: usize) -> Result<Vec<String>, JumsError> {
    let arr = v.as_array().ok_or_else(|| {
        invalid(format!(
            "{field} must be an array of strings, got {}",
            kind_of(v)
        ))
    })?;
    arr.iter()
        .enumerate()
        .map(|(i, item)| match item.as_str() {
            Some(s) if s.chars().any(char::is_control) => {
                Err(invalid(format!("{field}[{i}] contains control characters")))
            }
            Some(s) if !s.trim().is_empty() && s.len() <= max_len => Ok(s.to_string()),
            Some(s) if s.trim().is_empty() => Err(invalid(format!("{field}[{i}] is empty"))),
            Some(_) => Err(invalid(format!(
                "{field}[{i}] is longer than {max_len} bytes"
            ))),
            None => Err(invalid(format!(
                "{field}[{i}] must be a string, got {}",
                kind_of(item)
            ))),
        })
        .collect()
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    v.retain(|s| seen.insert(s.clone()));
    v
}

/// Parse and validate a send body. Nothing here touches storage.
pub fn parse(body: &Value, kind: SendKind) -> Result<SendRequest, JumsError> {
    let obj = body.as_object().ok_or_else(|| {
        invalid(format!(
            "request body must be a JSON object, got {}",
            kind_of(body)
        ))
    })?;
    let mut userids = None;
    let mut tags = None;
    let mut raw: Vec<RawAddresses> = Vec::new();
    let mut contents: Vec<(ChannelType, Value)> = Vec::new();
    let mut option = None;
    let mut rule_id = None;
    let mut callback = None;
    for (key, value) in obj {
        match key.as_str() {
            "aud_userid" => userids = Some(parse_userids(value)?),
            "aud_tag" => tags = Some(parse_tags(value)?),
            "aud_segment" => {
                return Err(invalid(
                    "aud_segment: segments are not available on this server",
                ));
            }
            "rule_id" => rule_id = parse_rule(value)?,
            "option" => option = Some(value),
            "callback" => callback = super::callback::parse(value)?,
            k if k.starts_with("aud_") => {
                let t = channel_type(&k[4..], k)?;
                raw.push(RawAddresses {
                    channel_type: t,
                    addresses: parse_raw(value, k)?,
                });
            }
            k if k.starts_with("msg_") => {
                let t = channel_type(&k[4..], k)?;
                contents.push((t, parse_content(t, value, k)?));
            }
            other => return Err(invalid(format!("unknown field {other:?}"))),
        }
    }
    contents.sort_by_key(|(t, _)| *t);
    if contents.is_empty() {
        return Err(invalid(
            "no content: give at least one msg_<type> (e.g. msg_app, msg_sms)",
        ));
    }
    let user_class = userids.is_some() || tags.is_some();
    let audience = match kind {
        SendKind::Broadcast => {
            if user_class || !raw.is_empty() {
                return Err(invalid(
                    "/v1/broadcast takes no aud_* field; use /v1/sent for targeted sends",
                ));
            }
            Audience::All
        }
        SendKind::Targeted => {
            if user_class && !raw.is_empty() {
                return Err(invalid(
                    "user audiences (aud_userid, aud_tag) and raw addresses (aud_<type>) cannot be mixed",
                ));
            }
            match (userids, tags) {
                (Some(_), Some(_)) => return Err(invalid("give aud_userid or aud_tag, not both")),
                (Some(u), None) => Audience::Userids(u),
                (None, Some(t)) => Audience::Tags(t),
                (None, None) if !raw.is_empty() => {
                    for r in &raw {
                        if !contents.iter().any(|(t, _)| *t == r.channel_type) {
                            return Err(invalid(format!(
                                "aud_{0} needs the matching msg_{0}",
                                r.channel_type.code()
                            )));
                        }
                    }
                    raw.sort_by_key(|r| r.channel_type);
                    Audience::Raw(raw)
                }
                (None, None) => {
                    return Err(invalid(
                        "no audience: give aud_userid, aud_tag or aud_<type> (or use /v1/broadcast)",
                    ));
                }
            }
        }
    };
    let mut req = SendRequest {
        audience,
        contents,
        sendno: None,
        priority: None,
        ttl_seconds: None,
        spread_seconds: None,
        rule_id,
        params: Map::new(),
        callback,
        send_at: None,
        black_id: None,
        white_id: None,
    };
    if let Some(option) = option {
        parse_option(option, &mut req)?;
    }
    Ok(req)
}

fn channel_type(code: &str, field: &str) -> Result<ChannelType, JumsError> {
    ChannelType::from_code(code)
        .ok_or_else(|| invalid(format!("unknown field {field:?}: no channel type {code:?}")))
}

fn parse_userids(v: &Value) -> Result<Vec<String>, JumsError> {
    if let Some(arr) = v.as_array()
        && arr.len() > MAX_USERIDS
    {
        return Err(JumsError::new(
            jums::TOO_MANY_USERIDS,
            format!(
                "aud_userid has {} userids; at most {MAX_USERIDS} per request",
                arr.len()
            ),
        ));
    }
    let ids = dedup(string_list(v, "aud_userid", 64)?);
    if ids.is_empty() {
        return Err(invalid("aud_userid is empty"));
    }
    Ok(ids)
}

fn parse_tags(v: &Value) -> Result<Vec<String>, JumsError> {
    let tags = dedup(string_list(v, "aud_tag", 40)?);
    if tags.is_empty() {
        return Err(invalid("aud_tag is empty"));
    }
    if tags.len() > MAX_TAGS {
        return Err(invalid(format!(
            "aud_tag has {} tags; at most {MAX_TAGS}",
            tags.len()
        )));
    }
    Ok(tags)
}

fn parse_raw(v: &Value, field: &str) -> Result<Vec<String>, JumsError> {
    let items = v.as_array().ok_or_else(|| {
        invalid(format!(
            "{field} must be an array of {{\"instance\",\"data\"}} objects"
        ))
    })?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let o = item.as_object().ok_or_else(|| {
            invalid(format!(
                "{field}[{i}] must be an object, got {}",
                kind_of(item)
            ))
        })?;
        for k in o.keys() {
            if k != "instance" && k != "data" {
                return Err(invalid(format!("{field}[{i}]: unknown field {k:?}")));
            }
        }
        if let Some(inst) = o.get("instance")
            && !inst.is_string()
        {
            return Err(invalid(format!("{field}[{i}].instance must be a string")));
        }
        let data = o
            .get("data")
            .ok_or_else(|| invalid(format!("{field}[{i}].data is required")))?;
        out.extend(string_list(data, &format!("{field}[{i}].data"), 256)?);
    }
    let out = dedup(out);
    if out.is_empty() {
        return Err(invalid(format!("{field} has no addresses")));
    }
    if out.len() > MAX_RAW_PER_TYPE {
        return Err(invalid(format!(
            "{field} has {} addresses; at most {MAX_RAW_PER_TYPE} per channel type",
            out.len()
        )));
    }
    Ok(out)
}

fn parse_rule(v: &Value) -> Result<Option<i64>, JumsError> {
    match v.as_i64() {
        Some(0) => Ok(None),
        Some(id) if id > 0 => Ok(Some(id)),
        Some(id) => Err(JumsError::new(
            jums::INVALID_RULE,
            format!("rule_id {id} does not exist"),
        )),
        None if v.is_null() => Ok(None),
        None => Err(invalid(format!(
            "rule_id must be an integer, got {}",
            kind_of(v)
        ))),
    }
}

fn parse_content(t: ChannelType, v: &Value, field: &str) -> Result<Value, JumsError> {
    let item = match v {
        Value::Array(items) if items.len() == 1 => &items[0],
        Value::Array(items) if items.is_empty() => {
            return Err(invalid(format!("{field} is empty")));
        }
        Value::Array(_) => {
            return Err(invalid(format!(
                "{field}: only one content item per channel type is supported"
            )));
        }
        Value::Object(_) => v,
        other => {
            return Err(invalid(format!(
                "{field} must be an array with one object, got {}",
                kind_of(other)
            )));
        }
    };
    let o = item.as_object().ok_or_else(|| {
        invalid(format!(
            "{field}[0] must be an object, got {}",
            kind_of(item)
        ))
    })?;
    match t {
        ChannelType::App => check_app(o, field)?,
        ChannelType::Sms if !o.contains_key("temp_id") && !o.contains_key("content") => {
            return Err(invalid(format!(
                "{field}[0] needs temp_id (template) or content"
            )));
        }
        ChannelType::Email => {
            for k in ["subject", "text"] {
                match o.get(k) {
                    Some(Value::String(s)) if !s.is_empty() => {}
                    _ => {
                        return Err(invalid(format!(
                            "{field}[0].{k} is required and must be a non-empty string"
                        )));
                    }
                }
            }
        }
        // What the adapter of the type would certainly refuse (nothing for webhooks).
        _ => msghub_providers::check_content(t, item).map_err(invalid)?,
    }
    Ok(item.clone())
}

fn check_app(o: &Map<String, Value>, field: &str) -> Result<(), JumsError> {
    const PLATFORMS: [&str; 4] = ["android", "ios", "quickapp", "hmos"];
    match o.get("platform") {
        None => {
            return Err(JumsError::new(
                jums::APP_PLATFORM_MISSING,
                format!("{field}[0].platform is required"),
            ));
        }
        Some(Value::String(s)) if s == "all" || PLATFORMS.contains(&s.as_str()) => {}
        Some(Value::Array(a))
            if !a.is_empty()
                && a.iter()
                    .all(|p| p.as_str().is_some_and(|p| PLATFORMS.contains(&p))) => {}
        Some(_) => {
            return Err(JumsError::new(
                jums::APP_PLATFORM_INVALID,
                format!(
                    "{field}[0].platform must be \"all\" or a list of android, ios, quickapp, hmos"
                ),
            ));
        }
    }
    if !o.contains_key("notification") && !o.contains_key("message") {
        return Err(invalid(format!("{field}[0] needs notification or message")));
    }
    for k in ["audience", "callback"] {
        if o.contains_key(k) {
            return Err(invalid(format!(
                "{field}[0].{k} is not allowed; the audience comes from aud_*"
            )));
        }
    }
    Ok(())
}

fn parse_option(v: &Value, req: &mut SendRequest) -> Result<(), JumsError> {
    let o = v
        .as_object()
        .ok_or_else(|| invalid(format!("option must be an object, got {}", kind_of(v))))?;
    for (k, value) in o {
        match k.as_str() {
            "sendno" => {
                let s = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    other => {
                        return Err(invalid(format!(
                            "option.sendno must be a string, got {}",
                            kind_of(other)
                        )));
                    }
                };
                if s.len() > 128 {
                    return Err(invalid("option.sendno is longer than 128 bytes"));
                }
                if s.chars().any(char::is_control) {
                    return Err(invalid("option.sendno contains control characters"));
                }
                req.sendno = Some(s);
            }
            "owner" => {
                if !value.is_string() {
                    return Err(invalid("option.owner must be a string"));
                }
            }
            "priority" => match value.as_u64() {
                Some(p @ 1..=3) => req.priority = u8::try_from(p).ok(),
                _ => {
                    return Err(invalid(
                        "option.priority must be 1 (high), 2 (medium) or 3 (low)",
                    ));
                }
            },
            "spread_seconds" => match value.as_u64() {
                Some(t) if (1..=MAX_SPREAD_SECONDS).contains(&t) => {
                    req.spread_seconds = u32::try_from(t).ok();
                }
                _ => {
                    return Err(invalid(format!(
                        "option.spread_seconds must be an integer from 1 to {MAX_SPREAD_SECONDS}"
                    )));
                }
            },
            "ttl_seconds" => match value.as_u64() {
                Some(t) if t <= MAX_TTL_SECONDS => req.ttl_seconds = u32::try_from(t).ok(),
                _ => {
                    return Err(invalid(format!(
                        "option.ttl_seconds must be an integer from 0 to {MAX_TTL_SECONDS}"
                    )));
                }
            },
            "params" => {
                let params = value.as_object().ok_or_else(|| {
                    invalid(format!(
                        "option.params must be an object, got {}",
                        kind_of(value)
                    ))
                })?;
                if value.to_string().len() > MAX_PARAMS_BYTES {
                    return Err(invalid(format!(
                        "option.params is larger than {MAX_PARAMS_BYTES} bytes"
                    )));
                }
                req.params = params.clone();
            }
            "black_id" => req.black_id = Some(list_id(value, k)?),
            "white_id" => req.white_id = Some(list_id(value, k)?),
            "send_at" => {
                req.send_at = super::schedule::parse_send_at(value, "option.send_at", now_ms())
                    .map_err(invalid)?;
            }
            other => return Err(invalid(format!("option: unknown field {other:?}"))),
        }
    }
    super::filters::check_one_list(req.black_id, req.white_id)
}

/// A list id: a positive integer (a numeric string is taken too).
fn list_id(v: &Value, field: &str) -> Result<i64, JumsError> {
    let id = match v {
        Value::String(s) => s.trim().parse().ok(),
        other => other.as_i64(),
    };
    id.filter(|id| *id > 0).ok_or_else(|| {
        invalid(format!(
            "option.{field} must be a list id (a positive integer)"
        ))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app() -> Value {
        json!([{"platform": "all", "notification": {"alert": "hi"}}])
    }

    #[test]
    fn a_userid_send_parses_into_a_realtime_request() {
        let r = parse(
            &json!({"aud_userid": ["u1", "u2", "u1"], "msg_app": app(), "option": {"sendno": 7}}),
            SendKind::Targeted,
        )
        .unwrap();
        assert_eq!(
            r.audience,
            Audience::Userids(vec!["u1".into(), "u2".into()])
        );
        assert_eq!(r.sendno.as_deref(), Some("7"));
        assert_eq!(r.lane(), Lane::Realtime);
    }

    #[test]
    fn tag_sends_are_bulk_unless_priority_one() {
        let r = parse(
            &json!({"aud_tag": ["t"], "msg_app": app()}),
            SendKind::Targeted,
        )
        .unwrap();
        assert_eq!(r.lane(), Lane::Bulk);
        let r = parse(
            &json!({"aud_tag": ["t"], "msg_app": app(), "option": {"priority": 1}}),
            SendKind::Targeted,
        )
        .unwrap();
        assert_eq!(r.lane(), Lane::Realtime);
    }

    #[test]
    fn control_characters_in_audiences_and_sendno_are_refused() {
        let e = parse(
            &json!({"aud_userid": ["u\u{0}"], "msg_app": app()}),
            SendKind::Targeted,
        )
        .unwrap_err();
        assert!(e.message.contains("control characters"), "{}", e.message);
        let e = parse(
            &json!({"aud_tag": ["t\u{7}"], "msg_app": app()}),
            SendKind::Targeted,
        )
        .unwrap_err();
        assert!(e.message.contains("control characters"));
        let e = parse(
            &json!({"aud_userid": ["u"], "msg_app": app(), "option": {"sendno": "a\u{0}"}}),
            SendKind::Targeted,
        )
        .unwrap_err();
        assert!(e.message.contains("control characters"));
    }

    #[test]
    fn over_limit_userids_get_the_jums_code() {
        let ids: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
        let e = parse(
            &json!({"aud_userid": ids, "msg_app": app()}),
            SendKind::Targeted,
        )
        .unwrap_err();
        assert_eq!(e.code, jums::TOO_MANY_USERIDS);
    }

    #[test]
    fn wrong_types_and_unknown_fields_are_named_in_the_message() {
        let e = parse(
            &json!({"aud_userid": "u1", "msg_app": app()}),
            SendKind::Targeted,
        )
        .unwrap_err();
        assert!(
            e.message.contains("aud_userid must be an array"),
            "{}",
            e.message
        );
        let e = parse(
            &json!({"aud_userid": ["u1"], "msg_app": app(), "colour": 1}),
            SendKind::Targeted,
        )
        .unwrap_err();
        assert!(e.message.contains("colour"));
        let e = parse(
            &json!({"aud_userid": ["u1"], "msg_pigeon": [{}]}),
            SendKind::Targeted,
        )
        .unwrap_err();
        assert!(e.message.contains("pigeon"));
    }

    #[test]
    fn raw_addresses_need_their_content_and_cannot_mix_with_users() {
        let e = parse(
            &json!({"aud_sms": [{"data": ["13800000000"]}], "msg_app": app()}),
            SendKind::Targeted,
        )
        .unwrap_err();
        assert!(e.message.contains("msg_sms"));
        let e = parse(
            &json!({"aud_userid": ["u"], "aud_app": [{"data": ["r"]}], "msg_app": app()}),
            SendKind::Targeted,
        )
        .unwrap_err();
        assert!(e.message.contains("mixed"));
    }

    #[test]
    fn app_content_needs_a_valid_platform() {
        let e = parse(
            &json!({"aud_userid": ["u"], "msg_app": [{"notification": {}}]}),
            SendKind::Targeted,
        )
        .unwrap_err();
        assert_eq!(e.code, jums::APP_PLATFORM_MISSING);
        let e = parse(
            &json!({"aud_userid": ["u"], "msg_app": [{"platform": "symbian", "notification": {}}]}),
            SendKind::Targeted,
        )
        .unwrap_err();
        assert_eq!(e.code, jums::APP_PLATFORM_INVALID);
    }

    #[test]
    fn broadcasts_take_no_audience_and_rule_ids_must_be_positive() {
        assert!(
            parse(
                &json!({"aud_userid": ["u"], "msg_app": app()}),
                SendKind::Broadcast
            )
            .is_err()
        );
        assert_eq!(
            parse(&json!({"msg_app": app()}), SendKind::Broadcast)
                .unwrap()
                .audience,
            Audience::All
        );
        let e = parse(
            &json!({"msg_app": app(), "rule_id": -9}),
            SendKind::Broadcast,
        )
        .unwrap_err();
        assert_eq!(e.code, jums::INVALID_RULE);
        let ok = parse(
            &json!({"msg_app": app(), "rule_id": 9, "option": {"params": {"amount": 3}}}),
            SendKind::Broadcast,
        )
        .unwrap();
        assert_eq!(ok.rule_id, Some(9));
        assert_eq!(ok.params["amount"], json!(3));
        let e = parse(
            &json!({"msg_app": app(), "option": {"params": [1]}}),
            SendKind::Broadcast,
        )
        .unwrap_err();
        assert!(e.message.contains("option.params"), "{}", e.message);
    }

    #[test]
    fn send_at_schedules_future_times_and_sends_past_ones_at_once() {
        let at = |ms: i64| crate::domain::schedule::rfc3339(now_ms() + ms);
        let r = parse(
            &json!({"aud_userid": ["u"], "msg_app": app(), "option": {"send_at": at(3_600_000)}}),
            SendKind::Targeted,
        )
        .unwrap();
        assert!(r.send_at.is_some_and(|t| t > now_ms()));
        let r = parse(
            &json!({"aud_userid": ["u"], "msg_app": app(), "option": {"send_at": at(-60_000)}}),
            SendKind::Targeted,
        )
        .unwrap();
        assert_eq!(r.send_at, None);
        let e = parse(
            &json!({"aud_userid": ["u"], "msg_app": app(), "option": {"send_at": "soon"}}),
            SendKind::Targeted,
        )
        .unwrap_err();
        assert_eq!(e.code, jums::INVALID_PARAMETER);
        assert!(e.message.contains("option.send_at"), "{}", e.message);
    }

    #[test]
    fn a_send_names_one_list_at_most() {
        let ok = parse(
            &json!({"aud_userid": ["u"], "msg_app": app(), "option": {"black_id": 3}}),
            SendKind::Targeted,
        )
        .unwrap();
        assert_eq!((ok.black_id, ok.white_id), (Some(3), None));
        let e = parse(
            &json!({"aud_userid": ["u"], "msg_app": app(), "option": {"black_id": 3, "white_id": 4}}),
            SendKind::Targeted,
        )
        .unwrap_err();
        assert_eq!(e.code, jums::BLACK_AND_WHITE_LIST);
        let e = parse(
            &json!({"aud_userid": ["u"], "msg_app": app(), "option": {"white_id": -1}}),
            SendKind::Targeted,
        )
        .unwrap_err();
        assert!(e.message.contains("option.white_id"), "{}", e.message);
    }
}
