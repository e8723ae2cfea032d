//! The push `Transcoder` gives byte-identical output however the input is split across
//! `push` calls and whenever `take_output` is called; and a long input streams through it in
//! constant memory.
//!
//! Memory is measured with a counting global allocator (this test binary only), per thread:
//! the transcoder lives in one thread, so the count of that thread is the transcoder's Rust
//! heap. Allocations made by the C libraries (LAME, FDK, libvorbis) go to `malloc` directly and
//! are not counted; they are fixed-size state allocated at set-up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::OnceLock;

use proptest::prelude::*;
use veza_audio::OutputFormat;
use veza_audio::decode::{DecoderOptions, PushDecoder};
use veza_audio::transcode::{OutputSettings, TranscodeOptions, Transcoder, transcode_bytes};
use veza_tests::{decode_bytes, wav_bytes, wav_header};

// ---- counting allocator -------------------------------------------------------------------

struct Counting;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn track(delta: i64) {
    let _ = LIVE.try_with(|live| {
        let v = live.get() + delta;
        live.set(v);
        let _ = PEAK.try_with(|p| {
            if v > p.get() {
                p.set(v);
            }
        });
    });
}

// SAFETY: every call is forwarded to `System` unchanged; the wrapper only counts sizes in
// thread-locals that need no allocation (const-initialised `Cell`s without destructors).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            track(layout.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            track(layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        track(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            track(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> i64 {
    LIVE.with(Cell::get)
}

/// The peak since the last call (or thread start), then restarts peak tracking from now.
fn take_peak() -> i64 {
    let peak = PEAK.with(Cell::get);
    PEAK.with(|p| p.set(live()));
    peak
}

// ---- split invariance ---------------------------------------------------------------------

/// The inputs: 1 s of two tones, 44.1 kHz stereo, as WAV, and as MP3, FLAC and Ogg encoded
/// from it (made once).
fn inputs() -> &'static [(&'static str, Vec<u8>)] {
    static INPUTS: OnceLock<Vec<(&'static str, Vec<u8>)>> = OnceLock::new();
    INPUTS.get_or_init(|| {
        let rate = 44_100u32;
        let n = rate as usize;
        let spec = veza_audio::AudioSpec::new(rate, 2).expect("spec");
        let tone =
            |f: f64, a: f64, i: usize| a * (std::f64::consts::TAU * f * i as f64 / 44_100.0).sin();
        let left: Vec<f32> = (0..n)
            .map(|i| (tone(440.0, 0.3, i) + tone(3_000.0, 0.1, i)) as f32)
            .collect();
        let right: Vec<f32> = (0..n)
            .map(|i| (tone(660.0, 0.3, i) - tone(5_000.0, 0.05, i)) as f32)
            .collect();
        let wav = wav_bytes(
            &veza_audio::PcmBuffer::from_planes(spec, vec![left, right]),
            16,
        );
        let mut all = vec![("wav", wav.clone())];
        for (name, format) in [
            ("mp3", OutputFormat::Mp3),
            ("flac", OutputFormat::Flac),
            ("ogg", OutputFormat::Ogg),
        ] {
            let (bytes, _) = transcode_bytes(wav.clone().into(), &TranscodeOptions::new(format))
                .unwrap_or_else(|e| panic!("making the {name} input: {e}"));
            all.push((name, bytes));
        }
        all
    })
}

fn options(format: OutputFormat) -> TranscodeOptions {
    let mut settings = OutputSettings::new(format);
    // WAV output at another rate also runs the resampler across the splits.
    if format == OutputFormat::Wav {
        settings.sample_rate = Some(veza_audio::SampleRate::DVD);
    }
    TranscodeOptions {
        output: Some(settings),
        ..TranscodeOptions::default()
    }
}

/// Output of one push of everything, then `finish`.
fn whole(input: &[u8], format: OutputFormat) -> Vec<u8> {
    let mut t = Transcoder::new(options(format)).expect("transcoder");
    t.push(input)
        .unwrap_or_else(|e| panic!("{format}: push: {e}"));
    let mut out = t.take_output().to_vec();
    out.extend_from_slice(
        &t.finish()
            .unwrap_or_else(|e| panic!("{format}: finish: {e}")),
    );
    out
}

/// The reference outputs per (input, output format), made once per format.
fn reference(format: OutputFormat) -> Vec<Vec<u8>> {
    inputs()
        .iter()
        .map(|(name, bytes)| {
            let out = whole(bytes, format);
            // The reference itself must be real audio of about the input's length.
            let d = decode_bytes(&out)
                .unwrap_or_else(|e| panic!("{name} -> {format}: output does not decode: {e}"));
            assert!(
                (d.secs() - 1.0).abs() < 0.1,
                "{name} -> {format}: {} s decoded",
                d.secs()
            );
            out
        })
        .collect()
}

/// Pushes `input` in chunks of the sizes in `plan` (cycled), taking output after a chunk when
/// its flag says so.
fn split(input: &[u8], format: OutputFormat, plan: &[(usize, bool)]) -> Vec<u8> {
    let mut t = Transcoder::new(options(format)).expect("transcoder");
    let mut out = Vec::new();
    let mut rest = input;
    for &(len, take) in plan.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        t.push(chunk)
            .unwrap_or_else(|e| panic!("{format}: push: {e}"));
        if take {
            out.extend_from_slice(&t.take_output());
        }
    }
    out.extend_from_slice(&t.take_output());
    out.extend_from_slice(
        &t.finish()
            .unwrap_or_else(|e| panic!("{format}: finish: {e}")),
    );
    out
}

