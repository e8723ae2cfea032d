//! Storage: sqlx over SQLite (the embedded default, a file in the data directory) or PostgreSQL
//! (`DATABASE_URL=postgres://...`). One set of portable migrations (`migrations/`) runs on both
//! at start. Queries are written once with `$N` placeholders; for SQLite they are rewritten to
//! SQLite's numbered `?N` form.

use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// The database behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// The metadata store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// An uploaded audio file's record.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AudioRecord {
    /// Its id (a UUID).
    pub id: String,
    /// The uploader (JWT subject), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Visible to its owner only.
    pub is_private: bool,
    /// The file name given at upload.
    pub original_name: Option<String>,
    /// Where the bytes are (not exposed).
    #[serde(skip)]
    pub path: String,
    /// Size in bytes.
    pub size_bytes: i64,
    /// SHA-256 of the bytes, hex.
    pub content_hash: String,
    /// Codec (e.g. "mp3", "flac").
    pub codec: String,
    /// Container (e.g. "mp3", "mp4", "ogg").
    pub container: String,
    /// Sample rate in Hz.
    pub sample_rate: i64,
    /// Channels.
    pub channels: i64,
    /// Bits per sample (lossless sources).
    pub bits_per_sample: Option<i64>,
    /// Duration in milliseconds.
    pub duration_ms: Option<i64>,
    /// Average bitrate in bits per second.
    pub bitrate: Option<i64>,
    /// Title tag.
    pub title: Option<String>,
    /// Artist tag.
    pub artist: Option<String>,
    /// Album tag.
    pub album: Option<String>,
    /// EBU R128 integrated loudness, LUFS.
    pub loudness_lufs: Option<f64>,
    /// Loudness range, LU.
    pub loudness_range_lu: Option<f64>,
    /// True peak, dBTP.
    pub true_peak_dbtp: Option<f64>,
    /// Upload time, Unix milliseconds.
    pub created_at: i64,
}

