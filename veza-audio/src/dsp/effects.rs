//! Gain and fades, applied in place to planar PCM.
//!
//! Every effect is a pure function of the sample and of its frame position in the stream
//! (frame 0 = first frame of the stream), so splitting a stream into blocks of any size gives
//! bit-identical results. [`EffectChain`] keeps the running position for you.
//!
//! Fade curves ([`FadeCurve`]): `Linear` ramps the amplitude linearly (`t`), which sounds
//! like a fast start and a slow tail; `EqualPower` uses a quarter sine (`sin(t * pi/2)` in,
//! `cos(t * pi/2)` out), whose power sums to one across a cross-fade and sounds smoother.
//! The default is `Linear`.
//!
//! Nothing here allocates.

use crate::error::{AudioError, Result};
use crate::pcm::PcmBuffer;

/// The widest gain accepted, in dB either way.
pub const MAX_GAIN_DB: f32 = 60.0;

/// How [`Gain`] keeps boosted samples inside full scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Clipping {
    /// Samples are only multiplied; they may leave -1.0..=1.0 (encoders then clamp).
    None,
    /// Samples above the knee ([`SOFT_CLIP_KNEE`], about -1 dBFS) are bent smoothly with a
    /// `tanh` curve toward, and never past, full scale. Below the knee nothing changes.
    /// The default.
    #[default]
    Soft,
    /// Samples are clamped to -1.0..=1.0 (hard clipping: cheap, audible on loud peaks).
    Hard,
}

/// Where [`Clipping::Soft`] starts bending: 0.891, about -1 dBFS.
pub const SOFT_CLIP_KNEE: f32 = 0.891;

/// The soft clip curve: identity up to the knee, then `knee + (1 - knee) tanh(...)`, continuous
/// in value and slope, and never above 1.0 in magnitude (it reaches 1.0 only by f32 rounding).
#[inline]
fn soft_clip(x: f32) -> f32 {
    let a = x.abs();
    if a <= SOFT_CLIP_KNEE {
        x
    } else {
        let room = 1.0 - SOFT_CLIP_KNEE;
        let y = SOFT_CLIP_KNEE + room * ((a - SOFT_CLIP_KNEE) / room).tanh();
        // NaN input stays NaN (a NaN sample is a decoder bug, not ours to hide).
        y.copysign(x)
    }
}

/// A fixed gain in dB, applied as a factor, with optional clipping protection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gain {
    db: f32,
    factor: f32,
    clipping: Clipping,
}

impl Gain {
    /// A gain of `db` decibels (positive boosts) with [`Clipping::Soft`].
    ///
    /// # Errors
    /// [`AudioError::InvalidConfig`] when `db` is not finite or beyond ±[`MAX_GAIN_DB`].
    pub fn new(db: f32) -> Result<Self> {
        if !db.is_finite() || db.abs() > MAX_GAIN_DB {
            return Err(AudioError::config(format!(
                "gain {db} dB (allowed: -{MAX_GAIN_DB} to +{MAX_GAIN_DB} dB)"
            )));
        }
        Ok(Gain {
            db,
            factor: 10f32.powf(db / 20.0),
            clipping: Clipping::default(),
        })
    }

    /// The same gain with another clipping mode.
    #[must_use]
    pub fn with_clipping(mut self, clipping: Clipping) -> Self {
        self.clipping = clipping;
        self
    }

    /// The gain in dB.
    pub fn db(&self) -> f32 {
        self.db
    }

    /// The linear factor (`10^(dB/20)`).
    pub fn factor(&self) -> f32 {
        self.factor
    }

    /// The clipping mode.
    pub fn clipping(&self) -> Clipping {
        self.clipping
    }

    /// Applies the gain to every sample of `buf`.
    pub fn apply(&self, buf: &mut PcmBuffer) {
        let f = self.factor;
        for plane in buf.planes_mut() {
            match self.clipping {
                Clipping::None => plane.iter_mut().for_each(|s| *s *= f),
                Clipping::Soft => plane.iter_mut().for_each(|s| *s = soft_clip(*s * f)),
                Clipping::Hard => plane
                    .iter_mut()
                    .for_each(|s| *s = (*s * f).clamp(-1.0, 1.0)),
            }
        }
    }
}

