//! Every valid file of the shared corpus decodes with the right duration, rate and channels (in
//! pull and push mode); every malformed one ends cleanly, in a child process under a time and
//! memory limit (no panic, no hang, no allocation driven by a size field).

use std::io::Cursor;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use veza_audio::decode::{Decoder, DecoderOptions, PushDecoder};
use veza_tests::corpus_dir;

/// (file, sample rate, channels, frames as decoded by ffmpeg 5.1). Tolerance: 2048 frames (one
/// long codec frame: encoders and demuxers differ in priming and edit handling).
const VALID: &[(&str, u32, u16, u64)] = &[
    ("aac/androidx-bbb-8khz-mono-ssr-header.aac", 8000, 1, 25600),
    ("aac/androidx-long-edit-list-audioonly.mp4", 44100, 2, 68890),
    ("aac/androidx-sample-lc-44k-mono.adts", 44100, 1, 146432),
    ("flac/androidx-bear-with-id3.flac", 48000, 2, 131568),
    ("flac/ietf-s01-blocksize4096.flac", 44100, 2, 308700),
    ("flac/ietf-s21-22050hz.flac", 22050, 2, 109266),
    ("flac/ietf-s23-8bit.flac", 44100, 2, 339973),
    ("flac/ietf-s24-variable-blocksize.flac", 44100, 2, 1102556),
    ("flac/ietf-s28-96k-24bit.flac", 96000, 2, 838036),
    ("flac/ietf-s41-5.1-6ch.flac", 44100, 6, 357223),
    (
        "flac/ietf-s63-predictor-overflow-24bit.flac",
        44100,
        1,
        227247,
    ),
    ("mp3/androidx-bear-id3.mp3", 48000, 2, 134784),
    ("mp3/androidx-bear-vbr-xing-header.mp3", 48000, 2, 133632),
    ("mp3/androidx-test-cbr-info-header.mp3", 44100, 1, 44100),
    ("mp3/mutagen-silence-mpeg2-24khz.mp3", 24000, 2, 88433),
    ("mp3/pygame-house-lo-mpeg25-11025hz.mp3", 11025, 1, 80064),
    ("mp3/tinytag-vbr-8khz-mono.mp3", 8000, 1, 72320),
    ("vorbis/androidx-bbb-16khz-mono-q10.ogg", 16000, 1, 48000),
    (
        "vorbis/androidx-bear-vorbis-48k-stereo.ogg",
        48000,
        2,
        131568,
    ),
    ("vorbis/mutagen-multipage-comment.ogg", 44100, 2, 162368),
    ("vorbis/taglib-multiplex-theora-vorbis.ogg", 48000, 2, 96000),
    ("wav/androidx-extensible-5.1-float32.wav", 48000, 6, 24576),
    ("wav/androidx-sample-8bit.wav", 44100, 1, 44100),
    ("wav/androidx-sample-rf64.wav", 48000, 2, 16734),
    ("wav/androidx-sine-24bit.wav", 44100, 1, 44100),
    ("music/ebiten-bach-air-usaf-strings.mp3", 44100, 2, 8083584),
    (
        "music/lincity-ng-architectural-contemplations.ogg",
        44100,
        2,
        5675600,
    ),
];

/// Legal but uncommon files that may be rejected, if cleanly.
const UNCOMMON: &[&str] = &["flac/ietf-u10-starts-at-frame-header.flac"];

/// HE-AAC: symphonia decodes the AAC-LC core only (no SBR), so the rate is half the rate ffmpeg
/// reports and the duration is the same. (file, core rate, channels, seconds).
const HE_AAC: &[(&str, u32, u16, f64)] =
    &[("aac/taglib-he-aac-zero-length-mdat.m4a", 22050, 1, 1.1146)];

const TOLERANCE: u64 = 2048;

fn decode_pull(path: &Path) -> veza_audio::Result<(u32, u16, u64)> {
    let mut d = Decoder::open_path(path, DecoderOptions::default())?;
    let mut frames = 0u64;
    while let Some(b) = d.next_block()? {
        frames += b.frames() as u64;
    }
    Ok((d.info().sample_rate.hz(), d.info().channels, frames))
}

fn decode_push(bytes: &[u8], chunk: usize) -> veza_audio::Result<(u32, u16, u64, u32)> {
    let mut d = PushDecoder::new(DecoderOptions {
        push_lookahead: 16 << 10,
        ..Default::default()
    });
    let mut frames = 0u64;
    let mut last = (0u32, 0u16);
    let mut changes = 0;
    let mut take = |d: &mut PushDecoder| -> veza_audio::Result<()> {
        while let Some(b) = d.next_block()? {
            if last != (b.sample_rate().hz(), b.channels() as u16) {
                changes += 1;
                last = (b.sample_rate().hz(), b.channels() as u16);
            }
            frames += b.frames() as u64;
        }
        Ok(())
    };
    for c in bytes.chunks(chunk) {
        d.push(c)?;
        take(&mut d)?;
    }
    d.finish();
    take(&mut d)?;
    let info = d.info().expect("info after decoding");
    Ok((info.sample_rate.hz(), info.channels, frames, changes))
}

