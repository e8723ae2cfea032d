//! Compression never re-encodes lossy audio that already fits the requested quality, always
//! encodes lossless sources, and a lossy preset produces the bitrate it names.

use veza_audio::decode::{Decoder, DecoderOptions};
use veza_audio::presets::{CompressionPlan, Quality, plan_compression, preset};
use veza_audio::transcode::{TranscodeOptions, transcode_path};
use veza_audio::{Bitrate, OutputFormat, RateControl, StreamInfo};
use veza_tests::{TempDir, corpus_dir, decode_path, ffprobe};

fn info(file: &str) -> Option<StreamInfo> {
    let dir = corpus_dir()?;
    let d = Decoder::open_path(dir.join(file), DecoderOptions::default())
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    Some(d.info().clone())
}

fn plan(info: &StreamInfo, format: Option<OutputFormat>, q: Quality) -> CompressionPlan {
    plan_compression(info, format, q).unwrap_or_else(|e| panic!("{format:?} {q}: {e}"))
}

#[test]
fn mp3_128k_source_passes_through_high_and_medium() {
    let Some(src) = info("music/ebiten-bach-air-usaf-strings.mp3") else {
        return;
    };
    // 128 kbit/s CBR: the bitrate comes from the file size over the duration.
    let kbps = src.bitrate.expect("bitrate known").as_kbps();
    assert!((126..=131).contains(&kbps), "{kbps} kbit/s");
    for (format, q) in [
        (None, Quality::High),
        (Some(OutputFormat::Mp3), Quality::High),
        (None, Quality::Medium),
    ] {
        match plan(&src, format, q) {
            CompressionPlan::Passthrough { reason } => assert!(!reason.is_empty()),
            p => panic!("{format:?} {q}: {p:?}"),
        }
    }
    // Low (96 kbit/s) is below the source: re-encode at 96, and say it is lossy to lossy.
    match plan(&src, None, Quality::Low) {
        CompressionPlan::Transcode { settings, note } => {
            assert_eq!(settings.format, OutputFormat::Mp3);
            assert_eq!(
                settings.rate_control,
                Some(RateControl::Cbr(Bitrate::kbps(96)))
            );
            assert!(note.is_some_and(|n| n.contains("lossy")));
        }
        p => panic!("{p:?}"),
    }
}

#[test]
fn lossy_sources_of_other_codecs_pass_through_when_they_fit() {
    // Vorbis at about 129 kbit/s fits Ogg High (192).
    if let Some(src) = info("music/lincity-ng-architectural-contemplations.ogg") {
        assert!(
            matches!(
                plan(&src, None, Quality::High),
                CompressionPlan::Passthrough { .. }
            ),
            "ogg"
        );
    }
    // ADTS AAC at about 76 kbit/s fits AAC Medium (96).
    if let Some(src) = info("aac/androidx-sample-lc-44k-mono.adts") {
        assert!(
            matches!(
                plan(&src, None, Quality::Medium),
                CompressionPlan::Passthrough { .. }
            ),
            "adts"
        );
        // Asked for MP3 instead: encoded, capped at the source's bitrate.
        match plan(&src, Some(OutputFormat::Mp3), Quality::High) {
            CompressionPlan::Transcode { settings, note } => {
                let cap = settings.rate_control.and_then(RateControl::bitrate);
                assert_eq!(cap, src.bitrate);
                assert!(note.is_some());
            }
            p => panic!("{p:?}"),
        }
    }
}

#[test]
fn flac_source_is_always_transcoded() {
    let Some(src) = info("flac/ietf-s01-blocksize4096.flac") else {
        return;
    };
    for q in [Quality::Low, Quality::Medium, Quality::High] {
        for format in [None, Some(OutputFormat::Mp3), Some(OutputFormat::Flac)] {
            match plan(&src, format, q) {
                CompressionPlan::Transcode { settings, note } => {
                    assert_eq!(settings, preset(format.unwrap_or(OutputFormat::Flac), q));
                    assert!(note.is_none(), "{note:?}");
                }
                p => panic!("{format:?} {q}: {p:?}"),
            }
        }
    }
}

#[test]
fn mp3_low_preset_gives_96_kbit() {
    let Some(dir) = corpus_dir() else { return };
    let tmp = TempDir::new("compress");
    let src = dir.join("flac/ietf-s01-blocksize4096.flac");
    let dst = tmp.join("low.mp3");
    let opts = TranscodeOptions {
        output: Some(preset(OutputFormat::Mp3, Quality::Low)),
        ..TranscodeOptions::default()
    };
    let report = transcode_path(&src, &dst, &opts).unwrap_or_else(|e| panic!("{e}"));
    let size = std::fs::metadata(&dst).expect("output").len();
    let expected = 96_000.0 / 8.0 * report.duration_secs();
    assert!(
        (size as f64 / expected - 1.0).abs() < 0.05,
        "{size} bytes for {:.2} s, expected about {expected:.0} (96 kbit/s)",
        report.duration_secs()
    );
    let (codec, rate, channels, _) = ffprobe(&dst);
    assert_eq!((codec.as_str(), rate, channels), ("mp3", 44_100, 2));
    let d = decode_path(&dst).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        d.frames().abs_diff(report.frames_decoded as usize) <= 1152,
        "{} frames decoded, {} in",
        d.frames(),
        report.frames_decoded
    );
}
