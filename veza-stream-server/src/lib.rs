//! `veza-stream-server`: the thin server of Veza Stream.
//!
//! It will wire `veza-audio` and `veza-stream-core` to HTTP (axum), storage (sqlx), cache, events
//! and metrics. Until that issue lands, the binary only says so.
