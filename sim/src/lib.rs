//! msghub provider simulator: JPush push v3, Aliyun SMS (RPC + Signature V1), Tencent Cloud SMS
//! (API 3.0 + TC3-HMAC-SHA256), WeChat Official Account template messages (access tokens,
//! `TEMPLATESENDJOBFINISH` events) and mini-program subscribe messages, WeCom application messages,
//! Feishu bot messages, DingTalk work notices (with their polled send results), Alipay life
//! account messages (RSA2), a signed webhook sink and an SMTP sink, with recording, an event log,
//! failure injection and a control API.
//!
//! The JPush, Aliyun and Tencent endpoints also push delivery receipts back (JPush `callback`,
//! Aliyun SmsReport, Tencent status callbacks) as configured through `POST /sim/receipts`; see
//! `docs/specs/receipts.md`.
//!
//! Start it with [`start`]; inspect [`SimHandle::state`] in-process or `GET /sim/received` over HTTP.

pub mod alipay;
pub mod aliyun;
mod aliyun_sign;
mod bounces;
mod channel;
mod control;
mod dingtalk;
mod feishu;
mod issued_token;
mod jpush;
mod receipts;
mod smtp;
mod state;
mod tencent;
pub mod webhook;
mod wechat;
mod wecom;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub use bounces::BounceConfig;
pub use receipts::{ReceiptConfig, ReceiptReport, WechatMode};
pub use state::{
    Channel, DEFAULT_EVENT_CAPACITY, FaultPlan, SimEvent, SimState, UNLIMITED_RATE, normalise_phone,
};

/// Simulator configuration.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Address both listeners bind to (default 127.0.0.1).
    pub bind: IpAddr,
    /// HTTP port (JPush, Aliyun, webhook, control API); 0 = ephemeral.
    pub http_port: u16,
    /// SMTP port; 0 = ephemeral.
    pub smtp_port: u16,
    /// JPush app key (HTTP Basic user).
    pub jpush_app_key: String,
    /// JPush master secret (HTTP Basic password).
    pub jpush_master_secret: String,
    /// Aliyun AccessKeyId.
    pub aliyun_access_key_id: String,
    /// Aliyun AccessKeySecret (HMAC key is `secret + "&"`).
    pub aliyun_access_key_secret: String,
    /// Tencent Cloud SecretId.
    pub tencent_secret_id: String,
    /// Tencent Cloud SecretKey (TC3 key derivation starts from `"TC3" + key`).
    pub tencent_secret_key: String,
    /// Tencent `SmsSdkAppId` the simulated account owns.
    pub tencent_sdk_app_id: String,
    /// WeChat Official Account AppID.
    pub wechat_appid: String,
    /// WeChat AppSecret.
    pub wechat_secret: String,
    /// The Token of the account's server configuration: signs the event pushes.
    pub wechat_token: String,
    /// The account's original id (`gh_…`), the events' `ToUserName`.
    pub wechat_original_id: String,
    /// The server configuration's EncodingAESKey (43 characters): encrypts the event pushes
    /// in the compatible and safe modes.
    pub wechat_encoding_aes_key: String,
    /// WeCom CorpID.
    pub wecom_corpid: String,
    /// The WeCom application's Secret.
    pub wecom_corpsecret: String,
    /// The WeCom application's AgentId.
    pub wecom_agentid: u64,
    /// Feishu app id.
    pub feishu_app_id: String,
    /// Feishu app secret.
    pub feishu_app_secret: String,
    /// DingTalk application AppKey (`GET /gettoken?appkey=…`).
    pub dingtalk_appkey: String,
    /// DingTalk application AppSecret.
    pub dingtalk_appsecret: String,
    /// DingTalk application AgentId: work notices must name it as `agent_id`.
    pub dingtalk_agent_id: u64,
    /// Work notices one userid may receive from the DingTalk application per "day" (since the
    /// simulator started or was reset); past it the userid is in `forbidden_list`.
    pub dingtalk_daily_limit: u32,
    /// Alipay app id (the app's private key is [`alipay::APP_PRIVATE_KEY`], Alipay's public
    /// key for it [`alipay::platform_public_key_pem`]).
    pub alipay_app_id: String,
    /// SMTP user; when both user and password are set, AUTH is required.
    pub smtp_username: Option<String>,
    /// SMTP password.
    pub smtp_password: Option<String>,
    /// HMAC-SHA256 key for `X-Msghub-Signature`.
    pub webhook_secret: String,
    /// Latency added to every provider call (a channel's `FaultPlan::latency_ms` overrides it).
    pub latency: Duration,
    /// Seed of the receipt draw, for reproducible runs; `None` = a random seed.
    pub receipt_seed: Option<u64>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            http_port: 0,
            smtp_port: 0,
            jpush_app_key: "sim-app-key".into(),
            jpush_master_secret: "sim-master-secret".into(),
            aliyun_access_key_id: "sim-ak".into(),
            aliyun_access_key_secret: "sim-ak-secret".into(),
            tencent_secret_id: "sim-tencent-id".into(),
            tencent_secret_key: "sim-tencent-key".into(),
            tencent_sdk_app_id: "1400000001".into(),
            wechat_appid: "wx5151000000000001".into(),
            wechat_secret: "sim-wechat-secret".into(),
            wechat_token: "simWechatToken".into(),
            wechat_original_id: "gh_5151000000001".into(),
            wechat_encoding_aes_key: "simWechatEncodingAesKey0123456789abcdefghij".into(),
            wecom_corpid: "ww5151000000000001".into(),
            wecom_corpsecret: "sim-wecom-secret".into(),
            wecom_agentid: 1000002,
            feishu_app_id: "cli_5151000000000001".into(),
            feishu_app_secret: "sim-feishu-secret".into(),
            dingtalk_appkey: "dingsim5151000000001".into(),
            dingtalk_appsecret: "sim-dingtalk-secret".into(),
            dingtalk_agent_id: 3000001,
            dingtalk_daily_limit: 500,
            alipay_app_id: "2021005151000001".into(),
            smtp_username: None,
            smtp_password: None,
            webhook_secret: "sim-webhook-secret".into(),
            latency: Duration::ZERO,
            receipt_seed: None,
        }
    }
}

