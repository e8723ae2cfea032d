//! `TranscodeOptions::threads`: a transcode on several threads gives a file that decodes like
//! the one-thread file, on real music.
//!
//! MP3 and ADTS AAC are encoded in segments on several threads and spliced (see the
//! `parallel` module of veza-audio). For each, against the one-thread output of the same input:
//! - ffmpeg decodes it without a single error line;
//! - ffmpeg and our decoder (symphonia) give exactly as many samples (for MP3 also exactly the
//!   input's length: the rebuilt LAME info frame trims delay and padding);
//! - no seam: the two decodes are compared sample by sample in windows of 1024 samples. The two
//!   files are different lossy encodes of the same input wherever the spliced file's frames
//!   come from a later segment's encoder, so they differ by about the codec's noise (two
//!   independent quantisations); a seam error (a frame missing or doubled, a window mismatch,
//!   reservoir bytes not restored) adds an error of the order of the signal itself in the
//!   windows around it. So the relative error energy of every window (difference energy over
//!   signal energy) must stay under 3x the 99.9th percentile of all windows, with an absolute
//!   floor: a window whose difference is at least 12 dB under its signal passes (128 kbit/s
//!   MP3 and AAC keep their noise about 15-25 dB under the signal on this music, and a broken
//!   splice sits near 0 dB). And the typical window (median) must be at least 20 dB under the
//!   signal, which a timeline shift of even one sample in a later segment would break.
//!
//! Other formats run a decode thread and an encode thread: their output must equal the
//! one-thread output byte for byte.

use std::path::{Path, PathBuf};

use veza_audio::transcode::{TranscodeOptions, transcode_path};
use veza_audio::{AudioSpec, OutputFormat, PcmBuffer};
use veza_tests::{
    TempDir, corpus_dir, decode_path, ffmpeg_decode_frames, ffmpeg_errors, wav_bytes,
};

/// Seconds of music in the input: enough for several segments at the shortest segment length
/// (5 s), so that the output has several seams.
const SECS: usize = 40;

/// Real music: the corpus' Bach recording mixed with its electronic track (dense, with
/// transients), 40 s of 44.1 kHz stereo, as a 16-bit WAV. `None` without the corpus.
fn music_wav(dir: &TempDir) -> Option<(PathBuf, usize)> {
    let corpus = corpus_dir()?;
    let a = decode_path(&corpus.join("music/ebiten-bach-air-usaf-strings.mp3")).expect("bach");
    let b = decode_path(&corpus.join("music/lincity-ng-architectural-contemplations.ogg"))
        .expect("lincity");
    assert_eq!(
        (a.rate, b.rate, a.channels, b.channels),
        (44_100, 44_100, 2, 2)
    );
    let n = SECS * 44_100;
    // Skip the quiet starts; both are long enough.
    let (sa, sb) = (20 * 44_100, 10 * 44_100);
    let planes: Vec<Vec<f32>> = (0..2)
        .map(|ch| {
            (0..n)
                .map(|i| 0.7 * a.planes[ch][sa + i] + 0.7 * b.planes[ch][sb + i])
                .collect()
        })
        .collect();
    let pcm = PcmBuffer::from_planes(AudioSpec::new(44_100, 2).expect("spec"), planes);
    let path = dir.join("music.wav");
    std::fs::write(&path, wav_bytes(&pcm, 16)).expect("write wav");
    Some((path, n))
}

fn transcode(input: &Path, output: &Path, format: OutputFormat, threads: usize) {
    let mut opts = TranscodeOptions::new(format);
    opts.threads = threads;
    if format == OutputFormat::Ogg {
        opts.output.as_mut().expect("output").rate_control =
            Some(veza_audio::RateControl::Vbr(4.0));
    }
    transcode_path(input, output, &opts)
        .unwrap_or_else(|e| panic!("{format} with {threads} threads: {e}"));
}

