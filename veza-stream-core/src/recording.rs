//! Recording a live stream: idle -> recording -> finalizing -> done, split into files by duration
//! or size if configured, crash-safe through a small journal.
//!
//! The recorder never touches a file. It asks its driver to [`Output::Create`], [`Output::Write`]
//! (append), [`Output::Sync`] (fsync), [`Output::Rename`] files and to append lines to a journal
//! ([`Output::Journal`], appended and synced before the next output is applied). Files are
//! written under a `.partial` name and renamed when complete.
//!
//! # Crash safety
//! Data is synced, and a `sync` line journaled, every [`RecorderConfig::sync_interval`] of audio
//! (default 500 ms), always on a frame boundary. After a crash, [`plan_recovery`] reads the
//! journal and says, for each unfinished file, from which synced length to look for more whole
//! frames ([`valid_prefix`] finds them in what the file holds past that point) and what its final
//! name is. A kill -9 loses only what was not yet handed to the driver (under one sync interval);
//! a power loss loses at most the unsynced tail, also under one sync interval. The recovered
//! file is whole frames of the source codec: playable.
//!
//! # FLAC on request
//! With [`RecordAs::Flac`] the source codec is still what is written (so the crash guarantee
//! holds); at the end the recorder asks for [`Output::Transcode`] of each finished file to FLAC,
//! which the driver runs off its event loop (with `veza-audio`) and acknowledges with
//! [`Input::TranscodeDone`]. Recovery re-asks for transcodes not journaled as done.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::MediaTime;
use crate::frame::{Frame, FrameFormat, FrameKind, FrameSplitter, SplitterConfig};

/// What the recording is kept as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordAs {
    /// The source's codec, frames as received (no re-encode).
    Source,
    /// FLAC, transcoded from the source-codec file when it is complete.
    Flac,
}

/// Settings of a [`Recorder`].
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// File name stem: files are `{base_name}-{index:03}.{ext}` (letters, digits, `-`, `_`
    /// and `.` only, at most 128 bytes; anything else is replaced by `_`).
    pub base_name: String,
    /// The framing of the source.
    pub format: FrameFormat,
    /// Start a new file after this much audio (default: none).
    pub split_duration: Option<Duration>,
    /// Start a new file before it would exceed this many bytes (default: none).
    pub split_bytes: Option<u64>,
    /// Audio between syncs (default 500 ms; at most 1 s is enforced).
    pub sync_interval: Duration,
    /// Source codec or FLAC (default source).
    pub record_as: RecordAs,
}

impl RecorderConfig {
    /// Defaults (see each field).
    pub fn new(base_name: &str, format: FrameFormat) -> Self {
        Self {
            base_name: base_name.to_owned(),
            format,
            split_duration: None,
            split_bytes: None,
            sync_interval: Duration::from_millis(500),
            record_as: RecordAs::Source,
        }
    }
}

/// Where a recorder is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecorderState {
    /// Not started.
    Idle,
    /// Writing.
    Recording,
    /// Stopped; the last outputs are being applied (and transcodes run).
    Finalizing,
    /// All files are complete.
    Done,
}

/// What a recorder is told.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Input {
    /// Start recording.
    Start {
        /// When.
        now: Instant,
    },
    /// A whole frame of the stream (as cut by the live machine's splitter).
    Frame {
        /// When.
        now: Instant,
        /// The frame.
        frame: Frame,
    },
    /// Stop: the current file is closed and renamed.
    Stop {
        /// When.
        now: Instant,
    },
    /// The driver applied every output emitted so far (after `Stop`).
    Flushed {
        /// When.
        now: Instant,
    },
    /// A requested transcode finished and its output is synced.
    TranscodeDone {
        /// The output file name given in [`Output::Transcode`].
        to: String,
    },
}

/// A finished file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedFile {
    /// Final file name.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Audio length.
    pub duration: Duration,
}

/// What a recorder asks its driver to do, in order.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Output {
    /// Create (or truncate) a file.
    Create {
        /// File name.
        file: String,
    },
    /// Append bytes to a file.
    Write {
        /// File name.
        file: String,
        /// The bytes.
        data: Bytes,
    },
    /// Make a file's data durable (fsync).
    Sync {
        /// File name.
        file: String,
    },
    /// Append one line to the journal and make it durable before applying the next output.
    Journal {
        /// The line (no newline).
        line: String,
    },
    /// Rename a file (atomically, then sync the directory).
    Rename {
        /// Old name.
        from: String,
        /// New name.
        to: String,
    },
    /// Transcode a finished file to FLAC (off the event loop), then send
    /// [`Input::TranscodeDone`]. The source-codec file stays.
    Transcode {
        /// Source file (final name).
        from: String,
        /// FLAC file to write.
        to: String,
    },
    /// A file is complete under its final name.
    FileDone(RecordedFile),
    /// The recording is over: every file is complete.
    Finished {
        /// All files, in order.
        files: Vec<RecordedFile>,
    },
    /// Nothing more to do for now.
    Timeout(Option<Instant>),
}

