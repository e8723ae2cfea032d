//! Decoding: any supported input to planar `f32` PCM, with the format probed from the bytes.
//!
//! [`Decoder`] pulls from a reader (a file, a cursor, any `Read`); [`PushDecoder`] takes bytes
//! as they arrive. Both wrap symphonia's format readers and codecs and turn its errors into
//! [`AudioError`]s that say whether decoding can go on.
//!
//! Limits: the probe scans at most [`DecoderOptions::max_probe_bytes`]; symphonia bounds tag
//! sizes; the push decoder holds at most its look-ahead plus the bytes of one push.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex};

use symphonia::core::codecs::CodecParameters;
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::{Hint, ProbeOptions};
use symphonia::core::formats::{FormatOptions, FormatReader, Track, TrackType};
use symphonia::core::io::{
    MediaSource, MediaSourceStream, MediaSourceStreamOptions, ReadOnlySource,
};
use symphonia::core::meta::{MetadataOptions, MetadataRevision, StandardTag};

use crate::error::{AudioError, Result};
use crate::format::{AudioSpec, Bitrate, Codec, Container, SampleRate};
use crate::metadata::{StreamInfo, Tags};
use crate::pcm::PcmBuffer;
use crate::sniff;

/// Settings of a decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderOptions {
    /// Trim encoder delay and padding where the container says how much (gapless). Default true.
    pub gapless: bool,
    /// Bytes the probe may scan for a known container before giving up (junk before the audio,
    /// large tags). Default 1 MiB; at most 64 MiB.
    pub max_probe_bytes: u32,
    /// Consecutive corrupt packets after which decoding gives up. Default 100.
    pub max_consecutive_errors: u32,
    /// Push decoding only: bytes that must be buffered ahead before a packet is read (unless the
    /// input is finished). A packet larger than this fails with [`AudioError::LimitExceeded`].
    /// Lower values cut latency. Default 64 KiB; at least 8 KiB.
    pub push_lookahead: usize,
    /// Push decoding only: bytes the header (probe, tags, codec setup) may take before the first
    /// packet. Default 16 MiB.
    pub push_max_header_bytes: usize,
}

impl Default for DecoderOptions {
    fn default() -> Self {
        DecoderOptions {
            gapless: true,
            max_probe_bytes: 1 << 20,
            max_consecutive_errors: 100,
            push_lookahead: 64 << 10,
            push_max_header_bytes: 16 << 20,
        }
    }
}

