//! Listener analytics: sessions (join, bytes, leave, with rendition, protocol and client) folded
//! into per-stream figures (current, peak and unique listeners, total listening time, average
//! session length), and emitted as batches for storage.
//!
//! # Delivery semantics
//! Every [`Batch`] has an id ([`BatchId`]: the node's id and a sequence number) and every
//! session record a [`SessionId`] chosen by the caller (unique across nodes). A batch is
//! re-emitted every [`AnalyticsConfig::retry_interval`] until [`Input::BatchStored`] acknowledges
//! it: at-least-once. The storage side makes it exactly-once by upserting session records by
//! session id (a later record of a session supersedes an earlier one: it carries the totals, not
//! increments) and recording batch ids it has applied. Open sessions are checkpointed into batches
//! every [`AnalyticsConfig::checkpoint_interval`], so a crash loses at most that much listening time.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Identifies a listening session, unique across nodes (the server uses a random 128-bit id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u128);

/// Identifies a batch: the emitting node and a sequence number that increases per node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId {
    /// The node that emitted it.
    pub node: u64,
    /// Sequence number on that node.
    pub seq: u64,
}

/// How a listener listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// Progressive HTTP (Icecast-style, with or without ICY metadata).
    Icy,
    /// HLS or low-latency HLS.
    Hls,
    /// WebSocket.
    WebSocket,
    /// On-demand file streaming.
    OnDemand,
}

impl Protocol {
    /// A stable lowercase name for storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Icy => "icy",
            Self::Hls => "hls",
            Self::WebSocket => "websocket",
            Self::OnDemand => "on_demand",
        }
    }
}

/// Settings of an [`Analytics`] machine.
#[derive(Debug, Clone)]
pub struct AnalyticsConfig {
    /// This node's id (part of every batch id).
    pub node: u64,
    /// How often a batch is emitted when there is something to store (default 10 s).
    pub batch_interval: Duration,
    /// Most session records per batch (default 1000); more waits for the next batch.
    pub max_batch: usize,
    /// How often open sessions are checkpointed (default 60 s).
    pub checkpoint_interval: Duration,
    /// How long an unacknowledged batch waits before it is emitted again (default 30 s).
    pub retry_interval: Duration,
    /// Most unacknowledged batches kept (default 1000); past that the oldest is dropped and
    /// counted in [`Figures::dropped_batches`] (storage down for hours).
    pub max_unacked: usize,
    /// Most distinct listeners remembered per stream for the unique count (default 1,000,000;
    /// past it the count stops growing and is flagged as a lower bound).
    pub max_unique: usize,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            node: 0,
            batch_interval: Duration::from_secs(10),
            max_batch: 1000,
            checkpoint_interval: Duration::from_secs(60),
            retry_interval: Duration::from_secs(30),
            max_unacked: 1000,
            max_unique: 1_000_000,
        }
    }
}

/// What the analytics machine is told.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Input {
    /// A listener joined.
    Join {
        /// Driving time.
        now: Instant,
        /// Wall-clock time, milliseconds since the Unix epoch (stored as is).
        wall_ms: i64,
        /// The session.
        session: SessionId,
        /// The stream or file listened to.
        stream: String,
        /// Who listens, for unique counts (a user id, or a hash of address and user agent).
        listener_key: u64,
        /// How.
        protocol: Protocol,
        /// Which rendition (e.g. "aac-96"), if several.
        rendition: Option<String>,
        /// The client (user agent), shortened by the caller.
        client: Option<String>,
    },
    /// Bytes were sent to a session (added to its total).
    Bytes {
        /// The session.
        session: SessionId,
        /// Bytes sent.
        bytes: u64,
    },
    /// The session switched rendition (ABR).
    Rendition {
        /// The session.
        session: SessionId,
        /// The new rendition.
        rendition: String,
    },
    /// A listener left.
    Leave {
        /// Driving time.
        now: Instant,
        /// Wall-clock time, milliseconds since the Unix epoch.
        wall_ms: i64,
        /// The session.
        session: SessionId,
    },
    /// Storage applied a batch: it will not be emitted again.
    BatchStored {
        /// The batch.
        id: BatchId,
    },
    /// Time passed.
    Timeout {
        /// Driving time.
        now: Instant,
    },
}

