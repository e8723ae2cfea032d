//! Live recording: the driver of the core's [`Recorder`] for a channel, and the restore of
//! recordings a crash interrupted.
//!
//! When a stream that records (its `record` setting, or `LIVE_RECORD_DEFAULT`) goes live on the
//! node that ingests it, [`on_started`] subscribes to the channel's taps and spawns a task that
//! feeds every chunk to a [`Recorder`] and applies its outputs to files in
//! `LIVE_RECORDINGS_DIR/{stream_id}/{recording_id}/` (create, append, fsync, journal line
//! appended and synced, rename and directory fsync), off the async runtime. A source that drops
//! and returns within the grace period continues the same recording (the channel lives on). At
//! the end of the stream the recorder is stopped, each finished file becomes an audio file of
//! the API ([`crate::http::audio::store_file`], as an upload: owner and visibility of the
//! stream), the `recordings` row says `finished`, and `veza.recording.finished` is published.
//!
//! # Journal
//! The recorder's journal (see `veza_stream_core::recording`) gets three more kinds of lines,
//! which the core's [`plan_recovery`] ignores:
//!
//! ```text
//! session <stream_id> <started_at_ms>   first line: whose recording this is
//! audio <final_name> <audio_id>         before the file is added as that audio file
//! registered                            every file is an audio file; the directory can go
//! ```
//!
//! # Crash restore
//! [`recover`] runs at start, before the server serves: every session directory whose journal
//! has no `registered` line is finished from what is on disk. For a file the recorder had not
//! closed, the synced length the journal names is kept plus the whole frames
//! ([`valid_prefix`]) that follow it (a killed process loses only what it had not yet handed
//! to the kernel: under one sync interval of audio), the file is truncated there and renamed,
//! and it is registered as above with the state `recovered`. Each step is journaled, so running
//! it again (a second crash during the restore, or a second restart) does nothing more.
//!
//! # Lag
//! The taps keep 256 messages per receiver. A recorder that falls further behind (a slow disk)
//! learns it from the channel; it logs it, counts it in `veza_live_recording_lags_total`, and
//! takes the chunks it missed from the channel's ring (what the ring no longer holds is a gap,
//! counted in `veza_live_recording_lost_chunks_total`). Memory stays bounded by the tap
//! capacity, the ring and one sync interval of audio in the recorder.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast::{self, error::RecvError};
use veza_stream_core::frame::{Frame, FrameFormat, FrameKind};
use veza_stream_core::live::Chunk;
use veza_stream_core::recording::{
    Input, Output, RecordedFile, Recorder, RecorderConfig, plan_recovery, valid_prefix,
};

use super::{Channel, Tap};
use crate::error::ApiError;
use crate::events::Subject;
use crate::http::audio::{NewAudio, now_ms, store_file};
use crate::metrics as m;
use crate::state::AppState;
use crate::storage::{RecordingRecord, StreamRecord};

/// The journal's file name in a session directory.
const JOURNAL: &str = "journal";
/// The last journal line: every file is an audio file.
const REGISTERED: &str = "registered";
/// Most bytes past the last synced length that a restore reads (the recorder writes at most one
/// sync interval, under a second of audio, past it).
const MAX_TAIL: u64 = 16 * 1024 * 1024;

/// True when `rec`'s live sessions are recorded (its own setting, or the server's default).
pub fn records(state: &AppState, rec: &StreamRecord) -> bool {
    rec.record.unwrap_or(state.config().live.record_default)
}

/// Starts recording `ch` if its stream records. Called once when the channel goes live; does
/// nothing for a relayed channel (the ingesting node records).
pub fn on_started(state: &AppState, ch: &Arc<Channel>) {
    if ch.is_relayed() {
        return;
    }
    // Subscribe now, before the first chunks go by; what went by already is in the ring.
    let taps = ch.taps();
    // A graceful stop waits for the recording to be finished.
    let guard = state.live().finishing();
    let (state, ch) = (state.clone(), ch.clone());
    tokio::spawn(async move {
        record_channel(state, ch, taps).await;
        drop(guard);
    });
}

