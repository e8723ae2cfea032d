//! The ABR module behind the JSON-lines protocol of the `abr-sim` harness
//! (`../shared/abr-sim/PROTOCOL.md`): `python3 -m abrsim run --traces ../abr-traces
//! --algo 'cmd:PATH/TO/abr_sim [OPTIONS]'`.
//!
//! Reads one JSON object per line on stdin (`session_start`, `decide`, `session_end`,
//! `shutdown`) and answers each `decide` with `{"quality":N,"wait_s":0}` on stdout.
//!
//! Options (defaults are [`AbrConfig::new`]'s): `--horizon S`, `--rebuffer-penalty X`,
//! `--switch-penalty X`, `--reserve S`, `--reserve-weight X`, `--safety X`, `--window N`,
//! `--error-window N`, `--max-error X`, `--optimism X`, `--initial-error X`, `--end-reserve S`,
//! `--lookahead-optimism X`.

use std::io::{BufRead, BufWriter, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::Value;
use veza_audio::Bitrate;
use veza_examples::Args;
use veza_stream_core::abr::{AbrConfig, AbrController, DecisionContext, Ladder, TransferSample};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("abr_sim: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Settings from the command line, applied to every session's config.
#[derive(Debug, Default)]
struct Overrides {
    horizon: Option<f64>,
    rebuffer_penalty: Option<f64>,
    switch_penalty: Option<f64>,
    reserve: Option<f64>,
    reserve_weight: Option<f64>,
    safety: Option<f64>,
    window: Option<usize>,
    error_window: Option<usize>,
    max_error: Option<f64>,
    optimism: Option<f64>,
    initial_error: Option<f64>,
    end_reserve: Option<f64>,
    lookahead_optimism: Option<f64>,
}

impl Overrides {
    fn from_args(a: &mut Args) -> Result<Self, String> {
        Ok(Overrides {
            horizon: a.parsed(&["--horizon"])?,
            rebuffer_penalty: a.parsed(&["--rebuffer-penalty"])?,
            switch_penalty: a.parsed(&["--switch-penalty"])?,
            reserve: a.parsed(&["--reserve"])?,
            reserve_weight: a.parsed(&["--reserve-weight"])?,
            safety: a.parsed(&["--safety"])?,
            window: a.parsed(&["--window"])?,
            error_window: a.parsed(&["--error-window"])?,
            max_error: a.parsed(&["--max-error"])?,
            optimism: a.parsed(&["--optimism"])?,
            initial_error: a.parsed(&["--initial-error"])?,
            end_reserve: a.parsed(&["--end-reserve"])?,
            lookahead_optimism: a.parsed(&["--lookahead-optimism"])?,
        })
    }

    fn config(&self, ladder: Ladder) -> Result<AbrConfig, String> {
        let secs = |s: f64| Duration::try_from_secs_f64(s).map_err(|e| e.to_string());
        let mut c = AbrConfig::new(ladder);
        if let Some(v) = self.horizon {
            c.horizon = secs(v)?;
        }
        if let Some(v) = self.rebuffer_penalty {
            c.rebuffer_penalty = v;
        }
        if let Some(v) = self.switch_penalty {
            c.switch_penalty = v;
        }
        if let Some(v) = self.reserve {
            c.reserve = secs(v)?;
        }
        if let Some(v) = self.reserve_weight {
            c.reserve_weight = v;
        }
        if let Some(v) = self.safety {
            c.safety = v;
        }
        if let Some(v) = self.window {
            c.estimator.window = v;
        }
        if let Some(v) = self.error_window {
            c.estimator.error_window = v;
        }
        if let Some(v) = self.max_error {
            c.estimator.max_error = v;
        }
        if let Some(v) = self.initial_error {
            c.estimator.initial_error = v;
        }
        if let Some(v) = self.end_reserve {
            c.end_reserve = secs(v)?;
        }
        if let Some(v) = self.lookahead_optimism {
            c.lookahead_optimism = v;
        }
        if let Some(v) = self.optimism {
            c.optimism = v;
        }
        Ok(c)
    }
}

fn f64_field(v: &Value, key: &str) -> Result<f64, String> {
    v.get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("missing number {key:?}"))
}

fn secs(s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s.max(0.0)).map_err(|e| format!("bad duration {s}: {e}"))
}

