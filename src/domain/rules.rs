//! Sending rules (`/api/rules`, referenced by `rule_id`): fallback chains and content routing.
//!
//! A rule is stored data, never code. Routing conditions use a small operator set over the
//! message's parameters (`option.params`):
//!
//! | op | holds when the parameter … |
//! |---|---|
//! | `eq`, `ne` | equals / differs from `value` (numbers compare numerically) |
//! | `lt`, `le`, `gt`, `ge` | is a number (or numeric string) below / above `value` |
//! | `in`, `not_in` | is / is not one of the array `value` |
//! | `contains` | is a string containing the string `value` |
//! | `exists`, `missing` | is present / absent (no `value`) |
//!
//! A route's `when` is a list of conditions that must all hold; the first route that holds
//! chooses the channels, and `default` applies when none does.

use msghub_actors::plan::{Audience, FallbackStep, StepCondition, Strategy};
use msghub_actors::provider::ChannelType;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::kind_of;

pub const MAX_STEPS: usize = 10;
pub const MAX_ROUTES: usize = 50;
pub const MAX_CONDITIONS: usize = 20;
/// A fallback wait of at most a week.
pub const MAX_WAIT_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

/// A stored rule's definition.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RuleDef {
    Fallback {
        steps: Vec<FallbackStep>,
    },
    Routing {
        routes: Vec<Route>,
        default: Vec<ChannelType>,
    },
}