/// Why an input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordingError {
    /// The input does not fit the recorder's state (e.g. a frame before `Start`).
    #[error("{input} is not accepted while the recorder is {state:?}")]
    InvalidState {
        /// The input's name.
        input: &'static str,
        /// The state.
        state: RecorderState,
    },
}

#[derive(Debug)]
struct OpenFile {
    partial: String,
    final_name: String,
    written: u64,
    synced: u64,
    samples: u64,
    samples_at_sync: u64,
    rate: u32,
}

/// The recorder of one live session. See the [module docs](self).
#[derive(Debug)]
pub struct Recorder {
    config: RecorderConfig,
    state: RecorderState,
    index: u32,
    file: Option<OpenFile>,
    buf: BytesMut,
    headers: Vec<Bytes>,
    collecting_headers: bool,
    outputs: VecDeque<Output>,
    files: Vec<RecordedFile>,
    transcodes_pending: Vec<String>,
    ext: &'static str,
}

fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.truncate(128);
    if s.is_empty() || s.starts_with('.') {
        s.insert(0, 'r');
    }
    s
}

/// The file extension of a source framing.
pub fn extension(format: FrameFormat) -> &'static str {
    match format {
        FrameFormat::Mpeg => "mp3",
        FrameFormat::Adts => "aac",
        FrameFormat::Ogg => "ogg",
    }
}

impl Recorder {
    /// An idle recorder.
    pub fn new(mut config: RecorderConfig, _now: Instant) -> Self {
        config.base_name = sanitize(&config.base_name);
        config.sync_interval = config.sync_interval.min(Duration::from_secs(1));
        let ext = extension(config.format);
        Self {
            config,
            state: RecorderState::Idle,
            index: 0,
            file: None,
            buf: BytesMut::new(),
            headers: Vec::new(),
            collecting_headers: false,
            outputs: VecDeque::new(),
            files: Vec::new(),
            transcodes_pending: Vec::new(),
            ext,
        }
    }

    /// Where the recorder is.
    pub fn state(&self) -> RecorderState {
        self.state
    }

    /// Files completed so far.
    pub fn files(&self) -> &[RecordedFile] {
        &self.files
    }

    /// Feeds one input.
    ///
    /// # Errors
    /// [`RecordingError::InvalidState`] for an input that does not fit the state.
    pub fn handle_input(&mut self, input: Input) -> Result<(), RecordingError> {
        let state = self.state;
        let bad = |input| Err(RecordingError::InvalidState { input, state });
        match input {
            Input::Start { .. } => {
                if state != RecorderState::Idle {
                    return bad("Start");
                }
                self.state = RecorderState::Recording;
                Ok(())
            }
            Input::Frame { frame, .. } => {
                if state != RecorderState::Recording {
                    return bad("Frame");
                }
                self.frame(frame);
                Ok(())
            }
            Input::Stop { .. } => {
                if state != RecorderState::Recording {
                    return bad("Stop");
                }
                self.close_file();
                self.outputs
                    .push_back(Output::Journal { line: "end".into() });
                self.state = RecorderState::Finalizing;
                if self.config.record_as == RecordAs::Flac {
                    for f in &self.files {
                        let to = flac_name(&f.name);
                        self.outputs.push_back(Output::Journal {
                            line: format!("transcode {} {to}", f.name),
                        });
                        self.outputs.push_back(Output::Transcode {
                            from: f.name.clone(),
                            to: to.clone(),
                        });
                        self.transcodes_pending.push(to);
                    }
                }
                Ok(())
            }
            Input::Flushed { .. } => {
                if state != RecorderState::Finalizing {
                    return bad("Flushed");
                }
                self.maybe_done();
                Ok(())
            }
            Input::TranscodeDone { to } => {
                if state != RecorderState::Finalizing {
                    return bad("TranscodeDone");
                }
                if let Some(i) = self.transcodes_pending.iter().position(|t| *t == to) {
                    self.transcodes_pending.swap_remove(i);
                    self.outputs.push_back(Output::Journal {
                        line: format!("transcoded {to}"),
                    });
                }
                self.maybe_done();
                Ok(())
            }
        }
    }

    fn maybe_done(&mut self) {
        if self.transcodes_pending.is_empty() && self.state == RecorderState::Finalizing {
            self.state = RecorderState::Done;
            self.outputs.push_back(Output::Finished {
                files: self.files.clone(),
            });
        }
    }

