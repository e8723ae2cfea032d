//! Shared helpers of the end-to-end tests: where the shared audio corpus is, external tools,
//! and signal checks.

use std::path::PathBuf;
use std::process::Command;

/// The audio corpus folder: `$VEZA_AUDIO_CORPUS`, or `../shared/audio-corpus` beside the
/// repository. `None` when absent, unless `VEZA_REQUIRE_CORPUS=1`, in which case it panics (CI
/// sets it so a missing corpus fails instead of skipping).
pub fn corpus_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("VEZA_AUDIO_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/audio-corpus"
            ))
        });
    if dir.join("README.md").exists() {
        return Some(dir);
    }
    if std::env::var("VEZA_REQUIRE_CORPUS").is_ok_and(|v| v == "1") {
        panic!(
            "the audio corpus is required (VEZA_REQUIRE_CORPUS=1) but {} is missing",
            dir.display()
        );
    }
    eprintln!(
        "SKIPPED: audio corpus not found at {} (set VEZA_AUDIO_CORPUS)",
        dir.display()
    );
    None
}

/// Panics with an install hint unless `tool` (ffmpeg, ffprobe) runs.
pub fn require_tool(tool: &str) {
    let ok = Command::new(tool)
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{tool} is needed for this test: install it (Debian: apt-get install -y ffmpeg)"
    );
}

/// Runs ffprobe on a file and returns `(codec_name, sample_rate, channels, duration_secs)` of
/// the first audio stream.
pub fn ffprobe(path: &std::path::Path) -> (String, u32, u16, f64) {
    require_tool("ffprobe");
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "a:0", "-show_entries"])
        .arg("stream=codec_name,sample_rate,channels:format=duration")
        .args(["-of", "default=noprint_wrappers=1"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "ffprobe failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("ffprobe gave no {k} for {}: {text}", path.display()))
            .to_string()
    };
    (
        get("codec_name"),
        get("sample_rate").parse().expect("rate"),
        get("channels").parse().expect("channels"),
        get("duration").parse().unwrap_or(f64::NAN),
    )
}

/// Decodes a file with ffmpeg to mono f32 and returns the number of frames and any error text.
pub fn ffmpeg_decode_frames(path: &std::path::Path) -> (usize, String) {
    require_tool("ffmpeg");
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:a:0", "-ac", "1", "-f", "f32le", "-"])
        .output()
        .expect("ffmpeg runs");
    (
        out.stdout.len() / 4,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A sine of `freq` Hz at `amp` peak, `secs` long, identical in every channel.
pub fn sine(rate: u32, channels: u16, freq: f64, amp: f64, secs: f64) -> veza_audio::PcmBuffer {
    let spec = veza_audio::AudioSpec::new(rate, channels).expect("spec");
    let n = (secs * f64::from(rate)) as usize;
    let plane: Vec<f32> = (0..n)
        .map(|i| (amp * (std::f64::consts::TAU * freq * i as f64 / f64::from(rate)).sin()) as f32)
        .collect();
    veza_audio::PcmBuffer::from_planes(spec, vec![plane; usize::from(channels)])
}

/// Goertzel power of `freq` in `x` (normalised by length).
pub fn tone_power(x: &[f32], rate: u32, freq: f64) -> f64 {
    let w = std::f64::consts::TAU * freq / f64::from(rate);
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s = f64::from(v) + c * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - c * s1 * s2) / (x.len() as f64).powi(2)
}

/// RMS of `x`.
pub fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len().max(1) as f64).sqrt()
}

/// An amplitude ratio in dB (`20 log10`, floored at -240 dB).
pub fn db(x: f64) -> f64 {
    20.0 * x.max(1e-12).log10()
}

/// How far (in dB) the tone at `freq` stands above the strongest of `others` in `x`.
pub fn tone_margin_db(x: &[f32], rate: u32, freq: f64, others: &[f64]) -> f64 {
    let p = tone_power(x, rate, freq);
    let worst = others
        .iter()
        .map(|&f| tone_power(x, rate, f))
        .fold(1e-30, f64::max);
    10.0 * (p / worst).log10()
}

/// A RIFF/WAVE header for integer PCM (`WAVE_FORMAT_PCM`, any channel count) whose `data` chunk
/// claims `data_len` bytes. Written by hand so tests can build headers that lie (zero channels,
/// sizes larger than the bytes present).
pub fn wav_header(rate: u32, channels: u16, bits: u16, data_len: u32) -> Vec<u8> {
    let block_align = channels * (bits / 8);
    let mut h = Vec::with_capacity(44);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&data_len.saturating_add(36).to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&channels.to_le_bytes());
    h.extend_from_slice(&rate.to_le_bytes());
    h.extend_from_slice(&(rate * u32::from(block_align)).to_le_bytes());
    h.extend_from_slice(&block_align.to_le_bytes());
    h.extend_from_slice(&bits.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data_len.to_le_bytes());
    h
}

/// `pcm` as a 16- or 24-bit integer PCM WAV file in memory (independent of the crate's own WAV
/// encoder, so a bug there cannot hide in the fixtures).
pub fn wav_bytes(pcm: &veza_audio::PcmBuffer, bits: u16) -> Vec<u8> {
    assert!(bits == 16 || bits == 24, "16 or 24 bits");
    let bytes_per = usize::from(bits / 8);
    let data_len = pcm.frames() * pcm.channels() * bytes_per;
    let mut out = wav_header(
        pcm.sample_rate().hz(),
        pcm.channels() as u16,
        bits,
        u32::try_from(data_len).expect("fixture under 4 GiB"),
    );
    out.reserve(data_len);
    for i in 0..pcm.frames() {
        for p in pcm.planes() {
            let v = veza_audio::pcm::f32_to_int(p[i], u32::from(bits));
            out.extend_from_slice(&v.to_le_bytes()[..bytes_per]);
        }
    }
    out
}

