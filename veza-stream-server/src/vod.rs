//! HLS VOD renditions made on demand and kept in memory.
//!
//! A rendition's playlist comes from the source's metadata alone (sample count and rate, the
//! output rate and the codec's frame length): segment `k` holds a fixed run of codec frames, so
//! the playlist is served before any audio is encoded. The first request for a rendition starts
//! one continuous encode of the whole source on a blocking thread; each segment is published as
//! soon as its last frame leaves the encoder, and a request for a segment not made yet waits for
//! it. Since one encoder codes the whole file, segment joins are those of a one-piece transcode
//! (the MP3 bit reservoir and AAC overlap run across them), and segment `N` always holds the same
//! bytes: the encoders are deterministic, so a rendition evicted and made again is identical.
//!
//! Segments are [`Bytes`] (ID3 timestamp tag + frames) held in memory: serving one is a map
//! lookup and a reference count, with no file read and no frame splitting. Finished renditions
//! are evicted least recently used past a byte budget (`HLS_CACHE_MEMORY_SIZE`); renditions being
//! made are never evicted. Each rendition's encode has a thread of its own: its first segment is
//! made at once at normal priority (a player waits for it); after that the thread runs at a lower
//! priority (nice 10) and waits for one of the per-CPU permits, so background encodes never hold
//! back another file's first segment. At most [`MAX_ENCODER_THREADS`] encoder threads exist.
//!
//! The plan has a short first segment ([`FIRST_SEGMENT`]) so that a player's first segment is
//! ready within a few tens of milliseconds, then segments of [`SEGMENT`]. The encoder's total
//! frame count is estimated from the source length plus the codec's delay; the last segment takes
//! whatever frames remain (the estimate is within a couple of frames, and a remainder shorter than
//! [`MIN_LAST_FRAMES`] frames is merged into the segment before, so the last segment is never
//! empty).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{Semaphore, watch};
use veza_audio::decode::{Decoder, DecoderOptions};
use veza_audio::dsp::effects::EffectChain;
use veza_audio::dsp::resample::ResampleQuality;
use veza_audio::transcode::{OutputSettings, Pipeline, output_spec};
use veza_audio::{AudioSpec, OutputFormat, Tags, new_encoder};
use veza_stream_core::MediaTime;
use veza_stream_core::frame::{FrameFormat, FrameSplitter, SplitterConfig};
use veza_stream_core::hls::{self, PackedCodec, VodSegment};

use crate::error::ApiError;
use crate::storage::AudioRecord;

/// Duration of the first segment: short, so that playback starts fast.
pub const FIRST_SEGMENT: Duration = Duration::from_secs(2);
/// Duration of the other segments (the last may be longer by up to [`MIN_LAST_FRAMES`] frames).
pub const SEGMENT: Duration = Duration::from_secs(6);
/// A final remainder shorter than this many frames joins the segment before.
pub const MIN_LAST_FRAMES: u64 = 16;

/// One rung of the VOD ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rung {
    /// Its name in URLs (`aac-128`).
    pub name: &'static str,
    /// Output format (ADTS AAC or MP3).
    pub format: OutputFormat,
    /// Bitrate in kbit/s (CBR).
    pub kbps: u32,
    /// The packed-audio codec of its segments.
    pub codec: PackedCodec,
}

/// The VOD ladder, in master-playlist order (players usually start with the first).
pub const LADDER: [Rung; 3] = [
    Rung {
        name: "aac-64",
        format: OutputFormat::Aac,
        kbps: 64,
        codec: PackedCodec::AacLc,
    },
    Rung {
        name: "aac-128",
        format: OutputFormat::Aac,
        kbps: 128,
        codec: PackedCodec::AacLc,
    },
    Rung {
        name: "mp3-128",
        format: OutputFormat::Mp3,
        kbps: 128,
        codec: PackedCodec::Mp3,
    },
];

/// The index in [`LADDER`] of the rung called `name`.
pub fn rung_index(name: &str) -> Option<usize> {
    LADDER.iter().position(|r| r.name == name)
}

/// A rendition's segment plan, from the source's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The segments, in order.
    pub segments: Vec<VodSegment>,
    /// Output sample rate in Hz.
    pub rate: u32,
    /// Samples per codec frame.
    pub frame_len: u32,
    /// Codec frames the encoder is expected to write in all.
    pub expected_frames: u64,
}

/// Samples of priming the encoders put before the audio (LAME: 576 + 529 of decoder delay;
/// FDK AAC-LC: 1600, see `veza_audio::encode::aac`).
fn encoder_delay(codec: PackedCodec) -> u64 {
    match codec {
        PackedCodec::Mp3 => 1105,
        _ => 1600,
    }
}

