//! `veza-stream-server`: the thin server of Veza Stream. It wires `veza-audio` (codecs) and
//! `veza-stream-core` (streaming logic) to HTTP (axum), storage (sqlx: SQLite by default,
//! PostgreSQL in production), and metrics (Prometheus).
//!
//! `main.rs` only bootstraps; [`app`] builds the router from an [`AppState`], so tests drive the
//! API without a socket, and [`start`] runs it on a real port.
//!
//! Status: configuration, storage with migrations, audio upload/metadata/delete/ranged
//! streaming, health, readiness and metrics are here; transcoding jobs, the transcode cache,
//! HLS VOD, streams, analytics, events, auth and live delivery are being built (see the issues).

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub mod cache;
pub mod config;
pub mod error;
pub mod http;
pub mod jobs;
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
/// migrations) and installs the metrics recorder.
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
    let cache = cache::TranscodeCache::open(&config.cache_dir, config.cache_max_bytes)
        .with_context(|| format!("cannot open the cache in {}", config.cache_dir.display()))?;
    let workers = config.job_workers;
    let (jobs, queue) = jobs::Jobs::new();
    let state = AppState::new(config, store, handle, cache, jobs);
    jobs::spawn_dispatcher(state.clone(), queue, workers);
    Ok(state)
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, lets requests in flight finish, and waits.
    ///
    /// # Errors
    /// The server's I/O error, if it failed.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap_or(Ok(()))
    }
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
    let (tx, rx) = oneshot::channel::<()>();
    let router = app(state);
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    Ok(Running {
        addr,
        shutdown: Some(tx),
        task,
    })
}
