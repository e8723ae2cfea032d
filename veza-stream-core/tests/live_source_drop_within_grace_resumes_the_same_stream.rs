//! A source that drops and comes back within the grace period continues the same stream: its
//! listeners stay, media time goes on, and events say interrupted then resumed. Past the grace
//! period the stream ends and listeners are told after they got everything.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{Action, MP3_FRAME, Sim, mp3_frames};
use veza_stream_core::frame::FrameFormat;
use veza_stream_core::live::{EndReason, Event, Input, LiveConfig, LiveState, LiveStream, Next};

fn send(sim: &mut Sim, frames: &[bytes::Bytes], from: Duration) {
    for (i, f) in frames.iter().enumerate() {
        let t = from + MP3_FRAME * i as u32;
        let now = sim.at(t);
        sim.schedule(
            t,
            Action::Input(Input::Data {
                now,
                data: f.clone(),
            }),
        );
    }
}

#[test]
fn source_drop_within_grace_resumes_the_same_stream() {
    let frames = mp3_frames(10.0);
    let (first, second) = frames.split_at(frames.len() / 2);
    let mut cfg = LiveConfig::new(FrameFormat::Mpeg);
    cfg.grace_period = Duration::from_secs(5);
    let mut sim = Sim::new(1, |now| LiveStream::new(cfg, now));
    sim.feed(Input::SourceConnected { now: sim.now });
    let listener = sim
        .stream
        .add_listener(sim.now, Some(Duration::ZERO))
        .unwrap();
    send(&mut sim, first, Duration::ZERO);
    let drop_at = MP3_FRAME * first.len() as u32;
    sim.schedule(
        drop_at,
        Action::Input(Input::SourceDisconnected {
            now: sim.at(drop_at),
        }),
    );
    let back_at = drop_at + Duration::from_secs(3);
    sim.schedule(
        back_at,
        Action::Input(Input::SourceConnected {
            now: sim.at(back_at),
        }),
    );
    send(&mut sim, second, back_at);
    for k in 0..200u64 {
        sim.schedule(Duration::from_millis(100 * k), Action::Step("read", 0));
    }
    let mut got = Vec::new();
    sim.run_until(Duration::from_secs(30), |sim, _, _| {
        while let Next::Data(b) = sim.stream.next_chunk(listener).unwrap() {
            got.extend_from_slice(&b);
        }
    });
    assert_eq!(sim.stream.state(), LiveState::Live);
    let kinds: Vec<&Event> = sim
        .events()
        .filter(|e| {
            matches!(
                e,
                Event::Started { .. }
                    | Event::Interrupted { .. }
                    | Event::Resumed { .. }
                    | Event::Ended { .. }
            )
        })
        .collect();
    assert!(matches!(kinds[0], Event::Started { .. }));
    assert!(matches!(kinds[1], Event::Interrupted { .. }));
    assert!(matches!(kinds[2], Event::Resumed { gap, .. } if *gap == Duration::from_secs(3)));
    assert_eq!(kinds.len(), 3);
    let all: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
    assert_eq!(got, all, "the listener got both halves, in order");
    // Media time is continuous: it counts every frame of both halves.
    assert_eq!(sim.stream.media_time().samples, 1152 * frames.len() as u64);
    assert_eq!(sim.stream.listener_count(), 1);
}

#[test]
fn source_lost_past_grace_ends_the_stream_after_listeners_drain() {
    let frames = mp3_frames(3.0);
    let mut cfg = LiveConfig::new(FrameFormat::Mpeg);
    cfg.grace_period = Duration::from_secs(5);
    let mut sim = Sim::new(2, |now| LiveStream::new(cfg, now));
    sim.feed(Input::SourceConnected { now: sim.now });
    let listener = sim
        .stream
        .add_listener(sim.now, Some(Duration::ZERO))
        .unwrap();
    send(&mut sim, &frames, Duration::ZERO);
    let drop_at = MP3_FRAME * frames.len() as u32;
    sim.schedule(
        drop_at,
        Action::Input(Input::SourceDisconnected {
            now: sim.at(drop_at),
        }),
    );
    // The listener reads nothing until long after the end.
    sim.run_until(Duration::from_secs(60), |_, _, _| {});
    assert_eq!(sim.stream.state(), LiveState::Ended);
    let ended: Vec<_> = sim
        .events()
        .filter_map(|e| match e {
            Event::Ended { at, reason } => Some((*at, *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        ended,
        vec![(
            sim.at(drop_at + Duration::from_secs(5)),
            EndReason::SourceLost
        )]
    );
    let mut got = 0;
    loop {
        match sim.stream.next_chunk(listener).unwrap() {
            Next::Data(b) => got += b.len(),
            Next::Ended => break,
            Next::Pending => panic!("an ended stream never says pending"),
            _ => unreachable!(),
        }
    }
    assert_eq!(got, frames.iter().map(|f| f.len()).sum::<usize>());
    assert!(sim.stream.add_listener(sim.now, None).is_err());
}