async fn record_channel(state: AppState, ch: Arc<Channel>, taps: broadcast::Receiver<Tap>) {
    let rec = match state.store().get_stream(ch.id()).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(stream = %ch.id(), error = %e, "cannot read the stream record; not recording");
            return;
        }
    };
    if !records(&state, &rec) {
        return;
    }
    metrics::gauge!(m::LIVE_RECORDINGS_ACTIVE).increment(1.0);
    let outcome = run_session(&state, &ch, taps, &rec).await;
    metrics::gauge!(m::LIVE_RECORDINGS_ACTIVE).decrement(1.0);
    if let Err(e) = outcome {
        metrics::counter!(m::LIVE_RECORDINGS, "state" => "failed").increment(1);
        tracing::error!(stream = %ch.id(), error = %e, "the recording failed; what was synced is restored at the next start");
    }
}

/// Why a recording stopped early.
#[derive(Debug, thiserror::Error)]
enum RecordError {
    /// Writing the files failed (disk full, permissions).
    #[error("recording files: {0}")]
    Io(#[from] std::io::Error),
    /// The database refused the recording's row.
    #[error("recording row: {0}")]
    Db(#[from] sqlx::Error),
    /// The recorder refused an input (a bug).
    #[error("recorder: {0}")]
    Recorder(#[from] veza_stream_core::recording::RecordingError),
    /// Adding a file to the audio files failed.
    #[error("registering the recording: {0}")]
    Api(#[from] ApiError),
    /// A blocking task panicked.
    #[error("blocking task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// One recording being written: the recorder, its files and where the stream is.
struct Session {
    recorder: Recorder,
    files: Option<Files>,
    format: FrameFormat,
    /// The last chunk fed.
    last_seq: Option<u64>,
    finished: Vec<RecordedFile>,
}

async fn run_session(
    state: &AppState,
    ch: &Arc<Channel>,
    mut taps: broadcast::Receiver<Tap>,
    rec: &StreamRecord,
) -> Result<(), RecordError> {
    let id = uuid::Uuid::new_v4().hyphenated().to_string();
    let started_at = now_ms();
    let dir = state.config().live.recordings_dir.join(&rec.id).join(&id);
    let head = format!("session {} {started_at}", rec.id);
    let files = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || Files::create(&dir, &head)).await??
    };
    state
        .store()
        .insert_recording(&RecordingRecord {
            id: id.clone(),
            stream_id: rec.id.clone(),
            audio_id: None,
            started_at,
            ended_at: None,
            state: "recording".into(),
        })
        .await?;
    tracing::info!(stream = %rec.id, recording = %id, dir = %dir.display(), "recording");
    let format = ch.format();
    let mut s = Session {
        recorder: Recorder::new(RecorderConfig::new("recording", format), Instant::now()),
        files: Some(files),
        format,
        last_seq: None,
        finished: Vec::new(),
    };
    s.recorder.handle_input(Input::Start {
        now: Instant::now(),
    })?;
    // What went by before the subscription (the ring holds it).
    s.catch_up(ch);
    s.apply().await?;
    loop {
        let msg = match tokio::time::timeout(Duration::from_secs(5), taps.recv()).await {
            Ok(m) => m,
            // The end cannot go by unseen (it is sent before the channel says it ended), but
            // the channel outlives this task's subscription: check now and then.
            Err(_) if ch.is_ended() => break,
            Err(_) => continue,
        };
        match msg {
            Ok(Tap::Chunk(c)) => {
                s.chunk(&c);
                s.apply().await?;
            }
            Ok(Tap::Metadata(_)) => {}
            Ok(Tap::SourceLost) => {
                tracing::info!(stream = %rec.id, recording = %id, "source dropped; the recording goes on if it returns");
            }
            Ok(Tap::End) | Err(RecvError::Closed) => break,
            Err(RecvError::Lagged(n)) => {
                metrics::counter!(m::LIVE_RECORDING_LAGS).increment(1);
                tracing::warn!(stream = %rec.id, recording = %id, missed = n, "the recorder fell behind the stream; taking the missed chunks from the ring");
                s.catch_up(ch);
                s.apply().await?;
            }
        }
    }
    drop(taps);
    // The last chunk, cut when the stream ended, is in the ring.
    s.catch_up(ch);
    s.recorder.handle_input(Input::Stop {
        now: Instant::now(),
    })?;
    s.apply().await?;
    s.recorder.handle_input(Input::Flushed {
        now: Instant::now(),
    })?;
    s.apply().await?;
    let names: Vec<String> = s.finished.iter().map(|f| f.name.clone()).collect();
    register(state, &dir, &id, &rec.id, started_at, names, "finished").await
}

impl Session {
    /// Feeds the chunks of the ring past the last one fed (all of them at the start).
    fn catch_up(&mut self, ch: &Channel) {
        for c in ch.recent_chunks(Duration::from_secs(24 * 3600)) {
            self.chunk(&c);
        }
    }

    /// Feeds one chunk, unless it was fed already; counts a gap.
    fn chunk(&mut self, c: &Chunk) {
        let seq = c.seq.0;
        let expected = self.last_seq.map_or(0, |l| l + 1);
        if seq < expected {
            return;
        }
        if seq > expected {
            metrics::counter!(m::LIVE_RECORDING_LOST_CHUNKS).increment(seq - expected);
            tracing::warn!(
                lost = seq - expected,
                "chunks left the ring before the recorder took them: the recording has a gap"
            );
        }
        self.last_seq = Some(seq);
        let now = Instant::now();
        for frame in frames_of(self.format, c) {
            // Frames are accepted while recording, which lasts until the end of the stream.
            let _ = self.recorder.handle_input(Input::Frame { now, frame });
        }
    }

    /// Applies the recorder's pending outputs (file work off the async runtime).
    async fn apply(&mut self) -> Result<(), RecordError> {
        let mut work = Vec::new();
        loop {
            match self.recorder.poll_output() {
                Output::Timeout(_) => break,
                Output::FileDone(f) => {
                    tracing::debug!(file = %f.name, bytes = f.bytes, "recording file complete");
                }
                Output::Finished { files } => self.finished = files,
                o => work.push(o),
            }
        }
        if work.is_empty() {
            return Ok(());
        }
        let Some(mut files) = self.files.take() else {
            return Ok(());
        };
        let (files, r) = tokio::task::spawn_blocking(move || {
            let r = work.iter().try_for_each(|o| files.apply(o));
            (files, r)
        })
        .await?;
        self.files = Some(files);
        r.map_err(RecordError::from)
    }
}

/// The recorder's frames of a chunk. A chunk of MP3 or ADTS is whole frames: it goes in as one.
/// An Ogg chunk that starts a logical stream carries the stream headers first (the pages of
/// granule position 0 from the beginning-of-stream page on): they go in as a header frame.
fn frames_of(format: FrameFormat, c: &Chunk) -> Vec<Frame> {
    if c.data.is_empty() {
        return Vec::new();
    }
    let audio = |data: Bytes| Frame {
        data,
        samples: c.samples,
        sample_rate: c.start.rate,
        channels: 0,
        kind: FrameKind::Audio,
    };
    if format != FrameFormat::Ogg {
        return vec![audio(c.data.clone())];
    }
    let split = ogg_header_len(&c.data);
    if split == 0 {
        return vec![audio(c.data.clone())];
    }
    let mut v = vec![Frame {
        data: c.data.slice(..split),
        samples: 0,
        sample_rate: c.start.rate,
        channels: 0,
        kind: FrameKind::Header,
    }];
    if split < c.data.len() {
        v.push(audio(c.data.slice(split..)));
    }
    v
}

/// The length of the header pages at the start of `data`: 0 unless it starts with a
/// beginning-of-stream page; then the pages with granule position 0.
fn ogg_header_len(data: &[u8]) -> usize {
    let mut at = 0;
    let mut first = true;
    loop {
        let Some(p) = data.get(at..) else { return at };
        if p.len() < 27 || &p[..4] != b"OggS" {
            return at;
        }
        let bos = p[5] & 0x02 != 0;
        if first && !bos {
            return 0;
        }
        first = false;
        let mut granule = [0u8; 8];
        granule.copy_from_slice(&p[6..14]);
        if u64::from_le_bytes(granule) != 0 {
            return at;
        }
        let segments = usize::from(p[26]);
        let Some(table) = p.get(27..27 + segments) else {
            return at;
        };
        let len = 27 + segments + table.iter().map(|&b| usize::from(b)).sum::<usize>();
        if p.len() < len {
            return at;
        }
        at += len;
    }
}

/// The files of one session directory, applied from blocking code.
struct Files {
    dir: PathBuf,
    journal: File,
    open: HashMap<String, File>,
}

impl Files {
    /// Creates the directory and the journal with its first line.
    fn create(dir: &Path, head: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let journal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(JOURNAL))?;
        let mut f = Self {
            dir: dir.to_path_buf(),
            journal,
            open: HashMap::new(),
        };
        f.journal(head)?;
        // The session's directory entry, and the stream's (new for a first recording).
        for d in dir.ancestors().take(3) {
            sync_dir(d)?;
        }
        Ok(f)
    }

    /// Opens the journal of an existing session directory.
    fn open(dir: &Path) -> std::io::Result<Self> {
        let journal = OpenOptions::new().append(true).open(dir.join(JOURNAL))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            journal,
            open: HashMap::new(),
        })
    }

