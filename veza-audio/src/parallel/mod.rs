//! Whole-file transcoding on several threads ([`TranscodeOptions::threads`]).
//!
//! # MP3 and AAC (ADTS, M4A): segments encoded in parallel, spliced on the frame grid
//! The main thread decodes and converts; the PCM timeline is cut into segments of whole codec
//! frames (1152 or 576 samples for MP3, 1024 for AAC) and each segment is encoded by a fresh
//! encoder on a worker thread, starting `PRE` frames early (pre-roll: the encoder's MDCT
//! overlap, psychoacoustics and bit reservoir settle) and running `POST` frames late. Since a
//! segment starts on the frame grid and every encoder has the same constant delay, frame `j`
//! of a segment starting at frame `s` codes the same audio as frame `s + j` of a one-thread
//! encode. The splicer keeps the earlier segment's frames before a seam frame `g` and the later
//! segment's frames from `g` on, choosing `g` near the nominal boundary where:
//! - both encoders used long blocks on both sides of the seam, with the same window shape, so
//!   the decoder's overlap-add joins two encodes of the same windowed audio;
//! - MP3 only: the later segment's frame `g` takes `main_data_begin` bytes from the bit
//!   reservoir, i.e. from frames the splice drops. The splicer copies those bytes into the free
//!   space at the end of the earlier segment's last kept frames (the space that segment's own
//!   frame `g` would have used). Seams where that space is large enough are preferred; if none
//!   is in the window (the two encoders' reservoirs have not converged, seen at 64 kbit/s), the
//!   earlier segment's last kept frame is given the next bitrate that makes room, as a VBR
//!   stream would (its audio is unchanged; the extra bytes are reservoir space). Frames never
//!   reference later frames, so dropping the earlier segment's tail is safe.
//!
//! M4A: the segments are encoded as raw access units and spliced the same way as ADTS, and the
//! spliced units go through one fragmented-MP4 writer, so one `moov` (edit list, `iTunSMPB`,
//! durations) covers the whole stream.
//!
//! The LAME info frame (written by the first segment's encoder) is rebuilt for the whole
//! stream: frame count, byte count, table of contents, end padding, music length and CRCs; the
//! start delay is the first segment's, which is the stream's. So gapless decoders trim exactly
//! as for a one-thread encode. Tags are written once (the first segment's).
//!
//! If no seam satisfies the rules within the search window (for example more than 25 frames of
//! short blocks in a row), the transcode fails with [`AudioError::Encoder`] rather than write a
//! broken stream; it has not been seen on music, and the caller can retry with one thread.
//!
//! # Other formats: a decode thread and an encode thread
//! Vorbis, FLAC and WAV run the decoder and converter on one thread and the encoder on
//! another (the output is identical to a one-thread run). Splicing Vorbis needs matching block
//! decisions of two encoders, which libvorbis does not guarantee on a fixed grid.
//!
//! Memory: at most `threads + 1` segments of PCM (each at most 30 s) and their encoded bytes
//! are held at once, plus one seek-table of fixed size.

mod adts;
mod bits;
mod mp3;

use std::collections::VecDeque;
use std::io::Write;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;

use crate::decode::Decoder;
use crate::dsp::effects::EffectChain;
use crate::dsp::resample::ResampleQuality;
use crate::encode::aac::{FdkEncoder, Transport};
use crate::encode::m4a::M4aMuxer;
use crate::encode::{Encoder, EncoderConfig, HeaderPatch, new_encoder};
use crate::error::{AudioError, Result};
use crate::format::OutputFormat;
use crate::metadata::{StreamInfo, Tags};
use crate::pcm::PcmBuffer;
use crate::transcode::{Converter, Progress};

