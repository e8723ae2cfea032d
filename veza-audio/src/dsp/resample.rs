//! Sample-rate conversion over [rubato] (5.x), streaming and delay-compensated.
//!
//! [`Resampler`] takes blocks of any size, buffers them up to the chunk size of the rubato
//! engine underneath, drops the engine's start-up delay, and appends the converted frames to a
//! caller's [`PcmBuffer`]. After [`Resampler::flush`] the whole stream has exactly
//! `round(total_in * to / from)` output frames, and output frame `k` is the input signal at
//! time `k / to` seconds: no leading silence, no time shift.
//!
//! # Quality levels
//!
//! | level | engine | filter |
//! |---|---|---|
//! | [`ResampleQuality::High`] (default) | rubato `Fft` (synchronous, overlap-add FFT) | windowed sinc, squared Blackman-Harris window, FFT block of about 2048 frames on the lower-rate side: pass band to about 99.3 % of the lower Nyquist frequency, stop band below -150 dB |
//! | [`ResampleQuality::Balanced`] | rubato `Fft` | same window, FFT block of about 512 frames: pass band to about 97.3 % of the lower Nyquist, shorter delay and less memory |
//! | [`ResampleQuality::Fast`] | rubato `Async` with cubic polynomial interpolation | no anti-alias filter at all: fine for upsampling and previews, aliases when downsampling content above the new Nyquist frequency |
//!
//! The FFT engine needs blocks that are whole multiples of `from / gcd(from, to)` input frames
//! and `to / gcd(from, to)` output frames. For odd rate pairs (a small common divisor) the block
//! would grow past [`MAX_FFT_BLOCK`] frames; then `High` and `Balanced` fall back to rubato's
//! asynchronous sinc interpolator (`High`: 256-tap sinc, 256x oversampled table, cubic
//! interpolation between table points; `Balanced`: 128 taps, 128x, linear; both with the
//! squared Blackman-Harris window and rubato's automatic cutoff). The asynchronous engines
//! (this fallback and `Fast`) report their delay rounded to a whole output frame, so their
//! output may lead or lag the ideal timing by less than one output frame.
//!
//! # Allocation
//!
//! [`Resampler::new`] allocates every buffer the conversion needs (the FFT plans, the filter,
//! one input chunk and one output chunk per channel). [`Resampler::process`] and
//! [`Resampler::flush`] allocate nothing themselves; they only append to the caller's output
//! buffer, which grows (amortised) unless the caller reserved room for
//! [`Resampler::max_output_frames`] frames beforehand. Memory is constant whatever the length
//! of the stream.

use rubato::audioadapter_buffers::direct::SequentialSliceOfVecs;
use rubato::{
    Async, Fft, FixedAsync, FixedSync, Indexing, PolynomialDegree, SincInterpolationParameters,
    SincInterpolationType, WindowFunction,
};

use crate::error::{AudioError, Result};
use crate::format::{AudioSpec, SampleRate};
use crate::pcm::PcmBuffer;

/// The largest FFT block (on either side, in frames) the FFT engine may use; rate pairs that
/// would need more fall back to the asynchronous sinc engine (see the module docs).
pub const MAX_FFT_BLOCK: usize = 32_768;

/// The largest conversion ratio accepted, either way (256: 3 kHz to 768 kHz and back).
pub const MAX_RATIO: u64 = 256;

/// The most zero frames fed ahead of a stream to align an asynchronous engine.
const MAX_LEAD_IN: usize = 512;

/// Chunk size (frames on the fixed side) of the asynchronous engines.
const ASYNC_CHUNK: usize = 1024;

/// How hard the resampler works to keep the pass band flat and the aliases out.
///
/// See the module documentation for the exact filter of each level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum ResampleQuality {
    /// Cubic polynomial interpolation without an anti-alias filter (cheapest).
    Fast,
    /// FFT resampler with a 512-frame block (about 97 % of Nyquist kept).
    Balanced,
    /// FFT resampler with a 2048-frame block (about 99 % of Nyquist kept, stop band below
    /// -150 dB). The default.
    #[default]
    High,
}

impl ResampleQuality {
    /// The FFT block length (frames on the lower-rate side) this level aims at.
    fn fft_target(self) -> usize {
        match self {
            ResampleQuality::High => 2048,
            ResampleQuality::Balanced | ResampleQuality::Fast => 512,
        }
    }

