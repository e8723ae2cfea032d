//! A ladder decodes its input once and encodes every rung from it: the rungs are the same
//! bytes whether the encoders run in the caller's thread or on two workers, each decodes back
//! with its own length, rate and channels, and a rung at another rate is resampled.

use std::io::Write;
use std::sync::{Arc, Mutex};

use veza_audio::decode::{Decoder, DecoderOptions};
use veza_audio::ladder::{LadderOptions, LadderReport, RungOutput, ladder_path, run_ladder};
use veza_audio::transcode::OutputSettings;
use veza_audio::{OutputFormat, SampleRate};
use veza_tests::{TempDir, codec_frame, decode_bytes, sine, tone_margin_db, wav_bytes};

const RATE: u32 = 44_100;
const SECS: f64 = 5.0;
/// ADTS cannot signal FDK's priming (under 2048 samples) nor the last frame's padding.
const AAC_EXTRA: usize = 2048 + 1024;

/// A sink the test can read after the ladder is done.
#[derive(Clone, Default)]
struct SharedSink(Arc<Mutex<Vec<u8>>>);

impl Write for SharedSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("sink").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn source() -> Vec<u8> {
    wav_bytes(&sine(RATE, 2, 1000.0, 0.5, SECS), 16)
}

fn mp3(kbps: u32) -> OutputSettings {
    OutputSettings::new(OutputFormat::Mp3).with_kbps(kbps)
}

fn mp3_at_22k() -> OutputSettings {
    let mut s = mp3(64);
    s.sample_rate = Some(SampleRate::new(22_050).expect("rate"));
    s
}

/// Runs the ladder in memory and returns the report and each rung's bytes, with the final
/// headers written over the start as a file sink would get them.
fn run(rungs: &[OutputSettings], threads: usize) -> (LadderReport, Vec<Vec<u8>>) {
    let dec = Decoder::from_seekable(std::io::Cursor::new(source()), DecoderOptions::default())
        .expect("source opens");
    let sinks: Vec<SharedSink> = rungs.iter().map(|_| SharedSink::default()).collect();
    let outputs = rungs
        .iter()
        .zip(&sinks)
        .map(|(s, sink)| RungOutput {
            settings: s.clone(),
            sink: Box::new(sink.clone()),
        })
        .collect();
    let opts = LadderOptions {
        threads,
        ..LadderOptions::default()
    };
    let report = run_ladder(dec, outputs, &opts)
        .unwrap_or_else(|e| panic!("ladder, {threads} thread(s): {e}"));
    let bytes = sinks
        .iter()
        .zip(&report.rungs)
        .map(|(sink, rung)| {
            let mut b = sink.0.lock().expect("sink").clone();
            assert_eq!(b.len() as u64, rung.bytes_written);
            if let Some(p) = &rung.header_patch {
                let at = p.offset as usize;
                b[at..at + p.bytes.len()].copy_from_slice(&p.bytes);
            }
            b
        })
        .collect();
    (report, bytes)
}

fn check_ladder(rungs: &[OutputSettings]) {
    let (one, one_bytes) = run(rungs, 1);
    let (two, two_bytes) = run(rungs, 2);
    assert_eq!(one.worker_threads, 0);
    assert_eq!(two.worker_threads, 2);
    let source_frames = (SECS * f64::from(RATE)) as u64;
    // One decode for all rungs: the frames decoded are the source's, not a multiple of them.
    assert_eq!(one.frames_decoded, source_frames);
    assert_eq!(two.frames_decoded, source_frames);
    assert_eq!(one.rungs.len(), rungs.len());

    for (i, settings) in rungs.iter().enumerate() {
        let format = settings.format;
        let ctx = format!("rung {i} ({format} {:?})", settings.rate_control);
        assert!(
            one_bytes[i] == two_bytes[i],
            "{ctx}: 1 thread gave {} bytes, 2 threads {} bytes",
            one_bytes[i].len(),
            two_bytes[i].len()
        );
        assert_eq!(one.rungs[i], two.rungs[i], "{ctx}: reports differ");
        let want_rate = settings.sample_rate.map_or(RATE, SampleRate::hz);
        assert_eq!(
            one.rungs[i].output_spec.sample_rate.hz(),
            want_rate,
            "{ctx}"
        );
        assert_eq!(one.rungs[i].format, format, "{ctx}");

        let d = decode_bytes(&one_bytes[i]).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        assert_eq!(d.rate, want_rate, "{ctx}: rate");
        assert_eq!(d.channels, 2, "{ctx}: channels");
        let want = (SECS * f64::from(want_rate)) as usize;
        let got = d.frames();
        if format == OutputFormat::Aac {
            assert!(
                got >= want && got <= want + AAC_EXTRA,
                "{ctx}: {got} frames, want {want} (+ up to {AAC_EXTRA})"
            );
        } else {
            let tol = codec_frame(format, want_rate);
            assert!(
                got.abs_diff(want) <= tol,
                "{ctx}: {got} frames, want {want}"
            );
        }
        let margin = tone_margin_db(&d.planes[0], d.rate, 1000.0, &[700.0, 1500.0]);
        assert!(
            margin >= 30.0,
            "{ctx}: tone only {margin:.1} dB above its neighbours"
        );

        // CBR rungs come out at their bitrate (5 % for headers, info frame and padding).
        if let Some(kbps) = settings.rate_control.and_then(|rc| rc.bitrate()) {
            let kbps = f64::from(kbps.as_bps()) / 1000.0;
            let actual = one_bytes[i].len() as f64 * 8.0 / SECS / 1000.0;
            assert!(
                (actual / kbps - 1.0).abs() < 0.05,
                "{ctx}: {actual:.1} kbit/s for a {kbps} kbit/s rung"
            );
        }
    }

    // ladder_path writes the same bytes into files (headers patched in place).
    let dir = TempDir::new("ladder");
    let src = dir.join("in.wav");
    std::fs::write(&src, source()).expect("write source");
    let outputs: Vec<_> = rungs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                s.clone(),
                dir.join(&format!("rung{i}.{}", s.format.extension())),
            )
        })
        .collect();
    let opts = LadderOptions {
        threads: 2,
        ..LadderOptions::default()
    };
    let report = ladder_path(&src, &outputs, &opts).unwrap_or_else(|e| panic!("ladder_path: {e}"));
    assert_eq!(report.frames_decoded, source_frames);
    for (i, (_, path)) in outputs.iter().enumerate() {
        let file = std::fs::read(path).expect("rung file");
        assert!(
            file == one_bytes[i],
            "rung {i}: the file differs from the in-memory rung"
        );
    }
}

#[test]
fn mp3_and_flac_rungs_are_identical_on_one_or_two_threads() {
    check_ladder(&[
        mp3(64),
        mp3(128),
        mp3(192),
        mp3(320),
        OutputSettings::new(OutputFormat::Flac),
        mp3_at_22k(),
    ]);
}

#[test]
fn full_ladder_with_an_aac_rung_is_identical_on_one_or_two_threads() {
    check_ladder(&[
        mp3(64),
        mp3(128),
        mp3(192),
        mp3(320),
        OutputSettings::new(OutputFormat::Aac).with_kbps(96),
        OutputSettings::new(OutputFormat::Flac),
        mp3_at_22k(),
    ]);
}
