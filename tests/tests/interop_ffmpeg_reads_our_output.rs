//! ffprobe and ffmpeg read every format we write: codec, rate, channels and duration as
//! written, tags where the format has them, and a full decode without a single error line; for
//! files written by `transcode_path` (headers patched at the end), for streams written by the
//! push `Transcoder` (headers left at their "unknown length" values), and for transcodes of
//! real corpus files.
//!
//! What ffprobe 5.1 reports as the duration differs by format:
//! - FLAC and WAV from `transcode_path`: the patched header, so exactly the input length;
//! - Ogg: the last granule position, exact;
//! - MP3: the frame count of the LAME info frame times 1152, i.e. the input plus the encoder
//!   delay and padding (under two frames more); ffmpeg's decode trims both, so the decoded
//!   length is exact;
//! - ADTS AAC: an estimate from the bitrate of the first frames ("may be inaccurate", ffprobe
//!   says), so only the full decode is measured: the input plus priming and padding (ADTS
//!   cannot signal them);
//! - fragmented M4A: the sum of the fragments, priming included (ffmpeg 5.1 reports the same
//!   for its own `-movflags frag_keyframe+empty_moov` output); ffmpeg's decode applies the
//!   edit list's start, so the decoded length is within one frame.

use std::path::Path;

use veza_audio::transcode::{TranscodeOptions, Transcoder, transcode_path};
use veza_audio::{OutputFormat, Tags};
use veza_tests::{
    TempDir, codec_frame, corpus_dir, ffmpeg_decode_frames, ffmpeg_errors, ffprobe, ffprobe_tags,
    sine, wav_bytes,
};

const RATE: u32 = 44_100;
const SECS: f64 = 3.0;
/// FDK's AAC-LC priming (under 2048 samples) plus the padding of the last 1024-sample frame.
const AAC_EXTRA: usize = 2048 + 1024;

fn ffmpeg_codec_name(format: OutputFormat) -> &'static str {
    match format {
        OutputFormat::Mp3 => "mp3",
        OutputFormat::Flac => "flac",
        OutputFormat::Aac | OutputFormat::M4a => "aac",
        OutputFormat::Ogg => "vorbis",
        OutputFormat::Wav => "pcm_s16le",
        _ => "?",
    }
}

/// Checks what ffprobe reports for a file holding `frames` input frames, and that ffmpeg
/// decodes it cleanly to the right length. `patched`: headers hold the final lengths.
fn check_probe(
    path: &Path,
    format: OutputFormat,
    rate: u32,
    channels: u16,
    frames: u64,
    patched: bool,
) {
    let ctx = format!("{format} ({})", path.display());
    let (codec, r, ch, dur) = ffprobe(path);
    assert_eq!(codec, ffmpeg_codec_name(format), "{ctx}: codec");
    assert_eq!(r, rate, "{ctx}: rate");
    assert_eq!(ch, channels, "{ctx}: channels");
    let secs = frames as f64 / f64::from(rate);
    let frame = codec_frame(format, rate) as f64 / f64::from(rate);
    let extra = AAC_EXTRA as f64 / f64::from(rate);
    // ffprobe prints durations with 6 decimals.
    let ok = match format {
        OutputFormat::Flac | OutputFormat::Wav if patched => (dur - secs).abs() < 2e-6 + 1e-6,
        // Streamed FLAC/WAV headers say "unknown length": ffprobe then reports the length
        // found by reading to the end, or an estimate; a missing duration is acceptable.
        OutputFormat::Flac | OutputFormat::Wav => dur.is_nan() || (dur - secs).abs() <= frame,
        OutputFormat::Mp3 => dur >= secs - 1e-6 && dur <= secs + 2.0 * frame,
        // An estimate from the bitrate of the first frames (8 % short for a 96 kHz corpus
        // file): the decoded length below is what counts.
        OutputFormat::Aac => dur.is_nan() || dur > 0.0,
        OutputFormat::M4a => dur >= secs - frame && dur <= secs + extra,
        _ => (dur - secs).abs() <= frame,
    };
    assert!(ok, "{ctx}: ffprobe duration {dur} s, input {secs} s");

    let errors = ffmpeg_errors(path);
    assert!(
        errors.trim().is_empty(),
        "{ctx}: ffmpeg decode errors:\n{errors}"
    );
    let (decoded, _) = ffmpeg_decode_frames(path);
    let decoded = decoded as u64;
    let frame_len = codec_frame(format, rate) as u64;
    let ok = match format {
        OutputFormat::Aac => decoded >= frames && decoded <= frames + AAC_EXTRA as u64,
        // Without an info frame (streamed MP3) nothing tells ffmpeg to trim delay and padding.
        OutputFormat::Mp3 if !patched => decoded >= frames && decoded <= frames + 3 * frame_len,
        _ => decoded.abs_diff(frames) <= frame_len,
    };
    assert!(ok, "{ctx}: ffmpeg decoded {decoded} frames, input {frames}");
}

