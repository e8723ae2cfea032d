//! Transcode one file: `transcode INPUT -o OUTPUT [--format mp3|flac|aac|m4a|ogg|wav]
//! [--bitrate KBPS] [--quality low|medium|high] [--rate HZ] [--channels N] [--normalize LUFS]
//! [--threads N]`. `--threads` uses N cores (0 = one per core; default 1): FLAC encodes frames
//! in parallel, MP3 and AAC encode segments in parallel and splice them, other formats decode on
//! one thread and encode on another.
//!
//! `--demo` instead of INPUT generates a 30-second synthetic stereo WAV (`--demo-seconds N`)
//! in the system's temporary directory and transcodes that.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use veza_audio::presets::{Quality, preset};
use veza_audio::transcode::{OutputSettings, TranscodeOptions, transcode_path_with_progress};
use veza_audio::{Bitrate, OutputFormat, RateControl, SampleRate};
use veza_examples::Args;

const USAGE: &str = "usage: transcode INPUT -o OUTPUT [--format mp3|flac|aac|m4a|ogg|wav] [--bitrate KBPS] \
[--vbr Q0-10] [--quality low|medium|high] [--rate HZ] [--channels N] [--normalize LUFS] [--gain DB] \
[--fade-in SECS] [--fade-out SECS] [--threads N] [--no-progress]\n       transcode --demo [--demo-seconds N] -o OUTPUT ...";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("transcode: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut a = Args::from_env();
    if a.flag("-h") || a.flag("--help") {
        println!("{USAGE}");
        return Ok(());
    }
    let output: PathBuf = a.value(&["-o", "--output"])?.ok_or(USAGE)?.into();
    let format = match a.parsed::<OutputFormat>(&["--format", "-f"])? {
        Some(f) => f,
        None => output
            .extension()
            .and_then(|e| e.to_str())
            .and_then(OutputFormat::from_extension)
            .ok_or("cannot tell the format from the output's extension; use --format")?,
    };
    let quality = a.parsed::<Quality>(&["--quality", "-q"])?;
    let bitrate = a.parsed::<u32>(&["--bitrate", "-b"])?;
    let vbr = a.parsed::<f32>(&["--vbr"])?;
    let rate = a.parsed::<u32>(&["--rate", "-r"])?;
    let channels = a.parsed::<u16>(&["--channels", "-c"])?;
    let normalize = a.parsed::<f64>(&["--normalize"])?;
    let gain = a.parsed::<f64>(&["--gain"])?;
    let fade_in = a.parsed::<f64>(&["--fade-in"])?;
    let fade_out = a.parsed::<f64>(&["--fade-out"])?;
    let demo = a.flag("--demo");
    let demo_seconds = a.parsed::<f64>(&["--demo-seconds"])?.unwrap_or(30.0);
    let threads = match a.parsed::<usize>(&["--threads", "-j"])?.unwrap_or(1) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let no_progress = a.flag("--no-progress");
    let pos = a.positional()?;

    let input: PathBuf = if demo {
        let p = std::env::temp_dir().join(format!("veza-demo-{demo_seconds}s.wav"));
        veza_examples::write_demo_wav(&p, demo_seconds, 44_100)
            .map_err(|e| format!("writing the demo input: {e}"))?;
        p
    } else {
        match pos.as_slice() {
            [one] => one.into(),
            _ => return Err(USAGE.into()),
        }
    };

    let mut settings: OutputSettings = match quality {
        Some(q) => preset(format, q),
        None => OutputSettings::new(format),
    };
    if let Some(k) = bitrate {
        settings.rate_control = Some(RateControl::Cbr(Bitrate::kbps(k)));
    }
    if let Some(q) = vbr {
        settings.rate_control = Some(RateControl::Vbr(q));
    }
    if let Some(hz) = rate {
        settings.sample_rate = Some(SampleRate::new(hz).map_err(|e| e.to_string())?);
    }
    settings.channels = channels;
    settings.flac_threads = threads;
    let mut opts = TranscodeOptions::new(format);
    opts.output = Some(settings);
    opts.threads = threads;
    opts.processing.normalize_lufs = normalize;
    opts.processing.gain_db = gain;
    opts.processing.fade_in = fade_in.map(Duration::from_secs_f64);
    opts.processing.fade_out = fade_out.map(Duration::from_secs_f64);

    let bar = if no_progress {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(1000)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {percent:>3}% {msg}").map_err(|e| e.to_string())?,
    );
    let started = Instant::now();
    let mut last_draw = Instant::now();
    let report = transcode_path_with_progress(&input, &output, &opts, &mut |p| {
        if last_draw.elapsed() < Duration::from_millis(100) {
            return;
        }
        last_draw = Instant::now();
        let secs = p.frames_done as f64 / f64::from(p.sample_rate.hz());
        let speed = secs / started.elapsed().as_secs_f64().max(1e-9);
        if let Some(total) = p.frames_total.filter(|&t| t > 0) {
            bar.set_position((p.frames_done.min(total) * 1000) / total);
        }
        bar.set_message(format!("{secs:.1} s, {speed:.1}x realtime"));
    })
    .map_err(|e| format!("{} -> {}: {e}", input.display(), output.display()))?;
    bar.finish_and_clear();
    let wall = started.elapsed().as_secs_f64();
    let dur = report.duration_secs();
    println!(
        "{} ({} {} Hz {} ch, {:.2} s) -> {} ({} {} Hz {} ch, {}) in {:.2} s, {:.1}x realtime{}",
        display(&input),
        report.source.codec,
        report.source.sample_rate.hz(),
        report.source.channels,
        dur,
        display(&output),
        report.format,
        report.output_spec.sample_rate.hz(),
        report.output_spec.channels,
        human_bytes(report.bytes_written),
        wall,
        dur / wall.max(1e-9),
        report
            .normalization_gain_db
            .map(|g| format!(", normalised by {g:+.2} dB"))
            .unwrap_or_default(),
    );
    Ok(())
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

fn human_bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.2} MB", n as f64 / 1e6)
    } else {
        format!("{:.1} kB", n as f64 / 1e3)
    }
}
