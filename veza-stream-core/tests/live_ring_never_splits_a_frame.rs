//! Property: whatever the source's cuts, the ring budgets, the chunk size and the listeners'
//! read pattern, every delivery is whole frames, and each listener's frames come in increasing
//! order (skips jump forward, never back).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use veza_stream_core::frame::{FrameFormat, FrameSplitter, SplitterConfig};
use veza_stream_core::live::{Input, LiveConfig, LiveStream, Next};

/// An MPEG-1 layer III frame at bitrate index `br` (1..=14), 44.1 kHz, carrying `index`.
fn frame(br: u8, index: u32) -> Vec<u8> {
    const KBPS: [usize; 15] = [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ];
    let len = 144 * KBPS[br as usize] * 1000 / 44_100;
    let mut f = vec![0u8; len];
    f[..4].copy_from_slice(&[0xFF, 0xFB, br << 4, 0x64]);
    f[4..8].copy_from_slice(&index.to_be_bytes());
    f
}

fn indices(bytes: &[u8]) -> (Vec<u32>, u64) {
    let mut s = FrameSplitter::new(FrameFormat::Mpeg, SplitterConfig::default());
    s.push(bytes);
    s.finish();
    let mut v = Vec::new();
    while let Some(f) = s.next_frame().expect("valid frames") {
        v.push(u32::from_be_bytes([
            f.data[4], f.data[5], f.data[6], f.data[7],
        ]));
    }
    (v, s.stats().skipped_bytes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn ring_never_splits_a_frame(
        bitrates in proptest::collection::vec(1u8..15, 50..400),
        cuts in proptest::collection::vec(1usize..3000, 1..200),
        chunk_ms in 0u64..300,
        ring_kb in 4usize..64,
        reads in proptest::collection::vec((0usize..4, 0usize..5), 1..400),
    ) {
        let t0 = Instant::now();
        let mut cfg = LiveConfig::new(FrameFormat::Mpeg);
        cfg.chunk_duration = Duration::from_millis(chunk_ms);
        cfg.ring_max_bytes = ring_kb * 1024;
        cfg.max_lag = Duration::from_secs(3);
        let mut s = LiveStream::new(cfg, t0);
        s.handle_input(Input::SourceConnected { now: t0 }).unwrap();
        let ids: Vec<_> = (0..4).map(|_| s.add_listener(t0, Some(Duration::ZERO)).unwrap()).collect();
        let stream: Vec<u8> = bitrates.iter().enumerate().flat_map(|(i, &b)| frame(b, i as u32)).collect();
        let mut got: Vec<Vec<u32>> = vec![Vec::new(); 4];
        let mut pos = 0;
        let mut r = 0;
        let mut ci = 0;
        while pos < stream.len() {
            let n = cuts[ci % cuts.len()].min(stream.len() - pos);
            ci += 1;
            s.handle_input(Input::Data { now: t0, data: Bytes::copy_from_slice(&stream[pos..pos + n]) }).unwrap();
            pos += n;
            // Some listeners read a few chunks now.
            let (l, k) = reads[r % reads.len()];
            r += 1;
            for _ in 0..k {
                match s.next_chunk(ids[l]).unwrap() {
                    Next::Data(b) => {
                        let (idx, skipped) = indices(&b);
                        prop_assert_eq!(skipped, 0, "a delivery held a partial frame");
                        prop_assert!(!idx.is_empty());
                        got[l].extend(idx);
                    }
                    _ => break,
                }
            }
            prop_assert!(s.ring().bytes() <= ring_kb * 1024 || s.ring().len() == 1);
        }
        for g in &got {
            prop_assert!(g.windows(2).all(|w| w[0] < w[1]), "frames out of order: {:?}", g);
        }
    }
}
