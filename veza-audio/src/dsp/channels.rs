//! Channel-count conversion (up-mix from mono, down-mix to stereo or mono).
//!
//! | from | to | how |
//! |---|---|---|
//! | n | n | copied unchanged |
//! | 1 | any | the mono channel duplicated to every output channel |
//! | 2 | 1 | `0.5 L + 0.5 R` |
//! | 3..=8 | 2 | ITU-R BS.775 down-mix (below) |
//! | 3..=8 | 1 | the BS.775 stereo down-mix, then `0.5 L + 0.5 R` |
//! | 9.. | 1 | the mean of all channels |
//! | anything else (e.g. 2 -> 6, 6 -> 4) | | [`AudioError::InvalidConfig`] |
//!
//! Multichannel inputs follow the standard WAV/FLAC channel orders:
//!
//! | channels | order |
//! |---|---|
//! | 3 | FL FR FC |
//! | 4 | FL FR BL BR (quad) |
//! | 5 | FL FR FC BL BR |
//! | 6 | FL FR FC LFE BL BR (5.1) |
//! | 7 | FL FR FC LFE BC SL SR (6.1) |
//! | 8 | FL FR FC LFE BL BR SL SR (7.1) |
//!
//! The BS.775 down-mix takes `L = FL + k FC + k LS`, `R = FR + k FC + k RS` with `k = 1/sqrt 2`
//! (-3 dB) for the centre and each surround (back and side channels alike); a back-centre
//! channel goes to both sides at `k * k` (-3 dB, split in power); the LFE channel is dropped.
//! Each row is then divided by the sum of its coefficients, so a full-scale input cannot clip
//! (5.1: `L = (FL + 0.707 FC + 0.707 BL) / 2.414`).
//!
//! Why no `dasp` here: dasp's `Frame`/`Signal` types work on interleaved fixed-size frames,
//! while the engine's PCM is planar `f32`; going through them would add a copy per sample and
//! no accuracy. The matrix is a few multiply-adds over whole planes, which is plain and fast.
//!
//! Allocation: [`ChannelMixer::new`] allocates the matrix; [`ChannelMixer::process`] allocates
//! nothing beyond growing the caller's output buffer (none once it has the room).

use crate::error::{AudioError, Result};
use crate::format::AudioSpec;
use crate::pcm::PcmBuffer;

/// -3 dB, the BS.775 weight of the centre and surround channels.
const K: f32 = std::f32::consts::FRAC_1_SQRT_2;

/// Converts planar PCM from one channel count to another (see the module docs for the rules).
#[derive(Debug, Clone)]
pub struct ChannelMixer {
    from: usize,
    to: usize,
    /// `to` rows of `from` coefficients; output channel `o` = sum of `matrix[o][i] * in[i]`.
    matrix: Vec<Vec<f32>>,
}

impl ChannelMixer {
    /// A mixer from `from` to `to` channels.
    ///
    /// # Errors
    /// [`AudioError::InvalidConfig`] when a count is 0 or above [`AudioSpec::MAX_CHANNELS`],
    /// or the conversion is not one of those in the module docs.
    pub fn new(from: usize, to: usize) -> Result<Self> {
        let max = usize::from(AudioSpec::MAX_CHANNELS);
        if from == 0 || to == 0 || from > max || to > max {
            return Err(AudioError::config(format!(
                "channel mixer: {from} -> {to} channels"
            )));
        }
        let matrix = if from == to {
            (0..to)
                .map(|o| (0..from).map(|i| if i == o { 1.0 } else { 0.0 }).collect())
                .collect()
        } else if from == 1 {
            vec![vec![1.0]; to]
        } else if to == 1 {
            let row = match from {
                2 => vec![0.5, 0.5],
                3..=8 => {
                    let stereo = Self::bs775(from)?;
                    stereo[0]
                        .iter()
                        .zip(&stereo[1])
                        .map(|(l, r)| 0.5 * (l + r))
                        .collect()
                }
                n => vec![1.0 / n as f32; n],
            };
            vec![row]
        } else if to == 2 && (3..=8).contains(&from) {
            Self::bs775(from)?
        } else {
            return Err(AudioError::config(format!(
                "channel mixer: no {from} -> {to} channel conversion (only up-mix from mono, \
                 down-mix to mono, and 3-8 channels down to stereo)"
            )));
        };
        Ok(ChannelMixer { from, to, matrix })
    }

