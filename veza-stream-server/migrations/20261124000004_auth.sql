-- API keys for services: only the SHA-256 of the key is stored; revoked keys stay for audit.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
-- Who asked for a job (its result belongs to them).
ALTER TABLE jobs ADD COLUMN owner TEXT;
CREATE INDEX streams_owner ON streams (owner);
