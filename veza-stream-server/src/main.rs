//! The `veza-stream-server` binary: bootstrap only. Reads the configuration from the environment
//! (and `VEZA_CONFIG`), opens storage, serves until SIGINT/SIGTERM. Operator commands: `token`
//! prints a JWT, `api-key create|list|revoke` manages service keys.

use std::process::ExitCode;

/// mimalloc instead of the system allocator: the request path allocates and frees small
/// buffers per request, and glibc's malloc/free showed as 7 % of the server's time under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use veza_stream_server::auth::{Role, TokenKeys};
use veza_stream_server::{Config, build_state, start};

/// Veza Stream's server. Settings come from the environment (see docs/configuration.md).
#[derive(Debug, Parser)]
#[command(name = "veza-stream-server", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Print a JWT signed with the configured secret (or the data directory's).
    Token {
        /// The subject (user name or id).
        #[arg(long)]
        sub: String,
        /// admin, creator or listener.
        #[arg(long, default_value = "listener")]
        role: Role,
        /// Lifetime, e.g. 1h, 30d.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
    /// Manage API keys for services.
    #[command(name = "api-key", subcommand)]
    ApiKey(KeyCommand),
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Create a key and print it (shown once; only its hash is stored).
    Create {
        /// A name for people.
        #[arg(long)]
        name: String,
        /// listener, creator or admin.
        #[arg(long, default_value = "creator")]
        role: Role,
    },
    /// List keys (never the keys themselves).
    List,
    /// Revoke a key by id.
    Revoke {
        /// The key's id.
        id: String,
    },
}

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
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("veza-stream-server: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        None | Some(Command::Serve) => serve(config).await,
        Some(Command::Token { sub, role, ttl }) => {
            match TokenKeys::from_config(&config).and_then(|k| k.sign(&sub, role, ttl)) {
                Ok(t) => {
                    println!("{t}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("veza-stream-server: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::ApiKey(cmd)) => api_key(config, cmd).await,
    }
}

async fn api_key(config: Config, cmd: KeyCommand) -> ExitCode {
    use veza_stream_server::storage::Store;
    if let Err(e) = std::fs::create_dir_all(&config.data_dir) {
        eprintln!("veza-stream-server: {}: {e}", config.data_dir.display());
        return ExitCode::FAILURE;
    }
    let store = match Store::connect(&config.database_url).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("veza-stream-server: cannot open the database (DATABASE_URL): {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match cmd {
        KeyCommand::Create { name, role } => {
            match veza_stream_server::http::keys::create_key(
                &store,
                &name,
                Some(role.as_str()),
                Some("cli"),
            )
            .await
            {
                Ok((rec, key)) => {
                    eprintln!(
                        "API key {} ({}, role {}); it is shown once:",
                        rec.id, rec.name, rec.role
                    );
                    println!("{key}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("veza-stream-server: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        KeyCommand::List => match store.list_api_keys().await {
            Ok(keys) => {
                for k in keys {
                    let state = if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!("{}\t{}\t{}\t{state}", k.id, k.role, k.name);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("veza-stream-server: {e}");
                ExitCode::FAILURE
            }
        },
        KeyCommand::Revoke { id } => {
            match store
                .revoke_api_key(&id, veza_stream_server::http::audio::now_ms())
                .await
            {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => {
                    eprintln!("veza-stream-server: no active key {id}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("veza-stream-server: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    };
    store.close().await;
    code
}

async fn serve(config: Config) -> ExitCode {
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