/// A decoder over a reader: probe, then decoded blocks until the end.
///
/// The returned block is borrowed until the next call (no allocation per block after warm-up).
pub struct Decoder {
    format: Box<dyn FormatReader>,
    codec: Box<dyn AudioDecoder>,
    track_id: u32,
    info: StreamInfo,
    pcm: PcmBuffer,
    opts: DecoderOptions,
    consecutive_errors: u32,
    skipped_packets: u64,
    frames_out: u64,
    /// The spec changed at a chained-stream boundary; the next block has a new spec.
    spec_changes: u32,
    ended: bool,
    /// An MP4 edit list to apply (frames to skip, frames to keep).
    edit: Option<sniff::FrameEdit>,
    /// Frames decoded before the edit is applied.
    raw_frames: u64,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("info", &self.info)
            .field("frames_out", &self.frames_out)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// Opens a file (its extension is only a hint; the bytes decide).
    ///
    /// # Errors
    /// [`AudioError::Io`] if the file cannot be opened, then as [`Decoder::from_source`].
    pub fn open_path(path: impl AsRef<Path>, opts: DecoderOptions) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path)?;
        let ext = path.extension().and_then(|e| e.to_str());
        Self::from_seekable_hinted(file, ext, opts)
    }

    /// Opens a reader that cannot seek (MP4 files whose index comes after the audio need one).
    ///
    /// # Errors
    /// As [`Decoder::from_source`].
    pub fn from_reader<R: Read + Send + Sync + 'static>(
        reader: R,
        opts: DecoderOptions,
    ) -> Result<Self> {
        Self::from_source(Box::new(ReadOnlySource::new(reader)), None, opts)
    }

    /// Opens a reader that can seek (a cursor over bytes, a file).
    ///
    /// # Errors
    /// As [`Decoder::from_source`].
    pub fn from_seekable<R: Read + Seek + Send + Sync + 'static>(
        reader: R,
        opts: DecoderOptions,
    ) -> Result<Self> {
        Self::from_seekable_hinted(reader, None, opts)
    }

    /// Seekable inputs get the container fix-ups of [`crate::sniff`] (RF64, MP4 edit lists).
    fn from_seekable_hinted<R: Read + Seek + Send + Sync + 'static>(
        mut reader: R,
        ext: Option<&str>,
        opts: DecoderOptions,
    ) -> Result<Self> {
        let edit = sniff::mp4_edit(&mut reader)?;
        let mut dec = match sniff::Rf64Patch::detect(&mut reader)? {
            Some(patch) => {
                let src = SeekableSource::new(sniff::Patched::new(reader, patch)?)?;
                Self::from_source(Box::new(src), ext, opts)?
            }
            None => Self::from_source(Box::new(SeekableSource::new(reader)?), ext, opts)?,
        };
        if let Some(edit) = edit.and_then(|e| e.to_frames(dec.info.sample_rate.hz())) {
            // The edit list replaces the decoder's own idea of delay and length.
            dec.edit = Some(edit);
            let available = dec.info.total_frames.map(|t| t.saturating_sub(edit.skip));
            dec.info.total_frames = match (edit.keep, available) {
                (Some(k), Some(a)) => Some(k.min(a)),
                (k, a) => k.or(a),
            };
        }
        Ok(dec)
    }

    /// Opens any symphonia media source; `extension` is a hint only.
    ///
    /// # Errors
    /// [`AudioError::UnknownFormat`] when no container is recognised, [`AudioError::Unsupported`]
    /// when the audio codec cannot be decoded, [`AudioError::InvalidSpec`] for zero or absurd
    /// rates and channel counts, [`AudioError::Malformed`]/[`AudioError::Truncated`] for broken
    /// headers.
    pub fn from_source(
        source: Box<dyn MediaSource>,
        extension: Option<&str>,
        opts: DecoderOptions,
    ) -> Result<Self> {
        let byte_len = source.byte_len();
        let mss = MediaSourceStream::new(source, MediaSourceStreamOptions::default());
        let mut hint = Hint::new();
        if let Some(ext) = extension {
            hint.with_extension(ext);
        }
        let probe_opts = ProbeOptions {
            max_probe_depth: opts.max_probe_bytes.min(64 << 20),
            ..ProbeOptions::default()
        };
        // A probe with our depth limit; the registered formats are symphonia's defaults.
        let mut probe = symphonia::core::formats::probe::Probe::new_with_options(&probe_opts);
        symphonia::default::register_enabled_formats(&mut probe);
        let format = probe
            .probe(
                &hint,
                mss,
                FormatOptions::default(),
                MetadataOptions::default(),
            )
            .map_err(|e| map_open_error(e, "probing the container"))?;
        let mut dec = Self::with_format(format, opts)?;
        if dec.info.bitrate.is_none() {
            if let (Some(len), Some(d)) = (byte_len, dec.info.duration()) {
                let secs = d.as_secs_f64();
                if secs > 0.0 {
                    dec.info.bitrate = Some(Bitrate::bps((len as f64 * 8.0 / secs) as u32));
                }
            }
        }
        Ok(dec)
    }

    fn with_format(mut format: Box<dyn FormatReader>, opts: DecoderOptions) -> Result<Self> {
        let track = pick_track(format.as_ref())?.clone();
        let codec = make_codec(&track, &opts)?;
        let mut tags = Tags::default();
        collect_tags(&mut format, &mut tags);
        let info = stream_info(format.as_ref(), &track, codec.as_ref(), tags)?;
        let spec = AudioSpec {
            sample_rate: info.sample_rate,
            channels: info.channels,
        };
        Ok(Decoder {
            format,
            codec,
            track_id: track.id,
            info,
            pcm: PcmBuffer::new(spec),
            opts,
            consecutive_errors: 0,
            skipped_packets: 0,
            frames_out: 0,
            spec_changes: 0,
            ended: false,
            edit: None,
            raw_frames: 0,
        })
    }

    /// What was learned about the input (codec, container, spec, duration, tags).
    pub fn info(&self) -> &StreamInfo {
        &self.info
    }

    /// The spec of the blocks returned now (it can change at a chained Ogg boundary).
    pub fn spec(&self) -> AudioSpec {
        self.pcm.spec()
    }

    /// Frames decoded so far.
    pub fn frames_decoded(&self) -> u64 {
        self.frames_out
    }

    /// Corrupt packets skipped so far.
    pub fn skipped_packets(&self) -> u64 {
        self.skipped_packets
    }

    /// Times the stream changed its spec (chained Ogg streams).
    pub fn spec_changes(&self) -> u32 {
        self.spec_changes
    }

    /// Decodes the next block. `Ok(None)` at the end of the stream.
    ///
    /// Corrupt packets are skipped silently up to [`DecoderOptions::max_consecutive_errors`]
    /// in a row (see [`Decoder::skipped_packets`]).
    ///
    /// # Errors
    /// [`AudioError::Malformed`] when the container breaks or too many packets in a row are
    /// corrupt, [`AudioError::LimitExceeded`] when a limit is hit, [`AudioError::Io`] when the
    /// reader fails.
    pub fn next_block(&mut self) -> Result<Option<&PcmBuffer>> {
        if self.ended {
            return Ok(None);
        }
        loop {
            let packet = match self.format.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => {
                    self.ended = true;
                    return Ok(None);
                }
                Err(SymError::ResetRequired) => {
                    self.reset_track()?;
                    continue;
                }
                Err(SymError::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.ended = true;
                    return match self.missing_frames() {
                        Some(missing) => Err(AudioError::Truncated(if missing.1 {
                            "the stream ends before its declared length"
                        } else {
                            "the stream ends in the middle of a packet"
                        })),
                        None => Ok(None),
                    };
                }
                Err(e) => {
                    self.ended = true;
                    // Junk after the declared end of the audio is not an error of the audio.
                    return match self.missing_frames() {
                        None if self.info.total_frames.is_some() => Ok(None),
                        _ => Err(map_stream_error(e)),
                    };
                }
            };
            if packet.track_id != self.track_id {
                continue;
            }
            match self.codec.decode(&packet) {
                Ok(buf) => {
                    self.consecutive_errors = 0;
                    let frames = buf.frames();
                    if frames == 0 {
                        continue;
                    }
                    let channels = buf.spec().channels().count();
                    let rate = buf.spec().rate();
                    if channels != self.pcm.channels() || rate != self.pcm.sample_rate().hz() {
                        let spec = AudioSpec::new(rate, to_u16_channels(channels)?)?;
                        self.pcm.reset(spec);
                        self.spec_changes += 1;
                    }
                    let planes = self.pcm.planes_mut();
                    for p in planes.iter_mut() {
                        p.clear();
                        p.resize(frames, 0.0);
                    }
                    buf.copy_to_slice_planar::<f32, _>(planes);
                    let start = self.raw_frames;
                    self.raw_frames += frames as u64;
                    if let Some(edit) = self.edit {
                        // Keep only the part of this block inside [skip, skip + keep).
                        let lo = edit.skip.saturating_sub(start).min(frames as u64) as usize;
                        let hi = match edit.keep {
                            Some(k) => {
                                (edit.skip + k).saturating_sub(start).min(frames as u64) as usize
                            }
                            None => frames,
                        };
                        if hi <= lo {
                            if edit.keep.is_some_and(|k| start >= edit.skip + k) {
                                self.ended = true;
                                return Ok(None);
                            }
                            continue;
                        }
                        for p in self.pcm.planes_mut() {
                            p.truncate(hi);
                            p.drain(..lo);
                        }
                    }
                    self.frames_out += self.pcm.frames() as u64;
                    return Ok(Some(&self.pcm));
                }
                Err(SymError::DecodeError(msg)) => {
                    self.skip_packet(msg)?;
                }
                Err(SymError::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.skip_packet("packet cut short")?;
                }
                Err(e) => return Err(map_stream_error(e)),
            }
        }
    }

    /// When the stream declared its length and ended well short of it: `Some((frames missing,
    /// true))`. A short stream without a declared length is `Some((0, false))` only if it was
    /// cut inside a packet, which callers report as truncation too.
    fn missing_frames(&self) -> Option<(u64, bool)> {
        let total = self.info.total_frames?;
        // One long codec frame, or half a percent, of slack: containers round their lengths.
        let slack = 4096u64.max(total / 200);
        let missing = total.saturating_sub(self.frames_out);
        (missing > slack).then_some((missing, true))
    }

    fn skip_packet(&mut self, msg: &str) -> Result<()> {
        self.skipped_packets += 1;
        self.consecutive_errors += 1;
        if self.consecutive_errors > self.opts.max_consecutive_errors {
            return Err(AudioError::Malformed(format!(
                "{} corrupt packets in a row (last: {msg})",
                self.consecutive_errors
            )));
        }
        Ok(())
    }

    /// A chained stream began: pick the audio track again and make a new codec for it.
    fn reset_track(&mut self) -> Result<()> {
        let track = pick_track(self.format.as_ref())?.clone();
        self.codec = make_codec(&track, &self.opts)?;
        self.track_id = track.id;
        Ok(())
    }

    /// The largest packet the track declares, in bytes, when it says (PCM formats).
    fn max_packet_bytes(&self) -> Option<usize> {
        let track = self
            .format
            .tracks()
            .iter()
            .find(|t| t.id == self.track_id)?;
        let Some(CodecParameters::Audio(p)) = &track.codec_params else {
            return None;
        };
        let frames = p.max_frames_per_packet?;
        let bits = u64::from(p.bits_per_coded_sample.or(p.bits_per_sample)?);
        let ch = p.channels.as_ref()?.count() as u64;
        usize::try_from(frames.checked_mul(ch)?.checked_mul(bits.div_ceil(8))?).ok()
    }

    /// Decodes everything left, calling `f` with each block.
    ///
    /// # Errors
    /// As [`Decoder::next_block`], or the first error `f` returns.
    pub fn for_each_block(&mut self, mut f: impl FnMut(&PcmBuffer) -> Result<()>) -> Result<()> {
        while let Some(block) = self.next_block()? {
            f(block)?;
        }
        Ok(())
    }
}