    /// Appends a line to the journal and makes it durable.
    fn journal(&mut self, line: &str) -> std::io::Result<()> {
        let mut l = Vec::with_capacity(line.len() + 1);
        l.extend_from_slice(line.as_bytes());
        l.push(b'\n');
        self.journal.write_all(&l)?;
        self.journal.sync_data()
    }

    fn file(&mut self, name: &str) -> std::io::Result<&mut File> {
        if !self.open.contains_key(name) {
            let f = OpenOptions::new()
                .append(true)
                .open(self.dir.join(checked(name)?))?;
            self.open.insert(name.to_owned(), f);
        }
        self.open
            .get_mut(name)
            .ok_or_else(|| std::io::Error::other("file just opened is missing"))
    }

    fn apply(&mut self, o: &Output) -> std::io::Result<()> {
        match o {
            Output::Create { file } => {
                let f = File::create(self.dir.join(checked(file)?))?;
                self.open.insert(file.clone(), f);
                sync_dir(&self.dir)
            }
            Output::Write { file, data } => self.file(file)?.write_all(data),
            Output::Sync { file } => self.file(file)?.sync_data(),
            Output::Journal { line } => self.journal(line),
            Output::Rename { from, to } => {
                if let Some(f) = self.open.remove(from) {
                    f.sync_all()?;
                }
                std::fs::rename(self.dir.join(checked(from)?), self.dir.join(checked(to)?))?;
                sync_dir(&self.dir)
            }
            other => {
                tracing::debug!(output = ?other, "recorder output not applied");
                Ok(())
            }
        }
    }
}

