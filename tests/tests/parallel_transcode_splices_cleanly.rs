//! `TranscodeOptions::threads`: a transcode on several threads gives a file that decodes like
//! the one-thread file, on real music.
//!
//! MP3, ADTS AAC and M4A are encoded in segments on several threads and spliced (see the
//! `parallel` module of veza-audio). For each, against the one-thread output of the same input:
//! - ffmpeg decodes it without a single error line;
//! - ffmpeg and our decoder (symphonia) give exactly as many samples (for MP3 also exactly the
//!   input's length: the rebuilt LAME info frame trims delay and padding; for M4A the one
//!   `moov` with its edit list and `iTunSMPB` covers the spliced stream);
//! - no seam, checked per window of 1024 samples (23 ms) in three ways. The two files are
//!   different lossy encodes of the same input wherever the threaded file's frames come from a
//!   later segment's encoder, so they differ by about the codec's noise; a splice error (a
//!   frame's audio missing, doubled or windowed wrongly, reservoir bytes wrong) adds an error of
//!   the order of the signal in the windows around the seam, which the coding noise does not
//!   contain. So, in every window:
//!   1. the threaded file's coding noise (its decode minus the input) is at most 4x (6 dB over)
//!      the one-thread file's, floored at 40 dB under the signal (measured: at most 2.3x at
//!      64 kbit/s MP3, 1.4x elsewhere; with the MP3 reservoir bytes left out at the seams, the
//!      seams reach 375x);
//!   2. the two decodes differ by at most 2x the sum of their coding noise (independent
//!      quantisation noise adds up to about 1x; measured at most 0.87x);
//!   3. the difference stays 6 dB under the signal (measured: at most -12.7 dB, at 64 kbit/s;
//!      the broken seams above reach +5 dB);
//!
//!   And the median window differs by 20 dB less than the signal, which a timeline shift of
//!   one sample in a later segment would break.
//!
//! MP3 at 64 kbit/s is checked too: there the two encoders' bit reservoirs often differ at the
//! boundary, so the splicer has to grow a frame to make room (see the module docs).
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
fn music_wav(dir: &TempDir) -> Option<(PathBuf, Vec<Vec<f32>>)> {
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
    // What the encoders see: the 16-bit samples of the WAV.
    let input = pcm
        .planes()
        .iter()
        .map(|p| {
            p.iter()
                .map(|&v| f32::from(veza_audio::pcm::f32_to_i16(v)) / 32768.0)
                .collect()
        })
        .collect();
    Some((path, input))
}

fn transcode(input: &Path, output: &Path, format: OutputFormat, threads: usize, kbps: Option<u32>) {
    let mut opts = TranscodeOptions::new(format);
    if let Some(k) = kbps {
        opts.output = Some(veza_audio::transcode::OutputSettings::new(format).with_kbps(k));
    }
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
    check_spliced_with(format, threads, None);
}

