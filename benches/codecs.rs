//! Criterion benchmarks of the codec engine: decode, resample, channel conversion, encode, full
//! transcodes and a four-rung MP3 ladder.
//!
//! Every input is generated at start-up (a few seconds of a music-like stereo signal, encoded
//! once with our own encoders), so `cargo bench -p veza-benches --bench codecs` needs no files.
//!
//! Throughput is reported in audio frames (one sample per channel) of the *input*, so
//! `elem/s / 44 100` is the speed in x realtime (1 Melem/s = 22.7x realtime for 44.1 kHz input).
//! See `docs/performance.md` for figures and for the ffmpeg comparison (`benches/compare.sh`).

use std::hint::black_box;
use std::io::Cursor;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, measurement::WallTime};
use veza_audio::decode::{Decoder, DecoderOptions};
use veza_audio::dsp::channels::ChannelMixer;
use veza_audio::dsp::resample::{ResampleQuality, Resampler};
use veza_audio::ladder::{LadderOptions, RungOutput, run_ladder};
use veza_audio::transcode::{OutputSettings, TranscodeOptions, transcode_bytes};
use veza_audio::{
    AudioSpec, Bitrate, EncoderConfig, OutputFormat, PcmBuffer, RateControl, SampleRate,
    new_encoder,
};

/// Length of the generated input.
const SECONDS: f64 = 4.0;
/// Rate of the generated input.
const RATE: u32 = 44_100;
/// Frames per block handed to encoders, mixers and the resampler (a typical FLAC block).
const BLOCK: usize = 4096;

/// A deterministic music-like stereo signal: pink noise at a low level, a chord progression, a
/// melody with a decaying envelope per note, and a slow tremolo, slightly different per channel.
/// Sine tones alone are far easier for every codec than music; the noise floor keeps the lossy
/// encoders and the FLAC predictor honest.
fn music(seconds: f64, rate: u32) -> PcmBuffer {
    let frames = (seconds * f64::from(rate)) as usize;
    let tau = std::f64::consts::TAU;
    let chords: [[f64; 3]; 4] = [
        [220.0, 277.18, 329.63],
        [196.0, 246.94, 293.66],
        [174.61, 220.0, 261.63],
        [164.81, 207.65, 246.94],
    ];
    let melody = [
        440.0, 493.88, 523.25, 587.33, 659.25, 587.33, 523.25, 493.88,
    ];
    let mut seed: u32 = 0x2545_f491;
    // Paul Kellet's economy pink-noise filter, one state per channel.
    let mut pink = [[0.0f64; 3]; 2];
    let mut planes = vec![Vec::with_capacity(frames), Vec::with_capacity(frames)];
    for n in 0..frames {
        let t = n as f64 / f64::from(rate);
        let chord = chords[(t / 2.0) as usize % chords.len()];
        let note_pos = t * 4.0;
        let note = melody[note_pos as usize % melody.len()];
        let note_env = (-(note_pos.fract()) * 3.0).exp();
        let tremolo = 0.6 + 0.4 * (tau * 0.3 * t).sin();
        for (ch, plane) in planes.iter_mut().enumerate() {
            let detune = 1.0 + 0.001 * ch as f64;
            let mut s = 0.0;
            for (i, f) in chord.iter().enumerate() {
                let f = f * detune;
                // A few harmonics per chord tone.
                s += 0.08 * tremolo * (tau * f * t + i as f64).sin();
                s += 0.03 * tremolo * (tau * 2.0 * f * t).sin();
                s += 0.015 * (tau * 3.0 * f * t).sin();
            }
            s += 0.2 * note_env * (tau * note * t).sin();
            s += 0.05 * note_env * (tau * note * 2.0 * t).sin();
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let white = f64::from(seed >> 8) / f64::from(1u32 << 24) * 2.0 - 1.0;
            let p = &mut pink[ch];
            p[0] = 0.99765 * p[0] + white * 0.099_046;
            p[1] = 0.963 * p[1] + white * 0.296_516_4;
            p[2] = 0.57 * p[2] + white * 1.052_691_3;
            s += 0.03 * (p[0] + p[1] + p[2] + white * 0.1848);
            plane.push(s.clamp(-1.0, 1.0) as f32);
        }
    }
    let spec = AudioSpec::new(rate, 2).expect("valid spec");
    PcmBuffer::from_planes(spec, planes)
}

/// Splits `pcm` into blocks of [`BLOCK`] frames.
fn blocks(pcm: &PcmBuffer) -> Vec<PcmBuffer> {
    let spec = pcm.spec();
    let mut out = Vec::new();
    let mut start = 0;
    while start < pcm.frames() {
        let end = (start + BLOCK).min(pcm.frames());
        let planes = pcm
            .planes()
            .iter()
            .map(|p| p[start..end].to_vec())
            .collect();
        out.push(PcmBuffer::from_planes(spec, planes));
        start = end;
    }
    out
}

