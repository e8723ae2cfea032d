//! Transcoding: decode, process (gain, fades, channels, rate), encode.
//!
//! - [`Transcoder`]: incremental. Push input bytes as they arrive ([`Transcoder::push`]), take
//!   encoded bytes when convenient ([`Transcoder::take_output`]), then [`Transcoder::finish`].
//!   No threads (unless [`OutputSettings::flac_threads`] is above 1: then the FLAC encoder's
//!   scoped threads, which end within each call), no async; memory is bounded by the decoder's
//!   look-ahead, one block of PCM at each stage and the output not yet taken, whatever the
//!   input length.
//! - [`transcode_path`] and [`transcode_reader`]: one call over a path or a reader.
//!
//! The [`Pipeline`] between decoder and encoder is public too, for callers that have PCM.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::decode::{Decoder, DecoderOptions, PushDecoder};
use crate::dsp::channels::ChannelMixer;
use crate::dsp::effects::{EffectChain, FadeIn, FadeOut, Gain};
use crate::dsp::resample::{ResampleQuality, Resampler};
use crate::encode::{Encoder, EncoderConfig, HeaderPatch, RateControl, new_encoder};
use crate::error::{AudioError, Result};
use crate::format::{AudioSpec, OutputFormat, SampleRate};
use crate::loudness::LoudnessMeter;
use crate::metadata::{StreamInfo, Tags};
use crate::pcm::PcmBuffer;

/// Settings of one output: format, bits, spec and encoder details.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSettings {
    /// The format to write.
    pub format: OutputFormat,
    /// Bit spending of lossy formats; `None` for the format's default (128 kbit/s).
    pub rate_control: Option<RateControl>,
    /// Output sample rate; `None` keeps the source's (moved to the nearest rate the encoder
    /// supports, see [`output_spec`]).
    pub sample_rate: Option<SampleRate>,
    /// Output channels; `None` keeps the source's (down-mixed to stereo for MP3 and AAC).
    pub channels: Option<u16>,
    /// FLAC level 0-8. Default 5.
    pub flac_level: u8,
    /// FLAC encoder threads (see [`EncoderConfig::flac_threads`]). Default 1.
    pub flac_threads: usize,
    /// FLAC and WAV bits per sample (16 or 24); `None` picks 24 for sources deeper than 16
    /// bits, else 16.
    pub bits_per_sample: Option<u8>,
    /// LAME algorithm quality (0 best to 9 fastest). Default 3.
    pub mp3_algorithm_quality: u8,
    /// FDK afterburner. Default on.
    pub aac_afterburner: bool,
}

impl OutputSettings {
    /// Defaults for `format`.
    pub fn new(format: OutputFormat) -> Self {
        OutputSettings {
            format,
            rate_control: None,
            sample_rate: None,
            channels: None,
            flac_level: 5,
            flac_threads: 1,
            bits_per_sample: None,
            mp3_algorithm_quality: 3,
            aac_afterburner: true,
        }
    }

    /// Sets a bitrate (CBR) in kbit/s (builder style).
    pub fn with_kbps(mut self, kbps: u32) -> Self {
        self.rate_control = Some(RateControl::Cbr(crate::format::Bitrate::kbps(kbps)));
        self
    }

    /// The encoder configuration for a source described by `source` (spec and depth).
    ///
    /// # Errors
    /// [`AudioError::InvalidConfig`] for a channel count the format cannot take.
    pub fn encoder_config(
        &self,
        source: AudioSpec,
        source_bits: Option<u32>,
        tags: Tags,
    ) -> Result<EncoderConfig> {
        let spec = output_spec(self.format, source, self.sample_rate, self.channels)?;
        let mut cfg = EncoderConfig::new(self.format, spec);
        if let Some(rc) = self.rate_control {
            cfg.rate_control = rc;
        }
        cfg.flac_level = self.flac_level;
        cfg.flac_threads = self.flac_threads;
        cfg.bits_per_sample =
            self.bits_per_sample
                .unwrap_or(if source_bits.is_some_and(|b| b > 16) {
                    24
                } else {
                    16
                });
        cfg.mp3_algorithm_quality = self.mp3_algorithm_quality;
        cfg.aac_afterburner = self.aac_afterburner;
        cfg.tags = tags;
        Ok(cfg)
    }
}