/// The shape of a fade (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum FadeCurve {
    /// Amplitude `t` (in) or `1 - t` (out). The default.
    #[default]
    Linear,
    /// Amplitude `sin(t * pi/2)` (in) or `cos(t * pi/2)` (out).
    EqualPower,
}

impl FadeCurve {
    /// The fade-in amplitude at progress `t` in 0..=1.
    #[inline]
    fn rise(self, t: f64) -> f32 {
        match self {
            FadeCurve::Linear => t as f32,
            FadeCurve::EqualPower => (t * std::f64::consts::FRAC_PI_2).sin() as f32,
        }
    }
}

/// Multiplies the frames of `buf` (stream frames `pos..pos + frames`) that fall in
/// `start..start + len` by `gain(t)`, `t` = (frame - start) / len, and the frames at or after
/// `start + len` by `after`.
fn apply_ramp(
    buf: &mut PcmBuffer,
    pos: u64,
    start: u64,
    len: u64,
    gain: impl Fn(f64) -> f32,
    after: Option<f32>,
) {
    let frames = buf.frames() as u64;
    let end = start.saturating_add(len);
    let block_end = pos.saturating_add(frames);
    // The ramp part of this block.
    let from = start.max(pos);
    let to = end.min(block_end);
    for frame in from..to {
        let g = gain((frame - start) as f64 / len as f64);
        let i = (frame - pos) as usize;
        for plane in buf.planes_mut() {
            if let Some(s) = plane.get_mut(i) {
                *s *= g;
            }
        }
    }
    // The part after the ramp.
    if let Some(g) = after {
        let from = end.max(pos);
        if from < block_end {
            let i = (from - pos) as usize;
            for plane in buf.planes_mut() {
                if let Some(rest) = plane.get_mut(i..) {
                    rest.iter_mut().for_each(|s| *s *= g);
                }
            }
        }
    }
}

/// A fade-in over the first `duration_frames` frames of the stream (frame 0 silent, full level
/// from frame `duration_frames` on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FadeIn {
    duration: u64,
    curve: FadeCurve,
}

impl FadeIn {
    /// A linear fade-in lasting `duration_frames` frames (0: no fade).
    pub fn new(duration_frames: u64) -> Self {
        FadeIn {
            duration: duration_frames,
            curve: FadeCurve::default(),
        }
    }

    /// The same fade with another curve.
    #[must_use]
    pub fn with_curve(mut self, curve: FadeCurve) -> Self {
        self.curve = curve;
        self
    }

    /// The duration in frames.
    pub fn duration_frames(&self) -> u64 {
        self.duration
    }

    /// The curve.
    pub fn curve(&self) -> FadeCurve {
        self.curve
    }

    /// Applies the fade to `buf`, whose first frame is frame `position` of the stream.
    pub fn apply(&self, buf: &mut PcmBuffer, position: u64) {
        if self.duration == 0 || position >= self.duration {
            return;
        }
        let curve = self.curve;
        apply_ramp(buf, position, 0, self.duration, |t| curve.rise(t), None);
    }
}

/// A fade-out starting at frame `start_frame` of the stream and lasting `duration_frames`
/// frames; everything from `start_frame + duration_frames` on is silent.
///
/// The caller gives the start frame (usually `total_frames - duration_frames`), since a stream
/// does not know its length before it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FadeOut {
    start: u64,
    duration: u64,
    curve: FadeCurve,
}

impl FadeOut {
    /// A linear fade-out from `start_frame` over `duration_frames` frames (0: a cut to silence
    /// at `start_frame`).
    pub fn new(start_frame: u64, duration_frames: u64) -> Self {
        FadeOut {
            start: start_frame,
            duration: duration_frames,
            curve: FadeCurve::default(),
        }
    }

