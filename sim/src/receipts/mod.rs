//! Delivery receipts pushed back by the simulated providers: JPush `callback` receipts, Aliyun
//! SmsReport and Tencent SMS status callbacks, WeChat `TEMPLATESENDJOBFINISH` and mini-program
//! `subscribe_msg_sent_event` events, drawn per target from each channel's [`ReceiptConfig`].
//! DingTalk pushes nothing: its recipients' fates are drawn here too (see
//! [`Receipts::dingtalk_draw`]) and read back by polling `getsendresult` (`crate::dingtalk`).
//!
//! Formats are in `docs/specs/receipts.md`. The handlers call [`Receipts::push_accepted`],
//! [`Receipts::sms_accepted`], [`Receipts::tencent_accepted`], [`Receipts::wechat_accepted`] or
//! [`Receipts::subscribe_accepted`] after recording a call; everything after that (delays,
//! batching, retries) runs in the background on the runtime the simulator was started on.

mod config;
mod courier;
mod draw;
mod outbox;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, FixedOffset, TimeDelta, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio::runtime::Handle;

pub use config::{ReceiptConfig, WechatMode};
pub(crate) use config::{parse_request, receipt_channel};
use courier::Courier;
pub(crate) use courier::loopback_host;
use draw::Dice;
pub(crate) use draw::Fate;
pub use outbox::ReceiptReport;
use outbox::{Event, Item, Outbox};

use crate::SimConfig;
use crate::channel::Channel;
use crate::state::lock;

/// JPush `callback.type` bits.
pub(crate) const TYPE_RECEIVED: u8 = 1;
pub(crate) const TYPE_CLICKED: u8 = 2;
pub(crate) const TYPE_NOT_RECEIVED: u8 = 4;

/// SmsReport times: `yyyy-MM-dd HH:mm:ss`, China Standard Time as Aliyun reports them.
const SMS_TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";
const CHINA_OFFSET_SECS: i32 = 8 * 3600;

/// A push's `callback` object, as the simulator reads it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PushCallback {
    /// Where receipts go; without one there is no receipt (the console default URL is not
    /// simulated).
    pub url: Option<String>,
    /// Echoed verbatim in every receipt (`{}` when the push had none).
    pub params: Value,
    /// Receipt types asked for (bitmask of `TYPE_*`).
    pub types: u8,
}

/// Receipt state of one simulator: an outbox per receipt channel and the dice.
pub(crate) struct Receipts {
    app: Mutex<Arc<Outbox>>,
    sms: Mutex<Arc<Outbox>>,
    tencent: Mutex<Arc<Outbox>>,
    wechat: Mutex<Arc<Outbox>>,
    /// The mini-program's `subscribe_msg_sent_event` pushes (the same WeChat account).
    miniprogram: Mutex<Arc<Outbox>>,
    /// The DingTalk configuration: it decides the recipients' fates, and nothing is pushed.
    dingtalk: Mutex<ReceiptConfig>,
    /// How the WeChat account signs and encrypts its pushes (the simulated app stands for both
    /// the Official Account and the mini-program).
    wechat_account: outbox::WechatAccount,
    dice: Mutex<Dice>,
    courier: Arc<Courier>,
    /// `Authorization` of JPush receipts: Basic base64(app_key:master_secret).
    jpush_auth: String,
}