/// Picks the first audio track with a codec symphonia knows.
fn pick_track(format: &dyn FormatReader) -> Result<&Track> {
    let track = format
        .default_track(TrackType::Audio)
        .or_else(|| format.first_track(TrackType::Audio))
        .ok_or(AudioError::UnknownFormat("no audio track in the container"))?;
    Ok(track)
}

fn make_codec(track: &Track, opts: &DecoderOptions) -> Result<Box<dyn AudioDecoder>> {
    let params = match &track.codec_params {
        Some(CodecParameters::Audio(a)) => a,
        _ => {
            return Err(AudioError::UnknownFormat(
                "the audio track has no codec parameters",
            ));
        }
    };
    if let Some(rate) = params.sample_rate {
        SampleRate::new(rate)?;
    }
    if let Some(ch) = &params.channels {
        to_u16_channels(ch.count())?;
    }
    let mut dec_opts = AudioDecoderOptions::default();
    dec_opts.gapless = opts.gapless;
    symphonia::default::get_codecs()
        .make_audio_decoder(params, &dec_opts)
        .map_err(|e| match e {
            SymError::Unsupported(what) => AudioError::Unsupported(format!("codec: {what}")),
            other => map_open_error(other, "opening the codec"),
        })
}

fn to_u16_channels(n: usize) -> Result<u16> {
    let ch = u16::try_from(n).map_err(|_| AudioError::InvalidSpec(format!("{n} channels")))?;
    if ch == 0 || ch > AudioSpec::MAX_CHANNELS {
        return Err(AudioError::InvalidSpec(format!("{n} channels")));
    }
    Ok(ch)
}

