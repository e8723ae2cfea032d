//! Adaptive bitrate: a bandwidth estimator and a rendition chooser.
//!
//! Pure deterministic logic: no clock, no I/O, no threads. Times come in as [`Instant`]s carried
//! by the inputs; the same inputs always give the same decisions.
//!
//! - [`BandwidthEstimator`] folds transfer samples ([`TransferSample`]: bytes, when the request
//!   went out, when the first byte came back, when the last byte arrived) into a link-rate and
//!   latency estimate. The rate excludes the time to first byte, so small transfers (a 2 s
//!   segment at 32 kbit/s is 8 kB) are not mistaken for a slow link; the latency is kept apart
//!   and added back when a download time is predicted. A robust estimate divides the harmonic
//!   mean of the recent rates by one plus the largest recent relative prediction error
//!   (RobustMPC's rule, Yin et al., SIGCOMM 2015).
//! - [`AbrController`] chooses the rung of the next segment by model-predictive control: it
//!   simulates the client buffer over a horizon (latency, download time of the real next segment
//!   sizes, buffer cap idling) for every rung sequence and takes the first rung of the plan with
//!   the best score, where a plan earns its bitrate and pays for stalls, for bitrate changes and
//!   for ending the horizon with a buffer below a reserve. The throughput it plans with moves
//!   from the robust estimate towards the mean as the buffer fills, and the downloads after the
//!   next one (which are decided again with fresh samples) are planned a little closer to the
//!   mean still. These buffer-dependent terms
//!   make the chooser cautious when the buffer is low and let it spend a full buffer, and the
//!   reserve shrinks to the media left after the horizon near the end of the stream. Plans are
//!   searched exactly with Pareto pruning (a plan with less buffer and less reward than another
//!   one with the same last rung is dropped), so the cost is small and bounded, and the search
//!   reuses its buffers (no allocation per decision).
//!
//! The chooser is a decision function rather than a `handle_input`/`poll_output` machine: it has
//! no timers and no outputs of its own; the caller asks it at each switch point.
//! - [`Ladder`] holds the renditions and answers the HLS questions: which rungs are worth
//!   offering ([`Ladder::thinned`]) and in which order to list them in a master playlist
//!   ([`Ladder::playlist_order`]).
//!
//! # Use by HLS (client-side ABR)
//!
//! The player (or a test harness) asks [`AbrController::decide`] before each segment request,
//! passing the buffer level, and reports each finished download with
//! [`AbrController::on_transfer`].
//!
//! # Use by the server (WebSocket and progressive listeners)
//!
//! The server cannot see the client's buffer, but it knows how much media it has sent ahead of
//! real time and how much is still queued in its socket buffer. At each switch point (a frame
//! boundary, e.g. every 2 s of media), it reports what was written since the last switch point
//! as a [`TransferSample`] (the measured send throughput), and asks for a decision with
//! [`DecisionContext::for_progressive`]: the buffer is the media sent ahead of the listener's
//! playback position minus the media still queued, and the "segment" is the media until the
//! next switch point. The switch then takes effect on the next frame boundary.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, Instant};
//! use veza_audio::Bitrate;
//! use veza_stream_core::abr::{AbrConfig, AbrController, DecisionContext, Ladder, TransferSample};
//!
//! let ladder = Ladder::new([32, 64, 128, 256].map(Bitrate::kbps)).unwrap();
//! let mut abr = AbrController::new(AbrConfig::new(ladder)).unwrap();
//! let t0 = Instant::now(); // in the core, instants always come from the caller
//! let seg = Duration::from_secs(4);
//!
//! // No sample yet: the lowest rung.
//! let first = abr.decide(&DecisionContext::new(Duration::ZERO, seg)).unwrap();
//! assert_eq!(first.rung, 0);
//!
//! // 16 kB arrived in 100 ms after a 50 ms first-byte delay: a fast link.
//! let sample = TransferSample::new(16_000, t0, t0 + Duration::from_millis(50),
//!     t0 + Duration::from_millis(150)).unwrap();
//! abr.on_transfer(sample);
//! let next = abr.decide(&DecisionContext::new(seg, seg)).unwrap();
//! assert!(next.rung > 0);
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use veza_audio::Bitrate;

/// Largest number of rungs a [`Ladder`] accepts (bounds the planner's work).
pub const MAX_RUNGS: usize = 32;
/// Largest number of segments the planner looks ahead (bounds the planner's work).
pub const MAX_HORIZON_SEGMENTS: usize = 16;
/// Largest number of samples the estimator keeps.
pub const MAX_WINDOW: usize = 64;
/// Most plans kept per last rung at each planning step (bounds the planner's memory).
const MAX_PLANS_PER_RUNG: usize = 48;

/// Errors of the ABR module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AbrError {
    /// The ladder has no rung.
    #[error("the ladder has no rung")]
    EmptyLadder,
    /// The ladder has more rungs than [`MAX_RUNGS`].
    #[error("the ladder has {0} rungs; at most {MAX_RUNGS} are supported")]
    TooManyRungs(usize),
    /// A rung has a bitrate of zero.
    #[error("a rung has a bitrate of zero")]
    ZeroBitrate,
    /// Two rungs have the same bitrate.
    #[error("two rungs have the same bitrate ({0})")]
    DuplicateRung(Bitrate),
    /// A transfer sample's instants are out of order (request, first byte, last byte).
    #[error("transfer sample instants out of order")]
    SampleOutOfOrder,
    /// A transfer sample carried no bytes.
    #[error("transfer sample carried no bytes")]
    EmptySample,
    /// The segment duration of a decision is zero.
    #[error("segment duration is zero")]
    ZeroSegmentDuration,
    /// The next segment sizes given to a decision do not match the ladder.
    #[error("{given} next segment sizes given for a ladder of {rungs} rungs")]
    SegmentSizesMismatch {
        /// Number of sizes given.
        given: usize,
        /// Number of rungs in the ladder.
        rungs: usize,
    },
    /// A configuration value is out of range; the text names it.
    #[error("invalid ABR configuration: {0}")]
    InvalidConfig(&'static str),
}

