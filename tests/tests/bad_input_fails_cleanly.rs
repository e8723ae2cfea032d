//! Input that is not audio, or is broken, ends every transcode API in a typed, non-recoverable
//! `AudioError` of a sensible kind: never a panic, never an `Ok` with nothing in it.

use std::panic::{AssertUnwindSafe, catch_unwind};

use veza_audio::transcode::{
    TranscodeOptions, Transcoder, transcode_bytes, transcode_path, transcode_reader,
};
use veza_audio::{AudioError, OutputFormat};
use veza_tests::{TempDir, corpus_dir, wav_header};

/// A bad input and the error codes (`AudioError::code`) that describe it.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    allowed: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    let mut text = Vec::new();
    while text.len() < 5_000 {
        text.extend_from_slice(b"This is a plain text file, not audio. Lorem ipsum dolor sit.\n");
    }
    // PNG signature, an IHDR chunk, then bytes that look like image data.
    let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x01\x00\x00\x00\x01\x00\x08\x06\x00\x00\x00".to_vec();
    png.extend((0..8_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    // A WAV header claiming 0 channels, with some data.
    let mut zero_ch = wav_header(44_100, 0, 16, 1_000);
    zero_ch.extend(std::iter::repeat_n(0x11u8, 1_000));
    // A WAV header claiming 4 GB of data, with 1 kB present.
    let mut huge = wav_header(44_100, 2, 16, 4_000_000_000);
    huge.extend((0..1_024u32).map(|i| (i * 37) as u8));

    let mut all = vec![
        Case {
            name: "empty",
            bytes: Vec::new(),
            allowed: &["truncated", "unknown_format"],
        },
        Case {
            name: "10 kB of zeros",
            bytes: vec![0; 10_000],
            allowed: &["unknown_format", "truncated"],
        },
        Case {
            name: "text",
            bytes: text,
            allowed: &["unknown_format"],
        },
        Case {
            name: "PNG header",
            bytes: png,
            allowed: &["unknown_format"],
        },
        Case {
            name: "WAV with 0 channels",
            bytes: zero_ch,
            allowed: &["invalid_spec", "malformed"],
        },
        Case {
            name: "WAV claiming 4 GB with 1 kB present",
            bytes: huge,
            allowed: &["truncated"],
        },
    ];
    if let Some(dir) = corpus_dir() {
        let flac = std::fs::read(dir.join("flac/ietf-s01-blocksize4096.flac")).expect("read");
        // 5 kB ends inside this file's metadata; 100 kB ends in the middle of the audio.
        all.push(Case {
            name: "FLAC cut after 5 kB",
            bytes: flac[..5_000].to_vec(),
            allowed: &["truncated", "malformed"],
        });
        all.push(Case {
            name: "FLAC cut after 100 kB",
            bytes: flac[..100_000].to_vec(),
            allowed: &["truncated"],
        });
    }
    all
}

fn check(case: &Case, api: &str, result: Result<usize, AudioError>) -> Option<String> {
    match result {
        Ok(n) => Some(format!(
            "{} via {api}: succeeded ({n} bytes out), want one of {:?}",
            case.name, case.allowed
        )),
        Err(e) if e.is_recoverable() => Some(format!(
            "{} via {api}: {e} is marked recoverable",
            case.name
        )),
        Err(e) if !case.allowed.contains(&e.code()) => Some(format!(
            "{} via {api}: {} ({e}), want one of {:?}",
            case.name,
            e.code(),
            case.allowed
        )),
        Err(_) => None,
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Runs `f` for every case, collecting wrong outcomes and panics.
fn for_each_case(api: &str, f: impl Fn(&Case) -> Result<usize, AudioError>) {
    let mut failures = Vec::new();
    for case in cases() {
        match catch_unwind(AssertUnwindSafe(|| f(&case))) {
            Ok(result) => failures.extend(check(&case, api, result)),
            Err(p) => failures.push(format!("{} via {api}: PANIC {}", case.name, panic_text(p))),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn transcode_bytes_rejects_bad_input() {
    for_each_case("transcode_bytes", |case| {
        transcode_bytes(
            case.bytes.clone().into(),
            &TranscodeOptions::new(OutputFormat::Mp3),
        )
        .map(|(out, _)| out.len())
    });
}

#[test]
fn transcode_reader_rejects_bad_input() {
    for_each_case("transcode_reader", |case| {
        let mut out = Vec::new();
        transcode_reader(
            std::io::Cursor::new(case.bytes.clone()),
            &mut out,
            &TranscodeOptions::new(OutputFormat::Flac),
        )
        .map(|_| out.len())
    });
}

#[test]
fn transcode_path_rejects_bad_input() {
    let dir = TempDir::new("bad-input");
    for_each_case("transcode_path", |case| {
        let src = dir.join("in.bin");
        let dst = dir.join("out.wav");
        std::fs::write(&src, &case.bytes).expect("write");
        transcode_path(&src, &dst, &TranscodeOptions::new(OutputFormat::Wav))
            .map(|r| r.bytes_written as usize)
    });
}

#[test]
fn push_transcoder_rejects_bad_input() {
    for chunk in [1_000usize, 100_000] {
        for_each_case(&format!("Transcoder ({chunk}-byte pushes)"), |case| {
            let mut t = Transcoder::new(TranscodeOptions::new(OutputFormat::Ogg))?;
            let mut out = 0;
            let pushed = case.bytes.chunks(chunk).try_for_each(|c| {
                t.push(c)?;
                out += t.take_output().len();
                Ok::<_, AudioError>(())
            });
            let result = pushed.and_then(|()| t.finish().map(|b| out + b.len()));
            if result.is_err() {
                // Once failed, the transcoder stays failed.
                let again = t.push(b"more").and_then(|()| t.finish().map(|b| b.len()));
                assert!(
                    matches!(again, Err(AudioError::InvalidState(_))),
                    "{}: after an error: {again:?}",
                    case.name
                );
            }
            result
        });
    }
}
