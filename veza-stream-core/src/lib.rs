//! `veza-stream-core`: the sans-IO streaming engine of Veza Stream.
//!
//! This crate will hold the streaming logic as small deterministic state machines (live fan-out,
//! HLS and low-latency HLS segmenting, ABR, recording, analytics, cache policy) with no I/O, no
//! clock, no threads and no async. It is an empty placeholder until that work lands; see
//! `docs/` and the project's DESIGN for the plan.
//!
//! | module | what it does |
//! |---|---|
//! | [`abr`] | bandwidth estimation and rendition choice (model-predictive control), for HLS and server-side switching |

pub mod abr;
