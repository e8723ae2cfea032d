-- Listening sessions from the analytics batches: upserted by session id (a later record of a
-- session carries its totals), so a batch stored twice counts once. `target` is `audio:<id>` or
-- `stream:<id>`; `listener_key` is a hash (hex), never an address.
CREATE TABLE listen_sessions (
    id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    listener_key TEXT NOT NULL,
    protocol TEXT NOT NULL,
    rendition TEXT,
    client TEXT,
    started_ms BIGINT NOT NULL,
    ended_ms BIGINT,
    duration_ms BIGINT NOT NULL,
    bytes BIGINT NOT NULL
);
CREATE INDEX listen_sessions_target ON listen_sessions (target, started_ms);
-- Batches applied (node id hex, sequence number).
CREATE TABLE analytics_batches (
    node TEXT NOT NULL,
    seq BIGINT NOT NULL,
    stored_at BIGINT NOT NULL,
    PRIMARY KEY (node, seq)
);