/// A session as stored: totals so far (a later record of the same session supersedes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The session.
    pub id: SessionId,
    /// The stream or file.
    pub stream: String,
    /// Who listens (for unique counts in storage).
    pub listener_key: u64,
    /// How.
    pub protocol: Protocol,
    /// Last rendition.
    pub rendition: Option<String>,
    /// Client.
    pub client: Option<String>,
    /// Wall-clock start, ms since the epoch.
    pub started_ms: i64,
    /// Wall-clock end, ms since the epoch; `None` while the session is open (a checkpoint).
    pub ended_ms: Option<i64>,
    /// Listening time so far.
    pub duration: Duration,
    /// Bytes sent so far.
    pub bytes: u64,
}

/// Per-stream figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Listeners now.
    pub current: u64,
    /// Most listeners at once.
    pub peak: u64,
    /// Distinct listener keys seen (a lower bound when `unique_capped`).
    pub unique: u64,
    /// True when the unique count hit [`AnalyticsConfig::max_unique`].
    pub unique_capped: bool,
    /// Sessions that ended.
    pub sessions_ended: u64,
    /// Listening time of ended sessions plus open sessions so far.
    pub listening_time: Duration,
    /// Listening time of ended sessions.
    pub ended_listening_time: Duration,
    /// Bytes sent.
    pub bytes: u64,
    /// Batches dropped because storage did not acknowledge them in time.
    pub dropped_batches: u64,
}

impl Figures {
    /// Average length of ended sessions.
    pub fn average_session(&self) -> Duration {
        if self.sessions_ended == 0 {
            return Duration::ZERO;
        }
        self.ended_listening_time / u32::try_from(self.sessions_ended).unwrap_or(u32::MAX)
    }
}

/// A batch of records for storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Its id.
    pub id: BatchId,
    /// Session records (closed sessions, and checkpoints of open ones).
    pub sessions: Vec<SessionRecord>,
}

/// What the analytics machine asks its driver to do.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Output {
    /// Store this batch, then acknowledge it with [`Input::BatchStored`].
    Store(Batch),
    /// Call back with [`Input::Timeout`] at this instant.
    Timeout(Option<Instant>),
}

/// Why an input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnalyticsError {
    /// A join with a session id already open.
    #[error("session {0:?} is already open")]
    DuplicateSession(SessionId),
    /// Bytes, a rendition or a leave for a session that is not open.
    #[error("session {0:?} is not open")]
    UnknownSession(SessionId),
}

#[derive(Debug)]
struct Open {
    record: SessionRecord,
    joined: Instant,
    last_checkpoint: Instant,
}

#[derive(Debug, Default)]
struct StreamStats {
    figures: Figures,
    keys: HashSet<u64>,
}

/// The analytics machine. See the [module docs](self).
#[derive(Debug)]
pub struct Analytics {
    config: AnalyticsConfig,
    open: HashMap<SessionId, Open>,
    streams: BTreeMap<String, StreamStats>,
    /// Records waiting for the next batch.
    queue: VecDeque<SessionRecord>,
    /// Emitted, not yet acknowledged: id -> (batch, when to emit again).
    unacked: BTreeMap<BatchId, (Batch, Instant)>,
    outputs: VecDeque<Output>,
    next_seq: u64,
    next_batch_at: Instant,
    dropped_batches: u64,
}

impl Analytics {
    /// An empty machine. `first_seq` is the first batch sequence number: a restarted node passes
    /// one past the last it used (storage keeps it) so batch ids never repeat.
    pub fn new(config: AnalyticsConfig, now: Instant, first_seq: u64) -> Self {
        Self {
            next_batch_at: now + config.batch_interval,
            config,
            open: HashMap::new(),
            streams: BTreeMap::new(),
            queue: VecDeque::new(),
            unacked: BTreeMap::new(),
            outputs: VecDeque::new(),
            next_seq: first_seq,
            dropped_batches: 0,
        }
    }

    /// Figures of a stream (`None` if no session was seen on it).
    pub fn figures(&self, stream: &str) -> Option<Figures> {
        self.streams.get(stream).map(|s| Figures {
            dropped_batches: self.dropped_batches,
            ..s.figures
        })
    }

    /// Listening time of a stream including its open sessions up to `now`.
    pub fn listening_time(&self, stream: &str, now: Instant) -> Duration {
        let ended = self
            .streams
            .get(stream)
            .map_or(Duration::ZERO, |s| s.figures.ended_listening_time);
        let open: Duration = self
            .open
            .values()
            .filter(|o| o.record.stream == stream)
            .map(|o| now.saturating_duration_since(o.joined))
            .sum();
        ended + open
    }

