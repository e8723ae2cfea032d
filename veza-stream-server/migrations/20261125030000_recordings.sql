-- Live recordings. `streams.record`: 1 records the stream, 0 does not, NULL follows
-- LIVE_RECORD_DEFAULT. A recording is one live session of a stream (a source that drops and
-- returns within the grace period continues it); `audio_id` is the audio file it became;
-- `state` is `recording`, `finished`, `recovered` (restored after a crash), `empty` (no audio
-- was received) or `failed`.
ALTER TABLE streams ADD COLUMN record BIGINT;
CREATE TABLE recordings (
    id TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL,
    audio_id TEXT,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    state TEXT NOT NULL
);
CREATE INDEX recordings_stream ON recordings (stream_id, started_at);