    /// The next output; call until it returns [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output {
        self.outputs.pop_front().unwrap_or(Output::Timeout(None))
    }

    fn open_file(&mut self) {
        self.index += 1;
        let final_name = format!("{}-{:03}.{}", self.config.base_name, self.index, self.ext);
        let partial = format!("{final_name}.partial");
        // Write-ahead: the journal names the file before it exists.
        self.outputs.push_back(Output::Journal {
            line: format!("open {partial} {final_name} {}", self.ext),
        });
        self.outputs.push_back(Output::Create {
            file: partial.clone(),
        });
        self.file = Some(OpenFile {
            partial,
            final_name,
            written: 0,
            synced: 0,
            samples: 0,
            samples_at_sync: 0,
            rate: 0,
        });
        // An Ogg file starts with the stream headers.
        for h in self.headers.clone() {
            self.append(h);
        }
    }

    fn append(&mut self, data: Bytes) {
        self.buf.extend_from_slice(&data);
        if let Some(f) = self.file.as_mut() {
            f.written += data.len() as u64;
        }
    }

    fn sync(&mut self) {
        let Some(f) = self.file.as_mut() else {
            return;
        };
        if !self.buf.is_empty() {
            self.outputs.push_back(Output::Write {
                file: f.partial.clone(),
                data: self.buf.split().freeze(),
            });
        }
        if f.synced == f.written {
            return;
        }
        self.outputs.push_back(Output::Sync {
            file: f.partial.clone(),
        });
        f.synced = f.written;
        f.samples_at_sync = f.samples;
        self.outputs.push_back(Output::Journal {
            line: format!("sync {} {} {}", f.partial, f.synced, f.samples),
        });
    }

    fn close_file(&mut self) {
        self.sync();
        let Some(f) = self.file.take() else {
            return;
        };
        self.outputs.push_back(Output::Rename {
            from: f.partial.clone(),
            to: f.final_name.clone(),
        });
        self.outputs.push_back(Output::Journal {
            line: format!("renamed {}", f.final_name),
        });
        let file = RecordedFile {
            name: f.final_name,
            bytes: f.written,
            duration: MediaTime::new(f.samples, f.rate).as_duration(),
        };
        self.files.push(file.clone());
        self.outputs.push_back(Output::FileDone(file));
    }

    fn frame(&mut self, frame: Frame) {
        if frame.kind == FrameKind::Header {
            if !self.collecting_headers {
                self.headers.clear();
                self.collecting_headers = true;
            }
            self.headers.push(frame.data.clone());
            if self.file.is_some() {
                // A new chain link mid-file: its headers go in band.
                self.append(frame.data);
            }
            return;
        }
        self.collecting_headers = false;
        let split = self.file.as_ref().is_some_and(|f| {
            let dur = MediaTime::new(f.samples, f.rate).as_duration();
            self.config.split_duration.is_some_and(|d| dur >= d)
                || self
                    .config
                    .split_bytes
                    .is_some_and(|b| f.written + frame.data.len() as u64 > b && f.samples > 0)
        });
        if split {
            self.close_file();
        }
        if self.file.is_none() {
            self.open_file();
        }
        self.append(frame.data);
        let f = self.file.as_mut().expect("a file is open");
        if frame.sample_rate != 0 {
            f.rate = frame.sample_rate;
        }
        f.samples += u64::from(frame.samples);
        let since = MediaTime::new(f.samples - f.samples_at_sync, f.rate).as_duration();
        if since >= self.config.sync_interval {
            self.sync();
        }
    }
}

fn flac_name(name: &str) -> String {
    match name.rsplit_once('.') {
        Some((stem, _)) => format!("{stem}.flac"),
        None => format!("{name}.flac"),
    }
}

/// What recovery must do for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecovery {
    /// The name it was written under.
    pub partial: String,
    /// The name it gets.
    pub final_name: String,
    /// The source framing, from the extension.
    pub format: FrameFormat,
    /// Bytes known durable and whole frames (the last `sync` line).
    pub synced_bytes: u64,
    /// True when it was renamed already (nothing to do).
    pub complete: bool,
}

/// What [`plan_recovery`] found in a journal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryPlan {
    /// Every file the journal names, in order.
    pub files: Vec<FileRecovery>,
    /// Transcodes requested and not journaled as done: (from, to).
    pub transcodes: Vec<(String, String)>,
    /// True when the recording was stopped (`end` journaled).
    pub ended: bool,
}

