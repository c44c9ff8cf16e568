//! The provider port: what a channel actor needs from a delivery adapter.
//!
//! Adapters live in the `msghub-providers` crate; the dispatch topology only sees this trait,
//! so every channel type is scheduled, batched, rate limited and retried the same way.
//! The written contract is `docs/specs/provider.md`.

use std::time::Duration;

use async_trait::async_trait;

/// Channel type codes, as JUMS spells them in `aud_<type>` / `msg_<type>`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ChannelType {
    App,
    Sms,
    Email,
    Webhook,
    Wechatoa,
    Wechatmp,
    AlipayLife,
    DingtalkCc,
    Wechatwk,
    Feishu,
}

impl ChannelType {
    pub const ALL: [ChannelType; 10] = [
        ChannelType::App,
        ChannelType::Sms,
        ChannelType::Email,
        ChannelType::Webhook,
        ChannelType::Wechatoa,
        ChannelType::Wechatmp,
        ChannelType::AlipayLife,
        ChannelType::DingtalkCc,
        ChannelType::Wechatwk,
        ChannelType::Feishu,
    ];

    /// The JUMS code (`app`, `sms`, `alipay_life`, ...).
    pub fn code(self) -> &'static str {
        match self {
            ChannelType::App => "app",
            ChannelType::Sms => "sms",
            ChannelType::Email => "email",
            ChannelType::Webhook => "webhook",
            ChannelType::Wechatoa => "wechatoa",
            ChannelType::Wechatmp => "wechatmp",
            ChannelType::AlipayLife => "alipay_life",
            ChannelType::DingtalkCc => "dingtalk_cc",
            ChannelType::Wechatwk => "wechatwk",
            ChannelType::Feishu => "feishu",
        }
    }

    pub fn from_code(code: &str) -> Option<ChannelType> {
        ChannelType::ALL.into_iter().find(|t| t.code() == code)
    }

    /// Whether this type's receipts are asked for, per accepted send, instead of pushed to
    /// the hub ([`Provider::pull_receipts`]: DingTalk's `getsendresult`).
    pub fn pulls_receipts(self) -> bool {
        self == ChannelType::DingtalkCc
    }
}

impl std::fmt::Display for ChannelType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// One recipient of a provider call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The delivery record this attempt updates.
    pub delivery_id: i64,
    /// The channel-native address: registration id, phone, email, URL id, ...
    pub address: String,
    /// The customer's userid, when the audience was user-class.
    pub userid: Option<String>,
}

/// One provider call: the same content to up to [`Provider::max_batch`] targets.
#[derive(Debug, Clone, Copy)]
pub struct SendRequest<'a> {
    /// msghub's message id, for provider-side correlation (`OutId`, `sendno`, headers).
    pub msgid: i64,
    /// The `msg_<type>` object of the message for this channel type.
    pub content: &'a serde_json::Value,
    pub targets: &'a [Target],
    /// Offline validity, passed to providers that support it.
    pub ttl: Option<Duration>,
}

/// The normalised outcome classes of SPEC §2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutcomeClass {
    /// Accepted by the provider.
    Ok,
    /// Transient: back off and retry.
    Retry,
    /// Credential expired: refresh and retry once.
    Token,
    /// Throttled: back off, honouring `retry_after` when given.
    Rate,
    /// Quota used up: do not retry until the window resets.
    Quota,
    /// Bad request or configuration: fail this delivery.
    Perm,
    /// Recipient invalid or unsubscribed: fail, and suppress the address (its bindings are
    /// no longer resolved until the suppression is lifted).
    Gone,
}

impl OutcomeClass {
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeClass::Ok => "ok",
            OutcomeClass::Retry => "retry",
            OutcomeClass::Token => "token",
            OutcomeClass::Rate => "rate",
            OutcomeClass::Quota => "quota",
            OutcomeClass::Perm => "perm",
            OutcomeClass::Gone => "gone",
        }
    }

    /// Whether the same call may succeed if repeated later.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            OutcomeClass::Retry | OutcomeClass::Token | OutcomeClass::Rate
        )
    }
}

