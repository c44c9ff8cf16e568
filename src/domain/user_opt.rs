//! The JUMS user operations body (`/v1/user/opt`): per-user add / set / del of tags and
//! bindings. Invalid items are reported one by one; valid ones are applied.

use msghub_actors::provider::ChannelType;
use serde::Serialize;
use serde_json::Value;

use super::kind_of;
use crate::storage::users::{OpKind, UserOp};

pub const MAX_USERS_PER_CALL: usize = 1000;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ItemError {
    pub userid: String,
    pub errcode: i64,
    pub errmsg: String,
}

/// The binding keys JUMS uses in user operations, and the channel type each one binds.
fn binding_type(key: &str) -> Option<ChannelType> {
    Some(match key {
        "phone" | "sms" => ChannelType::Sms,
        "email" => ChannelType::Email,
        "app" => ChannelType::App,
        "wechatoa" => ChannelType::Wechatoa,
        "wechatmp" => ChannelType::Wechatmp,
        "alipaylife" | "alipay_life" => ChannelType::AlipayLife,
        "dingtalkcc" | "dingtalk_cc" => ChannelType::DingtalkCc,
        "wechatwk" => ChannelType::Wechatwk,
        "feishu" => ChannelType::Feishu,
        "webhook" => ChannelType::Webhook,
        _ => return None,
    })
}

/// The longest bind key (`{"app": {"<bind key>": [...]}}`) a binding keeps.
const MAX_BIND_KEY_BYTES: usize = 64;

fn valid_bind_key(k: &str) -> bool {
    super::plain_text(k, MAX_BIND_KEY_BYTES)
}

pub fn valid_userid(u: &str) -> bool {
    super::plain_text(u, 64)
}

/// Tag characters as JPush allows them: letters (CJK included), digits and `_@!#$&*+=.|￥`.
pub fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 40
        && t.chars()
            .all(|c| c.is_alphanumeric() || "_@!#$&*+=.|￥-".contains(c))
}

fn valid_address(t: ChannelType, a: &str) -> Result<(), String> {
    if !super::plain_text(a, 256) {
        return Err("address must be 1 to 256 bytes, not blank, without control characters".into());
    }
    match t {
        ChannelType::Sms => {
            let digits = a.strip_prefix('+').unwrap_or(a);
            if digits.len() < 5 || digits.len() > 20 || !digits.chars().all(|c| c.is_ascii_digit())
            {
                return Err(format!("{a:?} is not a phone number"));
            }
        }
        ChannelType::Email => {
            let ok = a
                .split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'));
            if !ok {
                return Err("not an email address".into());
            }
        }
        _ => {}
    }
    Ok(())
}

/// `"x"`, `["x","y"]` or `{"<bind key>": "x" | ["x"]}` → (bind key, values) pairs.
fn bound_values(v: &Value, field: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    fn strings(v: &Value, field: &str) -> Result<Vec<String>, String> {
        match v {
            Value::String(s) => Ok(vec![s.clone()]),
            Value::Array(a) => a
                .iter()
                .map(|x| {
                    x.as_str().map(str::to_string).ok_or_else(|| {
                        format!("{field}: values must be strings, got {}", kind_of(x))
                    })
                })
                .collect(),
            other => Err(format!(
                "{field}: expected a string or an array of strings, got {}",
                kind_of(other)
            )),
        }
    }
    match v {
        Value::Object(o) => o
            .iter()
            .map(|(bind, inner)| Ok((bind.clone(), strings(inner, field)?)))
            .collect(),
        other => Ok(vec![("all".to_string(), strings(other, field)?)]),
    }
}

fn parse_item(item: &Value) -> Result<UserOp, (String, String)> {
    let o = item.as_object().ok_or_else(|| {
        (
            String::new(),
            format!("each item must be an object, got {}", kind_of(item)),
        )
    })?;
    let userid = match o.get("userid") {
        Some(Value::String(u)) if valid_userid(u) => u.clone(),
        Some(Value::String(u)) => {
            return Err((
                u.clone(),
                "userid must be 1 to 64 printable characters".into(),
            ));
        }
        _ => {
            return Err((
                String::new(),
                "userid is required and must be a string".into(),
            ));
        }
    };
    let fail = |m: String| (userid.clone(), m);
    let mut op: Option<(OpKind, &Value)> = None;
    for (k, v) in o {
        let kind = match k.as_str() {
            "userid" => continue,
            "add" => OpKind::Add,
            "set" => OpKind::Set,
            "del" => OpKind::Del,
            other => return Err(fail(format!("unknown field {other:?}"))),
        };
        if op.is_some() {
            return Err(fail("give exactly one of add, set, del per item".into()));
        }
        op = Some((kind, v));
    }
    let (kind, body) = op.ok_or_else(|| fail("one of add, set, del is required".into()))?;
    let body = body.as_object().ok_or_else(|| {
        fail(format!(
            "the operation must be an object, got {}",
            kind_of(body)
        ))
    })?;
    let mut result = UserOp {
        userid: userid.clone(),
        kind,
        tags: None,
        bindings: Vec::new(),
    };
    for (k, v) in body {
        if k == "tag" {
            let mut tags = Vec::new();
            for (_, values) in bound_values(v, "tag").map_err(fail)? {
                for t in values {
                    if !valid_tag(&t) {
                        return Err(fail(format!(
                            "tag {t:?} is invalid (1-40 bytes of letters, digits, _@!#$&*+=.|￥)"
                        )));
                    }
                    tags.push(t);
                }
            }
            result.tags = Some(tags);
            continue;
        }
        let t = binding_type(k).ok_or_else(|| fail(format!("unknown binding {k:?}")))?;
        for (bind, values) in bound_values(v, k).map_err(fail)? {
            if !valid_bind_key(&bind) {
                return Err(fail(format!(
                    "{k}: bind key {bind:?} must be 1 to {MAX_BIND_KEY_BYTES} bytes without control characters"
                )));
            }
            for a in &values {
                valid_address(t, a).map_err(|m| fail(format!("{k}: {m}")))?;
            }
            result.bindings.push((t, bind, values));
        }
    }
    Ok(result)
}

