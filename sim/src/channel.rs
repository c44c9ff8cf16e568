//! The simulated delivery channels and address normalisation.

use serde::{Deserialize, Serialize};

/// The eleven simulated delivery channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// JPush push v3 (`/v3/push`).
    App,
    /// Aliyun SMS (`/`, form POST).
    Sms,
    /// Tencent Cloud SMS (`/`, JSON POST with `X-TC-Action`).
    #[serde(rename = "tencent_sms")]
    TencentSms,
    /// SMTP sink.
    Email,
    /// Webhook sink (`/webhook/{name}`).
    Webhook,
    /// WeChat Official Account template messages (`/cgi-bin/message/template/send`).
    Wechatoa,
    /// WeCom application messages (`/cgi-bin/message/send`).
    Wechatwk,
    /// WeChat mini-program subscribe messages (`/cgi-bin/message/subscribe/send`).
    Wechatmp,
    /// Feishu bot messages (`/open-apis/im/v1/messages`).
    Feishu,
    /// Alipay life account template messages (`/gateway.do`).
    #[serde(rename = "alipay_life")]
    AlipayLife,
    /// DingTalk work notices (`/topapi/message/corpconversation/asyncsend_v2`).
    #[serde(rename = "dingtalk_cc")]
    DingtalkCc,
}

impl Channel {
    /// All channels, in index order.
    pub const ALL: [Channel; 11] = [
        Channel::App,
        Channel::Sms,
        Channel::TencentSms,
        Channel::Email,
        Channel::Webhook,
        Channel::Wechatoa,
        Channel::Wechatwk,
        Channel::Wechatmp,
        Channel::Feishu,
        Channel::AlipayLife,
        Channel::DingtalkCc,
    ];

    /// Canonical lowercase name (`app`, `sms`, `tencent_sms`, `email`, `webhook`, `wechatoa`,
    /// `wechatwk`, `wechatmp`, `feishu`, `alipay_life`, `dingtalk_cc`).
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::App => "app",
            Channel::Sms => "sms",
            Channel::TencentSms => "tencent_sms",
            Channel::Email => "email",
            Channel::Webhook => "webhook",
            Channel::Wechatoa => "wechatoa",
            Channel::Wechatwk => "wechatwk",
            Channel::Wechatmp => "wechatmp",
            Channel::Feishu => "feishu",
            Channel::AlipayLife => "alipay_life",
            Channel::DingtalkCc => "dingtalk_cc",
        }
    }

    /// Parses a channel name; accepts aliases `jpush`/`push`, `aliyun`, `tencent`,
    /// `smtp`/`mail`, `wechat`, `wecom`, `miniprogram`, `lark`, `alipay`, `dingtalkcc`/`dingtalk`.
    pub fn parse(name: &str) -> Option<Channel> {
        match name.trim().to_ascii_lowercase().as_str() {
            "app" | "jpush" | "push" => Some(Channel::App),
            "sms" | "aliyun" => Some(Channel::Sms),
            "tencent_sms" | "tencent" => Some(Channel::TencentSms),
            "email" | "smtp" | "mail" => Some(Channel::Email),
            "webhook" => Some(Channel::Webhook),
            "wechatoa" | "wechat" => Some(Channel::Wechatoa),
            "wechatwk" | "wecom" => Some(Channel::Wechatwk),
            "wechatmp" | "miniprogram" => Some(Channel::Wechatmp),
            "feishu" | "lark" => Some(Channel::Feishu),
            "alipay_life" | "alipaylife" | "alipay" => Some(Channel::AlipayLife),
            "dingtalk_cc" | "dingtalkcc" | "dingtalk" => Some(Channel::DingtalkCc),
            _ => None,
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Normalises an address the way this channel records it (SMS strips the +86 prefix).
    pub fn normalise(self, address: &str) -> String {
        match self {
            Channel::Sms | Channel::TencentSms => {
                normalise_phone(address).unwrap_or_else(|| address.trim().to_string())
            }
            _ => address.trim().to_string(),
        }
    }
}

impl PartialEq<&str> for Channel {
    fn eq(&self, other: &&str) -> bool {
        Channel::parse(other) == Some(*self)
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Returns the 11-digit mainland number (prefix `+86`/`0086`/`86` removed) if valid.
pub fn normalise_phone(raw: &str) -> Option<String> {
    let s = raw.trim();
    let s = s
        .strip_prefix("+86")
        .or_else(|| s.strip_prefix("0086"))
        .or_else(|| {
            if s.len() == 13 {
                s.strip_prefix("86")
            } else {
                None
            }
        })
        .unwrap_or(s);
    let ok = s.len() == 11 && s.starts_with('1') && s.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| s.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn phone_normalisation() {
        assert_eq!(
            normalise_phone("+8613800138000").as_deref(),
            Some("13800138000")
        );
        assert_eq!(
            normalise_phone("008613800138000").as_deref(),
            Some("13800138000")
        );
        assert_eq!(
            normalise_phone("8613800138000").as_deref(),
            Some("13800138000")
        );
        assert_eq!(
            normalise_phone("13800138000").as_deref(),
            Some("13800138000")
        );
        assert_eq!(normalise_phone("23800138000"), None);
        assert_eq!(normalise_phone("1380013800"), None);
        assert_eq!(normalise_phone("1380013800x"), None);
    }

    #[test]
    fn every_channel_parses_from_its_name_and_serialises_as_it() {
        for (i, c) in Channel::ALL.into_iter().enumerate() {
            assert_eq!(c.index(), i, "{c}: ALL is in index order");
            assert_eq!(Channel::parse(c.as_str()), Some(c));
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
        for alias in ["dingtalk_cc", "dingtalkcc", "DingTalk"] {
            assert_eq!(Channel::parse(alias), Some(Channel::DingtalkCc), "{alias}");
        }
    }
}
