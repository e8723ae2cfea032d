//! Criterion benchmarks live in this crate: `codecs.rs` (codec engine) and `core.rs` (streaming core).