/// Parse the whole body: the valid operations and the per-item errors.
pub fn parse(body: &Value) -> Result<(Vec<UserOp>, Vec<ItemError>), String> {
    let items = body.as_array().ok_or_else(|| {
        format!(
            "request body must be an array of user operations, got {}",
            kind_of(body)
        )
    })?;
    if items.is_empty() {
        return Err("no user operations given".into());
    }
    if items.len() > MAX_USERS_PER_CALL {
        return Err(format!(
            "{} operations given; at most {MAX_USERS_PER_CALL} per call",
            items.len()
        ));
    }
    let mut ops = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for item in items {
        match parse_item(item) {
            Ok(op) => ops.push(op),
            Err((userid, errmsg)) => errors.push(ItemError {
                userid,
                errcode: crate::error::jums::INVALID_PARAMETER,
                errmsg,
            }),
        }
    }
    Ok((ops, errors))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jums_shaped_operations_parse_with_their_bind_keys() {
        let (ops, errs) = parse(&json!([
            {"userid": "u1", "add": {"tag": {"all": ["vip", "2020级"]}, "phone": {"all": "13800000001"}, "app": {"ch1": ["reg1", "reg2"]}}},
            {"userid": "u2", "set": {"tag": ["a"], "email": "a@b.cn"}}
        ]))
        .unwrap();
        assert!(errs.is_empty());
        assert_eq!(
            ops[0].tags,
            Some(vec!["vip".to_string(), "2020级".to_string()])
        );
        assert!(ops[0].bindings.contains(&(
            ChannelType::App,
            "ch1".to_string(),
            vec!["reg1".to_string(), "reg2".to_string()]
        )));
        assert!(ops[0].bindings.contains(&(
            ChannelType::Sms,
            "all".to_string(),
            vec!["13800000001".to_string()]
        )));
        assert_eq!(ops[1].kind, OpKind::Set);
    }

    #[test]
    fn bad_items_are_reported_and_good_ones_kept() {
        let (ops, errs) = parse(&json!([
            {"userid": "u1", "add": {"phone": "not-a-phone"}},
            {"userid": "u2", "add": {"tag": ["ok"]}},
            {"add": {}},
            {"userid": "u3", "add": {"tag": ["has space"]}}
        ]))
        .unwrap();
        assert_eq!(ops.len(), 1);
        assert_eq!(errs.len(), 3);
        assert_eq!(errs[0].userid, "u1");
    }

    #[test]
    fn bind_keys_and_addresses_storage_cannot_hold_are_reported() {
        let long_key = "k".repeat(65);
        let (ops, errs) = parse(&json!([
            {"userid": "u1", "add": {"app": {long_key.clone(): ["r1"]}}},
            {"userid": "u2", "add": {"app": {"ch\u{0}": ["r1"]}}},
            {"userid": "u3", "add": {"app": ["r\u{0}"]}},
            {"userid": "u4", "add": {"webhook": ["   "]}},
            {"userid": "u5", "add": {"app": {"k".repeat(64): ["r1"]}}}
        ]))
        .unwrap();
        let refused: Vec<(&str, bool)> = errs
            .iter()
            .map(|e| (e.userid.as_str(), e.errmsg.contains("bind key")))
            .collect();
        assert_eq!(
            refused,
            [("u1", true), ("u2", true), ("u3", false), ("u4", false)]
        );
        assert_eq!(ops.len(), 1, "a 64-byte key is kept");
        assert_eq!(ops[0].userid, "u5");
    }

    #[test]
    fn the_whole_body_must_be_a_bounded_array() {
        assert!(parse(&json!({"userid": "u"})).is_err());
        let many: Vec<Value> = (0..1001)
            .map(|i| json!({"userid": format!("u{i}"), "add": {}}))
            .collect();
        assert!(parse(&Value::Array(many)).is_err());
    }
}
