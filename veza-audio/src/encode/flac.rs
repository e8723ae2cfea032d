//! FLAC encoder: flacenc, driven one frame at a time so memory stays constant.
//!
//! flacenc's whole-stream API keeps every encoded frame in memory until the end (337 MB for a
//! 240 s track); here each block of [`BLOCK_SIZE`] frames is encoded and written out at once,
//! and only the STREAMINFO figures (frame sizes, sample count, MD5) are carried along.
//!
//! Stereo decorrelation is decided here, not by flacenc: flacenc encodes all four candidate
//! channels (left, right, mid, side) of every stereo frame and keeps the best pair, which
//! doubles the work. Like the reference encoder and ffmpeg, this encoder first estimates the
//! cost of each candidate from the sum of its second-order fixed-predictor residuals, then has
//! flacenc encode only the two chosen channels (each as a one-channel frame, whose subframe is
//! moved into the stereo frame). flacenc has no option for this, hence the code here.
//!
//! Output: `fLaC`, a STREAMINFO block with total samples 0 and MD5 zero while streaming (both
//! mean "unknown" and are legal), a VORBIS_COMMENT block with a vendor string and the tags,
//! then the frames. After [`Encoder::finish`], [`Encoder::header_patch`] gives the complete
//! STREAMINFO block (at byte offset 4) for outputs that can be rewritten.
//!
//! flacenc is used without its `par` feature. With [`EncoderConfig::flac_threads`] at 1 (the
//! default) nothing here starts a thread; above 1, batches of blocks are encoded on scoped
//! threads (see [`FlacEncoder`]).

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;
use flacenc::bitsink::MemSink;
use flacenc::component::{
    BitRepr, ChannelAssignment, Frame, FrameHeader, FrameOffset, StreamInfo, SubFrame, Verbatim,
};
use flacenc::config;
use flacenc::error::{Verified, Verify};
use flacenc::source::{Context, Fill, FrameBuf};

use crate::encode::{Encoder, EncoderConfig, HeaderPatch, check_spec};
use crate::error::{AudioError, Result};
use crate::format::{AudioSpec, OutputFormat};
use crate::metadata::Tags;
use crate::pcm::PcmBuffer;

/// Frames per FLAC frame (block), the reference encoder's size for levels 3 and up.
pub const BLOCK_SIZE: usize = 4096;
/// Blocks each thread encodes per batch when [`EncoderConfig::flac_threads`] is above 1: enough
/// that a thread started late (on a busy machine) still finds work, few enough to keep memory
/// small (a batch of 2 threads holds 32 blocks, 1 MiB of samples at 2 channels, about 3 s of
/// 44.1 kHz audio). With 8, a loaded 2-core machine ran 2 threads no faster than 1.
const BLOCKS_PER_THREAD: usize = 16;
/// Most threads used, whatever is asked.
const MAX_THREADS: usize = 64;
/// Longest tag value written (longer ones are cut at a character boundary), so the
/// VORBIS_COMMENT block always fits FLAC's 24-bit block length.
const MAX_TAG_BYTES: usize = 64 * 1024;
/// Length of a STREAMINFO block body.
const STREAMINFO_LEN: usize = 34;
/// The vendor string of the VORBIS_COMMENT block.
const VENDOR: &str = concat!("veza-audio ", env!("CARGO_PKG_VERSION"), " (flacenc 0.5)");

/// FLAC encoder (16- or 24-bit, 1 to 8 channels, block size 4096).
///
/// Compression levels map to settings as follows (the block size is always 4096; flacenc's
/// LPC order is a fixed order, not a search limit). The stereo mode of each frame is the
/// cheapest allowed one by an estimate made before encoding (see the module docs); only the
/// two channels of that mode are encoded.
///
/// | level | stereo decorrelation          | prediction                                        |
/// |-------|-------------------------------|---------------------------------------------------|
/// | 0     | independent channels          | fixed predictors only                             |
/// | 1     | independent or mid/side       | fixed predictors only                             |
/// | 2     | best of all four modes        | fixed predictors only                             |
/// | 3     | independent channels          | LPC of order 6                                    |
/// | 4     | independent or mid/side       | LPC of order 8                                    |
/// | 5     | best of all four modes        | LPC of order 10 (flacenc's default)               |
/// | 6     | best of all four modes        | LPC of order 12                                   |
/// | 7, 8  | best of all four modes        | fixed, or LPC order 12; fixed order chosen by exact bit count |
///
/// At levels 3 to 6 flacenc's fixed predictors are not tried: on music that made encoding
/// about 23 % faster and the output 0.003 % to 0.16 % larger (LPC almost always wins; a
/// constant block is still stored as such, and nothing is stored larger than verbatim).
/// flacenc has no further search to enable, so level 8 equals level 7. LPC orders stay at 12
/// or below, inside FLAC's streamable subset.
///
/// # Threads
///
/// With [`EncoderConfig::flac_threads`] above 1, full blocks are gathered into batches of
/// `16 x threads` blocks, and each batch is encoded on that many scoped threads (the caller's
/// thread is one of them, and also computes the MD5) before [`Encoder::encode`] returns; the
/// frames are written in order. The output bytes are the same whatever the thread count, but
/// they come out a batch at a time instead of a block at a time.
pub struct FlacEncoder {
    spec: AudioSpec,
    bits: u32,
    coder: FrameCoder,
    /// One scratch per thread.
    scratch: Vec<Scratch>,
    /// Running MD5 of the samples.
    context: Context,
    /// Integer samples of the blocks being gathered, one vector per channel (capacity one
    /// batch each).
    pending: Vec<Vec<i32>>,
    /// Blocks per batch (1 when single-threaded).
    batch_blocks: usize,
    /// Little-endian bytes of `pending`, for the MD5 (reused).
    md5_bytes: Vec<u8>,
    /// Encoded frames of the batch, in order (reused).
    frames_out: Vec<Vec<u8>>,
    /// Blocks encoded so far (the next frame number).
    blocks_done: usize,
    /// `fLaC`, STREAMINFO (streaming form) and VORBIS_COMMENT.
    header: Vec<u8>,
    header_written: bool,
    min_frame_bytes: usize,
    max_frame_bytes: usize,
    frames_in: u64,
    finished: bool,
}