impl Receipts {
    pub(crate) fn new(config: &SimConfig) -> Receipts {
        let credentials = format!("{}:{}", config.jpush_app_key, config.jpush_master_secret);
        let jpush_auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        );
        let courier = Arc::new(Courier::default());
        Receipts {
            app: Mutex::new(Arc::new(Outbox::new(
                Some(jpush_auth.clone()),
                courier.clone(),
            ))),
            sms: Mutex::new(Arc::new(Outbox::new(None, courier.clone()))),
            tencent: Mutex::new(Arc::new(Outbox::new(None, courier.clone()))),
            wechat: Mutex::new(Arc::new(wechat_outbox(&wechat_account(config), &courier))),
            miniprogram: Mutex::new(Arc::new(wechat_outbox(&wechat_account(config), &courier))),
            wechat_account: wechat_account(config),
            dingtalk: Mutex::new(ReceiptConfig::default()),
            dice: Mutex::new(Dice::new(config.receipt_seed)),
            courier,
            jpush_auth,
        }
    }

    /// Runs receipt tasks on `runtime`.
    pub(crate) fn bind(&self, runtime: Handle) {
        self.courier.bind(runtime);
    }

    fn slot(&self, channel: Channel) -> Option<&Mutex<Arc<Outbox>>> {
        match channel {
            Channel::App => Some(&self.app),
            Channel::Sms => Some(&self.sms),
            Channel::TencentSms => Some(&self.tencent),
            Channel::Wechatoa => Some(&self.wechat),
            Channel::Wechatmp => Some(&self.miniprogram),
            Channel::Email
            | Channel::Webhook
            | Channel::Wechatwk
            | Channel::Feishu
            | Channel::AlipayLife
            | Channel::DingtalkCc => None,
        }
    }

    fn outbox(&self, channel: Channel) -> Option<Arc<Outbox>> {
        self.slot(channel).map(|s| lock(s).clone())
    }

    /// Replaces the receipt configuration of `channel` after validating it.
    pub(crate) fn configure(&self, channel: Channel, config: ReceiptConfig) -> Result<(), String> {
        config.validate(channel)?;
        if channel == Channel::DingtalkCc {
            *lock(&self.dingtalk) = config;
            return Ok(());
        }
        let outbox = self.outbox(channel).ok_or_else(|| {
            format!(
                "channel {channel} has no receipts; use app, sms, tencent_sms, wechatoa, wechatmp or dingtalk_cc"
            )
        })?;
        outbox.set_config(config);
        Ok(())
    }

    pub(crate) fn report(&self, channel: Channel, msgid: Option<&str>) -> Option<ReceiptReport> {
        self.outbox(channel).map(|o| o.report(msgid))
    }

    /// The DingTalk receipt configuration.
    pub(crate) fn dingtalk_config(&self) -> ReceiptConfig {
        lock(&self.dingtalk).clone()
    }

    /// The DingTalk configuration and, for each of `n` recipients of an accepted work notice,
    /// its fate and whether it is read (clicked), drawn with the simulator's dice. With the
    /// configuration disabled every recipient is [`Fate::Silent`].
    pub(crate) fn dingtalk_draw(&self, n: usize) -> (ReceiptConfig, Vec<(Fate, bool)>) {
        let config = self.dingtalk_config();
        if !config.enabled {
            return (config, vec![(Fate::Silent, false); n]);
        }
        let fates = {
            let mut dice = lock(&self.dice);
            (0..n).map(|_| dice.roll(&config)).collect()
        };
        (config, fates)
    }

    /// Forgets records, counters and configuration; receipts still waiting are abandoned.
    pub(crate) fn reset(&self) {
        *lock(&self.dingtalk) = ReceiptConfig::default();
        for (slot, auth) in [
            (&self.app, Some(self.jpush_auth.clone())),
            (&self.sms, None),
            (&self.tencent, None),
        ] {
            let fresh = Arc::new(Outbox::new(auth, self.courier.clone()));
            let old = std::mem::replace(&mut *lock(slot), fresh);
            old.close();
        }
        for slot in [&self.wechat, &self.miniprogram] {
            let fresh = Arc::new(wechat_outbox(&self.wechat_account, &self.courier));
            std::mem::replace(&mut *lock(slot), fresh).close();
        }
    }

    /// Stops every receipt task (the simulator is stopping).
    pub(crate) fn close(&self) {
        lock(&self.app).close();
        lock(&self.sms).close();
        lock(&self.tencent).close();
        lock(&self.wechat).close();
        lock(&self.miniprogram).close();
    }

    /// An accepted push: draws a receipt per registration id and schedules them.
    pub(crate) fn push_accepted(&self, msg_id: &str, regids: &[String], callback: &PushCallback) {
        let Some(url) = callback.url.as_deref() else {
            return;
        };
        let outbox = lock(&self.app).clone();
        let config = outbox.config();
        if !config.enabled || regids.is_empty() {
            return;
        }
        let key: Arc<str> = msgid_param(&callback.params).into();
        let now = Utc::now();
        let (delay, click_delay) = (millis(config.delay_ms), millis(config.click_delay_ms));
        let at = unix_after(now, delay);
        let click_at = unix_after(now, delay + click_delay);
        let push = PushReceipt {
            msg_id,
            registration_id: "",
            platform: "android",
            kind: 0,
            time: 0,
            params: &callback.params,
        };
        let wants = |bit: u8| callback.types & bit != 0;
        let (mut first, mut clicks) = (Vec::new(), Vec::new());
        {
            let mut dice = lock(&self.dice);
            for regid in regids {
                let (fate, click) = dice.roll(&config);
                let receipt = |kind, time| PushReceipt {
                    registration_id: regid,
                    kind,
                    time,
                    ..push
                };
                match fate {
                    Fate::Delivered if wants(TYPE_RECEIVED) => {
                        first.extend(item(
                            &key,
                            regid,
                            Event::Delivered,
                            &receipt(TYPE_RECEIVED, at),
                        ));
                    }
                    Fate::Failed if wants(TYPE_NOT_RECEIVED) => {
                        first.extend(item(
                            &key,
                            regid,
                            Event::Failed,
                            &receipt(TYPE_NOT_RECEIVED, at),
                        ));
                    }
                    _ => {}
                }
                if click && wants(TYPE_CLICKED) {
                    clicks.extend(item(
                        &key,
                        regid,
                        Event::Clicked,
                        &receipt(TYPE_CLICKED, click_at),
                    ));
                }
            }
        }
        outbox.schedule(url, vec![(delay, first), (click_delay, clicks)]);
    }

    /// An accepted SendSms/SendBatchSms: draws a report per number and schedules them to the
    /// configured `report_url`.
    pub(crate) fn sms_accepted(&self, biz_id: &str, out_id: &str, phones: &[String]) {
        let outbox = lock(&self.sms).clone();
        let config = outbox.config();
        let Some(url) = config.report_url.as_deref().filter(|_| config.enabled) else {
            return;
        };
        let key: Arc<str> = out_id.into();
        let now = Utc::now();
        let delay = millis(config.delay_ms);
        let send_time = china_time(now);
        let report_time = china_time(now + TimeDelta::from_std(delay).unwrap_or_default());
        let mut items = Vec::new();
        {
            let mut dice = lock(&self.dice);
            for phone in phones {
                let (success, event, err_code, err_msg) = match dice.roll(&config).0 {
                    Fate::Delivered => (true, Event::Delivered, "DELIVERED", "用户接收成功"),
                    Fate::Failed => (false, Event::Failed, "UNDELIV", "用户接收失败"),
                    Fate::Silent => continue,
                };
                let report = SmsReport {
                    phone_number: phone,
                    send_time: &send_time,
                    report_time: &report_time,
                    success,
                    err_code,
                    err_msg,
                    sms_size: "1",
                    biz_id,
                    out_id,
                };
                items.extend(item(&key, phone, event, &report));
            }
        }
        outbox.schedule(url, vec![(delay, items)]);
    }

    /// An accepted WeChat template send: draws its fate and schedules its
    /// `TEMPLATESENDJOBFINISH` event for the configured `report_url`. A failure is reported as
    /// `failed:user block` for even msgids and `failed: system failed` for odd ones. `key` is
    /// msghub's msgid (from the `client_msg_id`), for the per-msgid lists.
    pub(crate) fn wechat_accepted(&self, key: &str, msgid: u64, openid: &str) {
        let outbox = lock(&self.wechat).clone();
        let config = outbox.config();
        let Some(url) = config.report_url.as_deref().filter(|_| config.enabled) else {
            return;
        };
        let fate = lock(&self.dice).roll(&config).0;
        let (status, event) = match fate {
            Fate::Delivered => ("success", Event::Delivered),
            Fate::Failed if msgid.is_multiple_of(2) => ("failed:user block", Event::Failed),
            Fate::Failed => ("failed: system failed", Event::Failed),
            Fate::Silent => return,
        };
        let delay = millis(config.delay_ms);
        let created = unix_after(Utc::now(), delay);
        let xml = template_event(
            &self.wechat_account.original_id,
            openid,
            created,
            msgid,
            status,
        );
        let item = Item {
            key: key.into(),
            address: openid.to_string(),
            event,
            json: xml,
        };
        outbox.schedule(url, vec![(delay, vec![item])]);
    }

    /// An accepted mini-program subscribe send: draws its fate and schedules its
    /// `subscribe_msg_sent_event` for the `report_url` of `wechatmp`. Delivered is `ErrorCode`
    /// 0 / `success`; failed is [`SUBSCRIBE_FAILED_CODE`] / `system failed` (the simulator's
    /// choice: WeChat documents these failures as system failures of the asynchronous push
    /// without listing codes); silent sends nothing. A subscribe send carries no msghub msgid,
    /// so the per-msgid lists are keyed by the WeChat `msgid` in decimal.
    pub(crate) fn subscribe_accepted(&self, msgid: u64, openid: &str, template_id: &str) {
        let outbox = lock(&self.miniprogram).clone();
        let config = outbox.config();
        let Some(url) = config.report_url.as_deref().filter(|_| config.enabled) else {
            return;
        };
        let fate = lock(&self.dice).roll(&config).0;
        let (code, status, event) = match fate {
            Fate::Delivered => (0, "success", Event::Delivered),
            Fate::Failed => (SUBSCRIBE_FAILED_CODE, "system failed", Event::Failed),
            Fate::Silent => return,
        };
        let delay = millis(config.delay_ms);
        let created = unix_after(Utc::now(), delay);
        let xml = subscribe_sent_event(
            &self.wechat_account.original_id,
            openid,
            created,
            template_id,
            msgid,
            code,
            status,
        );
        let item = Item {
            key: msgid.to_string().into(),
            address: openid.to_string(),
            event,
            json: xml,
        };
        outbox.schedule(url, vec![(delay, vec![item])]);
    }

    /// An accepted Tencent SendSms: draws a status per accepted number (`(SerialNo, E.164
    /// number)`) and schedules the callbacks to the configured `report_url`. `session` is the
    /// call's `SessionContext` (the msghub msgid), used only for the per-msgid lists: the
    /// callback itself names the send by `sid` alone.
    pub(crate) fn tencent_accepted(&self, session: &str, accepted: &[(String, String)]) {
        let outbox = lock(&self.tencent).clone();
        let config = outbox.config();
        let Some(url) = config.report_url.as_deref().filter(|_| config.enabled) else {
            return;
        };
        let key: Arc<str> = session.into();
        let now = Utc::now();
        let delay = millis(config.delay_ms);
        let receive_time = china_time(now + TimeDelta::from_std(delay).unwrap_or_default());
        let mut items = Vec::new();
        {
            let mut dice = lock(&self.dice);
            for (sid, phone) in accepted {
                let (report_status, event, errmsg, description) = match dice.roll(&config).0 {
                    Fate::Delivered => ("SUCCESS", Event::Delivered, "DELIVRD", "用户短信送达成功"),
                    Fate::Failed => ("FAIL", Event::Failed, "UNDELIV", "用户短信送达失败"),
                    Fate::Silent => continue,
                };
                let (nationcode, mobile) = split_country(phone);
                let report = TencentStatus {
                    user_receive_time: &receive_time,
                    nationcode,
                    mobile,
                    report_status,
                    errmsg,
                    description,
                    sid,
                };
                items.extend(item(&key, phone, event, &report));
            }
        }
        outbox.schedule(url, vec![(delay, items)]);
    }
}