fn stream_info(
    format: &dyn FormatReader,
    track: &Track,
    codec: &dyn AudioDecoder,
    tags: Tags,
) -> Result<StreamInfo> {
    let params = codec.codec_params();
    let track_params = match &track.codec_params {
        Some(CodecParameters::Audio(a)) => Some(a),
        _ => None,
    };
    let rate = params
        .sample_rate
        .or_else(|| track_params.and_then(|p| p.sample_rate))
        .ok_or_else(|| AudioError::InvalidSpec("no sample rate".into()))?;
    let channels = params
        .channels
        .as_ref()
        .or_else(|| track_params.and_then(|p| p.channels.as_ref()))
        .map(|c| c.count())
        .ok_or_else(|| AudioError::InvalidSpec("no channel count".into()))?;
    let short = codec.codec_info().short_name;
    let codec_kind = codec_from_name(short);
    let container = container_from_name(format.format_info().short_name, codec_kind);
    let profile = match codec_kind {
        Codec::Aac => Some(
            if short.contains("he") {
                "he-aac"
            } else {
                "aac-lc"
            }
            .to_string(),
        ),
        _ => Some(short.to_string()),
    };
    let bits = match codec_kind {
        Codec::Flac | Codec::Pcm | Codec::Alac => params
            .bits_per_sample
            .or_else(|| track_params.and_then(|p| p.bits_per_sample)),
        _ => None,
    };
    Ok(StreamInfo {
        codec: codec_kind,
        codec_profile: profile,
        container,
        sample_rate: SampleRate::new(rate)?,
        channels: to_u16_channels(channels)?,
        bits_per_sample: bits,
        // A fragmented MP4 lists no samples in its index: 0 there means "unknown".
        total_frames: track.num_frames.filter(|&n| n > 0),
        bitrate: None,
        tags,
    })
}

