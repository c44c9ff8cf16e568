//! Connects the dispatch topology's provider port to the real adapters.

use std::sync::Arc;
use std::time::Duration;

use msghub_actors::provider::Provider;
use msghub_actors::registry::ProviderFactory;
use msghub_actors::store::ChannelSpec;
use msghub_providers::AdapterOptions;

use crate::http::receipts::receipt_url;
use crate::http::unsubscribe;
use crate::settings::{BounceSettings, ProviderSettings};
use crate::storage::crypto::Crypto;

pub struct Adapters {
    options: AdapterOptions,
    /// Email carries one-click unsubscribe links.
    list_unsubscribe: bool,
    /// This server's public URL and key, for each channel's receipt URL.
    public_url: String,
    crypto: Crypto,
}

impl Adapters {
    /// `max_calls`: the most provider calls one channel has under way (the real-time and bulk
    /// lanes' in-flight budgets together).
    pub fn new(
        settings: &ProviderSettings,
        bounces: &BounceSettings,
        max_calls: usize,
        public_url: String,
        crypto: Crypto,
    ) -> Adapters {
        Adapters {
            options: AdapterOptions {
                request_timeout: Duration::from_millis(settings.request_timeout_ms.max(1)),
                pool_size: settings.pool_size.max(1),
                max_calls: max_calls.max(1),
                receipt_url: None,
                unsubscribe: None,
                bounces: crate::bounces::addresses(bounces, &crypto),
            },
            list_unsubscribe: settings.email_list_unsubscribe,
            public_url,
            crypto,
        }
    }
}

impl ProviderFactory for Adapters {
    fn build(&self, spec: &ChannelSpec) -> Result<Arc<dyn Provider>, String> {
        let options = AdapterOptions {
            receipt_url: Some(receipt_url(&self.public_url, &self.crypto, spec.id)),
            unsubscribe: self
                .list_unsubscribe
                .then(|| unsubscribe::links(&self.public_url, &self.crypto, spec.id)),
            ..self.options.clone()
        };
        msghub_providers::build(spec.channel_type, &spec.credentials, &options)
            .map_err(|e| e.to_string())
    }
}