    /// The sinc parameters of the asynchronous fallback.
    fn sinc_parameters(self) -> SincInterpolationParameters {
        match self {
            ResampleQuality::High => {
                SincInterpolationParameters::new(256, WindowFunction::BlackmanHarris2)
                    .oversampling_factor(256)
                    .interpolation(SincInterpolationType::Cubic)
            }
            ResampleQuality::Balanced | ResampleQuality::Fast => {
                SincInterpolationParameters::new(128, WindowFunction::BlackmanHarris2)
                    .oversampling_factor(128)
                    .interpolation(SincInterpolationType::Linear)
            }
        }
    }
}

/// A streaming sample-rate converter from one fixed rate to another, for planar `f32` PCM.
///
/// Feed blocks of any size with [`Resampler::process`], then call [`Resampler::flush`] once
/// at the end of the stream to drain the filter's tail. See the module docs for quality,
/// timing and allocation guarantees.
pub struct Resampler {
    from: SampleRate,
    to: SampleRate,
    channels: usize,
    quality: ResampleQuality,
    /// `None` when `from == to` (passthrough).
    stage: Option<Stage>,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("channels", &self.channels)
            .field("quality", &self.quality)
            .field("passthrough", &self.stage.is_none())
            .finish()
    }
}

/// The rubato engine and the buffers around it.
struct Stage {
    engine: Box<dyn rubato::Resampler<f32>>,
    /// One input chunk per channel (length `engine.input_frames_max()`), filled from blocks
    /// that are smaller than a chunk.
    pending: Vec<Vec<f32>>,
    /// Valid frames at the start of `pending`.
    pending_len: usize,
    /// One output chunk per channel (length `engine.output_frames_max()`).
    scratch: Vec<Vec<f32>>,
    /// The engine's delay in output frames, dropped from the start of the stream.
    delay: usize,
    /// Zero input frames fed before the stream to make the delay whole (see `async_alignment`).
    lead_in: usize,
    /// Lead-in frames still to feed.
    lead_left: usize,
    /// Output frames still to drop before the first frame is emitted.
    to_skip: usize,
    /// Input frames received since the start of the stream.
    frames_in: u64,
    /// Output frames emitted since the start of the stream.
    frames_out: u64,
    /// Options of the next engine call (kept to avoid building one per call).
    indexing: Indexing,
}

impl Resampler {
    /// A converter from `from` to `to` for `channels` channels.
    ///
    /// Allocates all buffers up front (see the module docs).
    ///
    /// # Errors
    /// [`AudioError::InvalidConfig`] when `channels` is 0 or above [`AudioSpec::MAX_CHANNELS`],
    /// when one rate is more than [`MAX_RATIO`] times the other, or when rubato refuses the
    /// settings.
    pub fn new(
        from: SampleRate,
        to: SampleRate,
        channels: usize,
        quality: ResampleQuality,
    ) -> Result<Self> {
        if channels == 0 || channels > usize::from(AudioSpec::MAX_CHANNELS) {
            return Err(AudioError::config(format!(
                "resampler: {channels} channels"
            )));
        }
        let (lo, hi) = (from.hz().min(to.hz()), from.hz().max(to.hz()));
        if u64::from(hi) > u64::from(lo) * MAX_RATIO {
            return Err(AudioError::config(format!(
                "resampler: {} Hz to {} Hz is beyond 1:{MAX_RATIO}",
                from.hz(),
                to.hz()
            )));
        }
        let stage = if from == to {
            None
        } else {
            Some(Stage::new(from, to, channels, quality)?)
        };
        Ok(Resampler {
            from,
            to,
            channels,
            quality,
            stage,
        })
    }

    /// The input rate.
    pub fn from_rate(&self) -> SampleRate {
        self.from
    }

    /// The output rate.
    pub fn to_rate(&self) -> SampleRate {
        self.to
    }

    /// The channel count.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The quality level.
    pub fn quality(&self) -> ResampleQuality {
        self.quality
    }

    /// True when input and output rates are equal and frames are copied through unchanged.
    pub fn is_passthrough(&self) -> bool {
        self.stage.is_none()
    }

    /// The engine's delay in output frames (dropped internally; 0 for passthrough).
    pub fn delay_frames(&self) -> usize {
        self.stage.as_ref().map_or(0, |s| s.delay)
    }

    /// The most frames one [`Resampler::process`] call can append for a block of
    /// `input_frames` frames (or one [`Resampler::flush`] call, with `input_frames` 0).
    /// Reserve this much in the output buffer to make the call allocation-free.
    pub fn max_output_frames(&self, input_frames: usize) -> usize {
        match &self.stage {
            None => input_frames,
            Some(stage) => {
                let chunk_in = stage.engine.input_frames_next().max(1);
                let out_max = stage.engine.output_frames_max();
                // Every chunk completed by this block, plus the drain of a flush (the delay
                // and the pending chunk).
                let chunks = input_frames.saturating_add(stage.pending_len) / chunk_in + 1;
                chunks
                    .saturating_mul(out_max)
                    .saturating_add(stage.delay + out_max)
            }
        }
    }