/// A file name from a journal: one path component, nothing else.
fn checked(name: &str) -> std::io::Result<&str> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && name != JOURNAL;
    if ok {
        Ok(name)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad file name in a recording journal: {name:?}"),
        ))
    }
}

/// Makes a directory's entries (created, renamed files) durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Size and SHA-256 (hex) of a file.
fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, hex::encode(h.finalize())))
}

/// `2026-11-25 14:00` (UTC) of Unix milliseconds.
fn minute(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.get(..16).unwrap_or(&s).replacen('T', " ", 1)
}

/// Makes the finished files of a session audio files of the API, records the outcome and
/// removes the session directory. Each file's audio id is journaled before it is added, so a
/// second run finds it instead of adding it twice.
async fn register(
    state: &AppState,
    dir: &Path,
    recording: &str,
    stream_id: &str,
    started_at: i64,
    names: Vec<String>,
    outcome: &str,
) -> Result<(), RecordError> {
    let stream = state.store().get_stream(stream_id).await?;
    let journal_text = tokio::fs::read_to_string(dir.join(JOURNAL))
        .await
        .unwrap_or_default();
    let known: HashMap<&str, &str> = journal_text
        .lines()
        .filter_map(|l| {
            let mut p = l.split(' ');
            match (p.next(), p.next(), p.next(), p.next()) {
                (Some("audio"), Some(name), Some(id), None) => Some((name, id)),
                _ => None,
            }
        })
        .collect();
    let mut journal = {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || Files::open(&dir)).await??
    };
    let mut audio_ids = Vec::new();
    let many = names.len() > 1;
    for (i, name) in names.iter().enumerate() {
        let path = dir.join(checked(name)?);
        let id = match known.get(name.as_str()) {
            Some(id) => {
                if state.store().get_audio(id).await?.is_some() {
                    audio_ids.push((*id).to_owned());
                    continue;
                }
                (*id).to_owned()
            }
            None => {
                let id = uuid::Uuid::new_v4().hyphenated().to_string();
                let line = format!("audio {name} {id}");
                journal =
                    tokio::task::spawn_blocking(move || journal.journal(&line).map(|()| journal))
                        .await??;
                id
            }
        };
        if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
            tracing::warn!(recording, file = %name, "a recorded file is missing; skipped");
            continue;
        }
        let (size, hash) = {
            let p = path.clone();
            tokio::task::spawn_blocking(move || hash_file(&p)).await??
        };
        let title = stream.as_ref().map_or_else(
            || format!("Recording {}", minute(started_at)),
            |s| format!("{} (recording {})", s.title, minute(started_at)),
        );
        let title = if many {
            format!("{title} part {}", i + 1)
        } else {
            title
        };
        let new = NewAudio {
            id: id.clone(),
            owner: stream.as_ref().and_then(|s| s.owner.clone()),
            // A recording of a deleted stream is kept for admins only.
            is_private: stream.as_ref().is_none_or(|s| s.is_private),
            original_name: Some(name.clone()),
            title: Some(title.chars().take(255).collect()),
            size,
            content_hash: hash,
        };
        match store_file(state, &path, new).await {
            Ok(a) => audio_ids.push(a.id),
            Err(ApiError::UnsupportedMedia(why)) => {
                // Nothing playable was saved (a crash right after the file was opened).
                tracing::warn!(recording, file = %name, %why, "a recorded file holds no audio; skipped");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let ended_at = now_ms();
    let state_name = if audio_ids.is_empty() {
        "empty"
    } else {
        outcome
    };
    let first = audio_ids.first().map(String::as_str);
    match state.store().get_recording(recording).await? {
        Some(_) => {
            state
                .store()
                .finish_recording(recording, first, ended_at, state_name)
                .await?;
        }
        None => {
            state
                .store()
                .insert_recording(&RecordingRecord {
                    id: recording.to_owned(),
                    stream_id: stream_id.to_owned(),
                    audio_id: first.map(str::to_owned),
                    started_at,
                    ended_at: Some(ended_at),
                    state: state_name.to_owned(),
                })
                .await?;
        }
    }
    tokio::task::spawn_blocking(move || journal.journal(REGISTERED)).await??;
    metrics::counter!(m::LIVE_RECORDINGS, "state" => state_name.to_owned()).increment(1);
    tracing::info!(stream = %stream_id, recording, state = state_name, audio = ?audio_ids, "recording saved");
    if !audio_ids.is_empty() {
        state.events().publish(
            Subject::RecordingFinished,
            json!({
                "recording_id": recording,
                "stream_id": stream_id,
                "audio_id": first,
                "audio_ids": audio_ids,
                "state": state_name,
                "started_at": started_at,
                "ended_at": ended_at,
            }),
        );
    }
    remove_session(dir).await;
    Ok(())
}

async fn remove_session(dir: &Path) {
    if let Err(e) = tokio::fs::remove_dir_all(dir).await {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a saved recording's directory");
    }
    if let Some(parent) = dir.parent() {
        // The stream's directory, once it holds no session.
        let _ = tokio::fs::remove_dir(parent).await;
    }
}

/// Finishes every recording a crash interrupted (see the [module docs](self)): returns how many
/// sessions were restored. Errors are logged; a session that cannot be restored now is tried
/// again at the next start.
pub async fn recover(state: &AppState) -> usize {
    let root = state.config().live.recordings_dir.clone();
    let sessions = {
        let root = root.clone();
        tokio::task::spawn_blocking(move || session_dirs(&root))
            .await
            .unwrap_or_default()
    };
    let mut restored = 0;
    for (stream_id, recording, dir) in sessions {
        match recover_session(state, &stream_id, &recording, &dir).await {
            Ok(true) => restored += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot restore a recording");
            }
        }
    }
    if restored > 0 {
        tracing::info!(restored, "recordings restored after an interruption");
    }
    restored
}

