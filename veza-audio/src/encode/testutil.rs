//! Helpers shared by the encoder tests: a test sine, a symphonia decode of the output, ffprobe,
//! and frequency and level checks.

use std::io::Cursor;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::BytesMut;
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::TrackType;
use symphonia::core::formats::probe::Hint;
use symphonia::core::io::MediaSourceStream;

use crate::encode::{Encoder, HeaderPatch};
use crate::format::AudioSpec;
use crate::pcm::PcmBuffer;

/// Amplitude of a -6 dBFS sine.
pub(crate) const AMP_MINUS_6_DB: f32 = 0.501_187_2;

/// A 1 kHz sine at -6 dBFS, `secs` long, the same in every channel (phase-shifted a little per
/// channel so joint-stereo coders see two signals).
pub(crate) fn sine(spec: AudioSpec, secs: f64) -> PcmBuffer {
    let rate = f64::from(spec.sample_rate.hz());
    let frames = (secs * rate).round() as usize;
    let planes = (0..spec.channels)
        .map(|ch| {
            let phase = f64::from(ch) * 0.3;
            (0..frames)
                .map(|i| {
                    let t = i as f64 / rate;
                    (f64::from(AMP_MINUS_6_DB)
                        * (2.0 * std::f64::consts::PI * 1000.0 * t + phase).sin())
                        as f32
                })
                .collect()
        })
        .collect();
    PcmBuffer::from_planes(spec, planes)
}

/// Pushes `pcm` through `enc` in blocks of `block` frames (the last may be shorter), finishes,
/// and returns all output bytes.
pub(crate) fn encode_in_blocks(enc: &mut dyn Encoder, pcm: &PcmBuffer, block: usize) -> BytesMut {
    let mut out = BytesMut::new();
    let frames = pcm.frames();
    let mut start = 0;
    while start < frames {
        let end = (start + block).min(frames);
        let planes = pcm
            .planes()
            .iter()
            .map(|p| p[start..end].to_vec())
            .collect();
        enc.encode(&PcmBuffer::from_planes(pcm.spec(), planes), &mut out)
            .unwrap();
        start = end;
    }
    enc.finish(&mut out).unwrap();
    out
}

/// Writes a header patch over the output.
pub(crate) fn apply_patch(bytes: &mut [u8], patch: &HeaderPatch) {
    let at = usize::try_from(patch.offset).unwrap();
    bytes[at..at + patch.bytes.len()].copy_from_slice(&patch.bytes);
}

/// What symphonia decoded.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub rate: u32,
    pub channels: usize,
    pub planes: Vec<Vec<f32>>,
}

impl Decoded {
    pub(crate) fn frames(&self) -> usize {
        self.planes.first().map_or(0, Vec::len)
    }
}

/// Probes `bytes` with symphonia and decodes the default audio track to planar f32.
pub(crate) fn decode(bytes: &[u8], ext: &str) -> Decoded {
    let mss = MediaSourceStream::new(Box::new(Cursor::new(bytes.to_vec())), Default::default());
    let mut hint = Hint::new();
    hint.with_extension(ext);
    let mut format = symphonia::default::get_probe()
        .probe(&hint, mss, Default::default(), Default::default())
        .expect("symphonia probes the output");
    let track = format
        .default_track(TrackType::Audio)
        .expect("an audio track");
    let params = track
        .codec_params
        .as_ref()
        .unwrap()
        .audio()
        .unwrap()
        .clone();
    let track_id = track.id;
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .expect("symphonia decodes the codec");
    let channels = params.channels.as_ref().map(|c| c.count()).unwrap_or(0);
    let rate = params.sample_rate.unwrap_or(0);
    let mut planes: Vec<Vec<f32>> = Vec::new();
    let mut tmp: Vec<Vec<f32>> = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(SymError::IoError(_)) => break,
            Err(e) => panic!("demux error: {e}"),
        };
        if packet.track_id != track_id {
            continue;
        }
        let buf = decoder.decode(&packet).expect("packet decodes");
        buf.copy_to_vecs_planar(&mut tmp);
        planes.resize(tmp.len(), Vec::new());
        for (dst, src) in planes.iter_mut().zip(&tmp) {
            dst.extend_from_slice(src);
        }
    }
    Decoded {
        rate,
        channels,
        planes,
    }
}

/// Power of `x` at `freq` (Goertzel).
pub(crate) fn goertzel(x: &[f32], rate: u32, freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s = f64::from(v) + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (x.len() as f64).powi(2)
}

/// RMS level in dBFS.
pub(crate) fn rms_db(x: &[f32]) -> f64 {
    let sum: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    10.0 * (sum / x.len() as f64).log10()
}

/// Checks that the middle of `plane` is a 1 kHz sine at -6 dBFS: the 1 kHz bin dominates its
/// neighbours at 700 Hz and 1.4 kHz by 30 dB, and the RMS is within 1 dB.
pub(crate) fn assert_sine(plane: &[f32], rate: u32) {
    let r = rate as usize;
    assert!(plane.len() > r, "at least a second of audio");
    let mid = &plane[r / 4..plane.len() - r / 4];
    let at_1k = goertzel(mid, rate, 1000.0);
    for f in [700.0, 1400.0] {
        let other = goertzel(mid, rate, f);
        assert!(
            10.0 * (at_1k / other.max(1e-30)).log10() > 30.0,
            "1 kHz dominates {f} Hz"
        );
    }
    let expected = 20.0 * f64::from(AMP_MINUS_6_DB).log10() - 3.0103;
    let level = rms_db(mid);
    assert!(
        (level - expected).abs() < 1.0,
        "RMS {level:.2} dB, expected {expected:.2} dB"
    );
}

/// What ffprobe says about a file.
#[derive(Debug)]
pub(crate) struct Probe {
    pub codec_name: String,
    pub sample_rate: u32,
    pub channels: usize,
    /// `None` when ffprobe says N/A (a stream of unknown length).
    pub duration: Option<f64>,
}

/// Writes `bytes` to a temp file with extension `ext` and runs ffprobe on it.
pub(crate) fn ffprobe(bytes: &[u8], ext: &str) -> Probe {
    static N: AtomicU32 = AtomicU32::new(0);
    let path: PathBuf = std::env::temp_dir().join(format!(
        "veza-enc-test-{}-{}.{ext}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, bytes).unwrap();
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "a:0"])
        .args([
            "-show_entries",
            "stream=codec_name,sample_rate,channels:format=duration",
        ])
        .args(["-of", "default=noprint_wrappers=1"])
        .arg(&path)
        .output();
    let _ = std::fs::remove_file(&path);
    let output = match output {
        Ok(o) => o,
        Err(e) => panic!("ffprobe could not run ({e}): install ffmpeg (apt-get install ffmpeg)"),
    };
    assert!(
        output.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let field = |name: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("ffprobe gave no {name}: {text}"))
            .to_string()
    };
    Probe {
        codec_name: field("codec_name"),
        sample_rate: field("sample_rate").parse().unwrap(),
        channels: field("channels").parse().unwrap(),
        duration: field("duration").parse().ok(),
    }
}