fn plans() -> impl Strategy<Value = Vec<(usize, bool)>> {
    prop::collection::vec((1usize..20_000, any::<bool>()), 1..24)
}

fn check_splits(format: OutputFormat, plan: &[(usize, bool)], refs: &[Vec<u8>]) {
    for ((name, input), want) in inputs().iter().zip(refs) {
        let got = split(input, format, plan);
        assert!(
            got == *want,
            "{name} -> {format}: {} bytes split vs {} bytes whole (first difference at {:?})",
            got.len(),
            want.len(),
            got.iter().zip(want).position(|(a, b)| a != b)
        );
    }
}

macro_rules! split_invariance {
    ($name:ident, $format:expr) => {
        proptest! {
            #![proptest_config(ProptestConfig::with_cases(8))]
            #[test]
            fn $name(plan in plans()) {
                static REFS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
                let refs = REFS.get_or_init(|| reference($format));
                check_splits($format, &plan, refs);
            }
        }
    };
}

split_invariance!(mp3_output_is_split_invariant, OutputFormat::Mp3);
split_invariance!(flac_output_is_split_invariant, OutputFormat::Flac);
split_invariance!(ogg_output_is_split_invariant, OutputFormat::Ogg);
split_invariance!(aac_output_is_split_invariant, OutputFormat::Aac);
split_invariance!(m4a_output_is_split_invariant, OutputFormat::M4a);
split_invariance!(wav_output_is_split_invariant, OutputFormat::Wav);

/// Byte-at-a-time pushing (the worst split) gives the same bytes too.
#[test]
fn one_byte_pushes_give_the_same_bytes() {
    let (_, input) = &inputs()[1]; // the MP3 input: the smallest
    let want = whole(input, OutputFormat::Ogg);
    let got = split(input, OutputFormat::Ogg, &[(1, false)]);
    assert!(got == want, "{} vs {} bytes", got.len(), want.len());
}

// ---- constant memory ----------------------------------------------------------------------

/// 20 minutes of 8 kHz mono 16-bit WAV, generated chunk by chunk (never held whole): a 440 Hz
/// tone whose level drifts, so the encoder has something to do.
struct LongWav {
    header: Option<Vec<u8>>,
    frame: u64,
    frames: u64,
    step: usize,
}

const LONG_RATE: u32 = 8_000;
const LONG_FRAMES: u64 = 20 * 60 * LONG_RATE as u64;

impl LongWav {
    fn new() -> Self {
        let data = u32::try_from(LONG_FRAMES * 2).expect("fits");
        LongWav {
            header: Some(wav_header(LONG_RATE, 1, 16, data)),
            frame: 0,
            frames: LONG_FRAMES,
            step: 0,
        }
    }

