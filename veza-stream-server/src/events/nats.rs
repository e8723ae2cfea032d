//! The NATS side of [`Events`](super::Events): a bounded, ordered buffer and the task that
//! empties it into NATS.
//!
//! Every event goes through the buffer, NATS up or down, so order is kept: the task sends the
//! oldest events first, in batches, and removes them only once NATS took them. With JetStream
//! (a stream `VEZA_EVENTS` over `veza.stream.>`, `veza.audio.>`, `veza.job.>` and
//! `veza.recording.>`, created when missing) "took" means acknowledged, that is stored; each
//! message carries `Nats-Msg-Id` = the event id, so a resend after a lost acknowledgement is
//! dropped by the server (within its two-minute duplicate window). Without JetStream (or when
//! the stream cannot be made) events are sent with core publish and "took" means written to the
//! connection and flushed. While NATS is unreachable the buffer fills; past `EVENT_BUFFER_SIZE`
//! the oldest event is dropped and counted in `veza_events_dropped_total`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream;
use tokio::sync::Notify;

use super::{Event, EventsStatus};
use crate::metrics as m;

/// The JetStream stream that stores the events.
pub const STREAM_NAME: &str = "VEZA_EVENTS";
/// The subjects that stream covers.
pub const STREAM_SUBJECTS: [&str; 4] = [
    "veza.stream.>",
    "veza.audio.>",
    "veza.job.>",
    "veza.recording.>",
];
/// Events sent before waiting for their acknowledgements.
const BATCH: usize = 64;
/// Time limit of an acknowledgement or a flush.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest pause between attempts while NATS fails.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

const MODE_UNKNOWN: u8 = 0;
const MODE_JETSTREAM: u8 = 1;
const MODE_CORE: u8 = 2;

/// The buffer and the sending task's handle; dropping it stops the task.
pub(crate) struct NatsSink {
    shared: Arc<Shared>,
}

struct Shared {
    capacity: usize,
    queue: Mutex<Queue>,
    /// New events (or closing).
    wake: Notify,
    /// The buffer became empty.
    drained: Notify,
    client: OnceLock<async_nats::Client>,
    mode: AtomicU8,
    /// Check JetStream again (after a reconnection).
    recheck: AtomicBool,
    /// The last send worked (or the connection was just made).
    up: AtomicBool,
    dropped: AtomicU64,
    closed: AtomicBool,
    last_error: Mutex<Option<String>>,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<(u64, Arc<Event>)>,
    next_seq: u64,
    /// Dropping since the last time the buffer had room (a warning is logged once).
    overflowing: bool,
}

impl NatsSink {
    /// Starts the task that connects to `url` (retrying forever) and sends the buffer.
    pub(crate) fn start(url: &str, capacity: usize) -> Self {
        let shared = Arc::new(Shared {
            capacity: capacity.max(1),
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            drained: Notify::new(),
            client: OnceLock::new(),
            mode: AtomicU8::new(MODE_UNKNOWN),
            recheck: AtomicBool::new(true),
            // "Was up" at start, so that NATS down at start is logged (once) like an outage.
            up: AtomicBool::new(true),
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            last_error: Mutex::new(None),
        });
        metrics::counter!(m::EVENTS_DROPPED).increment(0);
        metrics::gauge!(m::EVENTS_BUFFERED).set(0.0);
        tokio::spawn(run(shared.clone(), url.to_owned()));
        Self { shared }
    }

    /// Appends an event, dropping the oldest when full.
    pub(crate) fn push(&self, event: Arc<Event>) {
        let s = &self.shared;
        {
            let Ok(mut q) = s.queue.lock() else { return };
            if q.items.len() >= s.capacity {
                q.items.pop_front();
                s.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(m::EVENTS_DROPPED).increment(1);
                if !q.overflowing {
                    q.overflowing = true;
                    tracing::warn!(
                        capacity = s.capacity,
                        "the event buffer is full (NATS unreachable): the oldest events are dropped"
                    );
                }
            } else {
                q.overflowing = false;
            }
            let seq = q.next_seq;
            q.next_seq += 1;
            q.items.push_back((seq, event));
            metrics::gauge!(m::EVENTS_BUFFERED).set(q.items.len() as f64);
        }
        s.wake.notify_one();
    }