/// Reads a journal (the lines of [`Output::Journal`], newline-separated; a torn last line is
/// ignored) and says what to restore. Pure: the caller applies it. For each file not
/// `complete`: read the file past `synced_bytes`, keep [`valid_prefix`] more bytes, truncate
/// there, and rename it to `final_name`.
pub fn plan_recovery(journal: &str) -> RecoveryPlan {
    let mut plan = RecoveryPlan::default();
    for line in journal.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["open", partial, final_name, ext] => {
                let format = match *ext {
                    "mp3" => FrameFormat::Mpeg,
                    "aac" => FrameFormat::Adts,
                    "ogg" => FrameFormat::Ogg,
                    _ => continue,
                };
                plan.files.push(FileRecovery {
                    partial: (*partial).to_owned(),
                    final_name: (*final_name).to_owned(),
                    format,
                    synced_bytes: 0,
                    complete: false,
                });
            }
            ["sync", partial, bytes, _samples] => {
                if let (Some(f), Ok(b)) = (
                    plan.files.iter_mut().rev().find(|f| f.partial == *partial),
                    bytes.parse::<u64>(),
                ) {
                    f.synced_bytes = b;
                }
            }
            ["renamed", final_name] => {
                if let Some(f) = plan.files.iter_mut().find(|f| f.final_name == *final_name) {
                    f.complete = true;
                }
            }
            ["end"] => plan.ended = true,
            ["transcode", from, to] => plan.transcodes.push(((*from).to_owned(), (*to).to_owned())),
            ["transcoded", to] => plan.transcodes.retain(|(_, t)| t != to),
            _ => {} // a torn or unknown line
        }
    }
    plan
}

/// How many bytes at the start of `tail` (the bytes of a file past a synced, frame-aligned
/// length) are whole frames of `format`: the length to keep.
pub fn valid_prefix(format: FrameFormat, tail: &[u8]) -> u64 {
    let mut s = FrameSplitter::new(format, SplitterConfig::default());
    s.push(tail);
    s.finish();
    let mut len = 0u64;
    while let Ok(Some(f)) = s.next_frame() {
        if s.stats().skipped_bytes > 0 {
            break;
        }
        len += f.data.len() as u64;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp3(samples: u32) -> Frame {
        let mut f = vec![0u8; 417];
        f[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
        Frame {
            data: Bytes::from(f),
            samples,
            sample_rate: 44_100,
            channels: 2,
            kind: FrameKind::Audio,
        }
    }

    fn drain(r: &mut Recorder) -> Vec<Output> {
        let mut v = Vec::new();
        loop {
            match r.poll_output() {
                Output::Timeout(_) => return v,
                o => v.push(o),
            }
        }
    }

    #[test]
    fn splits_by_duration_and_journals_every_step() {
        let t0 = Instant::now();
        let mut cfg = RecorderConfig::new("show/../x y", FrameFormat::Mpeg);
        cfg.split_duration = Some(Duration::from_secs(2));
        let mut r = Recorder::new(cfg, t0);
        assert!(
            r.handle_input(Input::Frame {
                now: t0,
                frame: mp3(1152)
            })
            .is_err()
        );
        r.handle_input(Input::Start { now: t0 }).unwrap();
        for _ in 0..200 {
            r.handle_input(Input::Frame {
                now: t0,
                frame: mp3(1152),
            })
            .unwrap();
        }
        r.handle_input(Input::Stop { now: t0 }).unwrap();
        let out = drain(&mut r);
        assert_eq!(r.state(), RecorderState::Finalizing);
        r.handle_input(Input::Flushed { now: t0 }).unwrap();
        assert_eq!(r.state(), RecorderState::Done);
        let files = r.files().to_vec();
        // 200 frames of 26.1 ms = 5.2 s: files of 2 s (77 frames), 2 s and the rest.
        assert_eq!(files.len(), 3);
        assert_eq!(files[0].name, "show_.._x_y-001.mp3");
        assert_eq!(files[0].bytes, 77 * 417);
        let journal: Vec<&str> = out
            .iter()
            .filter_map(|o| match o {
                Output::Journal { line } => Some(line.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            journal[0],
            "open show_.._x_y-001.mp3.partial show_.._x_y-001.mp3 mp3"
        );
        assert_eq!(*journal.last().unwrap(), "end");
        let plan = plan_recovery(&journal.join("\n"));
        assert!(plan.ended);
        assert!(plan.files.iter().all(|f| f.complete));
    }

    #[test]
    fn valid_prefix_stops_at_a_torn_frame() {
        let mut tail = Vec::new();
        for _ in 0..3 {
            tail.extend_from_slice(&mp3(1152).data);
        }
        tail.extend_from_slice(&mp3(1152).data[..200]);
        assert_eq!(valid_prefix(FrameFormat::Mpeg, &tail), 3 * 417);
        assert_eq!(valid_prefix(FrameFormat::Mpeg, &[]), 0);
    }
}