/// `(stream_id, recording_id, dir)` of every session directory with a journal.
fn session_dirs(root: &Path) -> Vec<(String, String, PathBuf)> {
    let mut out = Vec::new();
    let Ok(streams) = std::fs::read_dir(root) else {
        return out;
    };
    for s in streams.flatten() {
        let Ok(sessions) = std::fs::read_dir(s.path()) else {
            continue;
        };
        let stream_id = s.file_name().to_string_lossy().into_owned();
        for r in sessions.flatten() {
            let dir = r.path();
            if dir.join(JOURNAL).is_file() {
                out.push((
                    stream_id.clone(),
                    r.file_name().to_string_lossy().into_owned(),
                    dir,
                ));
            }
        }
    }
    out.sort();
    out
}

/// Restores one session; false when there was nothing to do.
async fn recover_session(
    state: &AppState,
    stream_id: &str,
    recording: &str,
    dir: &Path,
) -> Result<bool, RecordError> {
    let text = {
        let bytes = tokio::fs::read(dir.join(JOURNAL)).await?;
        String::from_utf8_lossy(&bytes).into_owned()
    };
    if text.lines().any(|l| l == REGISTERED) {
        // Saved already; only the directory was left.
        remove_session(dir).await;
        return Ok(false);
    }
    let started_at = text
        .lines()
        .find_map(|l| {
            let mut p = l.split(' ');
            match (p.next(), p.next(), p.next()) {
                (Some("session"), Some(_), Some(ms)) => ms.parse::<i64>().ok(),
                _ => None,
            }
        })
        .unwrap_or_else(now_ms);
    let plan = plan_recovery(&text);
    let names = {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || -> std::io::Result<Vec<String>> {
            let mut files = Files::open(&dir)?;
            let mut names = Vec::new();
            for f in &plan.files {
                if !f.complete {
                    restore_file(&mut files, f)?;
                }
                names.push(f.final_name.clone());
            }
            Ok(names)
        })
        .await??
    };
    let outcome = if plan.ended { "finished" } else { "recovered" };
    tracing::info!(stream = %stream_id, recording, files = names.len(), "restoring an interrupted recording");
    register(state, dir, recording, stream_id, started_at, names, outcome).await?;
    Ok(true)
}

