//! Benchmarks of the sans-IO core: ingest of one 128 kbit/s frame into a ring read by 10,000
//! listeners, fan-out cost per listener per chunk, segmenter cost per frame (packed audio and
//! fMP4), playlist rendering (full and delta updates).
//! Before the timings it prints the allocations counted per listener per chunk during fan-out
//! (target: zero; the bound per chunk is the one `Bytes` promotion when a chunk is first shared).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use veza_stream_core::ListenerId;
use veza_stream_core::frame::{FrameFormat, adts_header};
use veza_stream_core::hls::{
    Fmp4Track, Input as HlsInput, PackedCodec, Segmenter, SegmenterConfig,
};
use veza_stream_core::live::{Input, LiveConfig, LiveStream, Next, Output};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const LISTENERS: usize = 10_000;

/// One MPEG-1 layer III frame, 128 kbit/s, 44.1 kHz: 417 bytes, 26.1 ms.
fn frame() -> Bytes {
    let mut f = vec![0u8; 417];
    f[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
    Bytes::from(f)
}

/// A live stream with one frame per chunk and `n` listeners at the live edge.
fn stream(n: usize) -> (LiveStream, Vec<ListenerId>, Instant) {
    let t0 = Instant::now();
    let mut cfg = LiveConfig::new(FrameFormat::Mpeg);
    cfg.chunk_duration = Duration::ZERO;
    let mut s = LiveStream::new(cfg, t0);
    s.handle_input(Input::SourceConnected { now: t0 })
        .expect("a source connects");
    let ids = (0..n)
        .map(|_| {
            s.add_listener(t0, Some(Duration::ZERO))
                .expect("below the listener limit")
        })
        .collect();
    // Fill the ring so that eviction runs on every ingest, as in steady state.
    for _ in 0..2_000 {
        s.handle_input(Input::Data {
            now: t0,
            data: frame(),
        })
        .expect("live");
    }
    while !matches!(s.poll_output(), Output::Timeout(_)) {}
    (s, ids, t0)
}

fn drain_listeners(s: &mut LiveStream, ids: &[ListenerId]) {
    for id in ids {
        while let Next::Data(b) = s.next_chunk(*id).expect("a listener of the stream") {
            black_box(b);
        }
    }
}

fn report_allocations() {
    let (mut s, ids, t0) = stream(LISTENERS);
    drain_listeners(&mut s, &ids);
    let chunks = 100u64;
    let mut allocs = 0;
    for _ in 0..chunks {
        s.handle_input(Input::Data {
            now: t0,
            data: frame(),
        })
        .expect("live");
        while !matches!(s.poll_output(), Output::Timeout(_)) {}
        let before = ALLOCS.load(Ordering::Relaxed);
        drain_listeners(&mut s, &ids);
        allocs += ALLOCS.load(Ordering::Relaxed) - before;
    }
    println!(
        "fan-out allocations: {allocs} for {chunks} chunks x {LISTENERS} listeners = {:.6} per listener per chunk ({:.2} per chunk)",
        allocs as f64 / (chunks as f64 * LISTENERS as f64),
        allocs as f64 / chunks as f64
    );
}

fn live(c: &mut Criterion) {
    report_allocations();
    let mut g = c.benchmark_group("live");
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(3));

    // Ingest one frame (one chunk) into a ring that 10,000 listeners read.
    g.throughput(Throughput::Elements(1));
    let (mut s, ids, t0) = stream(LISTENERS);
    let f = frame();
    g.bench_function("ingest_one_frame_10k_listeners", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                s.handle_input(Input::Data {
                    now: t0,
                    data: f.clone(),
                })
                .expect("live");
                while !matches!(s.poll_output(), Output::Timeout(_)) {}
                total += start.elapsed();
                // Keep the listeners at the edge (not timed) so the state stays the same.
                drain_listeners(&mut s, &ids);
            }
            total
        })
    });

    // Fan-out: one new chunk read by 10,000 listeners; the time per element is the bookkeeping
    // per listener per chunk.
    g.throughput(Throughput::Elements(LISTENERS as u64));
    let (mut s, ids, t0) = stream(LISTENERS);
    g.bench_function("fanout_per_listener_per_chunk", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                s.handle_input(Input::Data {
                    now: t0,
                    data: frame(),
                })
                .expect("live");
                while !matches!(s.poll_output(), Output::Timeout(_)) {}
                let start = Instant::now();
                drain_listeners(&mut s, &ids);
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

fn adts_frame() -> Bytes {
    let len = 372usize;
    let mut f = vec![0x21u8; len];
    f[..7].copy_from_slice(&adts_header(len, 44_100, 2).expect("a valid header"));
    Bytes::from(f)
}

fn hls(c: &mut Criterion) {
    let mut g = c.benchmark_group("hls");
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(3));
    let t0 = Instant::now();
    let f = adts_frame();
    g.throughput(Throughput::Elements(1));
    let mut seg = Segmenter::new(SegmenterConfig::new(PackedCodec::AacLc), t0);
    g.bench_function("segmenter_per_frame_ll_hls", |b| {
        b.iter(|| {
            seg.handle_input(HlsInput::Frame {
                now: t0,
                data: f.clone(),
                samples: 1024,
                sample_rate: 44_100,
            });
            while !matches!(seg.poll_output(), veza_stream_core::hls::Output::Timeout(_)) {}
        })
    });
    // A full window (6 segments with parts) rendered.
    let mut seg = Segmenter::new(SegmenterConfig::new(PackedCodec::AacLc), t0);
    for _ in 0..2_000 {
        seg.handle_input(HlsInput::Frame {
            now: t0,
            data: f.clone(),
            samples: 1024,
            sample_rate: 44_100,
        });
    }
    while !matches!(seg.poll_output(), veza_stream_core::hls::Output::Timeout(_)) {}
    g.bench_function("media_playlist_render", |b| {
        b.iter(|| black_box(seg.media_playlist()))
    });
    // fMP4: the same frames, ADTS headers stripped, one moof + mdat per part.
    let track = Fmp4Track::aac_from_adts(&f).expect("an ADTS frame");
    let mut seg = Segmenter::new(SegmenterConfig::fmp4(track), t0);
    g.bench_function("segmenter_per_frame_fmp4_ll_hls", |b| {
        b.iter(|| {
            seg.handle_input(HlsInput::Frame {
                now: t0,
                data: f.clone(),
                samples: 1024,
                sample_rate: 44_100,
            });
            while !matches!(seg.poll_output(), veza_stream_core::hls::Output::Timeout(_)) {}
        })
    });
    // A 2-minute DVR window (30 segments of 4 s) with PDT, in full and as a delta update.
    let mut cfg = SegmenterConfig::new(PackedCodec::AacLc);
    cfg.window = 30;
    let mut seg = Segmenter::new(cfg, t0);
    seg.handle_input(HlsInput::WallClock {
        now: t0,
        unix_ms: 1_700_000_000_000,
    });
    for _ in 0..6_000 {
        seg.handle_input(HlsInput::Frame {
            now: t0,
            data: f.clone(),
            samples: 1024,
            sample_rate: 44_100,
        });
    }
    while !matches!(seg.poll_output(), veza_stream_core::hls::Output::Timeout(_)) {}
    g.bench_function("media_playlist_render_30_segments", |b| {
        b.iter(|| black_box(seg.playlist(false)))
    });
    g.bench_function("delta_playlist_render_30_segments", |b| {
        b.iter(|| black_box(seg.playlist(true)))
    });
    g.finish();
}

criterion_group!(benches, live, hls);
criterion_main!(benches);
