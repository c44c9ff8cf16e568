//! How receipts leave the simulator: the runtime their tasks run on, the HTTP client, and the
//! rule that they only ever go to loopback receivers.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::Handle;

use super::outbox::MAX_IN_FLIGHT_POSTS;

/// The runtime receipt tasks run on and the HTTP client they post with, shared by every outbox
/// of one simulator.
#[derive(Default)]
pub(crate) struct Courier {
    runtime: OnceLock<Handle>,
    client: OnceLock<Option<reqwest::Client>>,
}

impl Courier {
    /// Runs receipt tasks on `runtime` (the one `start` was called on) rather than on whichever
    /// HTTP worker accepted the call, so pooled connections live as long as the simulator.
    pub(crate) fn bind(&self, runtime: Handle) {
        let _ = self.runtime.set(runtime);
    }

    pub(super) fn runtime(&self) -> Option<Handle> {
        self.runtime
            .get()
            .cloned()
            .or_else(|| Handle::try_current().ok())
    }

    pub(super) fn client(&self) -> Option<&reqwest::Client> {
        self.client.get_or_init(build_client).as_ref()
    }
}

/// A plain client for loopback receivers: no proxy (a proxy would carry receipts off the host),
/// no redirects (a redirect could point anywhere).
fn build_client() -> Option<reqwest::Client> {
    // reqwest is built with `rustls-no-provider` and panics without a process-wide provider.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(MAX_IN_FLIGHT_POSTS * 2)
        .build()
        .inspect_err(|e| tracing::warn!(error = %e, "cannot build the receipt HTTP client"))
        .ok()
}

/// The host of `url` when it is an http(s) URL on a loopback address or `localhost`.
pub(crate) fn loopback_host(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    if !matches!(u.scheme(), "http" | "https") {
        return None;
    }
    let ok = match u.host()? {
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
    };
    ok.then(|| u.host_str().unwrap_or_default().to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_receivers_are_allowed() {
        for ok in [
            "http://127.0.0.1:8080/receipts/1/t",
            "http://[::1]:9/x",
            "http://localhost/x",
            "https://LOCALHOST:1/x",
        ] {
            assert!(loopback_host(ok).is_some(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1/x",
            "http://example.com/x",
            "http://localhost.example.com/x",
            "http://127.0.0.1.nip.io/x",
            "ftp://127.0.0.1/x",
            "http://[::2]/x",
            "not a url",
        ] {
            assert!(loopback_host(bad).is_none(), "{bad}");
        }
    }
}