/// Rates LAME encodes.
const MP3_RATES: [u32; 9] = [8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000];
/// Rates FDK's AAC-LC encoder takes.
const AAC_RATES: [u32; 12] = [
    8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000,
];

/// The spec an output gets for a source: the requested rate and channels, or the source's, moved
/// to what the format supports (MP3: LAME's rates up to 48 kHz; AAC: the AAC rates up to 96 kHz;
/// MP3 and AAC at most stereo; others at most 8 channels and 192 kHz).
///
/// # Errors
/// [`AudioError::InvalidConfig`] when an explicit channel count is beyond the format.
pub fn output_spec(
    format: OutputFormat,
    source: AudioSpec,
    rate: Option<SampleRate>,
    channels: Option<u16>,
) -> Result<AudioSpec> {
    let max_channels = match format {
        OutputFormat::Mp3 | OutputFormat::Aac | OutputFormat::M4a => 2,
        _ => 8,
    };
    let ch = match channels {
        Some(c) if c == 0 || c > max_channels => {
            return Err(AudioError::config(format!(
                "{format} output takes 1 to {max_channels} channels, not {c}"
            )));
        }
        Some(c) => c,
        None => source.channels.min(max_channels),
    };
    let want = rate.unwrap_or(source.sample_rate).hz();
    let hz = match format {
        OutputFormat::Mp3 => nearest_rate(&MP3_RATES, want),
        OutputFormat::Aac | OutputFormat::M4a => nearest_rate(&AAC_RATES, want),
        _ => want.clamp(8000, 192_000),
    };
    AudioSpec::new(hz, ch)
}

/// The supported rate closest to `want`, preferring the higher one on ties and never going
/// above `want` when an exact divisor family member exists (44.1k stays in the 44.1k family).
fn nearest_rate(rates: &[u32], want: u32) -> u32 {
    if rates.contains(&want) {
        return want;
    }
    // Prefer a rate of the same family (multiples of 11025 or of 8000) at or below `want`.
    let family = |r: u32| if r.is_multiple_of(11025) { 0 } else { 1 };
    let fam = family(want);
    rates
        .iter()
        .copied()
        .filter(|&r| r <= want && family(r) == fam)
        .max()
        .or_else(|| rates.iter().copied().min_by_key(|&r| r.abs_diff(want)))
        .unwrap_or(44_100)
}

/// Processing applied between decoder and encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct Processing {
    /// Gain in dB (applied before fades). Default none.
    pub gain_db: Option<f64>,
    /// Normalise to this integrated loudness (LUFS), keeping the true peak under
    /// [`Processing::true_peak_ceiling_dbtp`]. Needs a measuring pass: only the one-call APIs
    /// over a path or a seekable reader do it.
    pub normalize_lufs: Option<f64>,
    /// Ceiling for the true peak after normalisation, in dBTP. Default -1.0.
    pub true_peak_ceiling_dbtp: f64,
    /// Fade in over this duration from the start.
    pub fade_in: Option<Duration>,
    /// Fade out over this duration before the end (needs the total length: known for most
    /// files; ignored when the length is unknown).
    pub fade_out: Option<Duration>,
    /// Resampling quality. Default high.
    pub resample_quality: ResampleQuality,
}

impl Default for Processing {
    fn default() -> Self {
        Processing {
            gain_db: None,
            normalize_lufs: None,
            true_peak_ceiling_dbtp: -1.0,
            fade_in: None,
            fade_out: None,
            resample_quality: ResampleQuality::High,
        }
    }
}

