//! Every encoder round-trips a sine: a WAV made in memory is transcoded (in memory with
//! `transcode_bytes` and file to file with `transcode_path`), decoded back with veza-audio's own
//! decoder, and keeps its length, rate, channels, frequency and level; resampling and
//! down-mixing keep the tone and the length.
//!
//! Length tolerance: one codec frame, except ADTS AAC, which has no way to say how many priming
//! samples the encoder put in front (MP3 has the LAME info frame, M4A its edit list, Ogg its
//! granule positions, FLAC and WAV are exact), so its decode is longer by FDK's priming plus
//! the padding of the last frame.

use veza_audio::transcode::{OutputSettings, TranscodeOptions, transcode_bytes, transcode_path};
use veza_audio::{OutputFormat, PcmBuffer, SampleRate};
use veza_tests::{
    Decoded, TempDir, codec_frame, db, decode_bytes, decode_path, rms, sine, tone_margin_db,
    wav_bytes,
};

const TONE: f64 = 1000.0;
/// -6 dBFS peak.
const AMP: f64 = 0.501_187_233_627_272_2;
const SECS: f64 = 3.0;
/// FDK's AAC-LC priming is under 2048 samples; the last frame is padded to 1024.
const ADTS_EXTRA: usize = 2048 + 1024;

/// What a decoded output must look like.
struct Expect {
    rate: u32,
    channels: usize,
    /// Frames of the input, at the output rate.
    frames: usize,
    /// RMS of the input (per channel, all channels alike).
    rms: f64,
    /// Bits per sample the decoder must report (FLAC and WAV).
    bits: Option<u32>,
}

/// The middle of a plane, away from fades, priming and resampler edges.
fn middle(x: &[f32], rate: u32) -> &[f32] {
    let edge = (rate / 4) as usize;
    &x[edge.min(x.len())..x.len().saturating_sub(edge)]
}

fn check(format: OutputFormat, label: &str, d: &Decoded, e: &Expect) {
    let ctx = format!("{format} {label}");
    assert_eq!(d.rate, e.rate, "{ctx}: rate");
    assert_eq!(d.channels, e.channels, "{ctx}: channels");
    let got = d.frames();
    if format == OutputFormat::Aac {
        // ADTS cannot signal the encoder delay (see the module docs).
        assert!(
            got >= e.frames && got <= e.frames + ADTS_EXTRA,
            "{ctx}: {got} frames decoded, input {} (+ at most {ADTS_EXTRA})",
            e.frames
        );
    } else {
        let tol = codec_frame(format, e.rate);
        assert!(
            got.abs_diff(e.frames) <= tol,
            "{ctx}: {got} frames decoded, input {} (tolerance {tol})",
            e.frames
        );
    }
    for (ch, plane) in d.planes.iter().enumerate() {
        let mid = middle(plane, d.rate);
        let margin = tone_margin_db(mid, d.rate, TONE, &[700.0, 1500.0]);
        assert!(
            margin >= 30.0,
            "{ctx}: channel {ch}: 1 kHz only {margin:.1} dB above 700 Hz / 1.5 kHz"
        );
        let level = db(rms(mid) / e.rms);
        assert!(
            level.abs() <= 1.0,
            "{ctx}: channel {ch}: level {level:+.2} dB from the input's"
        );
    }
    if let Some(bits) = e.bits {
        assert_eq!(d.info.bits_per_sample, Some(bits), "{ctx}: bits per sample");
    }
}

fn input(rate: u32, channels: u16) -> PcmBuffer {
    sine(rate, channels, TONE, AMP, SECS)
}

fn expect_same(pcm: &PcmBuffer) -> Expect {
    Expect {
        rate: pcm.sample_rate().hz(),
        channels: pcm.channels(),
        frames: pcm.frames(),
        rms: rms(middle(pcm.plane(0), pcm.sample_rate().hz())),
        bits: None,
    }
}

/// Transcodes `wav` in memory with `settings`, decodes the result and checks it.
fn in_memory(label: &str, wav: &[u8], settings: OutputSettings, e: &Expect) {
    let format = settings.format;
    let opts = TranscodeOptions {
        output: Some(settings),
        ..TranscodeOptions::default()
    };
    let (out, report) = transcode_bytes(wav.to_vec().into(), &opts)
        .unwrap_or_else(|err| panic!("{format} {label}: transcode failed: {err}"));
    assert_eq!(report.format, format);
    assert_eq!(report.output_spec.sample_rate.hz(), e.rate, "{label}");
    assert_eq!(usize::from(report.output_spec.channels), e.channels);
    assert_eq!(report.bytes_written, out.len() as u64, "{format} {label}");
    let d = decode_bytes(&out)
        .unwrap_or_else(|err| panic!("{format} {label}: our decoder rejects the output: {err}"));
    check(format, label, &d, e);
}

