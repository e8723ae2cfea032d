//! Processing jobs (transcode, compress) on a bounded pool: at most `JOB_WORKERS` run at once,
//! each on a blocking thread (CPU work stays off the async runtime). Jobs are rows in the store:
//! at start, queued jobs and jobs that were running when the server stopped are run (again).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc};

use crate::error::ApiError;
use crate::events::{Subject, audio_data, job_data};
use crate::http::audio::{now_ms, probe};
use crate::metrics as m;
use crate::state::AppState;
use crate::storage::AudioRecord;

/// What a job does, as stored in its `params`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobSpec {
    /// Re-encode to a format (and bitrate).
    Transcode {
        /// Output format name.
        output_format: String,
        /// kbit/s.
        bitrate: Option<u32>,
    },
    /// Reduce size with a quality preset; passes through when the source already fits.
    Compress {
        /// Output format name (default: the source's codec).
        format: Option<String>,
        /// kbit/s, overriding the preset's.
        bitrate: Option<u32>,
        /// "low", "medium" or "high".
        quality: String,
    },
}

/// The handle to submit jobs and read live progress.
#[derive(Debug, Clone)]
pub struct Jobs {
    tx: mpsc::UnboundedSender<String>,
    progress: Arc<Mutex<HashMap<String, f64>>>,
}

/// The receiving end, handed to [`spawn_dispatcher`].
#[derive(Debug)]
pub struct JobQueue(mpsc::UnboundedReceiver<String>);

impl Jobs {
    /// A submit handle and its queue.
    pub fn new() -> (Self, JobQueue) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                tx,
                progress: Arc::default(),
            },
            JobQueue(rx),
        )
    }

    /// Queues a stored job for running.
    pub fn submit(&self, id: &str) {
        let _ = self.tx.send(id.to_owned());
    }

    /// Live progress of a running job (0 to 1).
    pub fn progress(&self, id: &str) -> Option<f64> {
        self.progress.lock().ok()?.get(id).copied()
    }

    fn set_progress(&self, id: &str, p: Option<f64>) {
        if let Ok(mut m) = self.progress.lock() {
            match p {
                Some(p) => {
                    m.insert(id.to_owned(), p);
                }
                None => {
                    m.remove(id);
                }
            }
        }
    }
}