impl Store {
    /// Connects and runs the migrations.
    ///
    /// # Errors
    /// When the database cannot be reached or a migration fails.
    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 16 })
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(url)
            .await?;
        if backend == Backend::Sqlite {
            // WAL lets readers go on while a writer writes; wait for locks instead of failing.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
            sqlx::query("PRAGMA busy_timeout = 5000")
                .execute(&pool)
                .await?;
        }
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool, backend })
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The query text for this backend (`$N` -> `?N` on SQLite).
    fn sql(&self, q: &'static str) -> std::borrow::Cow<'static, str> {
        match self.backend {
            Backend::Postgres => q.into(),
            Backend::Sqlite => q.replace('$', "?").into(),
        }
    }

    /// True when the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Stores a new audio record.
    ///
    /// # Errors
    /// Database errors.
    pub async fn insert_audio(&self, r: &AudioRecord) -> Result<(), sqlx::Error> {
        let q = self.sql(
            "INSERT INTO audio_files (id, owner, is_private, original_name, path, size_bytes, \
             content_hash, codec, container, sample_rate, channels, bits_per_sample, duration_ms, \
             bitrate, title, artist, album, loudness_lufs, loudness_range_lu, true_peak_dbtp, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
             $15, $16, $17, $18, $19, $20, $21)",
        );
        sqlx::query(&q)
            .bind(&r.id)
            .bind(&r.owner)
            .bind(i64::from(r.is_private))
            .bind(&r.original_name)
            .bind(&r.path)
            .bind(r.size_bytes)
            .bind(&r.content_hash)
            .bind(&r.codec)
            .bind(&r.container)
            .bind(r.sample_rate)
            .bind(r.channels)
            .bind(r.bits_per_sample)
            .bind(r.duration_ms)
            .bind(r.bitrate)
            .bind(&r.title)
            .bind(&r.artist)
            .bind(&r.album)
            .bind(r.loudness_lufs)
            .bind(r.loudness_range_lu)
            .bind(r.true_peak_dbtp)
            .bind(r.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The record of `id`, if any.
    ///
    /// # Errors
    /// Database errors.
    pub async fn get_audio(&self, id: &str) -> Result<Option<AudioRecord>, sqlx::Error> {
        let q = self.sql("SELECT * FROM audio_files WHERE id = $1");
        let row = sqlx::query(&q).bind(id).fetch_optional(&self.pool).await?;
        row.map(|r| audio_from_row(&r)).transpose()
    }

    /// Deletes the record of `id`; true when it existed.
    ///
    /// # Errors
    /// Database errors.
    pub async fn delete_audio(&self, id: &str) -> Result<bool, sqlx::Error> {
        let q = self.sql("DELETE FROM audio_files WHERE id = $1");
        let done = sqlx::query(&q).bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn audio_from_row(r: &AnyRow) -> Result<AudioRecord, sqlx::Error> {
    Ok(AudioRecord {
        id: r.try_get("id")?,
        owner: r.try_get("owner")?,
        is_private: r.try_get::<i64, _>("is_private")? != 0,
        original_name: r.try_get("original_name")?,
        path: r.try_get("path")?,
        size_bytes: r.try_get("size_bytes")?,
        content_hash: r.try_get("content_hash")?,
        codec: r.try_get("codec")?,
        container: r.try_get("container")?,
        sample_rate: r.try_get("sample_rate")?,
        channels: r.try_get("channels")?,
        bits_per_sample: r.try_get("bits_per_sample")?,
        duration_ms: r.try_get("duration_ms")?,
        bitrate: r.try_get("bitrate")?,
        title: r.try_get("title")?,
        artist: r.try_get("artist")?,
        album: r.try_get("album")?,
        loudness_lufs: r.try_get("loudness_lufs")?,
        loudness_range_lu: r.try_get("loudness_range_lu")?,
        true_peak_dbtp: r.try_get("true_peak_dbtp")?,
        created_at: r.try_get("created_at")?,
    })
}

/// A processing job's record.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JobRecord {
    /// Its id (a UUID).
    pub id: String,
    /// "transcode" or "compress".
    pub kind: String,
    /// Who created it (JWT subject or `key:<id>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The source file.
    pub file_id: String,
    /// The request's parameters (JSON).
    #[serde(serialize_with = "raw_json")]
    #[schema(value_type = Object)]
    pub params: String,
    /// "queued", "running", "done" or "failed".
    pub state: String,
    /// 0 to 1.
    pub progress: f64,
    /// The file made (for a pass-through compression, the source itself).
    pub result_file_id: Option<String>,
    /// A remark (e.g. why nothing was re-encoded).
    pub note: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

fn raw_json<S: serde::Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    let value: serde_json::Value = serde_json::from_str(v).unwrap_or(serde_json::Value::Null);
    serde::Serialize::serialize(&value, s)
}

impl Store {
    /// Stores a new job.
    ///
    /// # Errors
    /// Database errors.
    pub async fn insert_job(&self, j: &JobRecord) -> Result<(), sqlx::Error> {
        let q = self.sql(
            "INSERT INTO jobs (id, kind, file_id, params, state, progress, result_file_id, note, \
             error, created_at, updated_at, owner) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11, $12)",
        );
        sqlx::query(&q)
            .bind(&j.id)
            .bind(&j.kind)
            .bind(&j.file_id)
            .bind(&j.params)
            .bind(&j.state)
            .bind(j.progress)
            .bind(&j.result_file_id)
            .bind(&j.note)
            .bind(&j.error)
            .bind(j.created_at)
            .bind(j.updated_at)
            .bind(&j.owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Updates a job's state and outcome.
    ///
    /// # Errors
    /// Database errors.
    #[allow(clippy::too_many_arguments)]
    pub async fn update_job(
        &self,
        id: &str,
        state: &str,
        progress: f64,
        result_file_id: Option<&str>,
        note: Option<&str>,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let q = self.sql(
            "UPDATE jobs SET state = $1, progress = $2, result_file_id = $3, note = $4, error = $5, \
             updated_at = $6 WHERE id = $7",
        );
        sqlx::query(&q)
            .bind(state)
            .bind(progress)
            .bind(result_file_id)
            .bind(note)
            .bind(error)
            .bind(now_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A job.
    ///
    /// # Errors
    /// Database errors.
    pub async fn get_job(&self, id: &str) -> Result<Option<JobRecord>, sqlx::Error> {
        let q = self.sql("SELECT * FROM jobs WHERE id = $1");
        let row = sqlx::query(&q).bind(id).fetch_optional(&self.pool).await?;
        row.map(|r| job_from_row(&r)).transpose()
    }

    /// Jobs that must run: queued, and running ones (interrupted by a restart), oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn pending_jobs(&self) -> Result<Vec<String>, sqlx::Error> {
        let q = self.sql(
            "SELECT id FROM jobs WHERE state = 'queued' OR state = 'running' ORDER BY created_at",
        );
        let rows = sqlx::query(&q).fetch_all(&self.pool).await?;
        rows.iter().map(|r| r.try_get("id")).collect()
    }
}

fn job_from_row(r: &AnyRow) -> Result<JobRecord, sqlx::Error> {
    Ok(JobRecord {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        owner: r.try_get("owner")?,
        file_id: r.try_get("file_id")?,
        params: r.try_get("params")?,
        state: r.try_get("state")?,
        progress: r.try_get("progress")?,
        result_file_id: r.try_get("result_file_id")?,
        note: r.try_get("note")?,
        error: r.try_get("error")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// A live stream's record.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StreamRecord {
    /// Its id (a UUID).
    pub id: String,
    /// The creator (JWT subject), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Title.
    pub title: String,
    /// Description.
    pub description: Option<String>,
    /// Visible to its owner only.
    pub is_private: bool,
    /// "low", "medium" or "high".
    pub quality: String,
    /// SHA-256 of the ingest key (the key itself is shown once, at creation).
    #[serde(skip)]
    pub ingest_key_hash: String,
    /// A source is sending.
    pub is_live: bool,
    /// Listeners now.
    pub viewer_count: i64,
    /// When it went live, Unix milliseconds.
    pub started_at: Option<i64>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
    /// Record its live sessions: `Some(true)` yes, `Some(false)` no, `None` as
    /// `LIVE_RECORD_DEFAULT` says.
    pub record: Option<bool>,
}

impl Store {
    /// Stores a new stream.
    ///
    /// # Errors
    /// Database errors.
    pub async fn insert_stream(&self, s: &StreamRecord) -> Result<(), sqlx::Error> {
        let q = self.sql(
            "INSERT INTO streams (id, owner, title, description, is_private, quality, \
             ingest_key_hash, is_live, viewer_count, started_at, created_at, updated_at, record) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        );
        sqlx::query(&q)
            .bind(&s.id)
            .bind(&s.owner)
            .bind(&s.title)
            .bind(&s.description)
            .bind(i64::from(s.is_private))
            .bind(&s.quality)
            .bind(&s.ingest_key_hash)
            .bind(i64::from(s.is_live))
            .bind(s.viewer_count)
            .bind(s.started_at)
            .bind(s.created_at)
            .bind(s.updated_at)
            .bind(s.record.map(i64::from))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a stream going on air (`started_at` set) or off air (`viewer_count` zeroed).
    ///
    /// # Errors
    /// Database errors.
    pub async fn set_stream_live(
        &self,
        id: &str,
        live: bool,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let q = if live {
            self.sql(
                "UPDATE streams SET is_live = 1, started_at = $1, updated_at = $1 WHERE id = $2",
            )
        } else {
            self.sql(
                "UPDATE streams SET is_live = 0, viewer_count = 0, updated_at = $1 WHERE id = $2",
            )
        };
        sqlx::query(&q)
            .bind(now_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks every stream off air (at start of a single node: no source survives a restart).
    ///
    /// # Errors
    /// Database errors.
    pub async fn reset_live_streams(&self) -> Result<u64, sqlx::Error> {
        let q = self.sql("UPDATE streams SET is_live = 0, viewer_count = 0 WHERE is_live = 1");
        Ok(sqlx::query(&q).execute(&self.pool).await?.rows_affected())
    }

    /// Sets a stream's `viewer_count`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn set_stream_viewers(&self, id: &str, viewers: i64) -> Result<(), sqlx::Error> {
        let q = self.sql("UPDATE streams SET viewer_count = $1 WHERE id = $2");
        sqlx::query(&q)
            .bind(viewers)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A stream.
    ///
    /// # Errors
    /// Database errors.
    pub async fn get_stream(&self, id: &str) -> Result<Option<StreamRecord>, sqlx::Error> {
        let q = self.sql("SELECT * FROM streams WHERE id = $1");
        let row = sqlx::query(&q).bind(id).fetch_optional(&self.pool).await?;
        row.map(|r| stream_from_row(&r)).transpose()
    }

    /// The streams `viewer` may see (public ones, their own private ones; all for an admin),
    /// newest first, and their total count.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list_streams(
        &self,
        viewer: Option<&str>,
        all: bool,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<StreamRecord>, i64), sqlx::Error> {
        let q = self.sql(
            "SELECT * FROM streams WHERE is_private = 0 OR owner = $1 OR $2 = 1 \
             ORDER BY created_at DESC, id LIMIT $3 OFFSET $4",
        );
        let rows = sqlx::query(&q)
            .bind(viewer)
            .bind(i64::from(all))
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        let q = self
            .sql("SELECT COUNT(*) AS n FROM streams WHERE is_private = 0 OR owner = $1 OR $2 = 1");
        let total: i64 = sqlx::query(&q)
            .bind(viewer)
            .bind(i64::from(all))
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        let list = rows.iter().map(stream_from_row).collect::<Result<_, _>>()?;
        Ok((list, total))
    }

    /// Writes a stream's editable fields.
    ///
    /// # Errors
    /// Database errors.
    pub async fn update_stream(&self, s: &StreamRecord) -> Result<(), sqlx::Error> {
        let q = self.sql(
            "UPDATE streams SET title = $1, description = $2, is_private = $3, quality = $4, \
             updated_at = $5, record = $6 WHERE id = $7",
        );
        sqlx::query(&q)
            .bind(&s.title)
            .bind(&s.description)
            .bind(i64::from(s.is_private))
            .bind(&s.quality)
            .bind(s.updated_at)
            .bind(s.record.map(i64::from))
            .bind(&s.id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes a stream; true when it existed.
    ///
    /// # Errors
    /// Database errors.
    pub async fn delete_stream(&self, id: &str) -> Result<bool, sqlx::Error> {
        let q = self.sql("DELETE FROM streams WHERE id = $1");
        Ok(sqlx::query(&q)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0)
    }
}

fn stream_from_row(r: &AnyRow) -> Result<StreamRecord, sqlx::Error> {
    Ok(StreamRecord {
        id: r.try_get("id")?,
        owner: r.try_get("owner")?,
        title: r.try_get("title")?,
        description: r.try_get("description")?,
        is_private: r.try_get::<i64, _>("is_private")? != 0,
        quality: r.try_get("quality")?,
        ingest_key_hash: r.try_get("ingest_key_hash")?,
        is_live: r.try_get::<i64, _>("is_live")? != 0,
        viewer_count: r.try_get("viewer_count")?,
        started_at: r.try_get("started_at")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        record: r.try_get::<Option<i64>, _>("record")?.map(|v| v != 0),
    })
}

/// A live recording's record: one live session of a stream and the audio file it became.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RecordingRecord {
    /// Its id (a UUID; also the name of its directory under `LIVE_RECORDINGS_DIR/{stream_id}`).
    pub id: String,
    /// The stream recorded.
    pub stream_id: String,
    /// The audio file it became (once finished or recovered).
    pub audio_id: Option<String>,
    /// When recording started, Unix milliseconds.
    pub started_at: i64,
    /// When it ended (or was recovered), Unix milliseconds.
    pub ended_at: Option<i64>,
    /// `recording`, `finished`, `recovered` (restored after a crash), `empty` (no audio was
    /// received) or `failed`.
    pub state: String,
}

impl Store {
    /// Stores a new recording.
    ///
    /// # Errors
    /// Database errors.
    pub async fn insert_recording(&self, r: &RecordingRecord) -> Result<(), sqlx::Error> {
        let q = self.sql(
            "INSERT INTO recordings (id, stream_id, audio_id, started_at, ended_at, state) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        );
        sqlx::query(&q)
            .bind(&r.id)
            .bind(&r.stream_id)
            .bind(&r.audio_id)
            .bind(r.started_at)
            .bind(r.ended_at)
            .bind(&r.state)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Writes a recording's outcome.
    ///
    /// # Errors
    /// Database errors.
    pub async fn finish_recording(
        &self,
        id: &str,
        audio_id: Option<&str>,
        ended_at: i64,
        state: &str,
    ) -> Result<(), sqlx::Error> {
        let q = self
            .sql("UPDATE recordings SET audio_id = $1, ended_at = $2, state = $3 WHERE id = $4");
        sqlx::query(&q)
            .bind(audio_id)
            .bind(ended_at)
            .bind(state)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A recording.
    ///
    /// # Errors
    /// Database errors.
    pub async fn get_recording(&self, id: &str) -> Result<Option<RecordingRecord>, sqlx::Error> {
        let q = self.sql("SELECT * FROM recordings WHERE id = $1");
        let row = sqlx::query(&q).bind(id).fetch_optional(&self.pool).await?;
        row.map(|r| recording_from_row(&r)).transpose()
    }

    /// The recordings of a stream, newest first (at most `limit`).
    ///
    /// # Errors
    /// Database errors.
    pub async fn list_recordings(
        &self,
        stream_id: &str,
        limit: i64,
    ) -> Result<Vec<RecordingRecord>, sqlx::Error> {
        let q = self.sql(
            "SELECT * FROM recordings WHERE stream_id = $1 ORDER BY started_at DESC, id LIMIT $2",
        );
        let rows = sqlx::query(&q)
            .bind(stream_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(recording_from_row).collect()
    }
}

fn recording_from_row(r: &AnyRow) -> Result<RecordingRecord, sqlx::Error> {
    Ok(RecordingRecord {
        id: r.try_get("id")?,
        stream_id: r.try_get("stream_id")?,
        audio_id: r.try_get("audio_id")?,
        started_at: r.try_get("started_at")?,
        ended_at: r.try_get("ended_at")?,
        state: r.try_get("state")?,
    })
}

/// An API key's record (the key itself is never stored).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ApiKeyRecord {
    /// Its id (a UUID).
    pub id: String,
    /// A name for people.
    pub name: String,
    /// The role it acts with.
    pub role: String,
    /// SHA-256 of the key, hex.
    #[serde(skip)]
    pub key_hash: String,
    /// The admin who created it.
    pub created_by: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// When it was revoked, Unix milliseconds.
    pub revoked_at: Option<i64>,
}

impl Store {
    /// Stores a new API key.
    ///
    /// # Errors
    /// Database errors.
    pub async fn insert_api_key(&self, k: &ApiKeyRecord) -> Result<(), sqlx::Error> {
        let q = self.sql(
            "INSERT INTO api_keys (id, name, role, key_hash, created_by, created_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        );
        sqlx::query(&q)
            .bind(&k.id)
            .bind(&k.name)
            .bind(&k.role)
            .bind(&k.key_hash)
            .bind(&k.created_by)
            .bind(k.created_at)
            .bind(k.revoked_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The key with this hash, if any.
    ///
    /// # Errors
    /// Database errors.
    pub async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, sqlx::Error> {
        let q = self.sql("SELECT * FROM api_keys WHERE key_hash = $1");
        let row = sqlx::query(&q)
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| api_key_from_row(&r)).transpose()
    }

    /// Every key, newest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, sqlx::Error> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at DESC, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(api_key_from_row).collect()
    }

    /// Revokes a key; true when it existed and was active.
    ///
    /// # Errors
    /// Database errors.
    pub async fn revoke_api_key(&self, id: &str, now_ms: i64) -> Result<bool, sqlx::Error> {
        let q =
            self.sql("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL");
        Ok(sqlx::query(&q)
            .bind(now_ms)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0)
    }
}

fn api_key_from_row(r: &AnyRow) -> Result<ApiKeyRecord, sqlx::Error> {
    Ok(ApiKeyRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        role: r.try_get("role")?,
        key_hash: r.try_get("key_hash")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

/// Listening figures of a file or stream over a time range, from stored sessions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SessionStats {
    /// Sessions that started in the range (for files: plays).
    pub sessions: u64,
    /// Distinct listeners among them.
    pub unique_listeners: u64,
    /// Total listening time, seconds.
    pub listening_time_seconds: f64,
    /// Average session length, seconds.
    pub average_session_seconds: f64,
    /// Bytes sent.
    pub bytes: u64,
    /// Most sessions open at once.
    pub peak_listeners: u64,
    /// Sessions by protocol.
    pub by_protocol: std::collections::BTreeMap<String, u64>,
    /// Per interval: start (Unix ms), sessions, listening seconds.
    pub series: Vec<SeriesPoint>,
    /// True when the range held more sessions than were read (figures are a lower bound).
    pub truncated: bool,
}

/// One interval of [`SessionStats::series`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SeriesPoint {
    /// Interval start, Unix milliseconds.
    pub start_ms: i64,
    /// Sessions started in it.
    pub sessions: u64,
    /// Listening time of those sessions, seconds.
    pub listening_time_seconds: f64,
}

/// Most sessions read for one figures request.
const MAX_SESSIONS_READ: i64 = 500_000;

impl Store {
    /// Applies an analytics batch: records its id and upserts its sessions, in one transaction.
    /// A batch already applied changes nothing.
    ///
    /// # Errors
    /// Database errors.
    pub async fn store_sessions(
        &self,
        node: &str,
        batch: &veza_stream_core::analytics::Batch,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let q = self.sql(
            "INSERT INTO analytics_batches (node, seq, stored_at) VALUES ($1, $2, $3) \
             ON CONFLICT (node, seq) DO NOTHING",
        );
        let fresh = sqlx::query(&q)
            .bind(node)
            .bind(i64::try_from(batch.id.seq).unwrap_or(i64::MAX))
            .bind(crate::http::audio::now_ms())
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if fresh {
            let q = self.sql(
                "INSERT INTO listen_sessions (id, target, listener_key, protocol, rendition, \
                 client, started_ms, ended_ms, duration_ms, bytes) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (id) DO UPDATE SET \
                 ended_ms = COALESCE(excluded.ended_ms, listen_sessions.ended_ms), \
                 duration_ms = CASE WHEN excluded.duration_ms > listen_sessions.duration_ms \
                   THEN excluded.duration_ms ELSE listen_sessions.duration_ms END, \
                 bytes = CASE WHEN excluded.bytes > listen_sessions.bytes \
                   THEN excluded.bytes ELSE listen_sessions.bytes END, \
                 rendition = excluded.rendition",
            );
            for s in &batch.sessions {
                sqlx::query(&q)
                    .bind(format!("{:032x}", s.id.0))
                    .bind(&s.stream)
                    .bind(format!("{:016x}", s.listener_key))
                    .bind(s.protocol.as_str())
                    .bind(&s.rendition)
                    .bind(&s.client)
                    .bind(s.started_ms)
                    .bind(s.ended_ms)
                    .bind(i64::try_from(s.duration.as_millis()).unwrap_or(i64::MAX))
                    .bind(i64::try_from(s.bytes).unwrap_or(i64::MAX))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await
    }

    /// Figures of `target` for sessions started in `[from_ms, to_ms)`, with a series by
    /// `interval_ms`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn session_stats(
        &self,
        target: &str,
        from_ms: i64,
        to_ms: i64,
        interval_ms: i64,
    ) -> Result<SessionStats, sqlx::Error> {
        let q = self.sql(
            "SELECT listener_key, protocol, started_ms, ended_ms, duration_ms, bytes \
             FROM listen_sessions WHERE target = $1 AND started_ms >= $2 AND started_ms < $3 \
             ORDER BY started_ms LIMIT $4",
        );
        let rows = sqlx::query(&q)
            .bind(target)
            .bind(from_ms)
            .bind(to_ms)
            .bind(MAX_SESSIONS_READ + 1)
            .fetch_all(&self.pool)
            .await?;
        let mut st = SessionStats {
            truncated: rows.len() as i64 > MAX_SESSIONS_READ,
            ..SessionStats::default()
        };
        let mut keys = std::collections::HashSet::new();
        let mut edges: Vec<(i64, i32)> = Vec::new();
        let mut total_ms: i64 = 0;
        let interval = interval_ms.max(60_000);
        let mut series: std::collections::BTreeMap<i64, SeriesPoint> = Default::default();
        for r in rows
            .iter()
            .take(usize::try_from(MAX_SESSIONS_READ).unwrap_or(usize::MAX))
        {
            let key: String = r.try_get("listener_key")?;
            let protocol: String = r.try_get("protocol")?;
            let started: i64 = r.try_get("started_ms")?;
            let ended: Option<i64> = r.try_get("ended_ms")?;
            let dur: i64 = r.try_get("duration_ms")?;
            let bytes: i64 = r.try_get("bytes")?;
            st.sessions += 1;
            keys.insert(key);
            *st.by_protocol.entry(protocol).or_default() += 1;
            total_ms = total_ms.saturating_add(dur.max(0));
            st.bytes = st.bytes.saturating_add(u64::try_from(bytes).unwrap_or(0));
            edges.push((started, 1));
            edges.push((
                ended.unwrap_or(started.saturating_add(dur)).max(started),
                -1,
            ));
            let slot = from_ms + (started - from_ms) / interval * interval;
            let p = series.entry(slot).or_insert_with(|| SeriesPoint {
                start_ms: slot,
                ..SeriesPoint::default()
            });
            p.sessions += 1;
            p.listening_time_seconds += dur.max(0) as f64 / 1000.0;
        }
        // Ends sort before starts at the same instant: back-to-back sessions do not overlap.
        edges.sort_unstable();
        let mut open: i64 = 0;
        for (_, d) in edges {
            open += i64::from(d);
            st.peak_listeners = st.peak_listeners.max(u64::try_from(open).unwrap_or(0));
        }
        st.unique_listeners = keys.len() as u64;
        st.listening_time_seconds = total_ms as f64 / 1000.0;
        if st.sessions > 0 {
            st.average_session_seconds = st.listening_time_seconds / st.sessions as f64;
        }
        st.series = series.into_values().collect();
        Ok(st)
    }
}
