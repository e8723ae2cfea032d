//! Deterministic simulation harness for the live machine: fake time (an epoch plus offsets),
//! a seeded random generator, a time-ordered inbox and a log of events. Nothing sleeps.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
#![allow(dead_code)]

pub mod mp4;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use veza_stream_core::live::{Event, Input, LiveStream, Output};

/// SplitMix64: a small seeded generator, enough for scenario randomness.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
}

/// What the simulation does at a given time.
pub enum Action {
    Input(Input),
    /// A named step the scenario handles itself (listener reads and the like).
    Step(&'static str, u64),
}

pub struct Sim {
    pub epoch: Instant,
    pub now: Instant,
    pub rng: Rng,
    inbox: BTreeMap<(Duration, u64), Action>,
    order: u64,
    pub log: Vec<(Duration, Event)>,
    pub stream: LiveStream,
    deadline: Option<Instant>,
}

impl Sim {
    pub fn new(seed: u64, make: impl FnOnce(Instant) -> LiveStream) -> Self {
        let epoch = Instant::now();
        Self {
            epoch,
            now: epoch,
            rng: Rng::new(seed),
            inbox: BTreeMap::new(),
            order: 0,
            log: Vec::new(),
            stream: make(epoch),
            deadline: None,
        }
    }

    pub fn at(&self, offset: Duration) -> Instant {
        self.epoch + offset
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    /// Schedules an action at `offset` from the epoch.
    pub fn schedule(&mut self, offset: Duration, action: Action) {
        self.order += 1;
        self.inbox.insert((offset, self.order), action);
    }

    /// Feeds an input now, drains outputs into the log and remembers the deadline.
    pub fn feed(&mut self, input: Input) {
        self.stream
            .handle_input(input)
            .expect("the scenario feeds valid inputs");
        self.drain();
    }

    pub fn drain(&mut self) {
        loop {
            match self.stream.poll_output() {
                Output::Event(e) => self.log.push((self.elapsed(), e)),
                Output::Timeout(d) => {
                    self.deadline = d;
                    break;
                }
                _ => unreachable!("outputs are events or a timeout"),
            }
        }
    }

    /// Runs scheduled actions and timeouts in time order until `end` or until nothing is left,
    /// calling `step` for `Action::Step`. Bounded: panics after `max_steps` (a livelock).
    pub fn run_until(&mut self, end: Duration, mut step: impl FnMut(&mut Sim, &'static str, u64)) {
        let max_steps = 10_000_000;
        for _ in 0..max_steps {
            let next_action = self.inbox.keys().next().copied();
            let next_timeout = self.deadline.map(|d| d - self.epoch);
            let (t, is_timeout) = match (next_action, next_timeout) {
                (Some((a, _)), Some(d)) if d < a => (d, true),
                (Some((a, _)), _) => (a, false),
                (None, Some(d)) => (d, true),
                (None, None) => return,
            };
            if t > end {
                return;
            }
            self.now = self.epoch + t;
            if is_timeout {
                self.feed(Input::Timeout { now: self.now });
                continue;
            }
            let key = *self.inbox.keys().next().expect("an action is due");
            match self.inbox.remove(&key).expect("the key exists") {
                Action::Input(i) => self.feed(i),
                Action::Step(name, arg) => {
                    step(self, name, arg);
                    self.drain();
                }
            }
        }
        panic!("simulation did not settle in {max_steps} steps");
    }

    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.log.iter().map(|(_, e)| e)
    }
}

/// Real MP3 frames: `seconds` of a 440 Hz tone at 128 kbit/s, 44.1 kHz stereo, encoded with
/// veza-audio's LAME encoder.
pub fn mp3_frames(seconds: f64) -> Vec<Bytes> {
    encoded_frames(veza_audio::OutputFormat::Mp3, seconds)
        .into_iter()
        .map(|f| f.data)
        .collect()
}

/// Real frames of `format` (MP3, ADTS AAC or Ogg Vorbis pages): `seconds` of a tone sweeping
/// 220-880 Hz, 44.1 kHz stereo, encoded with veza-audio.
pub fn encoded_frames(
    format: veza_audio::OutputFormat,
    seconds: f64,
) -> Vec<veza_stream_core::frame::Frame> {
    use veza_audio::{AudioSpec, EncoderConfig, OutputFormat, PcmBuffer};
    use veza_stream_core::frame::{FrameFormat, FrameSplitter, SplitterConfig};
    let spec = AudioSpec::new(44_100, 2).expect("valid spec");
    let cfg = EncoderConfig::new(format, spec);
    let mut enc = veza_audio::new_encoder(&cfg).expect("encoder");
    let n = (seconds * 44_100.0) as usize;
    let mut phase = 0f32;
    let samples: Vec<f32> = (0..n)
        .flat_map(|i| {
            let f = 220.0 + 660.0 * (i as f32 / n as f32);
            phase += f * std::f32::consts::TAU / 44_100.0;
            let v = phase.sin() * 0.3;
            [v, v * 0.8]
        })
        .collect();
    let pcm = PcmBuffer::from_interleaved(spec, &samples);
    let mut out = bytes::BytesMut::new();
    enc.encode(&pcm, &mut out).expect("encode");
    enc.finish(&mut out).expect("finish");
    let framing = match format {
        OutputFormat::Mp3 => FrameFormat::Mpeg,
        OutputFormat::Aac => FrameFormat::Adts,
        OutputFormat::Ogg => FrameFormat::Ogg,
        other => panic!("{other:?} is not a live format"),
    };
    let mut split = FrameSplitter::new(framing, SplitterConfig::default());
    split.push(&out);
    split.finish();
    let mut frames = Vec::new();
    while let Some(f) = split.next_frame().expect("our own output splits") {
        frames.push(f);
    }
    frames
}

/// Runs a command-line tool, failing with a clear message when it is missing.
pub fn tool(name: &str) -> std::process::Command {
    let found = std::process::Command::new(name)
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{name} is required for this test: apt-get install ffmpeg (scripts/test does it)"
    );
    let mut c = std::process::Command::new(name);
    if name == "ffmpeg" {
        c.arg("-nostdin");
    }
    c.args(["-v", "error"]);
    c
}

/// Duration of one MP3 frame at 44.1 kHz.
pub const MP3_FRAME: Duration = Duration::from_nanos(1_152_000_000_000 / 44_100);
