//! Ladders: one input decoded once, N renditions encoded in one pass.
//!
//! Renditions that share an output spec (rate and channels) share one [`Converter`] (one
//! resampler), so a 4-rung MP3 ladder at 44.1 kHz decodes once and resamples never. With
//! [`LadderOptions::threads`] above 1 the encoders run on a small pool: each rung has a bounded
//! queue of converted blocks, and whichever thread is free (the decoding thread included, when
//! the queues are full) encodes the next rung that has blocks waiting, one thread per rung at a
//! time so every rung's output is identical to a single-thread run. With 1 thread everything runs
//! in the caller's thread.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::{Condvar, Mutex, MutexGuard};

use bytes::BytesMut;

use crate::decode::{Decoder, DecoderOptions};
use crate::encode::{Encoder, HeaderPatch, new_encoder};
use crate::error::{AudioError, Result};
use crate::format::{AudioSpec, OutputFormat};
use crate::metadata::{StreamInfo, Tags};
use crate::pcm::PcmBuffer;
use crate::transcode::{Converter, OutputSettings, Processing, effects_for};

/// Settings of a ladder run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LadderOptions {
    /// Encoder threads: 0 = one per available core, 1 = everything in the caller's thread.
    /// Default 0.
    pub threads: usize,
    /// Processing applied to every rendition (normalisation is not available here; set a gain).
    pub processing: Processing,
    /// Tags to write; `None` carries the source's.
    pub tags: Option<Tags>,
    /// Decoder settings.
    pub decoder: DecoderOptions,
}

/// One rendition: its settings and where its bytes go.
pub struct RungOutput {
    /// Format, bitrate, spec.
    pub settings: OutputSettings,
    /// The sink of the encoded bytes.
    pub sink: Box<dyn Write + Send>,
}

impl std::fmt::Debug for RungOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RungOutput")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Figures of one finished rendition.
#[derive(Debug, Clone, PartialEq)]
pub struct RungReport {
    /// The format written.
    pub format: OutputFormat,
    /// The spec written.
    pub output_spec: AudioSpec,
    /// Bytes written to the sink.
    pub bytes_written: u64,
    /// The final header, for sinks that can be rewritten (see [`crate::Encoder::header_patch`]).
    pub header_patch: Option<HeaderPatch>,
}

/// Figures of a finished ladder.
#[derive(Debug, Clone, PartialEq)]
pub struct LadderReport {
    /// The source as probed.
    pub source: StreamInfo,
    /// Source frames decoded.
    pub frames_decoded: u64,
    /// One report per rung, in the order given.
    pub rungs: Vec<RungReport>,
    /// Encoder threads used (0 when all ran in the caller's thread).
    pub worker_threads: usize,
}

/// A rung being encoded.
struct RungState {
    index: usize,
    group: usize,
    encoder: Box<dyn Encoder>,
    sink: Box<dyn Write + Send>,
    buf: BytesMut,
    written: u64,
}