fn wechat_account(config: &SimConfig) -> outbox::WechatAccount {
    outbox::WechatAccount {
        token: config.wechat_token.clone(),
        appid: config.wechat_appid.clone(),
        original_id: config.wechat_original_id.clone(),
        encoding_aes_key: config.wechat_encoding_aes_key.clone(),
    }
}

/// The WeChat outbox: one signed XML event per POST.
fn wechat_outbox(account: &outbox::WechatAccount, courier: &Arc<Courier>) -> Outbox {
    Outbox::with_wire(
        None,
        outbox::Wire::WechatXml(account.clone()),
        courier.clone(),
    )
}

/// A `TEMPLATESENDJOBFINISH` event, as WeChat pushes it (plaintext mode).
fn template_event(
    original_id: &str,
    openid: &str,
    created: i64,
    msgid: u64,
    status: &str,
) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{original_id}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>\
         <CreateTime>{created}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>{msgid}</MsgID>\
         <Status><![CDATA[{status}]]></Status></xml>"
    )
}

/// `ErrorCode` of a failed `subscribe_msg_sent_event` (the simulator's choice).
pub(crate) const SUBSCRIBE_FAILED_CODE: i64 = 10005;

/// A `subscribe_msg_sent_event` with one `List` entry, as WeChat pushes it to a mini-program's
/// message push URL (XML, plaintext mode).
fn subscribe_sent_event(
    original_id: &str,
    openid: &str,
    created: i64,
    template_id: &str,
    msgid: u64,
    code: i64,
    status: &str,
) -> String {
    let template_id = cdata(template_id);
    format!(
        "<xml><ToUserName><![CDATA[{original_id}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>\
         <CreateTime>{created}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[subscribe_msg_sent_event]]></Event><SubscribeMsgSentEvent><List>\
         <TemplateId><![CDATA[{template_id}]]></TemplateId><MsgID>{msgid}</MsgID>\
         <ErrorCode>{code}</ErrorCode><ErrorStatus><![CDATA[{status}]]></ErrorStatus>\
         </List></SubscribeMsgSentEvent></xml>"
    )
}

