//! Shared helpers for the simulator integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use msghub_sim::{SimConfig, SimHandle};

/// Starts a simulator with the default config (plus optional tweaks).
pub async fn sim(tweak: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut cfg = SimConfig::default();
    tweak(&mut cfg);
    msghub_sim::start(cfg).await.expect("start sim")
}

/// A reqwest client with the ring provider installed.
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().expect("client")
}