/// A set of renditions, sorted by ascending bitrate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ladder {
    rungs: Vec<Bitrate>,
}

impl Ladder {
    /// A ladder from bitrates in any order. Errors if empty, if a bitrate is zero or repeated,
    /// or if there are more than [`MAX_RUNGS`] rungs.
    pub fn new(rungs: impl IntoIterator<Item = Bitrate>) -> Result<Self, AbrError> {
        let mut rungs: Vec<Bitrate> = rungs.into_iter().take(MAX_RUNGS + 1).collect();
        if rungs.is_empty() {
            return Err(AbrError::EmptyLadder);
        }
        if rungs.len() > MAX_RUNGS {
            return Err(AbrError::TooManyRungs(rungs.len()));
        }
        if rungs.iter().any(|r| r.as_bps() == 0) {
            return Err(AbrError::ZeroBitrate);
        }
        rungs.sort_by_key(|r| r.as_bps());
        if let Some(w) = rungs.windows(2).find(|w| w[0] == w[1]) {
            return Err(AbrError::DuplicateRung(w[0]));
        }
        Ok(Ladder { rungs })
    }

    /// The rungs, lowest first.
    pub fn rungs(&self) -> &[Bitrate] {
        &self.rungs
    }

    /// Number of rungs (at least one).
    pub fn len(&self) -> usize {
        self.rungs.len()
    }

    /// Always false: a ladder has at least one rung.
    pub fn is_empty(&self) -> bool {
        self.rungs.is_empty()
    }

    /// The bitrate of rung `index`, if it exists.
    pub fn get(&self, index: usize) -> Option<Bitrate> {
        self.rungs.get(index).copied()
    }

    /// The highest rung whose bitrate is at most `rate`, or rung 0 if none is.
    pub fn highest_at_most(&self, rate: f64) -> usize {
        self.rungs
            .iter()
            .rposition(|r| f64::from(r.as_bps()) <= rate)
            .unwrap_or(0)
    }

    /// The rungs worth offering: a rung is dropped when its bitrate is less than `min_step`
    /// times the previous kept rung (e.g. 1.25), because players gain little from steps that
    /// small and each rung costs an encoder. The lowest and highest rungs are always kept.
    /// Returns indices into this ladder, ascending.
    pub fn thinned(&self, min_step: f64) -> Vec<usize> {
        let n = self.rungs.len();
        let mut kept = vec![0];
        for i in 1..n {
            let prev = f64::from(self.rungs[kept[kept.len() - 1]].as_bps());
            let cur = f64::from(self.rungs[i].as_bps());
            if i == n - 1 {
                // Keep the top; drop the previous kept rung instead if the step is too small.
                if kept.len() > 1 && cur < prev * min_step {
                    kept.pop();
                }
                kept.push(i);
            } else if cur >= prev * min_step {
                kept.push(i);
            }
        }
        kept.dedup();
        kept
    }

    /// The order in which to list the rungs in an HLS master playlist. Players start with the
    /// first variant listed, so it is the highest rung at most `start_budget` (a conservative
    /// first guess of the link, e.g. the median throughput of recent listeners); the others
    /// follow in ascending order. Returns indices into this ladder.
    pub fn playlist_order(&self, start_budget: Bitrate) -> Vec<usize> {
        let first = self.highest_at_most(f64::from(start_budget.as_bps()));
        let mut order = vec![first];
        order.extend((0..self.rungs.len()).filter(|&i| i != first));
        order
    }
}

/// One finished transfer: a segment download (HLS) or what was written to a listener between
/// two switch points (server side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferSample {
    bytes: u64,
    requested: Instant,
    first_byte: Instant,
    finished: Instant,
}

impl TransferSample {
    /// A sample of `bytes` requested at `requested`, whose first byte arrived at `first_byte`
    /// and last byte at `finished`. For server-side sends with no request, pass the same
    /// instant for `requested` and `first_byte`. Errors if the instants are out of order or if
    /// no byte was transferred.
    pub fn new(
        bytes: u64,
        requested: Instant,
        first_byte: Instant,
        finished: Instant,
    ) -> Result<Self, AbrError> {
        if bytes == 0 {
            return Err(AbrError::EmptySample);
        }
        if first_byte < requested || finished < first_byte {
            return Err(AbrError::SampleOutOfOrder);
        }
        Ok(TransferSample {
            bytes,
            requested,
            first_byte,
            finished,
        })
    }

    /// Bytes transferred.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Time from the request to the first byte.
    pub fn latency(&self) -> Duration {
        self.first_byte - self.requested
    }

    /// Time from the first byte to the last.
    pub fn transfer_time(&self) -> Duration {
        self.finished - self.first_byte
    }

    /// When the last byte arrived.
    pub fn finished(&self) -> Instant {
        self.finished
    }

    /// Link rate in bits per second, excluding the latency. A transfer faster than 1 µs is
    /// counted as taking 1 µs.
    fn rate_bps(&self) -> f64 {
        let secs = self.transfer_time().as_secs_f64().max(1e-6);
        self.bytes as f64 * 8.0 / secs
    }
}

