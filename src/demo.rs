//! `msghub serve --demo`: the hub together with the bundled provider simulator, with a source,
//! one channel of each supported type pointing at the simulator, and two demo users, so a
//! newcomer can send a first message with one curl command.

use msghub_actors::provider::ChannelType;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::http::AppState;
use crate::storage::channels::{ChannelPatch, NewChannel};
use crate::storage::users::{OpKind, UserOp};

const DEMO_SETTING: &str = "demo_setup";

/// What the demo created, kept encrypted so later demo starts can print it again.
#[derive(Serialize, Deserialize)]
pub struct DemoSetup {
    pub source_key: String,
    pub source_secret: String,
    pub admin_token: Option<String>,
    pub channels: Vec<(String, i64)>,
}

/// Simulator endpoints and credentials the demo channels use.
pub struct SimEndpoints {
    pub http_base: String,
    pub smtp_port: u16,
    pub jpush_app_key: String,
    pub jpush_master_secret: String,
    pub aliyun_key_id: String,
    pub aliyun_key_secret: String,
    pub webhook_secret: String,
    pub wechat_appid: String,
    pub wechat_secret: String,
    pub wechat_token: String,
    pub wecom_corpid: String,
    pub wecom_corpsecret: String,
    pub wecom_agentid: u64,
    pub dingtalk_appkey: String,
    pub dingtalk_appsecret: String,
    pub dingtalk_agent_id: u64,
    pub feishu_app_id: String,
    pub feishu_app_secret: String,
    pub alipay_app_id: String,
    pub alipay_private_key: String,
    pub alipay_public_key: String,
}

fn credentials(t: ChannelType, sim: &SimEndpoints) -> Value {
    match t {
        ChannelType::App => {
            json!({"app_key": sim.jpush_app_key, "master_secret": sim.jpush_master_secret, "base_url": sim.http_base})
        }
        ChannelType::Sms => {
            json!({"access_key_id": sim.aliyun_key_id, "access_key_secret": sim.aliyun_key_secret,
                                   "sign_name": "msghub", "base_url": sim.http_base})
        }
        ChannelType::Email => {
            json!({"host": "127.0.0.1", "port": sim.smtp_port, "tls": "none", "from": "msghub demo <demo@msghub.local>"})
        }
        ChannelType::Wechatoa => {
            json!({"appid": sim.wechat_appid, "secret": sim.wechat_secret, "token": sim.wechat_token,
                   "base_url": sim.http_base})
        }
        // The simulator's WeChat app also stands for the mini-program.
        ChannelType::Wechatmp => {
            json!({"appid": sim.wechat_appid, "secret": sim.wechat_secret, "base_url": sim.http_base})
        }
        ChannelType::AlipayLife => {
            json!({"app_id": sim.alipay_app_id, "private_key": sim.alipay_private_key,
                   "alipay_public_key": sim.alipay_public_key,
                   "base_url": format!("{}/gateway.do", sim.http_base)})
        }
        ChannelType::Feishu => {
            json!({"app_id": sim.feishu_app_id, "app_secret": sim.feishu_app_secret,
                   "base_url": format!("{}/open-apis", sim.http_base)})
        }
        ChannelType::Wechatwk => {
            json!({"corpid": sim.wecom_corpid, "corpsecret": sim.wecom_corpsecret,
                   "agentid": sim.wecom_agentid, "base_url": sim.http_base})
        }
        ChannelType::DingtalkCc => {
            json!({"appkey": sim.dingtalk_appkey, "appsecret": sim.dingtalk_appsecret,
                   "agent_id": sim.dingtalk_agent_id, "base_url": sim.http_base})
        }
        ChannelType::Webhook => {
            json!({"url": format!("{}/webhook/demo", sim.http_base), "secret": sim.webhook_secret})
        }
    }
}

const DEMO_TYPES: [ChannelType; 10] = [
    ChannelType::App,
    ChannelType::Sms,
    ChannelType::Email,
    ChannelType::Webhook,
    ChannelType::Wechatoa,
    ChannelType::Wechatwk,
    ChannelType::DingtalkCc,
    ChannelType::Wechatmp,
    ChannelType::Feishu,
    ChannelType::AlipayLife,
];

