//! Fan-out costs no allocation per listener per chunk: with 10,000 listeners reading every chunk,
//! the allocations counted by a global allocator during delivery do not grow with the number of
//! listeners (a chunk handed out is a cloned `Bytes` handle).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use veza_stream_core::frame::FrameFormat;
use veza_stream_core::live::{Input, LiveConfig, LiveStream, Next};

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

fn frame() -> Bytes {
    let mut f = vec![0u8; 417];
    f[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
    Bytes::from(f)
}

/// Allocations while `listeners` listeners each read `chunks` chunks (ingest excluded).
fn allocations_for(listeners: usize, chunks: usize) -> u64 {
    let t0 = Instant::now();
    let mut cfg = LiveConfig::new(FrameFormat::Mpeg);
    cfg.chunk_duration = Duration::ZERO;
    let mut s = LiveStream::new(cfg, t0);
    s.handle_input(Input::SourceConnected { now: t0 }).unwrap();
    let ids: Vec<_> = (0..listeners)
        .map(|_| s.add_listener(t0, Some(Duration::ZERO)).unwrap())
        .collect();
    let f = frame();
    // Warm up: the first chunks grow the ring's and the splitter's buffers.
    for _ in 0..64 {
        s.handle_input(Input::Data {
            now: t0,
            data: f.clone(),
        })
        .unwrap();
        for id in &ids {
            while let Next::Data(b) = s.next_chunk(*id).unwrap() {
                std::hint::black_box(b);
            }
        }
    }
    let mut during_reads = 0;
    for _ in 0..chunks {
        s.handle_input(Input::Data {
            now: t0,
            data: f.clone(),
        })
        .unwrap();
        while !matches!(s.poll_output(), veza_stream_core::live::Output::Timeout(_)) {}
        let before = ALLOCS.load(Ordering::Relaxed);
        for id in &ids {
            while let Next::Data(b) = s.next_chunk(*id).unwrap() {
                std::hint::black_box(b);
            }
        }
        during_reads += ALLOCS.load(Ordering::Relaxed) - before;
    }
    during_reads
}

#[test]
fn fanout_does_not_allocate_per_listener() {
    let small = allocations_for(10, 200);
    let large = allocations_for(10_000, 200);
    // Per chunk, at most a couple of allocations (the first clone of a chunk's Bytes makes it
    // shared), whatever the number of listeners.
    assert!(
        large <= 2 * 200,
        "{large} allocations for 10,000 listeners x 200 chunks"
    );
    assert_eq!(
        small, large,
        "allocations grew with the number of listeners"
    );
}