    /// The spec of the output (`to`, `channels`).
    fn out_spec(&self) -> Result<AudioSpec> {
        let channels = u16::try_from(self.channels)
            .map_err(|_| AudioError::config("resampler: channel count"))?;
        Ok(AudioSpec {
            sample_rate: self.to,
            channels,
        })
    }

    /// Checks `out` against the output spec; an empty buffer of another spec is reset to it.
    fn prepare_out(&self, out: &mut PcmBuffer) -> Result<()> {
        let spec = self.out_spec()?;
        if out.spec() != spec {
            if !out.is_empty() {
                return Err(AudioError::config(format!(
                    "resampler output buffer is {} Hz x {}, expected {} Hz x {}",
                    out.sample_rate().hz(),
                    out.channels(),
                    spec.sample_rate.hz(),
                    spec.channels
                )));
            }
            out.reset(spec);
        }
        Ok(())
    }

    /// Converts `input` and appends the frames that are ready to `out`.
    ///
    /// `input` may hold any number of frames (including none); frames that do not complete a
    /// chunk are kept until the next call or [`Resampler::flush`]. `out` must have the output
    /// spec (`to`, `channels`), or be empty (it is then reset to that spec).
    ///
    /// Allocates nothing except when `out` must grow (see [`Resampler::max_output_frames`]).
    ///
    /// # Errors
    /// [`AudioError::InvalidConfig`] when `input` is not at `from` with `channels` channels, or
    /// `out` holds frames of another spec; [`AudioError::Encoder`] if rubato fails (a bug).
    pub fn process(&mut self, input: &PcmBuffer, out: &mut PcmBuffer) -> Result<()> {
        if input.channels() != self.channels || input.sample_rate() != self.from {
            return Err(AudioError::config(format!(
                "resampler input is {} Hz x {}, expected {} Hz x {}",
                input.sample_rate().hz(),
                input.channels(),
                self.from.hz(),
                self.channels
            )));
        }
        self.prepare_out(out)?;
        match &mut self.stage {
            None => {
                for (dst, src) in out.planes_mut().iter_mut().zip(input.planes()) {
                    dst.extend_from_slice(src);
                }
                Ok(())
            }
            Some(stage) => stage.process(input, out),
        }
    }

    /// Ends the stream: converts the frames still buffered, drains the filter's tail, and
    /// appends them to `out`, so the whole stream has `round(total_in * to / from)` frames.
    ///
    /// Afterwards the resampler is reset and can convert a new stream.
    /// Allocates nothing except when `out` must grow.
    ///
    /// # Errors
    /// [`AudioError::InvalidConfig`] when `out` holds frames of another spec;
    /// [`AudioError::Encoder`] if rubato fails (a bug).
    pub fn flush(&mut self, out: &mut PcmBuffer) -> Result<()> {
        self.prepare_out(out)?;
        let (from, to) = (u64::from(self.from.hz()), u64::from(self.to.hz()));
        match &mut self.stage {
            None => Ok(()),
            Some(stage) => stage.flush(from, to, out),
        }
    }

    /// Drops buffered frames and the filter state, to start a new stream.
    pub fn reset(&mut self) {
        if let Some(stage) = &mut self.stage {
            stage.reset();
        }
    }
}

