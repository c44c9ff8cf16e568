//! Connects the dispatch topology's provider port to the real adapters.

use std::sync::Arc;
use std::time::Duration;

use msghub_actors::provider::Provider;
use msghub_actors::registry::ProviderFactory;
use msghub_actors::store::ChannelSpec;
use msghub_providers::AdapterOptions;

use crate::settings::ProviderSettings;

pub struct Adapters {
    options: AdapterOptions,
}

impl Adapters {
    pub fn new(settings: &ProviderSettings) -> Adapters {
        Adapters {
            options: AdapterOptions {
                request_timeout: Duration::from_millis(settings.request_timeout_ms.max(1)),
                pool_size: settings.pool_size.max(1),
            },
        }
    }
}

impl ProviderFactory for Adapters {
    fn build(&self, spec: &ChannelSpec) -> Result<Arc<dyn Provider>, String> {
        msghub_providers::build(spec.channel_type, &spec.credentials, &self.options)
            .map_err(|e| e.to_string())
    }
}