fn codec_from_name(name: &str) -> Codec {
    match name {
        "mp3" => Codec::Mp3,
        "mp1" | "mp2" => Codec::Mp2,
        "flac" => Codec::Flac,
        "vorbis" => Codec::Vorbis,
        "alac" => Codec::Alac,
        "opus" => Codec::Opus,
        n if n.starts_with("aac") || n.contains("aac") => Codec::Aac,
        n if n.starts_with("pcm") => Codec::Pcm,
        n if n.starts_with("adpcm") => Codec::Adpcm,
        _ => Codec::Other,
    }
}

fn container_from_name(name: &str, codec: Codec) -> Container {
    match name {
        "mp1" | "mp2" | "mp3" => Container::Mpeg,
        "flac" => Container::Flac,
        "aac" => Container::Adts,
        "isomp4" => Container::Mp4,
        "ogg" => Container::Ogg,
        "wave" => Container::Wav,
        "aiff" => Container::Aiff,
        "matroska" | "mkv" => Container::Matroska,
        "caf" => Container::Caf,
        _ if codec == Codec::Mp3 => Container::Mpeg,
        _ => Container::Other,
    }
}

/// Reads the tags of every metadata revision queued so far (the newest wins per field).
fn collect_tags(format: &mut Box<dyn FormatReader>, tags: &mut Tags) {
    let mut revisions = Vec::new();
    let mut meta = format.metadata();
    while let Some(rev) = meta.pop() {
        revisions.push(rev);
    }
    if let Some(rev) = meta.current() {
        revisions.push(rev.clone());
    }
    for rev in revisions.iter().rev() {
        apply_revision(rev, tags);
    }
}

fn apply_revision(rev: &MetadataRevision, tags: &mut Tags) {
    let all = rev
        .media
        .tags
        .iter()
        .chain(rev.per_track.iter().flat_map(|t| t.metadata.tags.iter()));
    for tag in all {
        let Some(std) = &tag.std else { continue };
        let slot = match std {
            StandardTag::TrackTitle(v) => (&mut tags.title, v.to_string()),
            StandardTag::Artist(v) => (&mut tags.artist, v.to_string()),
            StandardTag::Album(v) => (&mut tags.album, v.to_string()),
            StandardTag::AlbumArtist(v) => (&mut tags.album_artist, v.to_string()),
            StandardTag::Genre(v) => (&mut tags.genre, v.to_string()),
            StandardTag::RecordingDate(v) | StandardTag::ReleaseDate(v) => {
                (&mut tags.date, v.to_string())
            }
            StandardTag::TrackNumber(n) => (&mut tags.track, n.to_string()),
            StandardTag::Comment(v) => (&mut tags.comment, v.to_string()),
            _ => continue,
        };
        if slot.0.is_none() && !slot.1.trim().is_empty() {
            *slot.0 = Some(slot.1.trim_end_matches('\0').to_string());
        }
    }
}