impl RungState {
    fn encode(&mut self, pcm: &PcmBuffer) -> Result<()> {
        if pcm.is_empty() {
            return Ok(());
        }
        self.encoder.encode(pcm, &mut self.buf)?;
        if self.buf.len() >= 64 << 10 {
            self.flush_buf()?;
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> Result<()> {
        self.sink.write_all(&self.buf)?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<(usize, RungReport)> {
        self.encoder.finish(&mut self.buf)?;
        self.flush_buf()?;
        self.sink.flush()?;
        Ok((
            self.index,
            RungReport {
                format: self.encoder.format(),
                output_spec: self.encoder.spec(),
                bytes_written: self.written,
                header_patch: self.encoder.header_patch(),
            },
        ))
    }
}

/// What the decoding thread sends to encoder threads: one converted block per group.
type GroupBlocks = Arc<Vec<PcmBuffer>>;

/// Runs a ladder over a decoder, writing each rung to its sink.
///
/// # Errors
/// Any decode, processing or encode error (the first one ends the whole run), or
/// [`AudioError::InvalidConfig`] for an empty ladder or a normalisation request.
pub fn run_ladder(
    mut dec: Decoder,
    rungs: Vec<RungOutput>,
    opts: &LadderOptions,
) -> Result<LadderReport> {
    if rungs.is_empty() {
        return Err(AudioError::config("a ladder needs at least one rung"));
    }
    if opts.processing.normalize_lufs.is_some() {
        return Err(AudioError::config(
            "ladders do not normalise; measure first and set a gain",
        ));
    }
    let info = dec.info().clone();
    let source = AudioSpec {
        sample_rate: info.sample_rate,
        channels: info.channels,
    };
    let mut tags = opts.tags.clone().unwrap_or_default();
    tags.merge_missing(&info.tags);

    // One converter per distinct output spec.
    let mut groups: Vec<Converter> = Vec::new();
    let mut states = Vec::with_capacity(rungs.len());
    for (index, rung) in rungs.into_iter().enumerate() {
        let mut cfg = rung
            .settings
            .encoder_config(source, info.bits_per_sample, tags.clone())?;
        cfg.seekable_output = true;
        let spec = cfg.spec;
        let group = match groups.iter().position(|g| g.output_spec() == spec) {
            Some(g) => g,
            None => {
                let effects = effects_for(&opts.processing, &info, None)?;
                groups.push(Converter::new(
                    spec,
                    effects,
                    opts.processing.resample_quality,
                ));
                groups.len() - 1
            }
        };
        states.push(RungState {
            index,
            group,
            encoder: new_encoder(&cfg)?,
            sink: rung.sink,
            buf: BytesMut::with_capacity(128 << 10),
            written: 0,
        });
    }

    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(states.len());

    let (frames, mut reports) = if threads <= 1 {
        (
            run_inline(&mut dec, &mut groups, &mut states)?,
            finish_all(states)?,
        )
    } else {
        run_threaded(&mut dec, &mut groups, states, threads)?
    };
    reports.sort_by_key(|(i, _)| *i);
    Ok(LadderReport {
        source: info,
        frames_decoded: frames,
        rungs: reports.into_iter().map(|(_, r)| r).collect(),
        worker_threads: if threads <= 1 { 0 } else { threads },
    })
}

fn finish_all(states: Vec<RungState>) -> Result<Vec<(usize, RungReport)>> {
    states.into_iter().map(RungState::finish).collect()
}

fn run_inline(
    dec: &mut Decoder,
    groups: &mut [Converter],
    states: &mut [RungState],
) -> Result<u64> {
    let mut drained = PcmBuffer::new(groups[0].output_spec());
    let mut frames = 0u64;
    while let Some(block) = dec.next_block()? {
        frames += block.frames() as u64;
        for (g, conv) in groups.iter_mut().enumerate() {
            drained.clear();
            let out = conv.process(block, &mut drained)?;
            for st in states.iter_mut().filter(|s| s.group == g) {
                st.encode(&drained)?;
                st.encode(out)?;
            }
        }
    }
    for (g, conv) in groups.iter_mut().enumerate() {
        let tail = conv.flush()?;
        for st in states.iter_mut().filter(|s| s.group == g) {
            st.encode(tail)?;
        }
    }
    Ok(frames)
}

/// Blocks a rung has yet to encode, and whether a thread is encoding it now.
#[derive(Default)]
struct Queues {
    pending: Vec<VecDeque<GroupBlocks>>,
    busy: Vec<bool>,
    /// Blocks queued over all rungs.
    total: usize,
    /// The producer has queued its last block.
    done: bool,
    error: Option<AudioError>,
}

/// The work shared by the threads of a threaded ladder: per-rung queues and encoders.
///
/// Rungs are not tied to threads: whichever thread is free takes the next rung with queued
/// blocks (one thread per rung at a time, so each rung's blocks stay in order). The decoding
/// thread also encodes whenever the queues are full, so `threads` threads keep `threads` cores
/// busy whatever the rungs cost.
struct Pool {
    queues: Mutex<Queues>,
    wake: Condvar,
    rungs: Vec<Mutex<RungState>>,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, Queues> {
        // A panic while holding the lock is caught at join; the queue data stays consistent.
        self.queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Encodes the queued blocks of one free rung and returns `None`; when no rung is free
    /// with work queued, hands the lock back untouched (so the caller can wait on it without
    /// missing a wake-up).
    fn help_once<'a>(&'a self, mut q: MutexGuard<'a, Queues>) -> Option<MutexGuard<'a, Queues>> {
        let Some(i) = (0..q.pending.len()).find(|&i| !q.busy[i] && !q.pending[i].is_empty()) else {
            return Some(q);
        };
        q.busy[i] = true;
        let batch: Vec<GroupBlocks> = q.pending[i].drain(..).collect();
        drop(q);
        let result = {
            let mut rung = self.rungs[i]
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let group = rung.group;
            batch.iter().try_for_each(|blocks| match blocks.get(group) {
                Some(pcm) => rung.encode(pcm),
                None => Ok(()),
            })
        };
        let mut q = self.lock();
        q.busy[i] = false;
        q.total -= batch.len();
        if let Err(e) = result {
            q.error.get_or_insert(e);
        }
        self.wake.notify_all();
        None
    }

    /// A worker thread: encode until the producer is done and every queue is empty.
    fn work(&self) {
        let mut q = self.lock();
        loop {
            if q.error.is_some() || (q.done && q.total == 0) {
                return;
            }
            q = match self.help_once(q) {
                None => self.lock(),
                // Nothing free to take: wait for the producer or another worker.
                Some(q) => self
                    .wake
                    .wait(q)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            };
        }
    }

    /// Queues one block for every rung; while the queues are full, helps encoding instead.
    fn produce(&self, blocks: GroupBlocks, limit: usize) -> Result<()> {
        let mut q = self.lock();
        while q.total >= limit && q.error.is_none() {
            q = match self.help_once(q) {
                None => self.lock(),
                Some(q) => self
                    .wake
                    .wait(q)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            };
        }
        if let Some(e) = q.error.take() {
            return Err(e);
        }
        for p in q.pending.iter_mut() {
            p.push_back(Arc::clone(&blocks));
        }
        q.total += q.pending.len();
        self.wake.notify_all();
        Ok(())
    }
}

fn run_threaded(
    dec: &mut Decoder,
    groups: &mut [Converter],
    states: Vec<RungState>,
    threads: usize,
) -> Result<(u64, Vec<(usize, RungReport)>)> {
    let n = states.len();
    let pool = Pool {
        queues: Mutex::new(Queues {
            pending: (0..n).map(|_| VecDeque::new()).collect(),
            busy: vec![false; n],
            ..Queues::default()
        }),
        wake: Condvar::new(),
        rungs: states.into_iter().map(Mutex::new).collect(),
    };
    // At most four blocks per rung in flight: bounded memory.
    let limit = 4 * n;
    let mut frames = 0u64;
    let produced = std::thread::scope(|scope| {
        let workers: Vec<_> = (1..threads).map(|_| scope.spawn(|| pool.work())).collect();
        let produced: Result<()> = (|| {
            let mut drained: Vec<PcmBuffer> = groups
                .iter()
                .map(|g| PcmBuffer::new(g.output_spec()))
                .collect();
            while let Some(block) = dec.next_block()? {
                frames += block.frames() as u64;
                let mut out = Vec::with_capacity(groups.len());
                let mut any_drained = false;
                for (g, conv) in groups.iter_mut().enumerate() {
                    drained[g].clear();
                    let converted = conv.process(block, &mut drained[g])?;
                    any_drained |= !drained[g].is_empty();
                    out.push(converted.clone());
                }
                if any_drained {
                    let fresh = groups
                        .iter()
                        .map(|g| PcmBuffer::new(g.output_spec()))
                        .collect();
                    pool.produce(Arc::new(std::mem::replace(&mut drained, fresh)), limit)?;
                }
                pool.produce(Arc::new(out), limit)?;
            }
            let tails: Result<Vec<PcmBuffer>> =
                groups.iter_mut().map(|g| g.flush().cloned()).collect();
            pool.produce(Arc::new(tails?), limit)
        })();
        {
            let mut q = pool.lock();
            q.done = true;
            if let Err(e) = &produced {
                q.error
                    .get_or_insert(AudioError::InvalidState("ladder stopped"));
                let _ = e;
            }
            pool.wake.notify_all();
        }
        // The producing thread helps drain the queues too.
        pool.work();
        let mut panicked = false;
        for w in workers {
            panicked |= w.join().is_err();
        }
        if panicked {
            return Err(AudioError::InvalidState("an encoder thread panicked"));
        }
        produced
    });
    let mut q = pool.lock();
    if let Some(e) = q.error.take() {
        // The producer's own error wins over the "stopped" marker it left for the workers.
        return Err(match produced {
            Err(p) => p,
            Ok(()) => e,
        });
    }
    drop(q);
    produced?;
    let states: Vec<RungState> = pool
        .rungs
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        })
        .collect();
    Ok((frames, finish_all(states)?))
}

/// Runs a ladder from a file into files, rewriting each output's header at the end.
///
/// # Errors
/// As [`run_ladder`], or [`AudioError::Io`].
pub fn ladder_path(
    input: &Path,
    outputs: &[(OutputSettings, PathBuf)],
    opts: &LadderOptions,
) -> Result<LadderReport> {
    let dec = Decoder::open_path(input, opts.decoder.clone())?;
    let mut rungs = Vec::with_capacity(outputs.len());
    for (settings, path) in outputs {
        let file = File::create(path)?;
        rungs.push(RungOutput {
            settings: settings.clone(),
            sink: Box::new(BufWriter::with_capacity(256 << 10, file)),
        });
    }
    let report = run_ladder(dec, rungs, opts)?;
    for ((_, path), rung) in outputs.iter().zip(&report.rungs) {
        if let Some(p) = &rung.header_patch {
            let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
            f.seek(SeekFrom::Start(p.offset))?;
            f.write_all(&p.bytes)?;
        }
    }
    Ok(report)
}