/// Settings of the [`BandwidthEstimator`].
#[derive(Debug, Clone, PartialEq)]
pub struct EstimatorConfig {
    /// Number of recent samples the estimate is made from (1 to [`MAX_WINDOW`]; default 5).
    pub window: usize,
    /// Number of recent prediction errors the robust discount looks at (1 to [`MAX_WINDOW`];
    /// default 5).
    pub error_window: usize,
    /// Cap on the robust discount: the robust estimate is at least the harmonic mean divided by
    /// `1 + max_error` (default 1.0, i.e. at least half).
    pub max_error: f64,
    /// The relative error assumed before any prediction could be checked, i.e. while the
    /// estimate rests on a single sample (default 0.5).
    pub initial_error: f64,
}

impl Default for EstimatorConfig {
    fn default() -> Self {
        EstimatorConfig {
            window: 5,
            error_window: 5,
            max_error: 1.0,
            initial_error: 0.5,
        }
    }
}

impl EstimatorConfig {
    fn validate(&self) -> Result<(), AbrError> {
        if !(1..=MAX_WINDOW).contains(&self.window) {
            return Err(AbrError::InvalidConfig("estimator window"));
        }
        if !(1..=MAX_WINDOW).contains(&self.error_window) {
            return Err(AbrError::InvalidConfig("estimator error window"));
        }
        if !(self.max_error.is_finite() && self.max_error >= 0.0) {
            return Err(AbrError::InvalidConfig("estimator max error"));
        }
        if !(self.initial_error.is_finite() && self.initial_error >= 0.0) {
            return Err(AbrError::InvalidConfig("estimator initial error"));
        }
        Ok(())
    }
}

/// A bandwidth estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Harmonic mean of the recent link rates, bits per second.
    pub mean_bps: f64,
    /// The mean discounted by the recent prediction error, bits per second.
    pub robust_bps: f64,
    /// The last link rate measured, bits per second.
    pub last_bps: f64,
    /// Mean of the recent latencies (time to first byte).
    pub latency: Duration,
    /// Largest relative prediction error over the error window.
    pub error: f64,
}

impl Estimate {
    /// The robust estimate as a [`Bitrate`] (saturating).
    pub fn robust(&self) -> Bitrate {
        to_bitrate(self.robust_bps)
    }

    /// The mean estimate as a [`Bitrate`] (saturating).
    pub fn mean(&self) -> Bitrate {
        to_bitrate(self.mean_bps)
    }
}

fn to_bitrate(bps: f64) -> Bitrate {
    // `as` saturates for floats out of range and maps NaN to 0, which is what we want.
    Bitrate::bps(bps as u32)
}

/// Folds transfer samples into a link-rate and latency estimate (see the module docs).
/// Memory is bounded by the window sizes.
#[derive(Debug, Clone)]
pub struct BandwidthEstimator {
    config: EstimatorConfig,
    rates: VecDeque<f64>,
    latencies: VecDeque<f64>,
    errors: VecDeque<f64>,
    last: Option<TransferSample>,
}

impl BandwidthEstimator {
    /// A new estimator with no sample.
    pub fn new(config: EstimatorConfig) -> Result<Self, AbrError> {
        config.validate()?;
        Ok(BandwidthEstimator {
            rates: VecDeque::with_capacity(config.window),
            latencies: VecDeque::with_capacity(config.window),
            errors: VecDeque::with_capacity(config.error_window),
            config,
            last: None,
        })
    }

    /// Forget every sample (e.g. on a new session or a network change).
    pub fn reset(&mut self) {
        self.rates.clear();
        self.latencies.clear();
        self.errors.clear();
        self.last = None;
    }

    /// Number of samples currently in the window.
    pub fn samples(&self) -> usize {
        self.rates.len()
    }

    /// The last sample folded in.
    pub fn last_sample(&self) -> Option<&TransferSample> {
        self.last.as_ref()
    }

    /// Fold in one sample.
    pub fn on_sample(&mut self, sample: TransferSample) {
        let rate = sample.rate_bps();
        if let Some(pred) = self.harmonic_mean() {
            push_bounded(
                &mut self.errors,
                ((pred - rate).abs() / rate).min(self.config.max_error),
                self.config.error_window,
            );
        }
        push_bounded(&mut self.rates, rate, self.config.window);
        push_bounded(
            &mut self.latencies,
            sample.latency().as_secs_f64(),
            self.config.window,
        );
        self.last = Some(sample);
    }

    fn harmonic_mean(&self) -> Option<f64> {
        if self.rates.is_empty() {
            return None;
        }
        let inv: f64 = self.rates.iter().map(|r| 1.0 / r).sum();
        Some(self.rates.len() as f64 / inv)
    }

    /// The current estimate, or `None` before the first sample.
    pub fn estimate(&self) -> Option<Estimate> {
        let mean = self.harmonic_mean()?;
        let error = if self.errors.is_empty() {
            self.config.initial_error
        } else {
            self.errors.iter().copied().fold(0.0, f64::max)
        };
        let latency = self.latencies.iter().sum::<f64>() / self.latencies.len() as f64;
        Some(Estimate {
            mean_bps: mean,
            robust_bps: mean / (1.0 + error),
            last_bps: self.rates.back().copied().unwrap_or(mean),
            latency: Duration::from_secs_f64(latency),
            error,
        })
    }
}

fn push_bounded(q: &mut VecDeque<f64>, v: f64, cap: usize) {
    while q.len() >= cap {
        q.pop_front();
    }
    q.push_back(v);
}

