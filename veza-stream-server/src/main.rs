//! The `veza-stream-server` binary: bootstrap only. Reads the configuration from the environment
//! (and `VEZA_CONFIG`), opens storage, serves until SIGINT/SIGTERM.

use std::process::ExitCode;

use veza_stream_server::{Config, build_state, start};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                // async_nats logs each reconnection attempt; the server logs an outage once.
                "info,sqlx=warn,symphonia=warn,symphonia_format_ogg=warn,symphonia_core=warn,async_nats=warn"
                    .into()
            }),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(cmd) = args.first().filter(|a| a.as_str() != "serve") {
        eprintln!("veza-stream-server: unknown command {cmd:?} (commands: serve)");
        return ExitCode::from(2);
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("veza-stream-server: {e}");
            return ExitCode::from(2);
        }
    };
    let state = match build_state(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("veza-stream-server: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let state_events = state.events().clone();
    let running = match start(state).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("veza-stream-server: cannot listen: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(addr = %running.addr, "veza-stream-server listening");
    shutdown_signal().await;
    tracing::info!("shutting down");
    let events = state_events;
    let stopped = running.stop().await;
    if !events.flush(std::time::Duration::from_secs(5)).await {
        tracing::warn!(
            buffered = events.status().buffered,
            "events not sent to NATS before exit"
        );
    }
    match stopped {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("veza-stream-server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