/// Encodes `blocks` with `config`; returns the bytes (headers final, as a file would have them).
fn encode(config: &EncoderConfig, blocks: &[PcmBuffer]) -> Bytes {
    let mut enc = new_encoder(config).expect("encoder");
    let mut out = BytesMut::new();
    for b in blocks {
        enc.encode(b, &mut out).expect("encode");
    }
    enc.finish(&mut out).expect("finish");
    if let Some(p) = enc.header_patch() {
        let start = p.offset as usize;
        out[start..start + p.bytes.len()].copy_from_slice(&p.bytes);
    }
    out.freeze()
}

/// The encoder settings benchmarked per format, matching `benches/compare.sh`.
fn encode_configs(spec: AudioSpec) -> Vec<(&'static str, EncoderConfig)> {
    let mut flac = EncoderConfig::new(OutputFormat::Flac, spec);
    flac.flac_level = 5;
    vec![
        (
            "mp3_cbr128",
            EncoderConfig::new(OutputFormat::Mp3, spec)
                .with_rate_control(RateControl::Cbr(Bitrate::kbps(128))),
        ),
        ("flac_l5", flac),
        (
            "aac_adts_128",
            EncoderConfig::new(OutputFormat::Aac, spec)
                .with_rate_control(RateControl::Cbr(Bitrate::kbps(128))),
        ),
        (
            "m4a_128",
            EncoderConfig::new(OutputFormat::M4a, spec)
                .with_rate_control(RateControl::Cbr(Bitrate::kbps(128))),
        ),
        (
            "vorbis_q4",
            EncoderConfig::new(OutputFormat::Ogg, spec).with_rate_control(RateControl::Vbr(4.0)),
        ),
        ("wav_16", EncoderConfig::new(OutputFormat::Wav, spec)),
    ]
}

/// A group with few samples and flat sampling: one iteration takes from milliseconds to a
/// second, and `cargo bench` must stay within a few minutes.
fn group<'a>(c: &'a mut Criterion, name: &str, frames: usize) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(frames as u64));
    g
}

fn decode_frames(bytes: &Bytes) -> u64 {
    let mut dec = Decoder::from_seekable(Cursor::new(bytes.clone()), DecoderOptions::default())
        .expect("open");
    let mut frames = 0u64;
    dec.for_each_block(|b| {
        frames += b.frames() as u64;
        Ok(())
    })
    .expect("decode");
    frames
}

fn bench_decode(c: &mut Criterion, input: &[PcmBuffer], frames: usize) {
    let spec = input[0].spec();
    let encoded: Vec<(&str, Bytes)> = encode_configs(spec)
        .into_iter()
        .map(|(name, cfg)| {
            let mut cfg = cfg;
            cfg.seekable_output = true;
            (name, encode(&cfg, input))
        })
        .collect();
    let mut g = group(c, "decode", frames);
    for (name, bytes) in &encoded {
        // Sanity: the whole input comes back (lossy codecs may pad or trim a little).
        let got = decode_frames(bytes);
        assert!(
            got as f64 > frames as f64 * 0.95,
            "{name}: decoded {got} of {frames} frames"
        );
        let format = name.split('_').next().unwrap_or(name);
        g.bench_function(format, |b| b.iter(|| black_box(decode_frames(bytes))));
    }
    g.finish();
}

fn bench_resample(c: &mut Criterion, input: &[PcmBuffer], frames: usize) {
    let mut g = group(c, "resample", frames);
    for (name, quality) in [
        ("44k1_to_48k_stereo_high", ResampleQuality::High),
        ("44k1_to_48k_stereo_fast", ResampleQuality::Fast),
    ] {
        let from = SampleRate::new(44_100).expect("rate");
        let to = SampleRate::new(48_000).expect("rate");
        let mut out = PcmBuffer::new(AudioSpec {
            sample_rate: to,
            channels: 2,
        });
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut r = Resampler::new(from, to, 2, quality).expect("resampler");
                let mut n = 0;
                for block in input {
                    out.clear();
                    r.process(block, &mut out).expect("resample");
                    n += out.frames();
                }
                out.clear();
                r.flush(&mut out).expect("flush");
                black_box(n + out.frames())
            })
        });
    }
    g.finish();
}