/// Settings of the [`AbrController`]. Weights are relative to the QoE model of the module docs:
/// a segment at rung `r` earns `bitrate(r)` (Mbit/s); a second of stall costs
/// `rebuffer_penalty * bitrate(top)`; a change of rung costs `switch_penalty * |Δbitrate|`.
#[derive(Debug, Clone, PartialEq)]
pub struct AbrConfig {
    /// The renditions.
    pub ladder: Ladder,
    /// The bandwidth estimator's settings.
    pub estimator: EstimatorConfig,
    /// How far ahead plans look (rounded up to whole segments, 1 to
    /// [`MAX_HORIZON_SEGMENTS`]; default 24 s).
    pub horizon: Duration,
    /// Cost of one second of stall, in units of the top rung's bitrate (default 4.0; the QoE
    /// metric of the evaluation uses 1.0, and a planner that uses more stalls less, which is
    /// worth more than the bitrate it gives up because predictions err).
    pub rebuffer_penalty: f64,
    /// Cost of a change of rung per unit of bitrate change (default 1.5; the QoE metric of the
    /// evaluation uses 1.0, and a planner that switches less often undoes fewer switches when
    /// the estimate moves back).
    pub switch_penalty: f64,
    /// Buffer the plans should end the horizon with; every second short of it costs like a
    /// second of stall times `reserve_weight` (default 12 s).
    pub reserve: Duration,
    /// Weight of the reserve shortfall (default 0.25).
    pub reserve_weight: f64,
    /// Fraction of the robust estimate the planner relies on (default 1.0).
    pub safety: f64,
    /// The rung of the first segment, before any sample (default 0, the lowest).
    pub startup_rung: usize,
    /// Buffer-aware trust in the mean estimate, 0 to 1: the planned throughput moves from the
    /// robust estimate towards the mean in proportion to the buffer level (relative to a full
    /// buffer, the cap minus one segment, or `reserve` twice over without a cap), times this
    /// weight (default 0.5). A full buffer can absorb a prediction error that an empty one
    /// cannot.
    pub optimism: f64,
    /// Buffer the plans should keep at the end of the horizon when it reaches the end of the
    /// stream (default 0: the buffer is spent at the end).
    pub end_reserve: Duration,
    /// Trust in the mean estimate for the segments after the next one, 0 to 1: the plan's later
    /// downloads use a throughput moved from the next download's towards the mean by this
    /// weight (default 0.3; 0 plans every download with the same throughput). Only the next
    /// segment is committed; the later ones are decided again with fresh samples, so the plan
    /// need not be as cautious about them.
    pub lookahead_optimism: f64,
}

impl AbrConfig {
    /// Default settings for `ladder`.
    pub fn new(ladder: Ladder) -> Self {
        AbrConfig {
            ladder,
            estimator: EstimatorConfig::default(),
            horizon: Duration::from_secs(24),
            rebuffer_penalty: 4.0,
            switch_penalty: 1.5,
            reserve: Duration::from_secs(12),
            reserve_weight: 0.25,
            safety: 1.0,
            startup_rung: 0,
            optimism: 0.5,
            end_reserve: Duration::ZERO,
            lookahead_optimism: 0.3,
        }
    }

    fn validate(&self) -> Result<(), AbrError> {
        self.estimator.validate()?;
        let finite_nonneg = |v: f64| v.is_finite() && v >= 0.0;
        if self.horizon.is_zero() {
            return Err(AbrError::InvalidConfig("horizon is zero"));
        }
        if !finite_nonneg(self.rebuffer_penalty) {
            return Err(AbrError::InvalidConfig("rebuffer penalty"));
        }
        if !finite_nonneg(self.switch_penalty) {
            return Err(AbrError::InvalidConfig("switch penalty"));
        }
        if !finite_nonneg(self.reserve_weight) {
            return Err(AbrError::InvalidConfig("reserve weight"));
        }
        if !(self.safety.is_finite() && self.safety > 0.0) {
            return Err(AbrError::InvalidConfig("safety"));
        }
        if !(self.optimism.is_finite() && (0.0..=1.0).contains(&self.optimism)) {
            return Err(AbrError::InvalidConfig("optimism must be within 0 and 1"));
        }
        if !(self.lookahead_optimism.is_finite() && (0.0..=1.0).contains(&self.lookahead_optimism))
        {
            return Err(AbrError::InvalidConfig(
                "lookahead optimism must be within 0 and 1",
            ));
        }
        if self.startup_rung >= self.ladder.len() {
            return Err(AbrError::InvalidConfig("startup rung is not in the ladder"));
        }
        Ok(())
    }
}

/// What the chooser knows about the player when a decision is due.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecisionContext<'a> {
    /// Media buffered ahead of the playback position.
    pub buffer: Duration,
    /// Duration of the next segment (and of the ones after it).
    pub segment_duration: Duration,
    /// The buffer the player will not exceed (it idles before requesting when buffer plus a
    /// segment would exceed it), if any.
    pub buffer_cap: Option<Duration>,
    /// Segments left to fetch including the next one, if the stream has an end.
    pub segments_remaining: Option<u32>,
    /// Size in bytes of the next segment at each rung, if known; otherwise bitrate × duration.
    pub next_segment_bytes: Option<&'a [u64]>,
}

impl<'a> DecisionContext<'a> {
    /// A context with a buffer level and a segment duration; no cap, no end, sizes from the
    /// bitrates.
    pub fn new(buffer: Duration, segment_duration: Duration) -> Self {
        DecisionContext {
            buffer,
            segment_duration,
            buffer_cap: None,
            segments_remaining: None,
            next_segment_bytes: None,
        }
    }

