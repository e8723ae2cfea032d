//! A listener that stops reading falls behind, skips forward to a frame boundary with an event,
//! and neither slows the other listeners nor makes the ring grow past its budget.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Action, MP3_FRAME, Sim, mp3_frames};
use veza_stream_core::frame::{FrameFormat, FrameSplitter, SplitterConfig};
use veza_stream_core::live::{Event, Input, LiveConfig, LiveStream, Next};

#[test]
fn slow_listener_skips_and_others_are_unaffected() {
    let frames = mp3_frames(60.0);
    let mut cfg = LiveConfig::new(FrameFormat::Mpeg);
    cfg.ring_max_duration = Duration::from_secs(20);
    cfg.ring_max_bytes = 1 << 20;
    cfg.max_lag = Duration::from_secs(8);
    cfg.burst = Duration::from_secs(1);
    let budget = cfg.ring_max_bytes;
    let mut sim = Sim::new(7, |now| LiveStream::new(cfg, now));
    sim.feed(Input::SourceConnected { now: sim.now });

    // The source sends each frame in real time, in two arbitrary pieces.
    for (i, f) in frames.iter().enumerate() {
        let t = MP3_FRAME * i as u32;
        let cut = sim.rng.range(1, f.len() as u64) as usize;
        let now = sim.at(t);
        sim.schedule(
            t,
            Action::Input(Input::Data {
                now,
                data: f.slice(..cut),
            }),
        );
        sim.schedule(
            t,
            Action::Input(Input::Data {
                now,
                data: f.slice(cut..),
            }),
        );
    }
    // 50 listeners reading every 100 ms (jittered), one reading only every 15 s.
    let mut ids = Vec::new();
    for _ in 0..51 {
        ids.push(sim.stream.add_listener(sim.now, None).unwrap());
    }
    let slow = ids[50];
    // The stream ends after the last frame (flushing the last partial chunk).
    let end = MP3_FRAME * frames.len() as u32;
    sim.schedule(end, Action::Input(Input::End { now: sim.at(end) }));
    for k in 0..610u64 {
        for l in 0..50u64 {
            let jitter = sim.rng.range(0, 20);
            sim.schedule(
                Duration::from_millis(k * 100 + jitter),
                Action::Step("read", l),
            );
        }
    }
    for k in 1..4u64 {
        sim.schedule(Duration::from_secs(k * 15), Action::Step("read", 50));
    }

    let mut received: Vec<Vec<u8>> = vec![Vec::new(); 51];
    let mut max_ring = 0usize;
    sim.run_until(Duration::from_secs(61), |sim, _, l| {
        let id = ids[l as usize];
        loop {
            match sim.stream.next_chunk(id).unwrap() {
                Next::Data(b) => received[l as usize].extend_from_slice(&b),
                _ => break,
            }
            if l == 50 {
                break; // the slow listener reads one chunk per wake-up
            }
        }
        max_ring = max_ring.max(sim.stream.ring().bytes());
    });

    let all: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
    // Every fast listener got the whole stream, in order, without a gap.
    for (l, r) in received.iter().enumerate().take(50) {
        assert_eq!(
            r.len(),
            all.len(),
            "listener {l} got {} of {} bytes",
            r.len(),
            all.len()
        );
        assert!(r == &all, "listener {l} got the stream out of order");
    }
    // The slow listener skipped (with events) and what it got is whole frames only.
    let skips: Vec<&Event> = sim
        .events()
        .filter(|e| matches!(e, Event::ListenerSkipped { listener, .. } if *listener == slow))
        .collect();
    assert!(!skips.is_empty(), "the slow listener was never skipped");
    for e in &skips {
        if let Event::ListenerSkipped {
            from, to, skipped, ..
        } = e
        {
            assert!(to > from);
            assert!(
                *skipped > Duration::from_secs(1),
                "skipped only {skipped:?}"
            );
        }
    }
    assert!(
        !sim.events()
            .any(|e| matches!(e, Event::ListenerSkipped { listener, .. } if *listener != slow)),
        "a fast listener was skipped"
    );
    let mut split = FrameSplitter::new(FrameFormat::Mpeg, SplitterConfig::default());
    split.push(&received[50]);
    split.finish();
    let mut n = 0;
    while let Some(f) = split.next_frame().unwrap() {
        assert!(frames.contains(&Bytes::copy_from_slice(&f.data)));
        n += 1;
    }
    assert!(n > 0);
    assert_eq!(
        split.stats().skipped_bytes,
        0,
        "the slow listener got a partial frame"
    );
    // The ring never exceeded its budgets.
    assert!(max_ring <= budget);
    assert!(sim.stream.ring().duration() <= Duration::from_secs(20));
}
