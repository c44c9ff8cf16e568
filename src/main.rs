//! The `msghub` command: `serve` (the hub, optionally with the simulator) and `sim`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use msghub::settings::Settings;
use msghub::startup::Application;
use msghub::{demo, telemetry};

/// mimalloc instead of the system allocator: the hub allocates and frees small buffers per
/// request, message and provider call on every thread, and glibc's malloc and free were about
/// a fifth of the runtime threads' time in a one-user send profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "msghub",
    version,
    about = "Unified messaging hub with a JUMS-compatible API"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (the default command).
    Serve {
        /// A TOML settings file (see config/default.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also run the provider simulator and create demo channels, a source and users.
        #[arg(long)]
        demo: bool,
    },
    /// Run only the provider simulator.
    Sim {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    actix_web::rt::System::new().block_on(async move {
        match cli.command.unwrap_or(Command::Serve {
            config: None,
            demo: false,
        }) {
            Command::Serve { config, demo } => serve(config, demo).await,
            Command::Sim { config } => {
                let settings = Settings::load(config.as_deref())?;
                telemetry::init_logging(&settings.log);
                msghub_sim::run_cli(sim_config(&settings)).await
            }
        }
    })
}

fn sim_config(settings: &Settings) -> msghub_sim::SimConfig {
    msghub_sim::SimConfig {
        http_port: settings.simulator.http_port,
        smtp_port: settings.simulator.smtp_port,
        ..msghub_sim::SimConfig::default()
    }
}

async fn serve(config: Option<PathBuf>, with_demo: bool) -> anyhow::Result<()> {
    let settings = Settings::load(config.as_deref())?;
    telemetry::init_logging(&settings.log);
    let sim = if with_demo {
        Some(msghub_sim::start(sim_config(&settings)).await?)
    } else {
        None
    };
    let mut settings = settings;
    if with_demo && settings.bounces.domain.is_empty() && settings.bounces.smtp_listen.is_empty() {
        // The simulator's mail server bounces some recipients (`hardbounce…@`, `fullbox…@`,
        // `delayed…@`) to the hub's return paths, delivered to this listener.
        settings.bounces.domain = "bounces.msghub.local".into();
        settings.bounces.smtp_listen = "127.0.0.1:0".into();
    }
    let bounce_settings = settings.bounces.clone();
    let bind = settings.server.bind.clone();
    let mut app = Application::build(settings).await?;
    let generated = app.generated_admin_token.take();
    if let Some(sim) = &sim {
        let cfg = msghub_sim::SimConfig::default();
        let endpoints = demo::SimEndpoints {
            http_base: format!("http://{}", sim.http_addr),
            smtp_port: sim.smtp_addr.port(),
            jpush_app_key: cfg.jpush_app_key,
            jpush_master_secret: cfg.jpush_master_secret,
            aliyun_key_id: cfg.aliyun_access_key_id,
            aliyun_key_secret: cfg.aliyun_access_key_secret,
            webhook_secret: cfg.webhook_secret,
            wechat_appid: cfg.wechat_appid,
            wechat_secret: cfg.wechat_secret,
            wechat_token: cfg.wechat_token,
            wecom_corpid: cfg.wecom_corpid,
            wecom_corpsecret: cfg.wecom_corpsecret,
            wecom_agentid: cfg.wecom_agentid,
            dingtalk_appkey: cfg.dingtalk_appkey,
            dingtalk_appsecret: cfg.dingtalk_appsecret,
            dingtalk_agent_id: cfg.dingtalk_agent_id,
            feishu_app_id: cfg.feishu_app_id,
            feishu_app_secret: cfg.feishu_app_secret,
            alipay_app_id: cfg.alipay_app_id,
            alipay_private_key: msghub_sim::alipay::APP_PRIVATE_KEY.to_string(),
            alipay_public_key: msghub_sim::alipay::platform_public_key_pem(),
        };
        let setup = demo::prepare(&app.state(), &endpoints, generated.clone()).await?;
        // The simulated Aliyun account reports SMS delivery to the demo SMS channel's receipt
        // URL, and the simulated WeChat account pushes its events to the demo wechatoa
        // channel's, as an operator would set them in the providers' consoles (JPush gets its
        // URL with every push).
        for kind in ["sms", "wechatoa"] {
            if let Some((_, id)) = setup.channels.iter().find(|(t, _)| t == kind) {
                let state = app.state();
                let url =
                    msghub::http::receipts::receipt_url(&state.public_url, &state.crypto, *id);
                let config = msghub_sim::ReceiptConfig {
                    report_url: Some(url),
                    ..msghub_sim::ReceiptConfig::default()
                };
                if let Err(e) = sim.state.set_receipts(kind, config) {
                    tracing::warn!(error = %e, channel = kind, "the simulator refused the receipt URL");
                }
            }
        }
        if let Some(listener) = app.bounce_addr() {
            let addresses = msghub::bounces::addresses(&bounce_settings, &app.state().crypto);
            let config = msghub_sim::BounceConfig {
                relay: listener.to_string(),
                delay_ms: 200,
                failed_ratio: 0.0,
                feedback_address: addresses.map(|a| a.feedback_address()),
            };
            if let Err(e) = sim.state.set_bounces(Some(config)) {
                tracing::warn!(error = %e, "the simulator refused the bounce relay");
            }
        }
        let api = format!("http://127.0.0.1:{}", app.port());
        println!(
            "{}",
            demo::banner(
                &setup,
                &api,
                &endpoints.http_base,
                &sim.smtp_addr.to_string()
            )
        );
    } else if let Some(token) = &generated {
        println!("msghub: generated the admin token for /api (shown only this once): {token}");
    }
    tracing::info!(bind = %bind, port = app.port(), "msghub listening");
    app.run_until_stopped().await?;
    Ok(())
}