    /// The context for a server-side switch point of a progressive or WebSocket listener:
    /// `sent_ahead` is media sent beyond the listener's playback position, `queued` the part of
    /// it still in the server's send queue (not yet on the wire), and `interval` the media until
    /// the next switch point. The client's buffer is taken as `sent_ahead - queued`.
    pub fn for_progressive(sent_ahead: Duration, queued: Duration, interval: Duration) -> Self {
        DecisionContext::new(sent_ahead.saturating_sub(queued), interval)
    }
}

/// The chooser's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// The rung to fetch (or send) next, an index into the ladder.
    pub rung: usize,
    /// Its bitrate.
    pub bitrate: Bitrate,
    /// The throughput the decision relied on, bits per second (`None` before any sample).
    pub planned_throughput_bps: Option<f64>,
}

/// A partial plan in the search.
#[derive(Debug, Clone, Copy)]
struct Plan {
    buffer: f64,
    reward: f64,
    first: usize,
}

/// The rendition chooser: model-predictive control over the estimator (see the module docs).
#[derive(Debug, Clone)]
pub struct AbrController {
    config: AbrConfig,
    estimator: BandwidthEstimator,
    last_rung: Option<usize>,
    frontier: Vec<Vec<Plan>>,
    next: Vec<Vec<Plan>>,
}