    pub(crate) fn status(&self) -> EventsStatus {
        let s = &self.shared;
        let connected = s
            .client
            .get()
            .is_some_and(|c| c.connection_state() == State::Connected);
        // Up once connected and the delivery mode is known (JetStream or core).
        let up = connected
            && s.up.load(Ordering::Relaxed)
            && s.mode.load(Ordering::Relaxed) != MODE_UNKNOWN;
        EventsStatus {
            backend: "nats",
            state: if up { "up" } else { "down" },
            mode: Some(match s.mode.load(Ordering::Relaxed) {
                MODE_JETSTREAM => "jetstream",
                MODE_CORE => "core",
                _ => "unknown",
            }),
            buffered: s.len(),
            dropped: s.dropped.load(Ordering::Relaxed),
            last_error: if up {
                None
            } else {
                s.last_error.lock().ok().and_then(|e| e.clone())
            },
        }
    }

    pub(crate) async fn flush(&self, within: Duration) -> bool {
        let s = &self.shared;
        tokio::time::timeout(within, async {
            loop {
                let drained = s.drained.notified();
                tokio::pin!(drained);
                drained.as_mut().enable();
                if s.len() == 0 {
                    return;
                }
                drained.await;
            }
        })
        .await
        .is_ok()
    }
}

impl Drop for NatsSink {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
    }
}

impl Shared {
    fn len(&self) -> usize {
        self.queue.lock().map_or(0, |q| q.items.len())
    }

    /// Copies of the oldest events, at most `n`.
    fn front(&self, n: usize) -> Vec<(u64, Arc<Event>)> {
        self.queue
            .lock()
            .map(|q| q.items.iter().take(n).cloned().collect())
            .unwrap_or_default()
    }

    /// Removes the events up to sequence `last` (those NATS took).
    fn done_through(&self, last: u64) {
        let Ok(mut q) = self.queue.lock() else { return };
        while q.items.front().is_some_and(|(seq, _)| *seq <= last) {
            q.items.pop_front();
        }
        metrics::gauge!(m::EVENTS_BUFFERED).set(q.items.len() as f64);
        if q.items.is_empty() {
            self.drained.notify_waiters();
        }
    }

    /// Records whether NATS works, logging once per change.
    fn set_up(&self, up: bool, why: &str) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = (!up).then(|| why.to_owned());
        }
        let was = self.up.swap(up, Ordering::Relaxed);
        if was && !up {
            tracing::warn!(
                reason = why,
                buffered = self.len(),
                capacity = self.capacity,
                "NATS unreachable: events are buffered until it is back"
            );
        } else if !was && up {
            tracing::info!(buffered = self.len(), "NATS reachable: sending events");
        }
    }
}

