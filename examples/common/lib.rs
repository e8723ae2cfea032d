//! Shared helpers of the example programs: a tiny argument reader and input generation.

use std::path::Path;

/// Command-line arguments, read flag by flag.
#[derive(Debug)]
pub struct Args {
    args: Vec<String>,
}

impl Args {
    /// The process arguments (without the program name).
    pub fn from_env() -> Self {
        Args {
            args: std::env::args().skip(1).collect(),
        }
    }

    /// True (and removed) when `flag` is present.
    pub fn flag(&mut self, flag: &str) -> bool {
        match self.args.iter().position(|a| a == flag) {
            Some(i) => {
                self.args.remove(i);
                true
            }
            None => false,
        }
    }

    /// The value after the first `name` (removed), if any.
    pub fn value(&mut self, names: &[&str]) -> Result<Option<String>, String> {
        let Some(i) = self.args.iter().position(|a| names.contains(&a.as_str())) else {
            return Ok(None);
        };
        if i + 1 >= self.args.len() {
            return Err(format!("{} needs a value", names[0]));
        }
        let v = self.args.remove(i + 1);
        self.args.remove(i);
        Ok(Some(v))
    }

    /// Every value after each `name` (removed).
    pub fn values(&mut self, names: &[&str]) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        while let Some(v) = self.value(names)? {
            out.push(v);
        }
        Ok(out)
    }

    /// A parsed value after `name`.
    pub fn parsed<T: std::str::FromStr>(&mut self, names: &[&str]) -> Result<Option<T>, String>
    where
        T::Err: std::fmt::Display,
    {
        match self.value(names)? {
            Some(v) => v
                .parse::<T>()
                .map(Some)
                .map_err(|e| format!("{}: {e}", names[0])),
            None => Ok(None),
        }
    }

    /// The remaining positional arguments; an unknown `-flag` is an error.
    pub fn positional(self) -> Result<Vec<String>, String> {
        if let Some(f) = self.args.iter().find(|a| a.starts_with('-') && a.len() > 1) {
            return Err(format!("unknown option {f}"));
        }
        Ok(self.args)
    }
}

/// Writes `seconds` of a synthetic music-like stereo signal (chords, a melody, noise bursts)
/// as a 16-bit WAV at `rate`. Deterministic: the same call writes the same bytes.
pub fn write_demo_wav(path: &Path, seconds: f64, rate: u32) -> std::io::Result<()> {
    use std::io::Write;
    let frames = (seconds * f64::from(rate)) as u32;
    let data_len = frames * 4;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    w.write_all(b"RIFF")?;
    w.write_all(&(36 + data_len).to_le_bytes())?;
    w.write_all(b"WAVEfmt ")?;
    w.write_all(&16u32.to_le_bytes())?;
    w.write_all(&1u16.to_le_bytes())?;
    w.write_all(&2u16.to_le_bytes())?;
    w.write_all(&rate.to_le_bytes())?;
    w.write_all(&(rate * 4).to_le_bytes())?;
    w.write_all(&4u16.to_le_bytes())?;
    w.write_all(&16u16.to_le_bytes())?;
    w.write_all(b"data")?;
    w.write_all(&data_len.to_le_bytes())?;
    let mut seed: u32 = 0x1234_5678;
    let chords = [
        [220.0, 277.18, 329.63],
        [196.0, 246.94, 293.66],
        [174.61, 220.0, 261.63],
        [164.81, 207.65, 246.94],
    ];
    let melody = [
        440.0, 493.88, 523.25, 587.33, 659.25, 587.33, 523.25, 493.88,
    ];
    let tau = std::f64::consts::TAU;
    for n in 0..frames {
        let t = f64::from(n) / f64::from(rate);
        let chord = chords[(t / 2.0) as usize % chords.len()];
        let note = melody[(t * 4.0) as usize % melody.len()];
        let env = 0.5 + 0.5 * (tau * 0.25 * t).sin();
        let mut l = 0.0;
        let mut r = 0.0;
        for (k, f) in chord.iter().enumerate() {
            let s = (tau * f * t).sin() + 0.3 * (tau * 2.0 * f * t).sin();
            l += s * if k == 0 { 0.16 } else { 0.1 };
            r += s * if k == 2 { 0.16 } else { 0.1 };
        }
        let beat = (t * 4.0).fract();
        let m = (tau * note * t).sin() * 0.2 * (1.0 - beat).powi(2) * env;
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let noise = (f64::from(seed >> 8) / f64::from(1u32 << 24) - 0.5)
            * 0.08
            * (1.0 - beat * 4.0).max(0.0);
        l += m + noise;
        r += m * 0.8 + noise;
        for s in [l, r] {
            let v = (s * 32767.0).clamp(-32768.0, 32767.0) as i16;
            w.write_all(&v.to_le_bytes())?;
        }
    }
    w.flush()
}