/// Everything a transcode needs.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscodeOptions {
    /// The output.
    pub output: Option<OutputSettings>,
    /// Processing between decoder and encoder.
    pub processing: Processing,
    /// Tags to write; `None` carries the source's tags. Set fields override the source's.
    pub tags: Option<Tags>,
    /// Decoder settings.
    pub decoder: DecoderOptions,
    /// Threads for the one-call APIs ([`transcode_path`], [`transcode_reader`],
    /// [`transcode_bytes`]). Default 1: everything on the calling thread. With 2 or more, MP3
    /// and AAC (ADTS and M4A) output is cut into segments encoded in parallel and spliced on the
    /// codec's frame grid (same length, same gapless info, no audible seam; the bytes differ from
    /// a one-thread encode); other formats (Vorbis, FLAC, WAV) decode on one thread and encode on
    /// another, with the same bytes as on one thread. The threaded MP3/AAC path holds up to
    /// `threads + 1` segments of at most 30 s of PCM. 0 counts
    /// as 1. The incremental [`Transcoder`] always uses one thread.
    pub threads: usize,
}

impl Default for TranscodeOptions {
    fn default() -> Self {
        TranscodeOptions {
            output: None,
            processing: Processing::default(),
            tags: None,
            decoder: DecoderOptions::default(),
            threads: 1,
        }
    }
}

impl TranscodeOptions {
    /// Options for `format` with defaults otherwise.
    pub fn new(format: OutputFormat) -> Self {
        TranscodeOptions {
            output: Some(OutputSettings::new(format)),
            ..Default::default()
        }
    }

    fn output(&self) -> Result<&OutputSettings> {
        self.output
            .as_ref()
            .ok_or_else(|| AudioError::config("no output format given"))
    }
}

/// Converts decoded blocks of any spec to one output spec: effects (gain, fades) at the source
/// rate, then channel mixing, then resampling.
///
/// A change of source spec mid-stream (chained Ogg) rebuilds the mixer and resampler (after
/// draining the old resampler); the output spec stays. Memory: one block per stage, reused.
pub struct Converter {
    out_spec: AudioSpec,
    in_spec: Option<AudioSpec>,
    effects: EffectChain,
    mixer: Option<ChannelMixer>,
    resampler: Option<Resampler>,
    quality: ResampleQuality,
    scratch: PcmBuffer,
    mixed: PcmBuffer,
    resampled: PcmBuffer,
}

impl std::fmt::Debug for Converter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Converter")
            .field("out_spec", &self.out_spec)
            .field("in_spec", &self.in_spec)
            .finish_non_exhaustive()
    }
}

impl Converter {
    /// A converter to `out_spec`, with `effects` applied at the source rate.
    pub fn new(out_spec: AudioSpec, effects: EffectChain, quality: ResampleQuality) -> Self {
        Converter {
            out_spec,
            in_spec: None,
            effects,
            mixer: None,
            resampler: None,
            quality,
            scratch: PcmBuffer::new(out_spec),
            mixed: PcmBuffer::new(out_spec),
            resampled: PcmBuffer::new(out_spec),
        }
    }

    /// The spec of the converted blocks.
    pub fn output_spec(&self) -> AudioSpec {
        self.out_spec
    }

