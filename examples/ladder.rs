//! One input to N outputs in one pass: `ladder INPUT --rung mp3:64 --rung mp3:128 --rung aac:96
//! [--out-dir DIR] [--threads N]`.
//!
//! A rung is `FORMAT[:KBPS[:RATE_HZ[:CHANNELS]]]`; outputs are named `NAME-FORMAT-KBPS.EXT` in
//! the output directory (default: the current one).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use veza_audio::ladder::{LadderOptions, ladder_path};
use veza_audio::transcode::OutputSettings;
use veza_audio::{Bitrate, OutputFormat, RateControl, SampleRate};
use veza_examples::Args;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ladder: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_rung(s: &str) -> Result<OutputSettings, String> {
    let mut parts = s.split(':');
    let format: OutputFormat = parts
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|e: veza_audio::AudioError| e.to_string())?;
    let mut settings = OutputSettings::new(format);
    if let Some(k) = parts.next().filter(|k| !k.is_empty()) {
        let k: u32 = k
            .parse()
            .map_err(|_| format!("bad bitrate in rung {s:?}"))?;
        settings.rate_control = Some(match format {
            OutputFormat::Ogg => RateControl::Abr(Bitrate::kbps(k)),
            _ => RateControl::Cbr(Bitrate::kbps(k)),
        });
    }
    if let Some(r) = parts.next().filter(|r| !r.is_empty()) {
        let hz: u32 = r.parse().map_err(|_| format!("bad rate in rung {s:?}"))?;
        settings.sample_rate = Some(SampleRate::new(hz).map_err(|e| e.to_string())?);
    }
    if let Some(c) = parts.next().filter(|c| !c.is_empty()) {
        settings.channels = Some(
            c.parse()
                .map_err(|_| format!("bad channel count in rung {s:?}"))?,
        );
    }
    Ok(settings)
}

fn run() -> Result<(), String> {
    let mut a = Args::from_env();
    let rungs = a.values(&["--rung"])?;
    let out_dir: PathBuf = a
        .value(&["--out-dir", "-d"])?
        .unwrap_or_else(|| ".".into())
        .into();
    let threads = a.parsed::<usize>(&["--threads", "-j"])?.unwrap_or(0);
    let pos = a.positional()?;
    let [input] = pos.as_slice() else {
        return Err("usage: ladder INPUT --rung FORMAT[:KBPS[:RATE[:CH]]] ... [--out-dir DIR] [--threads N]".into());
    };
    if rungs.is_empty() {
        return Err("give at least one --rung".into());
    }
    let stem = Path::new(input)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("out")
        .to_string();
    let mut outputs = Vec::new();
    for r in &rungs {
        let settings = parse_rung(r)?;
        let kbps = settings
            .rate_control
            .and_then(RateControl::bitrate)
            .map_or("q".to_string(), |b| b.as_kbps().to_string());
        let name = format!(
            "{stem}-{}-{kbps}.{}",
            settings.format,
            settings.format.extension()
        );
        outputs.push((settings, out_dir.join(name)));
    }
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    let opts = LadderOptions {
        threads,
        ..LadderOptions::default()
    };
    let started = Instant::now();
    let report = ladder_path(Path::new(input), &outputs, &opts).map_err(|e| e.to_string())?;
    let wall = started.elapsed().as_secs_f64();
    let dur = report.frames_decoded as f64 / f64::from(report.source.sample_rate.hz());
    for ((_, path), r) in outputs.iter().zip(&report.rungs) {
        println!(
            "  {} ({} {} Hz {} ch, {:.1} kB)",
            path.display(),
            r.format,
            r.output_spec.sample_rate.hz(),
            r.output_spec.channels,
            r.bytes_written as f64 / 1e3
        );
    }
    println!(
        "{input}: {:.2} s of audio to {} renditions in {wall:.2} s, {:.1}x realtime, {} encoder thread(s)",
        dur,
        report.rungs.len(),
        dur / wall.max(1e-9),
        report.worker_threads.max(1)
    );
    Ok(())
}
