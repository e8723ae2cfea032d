//! LL-HLS blocking playlist reload: a request for the next part (`_HLS_msn`, `_HLS_part`) is held
//! and answered at the instant that part is cut, with a playlist that lists it; a request for a
//! part that never comes is answered with a timeout after three target durations.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::{Rng, encoded_frames};
use veza_audio::OutputFormat;
use veza_stream_core::hls::{HlsError, Input, Output, PackedCodec, Segmenter, SegmenterConfig};

#[test]
fn blocking_request_is_answered_when_the_part_lands() {
    let frames = encoded_frames(OutputFormat::Aac, 30.0);
    let t0 = Instant::now();
    let mut cfg = SegmenterConfig::new(PackedCodec::AacLc);
    cfg.part_target = Some(Duration::from_millis(500));
    cfg.target_duration = Duration::from_secs(2);
    let mut seg = Segmenter::new(cfg, t0);
    let mut rng = Rng::new(42);
    let frame_time = Duration::from_nanos(1024 * 1_000_000_000 / 44_100);
    // (request id, asked msn, asked part, asked at)
    let mut asked: Vec<(u64, u64, u32, Instant)> = Vec::new();
    let mut answers = 0;
    let mut next_id = 0;
    let mut part_landed: std::collections::HashMap<(u64, u32), Instant> = Default::default();
    for (i, f) in frames.iter().enumerate() {
        let now = t0 + frame_time * i as u32;
        seg.handle_input(Input::Frame {
            now,
            data: f.data.clone(),
            samples: f.samples,
            sample_rate: f.sample_rate,
        });
        // Now and then a client asks for the part after the last one it saw.
        if rng.range(0, 10) == 0 {
            let pl = seg.media_playlist();
            let hint = pl
                .lines()
                .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg"))
                .expect("a live LL-HLS playlist has a preload hint");
            let mut it = hint.trim_end_matches(".aac\"").split('.');
            let msn: u64 = it.next().unwrap().parse().unwrap();
            let part: u32 = it.next().unwrap().parse().unwrap();
            next_id += 1;
            asked.push((next_id, msn, part, now));
            seg.handle_input(Input::PlaylistRequest {
                now,
                id: next_id,
                msn: Some(msn),
                part: Some(part),
                skip: false,
            });
        }
        loop {
            match seg.poll_output() {
                Output::PartReady { msn, part } => {
                    part_landed.insert((msn, part), now);
                }
                Output::Playlist { id, result } => {
                    let (_, msn, part, at) = *asked.iter().find(|a| a.0 == id).unwrap();
                    let body = result.expect("answered with a playlist");
                    let uri = format!("URI=\"seg{msn}.{part}.aac\"");
                    assert!(
                        body.contains("#EXT-X-PART:DURATION") && body.contains(&uri),
                        "{body}"
                    );
                    // Answered exactly when the part was cut, never before, and not later.
                    assert_eq!(part_landed.get(&(msn, part)), Some(&now));
                    assert!(
                        now - at <= Duration::from_millis(600),
                        "held {:?}",
                        now - at
                    );
                    answers += 1;
                }
                Output::Timeout(_) => break,
                _ => {}
            }
        }
    }
    assert!(
        answers >= 20,
        "only {answers} blocking requests were answered"
    );
    assert_eq!(answers, asked.len());

    // A request two segments ahead waits its limit (3 x 2 s) and gets a timeout when no audio comes.
    let t_end = t0 + frame_time * frames.len() as u32;
    let ahead = seg.next_msn() + 2;
    seg.handle_input(Input::PlaylistRequest {
        now: t_end,
        id: 999,
        msn: Some(ahead),
        part: Some(0),
        skip: false,
    });
    let Output::Timeout(Some(deadline)) = seg.poll_output() else {
        panic!("a deadline is pending")
    };
    assert_eq!(deadline, t_end + Duration::from_secs(6));
    seg.handle_input(Input::Timeout { now: deadline });
    assert_eq!(
        seg.poll_output(),
        Output::Playlist {
            id: 999,
            result: Err(HlsError::Timeout)
        }
    );
}
