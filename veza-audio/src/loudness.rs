//! Loudness measurement (EBU R128 / ITU-R BS.1770) over the `ebur128` crate.
//!
//! [`LoudnessMeter`] takes planar PCM blocks as they stream by and reports integrated loudness,
//! loudness range, true peak and sample peak ([`LoudnessReport`]). It feeds `ebur128` the
//! planes directly (no interleaving copy) and uses its histogram mode, so memory stays
//! constant whatever the length (the integrated loudness and range are then exact to the
//! histogram's 0.1 LU bins). Nothing is allocated after [`LoudnessMeter::new`].
//!
//! Channels are weighted per BS.1770: for 6 channels (5.1: FL FR FC LFE BL BR) the LFE is
//! ignored and the surrounds count +1.5 dB (x1.41 in power); 3 and 5 channels are taken as
//! FL FR FC (BL BR), 4 as quad, 7 as 6.1 (FL FR FC LFE BC SL SR) and 8 as 7.1
//! (FL FR FC LFE BL BR SL SR), with side channels weighted like surrounds and LFE ignored.
//! Other channel counts weigh every channel 1.0.
//!
//! Silence: with no block above the -70 LUFS absolute gate the integrated loudness is `None`,
//! and all-zero input has no peak (`None`); the loudness range is 0.0 until there are enough
//! short-term blocks to measure one. `None` rather than `-inf` keeps the report
//! JSON-serialisable.

use ebur128::{Channel, EbuR128, Mode};

use crate::error::{AudioError, Result};
use crate::format::AudioSpec;
use crate::pcm::PcmBuffer;

/// What a [`LoudnessMeter`] measured.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LoudnessReport {
    /// Integrated (programme) loudness in LUFS, gated per BS.1770; `None` when nothing rose
    /// above the -70 LUFS absolute gate (silence, or too short: under 400 ms).
    pub integrated_lufs: Option<f64>,
    /// Loudness range in LU (EBU Tech 3342); 0.0 when too short or too quiet to measure.
    pub loudness_range_lu: f64,
    /// Highest true (inter-sample, 4x oversampled below 96 kHz) peak over all channels, in
    /// dBTP; `None` for digital silence.
    pub true_peak_dbtp: Option<f64>,
    /// Highest sample peak over all channels, in dBFS; `None` for digital silence.
    pub sample_peak_dbfs: Option<f64>,
}

impl LoudnessReport {
    /// The gain in dB that brings the integrated loudness to `target_lufs`, reduced where
    /// needed so the true peak after the gain stays at or below `true_peak_ceiling_dbtp`.
    ///
    /// That is `min(target - integrated, ceiling - true_peak)`. It may be negative (the
    /// audio is too loud, or its peaks are too close to the ceiling). Returns 0.0 when there is
    /// no integrated loudness (silence) or when an argument is not finite. The gain is a
    /// straight factor: no limiter is assumed, so a loud-peaked quiet track may end below the
    /// target.
    pub fn normalization_gain_db(&self, target_lufs: f64, true_peak_ceiling_dbtp: f64) -> f64 {
        let Some(integrated) = self.integrated_lufs else {
            return 0.0;
        };
        if !target_lufs.is_finite() || !true_peak_ceiling_dbtp.is_finite() {
            return 0.0;
        }
        let toward_target = target_lufs - integrated;
        match self.true_peak_dbtp.or(self.sample_peak_dbfs) {
            Some(peak) => toward_target.min(true_peak_ceiling_dbtp - peak),
            None => toward_target,
        }
    }
}

/// Streams PCM through an EBU R128 meter (integrated loudness, loudness range, true and
/// sample peak).
pub struct LoudnessMeter {
    spec: AudioSpec,
    inner: EbuR128,
}

impl std::fmt::Debug for LoudnessMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoudnessMeter")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