/// One codec frame inside a segment's encoded bytes, with what the splicer needs to know.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameRef {
    /// Byte offset in the segment's output.
    pub(crate) start: usize,
    /// Bytes.
    pub(crate) len: usize,
    /// The first granule (MP3) or the frame (AAC) uses long blocks in every channel.
    pub(crate) head_long: bool,
    /// The last granule (MP3) or the frame (AAC) uses long blocks in every channel.
    pub(crate) tail_long: bool,
    /// AAC window shape (0 sine, 1 KBD); 0 for MP3.
    pub(crate) shape: u8,
    /// MP3 `main_data_begin`: bytes of this frame's main data in earlier frames.
    pub(crate) mdb: u16,
    /// MP3: offset of the main data area within the frame (after header and side info).
    pub(crate) main_off: u16,
    /// MP3: bytes of the main data area.
    pub(crate) main_len: u16,
    /// MP3: bytes of main data this frame uses (its granules' `part2_3_length`, rounded up).
    pub(crate) used: u32,
    /// MP3: the frame's bitrate in kbit/s.
    pub(crate) kbps: u16,
}

/// The codecs that are spliced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mp3,
    Adts,
    /// Raw AAC access units, muxed into M4A by the splicer.
    M4a,
}

impl Kind {
    fn codec(self) -> &'static str {
        match self {
            Kind::Mp3 => "mp3",
            Kind::Adts | Kind::M4a => "aac",
        }
    }
}

/// Segment layout, in codec frames (except `frame_len`, in samples).
#[derive(Debug, Clone, Copy)]
struct Geometry {
    frame_len: u64,
    /// Nominal segment length.
    seg: u64,
    /// Seams are searched this many frames either side of the nominal boundary.
    window: u64,
    /// Frames a segment's encoder runs before the earliest seam it may provide.
    warm: u64,
    /// Frames an encoder runs past the last frame it may provide (its flush pads with silence).
    tail: u64,
}

impl Geometry {
    fn pre(&self) -> u64 {
        self.window + self.warm
    }

    fn post(&self) -> u64 {
        self.window + self.tail
    }

    /// First frame coded by segment `k`'s encoder.
    fn first(&self, k: u64) -> u64 {
        (k * self.seg).saturating_sub(self.pre())
    }

    /// End (exclusive, in frames) of the PCM given to a non-final segment `k`.
    fn end(&self, k: u64) -> u64 {
        (k + 1) * self.seg + self.post()
    }
}

/// Tunables: seam search half-window, pre-roll and tail (frames); segment length bounds (s).
const WINDOW: u64 = 6;
const WARM: u64 = 8;
const TAIL: u64 = 4;
const MIN_SEGMENT_SECS: u64 = 5;
// 20 s keeps peak memory (the threads' segments plus one queued, f32 PCM: about 47 MB at two
// threads) under ffmpeg's 56 MB; longer segments cut the overlap overhead (24 frames per seam)
// but cost memory, shorter ones the reverse.
const MAX_SEGMENT_SECS: u64 = 20;

/// One encoded segment, parsed into frames.
struct Chunk {
    /// Segment number.
    index: u64,
    /// Global frame index of `frames[0]`.
    first: u64,
    data: Vec<u8>,
    /// Bytes before the first audio frame (segment 0 of MP3: ID3 tag, info frame placeholder).
    head_len: usize,
    frames: Vec<FrameRef>,
    /// MP3: offset of each frame's main data area in the segment's main data stream (the
    /// concatenated main data areas); one more entry than frames.
    virt: Vec<u32>,
    /// MP3: `data_end[i]` is where the main data of frames `0..i` ends in that stream.
    data_end: Vec<u32>,
    patch: Option<HeaderPatch>,
    /// M4A, segment 0: the muxer, set up from that segment's encoder.
    mux: Option<M4aMuxer>,
}

/// Length of an ID3v2 tag at the start of `b` (0 if none).
fn id3_len(b: &[u8]) -> usize {
    match b.get(..10) {
        Some(h) if &h[..3] == b"ID3" => {
            let size = h[6..10]
                .iter()
                .fold(0usize, |acc, &x| (acc << 7) | usize::from(x & 0x7F));
            10 + size + if h[5] & 0x10 != 0 { 10 } else { 0 }
        }
        _ => 0,
    }
}