fn check_spliced_with(format: OutputFormat, threads: usize, kbps: Option<u32>) {
    let dir = TempDir::new("parallel");
    let Some((wav, input)) = music_wav(&dir) else {
        return;
    };
    let input_frames = input[0].len();
    let ext = format.extension();
    let one = dir.join(&format!("one.{ext}"));
    let many = dir.join(&format!("many.{ext}"));
    transcode(&wav, &one, format, 1, kbps);
    transcode(&wav, &many, format, threads, kbps);
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

    seam_noise_check(format, &input, &d1.planes, &dn.planes);
    let mut r = window_errors(&d1.planes, &dn.planes);
    let worst = r
        .iter()
        .enumerate()
        .fold((0, 0.0f64), |m, (i, &v)| if v > m.1 { (i, v) } else { m });
    let mut sorted = r.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let differing: Vec<f64> = sorted.iter().copied().filter(|&v| v > 1e-12).collect();
    let mut top: Vec<(usize, f64)> = r.iter().copied().enumerate().collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    eprintln!(
        "{format}: {} windows differ, their median {:.1} dB; top windows (s, dB): {:?}",
        differing.len(),
        10.0 * differing
            .get(differing.len() / 2)
            .copied()
            .unwrap_or(1e-30)
            .log10(),
        top.iter()
            .take(8)
            .map(|&(i, v)| (
                (i as f64 * 1024.0 / 44_100.0 * 100.0).round() / 100.0,
                (10.0 * v.log10() * 10.0).round() / 10.0
            ))
            .collect::<Vec<_>>()
    );
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
    let bound = 10f64.powf(-0.6);
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

/// Energy of `a - b` per window of 1024 samples, `b` read `shift` samples later.
fn window_diff(a: &[Vec<f32>], b: &[Vec<f32>], shift: usize) -> Vec<f64> {
    let len = a[0].len().min(b[0].len().saturating_sub(shift));
    (0..len / 1024)
        .map(|w| {
            a.iter()
                .zip(b)
                .map(|(pa, pb)| {
                    (w * 1024..(w + 1) * 1024)
                        .map(|i| (f64::from(pa[i]) - f64::from(pb[i + shift])).powi(2))
                        .sum::<f64>()
                })
                .sum()
        })
        .collect()
}

/// The seam check against the input: in every window, the two decodes differ by no more than
/// 2x (3 dB over) the sum of their own coding noise (decode minus input). Two encodes of the
/// same audio with independent quantisation differ by about that sum (less where their noise
/// is correlated); a splice error (a frame's audio missing, doubled or windowed wrongly, or
/// reservoir bytes wrong) adds an error that the coding noise does not contain.
fn seam_noise_check(format: OutputFormat, input: &[Vec<f32>], one: &[Vec<f32>], many: &[Vec<f32>]) {
    // ADTS keeps FDK's priming; find it as the shift where the one-thread decode best matches.
    let shift = [0usize, 1024, 1600, 2048]
        .into_iter()
        .min_by(|&a, &b| {
            let e = |s| window_diff(input, one, s).iter().take(200).sum::<f64>();
            e(a).total_cmp(&e(b))
        })
        .expect("candidates");
    let n1 = window_diff(input, one, shift);
    let nn = window_diff(input, many, shift);
    let d: Vec<f64> = window_diff(one, many, 0);
    let signal = window_diff(input, &vec![vec![0.0; input[0].len()]; input.len()], 0);
    let mut worst = (0usize, 0.0f64);
    let mut worst_noise = (0usize, 0.0f64);
    for w in 0..n1.len().min(nn.len()) {
        let q = d[w + shift / 1024] / (n1[w] + nn[w] + 1e-9);
        if q > worst.1 {
            worst = (w, q);
        }
        // The threaded file's own coding noise, against the one-thread file's (floored at
        // 40 dB under the signal, so near-silent windows do not divide by nothing).
        let r = nn[w] / (n1[w] + 1e-4 * signal[w] + 1e-9);
        if r > worst_noise.1 {
            worst_noise = (w, r);
        }
    }
    eprintln!(
        "{format}: worst window: coding noise {:.2}x the one-thread file's at {:.2} s",
        worst_noise.1,
        worst_noise.0 as f64 * 1024.0 / 44_100.0
    );
    assert!(
        worst_noise.1 <= 4.0,
        "{format}: at {:.2} s the threaded file's coding noise is {:.1}x the one-thread file's",
        worst_noise.0 as f64 * 1024.0 / 44_100.0,
        worst_noise.1
    );
    eprintln!(
        "{format}: priming {shift}; worst window: difference {:.2}x the coding noise at {:.2} s",
        worst.1,
        worst.0 as f64 * 1024.0 / 44_100.0
    );
    assert!(
        worst.1 <= 2.0,
        "{format}: at {:.2} s the two decodes differ by {:.2}x their coding noise",
        worst.0 as f64 * 1024.0 / 44_100.0,
        worst.1
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
    for format in [OutputFormat::Ogg, OutputFormat::Flac] {
        let ext = format.extension();
        let one = dir.join(&format!("one.{ext}"));
        let two = dir.join(&format!("two.{ext}"));
        transcode(&wav, &one, format, 1, None);
        transcode(&wav, &two, format, 2, None);
        assert!(
            std::fs::read(&one).expect("read") == std::fs::read(&two).expect("read"),
            "{format}: two-thread output differs from one-thread output"
        );
    }
}

#[test]
fn m4a_on_two_threads_splices_without_a_seam() {
    check_spliced(OutputFormat::M4a, 2);
}

#[test]
fn mp3_at_64k_on_two_threads_splices_without_a_seam() {
    check_spliced_with(OutputFormat::Mp3, 2, Some(64));
}