    /// Converts `block`; the result is borrowed until the next call and may be empty (the
    /// resampler holds a little audio back). `drained` receives what an old resampler held when
    /// the source spec changed.
    ///
    /// # Errors
    /// From the mixer or resampler.
    pub fn process<'a>(
        &'a mut self,
        block: &'a PcmBuffer,
        drained: &mut PcmBuffer,
    ) -> Result<&'a PcmBuffer> {
        let spec = block.spec();
        if self.in_spec != Some(spec) {
            if let Some(r) = self.resampler.as_mut() {
                drained.reset(self.out_spec);
                r.flush(drained)?;
            }
            let ch_out = usize::from(self.out_spec.channels);
            self.mixer = if usize::from(spec.channels) != ch_out {
                Some(ChannelMixer::new(usize::from(spec.channels), ch_out)?)
            } else {
                None
            };
            self.resampler = if spec.sample_rate != self.out_spec.sample_rate {
                Some(Resampler::new(
                    spec.sample_rate,
                    self.out_spec.sample_rate,
                    ch_out,
                    self.quality,
                )?)
            } else {
                None
            };
            self.in_spec = Some(spec);
        }
        let mut cur: &PcmBuffer = block;
        if !self.effects.is_empty() {
            self.scratch.reset(spec);
            self.scratch.extend_from(block);
            self.effects.process(&mut self.scratch);
            cur = &self.scratch;
        }
        if let Some(m) = self.mixer.as_mut() {
            self.mixed.reset(AudioSpec {
                sample_rate: spec.sample_rate,
                channels: self.out_spec.channels,
            });
            m.process(cur, &mut self.mixed)?;
            cur = &self.mixed;
        }
        if let Some(r) = self.resampler.as_mut() {
            self.resampled.reset(self.out_spec);
            r.process(cur, &mut self.resampled)?;
            cur = &self.resampled;
        }
        Ok(cur)
    }

    /// Drains the resampler at the end of the input; the result may be empty.
    ///
    /// # Errors
    /// From the resampler.
    pub fn flush(&mut self) -> Result<&PcmBuffer> {
        self.resampled.reset(self.out_spec);
        if let Some(r) = self.resampler.as_mut() {
            r.flush(&mut self.resampled)?;
        }
        Ok(&self.resampled)
    }
}

/// A [`Converter`] feeding an [`Encoder`].
pub struct Pipeline {
    converter: Converter,
    encoder: Box<dyn Encoder>,
    drained: PcmBuffer,
    frames_in: u64,
    finished: bool,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("converter", &self.converter)
            .field("frames_in", &self.frames_in)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A pipeline into `encoder`, with `effects` applied at the source rate.
    pub fn new(encoder: Box<dyn Encoder>, effects: EffectChain, quality: ResampleQuality) -> Self {
        let out_spec = encoder.spec();
        Pipeline {
            converter: Converter::new(out_spec, effects, quality),
            encoder,
            drained: PcmBuffer::new(out_spec),
            frames_in: 0,
            finished: false,
        }
    }

    /// The encoder's output spec.
    pub fn output_spec(&self) -> AudioSpec {
        self.converter.output_spec()
    }

    /// The encoder.
    pub fn encoder(&self) -> &dyn Encoder {
        self.encoder.as_ref()
    }

    /// Source frames pushed so far.
    pub fn frames_in(&self) -> u64 {
        self.frames_in
    }

    /// Processes one decoded block and appends encoded bytes to `out`.
    ///
    /// # Errors
    /// From the mixer, resampler or encoder; [`AudioError::InvalidState`] after `finish`.
    pub fn push(&mut self, block: &PcmBuffer, out: &mut BytesMut) -> Result<()> {
        if self.finished {
            return Err(AudioError::InvalidState("push after finish"));
        }
        if block.is_empty() {
            return Ok(());
        }
        self.frames_in += block.frames() as u64;
        self.drained.clear();
        let converted = self.converter.process(block, &mut self.drained)?;
        if !self.drained.is_empty() {
            self.encoder.encode(&self.drained, out)?;
        }
        if !converted.is_empty() {
            self.encoder.encode(converted, out)?;
        }
        Ok(())
    }

    /// Drains the resampler and flushes the encoder into `out`.
    ///
    /// # Errors
    /// From the resampler or encoder.
    pub fn finish(&mut self, out: &mut BytesMut) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let tail = self.converter.flush()?;
        if !tail.is_empty() {
            self.encoder.encode(tail, out)?;
        }
        self.encoder.finish(out)
    }

    /// The final header for a seekable output (see [`Encoder::header_patch`]).
    pub fn header_patch(&self) -> Option<HeaderPatch> {
        self.encoder.header_patch()
    }
}

