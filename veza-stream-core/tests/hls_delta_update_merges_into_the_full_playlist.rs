//! Delta playlist updates, as an LL-HLS client uses them: a client polls with `_HLS_skip=YES`
//! (blocking on the next part), merges each delta update into the playlist it holds, and always
//! ends with the same segments (sequence numbers, durations, URIs) as the full playlist of the
//! same moment. Each delta update keeps at least the skip boundary (six target durations) of
//! segments, skips only segments the client already had, and writes
//! `EXT-X-PROGRAM-DATE-TIME` on the first segment after `EXT-X-SKIP`.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use veza_stream_core::frame::adts_header;
use veza_stream_core::hls::{Input, Output, PackedCodec, Segmenter, SegmenterConfig};

type Listed = Vec<(u64, String, String, Option<String>)>;

/// (msn, EXTINF line, URI, PDT line if any) of each segment listed in `playlist`, the number of
/// segments it skipped, and its media sequence number.
fn parse(playlist: &str) -> (Listed, u64, u64) {
    let mut msn = 0;
    let mut media_seq = 0;
    let mut skipped = 0;
    let mut out = Vec::new();
    let mut extinf = None;
    let mut pdt = None;
    for line in playlist.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            msn = v.parse().unwrap();
            media_seq = msn;
        } else if let Some(v) = line.strip_prefix("#EXT-X-SKIP:SKIPPED-SEGMENTS=") {
            skipped = v.parse().unwrap();
            msn += skipped;
        } else if line.starts_with("#EXT-X-PROGRAM-DATE-TIME:") {
            pdt = Some(line.to_string());
        } else if line.starts_with("#EXTINF:") {
            extinf = Some(line.to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            out.push((msn, extinf.take().unwrap(), line.to_string(), pdt.take()));
            msn += 1;
        }
    }
    (out, skipped, media_seq)
}

fn extinf_secs(l: &str) -> f64 {
    l.trim_start_matches("#EXTINF:")
        .trim_end_matches(',')
        .parse()
        .unwrap()
}

#[test]
fn hls_delta_update_merges_into_the_full_playlist() {
    let t0 = Instant::now();
    let mut cfg = SegmenterConfig::new(PackedCodec::AacLc);
    cfg.target_duration = Duration::from_secs(2);
    cfg.part_target = Some(Duration::from_millis(500));
    cfg.window = 30;
    let mut seg = Segmenter::new(cfg, t0);
    seg.handle_input(Input::WallClock {
        now: t0,
        unix_ms: 1_700_000_000_000,
    });
    let mut frame = vec![0x21u8; 300];
    frame[..7].copy_from_slice(&adts_header(300, 44_100, 2).unwrap());
    let frame = Bytes::from(frame);
    let frame_time = Duration::from_nanos(1024 * 1_000_000_000 / 44_100);

    // The client's merged view: msn -> (EXTINF, URI).
    let mut held: BTreeMap<u64, (String, String)> = BTreeMap::new();
    let mut next_id = 0u64;
    let mut waiting = false;
    let mut deltas_with_skip = 0;
    for i in 0..4000u32 {
        let now = t0 + frame_time * i;
        seg.handle_input(Input::Frame {
            now,
            data: frame.clone(),
            samples: 1024,
            sample_rate: 44_100,
        });
        if !waiting {
            // Block on the next part, asking for a delta update (or the full playlist the
            // first time, as a client that holds nothing).
            next_id += 1;
            let msn = seg.next_msn();
            let have = (0u32..).take_while(|p| seg.part(msn, *p).is_some()).count();
            seg.handle_input(Input::PlaylistRequest {
                now,
                id: next_id,
                msn: Some(msn),
                part: Some(u32::try_from(have).unwrap()),
                skip: !held.is_empty(),
            });
            waiting = true;
        }
        loop {
            match seg.poll_output() {
                Output::Timeout(_) => break,
                Output::Playlist { id, result } => {
                    assert_eq!(id, next_id);
                    waiting = false;
                    let text = result.unwrap();
                    assert!(text.contains("CAN-SKIP-UNTIL=12.0"), "{text}");
                    let (listed, skipped, media_seq) = parse(&text);
                    if skipped > 0 {
                        deltas_with_skip += 1;
                        // Only segments the client holds are skipped.
                        let first = listed[0].0;
                        for msn in first - skipped..first {
                            assert!(held.contains_key(&msn), "skipped {msn} the client lacks");
                        }
                        // The delta keeps at least the skip boundary.
                        let kept: f64 = listed.iter().map(|s| extinf_secs(&s.1)).sum();
                        assert!(kept >= 12.0, "kept {kept} s");
                        assert!(listed[0].3.is_some(), "PDT after the skip: {text}");
                        assert!(text.contains("#EXT-X-VERSION:9\n"));
                    }
                    held.retain(|msn, _| *msn >= media_seq);
                    for (msn, inf, uri, _) in listed {
                        held.insert(msn, (inf, uri));
                    }
                    // Same moment, full playlist: the merged view matches it.
                    let (full, none, _) = parse(&seg.media_playlist());
                    assert_eq!(none, 0);
                    let full: Vec<(u64, (String, String))> =
                        full.into_iter().map(|(m, i, u, _)| (m, (i, u))).collect();
                    let merged: Vec<(u64, (String, String))> =
                        held.iter().map(|(m, v)| (*m, v.clone())).collect();
                    assert_eq!(merged, full);
                }
                _ => {}
            }
        }
    }
    assert!(
        deltas_with_skip > 50,
        "{deltas_with_skip} delta updates skipped segments"
    );
    // A plain request without skip is the full playlist; the first segment carries the PDT.
    let full = seg.media_playlist();
    assert!(!full.contains("EXT-X-SKIP"));
    let (listed, _, _) = parse(&full);
    assert!(listed[0].3.is_some());
    assert_eq!(listed.iter().filter(|s| s.3.is_some()).count(), 1);
}