fn round_trip(format: OutputFormat) {
    let lossless = matches!(format, OutputFormat::Flac | OutputFormat::Wav);

    // Stereo 44.1 kHz, in memory and file to file.
    let pcm = input(44_100, 2);
    let wav = wav_bytes(&pcm, 16);
    let mut e = expect_same(&pcm);
    if lossless {
        e.bits = Some(16);
    }
    in_memory("stereo 44.1k", &wav, OutputSettings::new(format), &e);

    let dir = TempDir::new("roundtrip");
    let src = dir.join("in.wav");
    std::fs::write(&src, &wav).expect("write input");
    let dst = dir.join(&format!("out.{}", format.extension()));
    let report = transcode_path(&src, &dst, &TranscodeOptions::new(format))
        .unwrap_or_else(|err| panic!("{format}: transcode_path failed: {err}"));
    assert_eq!(report.frames_decoded, pcm.frames() as u64);
    assert_eq!(
        report.bytes_written,
        std::fs::metadata(&dst).expect("output exists").len()
    );
    let d = decode_path(&dst).unwrap_or_else(|err| panic!("{format}: path output: {err}"));
    check(format, "stereo 44.1k via transcode_path", &d, &e);

    // Mono 48 kHz and stereo 22.05 kHz (every encoder takes both).
    for (rate, ch) in [(48_000, 1), (22_050, 2)] {
        let pcm = input(rate, ch);
        in_memory(
            &format!("{ch} ch {rate} Hz"),
            &wav_bytes(&pcm, 16),
            OutputSettings::new(format),
            &expect_same(&pcm),
        );
    }

    // 24 bits when asked (FLAC, WAV), and by default from a 24-bit source.
    if lossless {
        let mut s = OutputSettings::new(format);
        s.bits_per_sample = Some(24);
        let e24 = Expect {
            bits: Some(24),
            ..expect_same(&pcm)
        };
        in_memory("24-bit asked", &wav, s, &e24);
        let wav24 = wav_bytes(&pcm, 24);
        in_memory("24-bit source", &wav24, OutputSettings::new(format), &e24);
    }

    // Resampling: 44.1 kHz in, 48 kHz out.
    let mut s = OutputSettings::new(format);
    s.sample_rate = Some(SampleRate::DVD);
    let e48 = Expect {
        rate: 48_000,
        frames: (SECS * 48_000.0) as usize,
        ..expect_same(&pcm)
    };
    in_memory("44.1k -> 48k", &wav, s, &e48);

    // Down-mix: 5.1 in, stereo out; stereo in, mono out. The sine is in every channel (LFE
    // too, which the down-mix drops), and the mixer normalises its rows, so the level stays.
    let pcm6 = input(44_100, 6);
    let mut s = OutputSettings::new(format);
    s.channels = Some(2);
    let e2 = Expect {
        channels: 2,
        ..expect_same(&pcm6)
    };
    in_memory("6 ch -> stereo", &wav_bytes(&pcm6, 16), s, &e2);
    let mut s = OutputSettings::new(format);
    s.channels = Some(1);
    let e1 = Expect {
        channels: 1,
        ..expect_same(&pcm)
    };
    in_memory("stereo -> mono", &wav, s, &e1);
}

#[test]
fn mp3_round_trips() {
    round_trip(OutputFormat::Mp3);
}

#[test]
fn flac_round_trips() {
    round_trip(OutputFormat::Flac);
}

#[test]
fn aac_adts_round_trips() {
    round_trip(OutputFormat::Aac);
}

#[test]
fn m4a_round_trips() {
    round_trip(OutputFormat::M4a);
}

#[test]
fn ogg_vorbis_round_trips() {
    round_trip(OutputFormat::Ogg);
}

#[test]
fn wav_round_trips() {
    round_trip(OutputFormat::Wav);
}

#[test]
fn mp3_and_aac_down_mix_multichannel_to_stereo_by_default() {
    let pcm6 = input(44_100, 6);
    let wav6 = wav_bytes(&pcm6, 16);
    for format in [OutputFormat::Mp3, OutputFormat::Aac, OutputFormat::M4a] {
        let e = Expect {
            channels: 2,
            ..expect_same(&pcm6)
        };
        in_memory(
            "6 ch, no channel setting",
            &wav6,
            OutputSettings::new(format),
            &e,
        );
    }
}