/// Builds the effect chain of `processing` (plus an extra gain) for a source.
pub(crate) fn effects_for(
    processing: &Processing,
    info: &StreamInfo,
    extra_gain_db: Option<f64>,
) -> Result<EffectChain> {
    let rate = f64::from(info.sample_rate.hz());
    let mut chain = EffectChain::new();
    let gain = processing.gain_db.unwrap_or(0.0) + extra_gain_db.unwrap_or(0.0);
    if gain != 0.0 {
        chain = chain.with_gain(Gain::new(gain as f32)?);
    }
    if let Some(d) = processing.fade_in {
        chain = chain.with_fade_in(FadeIn::new((d.as_secs_f64() * rate) as u64));
    }
    if let (Some(d), Some(total)) = (processing.fade_out, info.total_frames) {
        let len = ((d.as_secs_f64() * rate) as u64).min(total);
        chain = chain.with_fade_out(FadeOut::new(total - len, len));
    }
    Ok(chain)
}

/// The encoder configuration and effects for a source.
fn config_for(
    opts: &TranscodeOptions,
    info: &StreamInfo,
    extra_gain_db: Option<f64>,
    seekable: bool,
) -> Result<(EncoderConfig, EffectChain)> {
    let out = opts.output()?;
    let mut tags = opts.tags.clone().unwrap_or_default();
    tags.merge_missing(&info.tags);
    let source = AudioSpec {
        sample_rate: info.sample_rate,
        channels: info.channels,
    };
    let mut cfg = out.encoder_config(source, info.bits_per_sample, tags)?;
    cfg.seekable_output = seekable;
    Ok((cfg, effects_for(&opts.processing, info, extra_gain_db)?))
}

/// Makes the pipeline for a source.
fn pipeline_for(
    opts: &TranscodeOptions,
    info: &StreamInfo,
    extra_gain_db: Option<f64>,
    seekable: bool,
) -> Result<Pipeline> {
    let (cfg, effects) = config_for(opts, info, extra_gain_db, seekable)?;
    let encoder = new_encoder(&cfg)?;
    Ok(Pipeline::new(
        encoder,
        effects,
        opts.processing.resample_quality,
    ))
}

/// Figures of a finished transcode.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscodeReport {
    /// The source as probed.
    pub source: StreamInfo,
    /// The output's spec.
    pub output_spec: AudioSpec,
    /// The output format.
    pub format: OutputFormat,
    /// Source frames decoded.
    pub frames_decoded: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Corrupt packets skipped.
    pub skipped_packets: u64,
    /// The gain applied by normalisation, if any.
    pub normalization_gain_db: Option<f64>,
}

impl TranscodeReport {
    /// Seconds of audio transcoded.
    pub fn duration_secs(&self) -> f64 {
        self.frames_decoded as f64 / f64::from(self.source.sample_rate.hz())
    }
}

/// The incremental transcoder: bytes in, bytes out, no threads (except FLAC's with
/// [`OutputSettings::flac_threads`] above 1).
///
/// ```no_run
/// use veza_audio::transcode::{Transcoder, TranscodeOptions};
/// use veza_audio::OutputFormat;
/// # fn main() -> veza_audio::Result<()> {
/// let mut t = Transcoder::new(TranscodeOptions::new(OutputFormat::Mp3))?;
/// let mut out = Vec::new();
/// for chunk in [&b"..."[..]] {
///     t.push(chunk)?;
///     out.extend_from_slice(&t.take_output());
/// }
/// out.extend_from_slice(&t.finish()?);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Transcoder {
    opts: TranscodeOptions,
    decoder: PushDecoder,
    pipeline: Option<Pipeline>,
    out: BytesMut,
    finished: bool,
    failed: bool,
}

