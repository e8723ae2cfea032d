//! Prometheus metrics: the names of the architecture document plus HTTP request metrics by
//! matched route. Process gauges (memory, CPU, disk) are refreshed at each scrape.

use std::sync::Mutex;
use std::time::Instant;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::config::Config;

/// Live streams now.
pub const STREAMS_ACTIVE: &str = "veza_streams_active_total";
/// Streams created.
pub const STREAMS_CREATED: &str = "veza_streams_created_total";
/// Streams ended.
pub const STREAMS_ENDED: &str = "veza_streams_ended_total";
/// Audio files processed (uploads probed, jobs done).
pub const AUDIO_FILES_PROCESSED: &str = "veza_audio_files_processed_total";
/// Time spent processing audio, seconds.
pub const AUDIO_PROCESSING_DURATION: &str = "veza_audio_processing_duration_seconds";
/// Transcode cache hits.
pub const AUDIO_CACHE_HITS: &str = "veza_audio_cache_hits_total";
/// Transcode cache misses.
pub const AUDIO_CACHE_MISSES: &str = "veza_audio_cache_misses_total";
/// Resident memory of the process, bytes.
pub const MEMORY_USAGE: &str = "veza_memory_usage_bytes";
/// CPU use of the process since the last scrape, percent of one core.
pub const CPU_USAGE: &str = "veza_cpu_usage_percent";
/// Bytes used by uploads and cache on disk.
pub const DISK_USAGE: &str = "veza_disk_usage_bytes";
/// Events published, by `subject`.
pub const EVENTS_PUBLISHED: &str = "veza_events_published_total";
/// Events dropped because the NATS buffer was full.
pub const EVENTS_DROPPED: &str = "veza_events_dropped_total";
/// Events waiting for NATS.
pub const EVENTS_BUFFERED: &str = "veza_events_buffered";

/// Live listeners now on this node (all protocols with a connection: ICY, WebSocket).
pub const LIVE_LISTENERS: &str = "veza_live_listeners";
/// Bytes received from live sources.
pub const LIVE_INGEST_BYTES: &str = "veza_live_ingest_bytes_total";
/// Bytes of live audio handed to listeners.
pub const LIVE_SENT_BYTES: &str = "veza_live_sent_bytes_total";
/// Listeners moved forward because they fell behind the live edge.
pub const LIVE_LISTENER_SKIPS: &str = "veza_live_listener_skips_total";
/// Runs of source bytes that were not audio frames (dropped).
pub const LIVE_BAD_SOURCE_BYTES: &str = "veza_live_bad_source_data_total";
/// Live recordings now being written on this node.
pub const LIVE_RECORDINGS_ACTIVE: &str = "veza_live_recordings_active";
/// Live recordings ended, by `state` (`finished`, `recovered`, `empty`, `failed`).
pub const LIVE_RECORDINGS: &str = "veza_live_recordings_total";
/// Times a recorder fell more than the tap capacity behind its stream and was resynced.
pub const LIVE_RECORDING_LAGS: &str = "veza_live_recording_lags_total";
/// Chunks a lagging recorder could not get back from the ring (a gap in the recording).
pub const LIVE_RECORDING_LOST_CHUNKS: &str = "veza_live_recording_lost_chunks_total";
/// Live sources refused, by `reason`.
pub const LIVE_SOURCES_REFUSED: &str = "veza_live_sources_refused_total";
/// Source data or frames the live HLS ladder skipped, by `reason` (`undecodable`,
/// `decoder_reset`, `lagged`: taps lost behind a slow encoder, `frame_rejected`,
/// `unsupported_spec`).
pub const LIVE_HLS_SKIPPED: &str = "veza_live_hls_skipped_total";

/// Installs the recorder (once per process; later calls reuse it) and returns its handle.
///
/// # Errors
/// When another metrics recorder was installed by someone else.
pub fn install() -> Result<PrometheusHandle, String> {
    // One recorder per process: several states (tests, embedders) share it. The lock makes
    // concurrent first calls install it once.
    static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);
    let mut slot = HANDLE
        .lock()
        .map_err(|_| "metrics lock poisoned".to_owned())?;
    if let Some(h) = slot.as_ref() {
        return Ok(h.clone());
    }
    let h = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| e.to_string())?;
    for name in [
        STREAMS_CREATED,
        STREAMS_ENDED,
        AUDIO_FILES_PROCESSED,
        AUDIO_CACHE_HITS,
        AUDIO_CACHE_MISSES,
    ] {
        metrics::counter!(name).absolute(0);
    }
    metrics::gauge!(STREAMS_ACTIVE).set(0.0);
    *slot = Some(h.clone());
    Ok(h)
}

/// Refreshes the process gauges (Linux `/proc`; elsewhere they stay unset).
pub fn update_process_gauges(config: &Config) {
    static LAST: Mutex<Option<(Instant, f64)>> = Mutex::new(None);
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(kb) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        {
            metrics::gauge!(MEMORY_USAGE).set(kb * 1024.0);
        }
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // utime and stime are fields 14 and 15, in clock ticks (100 per second on Linux).
        let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let f: Vec<&str> = after_comm.split_whitespace().collect();
        if let (Some(u), Some(s)) = (f.get(11), f.get(12)) {
            if let (Ok(u), Ok(s)) = (u.parse::<f64>(), s.parse::<f64>()) {
                let cpu_secs = (u + s) / 100.0;
                let now = Instant::now();
                if let Ok(mut last) = LAST.lock() {
                    if let Some((t, c)) = *last {
                        let wall = now.duration_since(t).as_secs_f64();
                        if wall > 0.0 {
                            metrics::gauge!(CPU_USAGE).set(100.0 * (cpu_secs - c) / wall);
                        }
                    }
                    *last = Some((now, cpu_secs));
                }
            }
        }
    }
    let disk = dir_size(&config.upload_dir) + dir_size(&config.cache_dir);
    metrics::gauge!(DISK_USAGE).set(disk as f64);
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |rd| {
        rd.filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    })
}