/// The smallest even count `n` (at least 2) with `n * unit >= target`.
fn even_count(unit: usize, target: usize) -> usize {
    let n = target.div_ceil(unit).max(2);
    n + n % 2
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn engine_error(err: impl std::fmt::Display) -> AudioError {
    AudioError::encoder("resampler", err)
}

impl Stage {
    fn new(
        from: SampleRate,
        to: SampleRate,
        channels: usize,
        quality: ResampleQuality,
    ) -> Result<Self> {
        let (from_hz, to_hz) = (from.hz() as usize, to.hz() as usize);
        let ratio = to_hz as f64 / from_hz as f64;
        let config_error =
            |e: rubato::ResamplerConstructionError| AudioError::config(format!("resampler: {e}"));

        // `points`: taps of the asynchronous interpolator (None for the FFT engine).
        let (engine, points): (Box<dyn rubato::Resampler<f32>>, Option<usize>) = match quality {
            ResampleQuality::Fast => (
                Box::new(
                    Async::<f32>::new_poly(
                        ratio,
                        1.0,
                        PolynomialDegree::Cubic,
                        ASYNC_CHUNK,
                        channels,
                        Self::async_fixed(ratio),
                    )
                    .map_err(config_error)?,
                ),
                Some(PolynomialDegree::Cubic.nbr_points()),
            ),
            ResampleQuality::Balanced | ResampleQuality::High => {
                let g = gcd(from_hz, to_hz);
                let (unit_in, unit_out) = (from_hz / g, to_hz / g);
                // The filter length (and so the pass band) follows the lower-rate side; the
                // count of units is even so both block sizes are even and the engine's delay
                // (half a block) is a whole number of frames on both sides.
                let blocks = even_count(unit_in.min(unit_out), quality.fft_target());
                let (block_in, block_out) = (blocks * unit_in, blocks * unit_out);
                if block_in.max(block_out) <= MAX_FFT_BLOCK {
                    (
                        Box::new(
                            Fft::<f32>::new_custom(
                                from_hz,
                                to_hz,
                                block_in,
                                1,
                                channels,
                                WindowFunction::BlackmanHarris2,
                                FixedSync::Both,
                            )
                            .map_err(config_error)?,
                        ),
                        None,
                    )
                } else {
                    let parameters = quality.sinc_parameters();
                    (
                        Box::new(
                            Async::<f32>::new_sinc(
                                ratio,
                                1.0,
                                &parameters,
                                ASYNC_CHUNK,
                                channels,
                                Self::async_fixed(ratio),
                            )
                            .map_err(config_error)?,
                        ),
                        Some(parameters.sinc_len.next_multiple_of(8)),
                    )
                }
            }
        };
        let pending = vec![vec![0.0; engine.input_frames_max()]; channels];
        let scratch = vec![vec![0.0; engine.output_frames_max()]; channels];
        let (lead_in, delay) = match points {
            // The FFT engine's delay is half its output block, a whole number of frames
            // (the block counts are even, see above).
            None => (0, engine.output_delay()),
            Some(points) => Self::async_alignment(points, ratio),
        };
        Ok(Stage {
            engine,
            pending,
            pending_len: 0,
            scratch,
            lead_in,
            lead_left: lead_in,
            delay,
            to_skip: delay,
            frames_in: 0,
            frames_out: 0,
            indexing: Indexing::new(),
        })
    }

    /// Lead-in (zero input frames fed first) and delay (output frames dropped) that align an
    /// asynchronous engine's output with the ideal timing.
    ///
    /// rubato's asynchronous engines compute output frame `j` at input position
    /// `(j + 1) / r - points / 2` (`r` = to / from; `points` = interpolator taps), a delay of
    /// `points / 2 * r - 1` output frames, which is not a whole number in general (the engine's
    /// own `output_delay()` truncates it). `P` leading zero input frames add `P * r`: the
    /// smallest-error `P` up to [`MAX_LEAD_IN`] makes the delay whole to within about
    /// `1 / MAX_LEAD_IN` of a frame (checked by the tests), and never negative.
    fn async_alignment(points: usize, ratio: f64) -> (usize, usize) {
        let base = points as f64 / 2.0 * ratio - 1.0;
        let mut best = (0, f64::INFINITY, 0.0);
        for pad in 0..=MAX_LEAD_IN {
            let delay = base + pad as f64 * ratio;
            if pad > 0 && pad as f64 * ratio > 8192.0 {
                break;
            }
            if delay < 0.0 {
                continue;
            }
            let err = (delay - delay.round()).abs();
            if err < best.1 - 1e-9 {
                best = (pad, err, delay);
            }
        }
        // `best.2` is at most points / 2 * r + MAX_LEAD_IN * r, finite and non-negative.
        (best.0, best.2.round() as usize)
    }

    /// Fix the side with fewer frames per chunk so neither side's buffer grows with the ratio.
    fn async_fixed(ratio: f64) -> FixedAsync {
        if ratio > 1.0 {
            FixedAsync::Output
        } else {
            FixedAsync::Input
        }
    }

    fn process(&mut self, input: &PcmBuffer, out: &mut PcmBuffer) -> Result<()> {
        let total = input.frames();
        if total > 0 {
            self.feed_lead_in(out)?;
        }
        self.frames_in += total as u64;
        let mut offset = 0;
        while offset < total {
            let need = self.engine.input_frames_next();
            if self.pending_len == 0 && total - offset >= need {
                // A whole chunk is available in the caller's block: no copy.
                self.run(Some((input, offset)), None, u64::MAX, out)?;
                offset += need;
            } else {
                let take = (need - self.pending_len).min(total - offset);
                for (dst, src) in self.pending.iter_mut().zip(input.planes()) {
                    let dst = dst
                        .get_mut(self.pending_len..self.pending_len + take)
                        .expect("pending holds input_frames_max frames");
                    let src = src
                        .get(offset..offset + take)
                        .expect("take is within the block");
                    dst.copy_from_slice(src);
                }
                self.pending_len += take;
                offset += take;
                if self.pending_len == need {
                    self.run(None, None, u64::MAX, out)?;
                    self.pending_len = 0;
                }
            }
        }
        Ok(())
    }

    /// Feeds the lead-in zeros still due (once per stream, before its first frame).
    fn feed_lead_in(&mut self, out: &mut PcmBuffer) -> Result<()> {
        while self.lead_left > 0 {
            let need = self.engine.input_frames_next();
            let take = need.saturating_sub(self.pending_len).min(self.lead_left);
            for plane in &mut self.pending {
                plane
                    .get_mut(self.pending_len..self.pending_len + take)
                    .expect("pending holds input_frames_max frames")
                    .fill(0.0);
            }
            self.pending_len += take;
            self.lead_left -= take;
            if self.pending_len == need {
                self.run(None, None, u64::MAX, out)?;
                self.pending_len = 0;
            }
        }
        Ok(())
    }

    /// One engine call, from the caller's block at `offset` or from `pending` (with
    /// `partial` valid frames when draining); appends the result (minus the delay still to
    /// skip, and capped at `limit` total output frames) to `out`.
    fn run(
        &mut self,
        block: Option<(&PcmBuffer, usize)>,
        partial: Option<usize>,
        limit: u64,
        out: &mut PcmBuffer,
    ) -> Result<()> {
        let channels = self.pending.len();
        let out_frames = self.scratch.first().map_or(0, Vec::len);
        let mut adapter_out =
            SequentialSliceOfVecs::new_mut(&mut self.scratch, channels, out_frames)
                .map_err(engine_error)?;
        self.indexing.partial_len = partial;
        let (_, produced) = match block {
            Some((input, offset)) => {
                self.indexing.input_offset = offset;
                let adapter_in =
                    SequentialSliceOfVecs::new(input.planes(), channels, input.frames())
                        .map_err(engine_error)?;
                self.engine
                    .process_into_buffer(&adapter_in, &mut adapter_out, Some(&self.indexing))
            }
            None => {
                self.indexing.input_offset = 0;
                let in_frames = self.pending.first().map_or(0, Vec::len);
                let adapter_in = SequentialSliceOfVecs::new(&self.pending, channels, in_frames)
                    .map_err(engine_error)?;
                self.engine
                    .process_into_buffer(&adapter_in, &mut adapter_out, Some(&self.indexing))
            }
        }
        .map_err(engine_error)?;
        let skip = self.to_skip.min(produced);
        self.to_skip -= skip;
        self.append(skip, produced, limit, out);
        Ok(())
    }

    /// Appends `scratch[start..end]` to `out`, at most up to `limit` output frames in total.
    fn append(&mut self, start: usize, end: usize, limit: u64, out: &mut PcmBuffer) {
        let room = usize::try_from(limit.saturating_sub(self.frames_out)).unwrap_or(usize::MAX);
        let end = end.min(start.saturating_add(room));
        if end <= start {
            return;
        }
        for (dst, src) in out.planes_mut().iter_mut().zip(&self.scratch) {
            dst.extend_from_slice(src.get(start..end).expect("engine wrote this many frames"));
        }
        self.frames_out += (end - start) as u64;
    }

    fn flush(&mut self, from: u64, to: u64, out: &mut PcmBuffer) -> Result<()> {
        // round(frames_in * to / from), in integers (u128: no overflow for any length).
        let target = (u128::from(self.frames_in) * u128::from(to) * 2 + u128::from(from))
            / (2 * u128::from(from));
        let target = u64::try_from(target).unwrap_or(u64::MAX);
        // Bound the drain loop: the delay plus what is missing, divided by the least output
        // one call on silence can give (at extreme downsampling with a fixed input chunk,
        // about chunk_in * to / from frames).
        let missing = target.saturating_sub(self.frames_out) + self.delay as u64;
        let chunk_out = (self.engine.output_frames_next() as u64).max(1);
        let chunk_in = self.engine.input_frames_next() as u64;
        let per_call = chunk_out.min((chunk_in * to / from).max(1));
        let mut calls_left = missing / per_call + 4;
        while self.frames_out < target {
            if calls_left == 0 {
                self.reset();
                return Err(AudioError::encoder("resampler", "the tail did not drain"));
            }
            calls_left -= 1;
            // The first call takes the pending frames (zero-padded), later ones pure silence.
            let partial = self.pending_len;
            self.pending_len = 0;
            self.run(None, Some(partial), target, out)?;
        }
        self.reset();
        Ok(())
    }

    fn reset(&mut self) {
        self.engine.reset();
        self.pending_len = 0;
        self.lead_left = self.lead_in;
        self.to_skip = self.delay;
        self.frames_in = 0;
        self.frames_out = 0;
        self.indexing.partial_len = None;
        self.indexing.input_offset = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn rate(hz: u32) -> SampleRate {
        SampleRate::new(hz).unwrap()
    }

    /// `frames` of a sine of `freq` Hz and peak `amp`, phase 0 at frame 0, on every channel.
    fn sine(hz: u32, channels: u16, freq: f64, amp: f64, frames: usize) -> PcmBuffer {
        let plane: Vec<f32> = (0..frames)
            .map(|i| (amp * (2.0 * PI * freq * i as f64 / f64::from(hz)).sin()) as f32)
            .collect();
        PcmBuffer::from_planes(
            AudioSpec::new(hz, channels).unwrap(),
            vec![plane; channels.into()],
        )
    }

    /// Least-squares fit of `a sin + b cos` at `freq` over `x[range]` (sample k at time k/hz):
    /// returns (amplitude, phase in radians, residual rms).
    fn fit(x: &[f32], hz: u32, freq: f64, range: std::ops::Range<usize>) -> (f64, f64, f64) {
        let (mut ss, mut sc, mut cc, mut xs, mut xc) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for k in range.clone() {
            let w = 2.0 * PI * freq * k as f64 / f64::from(hz);
            let (s, c) = w.sin_cos();
            let v = f64::from(x[k]);
            ss += s * s;
            sc += s * c;
            cc += c * c;
            xs += v * s;
            xc += v * c;
        }
        let det = ss * cc - sc * sc;
        let a = (xs * cc - xc * sc) / det;
        let b = (xc * ss - xs * sc) / det;
        let mut res = 0.0;
        for k in range.clone() {
            let w = 2.0 * PI * freq * k as f64 / f64::from(hz);
            let e = f64::from(x[k]) - (a * w.sin() + b * w.cos());
            res += e * e;
        }
        (
            (a * a + b * b).sqrt(),
            b.atan2(a),
            (res / range.len() as f64).sqrt(),
        )
    }

    fn run_all(r: &mut Resampler, input: &PcmBuffer, blocks: &[usize]) -> PcmBuffer {
        let mut out =
            PcmBuffer::new(AudioSpec::new(r.to_rate().hz(), input.channels() as u16).unwrap());
        let mut block = PcmBuffer::new(input.spec());
        let mut pos = 0;
        let mut i = 0;
        while pos < input.frames() {
            let n = blocks[i % blocks.len()].min(input.frames() - pos);
            i += 1;
            block.clear();
            for (dst, src) in block.planes_mut().iter_mut().zip(input.planes()) {
                dst.extend_from_slice(&src[pos..pos + n]);
            }
            pos += n;
            r.process(&block, &mut out).unwrap();
        }
        r.flush(&mut out).unwrap();
        out
    }

    fn expected_len(n: usize, from: u32, to: u32) -> usize {
        ((n as f64) * f64::from(to) / f64::from(from)).round() as usize
    }

    fn check_sine(from: u32, to: u32, quality: ResampleQuality) {
        let amp = 0.5;
        let n = from as usize / 2 + 123; // half a second and a bit
        let input = sine(from, 2, 1000.0, amp, n);
        let mut r = Resampler::new(rate(from), rate(to), 2, quality).unwrap();
        let out = run_all(&mut r, &input, &[4096]);
        assert_eq!(
            out.frames(),
            expected_len(n, from, to),
            "{from}->{to} length"
        );
        assert_eq!(out.sample_rate().hz(), to);
        for ch in 0..2 {
            let x = out.plane(ch);
            // Away from the stream edges (where the filter sees the abrupt start/stop).
            let range = 2000..x.len() - 2000;
            let (a, phase, res) = fit(x, to, 1000.0, range);
            let level_db = 20.0 * (a / amp).log10();
            assert!(
                level_db.abs() < 0.2,
                "{from}->{to} {quality:?}: level {level_db} dB"
            );
            assert!(
                res < amp * 1e-3,
                "{from}->{to} {quality:?}: residual {res} (frequency moved?)"
            );
            // Phase 0 expected: no time shift. Convert to output samples.
            let shift = phase / (2.0 * PI * 1000.0) * f64::from(to);
            assert!(
                shift.abs() < 0.01,
                "{from}->{to} {quality:?}: shifted by {shift} samples"
            );
        }
        // The very first samples follow the ideal sine too (no leading delay or silence).
        let x = out.plane(0);
        let ideal = |k: usize| amp * (2.0 * PI * 1000.0 * k as f64 / f64::from(to)).sin();
        let head_err = (20..60)
            .map(|k| (f64::from(x[k]) - ideal(k)).abs())
            .fold(0.0_f64, f64::max);
        assert!(
            head_err < 0.02,
            "{from}->{to} {quality:?}: head error {head_err}"
        );
    }

    #[test]
    fn sine_keeps_frequency_level_and_timing() {
        for (from, to) in [
            (44_100, 48_000),
            (48_000, 44_100),
            (44_100, 22_050),
            (96_000, 44_100),
        ] {
            check_sine(from, to, ResampleQuality::High);
            check_sine(from, to, ResampleQuality::Balanced);
        }
    }

    #[test]
    fn odd_rate_pair_uses_the_sinc_fallback() {
        // gcd(44100, 44101) = 1: the FFT block would be 44100 frames.
        let input = sine(44_100, 1, 1000.0, 0.5, 30_000);
        let mut r = Resampler::new(rate(44_100), rate(32_003), 1, ResampleQuality::High).unwrap();
        let out = run_all(&mut r, &input, &[1000]);
        assert_eq!(out.frames(), expected_len(30_000, 44_100, 32_003));
        let (a, phase, _) = fit(out.plane(0), 32_003, 1000.0, 2000..out.frames() - 2000);
        assert!((20.0 * (a / 0.5).log10()).abs() < 0.2);
        let shift = phase / (2.0 * PI * 1000.0) * 32_003.0;
        assert!(shift.abs() < 0.02, "shift {shift}");
    }

    #[test]
    fn fast_quality_keeps_length_and_level() {
        for (from, to) in [(44_100, 48_000), (48_000, 44_100)] {
            let input = sine(from, 1, 1000.0, 0.5, 20_000);
            let mut r = Resampler::new(rate(from), rate(to), 1, ResampleQuality::Fast).unwrap();
            let out = run_all(&mut r, &input, &[777]);
            assert_eq!(out.frames(), expected_len(20_000, from, to));
            let (a, phase, _) = fit(out.plane(0), to, 1000.0, 2000..out.frames() - 2000);
            assert!((20.0 * (a / 0.5).log10()).abs() < 0.2);
            let shift = phase / (2.0 * PI * 1000.0) * f64::from(to);
            assert!(shift.abs() < 0.02, "{from}->{to}: shift {shift}");
        }
    }

    #[test]
    fn high_quality_rejects_aliases() {
        let amp = 0.5;
        let input = sine(44_100, 1, 20_000.0, amp, 44_100);
        let mut r = Resampler::new(rate(44_100), rate(22_050), 1, ResampleQuality::High).unwrap();
        let out = run_all(&mut r, &input, &[4096]);
        let x = &out.plane(0)[3000..out.frames() - 3000];
        let rms = (x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len() as f64).sqrt();
        let db = 20.0 * (rms / (amp / 2f64.sqrt())).log10();
        assert!(db < -60.0, "alias at {db} dB");
        // The would-be alias frequency (22050 - 20000 = 2050 Hz) in particular.
        let (a, _, _) = fit(out.plane(0), 22_050, 2050.0, 3000..out.frames() - 3000);
        assert!(20.0 * (a / amp).log10() < -60.0);
    }

    #[test]
    fn block_splits_do_not_change_the_output() {
        let input = sine(44_100, 2, 1000.0, 0.5, 30_000);
        for quality in [
            ResampleQuality::High,
            ResampleQuality::Balanced,
            ResampleQuality::Fast,
        ] {
            for to in [48_000, 22_050, 32_003] {
                let mut r = Resampler::new(rate(44_100), rate(to), 2, quality).unwrap();
                let whole = run_all(&mut r, &input, &[usize::MAX]);
                // Pseudo-random block sizes from 1 to 5000 frames (fixed seed).
                let mut seed = 0x2545_f491_u64;
                let blocks: Vec<usize> = (0..200)
                    .map(|_| {
                        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        (seed >> 33) as usize % 5000 + 1
                    })
                    .collect();
                // The same resampler after flush (which resets it) must start afresh.
                let split = run_all(&mut r, &input, &blocks);
                assert_eq!(whole.frames(), split.frames());
                for ch in 0..2 {
                    let max = whole
                        .plane(ch)
                        .iter()
                        .zip(split.plane(ch))
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0_f32, f32::max);
                    assert!(max < 1e-6, "{quality:?} 44100->{to}: differs by {max}");
                }
            }
        }
    }

    #[test]
    fn same_rate_is_a_passthrough() {
        let input = sine(48_000, 2, 1000.0, 0.5, 1000);
        let mut r = Resampler::new(rate(48_000), rate(48_000), 2, ResampleQuality::High).unwrap();
        assert!(r.is_passthrough());
        let out = run_all(&mut r, &input, &[333]);
        assert_eq!(out, input);
    }

    #[test]
    fn short_and_empty_streams() {
        let mut r = Resampler::new(rate(44_100), rate(48_000), 1, ResampleQuality::High).unwrap();
        let mut out = PcmBuffer::new(AudioSpec::new(48_000, 1).unwrap());
        r.flush(&mut out).unwrap();
        assert_eq!(out.frames(), 0);
        let input = sine(44_100, 1, 1000.0, 0.5, 10);
        r.process(&input, &mut out).unwrap();
        r.flush(&mut out).unwrap();
        assert_eq!(out.frames(), expected_len(10, 44_100, 48_000));
    }

    #[test]
    fn extreme_ratios_drain_to_the_exact_length() {
        for (from, to) in [(3_000, 768_000), (768_000, 3_000)] {
            for quality in [ResampleQuality::High, ResampleQuality::Fast] {
                let input = sine(from, 1, 100.0, 0.5, 700);
                let mut r = Resampler::new(rate(from), rate(to), 1, quality).unwrap();
                let out = run_all(&mut r, &input, &[100]);
                assert_eq!(
                    out.frames(),
                    expected_len(700, from, to),
                    "{from}->{to} {quality:?}"
                );
            }
        }
    }

    #[test]
    fn output_reserved_once_does_not_grow() {
        let input = sine(44_100, 2, 1000.0, 0.5, 1024);
        let mut r = Resampler::new(rate(44_100), rate(48_000), 2, ResampleQuality::High).unwrap();
        let mut out = PcmBuffer::new(AudioSpec::new(48_000, 2).unwrap());
        // (Not `PcmBuffer::with_capacity`: `vec![v; n]` clones, and clones drop capacity.)
        let frames = r.max_output_frames(input.frames());
        out.planes_mut().iter_mut().for_each(|p| p.reserve(frames));
        let cap = out.plane(0).as_ptr();
        for _ in 0..50 {
            out.clear();
            r.process(&input, &mut out).unwrap();
            assert_eq!(out.plane(0).as_ptr(), cap);
        }
        out.clear();
        r.flush(&mut out).unwrap();
        assert_eq!(out.plane(0).as_ptr(), cap);
    }

    #[test]
    fn rejects_bad_settings_and_buffers() {
        assert!(matches!(
            Resampler::new(rate(44_100), rate(48_000), 0, ResampleQuality::High),
            Err(AudioError::InvalidConfig(_))
        ));
        let mut r = Resampler::new(rate(44_100), rate(48_000), 2, ResampleQuality::High).unwrap();
        let mono = sine(44_100, 1, 1000.0, 0.5, 10);
        let mut out = PcmBuffer::new(AudioSpec::new(48_000, 2).unwrap());
        assert!(matches!(
            r.process(&mono, &mut out),
            Err(AudioError::InvalidConfig(_))
        ));
        let wrong_rate = sine(48_000, 2, 1000.0, 0.5, 10);
        assert!(matches!(
            r.process(&wrong_rate, &mut out),
            Err(AudioError::InvalidConfig(_))
        ));
        // Extreme but legal ratios construct with bounded buffers.
        for (from, to) in [(1, 768_000), (768_000, 1), (44_100, 44)] {
            assert!(matches!(
                Resampler::new(rate(from), rate(to), 2, ResampleQuality::High),
                Err(AudioError::InvalidConfig(_))
            ));
        }
        for (from, to) in [
            (3_000, 768_000),
            (768_000, 3_000),
            (8_000, 768_000),
            (44_100, 173),
        ] {
            for quality in [ResampleQuality::High, ResampleQuality::Fast] {
                let r = Resampler::new(rate(from), rate(to), 2, quality).unwrap();
                let stage = r.stage.as_ref().unwrap();
                assert!(stage.pending[0].len() <= 100_000, "{from}->{to}");
                assert!(stage.scratch[0].len() <= 100_000, "{from}->{to}");
            }
        }
    }
}