/// Converts an amplitude to dB; `None` for zero (or anything not positive and finite).
fn amplitude_db(a: f64) -> Option<f64> {
    (a > 0.0 && a.is_finite()).then(|| 20.0 * a.log10())
}

impl LoudnessMeter {
    /// A meter for PCM of `spec`.
    ///
    /// # Errors
    /// [`AudioError::InvalidConfig`] when `ebur128` refuses the spec (it needs 16 Hz or more).
    pub fn new(spec: AudioSpec) -> Result<Self> {
        let mode = Mode::I | Mode::LRA | Mode::TRUE_PEAK | Mode::SAMPLE_PEAK | Mode::HISTOGRAM;
        let setup_error = |e: ebur128::Error| {
            AudioError::config(format!(
                "loudness meter for {} Hz x {}: {e}",
                spec.sample_rate.hz(),
                spec.channels
            ))
        };
        let mut inner = EbuR128::new(u32::from(spec.channels), spec.sample_rate.hz(), mode)
            .map_err(setup_error)?;
        if let Some(map) = Self::channel_map(spec.channels) {
            inner.set_channel_map(map).map_err(setup_error)?;
        }
        Ok(LoudnessMeter { spec, inner })
    }

    /// The BS.1770 channel positions for the standard WAV/FLAC layouts of 3 to 8 channels.
    fn channel_map(channels: u16) -> Option<&'static [Channel]> {
        use Channel::{
            Center as C, Left as L, LeftSurround as Ls, Mm090, Mm135, Mp090, Mp135, Mp180,
            Right as R, RightSurround as Rs, Unused as Lfe,
        };
        Some(match channels {
            3 => &[L, R, C],
            4 => &[L, R, Ls, Rs],
            5 => &[L, R, C, Ls, Rs],
            6 => &[L, R, C, Lfe, Ls, Rs],
            7 => &[L, R, C, Lfe, Mp180, Mp090, Mm090],
            // 7.1: the back pair at +-135 degrees (weight 1.0), the side pair at +-90 (1.41).
            8 => &[L, R, C, Lfe, Mp135, Mm135, Mp090, Mm090],
            _ => return None,
        })
    }

    /// The spec the meter was made for.
    pub fn spec(&self) -> AudioSpec {
        self.spec
    }

    /// Measures the frames of `pcm`.
    ///
    /// # Errors
    /// [`AudioError::InvalidConfig`] when `pcm` does not have the meter's spec;
    /// [`AudioError::Encoder`] (codec `"ebur128"`) if the meter fails.
    pub fn push(&mut self, pcm: &PcmBuffer) -> Result<()> {
        if pcm.spec() != self.spec {
            return Err(AudioError::config(format!(
                "loudness meter is for {} Hz x {}, got {} Hz x {}",
                self.spec.sample_rate.hz(),
                self.spec.channels,
                pcm.sample_rate().hz(),
                pcm.channels()
            )));
        }
        if pcm.is_empty() {
            return Ok(());
        }
        // One slice per plane, on the stack (the channel count is at most 32).
        let mut planes: [&[f32]; AudioSpec::MAX_CHANNELS as usize] =
            [&[]; AudioSpec::MAX_CHANNELS as usize];
        for (slot, plane) in planes.iter_mut().zip(pcm.planes()) {
            *slot = plane;
        }
        let planes = planes.get(..pcm.channels()).unwrap_or(&[]);
        self.inner
            .add_frames_planar_f32(planes)
            .map_err(|e| AudioError::encoder("ebur128", e))
    }

    /// The measurements so far (the meter goes on measuring if more is pushed).
    ///
    /// # Errors
    /// [`AudioError::Encoder`] (codec `"ebur128"`) if the meter fails.
    pub fn report(&self) -> Result<LoudnessReport> {
        let err = |e: ebur128::Error| AudioError::encoder("ebur128", e);
        let integrated = self.inner.loudness_global().map_err(err)?;
        let range = self.inner.loudness_range().map_err(err)?;
        let mut true_peak = 0.0_f64;
        let mut sample_peak = 0.0_f64;
        for ch in 0..u32::from(self.spec.channels) {
            true_peak = true_peak.max(self.inner.true_peak(ch).map_err(err)?);
            sample_peak = sample_peak.max(self.inner.sample_peak(ch).map_err(err)?);
        }
        Ok(LoudnessReport {
            integrated_lufs: integrated.is_finite().then_some(integrated),
            loudness_range_lu: if range.is_finite() { range } else { 0.0 },
            true_peak_dbtp: amplitude_db(true_peak),
            sample_peak_dbfs: amplitude_db(sample_peak),
        })
    }

    /// Forgets everything measured, to meter a new stream of the same spec.
    pub fn reset(&mut self) {
        self.inner.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn sine(hz: u32, channels: u16, freq: f64, dbfs: f64, secs: f64) -> PcmBuffer {
        let amp = 10f64.powf(dbfs / 20.0);
        let frames = (f64::from(hz) * secs) as usize;
        let plane: Vec<f32> = (0..frames)
            .map(|i| (amp * (2.0 * PI * freq * i as f64 / f64::from(hz)).sin()) as f32)
            .collect();
        PcmBuffer::from_planes(
            AudioSpec::new(hz, channels).unwrap(),
            vec![plane; channels.into()],
        )
    }

    fn measure(pcm: &PcmBuffer, block: usize) -> LoudnessReport {
        let mut m = LoudnessMeter::new(pcm.spec()).unwrap();
        let mut b = PcmBuffer::new(pcm.spec());
        let mut pos = 0;
        while pos < pcm.frames() {
            let n = block.min(pcm.frames() - pos);
            b.clear();
            for (dst, src) in b.planes_mut().iter_mut().zip(pcm.planes()) {
                dst.extend_from_slice(&src[pos..pos + n]);
            }
            m.push(&b).unwrap();
            pos += n;
        }
        m.report().unwrap()
    }

    #[test]
    fn r128_reference_sines() {
        // BS.1770: a 997 Hz sine at 0 dBFS on one channel reads -3.01 LKFS, so a -20 dBFS sine
        // reads -23.0 LUFS in mono; EBU Tech 3341 case 1: 1 kHz at -23 dBFS on both channels of
        // a stereo programme reads -23.0 LUFS (and so at -20 dBFS, -20.0 LUFS: the channels'
        // powers add up).
        for freq in [997.0, 1000.0] {
            for (channels, dbfs, lufs) in [(1, -20.0, -23.0), (2, -23.0, -23.0), (2, -20.0, -20.0)]
            {
                let r = measure(&sine(48_000, channels, freq, dbfs, 5.0), 4096);
                let i = r.integrated_lufs.unwrap();
                assert!(
                    (i - lufs).abs() < 0.2,
                    "{freq} Hz x{channels} at {dbfs} dBFS: {i} LUFS"
                );
                assert!(r.loudness_range_lu.abs() < 0.5, "steady tone has no range");
                let sp = r.sample_peak_dbfs.unwrap();
                assert!((sp - dbfs).abs() < 0.05, "sample peak {sp}");
            }
        }
        // Another rate, other block sizes.
        let i = measure(&sine(44_100, 2, 997.0, -23.0, 4.0), 333)
            .integrated_lufs
            .unwrap();
        assert!((i + 23.0).abs() < 0.2, "{i}");
    }

    #[test]
    fn true_peak_of_a_minus_6_dbfs_sine() {
        let r = measure(&sine(44_100, 2, 1000.0, -6.0, 2.0), 1000);
        let tp = r.true_peak_dbtp.unwrap();
        assert!((tp + 6.0).abs() < 0.2, "true peak {tp} dBTP");
        assert!(tp >= r.sample_peak_dbfs.unwrap() - 1e-9);
    }

    #[test]
    fn silence_reports_no_loudness() {
        let spec = AudioSpec::new(48_000, 2).unwrap();
        let silent = PcmBuffer::from_planes(spec, vec![vec![0.0; 96_000]; 2]);
        let r = measure(&silent, 4096);
        assert_eq!(r.integrated_lufs, None);
        assert_eq!(r.true_peak_dbtp, None);
        assert_eq!(r.sample_peak_dbfs, None);
        assert_eq!(r.loudness_range_lu, 0.0);
        assert_eq!(r.normalization_gain_db(-14.0, -1.0), 0.0);
        // Nothing pushed at all.
        let empty = LoudnessMeter::new(spec).unwrap().report().unwrap();
        assert_eq!(empty.integrated_lufs, None);
    }

    #[test]
    fn normalization_gain_toward_target_and_under_the_ceiling() {
        let r = measure(&sine(48_000, 2, 1000.0, -23.0, 3.0), 4096);
        let i = r.integrated_lufs.unwrap();
        let gain = r.normalization_gain_db(-14.0, -1.0);
        // -23 -> -14 is +9 dB; the true peak (-23 dBTP) + 9 = -14 stays under -1 dBTP.
        assert!((gain - (-14.0 - i)).abs() < 1e-9);
        assert!((gain - 9.0).abs() < 0.2, "{gain}");
        // A ceiling of -18 dBTP caps it at +5 dB.
        let capped = r.normalization_gain_db(-14.0, -18.0);
        assert!((capped - (-18.0 - r.true_peak_dbtp.unwrap())).abs() < 1e-9);
        assert!((capped - 5.0).abs() < 0.1, "{capped}");
        // Exact arithmetic on a hand-made report.
        let report = LoudnessReport {
            integrated_lufs: Some(-23.0),
            loudness_range_lu: 0.0,
            true_peak_dbtp: Some(-3.0),
            sample_peak_dbfs: Some(-3.5),
        };
        assert_eq!(report.normalization_gain_db(-14.0, 10.0), 9.0);
        assert_eq!(report.normalization_gain_db(-14.0, -1.0), 2.0);
        assert_eq!(report.normalization_gain_db(-30.0, -1.0), -7.0);
        assert_eq!(report.normalization_gain_db(f64::NAN, -1.0), 0.0);
    }

    #[test]
    fn five_one_ignores_lfe_and_weights_surrounds() {
        let spec = AudioSpec::new(48_000, 6).unwrap();
        let tone = sine(48_000, 1, 1000.0, -20.0, 3.0).plane(0).to_vec();
        let only = |ch: usize| {
            let mut planes = vec![vec![0.0; tone.len()]; 6];
            planes[ch] = tone.clone();
            measure(&PcmBuffer::from_planes(spec, planes), 4096)
        };
        let front = only(0).integrated_lufs.unwrap();
        // LFE alone: below the gate (ignored).
        assert_eq!(only(3).integrated_lufs, None);
        // A surround counts 1.5 dB more (10 log10 1.41).
        let surround = only(4).integrated_lufs.unwrap();
        assert!((surround - front - 1.49).abs() < 0.1, "{front} {surround}");
    }

    #[test]
    fn rejects_mismatched_buffers() {
        let mut m = LoudnessMeter::new(AudioSpec::new(48_000, 2).unwrap()).unwrap();
        let mono = sine(48_000, 1, 1000.0, -20.0, 0.1);
        assert!(matches!(m.push(&mono), Err(AudioError::InvalidConfig(_))));
        assert!(matches!(
            LoudnessMeter::new(AudioSpec::new(8, 2).unwrap()),
            Err(AudioError::InvalidConfig(_))
        ));
    }

    #[cfg(feature = "serde")]
    #[test]
    fn report_serialises_silence() {
        let r = LoudnessReport {
            integrated_lufs: None,
            loudness_range_lu: 0.0,
            true_peak_dbtp: None,
            sample_peak_dbfs: None,
        };
        let json = serde_json::to_string(&r).unwrap();
        let back: LoudnessReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }
}