/// Text made safe inside a CDATA section: a `]]>` is split across two sections. (The caller's
/// `template_id` is free text; openids and the account's ids are not.)
fn cdata(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains("]]>") {
        text.replace("]]>", "]]]]><![CDATA[>").into()
    } else {
        text.into()
    }
}

/// One Tencent SMS status callback item, fields in wire order.
#[derive(Serialize)]
struct TencentStatus<'a> {
    user_receive_time: &'a str,
    nationcode: &'a str,
    mobile: &'a str,
    report_status: &'static str,
    errmsg: &'static str,
    description: &'static str,
    sid: &'a str,
}

/// `+8613800138000` → (`86`, `13800138000`): the country calling code by the ITU zones (1 and 7
/// are one digit; the two-digit codes listed; the rest three).
fn split_country(e164: &str) -> (&str, &str) {
    let digits = e164.trim_start_matches('+');
    const TWO: &[&str] = &[
        "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46",
        "47", "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63",
        "64", "65", "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
    ];
    let len = if digits.starts_with('1') || digits.starts_with('7') {
        1
    } else if TWO.iter().any(|c| digits.starts_with(c)) {
        2
    } else {
        3
    };
    digits.split_at(len.min(digits.len()))
}

/// One JPush receipt, fields in wire order.
#[derive(Clone, Copy, Serialize)]
struct PushReceipt<'a> {
    msg_id: &'a str,
    registration_id: &'a str,
    platform: &'static str,
    #[serde(rename = "type")]
    kind: u8,
    time: i64,
    params: &'a Value,
}

