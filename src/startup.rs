//! Building and running the server: database, keys, dispatch topology, HTTP.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use anyhow::Context;
use msghub_actors::batcher::Batcher;
use msghub_actors::channel::ChannelTuning;
use msghub_actors::local_time::QuietHours;
use msghub_actors::planner::PlannerConfig;
use msghub_actors::retry::RetryPolicy;
use msghub_actors::threads::OwnRuntime;
use msghub_actors::timers::TimerConfig;
use msghub_actors::{Dispatch, TopologyConfig};

use crate::accept;
use crate::adapters::Adapters;
use crate::callbacks::Callbacks;
use crate::http::auth::SourceCache;
use crate::http::{self, AppState};
use crate::settings::Settings;
use crate::storage::crypto::Crypto;
use crate::storage::dispatch::Store;
use crate::storage::intake::Intake;
use crate::storage::messages::{MessageIds, NewMessage};
use crate::storage::sources::hash_secret;
use crate::storage::{Db, now_ms};
use crate::telemetry;

const ADMIN_TOKEN_SETTING: &str = "admin_token_sha256";

/// rustls needs exactly one process-wide crypto provider; msghub uses ring everywhere.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub struct Application {
    port: u16,
    /// Where the bounce listener listens, when it is configured.
    bounce_addr: Option<std::net::SocketAddr>,
    server: actix_web::dev::Server,
    state: Arc<AppState>,
    /// Set when this start generated the admin token (first start without a configured one).
    pub generated_admin_token: Option<String>,
}

/// The configured public URL, or `http://<bound address>` (loopback for a wildcard bind).
fn public_url(configured: &str, local: std::net::SocketAddr) -> String {
    if !configured.is_empty() {
        return configured.trim_end_matches('/').to_string();
    }
    let host = match local.ip() {
        ip if ip.is_unspecified() && ip.is_ipv6() => "[::1]".to_string(),
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}", local.port())
}