fn map_open_error(e: SymError, what: &'static str) -> AudioError {
    match e {
        SymError::IoError(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            AudioError::Truncated(what)
        }
        SymError::IoError(io) if io.kind() == io::ErrorKind::WouldBlock => {
            AudioError::LimitExceeded(format!("{what}: header larger than the push look-ahead"))
        }
        SymError::IoError(io) => AudioError::Io(io),
        SymError::Unsupported("core (probe): no suitable format reader found") => {
            AudioError::UnknownFormat("no known audio container found in the bytes")
        }
        SymError::Unsupported(m) => AudioError::Unsupported(format!("{what}: {m}")),
        SymError::DecodeError(m) => AudioError::Malformed(format!("{what}: {m}")),
        SymError::LimitError(m) => AudioError::LimitExceeded(format!("{what}: {m}")),
        SymError::SeekError(_) => AudioError::Malformed(format!("{what}: needs to seek")),
        SymError::ResetRequired => AudioError::Malformed(format!("{what}: reset required")),
        other => AudioError::Malformed(format!("{what}: {other}")),
    }
}

fn map_stream_error(e: SymError) -> AudioError {
    match e {
        SymError::IoError(io) if io.kind() == io::ErrorKind::WouldBlock => {
            AudioError::LimitExceeded(
                "a packet larger than the push look-ahead (raise DecoderOptions::push_lookahead)"
                    .into(),
            )
        }
        SymError::IoError(io) => AudioError::Io(io),
        SymError::DecodeError(m) => AudioError::Malformed(format!("container: {m}")),
        SymError::LimitError(m) => AudioError::LimitExceeded(m.to_string()),
        SymError::Unsupported(m) => AudioError::Unsupported(m.to_string()),
        other => AudioError::Malformed(other.to_string()),
    }
}

/// A seekable reader as a symphonia source, with its length measured once.
struct SeekableSource<R> {
    inner: R,
    len: Option<u64>,
}

impl<R: Read + Seek> SeekableSource<R> {
    fn new(mut inner: R) -> Result<Self> {
        let pos = inner.stream_position()?;
        let end = inner.seek(SeekFrom::End(0))?;
        inner.seek(SeekFrom::Start(pos))?;
        Ok(SeekableSource {
            inner,
            len: Some(end),
        })
    }
}

impl<R: Read> Read for SeekableSource<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<R: Seek> Seek for SeekableSource<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

impl<R: Read + Seek + Send + Sync> MediaSource for SeekableSource<R> {
    fn is_seekable(&self) -> bool {
        true
    }
    fn byte_len(&self) -> Option<u64> {
        self.len
    }
}

/// Bytes pushed by the caller and not yet read by symphonia.
#[derive(Debug, Default)]
struct PushQueue {
    bytes: VecDeque<u8>,
    finished: bool,
}

/// The push queue as a symphonia source. Symphonia's readers pull; the push decoder only lets
/// them read when enough bytes are queued, so a read that finds the queue empty before the end
/// is a packet larger than the look-ahead (reported as `WouldBlock`, mapped to LimitExceeded).
#[derive(Debug, Clone, Default)]
struct PushSource {
    queue: Arc<Mutex<PushQueue>>,
    /// Set when a read found the queue empty before the end (the reader wanted more).
    starved: Arc<std::sync::atomic::AtomicBool>,
    /// While probing, every byte read is kept so the probe can start over with more data.
    replay: Arc<Mutex<Option<Vec<u8>>>>,
}

impl Read for PushSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut q = self
            .queue
            .lock()
            .map_err(|_| io::Error::other("push queue poisoned"))?;
        if q.bytes.is_empty() {
            if q.finished {
                return Ok(0);
            }
            self.starved
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(q.bytes.len());
        for (dst, src) in buf.iter_mut().zip(q.bytes.drain(..n)) {
            *dst = src;
        }
        drop(q);
        if let Ok(mut replay) = self.replay.lock() {
            if let Some(r) = replay.as_mut() {
                r.extend_from_slice(&buf[..n]);
            }
        }
        Ok(n)
    }
}

impl Seek for PushSource {
    fn seek(&mut self, _pos: SeekFrom) -> io::Result<u64> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "push input cannot seek",
        ))
    }
}

impl MediaSource for PushSource {
    fn is_seekable(&self) -> bool {
        false
    }
    fn byte_len(&self) -> Option<u64> {
        None
    }
}