fn run() -> Result<(), String> {
    let mut args = Args::from_env();
    let overrides = Overrides::from_args(&mut args)?;
    args.positional()?;
    // The harness's clock is in seconds from the session start; the module wants instants, so
    // they are made from one base instant (only differences matter).
    let base = Instant::now();
    let stdin = std::io::stdin();
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut abr: Option<AbrController> = None;
    let mut sizes: Vec<u64> = Vec::new();
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        if line.trim().is_empty() {
            continue;
        }
        let msg: Value = serde_json::from_str(&line).map_err(|e| format!("bad JSON: {e}"))?;
        match msg.get("type").and_then(Value::as_str) {
            Some("session_start") => {
                let ladder = msg
                    .pointer("/protocol/ladder_kbps")
                    .and_then(Value::as_array)
                    .ok_or("session_start without protocol.ladder_kbps")?
                    .iter()
                    .map(|k| {
                        k.as_f64()
                            .map(|k| Bitrate::bps((k * 1000.0).round() as u32))
                            .ok_or("bad ladder value")
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let ladder = Ladder::new(ladder).map_err(|e| e.to_string())?;
                let config = overrides.config(ladder)?;
                abr = Some(AbrController::new(config).map_err(|e| e.to_string())?);
            }
            Some("decide") => {
                let abr = abr.as_mut().ok_or("decide before session_start")?;
                let obs = msg.get("obs").ok_or("decide without obs")?;
                let now = base + secs(f64_field(obs, "now_s")?)?;
                if let Some(ld) = obs.get("last_download").filter(|v| !v.is_null()) {
                    let bytes = f64_field(ld, "bytes")?.round() as u64;
                    let time = secs(f64_field(ld, "time_s")?)?;
                    let ttfb = secs(f64_field(ld, "ttfb_s")?)?.min(time);
                    // The download ended at or before `now` (the harness may have idled since);
                    // only the differences are used.
                    let requested = now.checked_sub(time).unwrap_or(base);
                    let sample = TransferSample::new(
                        bytes.max(1),
                        requested,
                        requested + ttfb,
                        requested + time,
                    )
                    .map_err(|e| e.to_string())?;
                    abr.on_transfer(sample);
                }
                sizes.clear();
                if let Some(a) = obs.get("next_segment_bytes").and_then(Value::as_array) {
                    for s in a {
                        sizes.push(s.as_f64().ok_or("bad segment size")?.round() as u64);
                    }
                }
                let ctx = DecisionContext {
                    buffer: secs(f64_field(obs, "buffer_s")?)?,
                    segment_duration: secs(f64_field(obs, "segment_duration_s")?)?,
                    buffer_cap: obs
                        .get("buffer_cap_s")
                        .and_then(Value::as_f64)
                        .map(secs)
                        .transpose()?,
                    segments_remaining: obs
                        .get("segments_remaining")
                        .and_then(Value::as_u64)
                        .map(|r| u32::try_from(r).unwrap_or(u32::MAX)),
                    next_segment_bytes: (!sizes.is_empty()).then_some(sizes.as_slice()),
                };
                let d = abr.decide(&ctx).map_err(|e| e.to_string())?;
                writeln!(out, "{{\"quality\":{},\"wait_s\":0.0}}", d.rung)
                    .map_err(|e| e.to_string())?;
                out.flush().map_err(|e| e.to_string())?;
            }
            Some("session_end") => {}
            Some("shutdown") => break,
            other => return Err(format!("unknown message type {other:?}")),
        }
    }
    Ok(())
}