impl AbrController {
    /// A controller with no history.
    pub fn new(config: AbrConfig) -> Result<Self, AbrError> {
        config.validate()?;
        let n = config.ladder.len();
        Ok(AbrController {
            estimator: BandwidthEstimator::new(config.estimator.clone())?,
            frontier: vec![Vec::with_capacity(MAX_PLANS_PER_RUNG); n],
            next: vec![Vec::with_capacity(MAX_PLANS_PER_RUNG * n); n],
            config,
            last_rung: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AbrConfig {
        &self.config
    }

    /// The estimator.
    pub fn estimator(&self) -> &BandwidthEstimator {
        &self.estimator
    }

    /// The rung of the last decision, if any.
    pub fn last_rung(&self) -> Option<usize> {
        self.last_rung
    }

    /// Forget the history (a new session).
    pub fn reset(&mut self) {
        self.estimator.reset();
        self.last_rung = None;
    }

    /// Report a finished transfer.
    pub fn on_transfer(&mut self, sample: TransferSample) {
        self.estimator.on_sample(sample);
    }

    /// Tell the controller which rung is actually being played, when the caller overrides a
    /// decision (the switching cost is counted from it).
    pub fn set_current_rung(&mut self, rung: usize) {
        if rung < self.config.ladder.len() {
            self.last_rung = Some(rung);
        }
    }

    /// Choose the rung of the next segment.
    pub fn decide(&mut self, ctx: &DecisionContext<'_>) -> Result<Decision, AbrError> {
        let n = self.config.ladder.len();
        if ctx.segment_duration.is_zero() {
            return Err(AbrError::ZeroSegmentDuration);
        }
        if let Some(sizes) = ctx.next_segment_bytes {
            if sizes.len() != n {
                return Err(AbrError::SegmentSizesMismatch {
                    given: sizes.len(),
                    rungs: n,
                });
            }
        }
        let (rung, planned) = match self.estimator.estimate() {
            None => (self.config.startup_rung, None),
            Some(est) => {
                let full = match ctx.buffer_cap {
                    Some(c) => c.saturating_sub(ctx.segment_duration),
                    None => self.config.reserve * 2,
                };
                let level = if full.is_zero() {
                    1.0
                } else {
                    (ctx.buffer.as_secs_f64() / full.as_secs_f64()).min(1.0)
                };
                let trust = self.config.optimism * level;
                let rate =
                    (est.robust_bps + (est.mean_bps - est.robust_bps) * trust) * self.config.safety;
                let rate = rate.max(1.0);
                (self.plan(ctx, &est, rate), Some(rate))
            }
        };
        self.last_rung = Some(rung);
        Ok(Decision {
            rung,
            bitrate: self.config.ladder.rungs()[rung],
            planned_throughput_bps: planned,
        })
    }

    /// Horizon in segments and whether it reaches the end of the stream.
    fn horizon(&self, ctx: &DecisionContext<'_>) -> (usize, bool) {
        let d = ctx.segment_duration.as_secs_f64();
        let h = ((self.config.horizon.as_secs_f64() / d).ceil() as usize)
            .clamp(1, MAX_HORIZON_SEGMENTS);
        match ctx.segments_remaining {
            Some(rem) if (rem as usize) <= h => ((rem as usize).max(1), true),
            _ => (h, false),
        }
    }

    /// Best first rung by exhaustive search over rung sequences with Pareto pruning.
    fn plan(&mut self, ctx: &DecisionContext<'_>, est: &Estimate, rate_bps: f64) -> usize {
        let cfg = &self.config;
        let rungs = cfg.ladder.rungs();
        let n = rungs.len();
        let d = ctx.segment_duration.as_secs_f64();
        let (h, reaches_end) = self.horizon(ctx);
        // Rewards in Mbit/s, as the evaluation's QoE_lin.
        let top = f64::from(rungs[n - 1].as_bps()) / 1e6;
        let mu = cfg.rebuffer_penalty * top;
        let latency = est.latency.as_secs_f64();
        let mut dl = [0.0f64; MAX_RUNGS];
        let mut dl_later = [0.0f64; MAX_RUNGS];
        let mut util = [0.0f64; MAX_RUNGS];
        let later_bps =
            (rate_bps + (est.mean_bps - rate_bps).max(0.0) * cfg.lookahead_optimism).max(1.0);
        for q in 0..n {
            let bits = match ctx.next_segment_bytes {
                Some(s) => s[q] as f64 * 8.0,
                None => f64::from(rungs[q].as_bps()) * d,
            };
            dl[q] = latency + bits / rate_bps;
            dl_later[q] = latency + bits / later_bps;
            util[q] = f64::from(rungs[q].as_bps()) / 1e6;
        }
        let cap = ctx.buffer_cap.map(|c| (c.as_secs_f64() - d).max(0.0));
        let last = self.last_rung.unwrap_or(0).min(n - 1);

        for f in self.frontier.iter_mut() {
            f.clear();
        }
        self.frontier[last].push(Plan {
            buffer: ctx.buffer.as_secs_f64(),
            reward: 0.0,
            first: usize::MAX,
        });
        for step in 0..h {
            let dl = if step == 0 { &dl } else { &dl_later };
            for v in self.next.iter_mut() {
                v.clear();
            }
            for (lq, plans) in self.frontier.iter().enumerate() {
                for p in plans {
                    let buf0 = match cap {
                        Some(c) => p.buffer.min(c),
                        None => p.buffer,
                    };
                    for q in 0..n {
                        let t = dl[q];
                        let (stall, nb) = if buf0 < t {
                            (t - buf0, d)
                        } else {
                            (0.0, buf0 - t + d)
                        };
                        let reward = p.reward + util[q]
                            - mu * stall
                            - cfg.switch_penalty * (util[q] - util[lq]).abs();
                        let first = if p.first == usize::MAX { q } else { p.first };
                        self.next[q].push(Plan {
                            buffer: nb,
                            reward,
                            first,
                        });
                    }
                }
            }
            std::mem::swap(&mut self.frontier, &mut self.next);
            for f in self.frontier.iter_mut() {
                pareto(f);
            }
        }
        // No more reserve is needed than the media left to fetch after the horizon.
        let reserve = match ctx.segments_remaining {
            _ if reaches_end => cfg.end_reserve.as_secs_f64(),
            Some(rem) => cfg
                .reserve
                .as_secs_f64()
                .min((rem as usize).saturating_sub(h) as f64 * d),
            None => cfg.reserve.as_secs_f64(),
        };
        let mut best: Option<(f64, usize)> = None;
        for p in self.frontier.iter().flatten() {
            let score = p.reward - cfg.reserve_weight * mu * (reserve - p.buffer).max(0.0);
            let better = match best {
                None => true,
                Some((s, f)) => score > s + 1e-12 || ((score - s).abs() <= 1e-12 && p.first > f),
            };
            if better {
                best = Some((score, p.first));
            }
        }
        best.map_or(0, |(_, f)| f.min(n - 1))
    }
}

/// Keep the plans not dominated in (buffer, reward), at most [`MAX_PLANS_PER_RUNG`] of them.
fn pareto(plans: &mut Vec<Plan>) {
    // Highest buffer first; among equal buffers, highest reward, then highest first rung.
    // (Unstable sort: no allocation; entries equal on all three keys are interchangeable.)
    plans.sort_unstable_by(|a, b| {
        b.buffer
            .total_cmp(&a.buffer)
            .then(b.reward.total_cmp(&a.reward))
            .then(b.first.cmp(&a.first))
    });
    let mut kept = 0;
    let mut best_reward = f64::NEG_INFINITY;
    for i in 0..plans.len() {
        if plans[i].reward > best_reward + 1e-12 {
            best_reward = plans[i].reward;
            plans[kept] = plans[i];
            kept += 1;
        }
    }
    plans.truncate(kept);
    if plans.len() > MAX_PLANS_PER_RUNG {
        // Keep an even spread over the buffer range.
        let len = plans.len();
        let mut out = 0;
        for k in 0..MAX_PLANS_PER_RUNG {
            let i = k * (len - 1) / (MAX_PLANS_PER_RUNG - 1);
            plans[out] = plans[i];
            out += 1;
        }
        plans.truncate(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder() -> Ladder {
        Ladder::new([32, 64, 96, 128, 192, 256, 320].map(Bitrate::kbps)).unwrap()
    }

    /// A closed loop: a player with a 30 s buffer cap over a link of `rate(t)` bits/s (piecewise
    /// constant per call), 80 ms latency, 4 s segments. Returns the rungs chosen and the stall.
    fn simulate(
        abr: &mut AbrController,
        segments: u32,
        rate: impl Fn(f64) -> f64,
    ) -> (Vec<usize>, f64) {
        let t0 = Instant::now();
        let d = 4.0;
        let cap = 30.0;
        let (mut now, mut buffer, mut stall) = (0.0f64, 0.0f64, 0.0f64);
        let mut playing = false;
        let mut chosen = Vec::new();
        let ladder = abr.config().ladder.clone();
        for i in 0..segments {
            if playing && buffer + d > cap {
                let idle = buffer + d - cap;
                now += idle;
                buffer -= idle;
            }
            let ctx = DecisionContext {
                buffer: Duration::from_secs_f64(buffer),
                segment_duration: Duration::from_secs_f64(d),
                buffer_cap: Some(Duration::from_secs_f64(cap)),
                segments_remaining: Some(segments - i),
                next_segment_bytes: None,
            };
            let dec = abr.decide(&ctx).unwrap();
            chosen.push(dec.rung);
            let bits = f64::from(ladder.rungs()[dec.rung].as_bps()) * d;
            let transfer = bits / rate(now);
            let latency = 0.08;
            let requested = t0 + Duration::from_secs_f64(now);
            let first = requested + Duration::from_secs_f64(latency);
            let done = first + Duration::from_secs_f64(transfer);
            let dl = latency + transfer;
            now += dl;
            if playing {
                if dl > buffer {
                    stall += dl - buffer;
                    buffer = 0.0;
                } else {
                    buffer -= dl;
                }
            }
            buffer += d;
            playing = true;
            abr.on_transfer(
                TransferSample::new((bits / 8.0) as u64, requested, first, done).unwrap(),
            );
        }
        (chosen, stall)
    }

    fn sample(t0: Instant, bytes: u64, secs: f64) -> TransferSample {
        TransferSample::new(
            bytes,
            t0,
            t0 + Duration::from_millis(80),
            t0 + Duration::from_millis(80) + Duration::from_secs_f64(secs),
        )
        .unwrap()
    }

    #[test]
    fn estimator_converges_on_constant_throughput() {
        let mut est = BandwidthEstimator::new(EstimatorConfig::default()).unwrap();
        assert!(est.estimate().is_none());
        let t0 = Instant::now();
        // 50 kB per 0.5 s after an 80 ms latency: 800 kbit/s.
        for _ in 0..8 {
            est.on_sample(sample(t0, 50_000, 0.5));
        }
        let e = est.estimate().unwrap();
        assert!((e.mean_bps - 800_000.0).abs() < 1.0, "{e:?}");
        assert!((e.robust_bps - 800_000.0).abs() < 1.0, "{e:?}");
        assert!(e.error < 1e-9);
        assert_eq!(e.latency, Duration::from_millis(80));
        assert_eq!(e.robust().as_kbps(), 800);
        assert_eq!(est.samples(), 5);
    }

    #[test]
    fn estimator_discounts_after_a_surprise_then_recovers() {
        let mut est = BandwidthEstimator::new(EstimatorConfig::default()).unwrap();
        let t0 = Instant::now();
        for _ in 0..5 {
            est.on_sample(sample(t0, 50_000, 0.5));
        }
        est.on_sample(sample(t0, 50_000, 2.0)); // a 4x slower sample
        let e = est.estimate().unwrap();
        assert!(e.robust_bps < e.mean_bps * 0.6, "{e:?}");
        for _ in 0..10 {
            est.on_sample(sample(t0, 50_000, 0.5));
        }
        let e = est.estimate().unwrap();
        assert!((e.robust_bps - 800_000.0).abs() < 1.0, "{e:?}");
    }

    #[test]
    fn first_decision_is_the_startup_rung() {
        let mut abr = AbrController::new(AbrConfig::new(ladder())).unwrap();
        let ctx = DecisionContext::new(Duration::ZERO, Duration::from_secs(4));
        let d = abr.decide(&ctx).unwrap();
        assert_eq!(d.rung, 0);
        assert_eq!(d.planned_throughput_bps, None);
    }

    #[test]
    fn low_buffer_never_picks_a_rung_above_throughput() {
        let t0 = Instant::now();
        for kbps in [20u64, 40, 70, 100, 150, 200, 300, 400] {
            for buffer_ms in [0u64, 500, 1000, 2000, 4000] {
                let mut abr = AbrController::new(AbrConfig::new(ladder())).unwrap();
                for _ in 0..5 {
                    // 4 s worth at `kbps`, measured.
                    abr.on_transfer(sample(t0, kbps * 1000 / 8, 1.0));
                }
                let ctx = DecisionContext {
                    buffer_cap: Some(Duration::from_secs(30)),
                    segments_remaining: Some(40),
                    ..DecisionContext::new(Duration::from_millis(buffer_ms), Duration::from_secs(4))
                };
                let d = abr.decide(&ctx).unwrap();
                assert!(
                    d.rung == 0 || u64::from(d.bitrate.as_kbps()) <= kbps,
                    "{kbps} kbit/s, buffer {buffer_ms} ms: chose {}",
                    d.bitrate
                );
            }
        }
    }

    #[test]
    fn switches_down_on_a_throughput_drop() {
        let mut abr = AbrController::new(AbrConfig::new(ladder())).unwrap();
        // 1 Mbit/s for 100 s, then 100 kbit/s.
        let (rungs, stall) = simulate(&mut abr, 60, |t| if t < 100.0 { 1e6 } else { 1e5 });
        assert_eq!(rungs[10], 6, "{rungs:?}");
        // The drop happens during segment ~33; within three segments the chooser is at or below
        // the new throughput and stays there until the end game (last 10 segments), where the
        // buffer is spent.
        let drop = rungs.iter().rposition(|&r| r == 6).unwrap();
        assert!((30..40).contains(&drop), "{rungs:?}");
        for &r in &rungs[drop + 3..50] {
            assert!(ladder().rungs()[r].as_bps() <= 100_000, "{rungs:?}");
        }
        // The buffer absorbs the drop.
        assert!(stall < 1e-9, "stall {stall}: {rungs:?}");
    }

    #[test]
    fn no_oscillation_on_a_steady_link() {
        for kbps in [50.0, 110.0, 150.0, 230.0, 500.0] {
            let mut abr = AbrController::new(AbrConfig::new(ladder())).unwrap();
            let (rungs, stall) = simulate(&mut abr, 60, |_| kbps * 1000.0);
            assert!(stall < 1e-9, "{kbps}: stall {stall}");
            // No flapping: a switch is never undone within three segments.
            for i in 1..rungs.len().saturating_sub(3) {
                if rungs[i] != rungs[i - 1] {
                    assert!(
                        !rungs[i + 1..i + 4].contains(&rungs[i - 1]),
                        "{kbps} kbit/s: flapping at {i}: {rungs:?}"
                    );
                }
            }
            // Few switches, and the mean bitrate of the steady part is about the link rate at most.
            let switches = rungs.windows(2).filter(|w| w[0] != w[1]).count();
            assert!(
                switches <= 10,
                "{kbps} kbit/s: {switches} switches: {rungs:?}"
            );
            let steady = &rungs[10..50];
            let mean: f64 = steady
                .iter()
                .map(|&r| f64::from(ladder().rungs()[r].as_bps()))
                .sum::<f64>()
                / steady.len() as f64;
            // (within 10 %: the buffer level differs between the ends of the window)
            assert!(mean <= kbps * 1100.0, "{kbps}: {rungs:?}");
            // On a link above the top rung, the top rung from the third segment on (the first
            // estimate rests on one sample and is discounted).
            if kbps >= 400.0 {
                assert!(rungs[2..].iter().all(|&r| r == 6), "{rungs:?}");
            }
        }
    }

    #[test]
    fn decisions_are_deterministic() {
        let run = || {
            let mut abr = AbrController::new(AbrConfig::new(ladder())).unwrap();
            simulate(&mut abr, 60, |t| 150_000.0 + 120_000.0 * (t / 7.0).sin())
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn spends_the_buffer_at_the_end_of_the_stream() {
        let t0 = Instant::now();
        let mut abr = AbrController::new(AbrConfig::new(ladder())).unwrap();
        for _ in 0..5 {
            abr.on_transfer(sample(t0, 50_000, 4.0)); // 100 kbit/s
        }
        let mut ctx = DecisionContext {
            buffer_cap: Some(Duration::from_secs(30)),
            segments_remaining: Some(40),
            ..DecisionContext::new(Duration::from_secs(26), Duration::from_secs(4))
        };
        abr.set_current_rung(6);
        let mid = abr.decide(&ctx).unwrap().rung;
        ctx.segments_remaining = Some(1);
        abr.set_current_rung(6);
        let end = abr.decide(&ctx).unwrap().rung;
        assert!(end > mid, "mid {mid}, end {end}");
        assert_eq!(end, 6);
        // With a reserve kept at the end, the last segment is not fetched at the top rung.
        let mut cfg = AbrConfig::new(ladder());
        cfg.end_reserve = Duration::from_secs(30);
        let mut abr = AbrController::new(cfg).unwrap();
        for _ in 0..5 {
            abr.on_transfer(sample(t0, 50_000, 4.0));
        }
        abr.set_current_rung(6);
        let kept = abr.decide(&ctx).unwrap().rung;
        assert!(kept < end, "end {end}, with an end reserve {kept}");
    }

    #[test]
    fn errors_are_typed() {
        assert_eq!(Ladder::new([]), Err(AbrError::EmptyLadder));
        assert_eq!(Ladder::new([Bitrate::kbps(0)]), Err(AbrError::ZeroBitrate));
        assert_eq!(
            Ladder::new([Bitrate::kbps(64), Bitrate::kbps(64)]),
            Err(AbrError::DuplicateRung(Bitrate::kbps(64)))
        );
        assert_eq!(
            Ladder::new((1..=40).map(Bitrate::kbps)),
            Err(AbrError::TooManyRungs(MAX_RUNGS + 1))
        );
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            TransferSample::new(10, later, t0, later),
            Err(AbrError::SampleOutOfOrder)
        );
        assert_eq!(
            TransferSample::new(0, t0, t0, later),
            Err(AbrError::EmptySample)
        );
        let mut cfg = AbrConfig::new(ladder());
        cfg.optimism = 2.0;
        assert!(matches!(
            AbrController::new(cfg),
            Err(AbrError::InvalidConfig(_))
        ));
        let mut cfg = AbrConfig::new(ladder());
        cfg.lookahead_optimism = -0.1;
        assert!(matches!(
            AbrController::new(cfg),
            Err(AbrError::InvalidConfig(_))
        ));
        let mut abr = AbrController::new(AbrConfig::new(ladder())).unwrap();
        let sizes = [1u64, 2, 3];
        let ctx = DecisionContext {
            next_segment_bytes: Some(&sizes),
            ..DecisionContext::new(Duration::ZERO, Duration::from_secs(4))
        };
        assert_eq!(
            abr.decide(&ctx),
            Err(AbrError::SegmentSizesMismatch { given: 3, rungs: 7 })
        );
        assert_eq!(
            abr.decide(&DecisionContext::new(Duration::ZERO, Duration::ZERO)),
            Err(AbrError::ZeroSegmentDuration)
        );
    }

    #[test]
    fn ladder_order_and_thinning_for_hls() {
        let l = Ladder::new([320, 32, 128, 96, 64, 192, 256].map(Bitrate::kbps)).unwrap();
        assert_eq!(l.rungs()[0], Bitrate::kbps(32));
        assert_eq!(
            l.playlist_order(Bitrate::kbps(150)),
            vec![3, 0, 1, 2, 4, 5, 6]
        );
        assert_eq!(
            l.playlist_order(Bitrate::kbps(10)),
            vec![0, 1, 2, 3, 4, 5, 6]
        );
        // Steps below 1.4x the previous kept rung are dropped: 128 (1.33x 96) and 256 (1.33x
        // 192); the top rung is always kept.
        assert_eq!(l.thinned(1.4), vec![0, 1, 2, 4, 6]);
        assert_eq!(l.thinned(1.0), vec![0, 1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn progressive_context_subtracts_the_queue() {
        let c = DecisionContext::for_progressive(
            Duration::from_secs(10),
            Duration::from_secs(3),
            Duration::from_secs(2),
        );
        assert_eq!(c.buffer, Duration::from_secs(7));
        let c = DecisionContext::for_progressive(
            Duration::from_secs(1),
            Duration::from_secs(3),
            Duration::from_secs(2),
        );
        assert_eq!(c.buffer, Duration::ZERO);
    }
}
