//! Print what a file is: `probe FILE [--json] [--no-loudness]`.
//!
//! Format, codec, duration, rate, channels, bit depth, bitrate and tags, then EBU R128
//! loudness (integrated, range, true peak) measured by decoding the whole file.

use std::process::ExitCode;

use veza_audio::decode::{Decoder, DecoderOptions};
use veza_audio::loudness::LoudnessMeter;
use veza_examples::Args;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("probe: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut a = Args::from_env();
    let json = a.flag("--json");
    let no_loudness = a.flag("--no-loudness");
    let pos = a.positional()?;
    let [path] = pos.as_slice() else {
        return Err("usage: probe FILE [--json] [--no-loudness]".into());
    };
    let mut dec =
        Decoder::open_path(path, DecoderOptions::default()).map_err(|e| format!("{path}: {e}"))?;
    let info = dec.info().clone();
    let mut loudness = None;
    let mut frames = 0u64;
    if !no_loudness {
        let mut meter = LoudnessMeter::new(dec.spec()).map_err(|e| e.to_string())?;
        let spec = dec.spec();
        while let Some(block) = dec.next_block().map_err(|e| e.to_string())? {
            frames += block.frames() as u64;
            if block.spec() == spec {
                meter.push(block).map_err(|e| e.to_string())?;
            }
        }
        loudness = Some(meter.report().map_err(|e| e.to_string())?);
    }
    let duration = info.duration().map(|d| d.as_secs_f64());
    if json {
        let v = serde_json::json!({
            "file": path,
            "info": info,
            "duration_secs": duration,
            "decoded_frames": (!no_loudness).then_some(frames),
            "loudness": loudness,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!("file:        {path}");
    println!("container:   {}", info.container);
    println!(
        "codec:       {}{}",
        info.codec,
        info.codec_profile
            .as_deref()
            .map(|p| format!(" ({p})"))
            .unwrap_or_default()
    );
    println!("sample rate: {} Hz", info.sample_rate.hz());
    println!("channels:    {}", info.channels);
    if let Some(b) = info.bits_per_sample {
        println!("bit depth:   {b}");
    }
    match duration {
        Some(d) => println!("duration:    {d:.3} s"),
        None => println!("duration:    unknown"),
    }
    if let Some(b) = info.bitrate {
        println!("bitrate:     {b}");
    }
    for (k, v) in info.tags.pairs() {
        println!("tag {k:<8} {v}");
    }
    if let Some(l) = loudness {
        let show = |v: Option<f64>, unit: &str| {
            v.map_or("n/a (silence)".to_string(), |v| format!("{v:.2} {unit}"))
        };
        println!("loudness:    {}", show(l.integrated_lufs, "LUFS"));
        println!("range:       {:.2} LU", l.loudness_range_lu);
        println!("true peak:   {}", show(l.true_peak_dbtp, "dBTP"));
    }
    Ok(())
}
