//! Planar 32-bit float PCM, the one sample format between the stages of the engine.

use crate::format::{AudioSpec, SampleRate};

/// A block of planar `f32` PCM (one `Vec` per channel, samples nominally in -1.0..=1.0).
///
/// Stages keep one `PcmBuffer` each and reuse it: [`PcmBuffer::clear`] keeps the allocation.
#[derive(Debug, Clone, PartialEq)]
pub struct PcmBuffer {
    spec: AudioSpec,
    planes: Vec<Vec<f32>>,
}

impl PcmBuffer {
    /// An empty buffer for `spec`.
    pub fn new(spec: AudioSpec) -> Self {
        PcmBuffer {
            spec,
            planes: vec![Vec::new(); usize::from(spec.channels)],
        }
    }

    /// An empty buffer for `spec` with room for `frames` frames per channel.
    pub fn with_capacity(spec: AudioSpec, frames: usize) -> Self {
        PcmBuffer {
            spec,
            planes: vec![Vec::with_capacity(frames); usize::from(spec.channels)],
        }
    }

    /// A buffer made from whole planes (test fixtures, callers with their own PCM).
    ///
    /// # Panics
    /// If the number of planes differs from `spec.channels` or the planes differ in length.
    pub fn from_planes(spec: AudioSpec, planes: Vec<Vec<f32>>) -> Self {
        assert_eq!(
            planes.len(),
            usize::from(spec.channels),
            "one plane per channel"
        );
        let len = planes.first().map_or(0, Vec::len);
        assert!(
            planes.iter().all(|p| p.len() == len),
            "planes of equal length"
        );
        PcmBuffer { spec, planes }
    }

    /// A buffer from interleaved samples.
    pub fn from_interleaved(spec: AudioSpec, samples: &[f32]) -> Self {
        let mut buf = PcmBuffer::new(spec);
        buf.push_interleaved(samples);
        buf
    }

    /// The rate and channel count.
    pub fn spec(&self) -> AudioSpec {
        self.spec
    }

    /// The sample rate.
    pub fn sample_rate(&self) -> SampleRate {
        self.spec.sample_rate
    }

    /// The number of channels.
    pub fn channels(&self) -> usize {
        self.planes.len()
    }

    /// Frames (samples per channel) held.
    pub fn frames(&self) -> usize {
        self.planes.first().map_or(0, Vec::len)
    }

    /// True when no frame is held.
    pub fn is_empty(&self) -> bool {
        self.frames() == 0
    }

    /// The samples of channel `ch`.
    ///
    /// # Panics
    /// If `ch` is not below [`PcmBuffer::channels`].
    pub fn plane(&self, ch: usize) -> &[f32] {
        &self.planes[ch]
    }

    /// All planes.
    pub fn planes(&self) -> &[Vec<f32>] {
        &self.planes
    }

    /// All planes, mutably (keep them the same length).
    pub fn planes_mut(&mut self) -> &mut [Vec<f32>] {
        &mut self.planes
    }

    /// Drops the samples, keeps the allocations.
    pub fn clear(&mut self) {
        for p in &mut self.planes {
            p.clear();
        }
    }

    /// Clears and changes the spec (reallocating planes only when the channel count changes).
    pub fn reset(&mut self, spec: AudioSpec) {
        self.spec = spec;
        self.planes
            .resize_with(usize::from(spec.channels), Vec::new);
        self.clear();
    }

    /// Appends the frames of `other` (same spec).
    ///
    /// # Panics
    /// If the channel counts differ.
    pub fn extend_from(&mut self, other: &PcmBuffer) {
        assert_eq!(self.channels(), other.channels(), "same channel count");
        for (dst, src) in self.planes.iter_mut().zip(&other.planes) {
            dst.extend_from_slice(src);
        }
    }

    /// Appends interleaved samples (a trailing partial frame is dropped).
    pub fn push_interleaved(&mut self, samples: &[f32]) {
        let ch = self.planes.len();
        if ch == 0 {
            return;
        }
        let frames = samples.len() / ch;
        for p in &mut self.planes {
            p.reserve(frames);
        }
        for frame in samples.chunks_exact(ch) {
            for (p, &s) in self.planes.iter_mut().zip(frame) {
                p.push(s);
            }
        }
    }

    /// Removes the first `frames` frames (all of them if fewer are held).
    pub fn consume_front(&mut self, frames: usize) {
        for p in &mut self.planes {
            let n = frames.min(p.len());
            p.drain(..n);
        }
    }

    /// Writes the frames as interleaved samples into `out` (cleared first).
    pub fn interleave_into(&self, out: &mut Vec<f32>) {
        out.clear();
        let frames = self.frames();
        out.reserve(frames * self.planes.len());
        for i in 0..frames {
            for p in &self.planes {
                out.push(p[i]);
            }
        }
    }

    /// Writes the frames as interleaved `i16` samples (clamped, rounded) into `out` (cleared).
    pub fn interleave_i16_into(&self, out: &mut Vec<i16>) {
        out.clear();
        let frames = self.frames();
        out.reserve(frames * self.planes.len());
        for i in 0..frames {
            for p in &self.planes {
                out.push(f32_to_i16(p[i]));
            }
        }
    }

    /// Duration of the held frames in seconds.
    pub fn duration_secs(&self) -> f64 {
        self.frames() as f64 / f64::from(self.spec.sample_rate.hz())
    }
}

/// Converts a float sample to `i16` with clamping and rounding.
#[inline]
pub fn f32_to_i16(s: f32) -> i16 {
    let v = (s * 32768.0).round();
    v.clamp(-32768.0, 32767.0) as i16
}

/// Converts a float sample to a signed integer of `bits` bits (8 to 32) with clamping.
#[inline]
pub fn f32_to_int(s: f32, bits: u32) -> i32 {
    let scale = (1u64 << (bits - 1)) as f64;
    let v = (f64::from(s) * scale).round();
    v.clamp(-scale, scale - 1.0) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleave_round_trip() {
        let spec = AudioSpec::new(8000, 2).unwrap();
        let buf = PcmBuffer::from_interleaved(spec, &[0.1, -0.1, 0.2, -0.2, 0.3]);
        assert_eq!(buf.frames(), 2);
        let mut out = Vec::new();
        buf.interleave_into(&mut out);
        assert_eq!(out, vec![0.1, -0.1, 0.2, -0.2]);
        assert_eq!(f32_to_i16(2.0), 32767);
        assert_eq!(f32_to_i16(-2.0), -32768);
        assert_eq!(f32_to_int(1.0, 24), (1 << 23) - 1);
    }
}