    /// The ITU-R BS.775 stereo down-mix of a 3- to 8-channel layout, rows normalised.
    fn bs775(from: usize) -> Result<Vec<Vec<f32>>> {
        // (left weight, right weight) of each input channel, in WAV/FLAC order.
        let front = [(1.0, 0.0), (0.0, 1.0)];
        let c = (K, K);
        let lfe = (0.0, 0.0);
        let ls = (K, 0.0);
        let rs = (0.0, K);
        let bc = (K * K, K * K);
        let layout: &[(f32, f32)] = match from {
            3 => &[front[0], front[1], c],
            4 => &[front[0], front[1], ls, rs],
            5 => &[front[0], front[1], c, ls, rs],
            6 => &[front[0], front[1], c, lfe, ls, rs],
            7 => &[front[0], front[1], c, lfe, bc, ls, rs],
            8 => &[front[0], front[1], c, lfe, ls, rs, ls, rs],
            _ => {
                return Err(AudioError::config(format!(
                    "no BS.775 layout for {from} channels"
                )));
            }
        };
        let normalise = |row: Vec<f32>| {
            let sum: f32 = row.iter().sum();
            row.into_iter().map(|w| w / sum).collect::<Vec<f32>>()
        };
        Ok(vec![
            normalise(layout.iter().map(|w| w.0).collect()),
            normalise(layout.iter().map(|w| w.1).collect()),
        ])
    }

    /// The input channel count.
    pub fn from_channels(&self) -> usize {
        self.from
    }

    /// The output channel count.
    pub fn to_channels(&self) -> usize {
        self.to
    }

    /// The mixing weights: `to` rows of `from` coefficients.
    pub fn matrix(&self) -> &[Vec<f32>] {
        &self.matrix
    }

