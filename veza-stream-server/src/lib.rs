//! `veza-stream-server`: the thin server of Veza Stream. It wires `veza-audio` (codecs) and
//! `veza-stream-core` (streaming logic) to HTTP (axum), storage (sqlx: SQLite by default,
//! PostgreSQL in production), and metrics (Prometheus).
//!
//! `main.rs` only bootstraps; [`app`] builds the router from an [`AppState`], so tests drive the
//! API without a socket, and [`start`] runs it on a real port.
//!
//! Status: configuration, storage with migrations, audio upload/metadata/delete/ranged
//! streaming, health, readiness and metrics are here; transcoding jobs, the transcode cache,
//! HLS VOD, streams, events (in process or NATS), the shared cache index (Redis), analytics, auth
//! and live delivery are being built (see the issues).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub mod analytics;
pub mod auth;
pub mod cache;
pub mod config;
pub mod error;
pub mod events;
pub mod http;
pub mod jobs;
pub mod live;
pub mod metrics;
pub mod state;
pub mod storage;
pub mod vod;

pub use config::Config;
pub use error::ApiError;
pub use state::AppState;

/// The router of the whole API for `state`.
pub fn app(state: AppState) -> Router {
    http::router(state)
}

/// Builds the state from a configuration: creates the directories, connects the store (running
/// migrations), installs the metrics recorder, and restores the live recordings a crash
/// interrupted.
///
/// # Errors
/// A message naming what failed (directory, database, metrics).
pub async fn build_state(config: Config) -> anyhow::Result<AppState> {
    use anyhow::Context as _;
    for dir in [&config.data_dir, &config.upload_dir, &config.cache_dir] {
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let store = storage::Store::connect(&config.database_url)
        .await
        .with_context(|| "cannot open the database (DATABASE_URL)".to_string())?;
    let handle = metrics::install().map_err(anyhow::Error::msg)?;
    let cache = match &config.redis_url {
        None => cache::TranscodeCache::open(&config.cache_dir, config.cache_max_bytes),
        Some(url) => {
            cache::TranscodeCache::open_shared(
                &config.cache_dir,
                config.cache_max_bytes,
                url,
                &config.redis_key_prefix,
            )
            .await
        }
    }
    .with_context(|| format!("cannot open the cache in {}", config.cache_dir.display()))?;
    let auth = auth::Auth::new(&config)?;
    let events = events::Events::from_config(&config);
    let workers = config.job_workers;
    let (jobs, queue) = jobs::Jobs::new();
    let limits = auth.limits().clone();
    let hub = analytics::Hub::start(store.clone(), config.analytics_flush_interval);
    let state = AppState::new(config, store, handle, cache, jobs, auth, hub, events);
    // Rate-limit buckets of clients gone quiet are dropped, so the maps stay bounded.
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            limits.forget_idle();
        }
    });
    jobs::spawn_dispatcher(state.clone(), queue, workers);
    match state.config().nats_url.clone() {
        Some(url) => match live::relay::Relay::start(&state, &url).await {
            Ok(r) => state.live().set_relay(r),
            Err(e) => tracing::error!(error = %e, "NATS_URL cannot be used for the live relay"),
        },
        None => {
            // One node: a stream recorded live was cut by a crash; no source survives a restart.
            // (With several nodes, the others may still carry their streams.)
            match state.store().reset_live_streams().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    streams = n,
                    "streams left live by a previous run are off air"
                ),
                Err(e) => tracing::warn!(error = %e, "cannot reset live streams"),
            }
        }
    }
    // Recordings a crash interrupted become audio files before anything is served.
    live::record::recover(&state).await;
    Ok(state)
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// True when it serves HTTPS.
    pub tls: bool,
    shutdown: Option<oneshot::Sender<()>>,
    tls_handle: Option<axum_server::Handle<SocketAddr>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    live: live::LiveHub,
}

impl Running {
    /// Stops accepting, lets requests in flight finish, and waits.
    ///
    /// # Errors
    /// The server's I/O error, if it failed.
    pub async fn stop(mut self) -> std::io::Result<()> {
        // Live streams end first, so their listeners' responses finish and their recordings
        // are finalised (bounded: what is not finished is restored at the next start).
        self.live.end_all();
        if !self.live.wait_finishing(Duration::from_secs(20)).await {
            tracing::warn!(
                "recordings still finishing at shutdown; they are restored at the next start"
            );
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.tls_handle.take() {
            h.graceful_shutdown(Some(std::time::Duration::from_secs(30)));
        }
        self.task.await.unwrap_or(Ok(()))
    }
}

/// The rustls configuration of `TLS_CERT_FILE` and `TLS_KEY_FILE`.
async fn tls_config(
    cfg: &Config,
) -> std::io::Result<Option<axum_server::tls_rustls::RustlsConfig>> {
    let (Some(cert), Some(key)) = (&cfg.tls_cert_file, &cfg.tls_key_file) else {
        return Ok(None);
    };
    // One process-wide crypto provider (ring); a second install is a no-op error.
    let _ = rustls::crypto::ring::default_provider().install_default();
    axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
        .await
        .map(Some)
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "TLS_CERT_FILE/TLS_KEY_FILE ({}, {}): {e}",
                    cert.display(),
                    key.display()
                ),
            )
        })
}

/// Binds `config.host:config.port` and serves `state` until stopped.
///
/// # Errors
/// When the address cannot be bound.
pub async fn start(state: AppState) -> std::io::Result<Running> {
    let cfg = state.config();
    let listener = TcpListener::bind((cfg.host, cfg.port)).await?;
    let addr = listener.local_addr()?;
    if let Some(port) = cfg.prometheus_port {
        let metrics_app = Router::new()
            .route(
                "/metrics",
                axum::routing::get(
                    |axum::extract::State(s): axum::extract::State<AppState>| async move {
                        metrics::update_process_gauges(s.config());
                        s.metrics().render()
                    },
                ),
            )
            .with_state(state.clone());
        let ml = TcpListener::bind((cfg.host, port)).await?;
        tokio::spawn(async move { axum::serve(ml, metrics_app).await });
    }
    let tls = tls_config(cfg).await?;
    let state_for_live = state.clone();
    let live_hub = state.live().clone();
    let router = app(state).into_make_service_with_connect_info::<SocketAddr>();
    if let Some(tls) = tls {
        let handle = axum_server::Handle::new();
        let server =
            axum_server::from_tcp_rustls(listener.into_std()?, tls)?.handle(handle.clone());
        let task = tokio::spawn(async move { server.serve(router).await });
        return Ok(Running {
            addr,
            tls: true,
            shutdown: None,
            tls_handle: Some(handle),
            task,
            live: live_hub,
        });
    }
    let (tx, rx) = oneshot::channel::<()>();
    // Icecast sources and progressive listeners are served as they arrive; the rest goes to
    // hyper (see `live::icecast`). Accepted sockets get TCP_NODELAY: responses go out whole at
    // once, with no Nagle delay on the last partial packet of a keep-alive response.
    let (hyper_conns, accept_task) = live::icecast::accept_loop(state_for_live, listener)?;
    let task = tokio::spawn(async move {
        use axum::serve::ListenerExt as _;
        let r = axum::serve(hyper_conns.tap_io(|_| {}), router)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
        accept_task.abort();
        r
    });
    Ok(Running {
        addr,
        tls: false,
        shutdown: Some(tx),
        tls_handle: None,
        task,
        live: live_hub,
    })
}