fn parse_chunk(
    kind: Kind,
    index: u64,
    first: u64,
    data: Vec<u8>,
    patch: Option<HeaderPatch>,
) -> Result<Chunk> {
    let codec = kind.codec();
    let head_len = match kind {
        Kind::Mp3 => id3_len(&data) + patch.as_ref().map_or(0, |p| p.bytes.len()),
        Kind::Adts | Kind::M4a => 0,
    };
    let mut frames = Vec::new();
    let mut pos = head_len;
    while pos < data.len() {
        let rest = &data[pos..];
        let f = match kind {
            Kind::Mp3 => mp3::frame(rest, pos),
            Kind::Adts => adts::frame(rest, pos),
            Kind::M4a => None, // made by `encode_m4a_segment`
        }
        .ok_or_else(|| {
            AudioError::encoder(
                codec,
                format!("segment {index}: the encoder wrote an unparseable frame at byte {pos}"),
            )
        })?;
        pos += f.len;
        frames.push(f);
    }
    let (mut virt, mut data_end) = (Vec::new(), Vec::new());
    if kind == Kind::Mp3 {
        virt.reserve(frames.len() + 1);
        data_end.reserve(frames.len() + 1);
        let (mut v, mut end) = (0u32, 0u32);
        virt.push(0);
        data_end.push(0);
        for f in &frames {
            let begin = v.saturating_sub(u32::from(f.mdb));
            end = end.max(begin + f.used);
            v += u32::from(f.main_len);
            virt.push(v);
            data_end.push(end);
        }
    }
    Ok(Chunk {
        index,
        first,
        data,
        head_len,
        frames,
        virt,
        data_end,
        patch,
        mux: None,
    })
}

impl Chunk {
    /// The byte of the main data stream at `v` (MP3).
    fn main_byte_index(&self, v: u32) -> Option<usize> {
        let i = self.virt.partition_point(|&x| x <= v).checked_sub(1)?;
        let f = self.frames.get(i)?;
        Some(f.start + usize::from(f.main_off) + (v - self.virt[i]) as usize)
    }
}

/// Assembles the output from the segments, in order.
struct Splicer<'a> {
    kind: Kind,
    geo: Geometry,
    sink: &'a mut dyn Write,
    /// The last segment received and the index of its first frame not yet written.
    held: Option<(Chunk, usize)>,
    written: u64,
    table: mp3::SeekTable,
    audio_bytes: u64,
    music_crc: u16,
    info_tag: Option<HeaderPatch>,
    mux: Option<M4aMuxer>,
}