/// Starts the dispatcher: re-queues the jobs the store says must run, then runs submitted jobs
/// with at most `workers` at once.
pub fn spawn_dispatcher(state: AppState, queue: JobQueue, workers: usize) {
    let JobQueue(mut rx) = queue;
    tokio::spawn(async move {
        match state.store().pending_jobs().await {
            Ok(ids) => {
                for id in ids {
                    state.jobs().submit(&id);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read pending jobs"),
        }
        let sem = Arc::new(Semaphore::new(workers.max(1)));
        while let Some(id) = rx.recv().await {
            let Ok(permit) = sem.clone().acquire_owned().await else {
                break;
            };
            let state = state.clone();
            tokio::spawn(async move {
                run(&state, &id).await;
                drop(permit);
            });
        }
    });
}

async fn run(state: &AppState, id: &str) {
    let store = state.store();
    let job = match store.get_job(id).await {
        Ok(Some(j)) if j.state == "queued" || j.state == "running" => j,
        Ok(_) => return,
        Err(e) => {
            tracing::error!(job = id, error = %e, "cannot read job");
            return;
        }
    };
    let _ = store
        .update_job(id, "running", 0.0, None, None, None, now_ms())
        .await;
    let mut job = job;
    job.state = "running".into();
    state.events().publish(Subject::JobRunning, job_data(&job));
    let outcome = execute(state, &job.file_id, &job.params, id, job.owner.as_deref()).await;
    state.jobs().set_progress(id, None);
    let now = now_ms();
    let r = match outcome {
        Ok((result, note)) => {
            job.state = "done".into();
            job.result_file_id = Some(result.clone());
            job.note = note.clone();
            store
                .update_job(id, "done", 1.0, Some(&result), note.as_deref(), None, now)
                .await
        }
        Err(e) => {
            let msg = e.to_string();
            tracing::warn!(job = id, error = %msg, "job failed");
            job.state = "failed".into();
            job.error = Some(msg.clone());
            store
                .update_job(id, "failed", 0.0, None, None, Some(&msg), now)
                .await
        }
    };
    match r {
        Ok(()) if job.state == "done" => state.events().publish(Subject::JobDone, job_data(&job)),
        Ok(()) => state.events().publish(Subject::JobFailed, job_data(&job)),
        Err(e) => tracing::error!(job = id, error = %e, "cannot record the job's outcome"),
    }
}

/// Runs a job; returns the result file id and a note.
async fn execute(
    state: &AppState,
    file_id: &str,
    params: &str,
    job_id: &str,
    job_owner: Option<&str>,
) -> Result<(String, Option<String>), ApiError> {
    let spec: JobSpec = serde_json::from_str(params)
        .map_err(|e| ApiError::internal(format!("bad job params: {e}")))?;
    let src = state
        .store()
        .get_audio(file_id)
        .await?
        .ok_or(ApiError::NotFound("source file"))?;
    let cfg = state.config();
    let new_id = uuid::Uuid::new_v4().hyphenated().to_string();
    let upload_dir = cfg.upload_dir.clone();
    let source = PathBuf::from(&src.path);
    let jobs = state.jobs().clone();
    let jid = job_id.to_owned();
    let started = std::time::Instant::now();
    let out_id = new_id.clone();
    let made = tokio::task::spawn_blocking(move || {
        let mut report = |p: veza_audio::transcode::Progress| {
            if let Some(total) = p.frames_total.filter(|t| *t > 0) {
                jobs.set_progress(&jid, Some((p.frames_done as f64 / total as f64).min(0.99)));
            }
        };
        make_output(&source, &upload_dir, &out_id, &spec, &mut report)
    })
    .await
    .map_err(ApiError::internal)??;
    let Made::File { path, note } = made else {
        let Made::Passthrough { note } = made else {
            unreachable!("two variants")
        };
        return Ok((src.id, Some(note)));
    };
    metrics::counter!(m::AUDIO_FILES_PROCESSED).increment(1);
    metrics::histogram!(m::AUDIO_PROCESSING_DURATION).record(started.elapsed().as_secs_f64());
    let p2 = path.clone();
    let record = tokio::task::spawn_blocking(move || describe(&p2))
        .await
        .map_err(ApiError::internal)??;
    let record = AudioRecord {
        id: new_id.clone(),
        // The file made belongs to whoever asked for it.
        owner: job_owner.map(str::to_owned).or_else(|| src.owner.clone()),
        is_private: src.is_private,
        original_name: src.original_name.clone(),
        path: path.display().to_string(),
        created_at: now_ms(),
        ..record
    };
    if let Err(e) = state.store().insert_audio(&record).await {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(e.into());
    }
    let mut data = audio_data(&record);
    data["source_file_id"] = serde_json::json!(src.id);
    data["job_id"] = serde_json::json!(job_id);
    state.events().publish(Subject::AudioProcessed, data);
    Ok((new_id, note))
}

enum Made {
    File { path: PathBuf, note: Option<String> },
    Passthrough { note: String },
}

fn make_output(
    source: &Path,
    dir: &Path,
    id: &str,
    spec: &JobSpec,
    progress: &mut dyn FnMut(veza_audio::transcode::Progress),
) -> Result<Made, ApiError> {
    use veza_audio::OutputFormat;
    use veza_audio::presets::{CompressionPlan, Quality, plan_compression};
    use veza_audio::transcode::{OutputSettings, TranscodeOptions, transcode_path_with_progress};
    let parse_format = |f: &str| -> Result<OutputFormat, ApiError> {
        f.parse()
            .map_err(|_| ApiError::Validation(format!("unknown format {f:?}")))
    };
    let (settings, note) = match spec {
        JobSpec::Transcode {
            output_format,
            bitrate,
        } => {
            let f = parse_format(output_format)?;
            let mut s = OutputSettings::new(f);
            if let Some(k) = bitrate {
                s = s.with_kbps(*k);
            }
            (s, None)
        }
        JobSpec::Compress {
            format,
            bitrate,
            quality,
        } => {
            let q = match quality.as_str() {
                "low" => Quality::Low,
                "medium" => Quality::Medium,
                "high" => Quality::High,
                other => return Err(ApiError::Validation(format!("unknown quality {other:?}"))),
            };
            let f = format.as_deref().map(parse_format).transpose()?;
            let dec = veza_audio::decode::Decoder::open_path(source, Default::default())
                .map_err(|e| ApiError::UnsupportedMedia(e.to_string()))?;
            match plan_compression(dec.info(), f, q)
                .map_err(|e| ApiError::Validation(e.to_string()))?
            {
                CompressionPlan::Passthrough { reason } => {
                    return Ok(Made::Passthrough { note: reason });
                }
                CompressionPlan::Transcode { mut settings, note } => {
                    if let Some(k) = bitrate {
                        settings = settings.with_kbps(*k);
                    }
                    (settings, note)
                }
            }
        }
    };
    let ext = settings.format.extension();
    let out = dir.join(format!("{id}.{ext}"));
    let tmp = dir.join(format!(".{id}.{ext}.part"));
    let mut opts = TranscodeOptions::new(settings.format);
    opts.output = Some(settings);
    match transcode_path_with_progress(source, &tmp, &opts, progress) {
        Ok(_) => {
            std::fs::rename(&tmp, &out)?;
            Ok(Made::File { path: out, note })
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(match e {
                veza_audio::AudioError::InvalidConfig(m) => ApiError::Validation(m),
                other => ApiError::internal(other),
            })
        }
    }
}

/// Probe plus size and hash of a file made by a job.
fn describe(path: &Path) -> Result<AudioRecord, ApiError> {
    let mut r = probe(path)?;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let size = std::io::copy(&mut f, &mut h)?;
    r.size_bytes = i64::try_from(size).unwrap_or(i64::MAX);
    r.content_hash = hex::encode(h.finalize());
    Ok(r)
}