/// A running simulator. Call [`SimHandle::stop`] to shut it down.
pub struct SimHandle {
    /// Bound HTTP address.
    pub http_addr: SocketAddr,
    /// Bound SMTP address.
    pub smtp_addr: SocketAddr,
    /// Shared state (recording, faults, events).
    pub state: Arc<SimState>,
    server: actix_web::dev::ServerHandle,
    server_task: Option<JoinHandle<()>>,
    smtp_shutdown: watch::Sender<bool>,
    smtp_done: Option<oneshot::Receiver<()>>,
}

impl SimHandle {
    /// `http://HOST:PORT` of the HTTP listener (JPush base URL; Aliyun endpoint is `{}/`).
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Full URL of the webhook sink for `name`.
    pub fn webhook_url(&self, name: &str) -> String {
        format!("http://{}/webhook/{name}", self.http_addr)
    }

    /// Stops the HTTP server, the SMTP listener (open SMTP sessions are closed) and the
    /// receipt senders (receipts not yet acknowledged are abandoned).
    pub async fn stop(mut self) {
        self.state.receipts.close();
        let _ = self.smtp_shutdown.send(true);
        self.server.stop(false).await;
        if let Some(t) = self.server_task.take() {
            let _ = t.await;
        }
        if let Some(done) = self.smtp_done.take() {
            let _ = done.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        // Best effort when dropped without `stop`: the stop command is sent eagerly.
        if self.server_task.is_some() {
            self.state.receipts.close();
            let _ = self.smtp_shutdown.send(true);
            drop(self.server.stop(false));
        }
    }
}

/// Maximum request body accepted by the HTTP endpoints.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Starts the simulator (HTTP on `http_port`, SMTP on `smtp_port`) and returns once both listen.
///
/// Works inside an actix `System` and inside a plain tokio runtime.
pub async fn start(config: SimConfig) -> anyhow::Result<SimHandle> {
    let http_listener = std::net::TcpListener::bind(SocketAddr::new(config.bind, config.http_port))
        .with_context(|| format!("binding sim HTTP on {}:{}", config.bind, config.http_port))?;
    let http_addr = http_listener.local_addr()?;
    let smtp_listener = std::net::TcpListener::bind(SocketAddr::new(config.bind, config.smtp_port))
        .with_context(|| format!("binding sim SMTP on {}:{}", config.bind, config.smtp_port))?;
    let smtp_addr = smtp_listener.local_addr()?;

    let state = Arc::new(SimState::new(config));
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        state.receipts.bind(runtime);
    }
    let data = web::Data::from(state.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .configure(configure)
    })
    .workers(2)
    .keep_alive(Duration::from_secs(75))
    .backlog(4096)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(http_listener)
    .context("starting sim HTTP server")?
    .run();
    let server_handle = server.handle();
    let server_task = tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::warn!(error = %e, "sim HTTP server stopped with an error");
        }
    });

    let (smtp_shutdown, shutdown_rx) = watch::channel(false);
    let smtp_done = match smtp::spawn(smtp_listener, state.clone(), shutdown_rx) {
        Ok(done) => done,
        Err(e) => {
            server_handle.stop(false).await;
            return Err(anyhow::Error::new(e).context("starting sim SMTP thread"));
        }
    };

    tracing::debug!(%http_addr, %smtp_addr, "msghub sim started");
    Ok(SimHandle {
        http_addr,
        smtp_addr,
        state,
        server: server_handle,
        server_task: Some(server_task),
        smtp_shutdown,
        smtp_done: Some(smtp_done),
    })
}