impl fmt::Debug for FlacEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlacEncoder")
            .field("spec", &self.spec)
            .field("bits", &self.bits)
            .field("threads", &self.scratch.len())
            .field("frames_in", &self.frames_in)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// Stereo decorrelation modes a level may use (independent channels always are).
#[derive(Debug, Clone, Copy)]
struct StereoModes {
    /// Left/side and right/side.
    side: bool,
    /// Mid/side.
    mid_side: bool,
}

/// flacenc settings and stereo modes for a compression level (see [`FlacEncoder`]).
fn level_config(level: u8) -> Result<(config::Encoder, StereoModes)> {
    if level > 8 {
        return Err(AudioError::config(format!(
            "FLAC level must be 0 to 8, not {level}"
        )));
    }
    let mut c = config::Encoder::default();
    c.block_size = BLOCK_SIZE;
    c.multithread = false;
    let modes = match level {
        0 | 3 => StereoModes {
            side: false,
            mid_side: false,
        },
        1 | 4 => StereoModes {
            side: false,
            mid_side: true,
        },
        _ => StereoModes {
            side: true,
            mid_side: true,
        },
    };
    match level {
        0..=2 => c.subframe_coding.use_lpc = false,
        3..=6 => {
            c.subframe_coding.use_fixed = false;
            c.subframe_coding.qlpc.lpc_order = match level {
                3 => 6,
                4 => 8,
                5 => 10,
                _ => 12,
            };
        }
        _ => {
            c.subframe_coding.qlpc.lpc_order = 12;
            c.subframe_coding.fixed.order_sel = config::OrderSel::BitCount;
        }
    }
    Ok((c, modes))
}

/// Appends `src` converted as [`crate::pcm::f32_to_int`] does, in f32 arithmetic, cheaper
/// than its f64 (the conversion took 5.3 % of the encoding time with it, 4.3 % with this).
/// The results are the same for depths up to 24 bits: scaling by a power of two is exact in
/// f32, so rounding the product rounds the same value, and both clamping bounds are exact f32
/// values.
fn extend_as_ints(dst: &mut Vec<i32>, src: &[f32], bits: u32) {
    debug_assert!(bits <= 24);
    let scale = (1u32 << (bits - 1)) as f32;
    dst.extend(
        src.iter()
            .map(|&s| (s * scale).round().clamp(-scale, scale - 1.0) as i32),
    );
}

fn flac_err(e: impl fmt::Display) -> AudioError {
    AudioError::encoder("flac", e)
}

/// What encoding one block needs, shared read-only by the threads.
///
/// Every channel is encoded by flacenc as a one-channel frame, whose subframe is then put into
/// the frame of all channels: this is what flacenc does inside for independent channels, and it
/// lets stereo frames encode only the chosen pair.
struct FrameCoder {
    config: Verified<config::Encoder>,
    /// The stream's STREAMINFO.
    stream_info: StreamInfo,
    /// One-channel STREAMINFOs at the stream's depth and one bit deeper (side channels).
    mono_info: StreamInfo,
    side_info: StreamInfo,
    modes: StereoModes,
    channels: usize,
    bits: usize,
    rate: usize,
}

/// Buffers one thread reuses from block to block.
struct Scratch {
    /// Input of flacenc: one channel of the block.
    framebuf: FrameBuf,
    /// Mid and side channels of a stereo block, when chosen.
    derived: [Vec<i32>; 2],
    sink: MemSink<u8>,
}

impl Scratch {
    fn new(channels: usize, bits: usize) -> Result<Self> {
        let stereo_len = if channels == 2 { BLOCK_SIZE } else { 0 };
        Ok(Scratch {
            framebuf: FrameBuf::with_size(1, BLOCK_SIZE).map_err(flac_err)?,
            derived: [
                Vec::with_capacity(stereo_len),
                Vec::with_capacity(stereo_len),
            ],
            sink: MemSink::with_capacity(BLOCK_SIZE * channels * (bits + 1) + 1024),
        })
    }
}

/// Estimated bits of `n` residuals whose absolute values sum to `abs_sum`, coded with the best
/// single Rice parameter (the residuals are folded to unsigned, about doubling each).
fn rice_bits_estimate(abs_sum: u64, n: u64) -> u64 {
    let folded = abs_sum.saturating_mul(2);
    (0..31)
        .map(|k| n * (k + 1) + (folded >> k))
        .min()
        .unwrap_or(u64::MAX)
}

