//! Criterion benchmarks live in this crate (see `codecs.rs`).
