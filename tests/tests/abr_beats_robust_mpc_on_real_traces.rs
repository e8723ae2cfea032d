//! Our ABR module, driven through the `abr_sim` program (`examples/abr_sim.rs`, built here as
//! the `abr_sim` binary of this package), scores a higher QoE_lin than the harness's RobustMPC
//! on a fixed subset of the real throughput traces, by at least 0.006 per segment, with a rebuffer
//! ratio of at most 0.5 %.
//!
//! The harness (`abr-sim`, Python 3 standard library) is a deterministic simulator, so the
//! scores are exact and repeatable; this is not a timing test. The harness folder is
//! `$VEZA_ABR_SIM` or `../shared/abr-sim` beside the repository, and the traces `$VEZA_ABR_TRACES`
//! or `abr-traces` beside the harness. When they are absent the test is skipped, unless
//! `VEZA_REQUIRE_CORPUS=1`.
//!
//! The subset: every 4th trace (by file name) among those whose mean throughput, after the
//! protocol's division by 12, is at least 64 kbit/s. Below that, a stream stalls whatever it
//! does (the traces whose mean is under the lowest rung stall even at the lowest rung), and the
//! rebuffer bound would measure the traces rather than the algorithm. The whole development set
//! is scored in `docs/abr.md`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn harness_dir() -> Option<(PathBuf, PathBuf)> {
    let sim = std::env::var_os("VEZA_ABR_SIM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/abr-sim"))
        });
    let traces = std::env::var_os("VEZA_ABR_TRACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| sim.join("../abr-traces"));
    if sim.join("abrsim/sim.py").exists() && traces.join("manifest.csv").exists() {
        return Some((sim, traces));
    }
    if std::env::var("VEZA_REQUIRE_CORPUS").is_ok_and(|v| v == "1") {
        panic!(
            "the ABR harness is required (VEZA_REQUIRE_CORPUS=1) but {} or {} is missing",
            sim.display(),
            traces.display()
        );
    }
    eprintln!(
        "SKIPPED: ABR harness or traces not found at {} and {} (set VEZA_ABR_SIM, VEZA_ABR_TRACES)",
        sim.display(),
        traces.display()
    );
    None
}

/// Copies the subset of traces described in the file docs into `dest`; returns how many.
fn copy_subset(traces: &Path, dest: &Path) -> usize {
    let manifest =
        std::fs::read_to_string(traces.join("manifest.csv")).expect("manifest.csv is readable");
    let mut header = manifest.lines().next().expect("manifest header").split(',');
    let file_col = header
        .clone()
        .position(|c| c == "file")
        .expect("manifest has a file column");
    let mean_col = header
        .position(|c| c == "mean_mbps")
        .expect("manifest has a mean_mbps column");
    let mut eligible: Vec<String> = manifest
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split(',').collect();
            let mean: f64 = cols.get(mean_col)?.parse().ok()?;
            (mean * 1000.0 / 12.0 >= 64.0).then(|| cols[file_col].to_string())
        })
        .collect();
    eligible.sort();
    std::fs::create_dir_all(dest).expect("temporary folder");
    let mut n = 0;
    for file in eligible.iter().step_by(4) {
        let src = traces.join(file);
        let name = src.file_name().expect("trace file name");
        std::fs::copy(&src, dest.join(name)).expect("trace copied");
        n += 1;
    }
    n
}

/// How far above RobustMPC's QoE_lin per segment ours must be on the subset.
const MARGIN: f64 = 0.006;

#[test]
fn abr_beats_robust_mpc_without_stalling() {
    let Some((sim, traces)) = harness_dir() else {
        return;
    };
    let work = std::env::temp_dir().join(format!("veza-abr-test-{}", std::process::id()));
    let subset = work.join("traces");
    let n = copy_subset(&traces, &subset);
    assert!(n >= 50, "only {n} traces in the subset");
    let out = work.join("result.json");
    let bin = env!("CARGO_BIN_EXE_abr_sim");
    let status = Command::new("python3")
        .current_dir(&sim)
        .args(["-m", "abrsim", "run", "--traces"])
        .arg(&subset)
        .arg("--algo")
        .arg(format!("cmd:{bin}"))
        .args(["--algo", "robust-mpc", "--out"])
        .arg(&out)
        .status()
        .expect("python3 runs");
    assert!(status.success(), "the harness failed: {status}");
    let result: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    std::fs::remove_dir_all(&work).ok();
    let overall = |name: &str| result["algorithms"][name]["overall"].clone();
    let ours = overall("cmd:abr_sim");
    let mpc = overall("robust-mpc");
    let qoe = |v: &Value| v["qoe_lin_per_seg"].as_f64().unwrap();
    let rebuffer = |v: &Value| v["rebuffer_ratio"].as_f64().unwrap();
    eprintln!(
        "{n} traces: ours QoE_lin/seg {:.4} rebuffer {:.2} %; RobustMPC {:.4} rebuffer {:.2} %",
        qoe(&ours),
        100.0 * rebuffer(&ours),
        qoe(&mpc),
        100.0 * rebuffer(&mpc)
    );
    assert_eq!(ours["n"].as_u64(), Some(n as u64));
    // On this subset the module is 0.0074 above RobustMPC (0.1875 and 0.1801, docs/abr.md);
    // the first version was 0.0064 above. The harness is deterministic, so this is exact.
    assert!(
        qoe(&ours) >= qoe(&mpc) + MARGIN,
        "QoE {} is not {MARGIN} above RobustMPC's {}",
        qoe(&ours),
        qoe(&mpc)
    );
    assert!(
        rebuffer(&ours) <= 0.005,
        "rebuffer ratio {} above 0.5 %",
        rebuffer(&ours)
    );
}
