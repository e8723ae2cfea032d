//! A crash at any step of a recording (every prefix of the recorder's outputs applied, then the
//! process dies) leaves files that recovery turns into playable files missing at most the last
//! second of the audio the recorder had been given. Two crash models: a killed process (written
//! data stays) and a power loss (unsynced data is lost, torn at a random byte).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Rng, encoded_frames};
use veza_audio::OutputFormat;
use veza_stream_core::frame::{FrameFormat, FrameSplitter, SplitterConfig};
use veza_stream_core::recording::{
    Input, Output, Recorder, RecorderConfig, plan_recovery, valid_prefix,
};

#[derive(Default, Clone)]
struct File {
    data: Vec<u8>,
    synced: usize,
}

#[derive(Default, Clone)]
struct Fs {
    files: BTreeMap<String, File>,
    journal: Vec<String>,
}

impl Fs {
    fn apply(&mut self, o: &Output) {
        match o {
            Output::Create { file } => {
                self.files.insert(file.clone(), File::default());
            }
            Output::Write { file, data } => self
                .files
                .get_mut(file)
                .unwrap()
                .data
                .extend_from_slice(data),
            Output::Sync { file } => {
                let f = self.files.get_mut(file).unwrap();
                f.synced = f.data.len();
            }
            Output::Journal { line } => self.journal.push(line.clone()),
            Output::Rename { from, to } => {
                let f = self.files.remove(from).unwrap();
                self.files.insert(to.clone(), f);
            }
            _ => {}
        }
    }

    /// Power loss: each file keeps its synced bytes plus a random part of the rest.
    fn power_loss(&mut self, rng: &mut Rng) {
        for f in self.files.values_mut() {
            let extra = rng.range(0, (f.data.len() - f.synced) as u64 + 1) as usize;
            f.data.truncate(f.synced + extra);
        }
    }

    /// What a server does at start: recovery from the journal.
    fn recover(&mut self) {
        let plan = plan_recovery(&self.journal.join("\n"));
        for f in plan.files.iter().filter(|f| !f.complete) {
            let Some(mut file) = self.files.remove(&f.partial) else {
                continue;
            };
            let keep = f.synced_bytes as usize
                + valid_prefix(f.format, &file.data[f.synced_bytes as usize..]) as usize;
            file.data.truncate(keep);
            self.files.insert(f.final_name.clone(), file);
        }
    }
}

fn playable_samples(data: &[u8]) -> u64 {
    let mut s = FrameSplitter::new(FrameFormat::Mpeg, SplitterConfig::default());
    s.push(data);
    s.finish();
    let mut samples = 0;
    while let Some(f) = s.next_frame().unwrap() {
        samples += u64::from(f.samples);
    }
    assert_eq!(
        s.stats().skipped_bytes,
        0,
        "a recovered file holds a torn frame"
    );
    samples
}

#[test]
fn crash_at_every_step_restores_a_playable_file() {
    let frames = encoded_frames(OutputFormat::Mp3, 12.0);
    let t0 = Instant::now();
    let mut cfg = RecorderConfig::new("live-7", FrameFormat::Mpeg);
    cfg.split_duration = Some(Duration::from_secs(5));
    let mut rec = Recorder::new(cfg, t0);
    rec.handle_input(Input::Start { now: t0 }).unwrap();
    // Every output, with the audio (in samples) handed to the recorder when it was emitted.
    let mut outputs: Vec<(Output, u64)> = Vec::new();
    let mut given = 0u64;
    for f in &frames {
        given += u64::from(f.samples);
        rec.handle_input(Input::Frame {
            now: t0,
            frame: f.clone(),
        })
        .unwrap();
        loop {
            match rec.poll_output() {
                Output::Timeout(_) => break,
                o => outputs.push((o, given)),
            }
        }
    }
    rec.handle_input(Input::Stop { now: t0 }).unwrap();
    loop {
        match rec.poll_output() {
            Output::Timeout(_) => break,
            o => outputs.push((o, given)),
        }
    }
    assert!(outputs.len() > 50);
    let second = 44_100u64;
    let mut rng = Rng::new(3);
    for crash_after in 0..=outputs.len() {
        // The audio the recorder had been given before the crash.
        let had = if crash_after == 0 {
            0
        } else {
            outputs[crash_after - 1].1
        };
        for power_loss in [false, true] {
            let mut fs = Fs::default();
            for (o, _) in &outputs[..crash_after] {
                fs.apply(o);
            }
            if power_loss {
                fs.power_loss(&mut rng);
            }
            fs.recover();
            assert!(
                fs.files.keys().all(|k| !k.ends_with(".partial")),
                "a partial file is left after recovery at step {crash_after}"
            );
            let restored: u64 = fs.files.values().map(|f| playable_samples(&f.data)).sum();
            assert!(
                restored + second >= had,
                "step {crash_after} (power loss {power_loss}): restored {restored} of {had} samples"
            );
            assert!(restored <= had);
        }
    }
    // Without a crash, the files hold every frame.
    let mut fs = Fs::default();
    for (o, _) in &outputs {
        fs.apply(o);
    }
    let total: u64 = fs.files.values().map(|f| playable_samples(&f.data)).sum();
    assert_eq!(total, given);
    assert_eq!(fs.files.len(), 3);

    // A real player reads a file restored after a power loss in the middle of the recording.
    let mut fs = Fs::default();
    for (o, _) in &outputs[..outputs.len() / 2] {
        fs.apply(o);
    }
    fs.power_loss(&mut rng);
    fs.recover();
    let dir = std::env::temp_dir().join(format!("veza-rec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, f) in &fs.files {
        let path = dir.join(name);
        std::fs::write(&path, &f.data).unwrap();
        let out = common::tool("ffmpeg")
            .arg("-i")
            .arg(&path)
            .args(["-f", "s16le", "-ac", "1", "-"])
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "ffmpeg cannot play the restored {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let decoded = out.stdout.len() as u64 / 2;
        assert!(
            decoded.abs_diff(playable_samples(&f.data)) <= 1152,
            "{name}: {decoded} samples"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
