//! An Ogg Vorbis source: a listener that joins mid-stream gets the stream headers first and
//! then whole pages, so a real decoder (ffmpeg) plays what it got without an error; a listener
//! present from the start gets the source's bytes exactly; after a chained link (a new logical
//! stream, as sources send on a title change), new listeners get the new link's headers.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{encoded_frames, tool};
use veza_audio::OutputFormat;
use veza_stream_core::frame::FrameFormat;
use veza_stream_core::live::{Input, LiveConfig, LiveStream, Next};

fn read_all(s: &mut LiveStream, id: veza_stream_core::ListenerId) -> Vec<u8> {
    let mut v = Vec::new();
    while let Next::Data(b) = s.next_chunk(id).unwrap() {
        v.extend_from_slice(&b);
    }
    v
}

/// Decoded samples (mono, 44.1 kHz) of an Ogg file, failing on any decoder message.
fn ffmpeg_samples(name: &str, data: &[u8]) -> u64 {
    let path = std::env::temp_dir().join(format!("veza-ogg-{}-{name}.ogg", std::process::id()));
    std::fs::write(&path, data).unwrap();
    let out = tool("ffmpeg")
        .arg("-i")
        .arg(&path)
        .args(["-f", "s16le", "-ac", "1", "-ar", "44100", "-"])
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffmpeg cannot play what listener {name} got: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.len() as u64 / 2
}

#[test]
fn ogg_listeners_get_headers_first() {
    let link1 = encoded_frames(OutputFormat::Ogg, 10.0);
    let link2 = encoded_frames(OutputFormat::Ogg, 6.0);
    let t0 = Instant::now();
    let mut cfg = LiveConfig::new(FrameFormat::Ogg);
    cfg.burst = Duration::from_secs(1);
    let mut s = LiveStream::new(cfg, t0);
    s.handle_input(Input::SourceConnected { now: t0 }).unwrap();
    let from_start = s.add_listener(t0, Some(Duration::ZERO)).unwrap();
    let mut got_start = Vec::new();
    let mut sent = Vec::new();
    let mut mid = None;
    for (i, f) in link1.iter().enumerate() {
        sent.extend_from_slice(&f.data);
        s.handle_input(Input::Data {
            now: t0,
            data: f.data.clone(),
        })
        .unwrap();
        got_start.extend(read_all(&mut s, from_start));
        if i == link1.len() / 2 {
            mid = Some(s.add_listener(t0, None).unwrap());
        }
    }
    let mid = mid.unwrap();
    let got_mid = read_all(&mut s, mid);
    // The second link of the chain.
    for f in &link2 {
        sent.extend_from_slice(&f.data);
        s.handle_input(Input::Data {
            now: t0,
            data: f.data.clone(),
        })
        .unwrap();
    }
    let late = s.add_listener(t0, None).unwrap();
    s.handle_input(Input::End { now: t0 }).unwrap();
    got_start.extend(read_all(&mut s, from_start));
    let got_late = read_all(&mut s, late);

    assert_eq!(
        got_start, sent,
        "a listener from the start gets the source's bytes exactly"
    );
    // (Its bytes are a chained Ogg stream whose timestamps restart at the link, which ffmpeg's
    // muxers warn about; the two listeners below each get one link and are played by ffmpeg.)
    // Mid-stream: headers, then about half of link 1 plus the burst.
    assert_eq!(&got_mid[..4], b"OggS");
    let mid_samples = ffmpeg_samples("mid", &got_mid);
    assert!(
        (5 * 44_100..7 * 44_100).contains(&mid_samples),
        "{mid_samples}"
    );
    // After the chain link: the second link's headers come first, then its last second.
    let late_samples = ffmpeg_samples("late", &got_late);
    assert!(
        late_samples > 0 && late_samples < 2 * 44_100,
        "{late_samples}"
    );
    assert_eq!(
        Bytes::copy_from_slice(&got_late[..link2[0].data.len()]),
        link2[0].data
    );
}