/// Plans `rung` for a source of `source_frames` samples per channel at `source_rate` Hz with
/// `channels` channels. No audio is read.
///
/// # Errors
/// [`ApiError::UnsupportedMedia`] for a source spec the encoders cannot take.
pub fn plan(
    source_frames: u64,
    source_rate: u32,
    channels: u16,
    rung: &Rung,
) -> Result<Plan, ApiError> {
    let bad = |e: veza_audio::AudioError| ApiError::UnsupportedMedia(e.to_string());
    let spec = AudioSpec::new(source_rate, channels).map_err(bad)?;
    let out = output_spec(rung.format, spec, None, None).map_err(bad)?;
    let rate = out.sample_rate.hz();
    let frame_len: u32 = match rung.codec {
        PackedCodec::Mp3 if rate < 32_000 => 576,
        PackedCodec::Mp3 => 1152,
        _ => 1024,
    };
    let fl = u64::from(frame_len);
    let out_samples =
        (u128::from(source_frames) * u128::from(rate) / u128::from(source_rate.max(1))) as u64;
    let expected = (out_samples + encoder_delay(rung.codec))
        .div_ceil(fl)
        .max(1);
    let frames_for = |d: Duration| {
        ((d.as_secs_f64() * f64::from(rate) / f64::from(frame_len)).round() as u64).max(1)
    };
    let (first, per) = (frames_for(FIRST_SEGMENT), frames_for(SEGMENT));
    let mut sizes = Vec::new();
    let mut left = expected;
    while left > 0 {
        let want = if sizes.is_empty() { first } else { per };
        let n = want.min(left);
        sizes.push(n);
        left -= n;
    }
    if sizes.len() > 1 && sizes.last().is_some_and(|&n| n < MIN_LAST_FRAMES) {
        let n = sizes.pop().unwrap_or(0);
        if let Some(prev) = sizes.last_mut() {
            *prev += n;
        }
    }
    let mut segments = Vec::with_capacity(sizes.len());
    let mut first_frame = 0u64;
    for n in sizes {
        segments.push(VodSegment {
            first_frame: first_frame as usize,
            frames: n as usize,
            start: MediaTime::new(first_frame * fl, rate),
            duration: MediaTime::new(n * fl, rate).as_duration(),
        });
        first_frame += n;
    }
    Ok(Plan {
        segments,
        rate,
        frame_len,
        expected_frames: expected,
    })
}

/// How far the encode of a rendition has gone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Progress {
    /// Segments published (always a prefix: segments are made in order).
    ready: usize,
    /// The encode failed; the rendition is dropped from the cache.
    failed: bool,
}

/// One rendition of one file: its plan, playlist and segments (published as they are made).
#[derive(Debug)]
pub struct Rendition {
    rung: Rung,
    plan: Plan,
    playlist: Bytes,
    data: Box<[OnceLock<Bytes>]>,
    progress: watch::Sender<Progress>,
    last_used: AtomicU64,
    /// Bytes of its segments, once all are made (0 before).
    size: AtomicU64,
    public: bool,
}

impl Rendition {
    /// Its rung.
    pub fn rung(&self) -> &Rung {
        &self.rung
    }

    /// Its plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Its media playlist (segment `N` at `segN.aac` or `segN.mp3`).
    pub fn playlist(&self) -> Bytes {
        self.playlist.clone()
    }

    /// Whether the file is public (so it may be served without asking the store who may read
    /// it).
    pub fn is_public(&self) -> bool {
        self.public
    }

    /// Segment `index` if it is made. Never blocks; no copy.
    pub fn ready_segment(&self, index: usize) -> Option<Bytes> {
        self.data.get(index)?.get().cloned()
    }

    /// Whether every segment is made.
    pub fn is_complete(&self) -> bool {
        self.data.last().is_some_and(|d| d.get().is_some())
    }

    /// Segment `index`, waiting for the encoder if it is not made yet.
    ///
    /// # Errors
    /// [`ApiError::NotFound`] past the last segment; [`ApiError::Internal`] when the encode
    /// failed.
    pub async fn segment(&self, index: usize) -> Result<Bytes, ApiError> {
        let slot = self.data.get(index).ok_or(ApiError::NotFound("segment"))?;
        if let Some(b) = slot.get() {
            return Ok(b.clone());
        }
        let mut rx = self.progress.subscribe();
        let p = *rx
            .wait_for(|p| p.ready > index || p.failed)
            .await
            .map_err(ApiError::internal)?;
        match slot.get() {
            Some(b) => Ok(b.clone()),
            None if p.failed => Err(ApiError::internal("the segment's encode failed")),
            None => Err(ApiError::internal("segment published out of order")),
        }
    }