impl Transcoder {
    /// A transcoder waiting for input.
    ///
    /// # Errors
    /// [`AudioError::InvalidConfig`] when no output is set or normalisation is asked for (it
    /// needs a measuring pass: use [`transcode_path`] or set a gain).
    pub fn new(opts: TranscodeOptions) -> Result<Self> {
        opts.output()?;
        if opts.processing.normalize_lufs.is_some() {
            return Err(AudioError::config(
                "loudness normalisation needs two passes; use transcode_path, or measure with LoudnessMeter and set gain_db",
            ));
        }
        Ok(Transcoder {
            decoder: PushDecoder::new(opts.decoder.clone()),
            opts,
            pipeline: None,
            out: BytesMut::with_capacity(64 << 10),
            finished: false,
            failed: false,
        })
    }

    /// Pushes input bytes and encodes what can be decoded.
    ///
    /// # Errors
    /// Any decode, processing or encode error; after an error the transcoder stays failed.
    pub fn push(&mut self, bytes: &[u8]) -> Result<()> {
        if self.failed {
            return Err(AudioError::InvalidState("push after an error"));
        }
        if self.finished {
            return Err(AudioError::InvalidState("push after finish"));
        }
        self.decoder.push(bytes)?;
        let r = self.drain();
        self.failed = r.is_err();
        r
    }

    fn drain(&mut self) -> Result<()> {
        if self.pipeline.is_none() {
            if !self.decoder.ready()? {
                return Ok(());
            }
            let info = self
                .decoder
                .info()
                .ok_or(AudioError::InvalidState("no stream info"))?;
            self.pipeline = Some(pipeline_for(&self.opts, info, None, false)?);
        }
        let Some(pipeline) = self.pipeline.as_mut() else {
            return Ok(());
        };
        while let Some(block) = self.decoder.next_block()? {
            pipeline.push(block, &mut self.out)?;
        }
        Ok(())
    }

    /// Takes the encoded bytes ready so far (cheap: no copy).
    pub fn take_output(&mut self) -> Bytes {
        self.out.split().freeze()
    }

    /// Bytes ready and not yet taken.
    pub fn pending_output(&self) -> usize {
        self.out.len()
    }

    /// Input bytes pushed and not yet decoded (bounded by the decoder's look-ahead plus the
    /// bytes of the last push).
    pub fn queued_input_bytes(&self) -> usize {
        self.decoder.queued_bytes()
    }

    /// Ends the input, flushes everything and returns the last bytes.
    ///
    /// # Errors
    /// As [`Transcoder::push`]; [`AudioError::Truncated`] when the input ended before any audio.
    pub fn finish(&mut self) -> Result<Bytes> {
        if self.failed {
            return Err(AudioError::InvalidState("finish after an error"));
        }
        if !self.finished {
            self.finished = true;
            self.decoder.finish();
            let r = self.drain().and_then(|()| match self.pipeline.as_mut() {
                Some(p) => p.finish(&mut self.out),
                None => Err(AudioError::Truncated("the input ended before any audio")),
            });
            self.failed = r.is_err();
            r?;
        }
        Ok(self.take_output())
    }

    /// What the decoder learned about the input (after the header was read).
    pub fn source_info(&self) -> Option<&StreamInfo> {
        self.decoder.info()
    }

    /// The output spec (once the header was read).
    pub fn output_spec(&self) -> Option<AudioSpec> {
        self.pipeline.as_ref().map(Pipeline::output_spec)
    }

    /// Source frames decoded so far.
    pub fn frames_decoded(&self) -> u64 {
        self.pipeline.as_ref().map_or(0, Pipeline::frames_in)
    }

    /// Always `None`: the incremental transcoder writes for outputs that cannot be rewritten.
    /// (FLAC and WAV headers then carry "unknown length" values that players accept.)
    pub fn header_patch(&self) -> Option<HeaderPatch> {
        None
    }
}

/// Progress of a one-call transcode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Source frames decoded so far.
    pub frames_done: u64,
    /// Source frames in all, when known.
    pub frames_total: Option<u64>,
    /// Source sample rate.
    pub sample_rate: SampleRate,
    /// Bytes written so far.
    pub bytes_written: u64,
}

