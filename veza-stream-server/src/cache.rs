//! The transcode cache: transcoded files on disk under `AUDIO_CACHE_DIR`, named by their
//! [`CacheKey`] (content hash + format + bitrate + rate + channels), evicted least recently used
//! by bytes under `AUDIO_CACHE_MAX_SIZE` (the policy is `veza-stream-core`'s). Concurrent
//! requests for the same missing key share one transcode. The index is rebuilt from the
//! directory at start, so the cache survives restarts.
//!
//! With `REDIS_URL` the index is also kept in Redis ([`redis_index`]), shared by every node that
//! shares the directory: a file another node made is a hit here, and eviction follows the
//! least recent use over all nodes. If Redis goes down, this node serves on from its local index
//! and the files on disk (logging the outage once, `/ready` saying `degraded`), and resyncs the
//! Redis index from the directory when it is back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use veza_stream_core::cache::{CacheKey, LruPolicy};

use crate::error::ApiError;
use crate::metrics as m;

pub mod redis_index;

use redis_index::RedisIndex;

/// The Redis side of a shared cache.
#[derive(Debug)]
struct Shared {
    index: RedisIndex,
    dir: PathBuf,
    /// Redis answered the last command.
    up: AtomicBool,
    /// A task is waiting for Redis to come back.
    recovering: AtomicBool,
}

/// Whether a lookup found the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Served from the cache.
    Hit,
    /// Made now.
    Miss,
}

/// The transcode cache.
#[derive(Debug)]
pub struct TranscodeCache {
    dir: PathBuf,
    policy: Mutex<LruPolicy<String>>,
    building: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    shared: Option<Arc<Shared>>,
}

impl TranscodeCache {
    /// Opens the cache in `dir` (created if missing) with a budget in bytes, indexing the files
    /// already there (oldest modification first) and deleting leftovers of interrupted writes.
    ///
    /// # Errors
    /// When the directory cannot be created or read.
    pub fn open(dir: &Path, budget: u64) -> std::io::Result<Self> {
        Self::open_dir(dir, budget, None)
    }

