//! Property: whatever the frame sizes and targets, segments are the concatenation of their parts,
//! tile the input exactly (every frame once, in order, after one ID3 tag per segment), and last
//! at least the target and less than the target plus one frame (the last may be shorter).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use veza_stream_core::hls::{Input, Output, PackedCodec, Segmenter, SegmenterConfig};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn segments_tile_the_input(
        sizes in proptest::collection::vec(20usize..800, 10..600),
        target_ms in 500u64..6000,
        part_ms in proptest::option::of(100u64..1500),
        mp3 in any::<bool>(),
    ) {
        let (samples, codec) = if mp3 { (1152u32, PackedCodec::Mp3) } else { (1024, PackedCodec::AacLc) };
        let t0 = Instant::now();
        let mut cfg = SegmenterConfig::new(codec);
        cfg.target_duration = Duration::from_millis(target_ms);
        cfg.part_target = part_ms.map(Duration::from_millis);
        cfg.window = 10_000;
        let mut seg = Segmenter::new(cfg, t0);
        let mut input = Vec::new();
        let mut done = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            let mut f = vec![(i % 200) as u8 + 1; *n];
            f[0] = 0xFF; // any bytes: the segmenter trusts the caller's framing
            input.extend_from_slice(&f);
            seg.handle_input(Input::Frame { now: t0, data: Bytes::from(f), samples, sample_rate: 44_100 });
            while let Output::SegmentReady { msn } | Output::PartReady { msn, .. } = seg.poll_output() {
                if !done.contains(&msn) { done.push(msn); }
            }
        }
        seg.handle_input(Input::End { now: t0 });
        let frame = Duration::from_nanos(u64::from(samples) * 1_000_000_000 / 44_100);
        let target = Duration::from_millis(target_ms);
        let mut rebuilt = Vec::new();
        let mut msn = 0;
        let last = seg.next_msn();
        while msn < last {
            let data = seg.segment(msn).expect("held");
            // One ID3 tag at the start: skip it (10-byte header + synchsafe size).
            prop_assert_eq!(&data[..3], b"ID3");
            let size = ((data[6] as usize) << 21) | ((data[7] as usize) << 14) | ((data[8] as usize) << 7) | data[9] as usize;
            rebuilt.extend_from_slice(&data[10 + size..]);
            // Parts concatenate to the segment.
            let mut parts = Vec::new();
            let mut p = 0;
            while let Some(b) = seg.part(msn, p) { parts.extend_from_slice(&b); p += 1; }
            prop_assert_eq!(parts, data.to_vec());
            msn += 1;
        }
        prop_assert_eq!(rebuilt, input);
        // Durations: EXTINF values within one frame above target (the last may be shorter).
        let pl = seg.media_playlist();
        let durs: Vec<f64> = pl.lines().filter_map(|l| l.strip_prefix("#EXTINF:")).map(|d| d.trim_end_matches(',').parse().unwrap()).collect();
        prop_assert_eq!(durs.len() as u64, last);
        for d in &durs[..durs.len() - 1] {
            prop_assert!(*d >= target.as_secs_f64() - 1e-4 && *d < (target + frame).as_secs_f64() + 1e-4, "{} vs target {:?}", d, target);
        }
    }
}