/// Create the demo data on first use; on later starts point the channels at the simulator's
/// current addresses. Returns what to print.
pub async fn prepare(
    state: &AppState,
    sim: &SimEndpoints,
    admin_token: Option<String>,
) -> anyhow::Result<DemoSetup> {
    if let Some(sealed) = state.db.setting(DEMO_SETTING).await? {
        let mut setup: DemoSetup = serde_json::from_slice(&state.crypto.decrypt(&sealed)?)?;
        // A demo made by an older version lacks the channel types added since: add them.
        let missing: Vec<ChannelType> = DEMO_TYPES
            .into_iter()
            .filter(|t| !setup.channels.iter().any(|(code, _)| code == t.code()))
            .collect();
        if !missing.is_empty()
            && let Some(source) = state.db.source_by_key(&setup.source_key).await?
        {
            for t in missing {
                let id = create_demo_channel(state, sim, t, source.id).await?;
                setup.channels.push((t.code().to_string(), id));
                // Kept after each channel: a start that fails half-way does not make the
                // same channel twice the next time.
                let sealed = state.crypto.encrypt(&serde_json::to_vec(&setup)?)?;
                state.db.put_setting(DEMO_SETTING, &sealed).await?;
            }
            state.db.apply_user_ops(&demo_users()).await?;
            state.sources.invalidate();
        }
        for (code, id) in &setup.channels {
            if let Some(t) = ChannelType::from_code(code) {
                let patch = ChannelPatch {
                    credentials: Some(credentials(t, sim)),
                    ..ChannelPatch::default()
                };
                state.db.update_channel(&state.crypto, *id, patch).await?;
                state.dispatch.channel_changed(*id).await;
            }
        }
        return Ok(setup);
    }
    let source_key = format!("demo_{}", crate::startup::random_hex(6));
    let source_secret = crate::startup::random_hex(24);
    let source = state
        .db
        .create_source(&state.crypto, &source_key, &source_secret, "demo")
        .await?;
    let mut channels = Vec::new();
    for t in DEMO_TYPES {
        let id = create_demo_channel(state, sim, t, source.id).await?;
        channels.push((t.code().to_string(), id));
    }
    state.db.apply_user_ops(&demo_users()).await?;
    let setup = DemoSetup {
        source_key,
        source_secret,
        admin_token,
        channels,
    };
    let sealed = state.crypto.encrypt(&serde_json::to_vec(&setup)?)?;
    state.db.put_setting(DEMO_SETTING, &sealed).await?;
    state.sources.invalidate();
    Ok(setup)
}

/// A demo channel of type `t` on the simulator, granted to the demo source.
async fn create_demo_channel(
    state: &AppState,
    sim: &SimEndpoints,
    t: ChannelType,
    source_id: i64,
) -> anyhow::Result<i64> {
    let creds = credentials(t, sim);
    let row = state
        .db
        .create_channel(
            &state.crypto,
            NewChannel {
                channel_type: t,
                name: &format!("demo {t} (simulator)"),
                credentials: &creds,
                rate_per_second: 0,
                enabled: true,
            },
        )
        .await?;
    state.db.grant(source_id, row.id).await?;
    Ok(row.id)
}

/// The two demo users, bound on every demo channel type (adding them again changes nothing).
fn demo_users() -> Vec<UserOp> {
    let users = [
        ("demo-user-1", "13800000001", "alice@example.com"),
        ("demo-user-2", "13800000002", "bob@example.com"),
    ];
    users
        .iter()
        .enumerate()
        .map(|(i, (userid, phone, email))| UserOp {
            userid: (*userid).to_string(),
            kind: OpKind::Add,
            tags: Some(vec!["demo".to_string()]),
            bindings: vec![
                (
                    ChannelType::App,
                    "all".into(),
                    vec![format!("demo-regid-{}", i + 1)],
                ),
                (ChannelType::Sms, "all".into(), vec![(*phone).to_string()]),
                (ChannelType::Email, "all".into(), vec![(*email).to_string()]),
                (
                    ChannelType::Webhook,
                    "all".into(),
                    vec![(*userid).to_string()],
                ),
                (
                    ChannelType::Wechatoa,
                    "all".into(),
                    vec![format!("oDemoUser{:019}", i + 1)],
                ),
                (
                    ChannelType::Wechatwk,
                    "all".into(),
                    vec![format!("demo.member{}", i + 1)],
                ),
                (
                    ChannelType::DingtalkCc,
                    "all".into(),
                    vec![format!("demo.staff{}", i + 1)],
                ),
                (
                    ChannelType::Wechatmp,
                    "all".into(),
                    vec![format!("oDemoMini{:019}", i + 1)],
                ),
                (
                    ChannelType::Feishu,
                    "all".into(),
                    vec![format!("ou_demo{:025}", i + 1)],
                ),
                (
                    ChannelType::AlipayLife,
                    "all".into(),
                    vec![format!("2088{:012}", i + 1)],
                ),
            ],
        })
        .collect()
}