/// Relative error energy (difference over signal) of each window of 1024 samples.
fn window_errors(one: &[Vec<f32>], many: &[Vec<f32>]) -> Vec<f64> {
    let len = one[0].len();
    (0..len / 1024)
        .map(|w| {
            let (mut e, mut s) = (0.0f64, 0.0f64);
            for (p1, pn) in one.iter().zip(many) {
                for i in w * 1024..(w + 1) * 1024 {
                    let (x, y) = (f64::from(p1[i]), f64::from(pn[i]));
                    e += (x - y) * (x - y);
                    s += x * x;
                }
            }
            e / s.max(1e-9)
        })
        .collect()
}

fn check_spliced(format: OutputFormat, threads: usize) {
    let dir = TempDir::new("parallel");
    let Some((wav, input_frames)) = music_wav(&dir) else {
        return;
    };
    let ext = format.extension();
    let one = dir.join(&format!("one.{ext}"));
    let many = dir.join(&format!("many.{ext}"));
    transcode(&wav, &one, format, 1);
    transcode(&wav, &many, format, threads);
    assert_ne!(
        std::fs::read(&one).expect("read"),
        std::fs::read(&many).expect("read"),
        "{format}: the threaded file should come from several encoders"
    );

    let errors = ffmpeg_errors(&many);
    assert!(errors.trim().is_empty(), "{format}: ffmpeg: {errors}");
    let (ff_one, _) = ffmpeg_decode_frames(&one);
    let (ff_many, _) = ffmpeg_decode_frames(&many);
    assert_eq!(ff_many, ff_one, "{format}: ffmpeg's decoded length");
    let d1 = decode_path(&one).expect("decode one");
    let dn = decode_path(&many).expect("decode many");
    assert_eq!(
        dn.frames(),
        d1.frames(),
        "{format}: symphonia's decoded length"
    );
    if format == OutputFormat::Mp3 {
        assert_eq!(
            ff_many, input_frames,
            "MP3: ffmpeg trims to the input length"
        );
    }

    let mut r = window_errors(&d1.planes, &dn.planes);
    let worst = r
        .iter()
        .enumerate()
        .fold((0, 0.0f64), |m, (i, &v)| if v > m.1 { (i, v) } else { m });
    let mut sorted = r.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let p999 = sorted[sorted.len() * 999 / 1000];
    let db = |x: f64| 10.0 * x.max(1e-30).log10();
    eprintln!(
        "{format} x{threads}: {} windows; median {:.1} dB, 99.9% {:.1} dB, worst {:.1} dB at window {} ({:.2} s)",
        r.len(),
        db(median),
        db(p999),
        db(worst.1),
        worst.0,
        worst.0 as f64 * 1024.0 / 44_100.0
    );
    assert!(
        db(median) < -20.0,
        "{format}: median window error {:.1} dB",
        db(median)
    );
    let bound = (3.0 * p999).max(10f64.powf(-1.2));
    r.retain(|&v| v > bound);
    assert!(
        r.is_empty(),
        "{format}: {} windows above the bound {:.1} dB (worst {:.1} dB at {:.2} s)",
        r.len(),
        db(bound),
        db(worst.1),
        worst.0 as f64 * 1024.0 / 44_100.0
    );
}

#[test]
fn mp3_on_two_threads_splices_without_a_seam() {
    check_spliced(OutputFormat::Mp3, 2);
}

#[test]
fn mp3_on_three_threads_splices_without_a_seam() {
    check_spliced(OutputFormat::Mp3, 3);
}

#[test]
fn adts_aac_on_two_threads_splices_without_a_seam() {
    check_spliced(OutputFormat::Aac, 2);
}

#[test]
fn other_formats_on_two_threads_give_the_same_bytes() {
    let dir = TempDir::new("parallel-same");
    let Some((wav, _)) = music_wav(&dir) else {
        return;
    };
    for format in [OutputFormat::Ogg, OutputFormat::M4a, OutputFormat::Flac] {
        let ext = format.extension();
        let one = dir.join(&format!("one.{ext}"));
        let two = dir.join(&format!("two.{ext}"));
        transcode(&wav, &one, format, 1);
        transcode(&wav, &two, format, 2);
        assert!(
            std::fs::read(&one).expect("read") == std::fs::read(&two).expect("read"),
            "{format}: two-thread output differs from one-thread output"
        );
    }
}