    /// The same fade with another curve.
    #[must_use]
    pub fn with_curve(mut self, curve: FadeCurve) -> Self {
        self.curve = curve;
        self
    }

    /// The first frame of the fade.
    pub fn start_frame(&self) -> u64 {
        self.start
    }

    /// The duration in frames.
    pub fn duration_frames(&self) -> u64 {
        self.duration
    }

    /// The curve.
    pub fn curve(&self) -> FadeCurve {
        self.curve
    }

    /// Applies the fade to `buf`, whose first frame is frame `position` of the stream.
    pub fn apply(&self, buf: &mut PcmBuffer, position: u64) {
        if position.saturating_add(buf.frames() as u64) <= self.start {
            return;
        }
        let curve = self.curve;
        // Fade-out amplitude at progress t is the fade-in amplitude at 1 - t (cos = sin of the
        // complement), so both curves stay symmetric.
        apply_ramp(
            buf,
            position,
            self.start,
            self.duration,
            |t| curve.rise(1.0 - t),
            Some(0.0),
        );
    }
}

/// An optional gain, fade-in and fade-out, applied in that order to consecutive blocks of one
/// stream (the chain counts the frames).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EffectChain {
    gain: Option<Gain>,
    fade_in: Option<FadeIn>,
    fade_out: Option<FadeOut>,
    position: u64,
}

impl EffectChain {
    /// An empty chain (passes audio unchanged).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the gain.
    #[must_use]
    pub fn with_gain(mut self, gain: Gain) -> Self {
        self.gain = Some(gain);
        self
    }

    /// Adds (or replaces) the fade-in.
    #[must_use]
    pub fn with_fade_in(mut self, fade: FadeIn) -> Self {
        self.fade_in = Some(fade);
        self
    }

    /// Adds (or replaces) the fade-out.
    #[must_use]
    pub fn with_fade_out(mut self, fade: FadeOut) -> Self {
        self.fade_out = Some(fade);
        self
    }

    /// The gain, if any.
    pub fn gain(&self) -> Option<&Gain> {
        self.gain.as_ref()
    }

    /// The fade-in, if any.
    pub fn fade_in(&self) -> Option<&FadeIn> {
        self.fade_in.as_ref()
    }

    /// The fade-out, if any.
    pub fn fade_out(&self) -> Option<&FadeOut> {
        self.fade_out.as_ref()
    }

    /// True when the chain changes nothing.
    pub fn is_empty(&self) -> bool {
        self.gain.is_none() && self.fade_in.is_none() && self.fade_out.is_none()
    }

    /// The stream frame the next block starts at.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Applies the effects to `buf` (the next block of the stream) in place.
    pub fn process(&mut self, buf: &mut PcmBuffer) {
        if let Some(gain) = &self.gain {
            gain.apply(buf);
        }
        if let Some(fade) = &self.fade_in {
            fade.apply(buf, self.position);
        }
        if let Some(fade) = &self.fade_out {
            fade.apply(buf, self.position);
        }
        self.position = self.position.saturating_add(buf.frames() as u64);
    }