/// The stereo mode whose two channels the cheapest to code, estimated from the sums of the
/// absolute second-order fixed-predictor residuals of left, right, mid and side (the estimate
/// the reference encoder and ffmpeg make).
fn choose_stereo(left: &[i32], right: &[i32], modes: StereoModes) -> ChannelAssignment {
    let n = left.len().min(right.len());
    if n < 3 || !(modes.side || modes.mid_side) {
        return ChannelAssignment::Independent(2);
    }
    // Samples are at most 24 bits and side 25, so second differences fit 27 bits; the sums
    // of a block (4096 values) fit 40.
    let (mut sl, mut sr, mut sm, mut ss) = (0u64, 0u64, 0u64, 0u64);
    let (mut l1, mut l2) = (left[1], left[0]);
    let (mut r1, mut r2) = (right[1], right[0]);
    for (&l, &r) in left[2..n].iter().zip(&right[2..n]) {
        let el = l - 2 * l1 + l2;
        let er = r - 2 * r1 + r2;
        // Mid is (l + r) >> 1; its residual follows from the same sums (up to the rounding
        // of the shift, which the estimate can ignore).
        let em = (el + er) >> 1;
        let es = el - er;
        sl += u64::from(el.unsigned_abs());
        sr += u64::from(er.unsigned_abs());
        sm += u64::from(em.unsigned_abs());
        ss += u64::from(es.unsigned_abs());
        (l2, l1) = (l1, l);
        (r2, r1) = (r1, r);
    }
    let n = (n - 2) as u64;
    let [bl, br, bm, bs] = [sl, sr, sm, ss].map(|s| rice_bits_estimate(s, n));
    let mut best = (bl + br, ChannelAssignment::Independent(2));
    let candidates = [
        (modes.side, bl + bs, ChannelAssignment::LeftSide),
        (modes.side, br + bs, ChannelAssignment::RightSide),
        (modes.mid_side, bm + bs, ChannelAssignment::MidSide),
    ];
    for (allowed, bits, mode) in candidates {
        if allowed && bits < best.0 {
            best = (bits, mode);
        }
    }
    best.1
}

impl FrameCoder {
    /// Encodes frames `range` of `planes` (at most [`BLOCK_SIZE`]) as frame `number`, and
    /// returns the frame's bytes (in `scratch.sink`).
    fn encode_block<'s>(
        &self,
        scratch: &'s mut Scratch,
        planes: &[Vec<i32>],
        range: std::ops::Range<usize>,
        number: usize,
    ) -> Result<&'s [u8]> {
        let frame_number = u32::try_from(number).map_err(flac_err)?;
        let frames = range.len();
        let frame = if let [left, right] = planes {
            let (left, right) = (&left[range.clone()], &right[range]);
            let (mode, first, second) = self.stereo_pair(&mut scratch.derived, left, right);
            let a = self.encode_channel(&mut scratch.framebuf, first.0, first.1, number)?;
            let b = self.encode_channel(&mut scratch.framebuf, second.0, second.1, number)?;
            let header = self.header(frames, mode, frame_number)?;
            Frame::new(header, [a, b].into_iter()).map_err(flac_err)?
        } else {
            let subframes = planes
                .iter()
                .map(|p| {
                    self.encode_channel(&mut scratch.framebuf, &p[range.clone()], false, number)
                })
                .collect::<Result<Vec<_>>>()?;
            let header = self.header(
                frames,
                ChannelAssignment::Independent(self.channels as u8),
                frame_number,
            )?;
            Frame::new(header, subframes.into_iter()).map_err(flac_err)?
        };
        scratch.sink.clear();
        frame.write(&mut scratch.sink).map_err(flac_err)?;
        Ok(scratch.sink.as_slice())
    }

    fn header(
        &self,
        frames: usize,
        mode: ChannelAssignment,
        frame_number: u32,
    ) -> Result<FrameHeader> {
        FrameHeader::new(
            frames,
            mode,
            self.bits,
            self.rate,
            FrameOffset::Frame(frame_number),
        )
        .map_err(flac_err)
    }

    /// Chooses the stereo mode of a block and computes its channels: the mode, then each of
    /// the two channels in frame order with whether it is a side channel (one bit deeper).
    #[allow(clippy::type_complexity)]
    fn stereo_pair<'a>(
        &self,
        derived: &'a mut [Vec<i32>; 2],
        left: &'a [i32],
        right: &'a [i32],
    ) -> (ChannelAssignment, (&'a [i32], bool), (&'a [i32], bool)) {
        let mode = choose_stereo(left, right, self.modes);
        let [mid, side] = derived;
        if !matches!(mode, ChannelAssignment::Independent(_)) {
            side.clear();
            side.extend(left.iter().zip(right).map(|(l, r)| l - r));
        }
        if matches!(mode, ChannelAssignment::MidSide) {
            mid.clear();
            mid.extend(left.iter().zip(right).map(|(l, r)| (l + r) >> 1));
        }
        let (mid, side): (&'a [i32], &'a [i32]) = (mid, side);
        let (first, second) = match mode {
            ChannelAssignment::LeftSide => ((left, false), (side, true)),
            ChannelAssignment::RightSide => ((side, true), (right, false)),
            ChannelAssignment::MidSide => ((mid, false), (side, true)),
            ChannelAssignment::Independent(_) => ((left, false), (right, false)),
        };
        (mode, first, second)
    }

    /// Encodes one channel as a one-channel frame and returns its subframe.
    ///
    /// flacenc's Rice parameters stop at 14, and on loud noise (24-bit samples above about
    /// 2^18) its choice can come out far larger than the samples stored as they are (one
    /// 4096-sample subframe of 33 MB was seen); such a subframe is replaced by a verbatim one.
    fn encode_channel(
        &self,
        framebuf: &mut FrameBuf,
        samples: &[i32],
        side: bool,
        number: usize,
    ) -> Result<SubFrame> {
        framebuf.fill_interleaved(samples).map_err(flac_err)?;
        let info = if side {
            &self.side_info
        } else {
            &self.mono_info
        };
        let frame = flacenc::encode_fixed_size_frame(&self.config, framebuf, number, info)
            .map_err(flac_err)?;
        let (_, subframes) = frame.into_parts();
        let subframe = subframes
            .into_iter()
            .next()
            .ok_or_else(|| flac_err("flacenc returned a frame without a subframe"))?;
        let bits = info.bits_per_sample();
        // A verbatim subframe: 8 header bits and the samples.
        if subframe.count_bits() > 8 + samples.len() * bits {
            return Ok(Verbatim::new(samples, bits).map_err(flac_err)?.into());
        }
        Ok(subframe)
    }
}