impl RuleDef {
    pub fn kind(&self) -> &'static str {
        match self {
            RuleDef::Fallback { .. } => "fallback",
            RuleDef::Routing { .. } => "routing",
        }
    }

    /// The definition as the API shows it (waits in seconds).
    pub fn to_json(&self) -> Value {
        match self {
            RuleDef::Fallback { steps } => json!({
                "type": "fallback",
                "steps": steps.iter().enumerate().map(|(i, s)| {
                    let mut o = json!({"channel": s.channel_type.code()});
                    if i + 1 < steps.len() {
                        o["wait_seconds"] = json!(s.wait_ms as f64 / 1000.0);
                        o["condition"] = json!(s.condition.as_str());
                    }
                    o
                }).collect::<Vec<_>>(),
            }),
            RuleDef::Routing { routes, default } => json!({
                "type": "routing",
                "routes": routes.iter().map(|r| json!({
                    "when": r.when.iter().map(Condition::to_json).collect::<Vec<_>>(),
                    "channels": r.channels.iter().map(|c| c.code()).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "default": default.iter().map(|c| c.code()).collect::<Vec<_>>(),
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    pub when: Vec<Condition>,
    pub channels: Vec<ChannelType>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Condition {
    pub param: String,
    pub op: Op,
    pub value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    Contains,
    Exists,
    Missing,
}

impl Op {
    const ALL: [(&'static str, Op); 11] = [
        ("eq", Op::Eq),
        ("ne", Op::Ne),
        ("lt", Op::Lt),
        ("le", Op::Le),
        ("gt", Op::Gt),
        ("ge", Op::Ge),
        ("in", Op::In),
        ("not_in", Op::NotIn),
        ("contains", Op::Contains),
        ("exists", Op::Exists),
        ("missing", Op::Missing),
    ];

    fn parse(s: &str) -> Option<Op> {
        Op::ALL.iter().find(|(n, _)| *n == s).map(|(_, op)| *op)
    }

    fn name(self) -> &'static str {
        Op::ALL
            .iter()
            .find(|(_, op)| *op == self)
            .map(|(n, _)| *n)
            .unwrap_or("eq")
    }
}

impl Condition {
    fn to_json(&self) -> Value {
        let mut o = json!({"param": self.param, "op": self.op.name()});
        if !matches!(self.op, Op::Exists | Op::Missing) {
            o["value"] = self.value.clone();
        }
        o
    }

    /// Whether the condition holds for the message parameters. A parameter of the wrong kind
    /// for the operator (a word compared with `lt`) makes the condition false, never an error.
    pub fn holds(&self, params: &Map<String, Value>) -> bool {
        let p = params.get(&self.param).filter(|v| !v.is_null());
        match self.op {
            Op::Exists => p.is_some(),
            Op::Missing => p.is_none(),
            Op::Eq => p.is_some_and(|p| same(p, &self.value)),
            Op::Ne => !p.is_some_and(|p| same(p, &self.value)),
            Op::Lt | Op::Le | Op::Gt | Op::Ge => {
                let (Some(a), Some(b)) = (p.and_then(number), number(&self.value)) else {
                    return false;
                };
                match self.op {
                    Op::Lt => a < b,
                    Op::Le => a <= b,
                    Op::Gt => a > b,
                    _ => a >= b,
                }
            }
            Op::In | Op::NotIn => {
                let found = p.is_some_and(|p| {
                    self.value
                        .as_array()
                        .is_some_and(|vs| vs.iter().any(|v| same(p, v)))
                });
                found == (self.op == Op::In)
            }
            Op::Contains => match (p.and_then(Value::as_str), self.value.as_str()) {
                (Some(a), Some(b)) => a.contains(b),
                _ => false,
            },
        }
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (number(a), number(b)) {
        (Some(x), Some(y)) if !(a.is_string() && b.is_string()) => x == y,
        _ => a == b,
    }
}

impl RuleDef {
    /// The channel types a routing rule chooses for these parameters.
    pub fn route(&self, params: &Map<String, Value>) -> Option<&[ChannelType]> {
        match self {
            RuleDef::Routing { routes, default } => Some(
                routes
                    .iter()
                    .find(|r| r.when.iter().all(|c| c.holds(params)))
                    .map_or(default.as_slice(), |r| r.channels.as_slice()),
            ),
            RuleDef::Fallback { .. } => None,
        }
    }
}

/// Apply a stored rule to a send's contents: a routing rule keeps only the channels it
/// chooses for the parameters; a fallback rule turns the contents into its chain. Raw-address
/// audiences ignore rules, as in JUMS. The error is the reason for JUMS code 1015026.
pub fn apply(
    rule_id: i64,
    def: &RuleDef,
    contents: &mut Vec<(ChannelType, Value)>,
    audience: &Audience,
    params: &Map<String, Value>,
) -> Result<Strategy, String> {
    if matches!(audience, Audience::Raw(_)) {
        return Ok(Strategy::Concurrent);
    }
    let has =
        |contents: &[(ChannelType, Value)], t: ChannelType| contents.iter().any(|(c, _)| *c == t);
    match def {
        RuleDef::Routing { .. } => {
            let chosen = def.route(params).unwrap_or_default();
            if chosen.is_empty() {
                return Err(format!(
                    "rule {rule_id} chooses no channel for these option.params and has no default"
                ));
            }
            if let Some(t) = chosen.iter().find(|t| !has(contents, **t)) {
                return Err(format!(
                    "rule {rule_id} routes this message to {t}, but it has no msg_{t}"
                ));
            }
            contents.retain(|(t, _)| chosen.contains(t));
            Ok(Strategy::Concurrent)
        }
        RuleDef::Fallback { steps } => {
            if let Some(s) = steps.iter().find(|s| !has(contents, s.channel_type)) {
                return Err(format!(
                    "rule {rule_id} has a {0} step, but the message has no msg_{0}",
                    s.channel_type
                ));
            }
            if let Some((t, _)) = contents
                .iter()
                .find(|(t, _)| !steps.iter().any(|s| s.channel_type == *t))
            {
                return Err(format!(
                    "msg_{t} is not a step of fallback rule {rule_id}; remove it or add the step"
                ));
            }
            Ok(Strategy::Fallback {
                rule_id,
                steps: steps.clone(),
            })
        }
    }
}

fn channel(v: &Value, field: &str) -> Result<ChannelType, String> {
    let code = v
        .as_str()
        .ok_or_else(|| format!("{field} must be a channel type string, got {}", kind_of(v)))?;
    ChannelType::from_code(code).ok_or_else(|| format!("{field}: unknown channel type {code:?}"))
}

fn object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| format!("{field} must be an object, got {}", kind_of(v)))
}

fn check_fields(o: &Map<String, Value>, allowed: &[&str], field: &str) -> Result<(), String> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("{field}: unknown field {k:?}")),
        None => Ok(()),
    }
}

fn channel_list(v: &Value, field: &str) -> Result<Vec<ChannelType>, String> {
    let items = v
        .as_array()
        .ok_or_else(|| format!("{field} must be an array of channel types"))?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let t = channel(item, &format!("{field}[{i}]"))?;
        if out.contains(&t) {
            return Err(format!("{field} names {t} twice"));
        }
        out.push(t);
    }
    Ok(out)
}

/// A rule as stored. Earlier builds stored a fallback wait that rounded to 0 ms (given
/// as, say, 0.0004 s) as `0`, which [`parse`] refuses: such a wait is read as the shortest one,
/// 1 ms, so the rule (and every send naming it) stays usable.
pub fn parse_stored(v: &Value) -> Result<RuleDef, String> {
    let mut v = v.clone();
    if let Some(steps) = v.get_mut("steps").and_then(Value::as_array_mut) {
        for step in steps {
            if let Some(wait) = step.get_mut("wait_seconds")
                && wait.as_f64().is_some_and(|w| (0.0..0.0005).contains(&w))
            {
                *wait = json!(0.001);
            }
        }
    }
    parse(&v)
}

/// Validate a rule definition (`{"type": "fallback", "steps": [...]}` or
/// `{"type": "routing", "routes": [...], "default": [...]}`), with a reason on refusal.
pub fn parse(v: &Value) -> Result<RuleDef, String> {
    let o = object(v, "rule")?;
    let kind = o
        .get("type")
        .and_then(Value::as_str)
        .ok_or("rule.type must be \"fallback\" or \"routing\"")?;
    match kind {
        "fallback" => {
            check_fields(o, &["type", "steps"], "rule")?;
            let steps = o
                .get("steps")
                .and_then(Value::as_array)
                .ok_or("rule.steps must be an array of steps")?;
            if steps.len() < 2 || steps.len() > MAX_STEPS {
                return Err(format!(
                    "a fallback rule has 2 to {MAX_STEPS} steps, got {}",
                    steps.len()
                ));
            }
            let mut out: Vec<FallbackStep> = Vec::with_capacity(steps.len());
            for (i, step) in steps.iter().enumerate() {
                let field = format!("steps[{i}]");
                let s = object(step, &field)?;
                check_fields(s, &["channel", "wait_seconds", "condition"], &field)?;
                let channel_type = channel(
                    s.get("channel").unwrap_or(&Value::Null),
                    &format!("{field}.channel"),
                )?;
                if out.iter().any(|p| p.channel_type == channel_type) {
                    return Err(format!(
                        "{field}: {channel_type} is already an earlier step"
                    ));
                }
                let last = i + 1 == steps.len();
                let (wait_ms, condition) = if last {
                    if s.contains_key("wait_seconds") || s.contains_key("condition") {
                        return Err(format!(
                            "{field} is the last step: it takes no wait_seconds or condition"
                        ));
                    }
                    (0, StepCondition::NotDelivered)
                } else {
                    // Waits are kept in whole milliseconds: one that rounds to none would be
                    // stored as 0, which this very check refuses when the rule is read back.
                    let wait_ms = s
                        .get("wait_seconds")
                        .and_then(Value::as_f64)
                        .filter(|w| *w <= MAX_WAIT_SECONDS)
                        .map(|w| (w * 1000.0).round())
                        .filter(|ms| *ms >= 1.0)
                        .ok_or_else(|| {
                            format!("{field}.wait_seconds must be a number of seconds that is at least 1 ms once rounded to whole milliseconds, and at most {MAX_WAIT_SECONDS}")
                        })?;
                    let condition = match s.get("condition").and_then(Value::as_str) {
                        Some("not_delivered") => StepCondition::NotDelivered,
                        Some("not_clicked") => StepCondition::NotClicked,
                        _ => {
                            return Err(format!(
                                "{field}.condition must be \"not_delivered\" or \"not_clicked\""
                            ));
                        }
                    };
                    (wait_ms as u64, condition)
                };
                out.push(FallbackStep {
                    channel_type,
                    wait_ms,
                    condition,
                });
            }
            Ok(RuleDef::Fallback { steps: out })
        }
        "routing" => {
            check_fields(o, &["type", "routes", "default"], "rule")?;
            let routes = o
                .get("routes")
                .and_then(Value::as_array)
                .ok_or("rule.routes must be an array of routes")?;
            if routes.is_empty() || routes.len() > MAX_ROUTES {
                return Err(format!("a routing rule has 1 to {MAX_ROUTES} routes"));
            }
            let mut out = Vec::with_capacity(routes.len());
            for (i, route) in routes.iter().enumerate() {
                let field = format!("routes[{i}]");
                let r = object(route, &field)?;
                check_fields(r, &["when", "channels"], &field)?;
                let when = r
                    .get("when")
                    .and_then(Value::as_array)
                    .ok_or_else(|| format!("{field}.when must be an array of conditions"))?;
                if when.is_empty() || when.len() > MAX_CONDITIONS {
                    return Err(format!("{field}.when has 1 to {MAX_CONDITIONS} conditions"));
                }
                let when = when
                    .iter()
                    .enumerate()
                    .map(|(j, c)| parse_condition(c, &format!("{field}.when[{j}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                let channels = channel_list(
                    r.get("channels").unwrap_or(&Value::Null),
                    &format!("{field}.channels"),
                )?;
                if channels.is_empty() {
                    return Err(format!("{field}.channels names no channel type"));
                }
                out.push(Route { when, channels });
            }
            let default = match o.get("default") {
                None | Some(Value::Null) => Vec::new(),
                Some(v) => channel_list(v, "rule.default")?,
            };
            Ok(RuleDef::Routing {
                routes: out,
                default,
            })
        }
        other => Err(format!(
            "rule.type must be \"fallback\" or \"routing\", got {other:?}"
        )),
    }
}

fn parse_condition(v: &Value, field: &str) -> Result<Condition, String> {
    let c = object(v, field)?;
    check_fields(c, &["param", "op", "value"], field)?;
    let param = c
        .get("param")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty() && p.len() <= 64)
        .ok_or_else(|| format!("{field}.param must be a parameter name of 1 to 64 characters"))?;
    let op_name = c
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{field}.op is required"))?;
    let op = Op::parse(op_name).ok_or_else(|| {
        format!(
            "{field}.op {op_name:?} is not one of {}",
            Op::ALL.map(|(n, _)| n).join(", ")
        )
    })?;
    let value = c.get("value").cloned().unwrap_or(Value::Null);
    let ok = match op {
        Op::Exists | Op::Missing => value.is_null(),
        Op::Lt | Op::Le | Op::Gt | Op::Ge => number(&value).is_some(),
        Op::In | Op::NotIn => value.as_array().is_some_and(|a| !a.is_empty()),
        Op::Contains => value.is_string(),
        Op::Eq | Op::Ne => value.is_string() || value.is_number() || value.is_boolean(),
    };
    if !ok {
        let need = match op {
            Op::Exists | Op::Missing => "no value",
            Op::Lt | Op::Le | Op::Gt | Op::Ge => "a number",
            Op::In | Op::NotIn => "a non-empty array",
            Op::Contains => "a string",
            Op::Eq | Op::Ne => "a string, number or boolean",
        };
        return Err(format!("{field}: op {op_name} takes {need}"));
    }
    Ok(Condition {
        param: param.to_string(),
        op,
        value,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_three_step_chain_parses_and_round_trips() {
        let def = json!({"type": "fallback", "steps": [
            {"channel": "app", "wait_seconds": 300, "condition": "not_delivered"},
            {"channel": "wechatoa", "wait_seconds": 0.5, "condition": "not_clicked"},
            {"channel": "sms"}]});
        let rule = parse(&def).unwrap();
        let RuleDef::Fallback { steps } = &rule else {
            panic!("not a fallback rule")
        };
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[0].wait_ms, 300_000);
        assert_eq!(steps[1].wait_ms, 500);
        assert_eq!(steps[1].condition, StepCondition::NotClicked);
        assert_eq!(parse(&rule.to_json()).unwrap(), rule);
    }

    #[test]
    fn a_rule_stored_with_no_wait_is_read_with_the_shortest() {
        // Stored by a build that let a wait round to 0 ms: readable, with 1 ms.
        let stored = json!({"type": "fallback", "steps": [
            {"channel": "app", "wait_seconds": 0.0, "condition": "not_delivered"},
            {"channel": "sms"}]});
        assert!(parse(&stored).is_err(), "a new rule like it is refused");
        let RuleDef::Fallback { steps } = parse_stored(&stored).unwrap() else {
            panic!("not a fallback rule")
        };
        assert_eq!(steps[0].wait_ms, 1);
        // Anything else is read exactly as `parse` reads it.
        let other = json!({"type": "fallback", "steps": [
            {"channel": "app", "wait_seconds": 2, "condition": "not_clicked"}, {"channel": "sms"}]});
        assert_eq!(parse_stored(&other).unwrap(), parse(&other).unwrap());
        assert!(parse_stored(&json!({"type": "magic"})).is_err());
    }

    #[test]
    fn every_accepted_wait_is_read_back_as_stored() {
        // A rule is stored as `to_json` writes it and parsed again on every read: whatever
        // is accepted must parse from that again, to the same rule.
        for wait in [
            0.001,
            0.0005,
            0.0015,
            0.0049,
            1.2344,
            300.0,
            MAX_WAIT_SECONDS,
        ] {
            let def = json!({"type": "fallback", "steps": [
                {"channel": "app", "wait_seconds": wait, "condition": "not_delivered"},
                {"channel": "sms"}]});
            let rule = parse(&def).unwrap();
            assert_eq!(parse(&rule.to_json()).unwrap(), rule, "{wait}");
        }
    }

    #[test]
    fn invalid_chains_are_refused_with_the_reason() {
        for (def, reason) in [
            (
                json!({"type": "fallback", "steps": [{"channel": "app"}]}),
                "2 to 10 steps",
            ),
            (
                json!({"type": "fallback", "steps": [{"channel": "app", "wait_seconds": 0, "condition": "not_delivered"}, {"channel": "sms"}]}),
                "wait_seconds",
            ),
            (
                json!({"type": "fallback", "steps": [{"channel": "app", "wait_seconds": -1, "condition": "not_delivered"}, {"channel": "sms"}]}),
                "wait_seconds",
            ),
            (
                // Rounds to no wait at all (it would be stored as 0).
                json!({"type": "fallback", "steps": [{"channel": "app", "wait_seconds": 0.0004, "condition": "not_delivered"}, {"channel": "sms"}]}),
                "at least 1 ms",
            ),
            (
                json!({"type": "fallback", "steps": [{"channel": "app", "wait_seconds": 604_801, "condition": "not_delivered"}, {"channel": "sms"}]}),
                "wait_seconds",
            ),
            (
                json!({"type": "fallback", "steps": [{"channel": "app", "wait_seconds": 5, "condition": "late"}, {"channel": "sms"}]}),
                "condition",
            ),
            (
                json!({"type": "fallback", "steps": [{"channel": "app", "wait_seconds": 5, "condition": "not_clicked"}, {"channel": "app"}]}),
                "already an earlier step",
            ),
            (
                json!({"type": "fallback", "steps": [{"channel": "app", "wait_seconds": 5, "condition": "not_clicked"}, {"channel": "sms", "wait_seconds": 3}]}),
                "last step",
            ),
            (
                json!({"type": "fallback", "steps": [{"channel": "fax", "wait_seconds": 5, "condition": "not_clicked"}, {"channel": "sms"}]}),
                "unknown channel type",
            ),
            (json!({"type": "magic"}), "rule.type"),
            (json!([]), "must be an object"),
        ] {
            let e = parse(&def).unwrap_err();
            assert!(e.contains(reason), "{def}: {e}");
        }
    }

    #[test]
    fn routing_sends_small_amounts_one_way_and_the_rest_another() {
        let rule = parse(&json!({"type": "routing",
            "routes": [{"when": [{"param": "amount", "op": "lt", "value": 200}], "channels": ["wechatoa"]}],
            "default": ["sms"]}))
        .unwrap();
        assert_eq!(
            rule.route(&params(json!({"amount": 199.5}))).unwrap(),
            [ChannelType::Wechatoa]
        );
        assert_eq!(
            rule.route(&params(json!({"amount": "150"}))).unwrap(),
            [ChannelType::Wechatoa]
        );
        assert_eq!(
            rule.route(&params(json!({"amount": 200}))).unwrap(),
            [ChannelType::Sms]
        );
        assert_eq!(rule.route(&params(json!({}))).unwrap(), [ChannelType::Sms]);
        assert_eq!(parse(&rule.to_json()).unwrap(), rule);
    }

    #[test]
    fn applying_rules_narrows_or_orders_the_contents() {
        let routing = parse(&json!({"type": "routing",
            "routes": [{"when": [{"param": "amount", "op": "lt", "value": 200}], "channels": ["app"]}],
            "default": ["sms"]}))
        .unwrap();
        let contents = vec![(ChannelType::App, json!({})), (ChannelType::Sms, json!({}))];
        let users = Audience::Userids(vec!["u".into()]);
        let mut c = contents.clone();
        let s = apply(4, &routing, &mut c, &users, &params(json!({"amount": 5}))).unwrap();
        assert_eq!(s, Strategy::Concurrent);
        assert_eq!(
            c.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            [ChannelType::App]
        );
        let mut c = vec![(ChannelType::App, json!({}))];
        let e = apply(4, &routing, &mut c, &users, &params(json!({"amount": 500}))).unwrap_err();
        assert!(e.contains("no msg_sms"), "{e}");

        let chain = parse(&json!({"type": "fallback", "steps": [
            {"channel": "app", "wait_seconds": 1, "condition": "not_delivered"}, {"channel": "sms"}]}))
        .unwrap();
        let mut c = contents.clone();
        let s = apply(5, &chain, &mut c, &users, &Map::new()).unwrap();
        assert_eq!(s.steps().len(), 2);
        let mut c = vec![(ChannelType::App, json!({}))];
        assert!(
            apply(5, &chain, &mut c, &users, &Map::new())
                .unwrap_err()
                .contains("sms step")
        );
        let mut c = contents.clone();
        c.push((ChannelType::Email, json!({})));
        assert!(
            apply(5, &chain, &mut c, &users, &Map::new())
                .unwrap_err()
                .contains("msg_email")
        );
        // Raw addresses ignore rules, as in JUMS.
        let raw = Audience::Raw(Vec::new());
        let mut c = contents.clone();
        assert_eq!(
            apply(5, &chain, &mut c, &raw, &Map::new()).unwrap(),
            Strategy::Concurrent
        );
    }

    #[test]
    fn every_operator_evaluates_as_documented() {
        let p = params(json!({"n": 5, "s": "gold member", "b": true, "z": null}));
        let holds = |c: Value| parse_condition(&c, "c").unwrap().holds(&p);
        assert!(holds(json!({"param": "n", "op": "eq", "value": 5.0})));
        assert!(holds(json!({"param": "n", "op": "ne", "value": 6})));
        assert!(holds(json!({"param": "n", "op": "le", "value": 5})));
        assert!(holds(json!({"param": "n", "op": "ge", "value": 5})));
        assert!(!holds(json!({"param": "n", "op": "gt", "value": 5})));
        assert!(!holds(json!({"param": "s", "op": "lt", "value": 5})));
        assert!(holds(
            json!({"param": "s", "op": "contains", "value": "gold"})
        ));
        assert!(holds(json!({"param": "n", "op": "in", "value": [1, 5]})));
        assert!(holds(
            json!({"param": "n", "op": "not_in", "value": [1, 2]})
        ));
        assert!(holds(json!({"param": "b", "op": "eq", "value": true})));
        assert!(holds(json!({"param": "s", "op": "exists"})));
        assert!(holds(json!({"param": "z", "op": "missing"})));
        assert!(holds(json!({"param": "q", "op": "missing"})));
        assert!(parse_condition(&json!({"param": "n", "op": "lt", "value": "x"}), "c").is_err());
        assert!(parse_condition(&json!({"param": "n", "op": "between"}), "c").is_err());
    }
}