/// The welcome text with the first curl commands.
pub fn banner(setup: &DemoSetup, api: &str, sim_http: &str, smtp: &str) -> String {
    let admin = setup
        .admin_token
        .clone()
        .unwrap_or_else(|| "<the admin token printed at first start>".to_string());
    format!(
        "\nmsghub demo is running\n\
         \x20 API            {api}\n\
         \x20 simulator      {sim_http}  (SMTP sink {smtp})\n\
         \x20 source key     {key}\n\
         \x20 source secret  {secret}\n\
         \x20 admin token    {admin}\n\n\
         Send a first message (app push, SMS and email to demo-user-1):\n\
         \x20 curl -s -u {key}:{secret} -H 'Content-Type: application/json' {api}/v1/sent -d '{{\"aud_userid\":[\"demo-user-1\"],\"msg_app\":[{{\"platform\":\"all\",\"notification\":{{\"alert\":\"Hello from msghub\"}}}}],\"msg_sms\":[{{\"temp_id\":\"SMS_0001\",\"temp_para\":{{\"code\":\"1234\"}}}}],\"msg_email\":[{{\"subject\":\"Hello\",\"text\":\"<p>Hello from msghub</p>\"}}]}}'\n\n\
         See it arrive at the simulator:\n\
         \x20 curl -s '{sim_http}/sim/received?channel=app'\n\
         \x20 curl -s '{sim_http}/sim/received?channel=sms'\n\
         \x20 curl -s '{sim_http}/sim/received?channel=email'\n\n\
         A WeChat template message (msg_wechatoa) goes the same way:\n\
         \x20 curl -s -u {key}:{secret} -H 'Content-Type: application/json' {api}/v1/sent -d '{{\"aud_userid\":[\"demo-user-1\"],\"msg_wechatoa\":[{{\"template_id\":\"TPL_demo\",\"data\":{{\"thing1\":\"Hello from msghub\"}}}}]}}'\n\
         \x20 curl -s '{sim_http}/sim/received?channel=wechatoa'\n\n\
         And a WeCom application message (msg_wechatwk) to the demo users' members:\n\
         \x20 curl -s -u {key}:{secret} -H 'Content-Type: application/json' {api}/v1/sent -d '{{\"aud_tag\":[\"demo\"],\"msg_wechatwk\":[{{\"msgtype\":\"text\",\"text\":{{\"content\":\"Hello from msghub\"}}}}]}}'\n\
         \x20 curl -s '{sim_http}/sim/received?channel=wechatwk'\n\n\
         And a DingTalk work notice (msg_dingtalk_cc); the hub asks DingTalk what became of it:\n\
         \x20 curl -s -u {key}:{secret} -H 'Content-Type: application/json' {api}/v1/sent -d '{{\"aud_tag\":[\"demo\"],\"msg_dingtalk_cc\":[{{\"msg\":{{\"msgtype\":\"text\",\"text\":{{\"content\":\"Hello from msghub\"}}}}}}]}}'\n\
         \x20 curl -s '{sim_http}/sim/received?channel=dingtalk_cc'\n\n\
         And a mini-program subscribe message (msg_wechatmp):\n\
         \x20 curl -s -u {key}:{secret} -H 'Content-Type: application/json' {api}/v1/sent -d '{{\"aud_userid\":[\"demo-user-1\"],\"msg_wechatmp\":[{{\"template_id\":\"SUB_demo\",\"page\":\"pages/index\",\"data\":{{\"thing1\":\"Hello from msghub\"}}}}]}}'\n\
         \x20 curl -s '{sim_http}/sim/received?channel=wechatmp'\n\n\
         And a Feishu bot message (msg_feishu):\n\
         \x20 curl -s -u {key}:{secret} -H 'Content-Type: application/json' {api}/v1/sent -d '{{\"aud_userid\":[\"demo-user-1\"],\"msg_feishu\":[{{\"msg_type\":\"text\",\"content\":{{\"text\":\"Hello from msghub\"}}}}]}}'\n\
         \x20 curl -s '{sim_http}/sim/received?channel=feishu'\n\n\
         And an Alipay life account template message (msg_alipay_life):\n\
         \x20 curl -s -u {key}:{secret} -H 'Content-Type: application/json' {api}/v1/sent -d '{{\"aud_userid\":[\"demo-user-1\"],\"msg_alipay_life\":[{{\"template_id\":\"TPL_demo\",\"context\":{{\"head_color\":\"#85be53\",\"url\":\"https://example.com\",\"action_name\":\"View\",\"keyword1\":\"Hello from msghub\"}}}}]}}'\n\
         \x20 curl -s '{sim_http}/sim/received?channel=alipay_life'\n\n\
         Follow the message (use the msgid from the response):\n\
         \x20 curl -s -H 'Authorization: Bearer {admin}' {api}/api/messages/MSGID\n",
        key = setup.source_key,
        secret = setup.source_secret,
    )
}
