//! How one simulated channel reports deliveries, as set by `POST /sim/receipts`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::channel::Channel;

/// Largest `batch_max`: providers push at most this many receipts per request.
pub(crate) const MAX_BATCH_ITEMS: usize = 1000;
/// Most retries a configuration may ask for.
pub(crate) const MAX_RETRIES: usize = 10;

/// Receipt behaviour of one channel (`app` = JPush callbacks, `sms` = Aliyun SmsReport,
/// `tencent_sms` = Tencent SMS status callbacks, `wechatoa` = `TEMPLATESENDJOBFINISH` events,
/// `wechatmp` = mini-program `subscribe_msg_sent_event` events, `dingtalk_cc` = the lists
/// DingTalk's `getsendresult` answers, polled rather than pushed).
///
/// Each target of an accepted call draws one uniform `u`: `u < delivered_ratio` → delivered,
/// else `u < delivered_ratio + failed_ratio` → failed, else no receipt at all. A delivered JPush
/// target is also clicked with probability `clicked_ratio`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReceiptConfig {
    /// Whether accepted calls produce receipts at all.
    pub enabled: bool,
    /// Share of targets reported delivered (JPush type 1, SmsReport `success: true`).
    pub delivered_ratio: f64,
    /// Share of targets reported not delivered (JPush type 4, SmsReport `success: false`).
    pub failed_ratio: f64,
    /// Share of delivered JPush targets that are also clicked (type 2). SMS has no clicks.
    pub clicked_ratio: f64,
    /// From the accepted call to its delivered/failed receipts.
    pub delay_ms: u64,
    /// From a delivered receipt to its clicked receipt.
    pub click_delay_ms: u64,
    /// Most receipts in one POST (1..=1000).
    pub batch_max: usize,
    /// How long a batch waits for more receipts after its first one.
    pub batch_ms: u64,
    /// Waits before each retry of a POST that was not answered 200; then the batch is dropped.
    pub retry_delays_ms: Vec<u64>,
    /// Where reports go (`sms`, `tencent_sms`: the account's callback URL as set in the
    /// console; `wechatoa`, `wechatmp`: the server configuration's message push URL); `None` =
    /// no reports. JPush has none: each push names its own `callback.url`.
    pub report_url: Option<String>,
    /// How the WeChat account (`wechatoa`) or mini-program (`wechatmp`) encrypts its event
    /// pushes.
    pub wechat_mode: WechatMode,
}

/// The message encryption mode of a WeChat account's server configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WechatMode {
    /// The event XML as it is.
    #[default]
    Plain,
    /// The plaintext fields and an `Encrypt` envelope of the same message.
    Compatible,
    /// Only the `Encrypt` envelope.
    Safe,
}

impl Default for ReceiptConfig {
    fn default() -> Self {
        ReceiptConfig {
            enabled: true,
            delivered_ratio: 1.0,
            failed_ratio: 0.0,
            clicked_ratio: 0.0,
            delay_ms: 50,
            click_delay_ms: 50,
            batch_max: 100,
            batch_ms: 100,
            retry_delays_ms: vec![1000, 5000, 10_000],
            report_url: None,
            wechat_mode: WechatMode::Plain,
        }
    }
}

impl ReceiptConfig {
    /// Checks the ranges; the message names the offending field.
    pub fn validate(&self, channel: Channel) -> Result<(), String> {
        if self.wechat_mode != WechatMode::Plain
            && !matches!(channel, Channel::Wechatoa | Channel::Wechatmp)
        {
            return Err("wechat_mode is for the channels wechatoa and wechatmp only".into());
        }
        for (name, ratio) in [
            ("delivered_ratio", self.delivered_ratio),
            ("failed_ratio", self.failed_ratio),
            ("clicked_ratio", self.clicked_ratio),
        ] {
            if !(0.0..=1.0).contains(&ratio) {
                return Err(format!("{name} must be between 0 and 1"));
            }
        }
        if self.delivered_ratio + self.failed_ratio > 1.0 + 1e-9 {
            return Err("delivered_ratio + failed_ratio must not exceed 1".into());
        }
        if !(1..=MAX_BATCH_ITEMS).contains(&self.batch_max) {
            return Err(format!("batch_max must be between 1 and {MAX_BATCH_ITEMS}"));
        }
        if self.retry_delays_ms.len() > MAX_RETRIES {
            return Err(format!(
                "retry_delays_ms holds at most {MAX_RETRIES} delays"
            ));
        }
        match (channel, &self.report_url) {
            (_, None) => Ok(()),
            (Channel::DingtalkCc, Some(_)) => Err(
                "report_url is for the sms, tencent_sms, wechatoa and wechatmp channels only; DingTalk pushes no receipts (getsendresult is polled)"
                    .into(),
            ),
            (
                Channel::Sms | Channel::TencentSms | Channel::Wechatoa | Channel::Wechatmp,
                Some(url),
            ) => check_url(url),
            (_, Some(_)) => Err(
                "report_url is for the sms, tencent_sms, wechatoa and wechatmp channels only; JPush receipts go to each push's callback.url"
                    .into(),
            ),
        }
    }
}

fn check_url(url: &str) -> Result<(), String> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err("report_url must be an http(s) URL with a host".into()),
    }
}