impl Splicer<'_> {
    fn push(&mut self, b: Chunk) -> Result<()> {
        let Some((mut a, next)) = self.held.take() else {
            self.sink.write_all(&b.data[..b.head_len])?;
            self.written += b.head_len as u64;
            self.info_tag = b.patch.clone();
            let mut b = b;
            self.mux = b.mux.take();
            self.held = Some((b, 0));
            return Ok(());
        };
        let center = b.index * self.geo.seg;
        let seam = self
            .find_seam(&a, next, &b, center, false)
            .or_else(|| self.find_seam(&a, next, &b, center, true));
        let (ja, jb, grow) = seam.ok_or_else(|| {
            AudioError::encoder(
                self.kind.codec(),
                format!(
                    "no seam between segments {} and {} satisfies the splicing rules; use one thread",
                    a.index, b.index
                ),
            )
        })?;
        if let Some(index) = grow {
            Self::grow_frame(&mut a, ja - 1, index)
                .ok_or(AudioError::InvalidState("growing an MP3 frame at a seam"))?;
        }
        if self.kind == Kind::Mp3 {
            let m = u32::from(b.frames[jb].mdb);
            for i in 0..m {
                let src = b.main_byte_index(b.virt[jb] - m + i);
                let dst = a.main_byte_index(a.virt[ja] - m + i);
                if let (Some(s), Some(d)) = (src, dst) {
                    a.data[d] = b.data[s];
                }
            }
        }
        self.write_frames(&a, next, ja)?;
        self.held = Some((b, jb));
        Ok(())
    }

    /// The seam: indices into `a`'s and `b`'s frames of the first frame taken from `b`, and
    /// for MP3 the bitrate index to give `a`'s last kept frame when its free space must grow
    /// to take `b`'s reservoir bytes (`None`: it fits as it is).
    fn find_seam(
        &self,
        a: &Chunk,
        next: usize,
        b: &Chunk,
        center: u64,
        allow_growth: bool,
    ) -> Option<(usize, usize, Option<u8>)> {
        let g_ok = |g: u64| -> Option<(usize, usize, Option<u8>)> {
            let ja = usize::try_from(g.checked_sub(a.first)?).ok()?;
            let jb = usize::try_from(g.checked_sub(b.first)?).ok()?;
            if ja <= next
                || ja as u64 + self.geo.tail > a.frames.len() as u64
                || (jb as u64) < self.geo.warm.max(1)
                || jb >= b.frames.len()
            {
                return None;
            }
            let (fa, fb0, fb) = (a.frames[ja - 1], b.frames[jb - 1], b.frames[jb]);
            if !(fa.tail_long && fb0.tail_long && fa.shape == fb0.shape && fb.head_long) {
                return None;
            }
            let mut grow = None;
            if self.kind == Kind::Mp3 {
                let m = u32::from(fb.mdb);
                b.virt[jb].checked_sub(m)?;
                let free = a.virt[ja].checked_sub(a.data_end[ja])?;
                let mut extra = 0;
                if m > free {
                    if !allow_growth {
                        return None;
                    }
                    let head = &a.data[fa.start..fa.start + fa.len];
                    let (index, more) = mp3::grow_to_fit(head, (m - free) as usize)?;
                    grow = Some(index);
                    extra = more as u32;
                }
                // The bytes overwritten must lie in frames not yet written.
                if (a.virt[ja] + extra).checked_sub(m)? < a.virt[next] {
                    return None;
                }
            }
            Some((ja, jb, grow))
        };
        (0..=self.geo.window).find_map(|d| {
            g_ok(center.checked_sub(d)?).or_else(|| if d > 0 { g_ok(center + d) } else { None })
        })
    }

    /// Gives `a`'s frame `i` the bitrate `index` (a larger frame), the new bytes zero.
    fn grow_frame(a: &mut Chunk, i: usize, index: u8) -> Option<()> {
        let f = a.frames[i];
        let end = f.start + f.len;
        a.data[f.start + 2] = (a.data[f.start + 2] & 0x0F) | (index << 4);
        let h = mp3::header(&a.data[f.start..])?;
        let extra = h.len.checked_sub(f.len)?;
        a.data.splice(end..end, std::iter::repeat_n(0u8, extra));
        let f = &mut a.frames[i];
        f.len = h.len;
        f.kbps = h.kbps;
        f.main_len += u16::try_from(extra).ok()?;
        a.virt[i + 1] += u32::try_from(extra).ok()?;
        // Later frames of `a` are dropped at this seam; keep their offsets consistent anyway.
        for later in &mut a.frames[i + 1..] {
            later.start += extra;
        }
        for v in &mut a.virt[i + 2..] {
            *v += extra as u32;
        }
        Some(())
    }

    fn write_frames(&mut self, c: &Chunk, from: usize, to: usize) -> Result<()> {
        let Some(frames) = c.frames.get(from..to).filter(|f| !f.is_empty()) else {
            return Ok(());
        };
        let start = frames[0].start;
        let end = frames[frames.len() - 1].start + frames[frames.len() - 1].len;
        let bytes = &c.data[start..end];
        if let Some(mux) = self.mux.as_mut() {
            let mut out = BytesMut::new();
            for f in frames {
                mux.push(&c.data[f.start..f.start + f.len], &mut out);
            }
            self.sink.write_all(&out)?;
            self.written += out.len() as u64;
            return Ok(());
        }
        self.sink.write_all(bytes)?;
        self.written += bytes.len() as u64;
        if self.kind == Kind::Mp3 {
            for f in frames {
                self.table.add(f.kbps);
            }
            self.audio_bytes += bytes.len() as u64;
            self.music_crc = mp3::crc16_update(self.music_crc, bytes);
        }
        Ok(())
    }

    fn finish(&mut self, samples: u64) -> Result<Option<HeaderPatch>> {
        if let Some((a, next)) = self.held.take() {
            self.write_frames(&a, next, a.frames.len())?;
        }
        if let Some(mux) = self.mux.as_mut() {
            let mut out = BytesMut::new();
            let patch = mux.finish(samples, &mut out);
            self.sink.write_all(&out)?;
            self.written += out.len() as u64;
            return Ok(patch);
        }
        let Some(tag) = self.info_tag.take() else {
            return Ok(None);
        };
        let totals = mp3::StreamTotals {
            table: &self.table,
            audio_bytes: self.audio_bytes,
            music_crc: self.music_crc,
            samples,
            frame_len: self.geo.frame_len,
        };
        let bytes = mp3::rebuild_info_frame(&tag.bytes, &totals)
            .ok_or_else(|| AudioError::encoder("mp3", "cannot rebuild LAME's info frame"))?;
        Ok(Some(HeaderPatch {
            offset: tag.offset,
            bytes,
        }))
    }
}