impl Application {
    /// Connect, migrate, resume unfinished work and bind the listener. Must run inside an
    /// actix `System` (`#[actix_web::main]`).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        install_crypto_provider();
        crate::bounces::check(&settings.bounces)?;
        let metrics = telemetry::metrics_handle();
        let db = Db::connect(&settings.database)
            .await
            .with_context(|| format!("opening database {}", redact_url(&settings.database.url)))?;
        // SQLite's writer works for dispatch, receipts and the intake mover: background work.
        msghub_actors::threads::renice_named(
            crate::storage::WRITER_THREAD,
            settings.server.background_nice,
        );
        let crypto = Crypto::load_or_create(
            settings.security.encryption_key.expose(),
            &settings.security.data_dir,
        )
        .context("loading the credential encryption key")?;
        let (admin_token_hash, generated_admin_token) = admin_token(&db, &settings).await?;
        let callbacks = Callbacks::start(db.clone(), crypto.clone(), &settings.callbacks)
            .context("starting the status callback service")?;
        let mut store = Store::new(db.clone(), crypto.clone(), callbacks.clone());
        let pull_policy = crate::pulls::PullPolicy::of(&settings.providers);
        store.pull_first_ms = pull_policy.first_ms;
        let store = Arc::new(store);
        // Bound before the topology starts: adapters put this server's receipt URL in
        // provider requests.
        let listener = TcpListener::bind(&settings.server.bind)
            .with_context(|| format!("binding {}", settings.server.bind))?;
        let local = listener.local_addr()?;
        let port = local.port();
        let public_url = public_url(&settings.server.public_url, local);
        let d = &settings.dispatch;
        let unsubscribe_replies = crate::http::sms_replies::UnsubscribeReplies::new(
            &settings.strategies.sms_unsubscribe_replies,
        )
        .map_err(|e| anyhow::anyhow!("strategies.sms_unsubscribe_replies: {e}"))?;
        let topology = TopologyConfig {
            planner: PlannerConfig {
                shard_size: d.shard_size,
                page_shards: d.page_shards,
                max_active_realtime: d.max_active_realtime,
                max_active_bulk: d.max_active_bulk,
                sweep_interval: Duration::from_millis(d.sweep_interval_ms.max(10)),
                sweep_batch: 1000,
                quiet_hours: QuietHours::parse(
                    &settings.strategies.quiet_hours,
                    &settings.strategies.quiet_hours_utc_offset,
                )
                .map_err(|e| anyhow::anyhow!("strategies.quiet_hours: {e}"))?,
            },
            realtime_shard_concurrency: d.realtime_shard_concurrency,
            bulk_shard_concurrency: d.bulk_shard_concurrency,
            shard_queue_capacity: d.shard_queue_capacity,
            write_batch_max: d.write_batch_max,
            background_nice: settings.server.background_nice,
            deadline_slice_us: settings.server.request_slice_us,
            write_batch_rows: d.write_batch_rows,
            channel: ChannelTuning {
                lane_capacity: d.lane_capacity,
                realtime_in_flight: d.realtime_in_flight,
                bulk_in_flight: d.bulk_in_flight,
                retry: RetryPolicy {
                    max_attempts: d.max_attempts.max(1),
                    base_backoff: Duration::from_millis(d.backoff_base_ms),
                    max_backoff: Duration::from_millis(d.backoff_max_ms.max(d.backoff_base_ms)),
                },
            },
            timers: TimerConfig {
                poll_interval: Duration::from_millis(d.timer_poll_ms.max(1)),
                batch: 256,
            },
        };
        let dispatch = Dispatch::start(
            store.clone(),
            Arc::new(Adapters::new(
                &settings.providers,
                &settings.bounces,
                d.realtime_in_flight + d.bulk_in_flight,
                public_url.clone(),
                crypto.clone(),
            )),
            topology,
        );
        // On SQLite, accepts go to the intake journal and a mover stores them; elsewhere they
        // are stored directly. With the journal switched off, one left by an earlier run is
        // still opened, drained by the mover and counted in the id seed.
        let intake = Intake::open(&settings.database, settings.accept.journal)
            .await
            .context("opening the intake journal")?
            .map(Arc::new);
        if let Some(intake) = &intake {
            intake.limit_backlog(settings.accept.max_backlog);
        }
        let journaled = intake.clone().filter(|_| settings.accept.journal);
        let (accept_store, accept_dispatch, accept_intake) =
            (store.clone(), dispatch.clone(), journaled.clone());
        // The journal's appends get a thread of their own: on the main runtime each waited for
        // whatever the storage writers' tasks were doing there (a blast's shard opens and
        // outcomes). Direct accepts hand messages to the dispatch topology and stay here.
        let accept_runtime = match &journaled {
            Some(_) => Some(
                OwnRuntime::new("msghub-accept", settings.server.request_slice_us)
                    .context("starting the accept thread")?,
            ),
            None => None,
        };
        let _entered = accept_runtime.as_ref().map(|rt| rt.handle().enter());
        let accept = Batcher::spawn(
            "messages",
            settings.accept.queue_capacity,
            settings.accept.batch_max,
            move |items: Vec<NewMessage>| {
                let (store, dispatch, intake) = (
                    accept_store.clone(),
                    accept_dispatch.clone(),
                    accept_intake.clone(),
                );
                async move {
                    match intake {
                        Some(intake) => intake
                            .append(&store.db, items)
                            .await
                            .map_err(|e| e.to_string()),
                        None => accept::store_and_dispatch(&store, &dispatch, items, true).await,
                    }
                }
            },
        );
        drop(_entered);
        let mut floor = db.max_message_id().await?;
        if let Some(intake) = &intake {
            floor = floor.max(intake.max_id().await?);
            actix_web::rt::spawn(accept::run_mover(
                intake.clone(),
                store.clone(),
                dispatch.clone(),
                settings.accept.batch_max,
            ));
        }
        let ids = MessageIds::new(floor);
        let receipts = crate::http::receipts::writer(db.clone(), callbacks.clone(), 4096, 64);
        let state = Arc::new(AppState {
            sources: SourceCache::new(db.clone()),
            callbacks,
            rules: crate::http::rules::RuleCache::new(db.clone()),
            receipts,
            receipt_channels: Default::default(),
            unsubscribe_replies,
            public_url,
            db,
            crypto,
            dispatch,
            accept,
            intake,
            _accept_runtime: accept_runtime,
            ids,
            admin_token_hash,
            metrics: metrics.clone(),
        });
        if let Some(handle) = metrics {
            actix_web::rt::spawn(async move {
                loop {
                    actix_web::rt::time::sleep(Duration::from_secs(5)).await;
                    handle.run_upkeep();
                }
            });
        }
        actix_web::rt::spawn(crate::pulls::run(state.clone(), pull_policy));
        let bounce_addr = crate::bounces::start(&settings.bounces, state.clone())?;
        let data = web::Data::new(state.clone());
        let max_body = settings.server.max_body_bytes;
        let slice_us = settings.server.request_slice_us;
        // The factory runs on each HTTP worker thread as it starts.
        let mut server = HttpServer::new(move || {
            msghub_actors::threads::request_slice_current(slice_us);
            App::new()
                .app_data(data.clone())
                .configure(|cfg| http::configure(cfg, max_body))
        })
        .listen(listener)?
        .shutdown_timeout(5);
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        Ok(Application {
            port,
            bounce_addr,
            server: server.run(),
            state,
            generated_admin_token,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address of the bounce listener (SMTP), when one is configured.
    pub fn bounce_addr(&self) -> Option<std::net::SocketAddr> {
        self.bounce_addr
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }

    /// The server future, for callers that run it beside other work.
    pub fn into_server(self) -> actix_web::dev::Server {
        self.server
    }
}

/// The stored admin token hash: from settings when configured, else generated on first start.
async fn admin_token(db: &Db, settings: &Settings) -> anyhow::Result<(String, Option<String>)> {
    let configured = settings.security.admin_token.expose();
    if !configured.is_empty() {
        let hash = hash_secret(configured);
        db.put_setting(ADMIN_TOKEN_SETTING, &hash).await?;
        return Ok((hash, None));
    }
    if let Some(hash) = db.setting(ADMIN_TOKEN_SETTING).await? {
        return Ok((hash, None));
    }
    let token = format!("adm_{}", random_hex(24));
    let hash = hash_secret(&token);
    db.put_setting(ADMIN_TOKEN_SETTING, &hash).await?;
    db.put_setting("admin_token_created_at", &now_ms().to_string())
        .await?;
    Ok((hash, Some(token)))
}

pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A database URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}