    /// Sessions open now.
    pub fn open_sessions(&self) -> usize {
        self.open.len()
    }

    /// Batches emitted and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// Feeds one input.
    ///
    /// # Errors
    /// [`AnalyticsError::DuplicateSession`] for a second join of an open session,
    /// [`AnalyticsError::UnknownSession`] for input about a session that is not open.
    pub fn handle_input(&mut self, input: Input) -> Result<(), AnalyticsError> {
        match input {
            Input::Join {
                now,
                wall_ms,
                session,
                stream,
                listener_key,
                protocol,
                rendition,
                client,
            } => {
                if self.open.contains_key(&session) {
                    return Err(AnalyticsError::DuplicateSession(session));
                }
                let max_unique = self.config.max_unique;
                let st = self.streams.entry(stream.clone()).or_default();
                st.figures.current += 1;
                st.figures.peak = st.figures.peak.max(st.figures.current);
                if st.keys.len() < max_unique {
                    if st.keys.insert(listener_key) {
                        st.figures.unique += 1;
                    }
                } else if !st.keys.contains(&listener_key) {
                    st.figures.unique_capped = true;
                }
                self.open.insert(
                    session,
                    Open {
                        record: SessionRecord {
                            id: session,
                            stream,
                            listener_key,
                            protocol,
                            rendition,
                            client,
                            started_ms: wall_ms,
                            ended_ms: None,
                            duration: Duration::ZERO,
                            bytes: 0,
                        },
                        joined: now,
                        last_checkpoint: now,
                    },
                );
                Ok(())
            }
            Input::Bytes { session, bytes } => {
                let o = self
                    .open
                    .get_mut(&session)
                    .ok_or(AnalyticsError::UnknownSession(session))?;
                o.record.bytes = o.record.bytes.saturating_add(bytes);
                if let Some(st) = self.streams.get_mut(&o.record.stream) {
                    st.figures.bytes = st.figures.bytes.saturating_add(bytes);
                }
                Ok(())
            }
            Input::Rendition { session, rendition } => {
                let o = self
                    .open
                    .get_mut(&session)
                    .ok_or(AnalyticsError::UnknownSession(session))?;
                o.record.rendition = Some(rendition);
                Ok(())
            }
            Input::Leave {
                now,
                wall_ms,
                session,
            } => {
                let mut o = self
                    .open
                    .remove(&session)
                    .ok_or(AnalyticsError::UnknownSession(session))?;
                let d = now.saturating_duration_since(o.joined);
                o.record.duration = d;
                o.record.ended_ms = Some(wall_ms);
                if let Some(st) = self.streams.get_mut(&o.record.stream) {
                    st.figures.current = st.figures.current.saturating_sub(1);
                    st.figures.sessions_ended += 1;
                    st.figures.ended_listening_time += d;
                    st.figures.listening_time += d;
                }
                self.queue.push_back(o.record);
                if self.queue.len() >= self.config.max_batch {
                    self.emit_batch(now);
                }
                Ok(())
            }
            Input::BatchStored { id } => {
                self.unacked.remove(&id);
                Ok(())
            }
            Input::Timeout { now } => {
                // Checkpoints of long open sessions.
                let every = self.config.checkpoint_interval;
                for o in self.open.values_mut() {
                    if now.saturating_duration_since(o.last_checkpoint) >= every {
                        o.last_checkpoint = now;
                        let mut r = o.record.clone();
                        r.duration = now.saturating_duration_since(o.joined);
                        self.queue.push_back(r);
                    }
                }
                if now >= self.next_batch_at {
                    self.next_batch_at = now + self.config.batch_interval;
                    while !self.queue.is_empty() {
                        self.emit_batch(now);
                    }
                }
                // Retries of unacknowledged batches.
                let retry = self.config.retry_interval;
                for (batch, due) in self.unacked.values_mut() {
                    if now >= *due {
                        *due = now + retry;
                        self.outputs.push_back(Output::Store(batch.clone()));
                    }
                }
                Ok(())
            }
        }
    }