fn bench_channels(c: &mut Criterion, input: &[PcmBuffer], frames: usize) {
    let mut g = group(c, "channels", frames);
    let stereo_spec = input[0].spec();
    let six_spec = AudioSpec::new(RATE, 6).expect("spec");
    // 5.1 input: the stereo pair copied to front, centre (mid), LFE (mid) and back.
    let six: Vec<PcmBuffer> = input
        .iter()
        .map(|b| {
            let (l, r) = (b.plane(0), b.plane(1));
            let mid: Vec<f32> = l.iter().zip(r).map(|(a, b)| 0.5 * (a + b)).collect();
            PcmBuffer::from_planes(
                six_spec,
                vec![
                    l.to_vec(),
                    r.to_vec(),
                    mid.clone(),
                    mid,
                    l.to_vec(),
                    r.to_vec(),
                ],
            )
        })
        .collect();
    let mono: Vec<PcmBuffer> = input
        .iter()
        .map(|b| {
            let spec = AudioSpec::new(RATE, 1).expect("spec");
            PcmBuffer::from_planes(spec, vec![b.plane(0).to_vec()])
        })
        .collect();
    let cases: [(&str, &[PcmBuffer], u16); 3] = [
        ("stereo_to_mono", input, 1),
        ("5.1_to_stereo", &six, 2),
        ("mono_to_stereo", &mono, 2),
    ];
    for (name, blocks, to) in cases {
        let from = blocks[0].channels();
        let mut mixer = ChannelMixer::new(from, usize::from(to)).expect("mixer");
        let mut out = PcmBuffer::new(AudioSpec {
            sample_rate: stereo_spec.sample_rate,
            channels: to,
        });
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut n = 0;
                for block in blocks {
                    out.clear();
                    mixer.process(block, &mut out).expect("mix");
                    n += out.frames();
                }
                black_box(n)
            })
        });
    }
    g.finish();
}

fn bench_encode(c: &mut Criterion, input: &[PcmBuffer], frames: usize) {
    let spec = input[0].spec();
    let mut g = group(c, "encode", frames);
    for (name, cfg) in encode_configs(spec) {
        g.bench_function(name, |b| b.iter(|| black_box(encode(&cfg, input).len())));
    }
    g.finish();
}

fn bench_transcode(c: &mut Criterion, input: &[PcmBuffer], frames: usize) {
    let spec = input[0].spec();
    let mut flac_cfg = EncoderConfig::new(OutputFormat::Flac, spec);
    flac_cfg.seekable_output = true;
    let flac = encode(&flac_cfg, input);
    let mut g = group(c, "transcode", frames);
    let jobs = [
        (
            "flac_to_mp3_cbr128",
            OutputSettings::new(OutputFormat::Mp3).with_kbps(128),
        ),
        (
            "flac_to_aac_adts_128",
            OutputSettings::new(OutputFormat::Aac).with_kbps(128),
        ),
        ("flac_to_vorbis_q4", {
            let mut s = OutputSettings::new(OutputFormat::Ogg);
            s.rate_control = Some(RateControl::Vbr(4.0));
            s
        }),
    ];
    for (name, settings) in jobs {
        let mut opts = TranscodeOptions::new(settings.format);
        opts.output = Some(settings);
        g.bench_function(name, |b| {
            b.iter(|| {
                let (out, _) = transcode_bytes(flac.clone(), &opts).expect("transcode");
                black_box(out.len())
            })
        });
    }
    g.finish();
}

fn bench_ladder(c: &mut Criterion, input: &[PcmBuffer], frames: usize) {
    let spec = input[0].spec();
    let mut flac_cfg = EncoderConfig::new(OutputFormat::Flac, spec);
    flac_cfg.seekable_output = true;
    let flac = encode(&flac_cfg, input);
    let mut g = group(c, "ladder", frames);
    for threads in [1usize, 2] {
        let opts = LadderOptions {
            threads,
            ..LadderOptions::default()
        };
        g.bench_function(
            format!("flac_to_mp3_64_128_192_320_threads{threads}"),
            |b| {
                b.iter(|| {
                    let dec =
                        Decoder::from_seekable(Cursor::new(flac.clone()), opts.decoder.clone())
                            .expect("open");
                    let rungs = [64, 128, 192, 320]
                        .into_iter()
                        .map(|k| RungOutput {
                            settings: OutputSettings::new(OutputFormat::Mp3).with_kbps(k),
                            sink: Box::new(std::io::sink()),
                        })
                        .collect();
                    let report = run_ladder(dec, rungs, &opts).expect("ladder");
                    black_box(report.rungs.iter().map(|r| r.bytes_written).sum::<u64>())
                })
            },
        );
    }
    g.finish();
}

fn main() {
    let pcm = music(SECONDS, RATE);
    let frames = pcm.frames();
    let input = blocks(&pcm);
    let mut c = Criterion::default().configure_from_args();
    bench_decode(&mut c, &input, frames);
    bench_resample(&mut c, &input, frames);
    bench_channels(&mut c, &input, frames);
    bench_encode(&mut c, &input, frames);
    bench_transcode(&mut c, &input, frames);
    bench_ladder(&mut c, &input, frames);
    c.final_summary();
}
