-- Live streams (records; live ingest and delivery come with the live-broadcasting work).
CREATE TABLE streams (
    id TEXT PRIMARY KEY,
    owner TEXT,
    title TEXT NOT NULL,
    description TEXT,
    is_private BIGINT NOT NULL DEFAULT 0,
    quality TEXT NOT NULL,
    ingest_key_hash TEXT NOT NULL,
    is_live BIGINT NOT NULL DEFAULT 0,
    viewer_count BIGINT NOT NULL DEFAULT 0,
    started_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX streams_created ON streams (created_at);