/// A segment for a worker.
struct Job {
    index: u64,
    first: u64,
    pcm: PcmBuffer,
    reply: SyncSender<Result<Chunk>>,
}

fn encode_segment(kind: Kind, cfg: &EncoderConfig, job: &Job) -> Result<Chunk> {
    let mut cfg = cfg.clone();
    if job.index > 0 {
        cfg.tags = Tags::default();
        cfg.seekable_output = false;
    }
    if kind == Kind::M4a {
        return encode_m4a_segment(&cfg, job);
    }
    let mut enc = new_encoder(&cfg)?;
    let mut out = BytesMut::with_capacity(job.pcm.frames() / 4 + 4096);
    enc.encode(&job.pcm, &mut out)?;
    enc.finish(&mut out)?;
    parse_chunk(kind, job.index, job.first, out.to_vec(), enc.header_patch())
}

/// An M4A segment: raw access units from FDK, and for segment 0 the muxer.
fn encode_m4a_segment(cfg: &EncoderConfig, job: &Job) -> Result<Chunk> {
    let mut fdk = FdkEncoder::new(cfg, Transport::Raw)?;
    let mux = (job.index == 0).then(|| M4aMuxer::new(&fdk, cfg.tags.clone(), cfg.seekable_output));
    let mut data = Vec::with_capacity(job.pcm.frames() / 4 + 4096);
    let mut frames = Vec::new();
    let mut on_unit = |unit: &[u8]| {
        frames.push(adts::raw_unit(unit, data.len()));
        data.extend_from_slice(unit);
    };
    fdk.encode(&job.pcm, &mut on_unit)?;
    fdk.finish(&mut on_unit)?;
    Ok(Chunk {
        index: job.index,
        first: job.first,
        data,
        head_len: 0,
        frames,
        virt: Vec::new(),
        data_end: Vec::new(),
        patch: None,
        mux,
    })
}

/// What a threaded run gives back to the transcoder.
pub(crate) struct Outcome {
    pub(crate) frames_decoded: u64,
    pub(crate) bytes_written: u64,
    pub(crate) patch: Option<HeaderPatch>,
}

