//! Events: what happened to streams, audio files and jobs, as JSON messages on subjects
//! `veza.stream.*`, `veza.audio.*` and `veza.job.*` (docs/events.md lists them all).
//!
//! [`Events`] is a cheap handle kept in the [`AppState`](crate::AppState). [`Events::publish`]
//! never blocks and never fails: the event goes to the in-process bus ([`Events::subscribe`],
//! a `tokio` broadcast channel) and, when `NATS_URL` is set, into a bounded buffer that a
//! background task sends to NATS in order ([`nats`]). With NATS down (at start or later) events
//! wait in that buffer (`EVENT_BUFFER_SIZE`; when full the oldest is dropped and counted in
//! `veza_events_dropped_total`) and go out when it is back.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::metrics as m;

pub mod nats;

/// Events kept for in-process subscribers that are behind (a slower one loses the oldest).
const BUS_CAPACITY: usize = 1024;

/// The subject of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Subject {
    /// `veza.stream.created`: a stream record was created.
    StreamCreated,
    /// `veza.stream.started`: a stream went live.
    StreamStarted,
    /// `veza.stream.ended`: a live stream ended.
    StreamEnded,
    /// `veza.stream.updated`: a stream record was changed.
    StreamUpdated,
    /// `veza.stream.deleted`: a stream record was deleted.
    StreamDeleted,
    /// `veza.audio.uploaded`: an upload was probed and stored.
    AudioUploaded,
    /// `veza.audio.processed`: a job made a new audio file.
    AudioProcessed,
    /// `veza.audio.deleted`: an audio file was deleted.
    AudioDeleted,
    /// `veza.job.queued`: a job was created.
    JobQueued,
    /// `veza.job.running`: a worker started a job.
    JobRunning,
    /// `veza.job.done`: a job finished.
    JobDone,
    /// `veza.job.failed`: a job failed.
    JobFailed,
    /// `veza.recording.finished`: a live recording became an audio file (at the end of the
    /// session, or restored after a crash).
    RecordingFinished,
}

impl Subject {
    /// Every subject.
    pub const ALL: [Subject; 13] = [
        Subject::StreamCreated,
        Subject::StreamStarted,
        Subject::StreamEnded,
        Subject::StreamUpdated,
        Subject::StreamDeleted,
        Subject::AudioUploaded,
        Subject::AudioProcessed,
        Subject::AudioDeleted,
        Subject::JobQueued,
        Subject::JobRunning,
        Subject::JobDone,
        Subject::JobFailed,
        Subject::RecordingFinished,
    ];