/// Registers every HTTP route of the simulator.
fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v3/push")
            .route(web::post().to(jpush::push))
            .route(web::route().to(jpush::method_not_allowed)),
    )
    .service(
        web::resource("/v3/push/validate")
            .route(web::post().to(jpush::validate))
            .route(web::route().to(jpush::method_not_allowed)),
    )
    .service(
        web::resource("/v3/push/{msg_id}")
            .route(web::delete().to(jpush::recall))
            .route(web::route().to(jpush::method_not_allowed)),
    )
    .service(
        web::resource("/")
            // Tencent API 3.0 names its action in a header; Aliyun RPC in the form.
            .route(
                web::post()
                    .guard(actix_web::guard::fn_guard(|ctx| {
                        ctx.head().headers().contains_key("x-tc-action")
                    }))
                    .to(tencent::api),
            )
            .route(web::get().to(aliyun::rpc))
            .route(web::post().to(aliyun::rpc)),
    )
    .service(web::resource("/webhook/{name}").route(web::post().to(webhook::receive)))
    .service(web::resource("/cgi-bin/token").route(web::get().to(wechat::classic_token)))
    .service(web::resource("/cgi-bin/stable_token").route(web::post().to(wechat::stable_token)))
    .service(
        web::resource("/cgi-bin/message/template/send")
            .route(web::post().to(wechat::template_send)),
    )
    .service(
        web::resource("/cgi-bin/message/subscribe/send")
            .route(web::post().to(wechat::subscribe_send)),
    )
    .service(
        web::resource("/open-apis/auth/v3/tenant_access_token/internal")
            .route(web::post().to(feishu::tenant_token)),
    )
    .service(web::resource("/open-apis/im/v1/messages").route(web::post().to(feishu::send)))
    .service(
        web::resource("/open-apis/im/v1/messages/{message_id}")
            .route(web::delete().to(feishu::recall)),
    )
    .service(web::resource("/gateway.do").route(web::post().to(alipay::gateway)))
    .service(web::resource("/cgi-bin/gettoken").route(web::get().to(wecom::gettoken)))
    .service(web::resource("/cgi-bin/message/send").route(web::post().to(wecom::send)))
    .service(web::resource("/cgi-bin/message/recall").route(web::post().to(wecom::recall)))
    .service(web::resource("/gettoken").route(web::get().to(dingtalk::gettoken)))
    .service(
        web::resource("/topapi/message/corpconversation/asyncsend_v2")
            .route(web::post().to(dingtalk::send)),
    )
    .service(
        web::resource("/topapi/message/corpconversation/getsendprogress")
            .route(web::post().to(dingtalk::progress)),
    )
    .service(
        web::resource("/topapi/message/corpconversation/getsendresult")
            .route(web::post().to(dingtalk::result)),
    )
    .service(
        web::resource("/topapi/message/corpconversation/recall")
            .route(web::post().to(dingtalk::recall)),
    )
    .configure(control::configure);
}

/// Starts the simulator, prints its addresses and runs until Ctrl-C.
pub async fn run_cli(config: SimConfig) -> anyhow::Result<()> {
    let handle = start(config).await?;
    println!(
        "msghub sim: http on {}, smtp on {}",
        handle.http_addr, handle.smtp_addr
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    handle.stop().await;
    Ok(())
}