/// Parses a `POST /sim/receipts` body: `{"channel": "app"|"sms"|…, ...ReceiptConfig fields}`.
pub(crate) fn parse_request(body: &[u8]) -> Result<(Channel, ReceiptConfig), String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(mut fields) = value else {
        return Err("body must be a JSON object".into());
    };
    let channel = match fields.remove("channel") {
        Some(Value::String(name)) => receipt_channel(&name)?,
        Some(_) => return Err("channel must be a string".into()),
        None => {
            return Err(
                "channel is required (app, sms, tencent_sms, wechatoa, wechatmp or dingtalk_cc)"
                    .into(),
            );
        }
    };
    let config: ReceiptConfig =
        serde_json::from_value(Value::Object(fields)).map_err(|e| e.to_string())?;
    config.validate(channel)?;
    Ok((channel, config))
}

/// The channels that send receipts.
pub(crate) fn receipt_channel(name: &str) -> Result<Channel, String> {
    match Channel::parse(name) {
        Some(
            c @ (Channel::App
            | Channel::Sms
            | Channel::TencentSms
            | Channel::Wechatoa
            | Channel::Wechatmp
            | Channel::DingtalkCc),
        ) => Ok(c),
        _ => Err(format!(
            "channel {name:?} has no receipts; use app, sms, tencent_sms, wechatoa, wechatmp or dingtalk_cc"
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<(Channel, ReceiptConfig), String> {
        parse_request(body.as_bytes())
    }

    #[test]
    fn an_empty_request_takes_every_default() {
        let (c, cfg) = parse(r#"{"channel":"app"}"#).unwrap();
        assert_eq!(c, Channel::App);
        assert_eq!(cfg, ReceiptConfig::default());
        assert_eq!(cfg.retry_delays_ms, vec![1000, 5000, 10_000]);
        assert!(cfg.enabled && cfg.delivered_ratio == 1.0 && cfg.report_url.is_none());
    }

    #[test]
    fn given_fields_replace_the_defaults() {
        let (c, cfg) = parse(
            r#"{"channel":"sms","delivered_ratio":0.5,"failed_ratio":0.25,"delay_ms":0,
                "batch_max":1000,"batch_ms":5,"retry_delays_ms":[],"report_url":"http://127.0.0.1:9/r",
                "enabled":false}"#,
        )
        .unwrap();
        assert_eq!(c, Channel::Sms);
        assert_eq!(
            cfg,
            ReceiptConfig {
                enabled: false,
                delivered_ratio: 0.5,
                failed_ratio: 0.25,
                delay_ms: 0,
                batch_max: 1000,
                batch_ms: 5,
                retry_delays_ms: vec![],
                report_url: Some("http://127.0.0.1:9/r".into()),
                ..ReceiptConfig::default()
            }
        );
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let e = parse(r#"{"channel":"app","delivery_ratio":0.5}"#).unwrap_err();
        assert!(e.contains("unknown field `delivery_ratio`"), "{e}");
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for (body, needle) in [
            (
                r#"{"channel":"app","delivered_ratio":1.5}"#,
                "delivered_ratio",
            ),
            (r#"{"channel":"app","failed_ratio":-0.1}"#, "failed_ratio"),
            (r#"{"channel":"app","clicked_ratio":2}"#, "clicked_ratio"),
            (
                r#"{"channel":"app","delivered_ratio":0.7,"failed_ratio":0.4}"#,
                "must not exceed 1",
            ),
            (r#"{"channel":"app","batch_max":0}"#, "batch_max"),
            (r#"{"channel":"app","batch_max":1001}"#, "batch_max"),
            (
                r#"{"channel":"app","retry_delays_ms":[1,1,1,1,1,1,1,1,1,1,1]}"#,
                "retry_delays_ms",
            ),
            (
                r#"{"channel":"app","report_url":"http://127.0.0.1/"}"#,
                "wechatoa and wechatmp channels only",
            ),
            (
                r#"{"channel":"sms","report_url":"ftp://127.0.0.1/"}"#,
                "http(s)",
            ),
            (r#"{"channel":"sms","report_url":"not a url"}"#, "http(s)"),
            (r#"{"channel":"email"}"#, "no receipts"),
            (
                r#"{"channel":"dingtalk_cc","report_url":"http://127.0.0.1/"}"#,
                "DingTalk pushes no receipts",
            ),
            (r#"{"delivered_ratio":1}"#, "channel is required"),
            (r#"[]"#, "JSON object"),
            (r#"{"channel":"app","delay_ms":-1}"#, "invalid value"),
        ] {
            let e = parse(body).unwrap_err();
            assert!(e.contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn the_wechat_channels_take_a_report_url_and_an_encryption_mode() {
        for name in ["wechatoa", "wechatmp", "miniprogram"] {
            let body = format!(
                r#"{{"channel":"{name}","report_url":"http://127.0.0.1:9/wx","wechat_mode":"safe"}}"#
            );
            let (_, cfg) = parse(&body).unwrap();
            assert_eq!(cfg.wechat_mode, WechatMode::Safe, "{name}");
            assert_eq!(cfg.report_url.as_deref(), Some("http://127.0.0.1:9/wx"));
        }
        assert_eq!(
            parse(r#"{"channel":"miniprogram"}"#).unwrap().0,
            Channel::Wechatmp
        );
        let e = parse(r#"{"channel":"tencent_sms","wechat_mode":"compatible"}"#).unwrap_err();
        assert!(e.contains("wechatoa and wechatmp only"), "{e}");
        let e = parse(r#"{"channel":"wechatmp","report_url":"ftp://127.0.0.1/"}"#).unwrap_err();
        assert!(e.contains("http(s)"), "{e}");
    }

    #[test]
    fn ratios_may_sum_to_exactly_one() {
        assert!(parse(r#"{"channel":"app","delivered_ratio":0.7,"failed_ratio":0.3}"#).is_ok());
        assert!(parse(r#"{"channel":"jpush","delivered_ratio":0,"failed_ratio":1}"#).is_ok());
    }
}