/// What the provider said about one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub class: OutcomeClass,
    /// The provider's own code (`OK`, `1011`, `isv.MOBILE_NUMBER_ILLEGAL`, `550`, HTTP status ...).
    pub code: String,
    /// Human-readable detail; never contains credentials.
    pub message: String,
    /// The provider's id for the accepted send (JPush `msg_id`, Aliyun `BizId`, Message-ID ...).
    pub provider_id: Option<String>,
    /// How long the provider asked us to wait (rate headers, `Retry-After`).
    pub retry_after: Option<Duration>,
}

impl Outcome {
    pub fn ok(code: impl Into<String>, provider_id: Option<String>) -> Outcome {
        Outcome {
            class: OutcomeClass::Ok,
            code: code.into(),
            message: String::new(),
            provider_id,
            retry_after: None,
        }
    }

    pub fn failed(
        class: OutcomeClass,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Outcome {
        Outcome {
            class,
            code: code.into(),
            message: message.into(),
            provider_id: None,
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Outcome {
        self.retry_after = retry_after;
        self
    }
}

/// A delivery adapter for one configured channel.
///
/// `send` never panics and never returns an error: every failure, including transport errors and
/// malformed provider answers, is an [`Outcome`] with a class, one per target, in target order.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The most targets one call may carry (JPush 1000, Aliyun SendSms 1000, SMTP 1, webhook 1).
    fn max_batch(&self) -> usize;

    /// Deliver `req.content` to every target of `req`. The returned vector has exactly
    /// `req.targets.len()` entries.
    async fn send(&self, req: SendRequest<'_>) -> Vec<Outcome>;

    /// Withdraw accepted sends, named by the `provider_id` their `send` returned (JPush
    /// `msg_id`). One outcome per id, in order: `Ok` when the provider withdrew it. Providers
    /// that cannot withdraw keep this default, which makes no call.
    async fn recall(&self, provider_ids: &[String]) -> Vec<Outcome> {
        provider_ids
            .iter()
            .map(|_| Outcome::unsupported_recall())
            .collect()
    }

    /// Ask what became of the targets of accepted sends, named by the `provider_id` their
    /// `send` returned (DingTalk `task_id`), for the types whose receipts are pulled
    /// ([`ChannelType::pulls_receipts`]). One answer per id, in order: the report so far, or
    /// why there is none — `Gone` when the provider does not know the send (it will never
    /// report on it), any other class when asking again later may help. Providers that push
    /// their receipts keep this default.
    async fn pull_receipts(&self, provider_ids: &[String]) -> Vec<Result<SendReport, Outcome>> {
        provider_ids
            .iter()
            .map(|_| {
                Err(Outcome::failed(
                    OutcomeClass::Gone,
                    PULL_UNSUPPORTED,
                    "this provider pushes its receipts",
                ))
            })
            .collect()
    }
}

/// The outcome code of a receipt pull the provider does not support.
pub const PULL_UNSUPPORTED: &str = "pull_unsupported";

/// What a provider reports, when asked, about the targets of one accepted send: each address
/// it has news of, in at most one list. An address in none has no news yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendReport {
    /// Reached and opened (read).
    pub read: Vec<String>,
    /// Reached, not opened yet.
    pub delivered: Vec<String>,
    /// Not reached, with the provider's reason.
    pub undelivered: Vec<Undelivered>,
}

impl SendReport {
    /// How many addresses the report settles for good: read, or not reached. A delivered one
    /// may still be read.
    pub fn settled(&self) -> usize {
        self.read.len() + self.undelivered.len()
    }
}

/// A target the provider says was not reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undelivered {
    pub address: String,
    /// The provider's reason (`invalid_user`, `forbidden:143105`, `failed`).
    pub code: String,
    /// The address is not a recipient at all (not to be sent to again).
    pub gone: bool,
}

/// The outcome code of a recall the provider does not support.
pub const RECALL_UNSUPPORTED: &str = "recall_unsupported";

impl Outcome {
    /// What [`Provider::recall`] answers by default.
    pub fn unsupported_recall() -> Outcome {
        Outcome::failed(
            OutcomeClass::Perm,
            RECALL_UNSUPPORTED,
            "this provider cannot withdraw a message it accepted",
        )
    }
}
