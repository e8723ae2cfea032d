//! Listener analytics: drives `veza-stream-core`'s analytics machine with real time, and stores
//! its batches (sessions upserted by id, batch ids recorded, so a batch stored twice counts once).
//!
//! Handlers open a [`Session`] per listener (an on-demand play, later live listeners); dropping
//! it (the response body finished or the client went away) closes the session with the bytes
//! sent. Figures over time ranges are read back from storage by [`crate::storage::Store`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use veza_stream_core::analytics::{
    Analytics, AnalyticsConfig, Figures, Input, Output, Protocol, SessionId,
};

use crate::http::audio::now_ms;
use crate::storage::Store;

/// The analytics driver. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    machine: Mutex<Analytics>,
    wake: Notify,
    node: u64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub whose batches go to `store` every `interval`; spawns its task on the current
    /// runtime.
    pub fn start(store: Store, interval: Duration) -> Self {
        let node: u64 = rand::random();
        let config = AnalyticsConfig {
            node,
            batch_interval: interval,
            retry_interval: interval.max(Duration::from_secs(1)) * 3,
            ..AnalyticsConfig::default()
        };
        let hub = Self {
            inner: Arc::new(Inner {
                machine: Mutex::new(Analytics::new(config, Instant::now(), 0)),
                wake: Notify::new(),
                node,
            }),
        };
        let driver = hub.clone();
        tokio::spawn(async move { driver.run(store).await });
        hub
    }

    fn feed(&self, input: Input) {
        if let Ok(mut m) = self.inner.machine.lock() {
            if let Err(e) = m.handle_input(input) {
                tracing::warn!(error = %e, "analytics input refused");
            }
        }
    }

    /// Opens a session of `listener_key` on `target` (e.g. `audio:<id>`, `stream:<id>`).
    pub fn join(
        &self,
        target: String,
        listener_key: u64,
        protocol: Protocol,
        rendition: Option<String>,
        client: Option<String>,
    ) -> Session {
        let id = SessionId(rand::random());
        self.feed(Input::Join {
            now: Instant::now(),
            wall_ms: now_ms(),
            session: id,
            stream: target,
            listener_key,
            protocol,
            rendition,
            client,
        });
        Session {
            hub: self.clone(),
            id,
            bytes: AtomicU64::new(0),
        }
    }

    /// Live figures of `target` on this node (`None` before its first session).
    pub fn figures(&self, target: &str) -> Option<Figures> {
        let m = self.inner.machine.lock().ok()?;
        let mut f = m.figures(target)?;
        f.listening_time = m.listening_time(target, Instant::now());
        Some(f)
    }

    async fn run(self, store: Store) {
        let node = format!("{:016x}", self.inner.node);
        loop {
            let (batches, next) = {
                let Ok(mut m) = self.inner.machine.lock() else {
                    return;
                };
                let mut batches = Vec::new();
                let next = loop {
                    match m.poll_output() {
                        Output::Store(b) => batches.push(b),
                        Output::Timeout(t) => break t,
                        _ => {}
                    }
                };
                (batches, next)
            };
            for b in batches {
                match store.store_sessions(&node, &b).await {
                    Ok(()) => self.feed(Input::BatchStored { id: b.id }),
                    // Re-emitted by the machine after its retry interval.
                    Err(e) => tracing::warn!(error = %e, "cannot store analytics"),
                }
            }
            let wait = next.map_or(Duration::from_secs(60), |t| {
                t.saturating_duration_since(Instant::now())
            });
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.inner.wake.notified() => {}
            }
            self.feed(Input::Timeout {
                now: Instant::now(),
            });
        }
    }
}

/// An open listening session; closed (with its byte count) when dropped.
#[derive(Debug)]
pub struct Session {
    hub: Hub,
    id: SessionId,
    bytes: AtomicU64,
}

impl Session {
    /// Counts bytes sent.
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let bytes = self.bytes.load(Ordering::Relaxed);
        if bytes > 0 {
            self.hub.feed(Input::Bytes {
                session: self.id,
                bytes,
            });
        }
        self.hub.feed(Input::Leave {
            now: Instant::now(),
            wall_ms: now_ms(),
            session: self.id,
        });
    }
}

/// A listener key: who listens, for unique counts. The subject when authenticated, else a hash
/// of the client address and user agent (never stored in clear).
pub fn listener_key(subject: Option<&str>, addr: Option<std::net::IpAddr>, agent: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    match subject {
        Some(s) => {
            h.update(b"sub:");
            h.update(s.as_bytes());
        }
        None => {
            h.update(b"anon:");
            h.update(addr.map(|a| a.to_string()).unwrap_or_default().as_bytes());
            h.update(b"|");
            h.update(agent.as_bytes());
        }
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}