fn tags() -> Tags {
    Tags {
        title: Some("Sine Tëst".into()),
        artist: Some("Veza".into()),
        album: Some("Interop".into()),
        ..Tags::default()
    }
}

fn write_input(dir: &TempDir) -> (std::path::PathBuf, u64) {
    let pcm = sine(RATE, 2, 1000.0, 0.5, SECS);
    let path = dir.join("in.wav");
    std::fs::write(&path, wav_bytes(&pcm, 16)).expect("write input");
    (path, pcm.frames() as u64)
}

fn transcode_file(format: OutputFormat) {
    let dir = TempDir::new("interop");
    let (src, frames) = write_input(&dir);
    let dst = dir.join(&format!("out.{}", format.extension()));
    let mut opts = TranscodeOptions::new(format);
    opts.tags = Some(tags());
    transcode_path(&src, &dst, &opts).unwrap_or_else(|e| panic!("{format}: {e}"));
    check_probe(&dst, format, RATE, 2, frames, true);

    // Tags: ADTS has nowhere to put them. ffmpeg keeps Ogg's Vorbis comments on the stream,
    // every other container's tags on the format.
    if format != OutputFormat::Aac {
        let (format_tags, stream_tags) = ffprobe_tags(&dst);
        let found = if format == OutputFormat::Ogg {
            stream_tags
        } else {
            format_tags
        };
        for want in ["title=Sine Tëst", "artist=Veza", "album=Interop"] {
            assert!(
                found.lines().any(|l| l == want),
                "{format}: ffprobe shows no {want:?} in:\n{found}"
            );
        }
    }
}

#[test]
fn ffprobe_reads_mp3() {
    transcode_file(OutputFormat::Mp3);
}

#[test]
fn ffprobe_reads_flac_with_exact_length() {
    transcode_file(OutputFormat::Flac);
}

#[test]
fn ffprobe_reads_aac_adts() {
    transcode_file(OutputFormat::Aac);
}

#[test]
fn ffprobe_reads_m4a() {
    transcode_file(OutputFormat::M4a);
}

#[test]
fn ffprobe_reads_ogg_vorbis() {
    transcode_file(OutputFormat::Ogg);
}

#[test]
fn ffprobe_reads_wav_with_exact_length() {
    transcode_file(OutputFormat::Wav);
}

/// Streams written by the push transcoder (no header rewrite) decode cleanly in ffmpeg too.
#[test]
fn ffmpeg_reads_streamed_output_of_every_format() {
    let pcm = sine(RATE, 2, 1000.0, 0.5, SECS);
    let wav = wav_bytes(&pcm, 16);
    let dir = TempDir::new("interop-stream");
    let mut failures = Vec::new();
    for format in OutputFormat::ALL {
        let mut t = Transcoder::new(TranscodeOptions::new(format)).expect("transcoder");
        let mut out = Vec::new();
        let run = (|| {
            for chunk in wav.chunks(10_000) {
                t.push(chunk)?;
                out.extend_from_slice(&t.take_output());
            }
            out.extend_from_slice(&t.finish()?);
            Ok::<_, veza_audio::AudioError>(())
        })();
        if let Err(e) = run {
            failures.push(format!("{format}: {e}"));
            continue;
        }
        let path = dir.join(&format!("stream.{}", format.extension()));
        std::fs::write(&path, &out).expect("write");
        if let Err(p) = std::panic::catch_unwind(|| {
            check_probe(&path, format, RATE, 2, pcm.frames() as u64, false)
        }) {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(msg);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Transcodes a corpus file and checks what ffprobe says of the result.
fn corpus_case(file: &str, format: OutputFormat, rate: u32, channels: u16) {
    let Some(corpus) = corpus_dir() else { return };
    let dir = TempDir::new("interop-corpus");
    let dst = dir.join(&format!("out.{}", format.extension()));
    let report = transcode_path(&corpus.join(file), &dst, &TranscodeOptions::new(format))
        .unwrap_or_else(|e| panic!("{file} -> {format}: {e}"));
    assert_eq!(report.output_spec.sample_rate.hz(), rate, "{file}");
    assert_eq!(report.output_spec.channels, channels, "{file}");
    // The output holds as many frames as were decoded (same rate in all three cases).
    assert_eq!(report.source.sample_rate.hz(), rate, "{file}");
    check_probe(&dst, format, rate, channels, report.frames_decoded, true);
}

#[test]
fn corpus_vorbis_music_to_mp3() {
    corpus_case(
        "music/lincity-ng-architectural-contemplations.ogg",
        OutputFormat::Mp3,
        44_100,
        2,
    );
}

#[test]
fn corpus_96k_24bit_flac_to_aac_stays_96k() {
    corpus_case("flac/ietf-s28-96k-24bit.flac", OutputFormat::Aac, 96_000, 2);
}

#[test]
fn corpus_5_1_flac_to_mp3_down_mixes_to_stereo() {
    corpus_case("flac/ietf-s41-5.1-6ch.flac", OutputFormat::Mp3, 44_100, 2);
}
