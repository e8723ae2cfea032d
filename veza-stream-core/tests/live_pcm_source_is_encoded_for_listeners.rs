//! A source that sends PCM (a browser, over WebSocket) is encoded on the fly: listeners get a
//! stream of whole frames in the chosen codec that a real decoder plays for as long as the PCM
//! lasted.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::tool;
use veza_audio::{AudioSpec, EncoderConfig, OutputFormat, PcmBuffer};
use veza_stream_core::frame::FrameFormat;
use veza_stream_core::live::{Input, LiveConfig, LiveStream, Next, StreamError};

#[test]
fn pcm_source_is_encoded_for_listeners() {
    for (format, ext) in [
        (OutputFormat::Aac, "aac"),
        (OutputFormat::Mp3, "mp3"),
        (OutputFormat::Ogg, "ogg"),
    ] {
        let t0 = Instant::now();
        let spec = AudioSpec::new(48_000, 2).unwrap();
        let enc = EncoderConfig::new(format, spec);
        let mut s =
            LiveStream::with_pcm_encoder(LiveConfig::new(FrameFormat::Mpeg), &enc, t0).unwrap();
        s.handle_input(Input::SourceConnected { now: t0 }).unwrap();
        let l = s.add_listener(t0, Some(Duration::ZERO)).unwrap();
        let mut got = Vec::new();
        // 4 s of PCM in 20 ms blocks, as a browser's audio worklet would send.
        for block in 0..200 {
            let samples: Vec<f32> = (0..960)
                .flat_map(|i| {
                    let t = (block * 960 + i) as f32 / 48_000.0;
                    let v = (t * 523.25 * std::f32::consts::TAU).sin() * 0.25;
                    [v, v]
                })
                .collect();
            s.handle_pcm(t0, &PcmBuffer::from_interleaved(spec, &samples))
                .unwrap();
            while let Next::Data(b) = s.next_chunk(l).unwrap() {
                got.extend_from_slice(&b);
            }
        }
        s.handle_input(Input::End { now: t0 }).unwrap();
        while let Next::Data(b) = s.next_chunk(l).unwrap() {
            got.extend_from_slice(&b);
        }
        assert_eq!(s.sample_rate(), 48_000);
        let path = std::env::temp_dir().join(format!("veza-pcm-live-{}.{ext}", std::process::id()));
        std::fs::write(&path, &got).unwrap();
        let out = tool("ffmpeg")
            .arg("-i")
            .arg(&path)
            .args(["-f", "s16le", "-ac", "1", "-"])
            .output()
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{ext}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let decoded = out.stdout.len() as u64 / 2;
        assert!(
            decoded.abs_diff(4 * 48_000) <= 2 * 1152 + 2048,
            "{ext}: decoded {decoded} samples of 192000"
        );
    }
    // A stream made for encoded input refuses PCM, and FLAC cannot be streamed live.
    let t0 = Instant::now();
    let spec = AudioSpec::new(44_100, 2).unwrap();
    let mut s = LiveStream::new(LiveConfig::new(FrameFormat::Mpeg), t0);
    s.handle_input(Input::SourceConnected { now: t0 }).unwrap();
    assert!(matches!(
        s.handle_pcm(t0, &PcmBuffer::new(spec)),
        Err(StreamError::Encode(_))
    ));
    assert!(matches!(
        LiveStream::with_pcm_encoder(
            LiveConfig::new(FrameFormat::Mpeg),
            &EncoderConfig::new(OutputFormat::Flac, spec),
            t0
        ),
        Err(StreamError::Encode(_))
    ));
}