impl FlacEncoder {
    /// Makes the encoder for `config.spec` at `config.bits_per_sample` (16 or 24),
    /// `config.flac_level` and `config.flac_threads`, with `config.tags` in a VORBIS_COMMENT
    /// block. Buffers for one batch of blocks are allocated here and reused.
    ///
    /// # Errors
    /// [`AudioError::InvalidConfig`] for a level above 8, other bit depths, more than 8
    /// channels, or a sample rate FLAC cannot store (above 655,350 Hz).
    pub fn new(config: &EncoderConfig) -> Result<Self> {
        let spec = config.spec;
        let bits = config.bits_per_sample;
        if bits != 16 && bits != 24 {
            return Err(AudioError::config(format!(
                "FLAC bits per sample must be 16 or 24, not {bits}"
            )));
        }
        let channels = usize::from(spec.channels);
        if !(1..=8).contains(&channels) {
            return Err(AudioError::config(format!(
                "FLAC supports 1 to 8 channels, not {channels}"
            )));
        }
        let (flac_config, modes) = level_config(config.flac_level)?;
        let flac_config = flac_config
            .into_verified()
            .map_err(|(_, e)| AudioError::config(format!("FLAC settings: {e}")))?;
        let rate = spec.sample_rate.hz() as usize;
        let info = |channels: usize, bits: usize| {
            StreamInfo::new(rate, channels, bits).map_err(|e| {
                AudioError::config(format!("FLAC cannot store {}: {e}", spec.sample_rate))
            })
        };
        let stream_info = info(channels, usize::from(bits))?;
        let coder = FrameCoder {
            config: flac_config,
            mono_info: info(1, usize::from(bits))?,
            side_info: info(1, usize::from(bits) + 1)?,
            stream_info,
            modes,
            channels,
            bits: usize::from(bits),
            rate,
        };
        let threads = match config.flac_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
        .min(MAX_THREADS);
        let batch_blocks = if threads > 1 {
            threads * BLOCKS_PER_THREAD
        } else {
            1
        };
        let scratch = (0..threads)
            .map(|_| Scratch::new(channels, usize::from(bits)))
            .collect::<Result<Vec<_>>>()?;
        let batch_samples = BLOCK_SIZE * channels * batch_blocks;
        let width = usize::from(bits / 8);

        let mut enc = FlacEncoder {
            spec,
            bits: u32::from(bits),
            coder,
            scratch,
            context: Context::new(usize::from(bits), channels),
            pending: (0..channels)
                .map(|_| Vec::with_capacity(BLOCK_SIZE * batch_blocks))
                .collect(),
            batch_blocks,
            md5_bytes: Vec::with_capacity(batch_samples * width),
            frames_out: Vec::new(),
            blocks_done: 0,
            header: Vec::new(),
            header_written: false,
            min_frame_bytes: 0,
            max_frame_bytes: 0,
            frames_in: 0,
            finished: false,
        };
        let mut header = b"fLaC".to_vec();
        header.extend_from_slice(&streaminfo_block(&enc.stream_info_now(false)?)?);
        push_vorbis_comment(&mut header, &config.tags);
        enc.header = header;
        Ok(enc)
    }

    /// STREAMINFO with what is known so far; `complete` puts in the final frame sizes, sample
    /// count and MD5, otherwise they are left unknown (0).
    fn stream_info_now(&self, complete: bool) -> Result<StreamInfo> {
        let mut info = self.coder.stream_info.clone();
        info.set_block_sizes(BLOCK_SIZE, BLOCK_SIZE)
            .map_err(flac_err)?;
        if complete {
            info.set_frame_sizes(self.min_frame_bytes, self.max_frame_bytes)
                .map_err(flac_err)?;
            // 36 bits hold the sample count; past that (13 days at 48 kHz) it stays unknown.
            let total = if self.frames_in < (1 << 36) {
                self.frames_in
            } else {
                0
            };
            info.set_total_samples(usize::try_from(total).unwrap_or(0));
            info.set_md5_digest(&self.context.md5_digest());
        } else {
            info.set_frame_sizes(0, 0).map_err(flac_err)?;
        }
        Ok(info)
    }

    fn write_header_once(&mut self, out: &mut BytesMut) {
        if !self.header_written {
            out.extend_from_slice(&self.header);
            self.header_written = true;
        }
    }

    /// Adds the samples of `planes` to the MD5 (which covers the interleaved samples as
    /// little-endian integers of the output's width).
    fn update_md5(context: &mut Context, md5_bytes: &mut Vec<u8>, planes: &[Vec<i32>], bits: u32) {
        fn interleave<const W: usize>(out: &mut [u8], planes: &[Vec<i32>]) {
            let channels = planes.len();
            for (c, plane) in planes.iter().enumerate() {
                let slots = out[c * W..].chunks_mut(channels * W);
                for (slot, v) in slots.zip(plane) {
                    slot[..W].copy_from_slice(&v.to_le_bytes()[..W]);
                }
            }
        }
        let width = (bits / 8) as usize;
        let frames = planes.first().map_or(0, Vec::len);
        md5_bytes.clear();
        md5_bytes.resize(frames * planes.len() * width, 0);
        if width == 2 {
            interleave::<2>(md5_bytes, planes);
        } else {
            interleave::<3>(md5_bytes, planes);
        }
        // Filling a Context never fails (it only hashes and counts).
        let _ = context.fill_le_bytes(md5_bytes, width);
    }

    fn note_frame(&mut self, n: usize) {
        self.min_frame_bytes = if self.min_frame_bytes == 0 {
            n
        } else {
            self.min_frame_bytes.min(n)
        };
        self.max_frame_bytes = self.max_frame_bytes.max(n);
    }