async fn run(shared: Arc<Shared>, url: String) {
    let weak: Weak<Shared> = Arc::downgrade(&shared);
    let options = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis(100u64 << attempts.min(5)).min(MAX_BACKOFF)
        })
        .event_callback(move |event| {
            let weak = weak.clone();
            async move {
                let Some(s) = weak.upgrade() else { return };
                match event {
                    async_nats::Event::Connected => {
                        s.set_up(true, "");
                        s.recheck.store(true, Ordering::Relaxed);
                        s.wake.notify_one();
                    }
                    async_nats::Event::Disconnected => s.set_up(false, "disconnected"),
                    async_nats::Event::ClientError(e) => s.set_up(false, &e.to_string()),
                    _ => {}
                }
            }
        });
    let client = match options.connect(url.as_str()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "NATS_URL cannot be used: events stay in process");
            return;
        }
    };
    let _ = shared.client.set(client.clone());
    let mut js = jetstream::new(client.clone());
    js.set_timeout(ACK_TIMEOUT);
    let mut backoff = Duration::from_millis(100);
    loop {
        if shared.closed.load(Ordering::Relaxed) {
            return;
        }
        let wake = shared.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let connected = client.connection_state() == State::Connected;
        if connected && shared.recheck.swap(false, Ordering::Relaxed) {
            match detect_mode(&js).await {
                Ok(mode) => shared.mode.store(mode, Ordering::Relaxed),
                Err(why) => {
                    shared.set_up(false, &why);
                    shared.recheck.store(true, Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        if shared.len() == 0 {
            wake.await;
            continue;
        }
        if !connected {
            shared.set_up(false, "not connected");
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let batch = shared.front(BATCH);
        let (last, error) = match shared.mode.load(Ordering::Relaxed) {
            MODE_JETSTREAM => send_jetstream(&js, &batch).await,
            _ => send_core(&client, &batch).await,
        };
        if let Some(last) = last {
            shared.done_through(last);
        }
        match error {
            None => {
                shared.set_up(true, "");
                backoff = Duration::from_millis(100);
            }
            Some(e) => {
                shared.set_up(false, &e.reason);
                if e.recheck {
                    shared.recheck.store(true, Ordering::Relaxed);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// JetStream when the account has it (creating the stream if missing), core otherwise; an error
/// when NATS did not answer (try again later).
async fn detect_mode(js: &jetstream::Context) -> Result<u8, String> {
    use jetstream::context::CreateStreamErrorKind;
    let config = jetstream::stream::Config {
        name: STREAM_NAME.to_owned(),
        subjects: STREAM_SUBJECTS.iter().map(|s| (*s).to_owned()).collect(),
        max_age: Duration::from_secs(7 * 24 * 3600),
        max_bytes: 1 << 30,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    match js.get_or_create_stream(config).await {
        Ok(_) => {
            tracing::info!(
                stream = STREAM_NAME,
                "events go to JetStream (acknowledged)"
            );
            Ok(MODE_JETSTREAM)
        }
        Err(e) if e.kind() == CreateStreamErrorKind::JetStreamUnavailable => {
            tracing::info!("NATS has no JetStream: events use core publish (not acknowledged)");
            Ok(MODE_CORE)
        }
        Err(e) if e.kind() == CreateStreamErrorKind::TimedOut => {
            Err(format!("creating the JetStream stream timed out: {e}"))
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                stream = STREAM_NAME,
                "cannot create the JetStream stream: events use core publish (not acknowledged)"
            );
            Ok(MODE_CORE)
        }
    }
}

struct SendError {
    reason: String,
    /// Check JetStream and the stream again before the next attempt.
    recheck: bool,
}

fn payload(event: &Event) -> bytes::Bytes {
    // An `Event` is strings, numbers and a JSON value: serialising cannot fail.
    serde_json::to_vec(event).unwrap_or_default().into()
}

/// Publishes a batch and waits for the acknowledgements in order. Returns the sequence of the
/// last event acknowledged without a gap, and the error that stopped it.
async fn send_jetstream(
    js: &jetstream::Context,
    batch: &[(u64, Arc<Event>)],
) -> (Option<u64>, Option<SendError>) {
    let mut acks = Vec::with_capacity(batch.len());
    let mut error = None;
    for (seq, event) in batch {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, event.id.as_str());
        match js
            .publish_with_headers(event.subject.clone(), headers, payload(event))
            .await
        {
            Ok(ack) => acks.push((*seq, ack)),
            Err(e) => {
                error = Some(SendError {
                    reason: e.to_string(),
                    recheck: false,
                });
                break;
            }
        }
    }
    let mut last = None;
    for (seq, ack) in acks {
        match ack.await {
            Ok(_) => last = Some(seq),
            Err(e) => {
                use jetstream::context::PublishErrorKind;
                let recheck = e.kind() == PublishErrorKind::StreamNotFound;
                error = Some(SendError {
                    reason: e.to_string(),
                    recheck,
                });
                break;
            }
        }
    }
    (last, error)
}

/// Publishes a batch with core NATS and flushes the connection.
async fn send_core(
    client: &async_nats::Client,
    batch: &[(u64, Arc<Event>)],
) -> (Option<u64>, Option<SendError>) {
    let mut last = None;
    for (seq, event) in batch {
        if let Err(e) = client.publish(event.subject.clone(), payload(event)).await {
            return (
                None,
                Some(SendError {
                    reason: e.to_string(),
                    recheck: false,
                }),
            );
        }
        last = Some(*seq);
    }
    match tokio::time::timeout(ACK_TIMEOUT, client.flush()).await {
        Ok(Ok(())) => (last, None),
        Ok(Err(e)) => (
            None,
            Some(SendError {
                reason: e.to_string(),
                recheck: false,
            }),
        ),
        Err(_) => (
            None,
            Some(SendError {
                reason: "flush timed out".into(),
                recheck: false,
            }),
        ),
    }
}