    /// Opens a cache whose index is shared in Redis at `redis_url` (keys under `prefix`) by
    /// every node that shares `dir`. Redis may be down: the cache then works from its local
    /// index and joins Redis (resyncing it from the directory) when it answers.
    ///
    /// # Errors
    /// When the directory cannot be created or read, or the URL cannot be used.
    pub async fn open_shared(
        dir: &Path,
        budget: u64,
        redis_url: &str,
        prefix: &str,
    ) -> std::io::Result<Self> {
        let index = RedisIndex::new(redis_url, prefix, budget).map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared {
            index,
            dir: dir.to_owned(),
            up: AtomicBool::new(false),
            recovering: AtomicBool::new(false),
        });
        let d = dir.to_owned();
        let sh = shared.clone();
        let cache = tokio::task::spawn_blocking(move || Self::open_dir(&d, budget, Some(sh)))
            .await
            .map_err(std::io::Error::other)??;
        match resync(&shared).await {
            Ok(()) => {
                shared.up.store(true, Ordering::Relaxed);
                tracing::info!("cache index shared in Redis");
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "Redis unreachable: the cache index is local until it is back"
                );
                start_recovery(&shared);
            }
        }
        Ok(cache)
    }

    fn open_dir(dir: &Path, budget: u64, shared: Option<Arc<Shared>>) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut files = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let meta = e.metadata()?;
            if !meta.is_file() {
                continue;
            }
            if name.starts_with('.') {
                // A shared directory may hold another node's write in progress: only old
                // leftovers go.
                let stale = shared.is_none()
                    || meta
                        .modified()
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > Duration::from_secs(3600));
                if stale {
                    let _ = std::fs::remove_file(e.path());
                }
                continue;
            }
            let mtime = meta.modified().ok();
            files.push((mtime, name, meta.len()));
        }
        files.sort();
        let mut policy = LruPolicy::new(budget);
        for (_, name, len) in files {
            match policy.insert(name.clone(), len) {
                // Shared: the Redis index decides what goes (at the resync that follows).
                Ok(_) | Err(_) if shared.is_some() => {}
                Ok(evicted) => {
                    for old in evicted {
                        let _ = std::fs::remove_file(dir.join(old));
                    }
                }
                Err(_) => {
                    let _ = std::fs::remove_file(dir.join(&name));
                }
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            policy: Mutex::new(policy),
            building: Mutex::new(HashMap::new()),
            shared,
        })
    }

    /// Bytes held.
    pub fn used(&self) -> u64 {
        self.policy.lock().map_or(0, |p| p.used())
    }

    /// With a Redis index: whether Redis answers now (pinging it; an outage is logged once and
    /// a resync is started for when it is back). `None` without Redis.
    pub async fn redis_up(&self) -> Option<bool> {
        let sh = self.shared.as_ref()?;
        if sh.up.load(Ordering::Relaxed) {
            if let Err(e) = sh.index.ping().await {
                redis_failed(sh, &e);
            }
        }
        Some(sh.up.load(Ordering::Relaxed))
    }

    /// With a Redis index that answers: the bytes held by all nodes together.
    pub async fn shared_used(&self) -> Option<u64> {
        let sh = self.shared.as_ref()?;
        if !sh.up.load(Ordering::Relaxed) {
            return None;
        }
        match sh.index.used().await {
            Ok(u) => Some(u),
            Err(e) => {
                redis_failed(sh, &e);
                None
            }
        }
    }

    async fn lookup(&self, name: &String) -> bool {
        let Some(sh) = &self.shared else {
            let hit = self.policy.lock().is_ok_and(|mut p| p.get(name));
            return hit && self.dir.join(name).exists();
        };
        // A shared directory: the file on disk decides (another node may have made it); the
        // access is recorded in both indexes.
        let len = match tokio::fs::metadata(self.dir.join(name)).await {
            Ok(meta) if meta.is_file() => meta.len(),
            _ => {
                if let Ok(mut p) = self.policy.lock() {
                    p.remove(name);
                }
                return false;
            }
        };
        let local_evicted = self.local_record(name, len);
        self.record_shared(sh, name, len, local_evicted).await;
        true
    }

    /// Records an access or insert in the local index; returns what it would evict.
    fn local_record(&self, name: &String, len: u64) -> Vec<String> {
        let Ok(mut p) = self.policy.lock() else {
            return Vec::new();
        };
        if p.get(name) {
            Vec::new()
        } else {
            p.insert(name.clone(), len).unwrap_or_default()
        }
    }

    /// Records an access or insert in Redis and deletes what it evicts; while Redis is down,
    /// deletes what the local index evicts instead.
    async fn record_shared(
        &self,
        sh: &Arc<Shared>,
        name: &str,
        len: u64,
        local_evicted: Vec<String>,
    ) {
        let evicted = if sh.up.load(Ordering::Relaxed) {
            match sh.index.record(name, len).await {
                Ok(ev) => ev,
                Err(e) => {
                    redis_failed(sh, &e);
                    local_evicted
                }
            }
        } else {
            local_evicted
        };
        for old in evicted.into_iter().filter(|n| is_entry_name(n)) {
            if let Ok(mut p) = self.policy.lock() {
                p.remove(&old);
            }
            let _ = tokio::fs::remove_file(self.dir.join(old)).await;
        }
    }

    /// The path of `key`'s file, made by `make(tmp_path)` (blocking work, run off the async
    /// runtime) when missing. Counts hits and misses.
    ///
    /// # Errors
    /// What `make` returns, or I/O errors.
    pub async fn get_or_make<F>(
        &self,
        key: &CacheKey,
        make: F,
    ) -> Result<(PathBuf, Lookup), ApiError>
    where
        F: FnOnce(&Path) -> Result<(), ApiError> + Send + 'static,
    {
        let name = key.file_name();
        let path = self.dir.join(&name);
        if self.lookup(&name).await {
            metrics::counter!(m::AUDIO_CACHE_HITS).increment(1);
            return Ok((path, Lookup::Hit));
        }
        // One transcode per key: later requests wait for the first and then hit.
        let lock = {
            let mut b = self
                .building
                .lock()
                .map_err(|_| ApiError::internal("cache lock poisoned"))?;
            b.entry(name.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        if self.lookup(&name).await {
            metrics::counter!(m::AUDIO_CACHE_HITS).increment(1);
            return Ok((path, Lookup::Hit));
        }
        metrics::counter!(m::AUDIO_CACHE_MISSES).increment(1);
        let tmp = self
            .dir
            .join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
        let tmp2 = tmp.clone();
        let made = tokio::task::spawn_blocking(move || make(&tmp2))
            .await
            .map_err(ApiError::internal)?;
        if let Err(e) = made {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        let len = tokio::fs::metadata(&tmp).await?.len();
        tokio::fs::rename(&tmp, &path).await?;
        if let Some(sh) = &self.shared {
            let local_evicted = self.local_record(&name, len);
            self.record_shared(sh, &name, len, local_evicted).await;
            if let Ok(mut b) = self.building.lock() {
                b.remove(&name);
            }
            return Ok((path, Lookup::Miss));
        }
        let evicted = self
            .policy
            .lock()
            .map_err(|_| ApiError::internal("cache lock poisoned"))?
            .insert(name.clone(), len);
        match evicted {
            Ok(old) => {
                for o in old {
                    let _ = tokio::fs::remove_file(self.dir.join(o)).await;
                }
            }
            Err(_) => {
                // Larger than the whole budget: it stays until served once, then goes at the
                // next start (the index does not hold it).
            }
        }
        if let Ok(mut b) = self.building.lock() {
            b.remove(&name);
        }
        Ok((path, Lookup::Miss))
    }
}

/// Makes the Redis index match the directory and deletes what it evicts.
async fn resync(sh: &Shared) -> Result<(), redis::RedisError> {
    let dir = sh.dir.clone();
    let files = tokio::task::spawn_blocking(move || list_files(&dir))
        .await
        .map_err(|e| redis::RedisError::from(std::io::Error::other(e)))?
        .map_err(redis::RedisError::from)?;
    for old in sh.index.resync(&files).await? {
        if is_entry_name(&old) {
            let _ = tokio::fs::remove_file(sh.dir.join(old)).await;
        }
    }
    Ok(())
}

/// Whether a name from Redis can be an entry of the directory (no path, no hidden file): what
/// Redis says to delete is deleted only then.
fn is_entry_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// The finished entries of a cache directory: (name, bytes).
fn list_files(dir: &Path) -> std::io::Result<Vec<(String, u64)>> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if let Ok(meta) = e.metadata() {
            if meta.is_file() {
                files.push((name, meta.len()));
            }
        }
    }
    Ok(files)
}