/// Runs a transcode on `threads` (> 1) threads; see the module docs.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    dec: &mut Decoder,
    sink: &mut dyn Write,
    cfg: &EncoderConfig,
    effects: EffectChain,
    quality: ResampleQuality,
    threads: usize,
    info: &StreamInfo,
    progress: &mut dyn FnMut(Progress),
) -> Result<Outcome> {
    let kind = match cfg.format {
        OutputFormat::Mp3 => Kind::Mp3,
        OutputFormat::Aac => Kind::Adts,
        OutputFormat::M4a => Kind::M4a,
        _ => return run_two_stage(dec, sink, cfg, effects, quality, info, progress),
    };
    if cfg.spec.channels > 2 {
        // The seam rules read the window of the first channel element only; 5.1 AAC has four.
        return run_two_stage(dec, sink, cfg, effects, quality, info, progress);
    }
    let rate = u64::from(cfg.spec.sample_rate.hz());
    let frame_len = match kind {
        Kind::Mp3 if rate < 32_000 => 576,
        Kind::Mp3 => 1152,
        Kind::Adts | Kind::M4a => 1024,
    };
    let secs = |s: u64| s * rate / frame_len;
    let total_out = info
        .total_frames
        .map(|t| t * rate / u64::from(info.sample_rate.hz().max(1)));
    let seg = total_out
        .map_or(secs(20), |t| t / frame_len / (threads as u64 * 4))
        .clamp(secs(MIN_SEGMENT_SECS), secs(MAX_SEGMENT_SECS));
    let geo = Geometry {
        frame_len,
        seg: seg.max(4 * (WINDOW + WARM + TAIL)),
        window: WINDOW,
        warm: WARM,
        tail: TAIL,
    };

    // One segment waits while each thread encodes one: bounded memory.
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(1);
    let job_rx = Arc::new(Mutex::new(job_rx));
    std::thread::scope(|s| {
        for _ in 0..threads {
            let rx = Arc::clone(&job_rx);
            s.spawn(move || {
                loop {
                    let job = match rx.lock() {
                        Ok(guard) => guard.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let r = encode_segment(kind, cfg, &job);
                    let _ = job.reply.send(r);
                }
            });
        }
        let mut splicer = Splicer {
            kind,
            geo,
            sink,
            held: None,
            written: 0,
            table: mp3::SeekTable::new(),
            audio_bytes: 0,
            music_crc: 0,
            info_tag: None,
            mux: None,
        };
        let r = produce(
            dec,
            &mut splicer,
            &job_tx,
            threads,
            geo,
            cfg,
            effects,
            quality,
            info,
            progress,
        );
        drop(job_tx);
        r
    })
}

/// Waits for the oldest segment in flight and splices it.
fn collect(
    pending: &mut VecDeque<Receiver<Result<Chunk>>>,
    splicer: &mut Splicer<'_>,
) -> Result<()> {
    if let Some(rx) = pending.pop_front() {
        let chunk = rx
            .recv()
            .map_err(|_| AudioError::InvalidState("an encoder thread stopped"))??;
        splicer.push(chunk)?;
    }
    Ok(())
}

/// The main thread's part: decode, convert, cut segments, hand them out, splice the results.
#[allow(clippy::too_many_arguments)]
fn produce(
    dec: &mut Decoder,
    splicer: &mut Splicer<'_>,
    job_tx: &SyncSender<Job>,
    threads: usize,
    geo: Geometry,
    cfg: &EncoderConfig,
    effects: EffectChain,
    quality: ResampleQuality,
    info: &StreamInfo,
    progress: &mut dyn FnMut(Progress),
) -> Result<Outcome> {
    let spec = cfg.spec;
    let f = geo.frame_len;
    let mut conv = Converter::new(spec, effects, quality);
    let mut drained = PcmBuffer::new(spec);
    let mut buf = PcmBuffer::new(spec);
    let mut buf_start = 0u64; // sample position of buf's first frame
    let mut k = 0u64; // the segment being filled
    let mut pending: VecDeque<Receiver<Result<Chunk>>> = VecDeque::new();
    let mut frames_decoded = 0u64;
    let mut samples_out = 0u64;

    let submit = |buf: &mut PcmBuffer,
                  buf_start: &mut u64,
                  k: &mut u64,
                  end: Option<u64>,
                  pending: &mut VecDeque<Receiver<Result<Chunk>>>,
                  splicer: &mut Splicer<'_>|
     -> Result<()> {
        let first = geo.first(*k);
        let offset = |at: u64| {
            at.checked_sub(*buf_start)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or(AudioError::InvalidState("segment offset"))
        };
        let from = offset(first * f)?;
        let to = match end {
            Some(e) => offset(e * f)?,
            None => buf.frames(),
        };
        let planes = buf
            .planes()
            .iter()
            .map(|p| p.get(from..to).map(<[f32]>::to_vec).unwrap_or_default())
            .collect();
        let pcm = PcmBuffer::from_planes(spec, planes);
        while pending.len() > threads {
            collect(pending, splicer)?;
        }
        let (reply, rx) = mpsc::sync_channel(1);
        job_tx
            .send(Job {
                index: *k,
                first,
                pcm,
                reply,
            })
            .map_err(|_| AudioError::InvalidState("the encoder threads stopped"))?;
        pending.push_back(rx);
        *k += 1;
        let keep_from = geo.first(*k) * f;
        if let Ok(n) = usize::try_from(keep_from.saturating_sub(*buf_start)) {
            buf.consume_front(n);
            *buf_start = keep_from.max(*buf_start);
        }
        Ok(())
    };

    let push = |block: &PcmBuffer,
                buf: &mut PcmBuffer,
                buf_start: &mut u64,
                k: &mut u64,
                pending: &mut VecDeque<Receiver<Result<Chunk>>>,
                splicer: &mut Splicer<'_>|
     -> Result<()> {
        buf.extend_from(block);
        while *buf_start + buf.frames() as u64 >= geo.end(*k) * f {
            let end = geo.end(*k);
            submit(buf, buf_start, k, Some(end), pending, splicer)?;
        }
        Ok(())
    };

    while let Some(block) = dec.next_block()? {
        frames_decoded += block.frames() as u64;
        drained.clear();
        let converted = conv.process(block, &mut drained)?;
        samples_out += (drained.frames() + converted.frames()) as u64;
        if !drained.is_empty() {
            let d = drained.clone();
            push(&d, &mut buf, &mut buf_start, &mut k, &mut pending, splicer)?;
        }
        if !converted.is_empty() {
            push(
                converted,
                &mut buf,
                &mut buf_start,
                &mut k,
                &mut pending,
                splicer,
            )?;
        }
        progress(Progress {
            frames_done: frames_decoded,
            frames_total: info.total_frames,
            sample_rate: info.sample_rate,
            bytes_written: splicer.written,
        });
    }
    let tail = conv.flush()?;
    samples_out += tail.frames() as u64;
    if !tail.is_empty() {
        let t = tail.clone();
        push(&t, &mut buf, &mut buf_start, &mut k, &mut pending, splicer)?;
    }
    // The final segment: everything left, flushed for real by its encoder.
    submit(
        &mut buf,
        &mut buf_start,
        &mut k,
        None,
        &mut pending,
        splicer,
    )?;
    while !pending.is_empty() {
        collect(&mut pending, splicer)?;
    }
    let patch = splicer.finish(samples_out)?;
    Ok(Outcome {
        frames_decoded,
        bytes_written: splicer.written,
        patch,
    })
}

/// Decoding and conversion on one thread, encoding on this one.
fn run_two_stage(
    dec: &mut Decoder,
    sink: &mut dyn Write,
    cfg: &EncoderConfig,
    effects: EffectChain,
    quality: ResampleQuality,
    info: &StreamInfo,
    progress: &mut dyn FnMut(Progress),
) -> Result<Outcome> {
    let mut encoder: Box<dyn Encoder> = new_encoder(cfg)?;
    let spec = cfg.spec;
    // Blocks in flight: bounded, so a slow encoder holds the decoder back.
    let (tx, rx) = mpsc::sync_channel::<Result<(u64, PcmBuffer)>>(16);
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut conv = Converter::new(spec, effects, quality);
            let mut drained = PcmBuffer::new(spec);
            let r = (|| -> Result<()> {
                while let Some(block) = dec.next_block()? {
                    let n = block.frames() as u64;
                    drained.reset(spec);
                    let converted = conv.process(block, &mut drained)?;
                    let mut out = std::mem::replace(&mut drained, PcmBuffer::new(spec));
                    out.extend_from(converted);
                    if tx.send(Ok((n, out))).is_err() {
                        return Ok(());
                    }
                }
                let tail = conv.flush()?.clone();
                let _ = tx.send(Ok((0, tail)));
                Ok(())
            })();
            if let Err(e) = r {
                let _ = tx.send(Err(e));
            }
        });
        let mut buf = BytesMut::with_capacity(256 << 10);
        let mut written = 0u64;
        let mut frames = 0u64;
        for item in rx {
            let (n, pcm) = item?;
            frames += n;
            if !pcm.is_empty() {
                encoder.encode(&pcm, &mut buf)?;
            }
            if buf.len() >= 64 << 10 {
                sink.write_all(&buf)?;
                written += buf.len() as u64;
                buf.clear();
            }
            progress(Progress {
                frames_done: frames,
                frames_total: info.total_frames,
                sample_rate: info.sample_rate,
                bytes_written: written + buf.len() as u64,
            });
        }
        encoder.finish(&mut buf)?;
        sink.write_all(&buf)?;
        written += buf.len() as u64;
        Ok(Outcome {
            frames_decoded: frames,
            bytes_written: written,
            patch: encoder.header_patch(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::AudioSpec;

    /// A deterministic music-like test signal: two tones and a pseudo-random noise floor.
    fn signal(spec: AudioSpec, frames: usize) -> PcmBuffer {
        let mut seed = 0x1234_5678u32;
        let planes = (0..usize::from(spec.channels))
            .map(|ch| {
                (0..frames)
                    .map(|i| {
                        seed ^= seed << 13;
                        seed ^= seed >> 17;
                        seed ^= seed << 5;
                        let noise = (seed as f32 / u32::MAX as f32 - 0.5) * 0.1;
                        let t = i as f32 / 44_100.0;
                        let f = 220.0 * (1 + ch) as f32;
                        0.3 * (std::f32::consts::TAU * f * t).sin()
                            + 0.2 * (std::f32::consts::TAU * 3.3 * f * t).sin()
                            + noise
                    })
                    .collect()
            })
            .collect();
        PcmBuffer::from_planes(spec, planes)
    }

    /// Rebuilding LAME's own info frame from the frames of a one-encoder stream gives LAME's
    /// bytes: frame count, byte count, table of contents, padding, music length and both CRCs
    /// are computed as LAME computes them.
    #[test]
    fn info_frame_rebuild_matches_lame() {
        for rc in [
            crate::RateControl::Cbr(crate::Bitrate::kbps(128)),
            crate::RateControl::Vbr(5.0),
        ] {
            let spec = AudioSpec::new(44_100, 2).unwrap();
            let mut cfg = EncoderConfig::new(OutputFormat::Mp3, spec).with_rate_control(rc);
            cfg.seekable_output = true;
            cfg.tags.title = Some("t".into());
            let pcm = signal(spec, 44_100 * 3 + 517);
            let mut enc = new_encoder(&cfg).unwrap();
            let mut out = BytesMut::new();
            enc.encode(&pcm, &mut out).unwrap();
            enc.finish(&mut out).unwrap();
            let patch = enc.header_patch().unwrap();
            let chunk = parse_chunk(Kind::Mp3, 0, 0, out.to_vec(), Some(patch.clone())).unwrap();
            assert!(chunk.frames.len() > 100);
            let mut table = mp3::SeekTable::new();
            let mut crc = 0;
            let mut bytes = 0;
            for f in &chunk.frames {
                table.add(f.kbps);
                crc = mp3::crc16_update(crc, &chunk.data[f.start..f.start + f.len]);
                bytes += f.len as u64;
            }
            let totals = mp3::StreamTotals {
                table: &table,
                audio_bytes: bytes,
                music_crc: crc,
                samples: pcm.frames() as u64,
                frame_len: 1152,
            };
            let rebuilt = mp3::rebuild_info_frame(&patch.bytes, &totals).unwrap();
            assert_eq!(rebuilt, patch.bytes, "{rc:?}");
        }
    }
}