    /// Encodes the gathered blocks (the last one may be shorter) as frames and appends them.
    fn flush_blocks(&mut self, out: &mut BytesMut) -> Result<()> {
        let frames = self.pending.first().map_or(0, Vec::len);
        if frames == 0 {
            return Ok(());
        }
        let blocks = frames.div_ceil(BLOCK_SIZE);
        if self.scratch.len() <= 1 || blocks == 1 {
            Self::update_md5(
                &mut self.context,
                &mut self.md5_bytes,
                &self.pending,
                self.bits,
            );
            for i in 0..blocks {
                let range = i * BLOCK_SIZE..frames.min((i + 1) * BLOCK_SIZE);
                let bytes = self.coder.encode_block(
                    &mut self.scratch[0],
                    &self.pending,
                    range,
                    self.blocks_done + i,
                )?;
                out.extend_from_slice(bytes);
                let n = bytes.len();
                self.note_frame(n);
            }
        } else {
            self.encode_parallel(blocks)?;
            for i in 0..blocks {
                let n = self.frames_out[i].len();
                out.extend_from_slice(&self.frames_out[i]);
                self.note_frame(n);
            }
        }
        self.blocks_done += blocks;
        for p in &mut self.pending {
            p.clear();
        }
        Ok(())
    }

    /// Encodes the `blocks` blocks of `pending` into `frames_out` on the scratches' threads;
    /// the caller's thread also computes the MD5 first. Each thread takes the next block not
    /// taken, so the work stays balanced.
    fn encode_parallel(&mut self, blocks: usize) -> Result<()> {
        if self.frames_out.len() < blocks {
            self.frames_out.resize_with(blocks, Vec::new);
        }
        let slots: Vec<Mutex<&mut Vec<u8>>> = self.frames_out[..blocks]
            .iter_mut()
            .map(Mutex::new)
            .collect();
        let next = AtomicUsize::new(0);
        let pending = &self.pending;
        let frames = pending.first().map_or(0, Vec::len);
        let coder = &self.coder;
        let first = self.blocks_done;
        let work = |scratch: &mut Scratch| -> Result<()> {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= blocks {
                    return Ok(());
                }
                let range = i * BLOCK_SIZE..frames.min((i + 1) * BLOCK_SIZE);
                let bytes = coder.encode_block(scratch, pending, range, first + i)?;
                let mut slot = slots[i]
                    .lock()
                    .map_err(|_| flac_err("a FLAC encoding thread failed"))?;
                slot.clear();
                slot.extend_from_slice(bytes);
            }
        };
        let (mine, others) = self
            .scratch
            .split_first_mut()
            .ok_or_else(|| flac_err("no scratch buffers"))?;
        let context = &mut self.context;
        let md5_bytes = &mut self.md5_bytes;
        let bits = self.bits;
        std::thread::scope(|s| {
            let handles: Vec<_> = others
                .iter_mut()
                .map(|scratch| s.spawn(|| work(scratch)))
                .collect();
            Self::update_md5(context, md5_bytes, pending, bits);
            let mut result = work(mine);
            for h in handles {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err(flac_err("a FLAC encoding thread panicked")));
                if result.is_ok() {
                    result = r;
                }
            }
            result
        })
    }
}

impl Encoder for FlacEncoder {
    fn format(&self) -> OutputFormat {
        OutputFormat::Flac
    }

    fn spec(&self) -> AudioSpec {
        self.spec
    }

    /// Converts to integers, and encodes and appends every completed 4096-frame block (with
    /// several threads: every completed batch of blocks).
    /// Allocates only to grow `out` (and what flacenc allocates per frame).
    fn encode(&mut self, pcm: &PcmBuffer, out: &mut BytesMut) -> Result<()> {
        if self.finished {
            return Err(AudioError::InvalidState("encode after finish"));
        }
        check_spec(self.spec, pcm)?;
        self.write_header_once(out);
        let planes = pcm.planes();
        // The shortest plane bounds the frames (planes_mut lets a caller break equal lengths).
        let frames = planes.iter().map(Vec::len).min().unwrap_or(0);
        let batch_frames = BLOCK_SIZE * self.batch_blocks;
        let bits = self.bits;
        let mut i = 0;
        while i < frames {
            let gathered = self.pending.first().map_or(0, Vec::len);
            let end = frames.min(i + batch_frames - gathered);
            for (dst, src) in self.pending.iter_mut().zip(planes) {
                extend_as_ints(dst, &src[i..end], bits);
            }
            let full = gathered + (end - i) == batch_frames;
            i = end;
            if full {
                self.flush_blocks(out)?;
            }
        }
        self.frames_in += frames as u64;
        Ok(())
    }

    /// Encodes the blocks still gathered, the last one shorter.
    fn finish(&mut self, out: &mut BytesMut) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.write_header_once(out);
        self.flush_blocks(out)?;
        self.finished = true;
        Ok(())
    }

    /// The complete STREAMINFO block (header and body, 38 bytes) at offset 4.
    fn header_patch(&self) -> Option<HeaderPatch> {
        if !self.finished {
            return None;
        }
        let info = self.stream_info_now(true).ok()?;
        let bytes = streaminfo_block(&info).ok()?;
        Some(HeaderPatch { offset: 4, bytes })
    }

    fn frames_in(&self) -> u64 {
        self.frames_in
    }
}

/// The STREAMINFO metadata block: 4-byte block header (type 0, not last) and 34-byte body.
fn streaminfo_block(info: &StreamInfo) -> Result<Vec<u8>> {
    let mut sink = MemSink::<u8>::with_capacity(STREAMINFO_LEN * 8);
    info.write(&mut sink).map_err(flac_err)?;
    let body = sink.as_slice();
    if body.len() != STREAMINFO_LEN {
        return Err(AudioError::encoder("flac", "STREAMINFO is not 34 bytes"));
    }
    let mut block = vec![0u8, 0, 0, STREAMINFO_LEN as u8];
    block.extend_from_slice(body);
    Ok(block)
}

