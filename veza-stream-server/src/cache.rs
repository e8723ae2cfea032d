//! The transcode cache: transcoded files on disk under `AUDIO_CACHE_DIR`, named by their
//! [`CacheKey`] (content hash + format + bitrate + rate + channels), evicted least recently used
//! by bytes under `AUDIO_CACHE_MAX_SIZE` (the policy is `veza-stream-core`'s). Concurrent
//! requests for the same missing key share one transcode. The index is rebuilt from the
//! directory at start, so the cache survives restarts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use veza_stream_core::cache::{CacheKey, LruPolicy};

use crate::error::ApiError;
use crate::metrics as m;

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
}

impl TranscodeCache {
    /// Opens the cache in `dir` (created if missing) with a budget in bytes, indexing the files
    /// already there (oldest modification first) and deleting leftovers of interrupted writes.
    ///
    /// # Errors
    /// When the directory cannot be created or read.
    pub fn open(dir: &Path, budget: u64) -> std::io::Result<Self> {
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
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            let mtime = meta.modified().ok();
            files.push((mtime, name, meta.len()));
        }
        files.sort();
        let mut policy = LruPolicy::new(budget);
        for (_, name, len) in files {
            match policy.insert(name.clone(), len) {
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
        })
    }

    /// Bytes held.
    pub fn used(&self) -> u64 {
        self.policy.lock().map_or(0, |p| p.used())
    }

    fn lookup(&self, name: &String) -> bool {
        let hit = self.policy.lock().is_ok_and(|mut p| p.get(name));
        hit && self.dir.join(name).exists()
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
        if self.lookup(&name) {
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
        if self.lookup(&name) {
            metrics::counter!(m::AUDIO_CACHE_HITS).increment(1);
            return Ok((path, Lookup::Hit));
        }
        metrics::counter!(m::AUDIO_CACHE_MISSES).increment(1);
        let tmp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
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