    /// Starts a new stream (position 0); the effects stay.
    pub fn reset(&mut self) {
        self.position = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::AudioSpec;

    fn ones(frames: usize, channels: u16) -> PcmBuffer {
        let spec = AudioSpec::new(48_000, channels).unwrap();
        PcmBuffer::from_planes(spec, vec![vec![1.0; frames]; channels.into()])
    }

    fn noise(frames: usize) -> PcmBuffer {
        let mut seed = 12345u32;
        let plane: Vec<f32> = (0..frames)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect();
        PcmBuffer::from_planes(
            AudioSpec::new(48_000, 2).unwrap(),
            vec![plane.clone(), plane],
        )
    }

    #[test]
    fn gain_is_a_factor() {
        let mut b =
            PcmBuffer::from_planes(AudioSpec::new(48_000, 1).unwrap(), vec![vec![0.5, -0.25]]);
        Gain::new(-6.0)
            .unwrap()
            .with_clipping(Clipping::None)
            .apply(&mut b);
        assert!((b.plane(0)[0] - 0.5 * 0.501_187).abs() < 1e-5);
        assert!((b.plane(0)[1] + 0.25 * 0.501_187).abs() < 1e-5);
        assert!(Gain::new(f32::NAN).is_err());
        assert!(Gain::new(61.0).is_err());
    }

    #[test]
    fn boosts_cannot_leave_full_scale() {
        let mut b = noise(10_000);
        Gain::new(24.0).unwrap().apply(&mut b);
        assert!(b.planes().iter().flatten().all(|s| s.abs() <= 1.0));
        // Below the knee the soft clip changes nothing.
        let mut q =
            PcmBuffer::from_planes(AudioSpec::new(48_000, 1).unwrap(), vec![vec![0.8, -0.8]]);
        Gain::new(0.0).unwrap().apply(&mut q);
        assert_eq!(q.plane(0), &[0.8, -0.8]);
        // The curve is monotonic.
        let ys: Vec<f32> = (0..400).map(|i| soft_clip(i as f32 * 0.01)).collect();
        assert!(ys.windows(2).all(|w| w[1] >= w[0]));
        let mut h = noise(1000);
        Gain::new(24.0)
            .unwrap()
            .with_clipping(Clipping::Hard)
            .apply(&mut h);
        assert!(h.planes().iter().flatten().all(|s| s.abs() <= 1.0));
    }

    #[test]
    fn fades_reach_their_ends() {
        let mut b = ones(200, 2);
        FadeIn::new(100).apply(&mut b, 0);
        assert_eq!(b.plane(0)[0], 0.0);
        assert!((b.plane(1)[50] - 0.5).abs() < 1e-6);
        assert_eq!(b.plane(0)[100], 1.0);
        assert_eq!(b.plane(0)[199], 1.0);

        let mut b = ones(200, 1);
        FadeOut::new(100, 50)
            .with_curve(FadeCurve::EqualPower)
            .apply(&mut b, 0);
        assert_eq!(b.plane(0)[99], 1.0);
        assert_eq!(b.plane(0)[100], 1.0);
        let mid = b.plane(0)[125];
        assert!(
            (mid - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6,
            "{mid}"
        );
        assert!(b.plane(0)[150..].iter().all(|&s| s == 0.0));

        // Equal power: sin^2 + cos^2 = 1 at every point of the ramp.
        let mut a = ones(64, 1);
        let mut c = ones(64, 1);
        FadeIn::new(64)
            .with_curve(FadeCurve::EqualPower)
            .apply(&mut a, 0);
        FadeOut::new(0, 64)
            .with_curve(FadeCurve::EqualPower)
            .apply(&mut c, 0);
        for (x, y) in a.plane(0).iter().zip(c.plane(0)) {
            assert!((x * x + y * y - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn block_splits_do_not_change_the_result() {
        let input = noise(48_000);
        let make = || {
            EffectChain::new()
                .with_gain(Gain::new(9.0).unwrap())
                .with_fade_in(FadeIn::new(4_800).with_curve(FadeCurve::EqualPower))
                .with_fade_out(FadeOut::new(40_000, 6_000))
        };
        let mut whole = input.clone();
        make().process(&mut whole);

        let mut chain = make();
        let mut split = PcmBuffer::new(input.spec());
        let mut block = PcmBuffer::new(input.spec());
        let mut pos = 0;
        for size in [1, 7, 4_792, 1, 999, 35_000, 4_000, 10_000].iter().cycle() {
            if pos >= input.frames() {
                break;
            }
            let n = (*size).min(input.frames() - pos);
            block.clear();
            for (dst, src) in block.planes_mut().iter_mut().zip(input.planes()) {
                dst.extend_from_slice(&src[pos..pos + n]);
            }
            chain.process(&mut block);
            split.extend_from(&block);
            pos += n;
        }
        assert_eq!(chain.position(), 48_000);
        assert_eq!(whole, split);
        assert!(whole.plane(0)[46_000..].iter().all(|&s| s == 0.0));
    }
}