    /// Mixes `input` and appends the frames to `out`.
    ///
    /// `out` must have `to` channels at the input's rate, or be empty (it is then reset to
    /// that spec). Allocates nothing once `out` has room for the frames.
    ///
    /// # Errors
    /// [`AudioError::InvalidConfig`] when `input` does not have `from` channels, or `out`
    /// holds frames of another spec.
    pub fn process(&mut self, input: &PcmBuffer, out: &mut PcmBuffer) -> Result<()> {
        if input.channels() != self.from {
            return Err(AudioError::config(format!(
                "channel mixer input has {} channels, expected {}",
                input.channels(),
                self.from
            )));
        }
        let channels = u16::try_from(self.to)
            .map_err(|_| AudioError::config("channel mixer: channel count"))?;
        let spec = AudioSpec {
            sample_rate: input.sample_rate(),
            channels,
        };
        if out.spec() != spec {
            if !out.is_empty() {
                return Err(AudioError::config(format!(
                    "channel mixer output buffer is {} Hz x {}, expected {} Hz x {}",
                    out.sample_rate().hz(),
                    out.channels(),
                    spec.sample_rate.hz(),
                    self.to
                )));
            }
            out.reset(spec);
        }
        let frames = input.frames();
        for (dst, row) in out.planes_mut().iter_mut().zip(&self.matrix) {
            let start = dst.len();
            dst.resize(start + frames, 0.0);
            let Some(dst) = dst.get_mut(start..) else {
                continue;
            };
            for (src, &w) in input.planes().iter().zip(row) {
                // 0 + 1 * s is exact, so copies and duplicates stay bit-exact.
                if w != 0.0 {
                    for (d, &s) in dst.iter_mut().zip(src) {
                        *d += w * s;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(planes: Vec<Vec<f32>>) -> PcmBuffer {
        PcmBuffer::from_planes(AudioSpec::new(48_000, planes.len() as u16).unwrap(), planes)
    }

    fn mix(from: usize, to: usize, input: &PcmBuffer) -> PcmBuffer {
        let mut m = ChannelMixer::new(from, to).unwrap();
        let mut out = PcmBuffer::new(AudioSpec::new(48_000, to as u16).unwrap());
        m.process(input, &mut out).unwrap();
        out
    }

    #[test]
    fn mono_to_stereo_duplicates() {
        let out = mix(1, 2, &buf(vec![vec![0.1, -0.2, 0.3]]));
        assert_eq!(out.plane(0), &[0.1, -0.2, 0.3]);
        assert_eq!(out.plane(1), &[0.1, -0.2, 0.3]);
        let out = mix(1, 6, &buf(vec![vec![0.5]]));
        assert!(out.planes().iter().all(|p| p == &[0.5]));
    }

    #[test]
    fn stereo_to_mono_averages() {
        let out = mix(2, 1, &buf(vec![vec![1.0, 0.2], vec![0.0, -0.2]]));
        assert_eq!(out.plane(0), &[0.5, 0.0]);
    }

    #[test]
    fn five_one_follows_bs775_and_cannot_clip() {
        // One frame per channel test: each input channel alone at full scale.
        let sum = 1.0 + 2.0 * K;
        let cases: [(usize, f32, f32); 6] = [
            (0, 1.0 / sum, 0.0),   // FL
            (1, 0.0, 1.0 / sum),   // FR
            (2, K / sum, K / sum), // FC at -3 dB
            (3, 0.0, 0.0),         // LFE dropped
            (4, K / sum, 0.0),     // BL at -3 dB
            (5, 0.0, K / sum),     // BR at -3 dB
        ];
        for (ch, l, r) in cases {
            let mut planes = vec![vec![0.0]; 6];
            planes[ch][0] = 1.0;
            let out = mix(6, 2, &buf(planes));
            assert!((out.plane(0)[0] - l).abs() < 1e-6, "ch {ch} left");
            assert!((out.plane(1)[0] - r).abs() < 1e-6, "ch {ch} right");
        }
        // All channels at full scale, same polarity (the worst case): exactly 1.0.
        for from in 3..=8 {
            let out = mix(from, 2, &buf(vec![vec![1.0, -1.0]; from]));
            for p in out.planes() {
                assert!(
                    p[0] <= 1.0 + 1e-6 && p[0] > 0.99,
                    "{from} channels: {}",
                    p[0]
                );
                assert!(p[1] >= -1.0 - 1e-6, "{from} channels");
            }
            let mono = mix(from, 1, &buf(vec![vec![1.0]; from]));
            assert!(mono.plane(0)[0] <= 1.0 + 1e-6);
        }
    }

    #[test]
    fn multichannel_to_mono_goes_through_stereo() {
        let planes = vec![
            vec![0.3],
            vec![-0.1],
            vec![0.2],
            vec![0.9],
            vec![0.4],
            vec![0.0],
        ];
        let input = buf(planes);
        let stereo = mix(6, 2, &input);
        let mono = mix(6, 1, &input);
        let expect = 0.5 * (stereo.plane(0)[0] + stereo.plane(1)[0]);
        assert!((mono.plane(0)[0] - expect).abs() < 1e-6);
        // Beyond 8 channels, mono is the mean.
        let out = mix(10, 1, &buf(vec![vec![0.5]; 10]));
        assert!((out.plane(0)[0] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn same_count_copies_and_appends() {
        let input = buf(vec![vec![0.1, 0.2], vec![0.3, 0.4]]);
        let mut m = ChannelMixer::new(2, 2).unwrap();
        let mut out = PcmBuffer::new(input.spec());
        m.process(&input, &mut out).unwrap();
        m.process(&input, &mut out).unwrap();
        assert_eq!(out.plane(0), &[0.1, 0.2, 0.1, 0.2]);
        assert_eq!(out.plane(1), &[0.3, 0.4, 0.3, 0.4]);
    }

    #[test]
    fn rejects_unsupported_conversions() {
        for (from, to) in [(2, 6), (6, 4), (9, 2), (0, 2), (2, 0), (2, 33), (4, 3)] {
            assert!(
                matches!(
                    ChannelMixer::new(from, to),
                    Err(AudioError::InvalidConfig(_))
                ),
                "{from} -> {to}"
            );
        }
        let mut m = ChannelMixer::new(2, 1).unwrap();
        let mut out = PcmBuffer::new(AudioSpec::new(48_000, 1).unwrap());
        let wrong = buf(vec![vec![0.0]; 3]);
        assert!(matches!(
            m.process(&wrong, &mut out),
            Err(AudioError::InvalidConfig(_))
        ));
    }
}