    fn emit_batch(&mut self, now: Instant) {
        let n = self.queue.len().min(self.config.max_batch);
        if n == 0 {
            return;
        }
        let sessions: Vec<SessionRecord> = self.queue.drain(..n).collect();
        let id = BatchId {
            node: self.config.node,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        let batch = Batch { id, sessions };
        self.outputs.push_back(Output::Store(batch.clone()));
        self.unacked
            .insert(id, (batch, now + self.config.retry_interval));
        while self.unacked.len() > self.config.max_unacked {
            self.unacked.pop_first();
            self.dropped_batches += 1;
        }
    }

    /// The next output; call until it returns [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.outputs.pop_front() {
            return o;
        }
        let mut next = self.next_batch_at;
        for (_, due) in self.unacked.values() {
            next = next.min(*due);
        }
        Output::Timeout(Some(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(a: &mut Analytics, now: Instant, id: u128, stream: &str, key: u64) {
        a.handle_input(Input::Join {
            now,
            wall_ms: 1_000,
            session: SessionId(id),
            stream: stream.into(),
            listener_key: key,
            protocol: Protocol::Icy,
            rendition: None,
            client: Some("ffmpeg".into()),
        })
        .unwrap();
    }

    fn drain(a: &mut Analytics) -> Vec<Batch> {
        let mut v = Vec::new();
        while let Output::Store(b) = a.poll_output() {
            v.push(b);
        }
        v
    }

    #[test]
    fn figures_follow_sessions() {
        let t0 = Instant::now();
        let mut a = Analytics::new(AnalyticsConfig::default(), t0, 0);
        join(&mut a, t0, 1, "s", 7);
        join(&mut a, t0, 2, "s", 7);
        join(&mut a, t0, 3, "s", 8);
        a.handle_input(Input::Bytes {
            session: SessionId(1),
            bytes: 1000,
        })
        .unwrap();
        let t1 = t0 + Duration::from_secs(30);
        a.handle_input(Input::Leave {
            now: t1,
            wall_ms: 31_000,
            session: SessionId(1),
        })
        .unwrap();
        let f = a.figures("s").unwrap();
        assert_eq!((f.current, f.peak, f.unique), (2, 3, 2));
        assert_eq!(f.sessions_ended, 1);
        assert_eq!(f.average_session(), Duration::from_secs(30));
        assert_eq!(a.listening_time("s", t1), Duration::from_secs(90));
        assert_eq!(
            a.handle_input(Input::Leave {
                now: t1,
                wall_ms: 0,
                session: SessionId(1)
            }),
            Err(AnalyticsError::UnknownSession(SessionId(1)))
        );
    }

    #[test]
    fn batches_repeat_until_stored() {
        let t0 = Instant::now();
        let mut a = Analytics::new(AnalyticsConfig::default(), t0, 5);
        join(&mut a, t0, 1, "s", 1);
        let t1 = t0 + Duration::from_secs(3);
        a.handle_input(Input::Leave {
            now: t1,
            wall_ms: 4_000,
            session: SessionId(1),
        })
        .unwrap();
        let t2 = t0 + Duration::from_secs(10);
        a.handle_input(Input::Timeout { now: t2 }).unwrap();
        let b = drain(&mut a);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].id, BatchId { node: 0, seq: 5 });
        assert_eq!(b[0].sessions[0].duration, Duration::from_secs(3));
        // Not acknowledged: emitted again after the retry interval, with the same id.
        let t3 = t2 + Duration::from_secs(30);
        a.handle_input(Input::Timeout { now: t3 }).unwrap();
        let again = drain(&mut a);
        assert_eq!(again, b);
        a.handle_input(Input::BatchStored { id: b[0].id }).unwrap();
        a.handle_input(Input::Timeout {
            now: t3 + Duration::from_secs(60),
        })
        .unwrap();
        assert!(drain(&mut a).is_empty());
        assert_eq!(a.unacked(), 0);
    }

    #[test]
    fn long_sessions_are_checkpointed() {
        let t0 = Instant::now();
        let mut a = Analytics::new(AnalyticsConfig::default(), t0, 0);
        join(&mut a, t0, 9, "s", 1);
        let t1 = t0 + Duration::from_secs(61);
        a.handle_input(Input::Timeout { now: t1 }).unwrap();
        let b = drain(&mut a);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].sessions[0].ended_ms, None);
        assert_eq!(b[0].sessions[0].duration, Duration::from_secs(61));
    }
}