    /// Bytes held by its segments so far.
    fn held(&self) -> u64 {
        self.data
            .iter()
            .filter_map(|d| d.get().map(|b| b.len() as u64))
            .sum()
    }

    fn publish(&self, index: usize, bytes: Bytes) {
        if let Some(slot) = self.data.get(index) {
            let _ = slot.set(bytes);
        }
        self.progress
            .send_modify(|p| p.ready = p.ready.max(index + 1));
    }
}

type Renditions = [Option<Arc<Rendition>>; LADDER.len()];

#[derive(Debug)]
struct Shared {
    budget: u64,
    files: RwLock<HashMap<String, Renditions>>,
    tick: AtomicU64,
    /// Encodes past their first segment, at most one per CPU.
    builders: Arc<Semaphore>,
    /// Encoder threads alive (started, waiting or working), at most [`MAX_ENCODER_THREADS`].
    threads: Arc<Semaphore>,
}

/// Most encoder threads alive at once; past it, new renditions wait before their first segment.
pub const MAX_ENCODER_THREADS: usize = 64;

/// The in-memory cache of VOD renditions. Cheap to clone.
#[derive(Debug, Clone)]
pub struct VodCache {
    shared: Arc<Shared>,
}

impl VodCache {
    /// A cache holding at most `budget` bytes of finished renditions, making at most
    /// `max_encodes` renditions at once (at least one).
    pub fn new(budget: u64, max_encodes: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                budget,
                files: RwLock::new(HashMap::new()),
                tick: AtomicU64::new(0),
                builders: Arc::new(Semaphore::new(max_encodes.max(1))),
                threads: Arc::new(Semaphore::new(MAX_ENCODER_THREADS)),
            }),
        }
    }

    /// Bytes held by the segments in memory.
    pub fn used(&self) -> u64 {
        self.shared.files.read().map_or(0, |f| {
            f.values()
                .flat_map(|r| r.iter().flatten())
                .map(|r| r.held())
                .sum()
        })
    }

    /// The rendition `rung` of `file_id` if it is in memory (made or being made), marked as
    /// used. The hot path: one read lock, one hash lookup.
    pub fn cached(&self, file_id: &str, rung: usize) -> Option<Arc<Rendition>> {
        let files = self.shared.files.read().ok()?;
        let r = files.get(file_id)?.get(rung)?.clone()?;
        drop(files);
        r.last_used.store(
            self.shared.tick.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        Some(r)
    }

    /// The rendition `rung` of the file `record`: from memory, or planned now and its encode
    /// started in the background (the plan and playlist are ready at once).
    ///
    /// # Errors
    /// [`ApiError::NotFound`] for an unknown rung; [`ApiError::UnsupportedMedia`] when the
    /// source's length or spec does not allow a plan.
    pub fn get_or_start(
        &self,
        record: &AudioRecord,
        rung: usize,
    ) -> Result<Arc<Rendition>, ApiError> {
        if let Some(r) = self.cached(&record.id, rung) {
            return Ok(r);
        }
        let spec = *LADDER.get(rung).ok_or(ApiError::NotFound("rendition"))?;
        let rate = u32::try_from(record.sample_rate)
            .ok()
            .filter(|&r| r > 0)
            .ok_or_else(|| ApiError::UnsupportedMedia("the file has no sample rate".into()))?;
        let channels = u16::try_from(record.channels)
            .map_err(|_| ApiError::UnsupportedMedia("bad channel count".into()))?;
        let ms = record
            .duration_ms
            .and_then(|d| u64::try_from(d).ok())
            .filter(|&d| d > 0)
            .ok_or_else(|| ApiError::UnsupportedMedia("the file has no duration".into()))?;
        // `duration_ms` is the decoded length truncated to a millisecond: take the middle.
        let frames = ms * u64::from(rate) / 1000 + u64::from(rate) / 2000;
        let plan = plan(frames, rate, channels, &spec)?;
        let playlist = Bytes::from(hls::vod_playlist(
            &plan.segments,
            "seg",
            spec.codec.extension(),
        ));
        let n = plan.segments.len();
        let fresh = Arc::new(Rendition {
            rung: spec,
            plan,
            playlist,
            data: (0..n).map(|_| OnceLock::new()).collect(),
            progress: watch::Sender::new(Progress::default()),
            last_used: AtomicU64::new(self.shared.tick.fetch_add(1, Ordering::Relaxed)),
            size: AtomicU64::new(0),
            public: !record.is_private,
        });
        {
            let mut files = self
                .shared
                .files
                .write()
                .map_err(|_| ApiError::internal("VOD cache lock poisoned"))?;
            let slot = &mut files.entry(record.id.clone()).or_default()[rung];
            if let Some(existing) = slot {
                return Ok(existing.clone());
            }
            *slot = Some(fresh.clone());
        }
        let this = self.clone();
        let source = PathBuf::from(&record.path);
        let file_id = record.id.clone();
        let r = fresh.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::spawn(async move {
            let Ok(alive) = this.shared.threads.clone().acquire_owned().await else {
                return;
            };
            let builders = this.shared.builders.clone();
            let r2 = r.clone();
            let this2 = this.clone();
            let file_id2 = file_id.clone();
            // A thread of its own (not the blocking pool): its priority is lowered after the
            // first segment, and pooled threads would keep that for their next task.
            let spawned = std::thread::Builder::new()
                .name("vod-encode".into())
                .spawn(move || {
                    let _alive = alive;
                    // The first segment is urgent (a player waits for it): it is made at once,
                    // at normal priority. The rest waits for a free CPU and runs niced, so the
                    // first segments of other renditions go first.
                    let after_first = || {
                        lower_thread_priority();
                        handle.block_on(builders.acquire_owned()).ok()
                    };
                    // A panic in a codec library must not leave requests waiting forever.
                    let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        produce(&source, &r2, after_first)
                    }))
                    .unwrap_or_else(|_| Err("the encoder panicked".into()));
                    match made {
                        Ok(()) => {
                            r2.size.store(r2.held(), Ordering::Relaxed);
                            this2.enforce_budget();
                        }
                        Err(e) => this2.fail(&file_id2, rung, &r2, &e),
                    }
                });
            if let Err(e) = spawned {
                this.fail(&file_id, rung, &r, &e.to_string());
            }
        });
        Ok(fresh)
    }

    fn fail(&self, file_id: &str, rung: usize, r: &Arc<Rendition>, why: &str) {
        tracing::warn!(
            file_id,
            rung = r.rung.name,
            error = why,
            "HLS VOD encode failed"
        );
        self.remove_if(file_id, rung, r);
        r.progress.send_modify(|p| p.failed = true);
    }

    fn remove_if(&self, file_id: &str, rung: usize, r: &Arc<Rendition>) {
        if let Ok(mut files) = self.shared.files.write() {
            if let Some(set) = files.get_mut(file_id) {
                if set[rung].as_ref().is_some_and(|x| Arc::ptr_eq(x, r)) {
                    set[rung] = None;
                }
                if set.iter().all(Option::is_none) {
                    files.remove(file_id);
                }
            }
        }
    }

    /// Drops every rendition of `file_id` (the file was deleted). Requests in flight keep the
    /// segments they hold.
    pub fn forget(&self, file_id: &str) {
        if let Ok(mut files) = self.shared.files.write() {
            files.remove(file_id);
        }
    }

    /// Evicts finished renditions, least recently used first, until the finished ones fit the
    /// budget.
    fn enforce_budget(&self) {
        let Ok(mut files) = self.shared.files.write() else {
            return;
        };
        loop {
            let mut total = 0u64;
            let mut oldest: Option<(u64, String, usize)> = None;
            for (id, set) in files.iter() {
                for (i, r) in set.iter().enumerate() {
                    let Some(r) = r else { continue };
                    let size = r.size.load(Ordering::Relaxed);
                    if size == 0 {
                        continue; // being made
                    }
                    total += size;
                    let used = r.last_used.load(Ordering::Relaxed);
                    if oldest.as_ref().is_none_or(|(u, _, _)| used < *u) {
                        oldest = Some((used, id.clone(), i));
                    }
                }
            }
            if total <= self.shared.budget {
                return;
            }
            let Some((_, id, i)) = oldest else { return };
            if let Some(set) = files.get_mut(&id) {
                set[i] = None;
                if set.iter().all(Option::is_none) {
                    files.remove(&id);
                }
            }
        }
    }
}

