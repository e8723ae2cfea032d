//! The state shared by every handler.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::analytics::Hub;
use crate::auth::Auth;
use crate::cache::TranscodeCache;
use crate::config::Config;
use crate::events::Events;
use crate::jobs::Jobs;
use crate::live::LiveHub;
use crate::storage::Store;
use crate::vod::VodCache;

/// Shared state: configuration, the store and the metrics handle. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    store: Store,
    metrics: PrometheusHandle,
    cache: TranscodeCache,
    jobs: Jobs,
    auth: Auth,
    analytics: Hub,
    events: Events,
    vod: VodCache,
    live: LiveHub,
}

impl AppState {
    /// Builds the state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        store: Store,
        metrics: PrometheusHandle,
        cache: TranscodeCache,
        jobs: Jobs,
        auth: Auth,
        analytics: Hub,
        events: Events,
    ) -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let vod = VodCache::new(config.hls_memory_bytes, cpus);
        Self {
            inner: Arc::new(Inner {
                live: LiveHub::default(),
                vod,
                config,
                store,
                metrics,
                cache,
                jobs,
                auth,
                analytics,
                events,
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The metadata store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The transcode cache.
    pub fn cache(&self) -> &TranscodeCache {
        &self.inner.cache
    }

    /// The HLS VOD renditions in memory.
    pub fn vod(&self) -> &VodCache {
        &self.inner.vod
    }

    /// The live channels on air on this node.
    pub fn live(&self) -> &LiveHub {
        &self.inner.live
    }

    /// Listeners of live stream `id` now, on every node (listeners on this node plus those
    /// other nodes report through NATS).
    pub fn viewers(&self, id: &str) -> usize {
        self.inner.live.viewers(id)
    }

    /// The job queue.
    pub fn jobs(&self) -> &Jobs {
        &self.inner.jobs
    }

    /// Token keys and rate limiters.
    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    /// Listener analytics.
    pub fn analytics(&self) -> &Hub {
        &self.inner.analytics
    }

    /// The events (in-process bus, and NATS when configured).
    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    /// The Prometheus handle (renders `/metrics`).
    pub fn metrics(&self) -> &PrometheusHandle {
        &self.inner.metrics
    }
}