    /// The next chunk (sizes vary from 2 to about 24 KB), written into `buf`; false at the end.
    fn next_chunk(&mut self, buf: &mut Vec<u8>) -> bool {
        buf.clear();
        if let Some(h) = self.header.take() {
            buf.extend_from_slice(&h);
            return true;
        }
        if self.frame >= self.frames {
            return false;
        }
        self.step += 1;
        let want = 1 + (self.step * 7919) % 12_000; // frames in this chunk
        let n = (want as u64).min(self.frames - self.frame);
        for i in self.frame..self.frame + n {
            let t = i as f64 / f64::from(LONG_RATE);
            let level = 0.3 + 0.2 * (t / 7.0).sin();
            let s = level * (std::f64::consts::TAU * 440.0 * t).sin();
            buf.extend_from_slice(&((s * 32767.0) as i16).to_le_bytes());
        }
        self.frame += n;
        true
    }
}

#[test]
fn twenty_minutes_stream_through_in_constant_memory() {
    let lookahead = DecoderOptions::default().push_lookahead;
    let baseline = live();
    take_peak();

    let mut opts = TranscodeOptions::new(OutputFormat::Mp3);
    opts.output = Some(OutputSettings::new(OutputFormat::Mp3).with_kbps(32));
    let mut t = Transcoder::new(opts).expect("transcoder");
    // The Transcoder does not expose its PushDecoder's queue, so a PushDecoder with the same
    // options is fed the same chunks alongside, and its queue is checked.
    let mut probe = PushDecoder::new(DecoderOptions::default());

    let mut src = LongWav::new();
    let mut chunk = Vec::with_capacity(32 << 10);
    let (mut pushes, mut out_bytes, mut max_pending, mut max_queued) = (0u64, 0u64, 0usize, 0usize);
    let mut decoded = 0u64;
    let mut warm_peak = None;
    while src.next_chunk(&mut chunk) {
        t.push(&chunk).expect("push");
        probe.push(&chunk).expect("probe push");
        let queued = probe.queued_bytes();
        assert!(
            queued <= lookahead + chunk.len(),
            "push {pushes}: {queued} bytes queued, look-ahead {lookahead} + push {}",
            chunk.len()
        );
        while let Some(b) = probe.next_block().expect("probe decode") {
            decoded += b.frames() as u64;
        }
        let queued = probe.queued_bytes();
        assert!(
            queued < lookahead,
            "push {pushes}: {queued} bytes still queued after draining"
        );
        max_queued = max_queued.max(queued);
        max_pending = max_pending.max(t.pending_output());
        pushes += 1;
        // Take the output every 8 pushes (and drop it: a network sink).
        if pushes % 8 == 0 {
            out_bytes += t.take_output().len() as u64;
        }
        // After two minutes of audio, everything has reached its working size.
        if warm_peak.is_none() && src.frame >= 2 * 60 * u64::from(LONG_RATE) {
            warm_peak = Some(take_peak());
        }
    }
    out_bytes += t.finish().expect("finish").len() as u64;
    probe.finish();
    while let Some(b) = probe.next_block().expect("probe decode") {
        decoded += b.frames() as u64;
    }
    let rest_peak = take_peak();
    let warm_peak = warm_peak.expect("warm-up reached");

    assert_eq!(t.frames_decoded(), LONG_FRAMES);
    assert_eq!(decoded, LONG_FRAMES);
    // 8 pushes of at most 24 KB of PCM at 128 kbit/s, as 32 kbit/s MP3: about 48 KB.
    assert!(
        max_pending < 96 << 10,
        "{max_pending} bytes of output pending"
    );
    // 32 kbit/s for 1200 s is 4.8 MB.
    assert!(
        (4_600_000..5_000_000).contains(&out_bytes),
        "{out_bytes} bytes written"
    );
    // Constant memory: nothing grows after the warm-up (256 KiB of slack for allocator
    // rounding), and the whole working set stays small next to the 19 MB streamed through.
    assert!(
        rest_peak <= warm_peak + (256 << 10),
        "heap peak grew from {warm_peak} B (first 2 min) to {rest_peak} B (the other 18 min)"
    );
    assert!(
        warm_peak.max(rest_peak) - baseline < 4 << 20,
        "heap peak {} B above the baseline",
        warm_peak.max(rest_peak) - baseline
    );
    eprintln!(
        "{pushes} pushes, {out_bytes} B out, peak heap {} KiB over baseline, max pending {max_pending} B, max queued {max_queued} B",
        (warm_peak.max(rest_peak) - baseline) >> 10
    );
}