/// Cuts `s` to at most `max` bytes at a character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Appends the VORBIS_COMMENT block (the last metadata block) with the vendor and `tags`.
fn push_vorbis_comment(out: &mut Vec<u8>, tags: &Tags) {
    let mut body = Vec::new();
    body.extend_from_slice(&(VENDOR.len() as u32).to_le_bytes());
    body.extend_from_slice(VENDOR.as_bytes());
    body.extend_from_slice(&(tags.pairs().count() as u32).to_le_bytes());
    for (key, value) in tags.pairs() {
        let value = truncate_utf8(value, MAX_TAG_BYTES);
        body.extend_from_slice(&((key.len() + 1 + value.len()) as u32).to_le_bytes());
        body.extend_from_slice(key.as_bytes());
        body.push(b'=');
        body.extend_from_slice(value.as_bytes());
    }
    // 8 tags of at most 64 KiB each: far below the 24-bit block length.
    let len = body.len() as u32;
    out.push(0x80 | 4); // last metadata block, type VORBIS_COMMENT
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::testutil::{
        apply_patch, assert_sine, decode, encode_in_blocks, ffprobe, sine,
    };
    use crate::pcm::f32_to_int;

    fn config(rate: u32, channels: u16, bits: u8, level: u8) -> EncoderConfig {
        let mut c = EncoderConfig::new(OutputFormat::Flac, AudioSpec::new(rate, channels).unwrap());
        c.bits_per_sample = bits;
        c.flac_level = level;
        c
    }

    fn round_trip(cfg: &EncoderConfig, secs: f64) -> Vec<u8> {
        let pcm = sine(cfg.spec, secs);
        let mut enc = FlacEncoder::new(cfg).unwrap();
        let mut bytes = encode_in_blocks(&mut enc, &pcm, 1500).to_vec();
        assert_eq!(enc.frames_in(), pcm.frames() as u64);
        let rate = cfg.spec.sample_rate.hz();
        let channels = usize::from(cfg.spec.channels);

        // The streaming form decodes too (symphonia and ffprobe).
        assert_eq!(decode(&bytes, "flac").frames(), pcm.frames());
        let probe = ffprobe(&bytes, "flac");
        assert_eq!(probe.codec_name, "flac");

        let patch = enc.header_patch().unwrap();
        assert_eq!(patch.offset, 4);
        apply_patch(&mut bytes, &patch);
        let probe = ffprobe(&bytes, "flac");
        assert_eq!(probe.codec_name, "flac");
        assert_eq!(probe.sample_rate, rate);
        assert_eq!(probe.channels, channels);
        assert!(
            (probe.duration.unwrap() - secs).abs() < 0.001,
            "ffprobe duration {:?}",
            probe.duration
        );

        let dec = decode(&bytes, "flac");
        assert_eq!(dec.rate, rate);
        assert_eq!(dec.channels, channels);
        assert_eq!(dec.frames(), pcm.frames());
        for (plane, orig) in dec.planes.iter().zip(pcm.planes()) {
            assert_sine(plane, rate);
            // Lossless: each sample is the quantised input.
            for (a, b) in plane.iter().zip(orig) {
                let q = f32_to_int(*b, u32::from(cfg.bits_per_sample));
                let d = f32_to_int(*a, u32::from(cfg.bits_per_sample));
                assert_eq!(q, d);
            }
        }
        bytes
    }

    #[test]
    fn stereo_16_bit_44k1_with_tags_and_md5() {
        let tags = Tags {
            title: Some("Sine".into()),
            artist: Some("Veza".into()),
            track: Some("3/12".into()),
            ..Tags::default()
        };
        let cfg = config(44_100, 2, 16, 5).with_tags(tags);
        let bytes = round_trip(&cfg, 2.5);
        // The patched MD5 is that of the decoded samples (ffmpeg's md5 muxer hashes them as
        // interleaved s16le, exactly what FLAC's MD5 covers at 16 bits).
        let path = std::env::temp_dir().join(format!("veza-flac-md5-{}.flac", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let out = std::process::Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(&path)
            .args(["-f", "md5", "-"])
            .output()
            .expect("ffmpeg runs (install ffmpeg)");
        let _ = std::fs::remove_file(&path);
        let text = String::from_utf8(out.stdout).unwrap();
        let md5: String = bytes[4 + 4 + 18..4 + 4 + 34]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(text.trim(), format!("MD5={md5}"));
        assert!(bytes.windows(10).any(|w| w == b"TITLE=Sine"));
    }

    #[test]
    fn mono_24_bit_48k_level_8() {
        round_trip(&config(48_000, 1, 24, 8), 2.0);
    }

    #[test]
    fn every_level_decodes() {
        for level in 0..=8 {
            round_trip(&config(44_100, 2, 16, level), 1.1);
        }
    }

    #[test]
    fn six_channels() {
        round_trip(&config(48_000, 6, 16, 5), 1.2);
    }

    #[test]
    fn tiny_last_block_and_constant_buffers() {
        let cfg = config(44_100, 2, 16, 5);
        let full = sine(cfg.spec, 1.0);
        let planes = full
            .planes()
            .iter()
            .map(|p| p[..BLOCK_SIZE + 5].to_vec())
            .collect();
        let pcm = PcmBuffer::from_planes(cfg.spec, planes);
        let mut enc = FlacEncoder::new(&cfg).unwrap();
        let mut bytes = encode_in_blocks(&mut enc, &pcm, 7).to_vec();
        assert_eq!(enc.pending.len(), 2);
        assert!(enc.pending.iter().all(|p| p.capacity() == BLOCK_SIZE));
        apply_patch(&mut bytes, &enc.header_patch().unwrap());
        assert_eq!(decode(&bytes, "flac").frames(), BLOCK_SIZE + 5);
    }

    #[test]
    fn bad_settings_are_invalid_config() {
        for cfg in [
            config(44_100, 2, 16, 9),
            config(44_100, 2, 20, 5),
            config(44_100, 9, 16, 5),
        ] {
            let err = FlacEncoder::new(&cfg).unwrap_err();
            assert!(matches!(err, AudioError::InvalidConfig(_)), "{err}");
        }
    }

    #[test]
    fn block_splits_give_identical_bytes() {
        let cfg = config(44_100, 2, 16, 5);
        let pcm = sine(cfg.spec, 1.3);
        let a = encode_in_blocks(&mut FlacEncoder::new(&cfg).unwrap(), &pcm, 4096);
        let b = encode_in_blocks(&mut FlacEncoder::new(&cfg).unwrap(), &pcm, 333);
        let c = encode_in_blocks(&mut FlacEncoder::new(&cfg).unwrap(), &pcm, 100_000);
        assert_eq!(a, b);
        assert_eq!(a, c);
    }

    /// Deterministic white noise in [-amp, amp] (xorshift).
    fn noise(seed: &mut u64, amp: i32) -> i32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed % (2 * amp as u64 + 1)) as i32 - amp
    }

    /// One block of integer stereo samples (at most `bits`) built so that the given stereo
    /// mode is the cheapest: 8 = left/side, 9 = right/side, 10 = mid/side, 1 = independent
    /// (FLAC's channel assignment codes).
    fn stereo_block(mode: u8, frames: usize, bits: u32, seed: &mut u64) -> [Vec<i32>; 2] {
        // Amplitudes scaled to the depth: x is loud noise, n is quieter noise.
        let unit = 1 << (bits - 16);
        let (mut l, mut r) = (Vec::new(), Vec::new());
        for _ in 0..frames {
            let x = noise(seed, 1000 * unit);
            let n = noise(seed, 600 * unit);
            let (a, b) = match mode {
                8 => (x, x + n),
                9 => (x + n, x),
                10 => (x + n, x - n),
                // Two unrelated signals of unequal loudness: side costs more than either
                // channel, and mid plus side more than both.
                _ => (noise(seed, 3000 * unit), noise(seed, 1000 * unit)),
            };
            l.push(a);
            r.push(b);
        }
        [l, r]
    }

    fn pcm_from_ints(spec: AudioSpec, planes: &[Vec<i32>], bits: u32) -> PcmBuffer {
        let scale = (1u64 << (bits - 1)) as f32;
        let planes = planes
            .iter()
            .map(|p| p.iter().map(|&v| v as f32 / scale).collect())
            .collect();
        PcmBuffer::from_planes(spec, planes)
    }

    /// The samples ffmpeg decodes from `bytes` (s16le or s24le), interleaved.
    fn ffmpeg_decode_ints(bytes: &[u8], bits: u32) -> Vec<i32> {
        let path = std::env::temp_dir().join(format!(
            "veza-flac-exact-{}-{bits}.flac",
            std::process::id()
        ));
        std::fs::write(&path, bytes).unwrap();
        let fmt = if bits == 16 { "s16le" } else { "s24le" };
        let out = std::process::Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(&path)
            .args(["-f", fmt, "-"])
            .output()
            .expect("ffmpeg runs (install ffmpeg)");
        let _ = std::fs::remove_file(&path);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let width = (bits / 8) as usize;
        out.stdout
            .chunks_exact(width)
            .map(|c| {
                let mut b = [0u8; 4];
                b[4 - width..].copy_from_slice(c);
                i32::from_le_bytes(b) >> (32 - bits)
            })
            .collect()
    }

    /// Each stereo mode is chosen where it is the cheapest, and every frame decodes bit-exactly
    /// (symphonia and ffmpeg), at 16 and 24 bits, with a short last frame.
    #[test]
    fn stereo_modes_are_chosen_and_decode_bit_exactly() {
        for bits in [16u32, 24] {
            let cfg = config(44_100, 2, bits as u8, 5);
            let mut enc = FlacEncoder::new(&cfg).unwrap();
            let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
            let mut bytes = BytesMut::new();
            let mut all: [Vec<i32>; 2] = [Vec::new(), Vec::new()];
            let modes = [1u8, 8, 9, 10, 10, 8, 1, 9];
            for (k, &mode) in modes.iter().enumerate() {
                let frames = if k + 1 == modes.len() {
                    777
                } else {
                    BLOCK_SIZE
                };
                let block = stereo_block(mode, frames, bits, &mut seed);
                let pcm = pcm_from_ints(cfg.spec, &block, bits);
                let start = bytes.len();
                enc.encode(&pcm, &mut bytes).unwrap();
                if k + 1 == modes.len() {
                    enc.finish(&mut bytes).unwrap();
                }
                let header_len = if k == 0 { enc.header.len() } else { 0 };
                // One frame per block: its header's channel assignment (byte 3, high nibble).
                let frame = &bytes[start + header_len..];
                assert_eq!(&frame[..2], &[0xff, 0xf8], "{bits} bits, block {k}");
                let assignment = frame[3] >> 4;
                assert_eq!(assignment, mode, "{bits} bits, block {k}");
                for (a, b) in all.iter_mut().zip(block) {
                    a.extend(b);
                }
            }
            let mut bytes = bytes.to_vec();
            apply_patch(&mut bytes, &enc.header_patch().unwrap());

            let dec = decode(&bytes, "flac");
            assert_eq!(dec.frames(), all[0].len());
            for (plane, orig) in dec.planes.iter().zip(&all) {
                let got: Vec<i32> = plane.iter().map(|&v| f32_to_int(v, bits)).collect();
                assert!(got == *orig, "{bits} bits: symphonia's samples differ");
            }
            let interleaved: Vec<i32> = all[0]
                .iter()
                .zip(&all[1])
                .flat_map(|(&l, &r)| [l, r])
                .collect();
            assert!(
                ffmpeg_decode_ints(&bytes, bits) == interleaved,
                "{bits} bits: ffmpeg's samples differ"
            );
        }
    }

    /// A stereo signal in which every stereo mode occurs, `frames` long.
    fn mixed_stereo(spec: AudioSpec, frames: usize, bits: u32) -> PcmBuffer {
        let mut seed = 12345;
        let mut planes = [Vec::new(), Vec::new()];
        let mut k = 0;
        while planes[0].len() < frames {
            let n = (frames - planes[0].len()).min(BLOCK_SIZE);
            let block = stereo_block([1, 8, 9, 10][k % 4], n, bits, &mut seed);
            for (p, b) in planes.iter_mut().zip(block) {
                p.extend(b);
            }
            k += 1;
        }
        pcm_from_ints(spec, &planes, bits)
    }

    fn encode_all(cfg: &EncoderConfig, pcm: &PcmBuffer, chunk: usize) -> Vec<u8> {
        let mut enc = FlacEncoder::new(cfg).unwrap();
        let mut bytes = encode_in_blocks(&mut enc, pcm, chunk).to_vec();
        apply_patch(&mut bytes, &enc.header_patch().unwrap());
        bytes
    }

    #[test]
    fn thread_count_does_not_change_the_bytes() {
        // 100 blocks and a bit: more than one batch of 2 and of 3 threads, and a short last one.
        let frames = 100 * BLOCK_SIZE + 123;
        for (channels, bits) in [(2u16, 16u8), (2, 24), (1, 24), (6, 16)] {
            let mut cfg = config(48_000, channels, bits, 5);
            let pcm = if channels == 2 {
                mixed_stereo(cfg.spec, frames, u32::from(bits))
            } else {
                let full = sine(cfg.spec, frames as f64 / 48_000.0 + 0.01);
                let planes = full.planes().iter().map(|p| p[..frames].to_vec()).collect();
                PcmBuffer::from_planes(cfg.spec, planes)
            };
            let one = encode_all(&cfg, &pcm, 10_000);
            for (threads, chunk) in [(2, 10_000), (2, 4096 * 16), (3, 777), (0, 100_000)] {
                cfg.flac_threads = threads;
                let many = encode_all(&cfg, &pcm, chunk);
                assert!(
                    one == many,
                    "{channels} ch {bits} bits, {threads} threads: bytes differ"
                );
            }
            let dec = decode(&one, "flac");
            assert_eq!(dec.frames(), frames, "{channels} ch {bits} bits");
            for (plane, orig) in dec.planes.iter().zip(pcm.planes()) {
                for (a, b) in plane.iter().zip(orig) {
                    assert_eq!(
                        f32_to_int(*a, u32::from(bits)),
                        f32_to_int(*b, u32::from(bits))
                    );
                }
            }
        }
    }

    #[test]
    fn threaded_encoder_keeps_a_bounded_batch() {
        let mut cfg = config(44_100, 2, 16, 5);
        cfg.flac_threads = 2;
        let pcm = mixed_stereo(cfg.spec, 70 * BLOCK_SIZE, 16);
        let mut enc = FlacEncoder::new(&cfg).unwrap();
        let bytes = encode_in_blocks(&mut enc, &pcm, 5000);
        let batch = 2 * BLOCKS_PER_THREAD * BLOCK_SIZE;
        assert!(enc.pending.iter().all(|p| p.capacity() == batch));
        assert_eq!(enc.scratch.len(), 2);
        assert_eq!(decode(&bytes, "flac").frames(), 70 * BLOCK_SIZE);
    }

    /// Loud 24-bit noise, where flacenc's own choice can be huge: no frame is much larger than
    /// the samples stored verbatim, and all decode exactly.
    #[test]
    fn loud_24_bit_noise_stays_near_verbatim_size() {
        let cfg = config(48_000, 1, 24, 5);
        let mut seed = 777;
        let frames = 3 * BLOCK_SIZE + 10;
        let plane: Vec<i32> = (0..frames).map(|_| noise(&mut seed, 3_000_000)).collect();
        let pcm = pcm_from_ints(cfg.spec, std::slice::from_ref(&plane), 24);
        let bytes = encode_all(&cfg, &pcm, 5000);
        let raw = frames * 3;
        assert!(
            bytes.len() < raw + raw / 50,
            "{} bytes for {raw} bytes of samples",
            bytes.len()
        );
        let dec = decode(&bytes, "flac");
        let got: Vec<i32> = dec.planes[0].iter().map(|&v| f32_to_int(v, 24)).collect();
        assert!(got == plane, "samples differ");
        assert!(
            ffmpeg_decode_ints(&bytes, 24) == plane,
            "ffmpeg's samples differ"
        );
    }

    #[test]
    fn fast_conversion_matches_f32_to_int() {
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            1.5,
            -1.5,
            0.999_999_9,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            1e-40,
        ];
        let mut seed = 99;
        for _ in 0..100_000 {
            values.push(noise(&mut seed, 1 << 30) as f32 / (1 << 29) as f32);
        }
        for bits in [16, 24] {
            // Exact halves of the output step, where rounding matters.
            for k in -70_000..70_000 {
                values.push((k as f32 + 0.5) / (1u32 << (bits - 1)) as f32);
            }
            let mut fast = Vec::new();
            extend_as_ints(&mut fast, &values, bits);
            for (v, f) in values.iter().zip(&fast) {
                assert_eq!(*f, f32_to_int(*v, bits), "{v} at {bits} bits");
            }
        }
    }
}
