//! Property: whatever the frame sizes, durations and targets, fMP4 segments are the
//! concatenation of their parts, each part is `moof` + `mdat` fragments whose `trun` sample
//! sizes sum to the frames' bytes and whose `mdat` payloads are the frames in order, decode
//! times (`tfdt`) are contiguous from 0 (each is the previous plus its `trun` durations), and
//! `mfhd` sequence numbers count up by one from 1; now-playing `emsg` events fall within the
//! fragment they precede.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use veza_stream_core::hls::{Fmp4Track, Input, Output, Segmenter, SegmenterConfig};
use veza_stream_core::metadata::NowPlaying;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn fmp4_fragments_tile_the_input(
        frames in proptest::collection::vec((1usize..900, prop_oneof![Just(1024u32), Just(960), Just(512), 1u32..4096]), 10..500),
        target_ms in 500u64..6000,
        part_ms in proptest::option::of(100u64..1500),
        meta_every in proptest::option::of(3usize..60),
    ) {
        let t0 = Instant::now();
        // Raw AAC-LC access units, 48 kHz stereo (any bytes: the segmenter trusts the caller's
        // framing; the sample counts vary to exercise per-sample durations).
        let track = Fmp4Track::aac(&[0x11, 0x90]).unwrap();
        prop_assert_eq!(track.sample_rate, 48_000);
        let mut cfg = SegmenterConfig::fmp4(track);
        cfg.target_duration = Duration::from_millis(target_ms);
        cfg.part_target = part_ms.map(Duration::from_millis);
        cfg.window = 10_000;
        let mut seg = Segmenter::new(cfg, t0);
        let mut input = Vec::new();
        let mut total_samples = 0u64;
        let mut metadata_sent = 0;
        for (i, (n, samples)) in frames.iter().enumerate() {
            if meta_every.is_some_and(|m| i % m == 1) {
                metadata_sent += 1;
                seg.handle_input(Input::Metadata { now: t0, now_playing: NowPlaying { title: Some(format!("t{i}")), artist: None, url: None } });
            }
            let f = vec![(i % 251) as u8; *n];
            input.extend_from_slice(&f);
            total_samples += u64::from(*samples);
            seg.handle_input(Input::Frame { now: t0, data: Bytes::from(f), samples: *samples, sample_rate: 48_000 });
            loop {
                match seg.poll_output() {
                    Output::Timeout(_) => break,
                    Output::FrameRejected { error } => prop_assert!(false, "rejected: {}", error),
                    _ => {}
                }
            }
        }
        seg.handle_input(Input::End { now: t0 });
        let mut rebuilt = Vec::new();
        let mut trun_bytes = 0u64;
        let mut next_decode = 0u64;
        let mut next_sequence = 1u32;
        let mut events = 0;
        let last = seg.next_msn();
        for msn in 0..last {
            let data = seg.segment(msn).expect("held");
            let mut parts = Vec::new();
            let mut p = 0;
            while let Some(b) = seg.part(msn, p) {
                // Each part is whole fragments on its own.
                prop_assert!(!common::mp4::fragments(&b).is_empty());
                parts.extend_from_slice(&b);
                p += 1;
            }
            prop_assert_eq!(&parts, &data.to_vec());
            for frag in common::mp4::fragments(&data) {
                prop_assert_eq!(frag.track_id, 1);
                prop_assert_eq!(frag.sequence, next_sequence);
                next_sequence += 1;
                prop_assert_eq!(frag.base_decode_time, next_decode);
                let end = next_decode + frag.durations.iter().map(|&d| u64::from(d)).sum::<u64>();
                // An emsg's presentation time falls within the fragment it precedes.
                for e in &frag.events {
                    let t = u64::from_be_bytes(e[8..16].try_into().unwrap());
                    prop_assert!(t >= next_decode && t < end, "event at {} in {}..{}", t, next_decode, end);
                    events += 1;
                }
                next_decode = end;
                trun_bytes += frag.sizes.iter().map(|&s| u64::from(s)).sum::<u64>();
                rebuilt.extend_from_slice(&frag.data);
            }
        }
        prop_assert_eq!(trun_bytes, input.len() as u64);
        prop_assert_eq!(rebuilt, input);
        prop_assert_eq!(next_decode, total_samples);
        // Metadata that changed several times within one fragment is sent once, the latest.
        prop_assert!(events <= metadata_sent && (metadata_sent == 0) == (events == 0));
        // The playlist lists every segment after the map.
        let pl = seg.media_playlist();
        prop_assert!(pl.contains("#EXT-X-MAP:URI=\"seginit.mp4\"\n"));
        prop_assert_eq!(pl.matches("#EXTINF:").count() as u64, last);
    }
}