/// A decoder fed by pushing bytes as they arrive; no threads, no blocking.
///
/// Push with [`PushDecoder::push`], then drain blocks with [`PushDecoder::next_block`] until it
/// returns `Ok(None)` (it needs more bytes, or the input is over after [`PushDecoder::finish`]).
/// The output does not depend on how the bytes were split across pushes: packets are read only
/// when [`DecoderOptions::push_lookahead`] bytes are queued ahead, or once the input is finished.
///
/// MP4 inputs whose index (`moov`) comes after the audio cannot be decoded this way (they need
/// seeking); they fail with a clear error and should be decoded from a file.
#[derive(Debug)]
pub struct PushDecoder {
    source: PushSource,
    opts: DecoderOptions,
    decoder: Option<Decoder>,
    /// Queued bytes at which the next probe attempt is made.
    next_probe_at: usize,
    finished: bool,
}

impl PushDecoder {
    /// A decoder waiting for its first bytes.
    pub fn new(opts: DecoderOptions) -> Self {
        let lookahead = opts.push_lookahead.max(8 << 10);
        let opts = DecoderOptions {
            push_lookahead: lookahead,
            ..opts
        };
        PushDecoder {
            source: PushSource::default(),
            next_probe_at: lookahead,
            opts,
            decoder: None,
            finished: false,
        }
    }

    /// Appends input bytes.
    ///
    /// # Errors
    /// [`AudioError::InvalidState`] after [`PushDecoder::finish`].
    pub fn push(&mut self, bytes: &[u8]) -> Result<()> {
        if self.finished {
            return Err(AudioError::InvalidState("push after finish"));
        }
        let mut q = self.lock_queue()?;
        q.bytes.extend(bytes);
        Ok(())
    }

    /// Marks the end of the input: the remaining bytes are decoded by the next calls.
    pub fn finish(&mut self) {
        self.finished = true;
        if let Ok(mut q) = self.source.queue.lock() {
            q.finished = true;
        }
    }

    /// Bytes queued and not yet read by the decoder.
    pub fn queued_bytes(&self) -> usize {
        self.source.queue.lock().map(|q| q.bytes.len()).unwrap_or(0)
    }

    /// What was learned about the input, once the header has been read.
    pub fn info(&self) -> Option<&StreamInfo> {
        self.decoder.as_ref().map(Decoder::info)
    }

    /// The inner decoder, once the header has been read.
    pub fn decoder(&self) -> Option<&Decoder> {
        self.decoder.as_ref()
    }