/// One Aliyun SmsReport item, fields in wire order.
#[derive(Serialize)]
struct SmsReport<'a> {
    phone_number: &'a str,
    send_time: &'a str,
    report_time: &'a str,
    success: bool,
    err_code: &'static str,
    err_msg: &'static str,
    sms_size: &'static str,
    biz_id: &'a str,
    out_id: &'a str,
}

/// Serialises one receipt. Serialising these plain structs cannot fail; if it ever did, the
/// receipt is left out rather than corrupting the batch.
fn item(key: &Arc<str>, address: &str, event: Event, receipt: &impl Serialize) -> Option<Item> {
    let json = serde_json::to_string(receipt).ok()?;
    Some(Item {
        key: key.clone(),
        address: address.to_string(),
        event,
        json,
    })
}

/// msghub's msgid from `callback.params.msgid` (string or number); empty when absent.
fn msgid_param(params: &Value) -> String {
    match params.get("msgid") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn unix_after(now: DateTime<Utc>, delay: Duration) -> i64 {
    let delta = TimeDelta::from_std(delay).unwrap_or_default();
    now.checked_add_signed(delta).unwrap_or(now).timestamp()
}

fn china_time(t: DateTime<Utc>) -> String {
    match FixedOffset::east_opt(CHINA_OFFSET_SECS) {
        Some(tz) => t.with_timezone(&tz).format(SMS_TIME_FORMAT).to_string(),
        None => t.format(SMS_TIME_FORMAT).to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn receipts_serialise_in_the_documented_shape() {
        let params = json!({"msgid": "77"});
        let push = PushReceipt {
            msg_id: "540",
            registration_id: "r1",
            platform: "android",
            kind: TYPE_CLICKED,
            time: 1_700_000_000,
            params: &params,
        };
        assert_eq!(
            serde_json::to_string(&push).unwrap(),
            r#"{"msg_id":"540","registration_id":"r1","platform":"android","type":2,"time":1700000000,"params":{"msgid":"77"}}"#
        );
        let sms = SmsReport {
            phone_number: "13800138000",
            send_time: "2026-01-02 03:04:05",
            report_time: "2026-01-02 03:04:06",
            success: false,
            err_code: "UNDELIV",
            err_msg: "用户接收失败",
            sms_size: "1",
            biz_id: "9^0",
            out_id: "77",
        };
        assert_eq!(
            serde_json::to_string(&sms).unwrap(),
            r#"{"phone_number":"13800138000","send_time":"2026-01-02 03:04:05","report_time":"2026-01-02 03:04:06","success":false,"err_code":"UNDELIV","err_msg":"用户接收失败","sms_size":"1","biz_id":"9^0","out_id":"77"}"#
        );
    }

    #[test]
    fn tencent_statuses_serialise_in_the_documented_order() {
        let status = TencentStatus {
            user_receive_time: "2015-10-17 08:03:04",
            nationcode: "86",
            mobile: "13800138000",
            report_status: "SUCCESS",
            errmsg: "DELIVRD",
            description: "用户短信送达成功",
            sid: "2433:1",
        };
        assert_eq!(
            serde_json::to_string(&status).unwrap(),
            r#"{"user_receive_time":"2015-10-17 08:03:04","nationcode":"86","mobile":"13800138000","report_status":"SUCCESS","errmsg":"DELIVRD","description":"用户短信送达成功","sid":"2433:1"}"#
        );
    }

    #[test]
    fn calling_codes_are_split_off_by_zone() {
        assert_eq!(split_country("+8613800138000"), ("86", "13800138000"));
        assert_eq!(split_country("+14155550100"), ("1", "4155550100"));
        assert_eq!(split_country("+79161234567"), ("7", "9161234567"));
        assert_eq!(split_country("+447911123456"), ("44", "7911123456"));
        assert_eq!(split_country("+85291234567"), ("852", "91234567"));
    }

    #[test]
    fn sms_times_are_china_standard_time() {
        let t = DateTime::parse_from_rfc3339("2026-01-01T20:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(china_time(t), "2026-01-02 04:30:00");
    }

    #[test]
    fn subscribe_sent_events_have_the_documented_shape() {
        let xml = subscribe_sent_event(
            "gh_5151000000001",
            "oMini0000001",
            1_700_000_000,
            "SUB_1",
            1_800_000_000_000_000_007,
            0,
            "success",
        );
        assert_eq!(
            xml,
            "<xml><ToUserName><![CDATA[gh_5151000000001]]></ToUserName>\
             <FromUserName><![CDATA[oMini0000001]]></FromUserName><CreateTime>1700000000</CreateTime>\
             <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_sent_event]]></Event>\
             <SubscribeMsgSentEvent><List><TemplateId><![CDATA[SUB_1]]></TemplateId>\
             <MsgID>1800000000000000007</MsgID><ErrorCode>0</ErrorCode>\
             <ErrorStatus><![CDATA[success]]></ErrorStatus></List></SubscribeMsgSentEvent></xml>"
        );
        let failed = subscribe_sent_event(
            "gh_1",
            "o",
            1,
            "a]]>b",
            2,
            SUBSCRIBE_FAILED_CODE,
            "system failed",
        );
        assert!(
            failed.contains(
                "<TemplateId><![CDATA[a]]]]><![CDATA[>b]]></TemplateId><MsgID>2</MsgID>\
                 <ErrorCode>10005</ErrorCode><ErrorStatus><![CDATA[system failed]]></ErrorStatus>"
            ),
            "{failed}"
        );
    }

    #[test]
    fn the_msgid_param_may_be_a_string_or_a_number() {
        assert_eq!(msgid_param(&json!({"msgid": "12"})), "12");
        assert_eq!(msgid_param(&json!({"msgid": 12})), "12");
        assert_eq!(msgid_param(&json!({})), "");
        assert_eq!(msgid_param(&json!(null)), "");
    }
}
