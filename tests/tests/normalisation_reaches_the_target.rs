//! Loudness normalisation brings a transcode to its target (as measured by `LoudnessMeter` on
//! the decoded output) without pushing the true peak over the ceiling; fades shape the start
//! and the end and leave the rest alone.

use std::time::Duration;

use veza_audio::loudness::{LoudnessMeter, LoudnessReport};
use veza_audio::transcode::{OutputSettings, TranscodeOptions, transcode_bytes, transcode_path};
use veza_audio::{AudioSpec, OutputFormat, PcmBuffer};
use veza_tests::{Decoded, TempDir, db, decode_bytes, decode_path, rms, sine, wav_bytes};

const RATE: u32 = 44_100;

fn measure(d: &Decoded) -> LoudnessReport {
    let spec = AudioSpec::new(d.rate, d.channels as u16).expect("spec");
    let mut meter = LoudnessMeter::new(spec).expect("meter");
    meter
        .push(&PcmBuffer::from_planes(spec, d.planes.clone()))
        .expect("measure");
    meter.report().expect("report")
}

fn flac24(normalize: f64, ceiling: f64) -> TranscodeOptions {
    let mut settings = OutputSettings::new(OutputFormat::Flac);
    settings.bits_per_sample = Some(24);
    let mut opts = TranscodeOptions {
        output: Some(settings),
        ..TranscodeOptions::default()
    };
    opts.processing.normalize_lufs = Some(normalize);
    opts.processing.true_peak_ceiling_dbtp = ceiling;
    opts
}

#[test]
fn quiet_sine_is_raised_to_minus_16_lufs() {
    // -30 dBFS peak, 1 kHz, stereo, 5 s.
    let pcm = sine(RATE, 2, 1000.0, 10f64.powf(-30.0 / 20.0), 5.0);
    let wav = wav_bytes(&pcm, 16);
    let opts = flac24(-16.0, -1.0);

    let (out, report) = transcode_bytes(wav.clone().into(), &opts).expect("transcode");
    let gain = report.normalization_gain_db.expect("a gain was applied");
    assert!((10.0..16.0).contains(&gain), "gain {gain:.2} dB");
    let d = decode_bytes(&out).expect("decode");
    let measured = measure(&d);
    let lufs = measured.integrated_lufs.expect("loudness");
    assert!(
        (lufs + 16.0).abs() <= 0.5,
        "integrated {lufs:.2} LUFS, target -16"
    );

    // The same through files (two passes over the input path).
    let dir = TempDir::new("normalise");
    let src = dir.join("quiet.wav");
    let dst = dir.join("quiet.flac");
    std::fs::write(&src, &wav).expect("write");
    let report = transcode_path(&src, &dst, &opts).expect("transcode_path");
    assert_eq!(report.normalization_gain_db, Some(gain));
    let lufs = measure(&decode_path(&dst).expect("decode"))
        .integrated_lufs
        .expect("loudness");
    assert!(
        (lufs + 16.0).abs() <= 0.5,
        "file: integrated {lufs:.2} LUFS"
    );
}

#[test]
fn loud_peaks_stay_under_the_true_peak_ceiling() {
    // A -20 dBFS sine with a 20 ms burst at -0.3 dBFS every second: quiet on average, with
    // peaks near full scale. Reaching -9 LUFS would need about +8 dB; the -1 dBTP ceiling
    // allows about -0.7 dB.
    let mut pcm = sine(RATE, 2, 1000.0, 0.1, 5.0);
    let burst = 10f64.powf(-0.3 / 20.0) / 0.1;
    for plane in pcm.planes_mut() {
        for sec in 0..5 {
            let start = sec * RATE as usize + RATE as usize / 2;
            for s in &mut plane[start..start + RATE as usize / 50] {
                *s = (f64::from(*s) * burst) as f32;
            }
        }
    }
    let input = {
        let spec = pcm.spec();
        let mut m = LoudnessMeter::new(spec).expect("meter");
        m.push(&pcm).expect("measure");
        m.report().expect("report")
    };
    let opts = flac24(-9.0, -1.0);
    let (out, report) = transcode_bytes(wav_bytes(&pcm, 24).into(), &opts).expect("transcode");
    let gain = report.normalization_gain_db.expect("gain");
    assert!(
        gain < 0.0,
        "gain {gain:.2} dB should be limited by the ceiling"
    );
    let m = measure(&decode_bytes(&out).expect("decode"));
    let tp = m.true_peak_dbtp.expect("peak");
    assert!(
        tp <= -1.0 + 0.05,
        "true peak {tp:.2} dBTP over the -1 dBTP ceiling"
    );
    let lufs = m.integrated_lufs.expect("loudness");
    let before = input.integrated_lufs.expect("input loudness");
    assert!(
        (lufs - (before + gain)).abs() < 0.3,
        "integrated {lufs:.2} LUFS, input {before:.2} + gain {gain:.2}"
    );
    assert!(
        lufs < -9.0 - 1.0,
        "the ceiling, not the target, set the gain"
    );
}

fn window(x: &[f32], from_s: f64, to_s: f64) -> &[f32] {
    &x[(from_s * f64::from(RATE)) as usize..(to_s * f64::from(RATE)) as usize]
}

#[test]
fn fades_shape_the_ends_and_keep_the_middle() {
    let secs = 5.0;
    let pcm = sine(RATE, 2, 1000.0, 0.5, secs);
    let full = rms(pcm.plane(0));
    let mut opts = TranscodeOptions::new(OutputFormat::Wav);
    opts.processing.fade_in = Some(Duration::from_secs(1));
    opts.processing.fade_out = Some(Duration::from_secs(1));
    let (out, _) = transcode_bytes(wav_bytes(&pcm, 16).into(), &opts).expect("transcode");
    let d = decode_bytes(&out).expect("decode");
    assert_eq!(d.frames(), pcm.frames());
    for (ch, x) in d.planes.iter().enumerate() {
        let level = |a: f64, b: f64| db(rms(window(x, a, b)) / full);
        // Near silent in the first and last 10 ms.
        let start = level(0.0, 0.01);
        let end = level(secs - 0.01, secs);
        assert!(start < -40.0, "ch {ch}: first 10 ms at {start:.1} dB");
        assert!(end < -40.0, "ch {ch}: last 10 ms at {end:.1} dB");
        // Half way through the linear fade-in: half the amplitude (-6 dB).
        let half = level(0.49, 0.51);
        assert!(
            (half + 6.02).abs() < 0.5,
            "ch {ch}: fade-in midpoint {half:.2} dB"
        );
        // Untouched after the fade-in and before the fade-out.
        for (a, b) in [(1.45, 1.55), (2.45, 2.55), (3.45, 3.55)] {
            let l = level(a, b);
            assert!(l.abs() < 0.1, "ch {ch}: {a}..{b} s at {l:+.2} dB");
        }
    }
}