    fn lock_queue(&self) -> Result<std::sync::MutexGuard<'_, PushQueue>> {
        self.source
            .queue
            .lock()
            .map_err(|_| AudioError::InvalidState("push queue poisoned"))
    }

    /// Reads the header if enough bytes are there: `Ok(true)` once [`PushDecoder::info`] is
    /// available, `Ok(false)` while more bytes are needed.
    ///
    /// # Errors
    /// As [`Decoder::from_source`].
    pub fn ready(&mut self) -> Result<bool> {
        if self.decoder.is_some() {
            return Ok(true);
        }
        self.try_open()
    }

    /// Tries to read the header. `Ok(false)` when more bytes are needed.
    fn try_open(&mut self) -> Result<bool> {
        let queued = self.queued_bytes();
        if !self.finished && queued < self.next_probe_at {
            return Ok(false);
        }
        // Record what the probe reads so a failed attempt can put it back.
        if let Ok(mut r) = self.source.replay.lock() {
            *r = Some(Vec::new());
        }
        self.source
            .starved
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let attempt = Decoder::from_source(Box::new(self.source.clone()), None, self.opts.clone());
        let replayed = self
            .source
            .replay
            .lock()
            .ok()
            .and_then(|mut r| r.take())
            .unwrap_or_default();
        match attempt {
            Ok(mut dec) => {
                // Raise the look-ahead to two of the largest packets the track declares (PCM
                // readers take fixed blocks that can exceed the default).
                if let Some(max) = dec.max_packet_bytes() {
                    self.opts.push_lookahead = self.opts.push_lookahead.max(max.saturating_mul(2));
                    dec.opts.push_lookahead = self.opts.push_lookahead;
                }
                self.decoder = Some(dec);
                Ok(true)
            }
            // Any failure after the reader ran out of bytes may just mean "not enough yet"
            // (symphonia's probe reports a starved scan as "no format found").
            Err(_)
                if !self.finished
                    && self
                        .source
                        .starved
                        .load(std::sync::atomic::Ordering::Relaxed) =>
            {
                // Not enough bytes yet: put back what was read and wait for twice as much.
                let mut q = self.lock_queue()?;
                for b in replayed.into_iter().rev() {
                    q.bytes.push_front(b);
                }
                let total = q.bytes.len();
                drop(q);
                if total >= self.opts.push_max_header_bytes {
                    return Err(AudioError::LimitExceeded(format!(
                        "no audio found in the first {} bytes",
                        self.opts.push_max_header_bytes
                    )));
                }
                self.next_probe_at = (total.saturating_mul(2)).min(self.opts.push_max_header_bytes);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The next decoded block, or `Ok(None)` when more input is needed (or, after
    /// [`PushDecoder::finish`], at the end).
    ///
    /// # Errors
    /// As [`Decoder::next_block`] and [`Decoder::from_source`].
    pub fn next_block(&mut self) -> Result<Option<&PcmBuffer>> {
        if self.decoder.is_none() && !self.try_open()? {
            return Ok(None);
        }
        if !self.finished && self.queued_bytes() < self.opts.push_lookahead {
            return Ok(None);
        }
        match self.decoder.as_mut() {
            Some(d) => d.next_block(),
            None => Ok(None),
        }
    }

    /// True once the input is finished and everything was decoded.
    pub fn is_done(&self) -> bool {
        self.finished && self.decoder.as_ref().is_some_and(|d| d.ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn corpus(rel: &str) -> Option<PathBuf> {
        let base = std::env::var_os("VEZA_AUDIO_CORPUS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../shared/audio-corpus"
                ))
            });
        let p = base.join(rel);
        p.exists().then_some(p)
    }

    fn decode_all(mut d: Decoder) -> (StreamInfo, u64) {
        let mut frames = 0u64;
        while let Some(b) = d.next_block().unwrap() {
            frames += b.frames() as u64;
        }
        (d.info().clone(), frames)
    }

    #[test]
    fn decodes_flac_and_reads_spec() {
        let Some(p) = corpus("flac/ietf-s01-blocksize4096.flac") else {
            eprintln!("corpus absent: skipped");
            return;
        };
        let (info, frames) = decode_all(Decoder::open_path(&p, DecoderOptions::default()).unwrap());
        assert_eq!(info.codec, Codec::Flac);
        assert_eq!(info.container, Container::Flac);
        assert_eq!(info.sample_rate.hz(), 44_100);
        assert_eq!(info.channels, 2);
        assert_eq!(info.total_frames, Some(frames));
    }

    #[test]
    fn push_decoding_matches_pull_decoding_for_any_split() {
        let Some(p) = corpus("mp3/androidx-bear-id3.mp3") else {
            eprintln!("corpus absent: skipped");
            return;
        };
        let bytes = std::fs::read(&p).unwrap();
        let (_, pulled) = decode_all(
            Decoder::from_seekable(io::Cursor::new(bytes.clone()), DecoderOptions::default())
                .unwrap(),
        );
        for split in [1usize, 7, 4096, 100_000] {
            let mut push = PushDecoder::new(DecoderOptions {
                push_lookahead: 8192,
                ..Default::default()
            });
            let mut frames = 0u64;
            for chunk in bytes.chunks(split) {
                push.push(chunk).unwrap();
                while let Some(b) = push.next_block().unwrap() {
                    frames += b.frames() as u64;
                }
            }
            push.finish();
            while let Some(b) = push.next_block().unwrap() {
                frames += b.frames() as u64;
            }
            assert_eq!(frames, pulled, "split {split}");
            assert!(push.is_done());
        }
    }

    #[test]
    fn junk_is_rejected_cleanly() {
        let junk: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let err =
            Decoder::from_seekable(io::Cursor::new(junk), DecoderOptions::default()).unwrap_err();
        assert!(
            matches!(err, AudioError::UnknownFormat(_) | AudioError::Truncated(_)),
            "{err}"
        );
        let err = Decoder::from_seekable(io::Cursor::new(Vec::new()), DecoderOptions::default())
            .unwrap_err();
        assert!(!err.is_recoverable());
    }
}
