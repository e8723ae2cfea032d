//! The segmenter's playlists and packed-audio segments play in a real client: ffmpeg reads the
//! whole playlist (AAC and MP3) without an error and decodes the full duration, and each
//! segment's ID3 timestamp gives ffprobe the segment's start time.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::time::Instant;

use common::{encoded_frames, tool};
use veza_audio::OutputFormat;
use veza_stream_core::hls::{Input, Output, PackedCodec, Segmenter, SegmenterConfig};
use veza_stream_core::metadata::NowPlaying;

fn write_stream(dir: &Path, format: OutputFormat, codec: PackedCodec, seconds: f64) -> (u64, u32) {
    let frames = encoded_frames(format, seconds);
    let t0 = Instant::now();
    let mut seg = Segmenter::new(SegmenterConfig::new(codec), t0);
    seg.handle_input(Input::Metadata {
        now: t0,
        now_playing: NowPlaying {
            title: Some("Sweep".into()),
            artist: Some("Veza".into()),
            url: None,
        },
    });
    let mut samples = 0u64;
    let mut segments = Vec::new();
    for f in &frames {
        samples += u64::from(f.samples);
        seg.handle_input(Input::Frame {
            now: t0,
            data: f.data.clone(),
            samples: f.samples,
            sample_rate: f.sample_rate,
        });
        loop {
            match seg.poll_output() {
                Output::SegmentReady { msn } => segments.push(msn),
                Output::Timeout(_) => break,
                _ => {}
            }
        }
    }
    seg.handle_input(Input::End { now: t0 });
    loop {
        match seg.poll_output() {
            Output::SegmentReady { msn } => segments.push(msn),
            Output::Timeout(_) => break,
            _ => {}
        }
    }
    assert!(segments.len() >= 4);
    for msn in &segments {
        let data = seg.segment(*msn).expect("segments in the window are held");
        std::fs::write(dir.join(format!("seg{msn}.{}", codec.extension())), &data).unwrap();
    }
    let playlist = seg.media_playlist();
    assert!(playlist.ends_with("#EXT-X-ENDLIST\n"));
    std::fs::write(dir.join("index.m3u8"), playlist).unwrap();
    (samples, frames[0].sample_rate)
}

fn decoded_samples(playlist: &Path) -> u64 {
    let out = tool("ffmpeg")
        .args(["-allowed_extensions", "ALL", "-i"])
        .arg(playlist)
        .args(["-f", "s16le", "-ac", "1", "-ar", "44100", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ffmpeg 5.1's HLS demuxer re-times packed MP3 packets at segment boundaries from the ID3
    // timestamps and its own rounded 1152-sample durations, and its muxer then warns about one
    // repeated timestamp. The audio is complete (checked below), so that one warning is allowed;
    // any other message fails the test.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("non monotonically increasing dts to muxer"))
        .collect();
    assert!(errors.is_empty(), "ffmpeg reported errors: {stderr}");
    out.stdout.len() as u64 / 2
}

/// The start time ffprobe gives a playlist that begins at segment `from` (as a live listener
/// joining then sees it): the HLS demuxer takes it from that segment's ID3 timestamp.
fn start_time(dir: &Path, from: u64, ext: &str) -> f64 {
    let full = std::fs::read_to_string(dir.join("index.m3u8")).unwrap();
    let mut pl = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n");
    pl.push_str(&format!("#EXT-X-MEDIA-SEQUENCE:{from}\n"));
    let lines: Vec<&str> = full.lines().collect();
    for w in lines.windows(2) {
        if w[0].starts_with("#EXTINF") {
            let n: u64 = w[1]
                .trim_start_matches("seg")
                .split('.')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            if n >= from {
                pl.push_str(&format!("{}\n{}\n", w[0], w[1]));
            }
        }
    }
    pl.push_str("#EXT-X-ENDLIST\n");
    let path = dir.join(format!("from{from}.m3u8"));
    std::fs::write(&path, pl).unwrap();
    let _ = ext;
    let out = tool("ffprobe")
        .args(["-show_entries", "format=start_time", "-of", "csv=p=0"])
        .arg(&path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a start time")
}

#[test]
fn hls_output_plays_in_ffmpeg() {
    // The window holds 6 segments of 4 s: a 20 s stream keeps every segment listed.
    for (format, codec) in [
        (OutputFormat::Aac, PackedCodec::AacLc),
        (OutputFormat::Mp3, PackedCodec::Mp3),
    ] {
        let dir = std::env::temp_dir().join(format!("veza-hls-{}-{codec:?}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (samples, rate) = write_stream(&dir, format, codec, 20.0);
        assert_eq!(rate, 44_100);
        let decoded = decoded_samples(&dir.join("index.m3u8"));
        // The decoder adds or trims at most a couple of frames of encoder delay and padding.
        let diff = decoded.abs_diff(samples);
        assert!(
            diff <= 2 * 1152,
            "{codec:?}: sent {samples} samples, ffmpeg decoded {decoded}"
        );
        // Segment 2 starts where segments 0 and 1 end: about 8 s (each at least 4 s long).
        let t = start_time(&dir, 2, codec.extension());
        assert!(
            (8.0..8.1).contains(&t),
            "{codec:?}: segment 2 starts at {t}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