#[test]
fn valid_files_decode_with_the_right_spec_and_length() {
    let Some(dir) = corpus_dir() else { return };
    let mut failures = Vec::new();
    for &(file, rate, ch, frames) in VALID {
        let path = dir.join(file);
        match decode_pull(&path) {
            Ok((r, c, n)) => {
                if r != rate || c != ch || n.abs_diff(frames) > TOLERANCE {
                    failures.push(format!(
                        "{file}: pull got {r} Hz {c} ch {n} frames, want {rate} Hz {ch} ch {frames}"
                    ));
                }
            }
            Err(e) => failures.push(format!("{file}: pull failed: {e}")),
        }
        // Push mode: MP4 needs seeking for its index only when the index comes last; RF64 and
        // edit lists are fixed up only on seekable inputs, so compare those in pull mode only.
        if file.ends_with(".mp4") || file.contains("rf64") {
            continue;
        }
        let bytes = std::fs::read(&path).expect("read corpus file");
        match decode_push(&bytes, 3001) {
            Ok((r, c, n, _)) => {
                if r != rate || c != ch || n.abs_diff(frames) > TOLERANCE {
                    failures.push(format!(
                        "{file}: push got {r} Hz {c} ch {n} frames, want {rate} Hz {ch} ch {frames}"
                    ));
                }
            }
            Err(e) => failures.push(format!("{file}: push failed: {e}")),
        }
    }
    for &(file, rate, ch, secs) in HE_AAC {
        match decode_pull(&dir.join(file)) {
            Ok((r, c, n)) => {
                let got = n as f64 / f64::from(r);
                if r != rate || c != ch || (got - secs).abs() > 0.05 {
                    failures.push(format!("{file}: got {r} Hz {c} ch {got:.3} s"));
                }
            }
            Err(e) => failures.push(format!("{file}: failed: {e}")),
        }
    }
    for file in UNCOMMON {
        if let Err(e) = decode_pull(&dir.join(file)) {
            eprintln!("{file}: rejected cleanly ({e}); legal but uncommon");
        }
    }
    assert!(
        failures.is_empty(),
        "{} file(s) wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn chained_ogg_reports_the_new_spec() {
    let Some(dir) = corpus_dir() else { return };
    let mut bytes = std::fs::read(dir.join("vorbis/androidx-bbb-16khz-mono-q10.ogg")).unwrap();
    bytes.extend(std::fs::read(dir.join("vorbis/androidx-bear-vorbis-48k-stereo.ogg")).unwrap());
    // Pull mode over a cursor.
    let mut d =
        Decoder::from_seekable(Cursor::new(bytes.clone()), DecoderOptions::default()).unwrap();
    let mut per_spec: Vec<(u32, usize, u64)> = Vec::new();
    while let Some(b) = d.next_block().unwrap() {
        let key = (b.sample_rate().hz(), b.channels());
        match per_spec.last_mut() {
            Some(last) if (last.0, last.1) == key => last.2 += b.frames() as u64,
            _ => per_spec.push((key.0, key.1, b.frames() as u64)),
        }
    }
    assert_eq!(per_spec.len(), 2, "{per_spec:?}");
    assert_eq!((per_spec[0].0, per_spec[0].1), (16000, 1));
    assert_eq!((per_spec[1].0, per_spec[1].1), (48000, 2));
    // ffmpeg 5.1 decodes the pair as 3.00 s + 2.74 s.
    assert!(
        (per_spec[0].2 as f64 / 16000.0 - 3.0).abs() < 0.05,
        "{per_spec:?}"
    );
    assert!(
        (per_spec[1].2 as f64 / 48000.0 - 2.741).abs() < 0.05,
        "{per_spec:?}"
    );
    assert_eq!(d.spec_changes(), 1);
    // Push mode sees the same change.
    let (_, _, frames, changes) = decode_push(&bytes, 1000).unwrap();
    assert_eq!(changes, 2);
    assert_eq!(frames, per_spec[0].2 + per_spec[1].2);
}

/// Runs in a child process (see `malformed_files_end_cleanly`): decodes the file named by
/// `VEZA_CHILD_FILE` in pull and push mode and prints the outcome. Does nothing otherwise.
#[test]
fn child_decode() {
    let Ok(file) = std::env::var("VEZA_CHILD_FILE") else {
        return;
    };
    let pull = decode_pull(Path::new(&file));
    println!("CHILD pull: {:?}", pull.as_ref().map_err(|e| e.to_string()));
    let bytes = std::fs::read(&file).unwrap();
    let push = decode_push(&bytes, 4096);
    println!("CHILD push: {:?}", push.as_ref().map_err(|e| e.to_string()));
    if let (Err(e), _) | (_, Err(e)) = (&pull, &push) {
        // The error must be a typed, non-recoverable outcome with a message.
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn malformed_files_end_cleanly() {
    let Some(dir) = corpus_dir() else { return };
    let exe = std::env::current_exe().unwrap();
    let mut entries: Vec<_> = std::fs::read_dir(dir.join("malformed"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    assert!(entries.len() >= 10, "expected the malformed corpus files");
    let mut failures = Vec::new();
    for path in entries {
        // 1 GiB of address space and 20 s: the files are a few kB and claim gigabytes.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("ulimit -v 1048576; exec \"$0\" --exact child_decode --nocapture --test-threads=1")
            .arg(&exe)
            .env("VEZA_CHILD_FILE", &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        match status {
            None => failures.push(format!("{name}: did not finish within 20 s")),
            Some(s) if !s.success() => failures.push(format!(
                "{name}: child failed ({s}): {}{}",
                text,
                String::from_utf8_lossy(&out.stderr)
            )),
            Some(_) => {
                let lines: Vec<_> = text
                    .lines()
                    .filter_map(|l| l.find("CHILD ").map(|i| &l[i..]))
                    .collect();
                if lines.len() != 2 {
                    failures.push(format!("{name}: child printed no outcome: {text}"));
                }
                eprintln!("{name}: {}", lines.join(" | "));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