/// Measures the integrated loudness of a decoder's whole input and returns the gain toward
/// `target_lufs` under the true-peak ceiling.
fn measure_gain(mut dec: Decoder, target_lufs: f64, ceiling: f64) -> Result<f64> {
    let mut meter = LoudnessMeter::new(dec.spec())?;
    let spec = dec.spec();
    while let Some(block) = dec.next_block()? {
        if block.spec() != spec {
            // A chained stream changed spec: measuring the rest would need a second meter;
            // the first part's figure stands for the whole.
            break;
        }
        meter.push(block)?;
    }
    Ok(meter.report()?.normalization_gain_db(target_lufs, ceiling))
}

/// Transcodes a file into a file, rewriting the output's header at the end (FLAC STREAMINFO,
/// WAV sizes, MP3 LAME info frame). `progress` is called after every block.
///
/// # Errors
/// Any decode, processing or encode error, or [`AudioError::Io`].
pub fn transcode_path_with_progress(
    input: &Path,
    output: &Path,
    opts: &TranscodeOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<TranscodeReport> {
    let gain = match opts.processing.normalize_lufs {
        Some(target) => Some(measure_gain(
            Decoder::open_path(input, opts.decoder.clone())?,
            target,
            opts.processing.true_peak_ceiling_dbtp,
        )?),
        None => None,
    };
    let dec = Decoder::open_path(input, opts.decoder.clone())?;
    let mut file = BufWriter::with_capacity(256 << 10, File::create(output)?);
    let report = run(dec, &mut file, opts, gain, true, progress)?;
    let patch = report.1;
    let mut file = file
        .into_inner()
        .map_err(|e| AudioError::Io(e.into_error()))?;
    if let Some(p) = patch {
        file.seek(SeekFrom::Start(p.offset))?;
        file.write_all(&p.bytes)?;
    }
    file.sync_data().ok();
    Ok(report.0)
}

/// Transcodes a file into a file (see [`transcode_path_with_progress`]).
///
/// # Errors
/// As [`transcode_path_with_progress`].
pub fn transcode_path(
    input: &Path,
    output: &Path,
    opts: &TranscodeOptions,
) -> Result<TranscodeReport> {
    transcode_path_with_progress(input, output, opts, &mut |_| {})
}

/// Transcodes a reader into a writer. Neither needs to seek; normalisation is refused (it needs
/// two passes) and headers keep their streaming values.
///
/// # Errors
/// As [`transcode_path_with_progress`].
pub fn transcode_reader<R: Read + Send + Sync + 'static, W: Write>(
    input: R,
    mut output: W,
    opts: &TranscodeOptions,
) -> Result<TranscodeReport> {
    if opts.processing.normalize_lufs.is_some() {
        return Err(AudioError::config(
            "loudness normalisation needs a path or a seekable input",
        ));
    }
    let dec = Decoder::from_reader(input, opts.decoder.clone())?;
    let (report, _) = run(dec, &mut output, opts, None, false, &mut |_| {})?;
    output.flush()?;
    Ok(report)
}

/// Transcodes an in-memory input into an in-memory output (both seekable: headers are final).
///
/// # Errors
/// As [`transcode_path_with_progress`].
pub fn transcode_bytes(
    input: Bytes,
    opts: &TranscodeOptions,
) -> Result<(Vec<u8>, TranscodeReport)> {
    let gain = match opts.processing.normalize_lufs {
        Some(target) => Some(measure_gain(
            Decoder::from_seekable(std::io::Cursor::new(input.clone()), opts.decoder.clone())?,
            target,
            opts.processing.true_peak_ceiling_dbtp,
        )?),
        None => None,
    };
    let dec = Decoder::from_seekable(std::io::Cursor::new(input), opts.decoder.clone())?;
    let mut out = Vec::new();
    let (report, patch) = run(dec, &mut out, opts, gain, true, &mut |_| {})?;
    if let Some(p) = patch {
        let start =
            usize::try_from(p.offset).map_err(|_| AudioError::InvalidState("patch offset"))?;
        if let Some(dst) = out.get_mut(start..start + p.bytes.len()) {
            dst.copy_from_slice(&p.bytes);
        }
    }
    Ok((out, report))
}

