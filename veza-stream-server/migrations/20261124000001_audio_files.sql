-- Portable SQL: runs on SQLite and PostgreSQL (ids are UUID strings, times are Unix
-- milliseconds, flags are 0/1 integers).
CREATE TABLE audio_files (
    id TEXT PRIMARY KEY,
    owner TEXT,
    is_private BIGINT NOT NULL DEFAULT 0,
    original_name TEXT,
    path TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    content_hash TEXT NOT NULL,
    codec TEXT NOT NULL,
    container TEXT NOT NULL,
    sample_rate BIGINT NOT NULL,
    channels BIGINT NOT NULL,
    bits_per_sample BIGINT,
    duration_ms BIGINT,
    bitrate BIGINT,
    title TEXT,
    artist TEXT,
    album TEXT,
    loudness_lufs DOUBLE PRECISION,
    loudness_range_lu DOUBLE PRECISION,
    true_peak_dbtp DOUBLE PRECISION,
    created_at BIGINT NOT NULL
);
CREATE INDEX audio_files_owner ON audio_files (owner);
CREATE INDEX audio_files_hash ON audio_files (content_hash);
