//! `veza-stream-core`: the sans-IO streaming engine of Veza Stream.
//!
//! The streaming logic as small deterministic state machines with no I/O, no clock, no threads
//! and no async. A server wires them to sockets and files; any program can drive them directly.
//!
//! | module | what it does |
//! | --- | --- |
//! | [`frame`] | cuts MP3, ADTS AAC and Ogg byte streams into whole frames with durations |
//! | [`live`] | a live stream's life, ingest, and the chunk ring its listeners read as cursors |
//! | [`abr`] | bandwidth estimation and rendition choice (model-predictive control), for HLS and server-side switching |
//! | [`hls`] | HLS and LL-HLS segmenter (packed audio or fMP4), media/master/VOD playlists, blocking reload, delta updates, program date-time |
//! | [`metadata`] | now-playing metadata and ICY `StreamTitle` blocks every `icy-metaint` bytes |
//! | [`recording`] | a crash-safe recorder: write/sync/rename outputs, a journal, recovery planning |
//! | [`cache`] | keys of transcoded audio and an LRU-by-bytes eviction policy |
//! | [`analytics`] | listener sessions folded into per-stream figures, emitted as batches |
//!
//! # Driving contract
//! Every machine is built with `new(config, now)`, told what happens with `handle_input(input)`
//! (every input carries its own `Instant`), and asked what to do with `poll_output()`, called
//! until it returns `Output::Timeout(deadline)`: feed `Input::Timeout` at that deadline (early is
//! harmless). Drain the outputs after each input before feeding the next. Three clocks are kept
//! apart: driving time (`Instant`, passed in), media time ([`MediaTime`], samples of audio), and
//! wall-clock time (carried as values inside inputs where needed). Nothing here reads a clock.
//!
//! # Example
//! ```
//! use std::time::{Duration, Instant};
//! use bytes::Bytes;
//! use veza_stream_core::frame::FrameFormat;
//! use veza_stream_core::live::{Input, LiveConfig, LiveStream, Next, Output};
//!
//! let t0 = Instant::now(); // driving time: any Instant works, the machine never reads a clock
//! let mut stream = LiveStream::new(LiveConfig::new(FrameFormat::Mpeg), t0);
//! stream.handle_input(Input::SourceConnected { now: t0 })?;
//! let listener = stream.add_listener(t0, None)?;
//!
//! // An MPEG-1 layer III frame header (128 kbit/s, 44.1 kHz): 417-byte frames.
//! let mut frame = vec![0u8; 417];
//! frame[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
//! for i in 0..10 {
//!     let now = t0 + Duration::from_millis(26 * i);
//!     stream.handle_input(Input::Data { now, data: Bytes::from(frame.clone()) })?;
//! }
//! while let Output::Event(_event) = stream.poll_output() {}
//! // The listener gets whole frames, 100 ms (4 frames) per chunk by default.
//! let Next::Data(bytes) = stream.next_chunk(listener)? else { panic!("audio is ready") };
//! assert_eq!(bytes.len(), 4 * 417);
//! # Ok::<(), veza_stream_core::live::StreamError>(())
//! ```

use std::time::Duration;

pub mod abr;
pub mod analytics;
pub mod cache;
pub mod frame;
pub mod hls;
pub mod live;
pub mod metadata;
pub mod recording;

/// A position or length in media time: a count of samples (per channel) at a sample rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MediaTime {
    /// Samples per channel.
    pub samples: u64,
    /// Samples per second (0 while unknown).
    pub rate: u32,
}

impl MediaTime {
    /// Time zero at an unknown rate.
    pub const ZERO: MediaTime = MediaTime {
        samples: 0,
        rate: 0,
    };

    /// `samples` at `rate` Hz.
    pub const fn new(samples: u64, rate: u32) -> Self {
        Self { samples, rate }
    }

    /// This time plus `n` samples at the same rate.
    pub const fn add_samples(self, n: u64) -> Self {
        Self {
            samples: self.samples.saturating_add(n),
            rate: self.rate,
        }
    }

    /// As a duration (zero at an unknown rate).
    pub fn as_duration(self) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        let secs = self.samples / u64::from(self.rate);
        let rem = self.samples % u64::from(self.rate);
        Duration::new(secs, (rem * 1_000_000_000 / u64::from(self.rate)) as u32)
    }

    /// The time from `earlier` to `self` (zero if `earlier` is later). Both are taken at
    /// their own rates.
    pub fn duration_since(self, earlier: MediaTime) -> Duration {
        self.as_duration().saturating_sub(earlier.as_duration())
    }

    /// In 90 kHz ticks (MPEG-TS and HLS timestamps).
    pub fn ticks_90k(self) -> u64 {
        if self.rate == 0 {
            return 0;
        }
        (u128::from(self.samples) * 90_000 / u128::from(self.rate)) as u64
    }
}

/// The sequence number of a chunk (or segment): consecutive from 0 within a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seq(pub u64);

/// A listener of a live stream: a slot index and a generation, so a stale id (of a listener that
/// left) never reaches the listener that took its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(u64);

impl ListenerId {
    /// From a slot index and its generation.
    pub const fn from_parts(index: u32, generation: u32) -> Self {
        Self(((generation as u64) << 32) | index as u64)
    }

    /// The slot index.
    pub const fn index(self) -> u32 {
        self.0 as u32
    }

    /// The slot's generation.
    pub const fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// As one number (for logs and storage).
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}