/// Lowers the calling thread's scheduling priority (Linux: nice 10 for this thread only).
fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: `gettid` and `setpriority` take plain integers and touch no memory of ours.
    unsafe {
        let tid = libc::gettid();
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

/// Encodes the whole source into `r`'s segments, publishing each as soon as it is complete
/// (blocking; run on a blocking thread).
/// `after_first` is called once segment 0 is published; what it returns is held until the end.
fn produce<T>(source: &Path, r: &Rendition, after_first: impl FnOnce() -> T) -> Result<(), String> {
    let mut after_first = Some(after_first);
    let mut _held = None;
    let e = |e: veza_audio::AudioError| e.to_string();
    let mut dec = Decoder::open_path(source, DecoderOptions::default()).map_err(e)?;
    let info = dec.info().clone();
    let spec = AudioSpec {
        sample_rate: info.sample_rate,
        channels: info.channels,
    };
    let settings = OutputSettings::new(r.rung.format).with_kbps(r.rung.kbps);
    let cfg = settings
        .encoder_config(spec, info.bits_per_sample, Tags::default())
        .map_err(e)?;
    let mut pipe = Pipeline::new(
        new_encoder(&cfg).map_err(e)?,
        EffectChain::new(),
        ResampleQuality::default(),
    );
    let framing = match r.rung.codec {
        PackedCodec::Mp3 => FrameFormat::Mpeg,
        _ => FrameFormat::Adts,
    };
    let mut split = FrameSplitter::new(framing, SplitterConfig::default());
    let segs = &r.plan.segments;
    let last = segs.len().saturating_sub(1);
    // Bytes per frame at the nominal bitrate, to size each segment's buffer once.
    let frame_bytes = u64::from(r.rung.kbps) * 125 * u64::from(r.plan.frame_len)
        / u64::from(r.plan.rate.max(1))
        + 8;
    let new_buf = |k: usize| {
        let s = &segs[k];
        let tag = hls::id3_tag(s.start, None);
        let mut b = BytesMut::with_capacity(tag.len() + (s.frames as u64 * frame_bytes) as usize);
        b.extend_from_slice(&tag);
        b
    };
    let mut k = 0usize;
    let mut buf = new_buf(0);
    let mut in_seg = 0usize;
    let mut out = BytesMut::with_capacity(64 << 10);
    let mut finished = false;
    while !finished {
        match dec.next_block().map_err(e)? {
            Some(block) => pipe.push(block, &mut out).map_err(e)?,
            None => {
                pipe.finish(&mut out).map_err(e)?;
                finished = true;
            }
        }
        if out.is_empty() && !finished {
            continue;
        }
        split.push(&out);
        out.clear();
        if finished {
            split.finish();
        }
        while let Some(f) = split
            .next_frame()
            .map_err(|e| format!("the encoder's output does not split: {e}"))?
        {
            buf.extend_from_slice(&f.data);
            in_seg += 1;
            if k < last && in_seg == segs[k].frames {
                r.publish(k, std::mem::replace(&mut buf, new_buf(k + 1)).freeze());
                k += 1;
                in_seg = 0;
                if let Some(f) = after_first.take() {
                    _held = Some(f());
                }
            }
        }
    }
    if k < last || in_seg == 0 {
        tracing::warn!(
            rung = r.rung.name,
            segment = k,
            planned = segs.len(),
            "the encoder wrote fewer frames than planned"
        );
    }
    // The last segment takes every frame left; any planned segment after it stays empty.
    while k <= last {
        r.publish(
            k,
            std::mem::replace(&mut buf, new_buf((k + 1).min(last))).freeze(),
        );
        k += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_the_source_with_a_short_first_segment() {
        // 4 minutes at 44.1 kHz.
        let frames = 240 * 44_100;
        for rung in &LADDER {
            let p = plan(frames, 44_100, 2, rung).unwrap();
            let total: Duration = p.segments.iter().map(|s| s.duration).sum();
            let src = Duration::from_secs(240);
            assert!(total >= src, "{}: {total:?}", rung.name);
            assert!(
                total - src < Duration::from_millis(100),
                "{}: {total:?}",
                rung.name
            );
            let first = p.segments[0].duration.as_secs_f64();
            assert!((1.9..2.1).contains(&first), "{first}");
            for w in p.segments.windows(2) {
                assert_eq!(w[0].first_frame + w[0].frames, w[1].first_frame);
                assert_eq!(
                    w[1].start.samples,
                    w[1].first_frame as u64 * u64::from(p.frame_len)
                );
            }
            let last = p.segments.last().unwrap().frames as u64;
            assert!(last >= MIN_LAST_FRAMES);
            let n: usize = p.segments.iter().map(|s| s.frames).sum();
            assert_eq!(n as u64, p.expected_frames);
        }
    }

    #[test]
    fn tiny_sources_get_one_segment() {
        let p = plan(100, 8_000, 1, &LADDER[0]).unwrap();
        assert_eq!(p.segments.len(), 1);
        assert!(p.segments[0].frames >= 1);
    }
}