/// Truncates an unfinished file to its synced length plus the whole frames after it, and
/// renames it to its final name (journaled).
fn restore_file(
    files: &mut Files,
    f: &veza_stream_core::recording::FileRecovery,
) -> std::io::Result<()> {
    let partial = files.dir.join(checked(&f.partial)?);
    let final_path = files.dir.join(checked(&f.final_name)?);
    match OpenOptions::new().read(true).write(true).open(&partial) {
        Ok(mut file) => {
            let len = file.metadata()?.len();
            let keep = if len <= f.synced_bytes {
                len
            } else {
                file.seek(SeekFrom::Start(f.synced_bytes))?;
                let mut tail = Vec::new();
                Read::by_ref(&mut file)
                    .take((len - f.synced_bytes).min(MAX_TAIL))
                    .read_to_end(&mut tail)?;
                f.synced_bytes + valid_prefix(f.format, &tail)
            };
            file.set_len(keep)?;
            file.sync_all()?;
            drop(file);
            std::fs::rename(&partial, &final_path)?;
            sync_dir(&files.dir)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !final_path.exists() {
                // Opened in the journal, never created: nothing to keep.
                return Ok(());
            }
            // Renamed before the crash, not yet journaled.
        }
        Err(e) => return Err(e),
    }
    files.journal(&format!("renamed {}", f.final_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(bos: bool, granule: u64, body: &[u8]) -> Vec<u8> {
        let mut p = b"OggS".to_vec();
        p.push(0);
        p.push(if bos { 2 } else { 0 });
        p.extend_from_slice(&granule.to_le_bytes());
        p.extend_from_slice(&[0; 12]);
        p.push(1);
        p.push(u8::try_from(body.len()).unwrap_or(255));
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn ogg_headers_are_the_leading_zero_granule_pages_of_a_new_stream() {
        let mut d = page(true, 0, b"head");
        d.extend(page(false, 0, b"tags"));
        let headers = d.len();
        d.extend(page(false, 960, b"audio"));
        assert_eq!(ogg_header_len(&d), headers);
        assert_eq!(ogg_header_len(&page(false, 960, b"audio")), 0);
        assert_eq!(ogg_header_len(b"OggS"), 0);
        assert_eq!(ogg_header_len(&[]), 0);
    }

    #[test]
    fn journal_names_are_one_component() {
        assert!(checked("recording-001.mp3.partial").is_ok());
        for bad in ["", ".", "..", "../x", "a/b", JOURNAL] {
            assert!(checked(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn titles_carry_the_minute() {
        assert_eq!(minute(0), "1970-01-01 00:00");
        assert_eq!(minute(1_795_615_200_000), "2026-11-25 14:00");
    }
}