    /// The NATS subject, e.g. `veza.audio.uploaded`.
    pub fn as_str(self) -> &'static str {
        match self {
            Subject::StreamCreated => "veza.stream.created",
            Subject::StreamStarted => "veza.stream.started",
            Subject::StreamEnded => "veza.stream.ended",
            Subject::StreamUpdated => "veza.stream.updated",
            Subject::StreamDeleted => "veza.stream.deleted",
            Subject::AudioUploaded => "veza.audio.uploaded",
            Subject::AudioProcessed => "veza.audio.processed",
            Subject::AudioDeleted => "veza.audio.deleted",
            Subject::JobQueued => "veza.job.queued",
            Subject::JobRunning => "veza.job.running",
            Subject::JobDone => "veza.job.done",
            Subject::JobFailed => "veza.job.failed",
            Subject::RecordingFinished => "veza.recording.finished",
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event, as sent: `{"id", "subject", "timestamp", "timestamp_ms", "data"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// A UUID v4 of this event (also the NATS `Nats-Msg-Id`, so JetStream drops resends).
    pub id: String,
    /// The subject, e.g. `veza.audio.uploaded`.
    pub subject: String,
    /// When it happened, RFC 3339 UTC with milliseconds.
    pub timestamp: String,
    /// When it happened, Unix milliseconds.
    pub timestamp_ms: i64,
    /// What happened (per subject; see docs/events.md).
    pub data: Value,
}

impl Event {
    /// An event of `subject` with `data`, stamped now.
    pub fn new(subject: Subject, data: Value) -> Self {
        let now = SystemTime::now();
        let ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self {
            id: uuid::Uuid::new_v4().hyphenated().to_string(),
            subject: subject.as_str().to_owned(),
            timestamp: humantime::format_rfc3339_millis(now).to_string(),
            timestamp_ms: ms,
            data,
        }
    }
}

/// The state of the events backend, for `/ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventsStatus {
    /// `in-process` or `nats`.
    pub backend: &'static str,
    /// `up`, or `down` while NATS is unreachable (events are buffered).
    pub state: &'static str,
    /// With NATS: `jetstream` (acknowledged, stored), `core` (JetStream unavailable: sent, not
    /// acknowledged) or `unknown` (not connected yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    /// Events waiting for NATS.
    pub buffered: usize,
    /// Events dropped because the buffer was full, since start.
    pub dropped: u64,
    /// Why the last attempt to reach NATS failed, while it fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The events handle. Cheap to clone.
#[derive(Clone)]
pub struct Events {
    inner: Arc<Inner>,
}

struct Inner {
    bus: broadcast::Sender<Arc<Event>>,
    nats: Option<nats::NatsSink>,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("status", &self.status())
            .finish()
    }
}

impl Events {
    /// The in-process bus only (the default, with no `NATS_URL`).
    pub fn in_process() -> Self {
        let (bus, _) = broadcast::channel(BUS_CAPACITY);
        Self {
            inner: Arc::new(Inner { bus, nats: None }),
        }
    }

    /// The in-process bus plus NATS at `url`, with a buffer of `buffer` events for outages.
    /// Returns at once: the connection is made (and remade) in the background, so NATS may be
    /// down. Must be called within a tokio runtime.
    pub fn with_nats(url: &str, buffer: usize) -> Self {
        let (bus, _) = broadcast::channel(BUS_CAPACITY);
        Self {
            inner: Arc::new(Inner {
                bus,
                nats: Some(nats::NatsSink::start(url, buffer)),
            }),
        }
    }

    /// From the settings: NATS when `NATS_URL` is set, the in-process bus otherwise.
    pub fn from_config(config: &crate::Config) -> Self {
        match &config.nats_url {
            Some(url) => Self::with_nats(url, config.event_buffer_size),
            None => Self::in_process(),
        }
    }

    /// Publishes an event of `subject` with `data`. Never blocks: in-process subscribers get it
    /// now, NATS as soon as it is reachable.
    pub fn publish(&self, subject: Subject, data: Value) {
        let event = Arc::new(Event::new(subject, data));
        metrics::counter!(m::EVENTS_PUBLISHED, "subject" => subject.as_str()).increment(1);
        // No subscriber is not an error.
        let _ = self.inner.bus.send(event.clone());
        if let Some(n) = &self.inner.nats {
            n.push(event);
        }
    }

    /// A receiver of every event published from now on (in-process).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.bus.subscribe()
    }

    /// The backend's state.
    pub fn status(&self) -> EventsStatus {
        match &self.inner.nats {
            None => EventsStatus {
                backend: "in-process",
                state: "up",
                mode: None,
                buffered: 0,
                dropped: 0,
                last_error: None,
            },
            Some(n) => n.status(),
        }
    }

    /// Waits until the NATS buffer is empty, at most `within`. True when it is (always with
    /// the in-process bus). For a graceful shutdown.
    pub async fn flush(&self, within: Duration) -> bool {
        match &self.inner.nats {
            None => true,
            Some(n) => n.flush(within).await,
        }
    }
}

/// The data of `veza.audio.uploaded` and `veza.audio.processed`: the file's id and description.
pub fn audio_data(r: &crate::storage::AudioRecord) -> Value {
    serde_json::json!({
        "file_id": r.id,
        "owner": r.owner,
        "is_private": r.is_private,
        "original_name": r.original_name,
        "size_bytes": r.size_bytes,
        "content_hash": r.content_hash,
        "codec": r.codec,
        "container": r.container,
        "sample_rate": r.sample_rate,
        "channels": r.channels,
        "duration_ms": r.duration_ms,
        "bitrate": r.bitrate,
    })
}

/// The data of the `veza.job.*` events: the job's id, kind, source file and state, plus
/// `result_file_id` and `note` when done and `error` when failed.
pub fn job_data(j: &crate::storage::JobRecord) -> Value {
    let mut v = serde_json::json!({
        "job_id": j.id,
        "kind": j.kind,
        "file_id": j.file_id,
        "state": j.state,
        "params": serde_json::from_str::<Value>(&j.params).unwrap_or(Value::Null),
    });
    for (k, x) in [
        ("result_file_id", &j.result_file_id),
        ("note", &j.note),
        ("error", &j.error),
    ] {
        if let Some(x) = x {
            v[k] = Value::String(x.clone());
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_distinct_and_named_veza() {
        let names: std::collections::HashSet<&str> =
            Subject::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names.len(), Subject::ALL.len());
        assert!(names.iter().all(|n| n.starts_with("veza.")));
        assert_eq!(Subject::JobDone.to_string(), "veza.job.done");
    }

    #[tokio::test]
    async fn in_process_subscribers_get_the_envelope() {
        let events = Events::in_process();
        let mut rx = events.subscribe();
        events.publish(Subject::AudioUploaded, serde_json::json!({"file_id": "f"}));
        let e = rx.recv().await.unwrap();
        assert_eq!(e.subject, "veza.audio.uploaded");
        assert_eq!(e.data["file_id"], "f");
        assert!(uuid::Uuid::parse_str(&e.id).is_ok());
        let t = humantime::parse_rfc3339(&e.timestamp).unwrap();
        let ms = t.duration_since(UNIX_EPOCH).unwrap().as_millis();
        assert_eq!(i64::try_from(ms).unwrap(), e.timestamp_ms);
        let json: Value = serde_json::to_value(&*e).unwrap();
        for k in ["id", "subject", "timestamp", "timestamp_ms", "data"] {
            assert!(json.get(k).is_some(), "{k} in {json}");
        }
        assert_eq!(events.status().backend, "in-process");
    }

    #[tokio::test]
    async fn unreachable_nats_buffers_and_drops_the_oldest() {
        // Nothing listens on port 1.
        let events = Events::with_nats("nats://127.0.0.1:1", 2);
        for n in 0..3 {
            events.publish(Subject::JobQueued, serde_json::json!({ "n": n }));
        }
        let s = events.status();
        assert_eq!((s.backend, s.state), ("nats", "down"));
        assert_eq!((s.buffered, s.dropped), (2, 1));
        assert!(!events.flush(Duration::from_millis(10)).await);
    }
}