fn run(
    mut dec: Decoder,
    sink: &mut dyn Write,
    opts: &TranscodeOptions,
    gain: Option<f64>,
    seekable: bool,
    progress: &mut dyn FnMut(Progress),
) -> Result<(TranscodeReport, Option<HeaderPatch>)> {
    let info = dec.info().clone();
    if opts.threads > 1 {
        let (cfg, effects) = config_for(opts, &info, gain, seekable)?;
        let out = crate::parallel::run(
            &mut dec,
            sink,
            &cfg,
            effects,
            opts.processing.resample_quality,
            opts.threads,
            &info,
            progress,
        )?;
        let report = TranscodeReport {
            output_spec: cfg.spec,
            format: cfg.format,
            frames_decoded: out.frames_decoded,
            bytes_written: out.bytes_written,
            skipped_packets: dec.skipped_packets(),
            normalization_gain_db: gain,
            source: info,
        };
        return Ok((report, if seekable { out.patch } else { None }));
    }
    let mut pipeline = pipeline_for(opts, &info, gain, seekable)?;
    let mut buf = BytesMut::with_capacity(256 << 10);
    let mut written = 0u64;
    let emit = |buf: &mut BytesMut, sink: &mut dyn Write| -> Result<u64> {
        let n = buf.len() as u64;
        sink.write_all(buf)?;
        buf.clear();
        Ok(n)
    };
    let mut frames = 0u64;
    while let Some(block) = dec.next_block()? {
        frames += block.frames() as u64;
        pipeline.push(block, &mut buf)?;
        if buf.len() >= 64 << 10 {
            written += emit(&mut buf, sink)?;
        }
        progress(Progress {
            frames_done: frames,
            frames_total: info.total_frames,
            sample_rate: info.sample_rate,
            bytes_written: written + buf.len() as u64,
        });
    }
    pipeline.finish(&mut buf)?;
    written += emit(&mut buf, sink)?;
    let report = TranscodeReport {
        output_spec: pipeline.output_spec(),
        format: pipeline.encoder().format(),
        frames_decoded: frames,
        bytes_written: written,
        skipped_packets: dec.skipped_packets(),
        normalization_gain_db: gain,
        source: info,
    };
    Ok((
        report,
        if seekable {
            pipeline.header_patch()
        } else {
            None
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_spec_moves_to_supported_values() {
        let s = |hz, ch| AudioSpec::new(hz, ch).unwrap();
        assert_eq!(
            output_spec(OutputFormat::Mp3, s(96_000, 6), None, None).unwrap(),
            s(48_000, 2)
        );
        assert_eq!(
            output_spec(OutputFormat::Mp3, s(88_200, 2), None, None).unwrap(),
            s(44_100, 2)
        );
        assert_eq!(
            output_spec(OutputFormat::Aac, s(96_000, 1), None, None).unwrap(),
            s(96_000, 1)
        );
        assert_eq!(
            output_spec(OutputFormat::Flac, s(96_000, 6), None, None).unwrap(),
            s(96_000, 6)
        );
        assert_eq!(
            output_spec(OutputFormat::Mp3, s(7_000, 1), None, None).unwrap(),
            s(8_000, 1)
        );
        assert!(output_spec(OutputFormat::Mp3, s(44_100, 2), None, Some(6)).is_err());
    }

    #[test]
    fn push_transcoder_refuses_normalisation_and_missing_output() {
        assert!(Transcoder::new(TranscodeOptions::default()).is_err());
        let mut o = TranscodeOptions::new(OutputFormat::Wav);
        o.processing.normalize_lufs = Some(-14.0);
        assert!(matches!(
            Transcoder::new(o),
            Err(AudioError::InvalidConfig(_))
        ));
    }
}