/// Marks Redis down (logging once per outage) and starts waiting for it.
fn redis_failed(sh: &Arc<Shared>, e: &redis::RedisError) {
    if sh.up.swap(false, Ordering::Relaxed) {
        tracing::error!(
            error = %e,
            "Redis unreachable: the cache index is local until it is back"
        );
    }
    start_recovery(sh);
}

/// Pings Redis every second until it answers, then resyncs the index from the directory.
fn start_recovery(sh: &Arc<Shared>) {
    if sh.recovering.swap(true, Ordering::Relaxed) {
        return;
    }
    let weak: Weak<Shared> = Arc::downgrade(sh);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let Some(sh) = weak.upgrade() else { return };
            if sh.index.ping().await.is_err() {
                continue;
            }
            match resync(&sh).await {
                Ok(()) => {
                    sh.up.store(true, Ordering::Relaxed);
                    sh.recovering.store(false, Ordering::Relaxed);
                    tracing::info!("Redis is back: the cache index is shared again (resynced)");
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "cache index resync failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_entry_names_are_deleted() {
        let key = CacheKey::try_new(
            &"ab".repeat(32),
            veza_audio::OutputFormat::Mp3,
            None,
            None,
            None,
        )
        .unwrap();
        assert!(is_entry_name(&key.file_name()));
        for bad in ["", "../x", "a/b", ".hidden", "/etc/passwd", "a\\b"] {
            assert!(!is_entry_name(bad), "{bad}");
        }
    }
}