/// A fully decoded file: what the decoder said and every sample.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The decoder's stream info.
    pub info: veza_audio::StreamInfo,
    /// Rate of the decoded blocks.
    pub rate: u32,
    /// Channels of the decoded blocks.
    pub channels: usize,
    /// One plane per channel.
    pub planes: Vec<Vec<f32>>,
}

impl Decoded {
    /// Frames decoded.
    pub fn frames(&self) -> usize {
        self.planes.first().map_or(0, Vec::len)
    }

    /// Seconds decoded.
    pub fn secs(&self) -> f64 {
        self.frames() as f64 / f64::from(self.rate)
    }
}

fn decode_with(mut d: veza_audio::decode::Decoder) -> veza_audio::Result<Decoded> {
    let spec = d.spec();
    let mut planes = vec![Vec::new(); usize::from(spec.channels)];
    while let Some(b) = d.next_block()? {
        assert_eq!(b.spec(), spec, "the spec changed mid-stream");
        for (dst, src) in planes.iter_mut().zip(b.planes()) {
            dst.extend_from_slice(src);
        }
    }
    Ok(Decoded {
        info: d.info().clone(),
        rate: spec.sample_rate.hz(),
        channels: usize::from(spec.channels),
        planes,
    })
}

/// Decodes bytes with veza-audio's pull [`veza_audio::decode::Decoder`] (seekable cursor, so
/// container fix-ups such as MP4 edit lists apply).
pub fn decode_bytes(bytes: &[u8]) -> veza_audio::Result<Decoded> {
    decode_with(veza_audio::decode::Decoder::from_seekable(
        std::io::Cursor::new(bytes.to_vec()),
        veza_audio::decode::DecoderOptions::default(),
    )?)
}

/// Decodes a file with veza-audio's pull decoder.
pub fn decode_path(path: &std::path::Path) -> veza_audio::Result<Decoded> {
    decode_with(veza_audio::decode::Decoder::open_path(
        path,
        veza_audio::decode::DecoderOptions::default(),
    )?)
}

/// Samples per codec frame of `format` at `rate` (FLAC: the encoder's block size; WAV: 1).
pub fn codec_frame(format: veza_audio::OutputFormat, rate: u32) -> usize {
    use veza_audio::OutputFormat as F;
    match format {
        F::Mp3 if rate >= 32_000 => 1152,
        F::Mp3 => 576,
        F::Flac => 4096,
        F::Aac | F::M4a => 1024,
        // Vorbis long blocks are 2048 samples; a packet yields half of that.
        F::Ogg => 2048,
        F::Wav => 1,
        _ => 4096,
    }
}

/// A scratch folder under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty folder named after `label` and the process.
    pub fn new(label: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "veza-tests-{label}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// A path inside the folder.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What `ffmpeg -v error -i PATH -f null -` prints (empty when the file decodes cleanly).
pub fn ffmpeg_errors(path: &std::path::Path) -> String {
    require_tool("ffmpeg");
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    let mut text = String::from_utf8_lossy(&out.stderr).to_string();
    if !out.status.success() {
        text.push_str(&format!("\n(ffmpeg exited with {})", out.status));
    }
    text
}

/// The tags ffprobe finds in a file, container-level (`-show_format`) and stream-level
/// (`-show_streams`) separately, as lowercase `key=value` lines.
pub fn ffprobe_tags(path: &std::path::Path) -> (String, String) {
    require_tool("ffprobe");
    let run = |entries: &str| {
        let out = Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", entries])
            .args(["-of", "default=noprint_wrappers=1"])
            .arg(path)
            .output()
            .expect("ffprobe runs");
        assert!(
            out.status.success(),
            "ffprobe failed on {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("TAG:"))
            .map(|l| match l.split_once('=') {
                Some((k, v)) => format!("{}={v}", k.to_ascii_lowercase()),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    (run("format_tags"), run("stream_tags"))
}

/// A 440 Hz stereo tone of `secs` seconds at 44.1 kHz, encoded by ffmpeg with `codec_args`
/// (e.g. `["-c:a", "libmp3lame", "-b:a", "128k"]`) into `dir/name`.
pub fn live_tone(dir: &std::path::Path, name: &str, secs: f64, codec_args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency=440:sample_rate=44100:duration={secs}"
        ))
        .args(["-ac", "2"])
        .args(codec_args)
        .arg(&out)
        .status()
        .expect("ffmpeg runs");
    assert!(st.success(), "ffmpeg could not make the test tone");
    out
}

/// ffmpeg as an Icecast source (`icecast://source:KEY@ADDR/live/ID`), sending `file` in real
/// time (`-re`, `-c copy`) as `fmt` with content type `ct`, named "Veza Test FM", genre "Test".
pub fn icecast_source(
    addr: std::net::SocketAddr,
    id: &str,
    key: &str,
    file: &std::path::Path,
    fmt: &str,
    ct: &str,
) -> std::process::Child {
    use std::process::Stdio;
    Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-i"])
        .arg(file)
        .args(["-c", "copy", "-f", fmt, "-content_type", ct])
        .args(["-ice_name", "Veza Test FM", "-ice_genre", "Test"])
        .arg(format!("icecast://source:{key}@{addr}/live/{id}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg starts")
}

/// Seconds of audio ffmpeg decodes from a file (8 kHz mono samples counted).
pub fn decoded_secs(path: &std::path::Path) -> f64 {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "s16le", "-ac", "1", "-ar", "8000", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "ffmpeg could not decode {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.len() as f64 / 2.0 / 8000.0
}

/// Standard base64 of a string (for HTTP Basic credentials in raw requests).
pub fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}
