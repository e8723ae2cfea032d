//! `veza-audio`: the codec engine of Veza Stream.
//!
//! It decodes MP3, FLAC, AAC (ADTS and MP4/M4A), Ogg Vorbis and WAV (the container is probed
//! from the bytes; the file name does not matter), resamples, converts channels, applies gain and
//! fades, measures loudness (EBU R128), and encodes MP3, FLAC, AAC (ADTS and M4A), Ogg Vorbis and
//! WAV; incrementally (push bytes in, take bytes out), in one call over a reader or a path, or as
//! a ladder of renditions from one decode.
//!
//! It does not do networking, async, or streaming protocols (that is `veza-stream-core` and the
//! server), and it does not decode HE-AAC's SBR layer (symphonia decodes the AAC-LC core of
//! HE-AAC files, at half their output rate) or Opus.
//!
//! # Cargo features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `mp3` | yes | MP3 encoder (LAME, through `mp3lame-encoder`): CBR, ABR, VBR, 8-320 kbit/s, gapless info frame |
//! | `flac` | yes | FLAC encoder (`flacenc`): levels 0-8, 16 and 24 bit, frame by frame in constant memory |
//! | `aac` | yes | AAC-LC encoder (Fraunhofer FDK, through `fdk-aac-sys`): ADTS and fragmented M4A, afterburner, no lost tail |
//! | `vorbis` | yes | Ogg Vorbis encoder (aoTuV, through `vorbis_rs`): quality or bitrate |
//! | `wav` | yes | WAV writer (16/24-bit PCM, WAVE_FORMAT_EXTENSIBLE, LIST/INFO tags) |
//! | `serde` | no | `Serialize`/`Deserialize` for the metadata, format and report types |
//!
//! Decoding of every format is always there (symphonia).
//!
//! # Design
//!
//! Audio moves through stages, each owning one reused buffer:
//!
//! ```text
//! bytes -> decode::Decoder / PushDecoder -> PcmBuffer (planar f32, source spec)
//!       -> dsp::effects (gain, fades) -> dsp::channels::ChannelMixer -> dsp::resample::Resampler
//!       -> encode::Encoder -> bytes
//! ```
//!
//! - [`decode`] wraps symphonia's probe, demuxers and codecs, adds what symphonia lacks (RF64,
//!   MP4 edit lists, a push mode), and turns its errors into [`AudioError`]s.
//! - [`transcode::Converter`] is effects + mixer + resampler; [`transcode::Pipeline`] adds an
//!   encoder; [`transcode::Transcoder`] adds a push decoder. [`ladder`] shares one decoder and one
//!   converter per output spec among N encoders, on worker threads when asked.
//! - [`encode`] has one module per format behind one trait, [`Encoder`]. Headers that can only be
//!   final at the end (FLAC STREAMINFO, WAV sizes, MP3 LAME tag, M4A durations) are returned as a
//!   [`HeaderPatch`] for outputs that can be rewritten; streamed outputs carry valid "unknown
//!   length" headers.
//! - [`mp4`] writes fragmented MP4 boxes (initialisation segment, audio sample entries,
//!   `moof` + `mdat` headers); the M4A encoder and `veza-stream-core`'s fMP4 HLS use it.
//! - [`presets`] maps the API's "compress" levels to settings and decides when to pass through.
//! - [`loudness`] measures EBU R128 figures and the normalisation gain.
//!
//! # The incremental contract
//!
//! [`transcode::Transcoder::push`] takes any number of bytes and encodes what can be decoded;
//! [`transcode::Transcoder::take_output`] hands over what is ready without copying;
//! [`transcode::Transcoder::finish`] flushes. The output does not depend on how the input was
//! split. Nothing spawns threads or blocks (except the FLAC encoder when asked for threads by
//! `EncoderConfig::flac_threads`; its scoped threads end within each call). Memory is bounded
//! by the decoder's look-ahead ([`decode::DecoderOptions::push_lookahead`], 64 KiB by default),
//! one block per stage and the output not yet taken, whatever the input's length.
//!
//! # Errors
//!
//! Everything fails with [`AudioError`]. [`AudioError::is_recoverable`] says whether the caller
//! can skip and go on (a corrupt packet) or must give up. No input makes the crate panic, hang, or
//! allocate more than the bytes present justify: sizes read from headers are checked against
//! limits first (see [`decode::DecoderOptions`]).
//!
//! # Example
//!
//! ```
//! use veza_audio::encode::{EncoderConfig, new_encoder};
//! use veza_audio::transcode::{TranscodeOptions, Transcoder};
//! use veza_audio::{AudioSpec, OutputFormat, PcmBuffer};
//!
//! # fn main() -> veza_audio::Result<()> {
//! // One second of a 440 Hz tone as a WAV file in memory.
//! let spec = AudioSpec::new(44_100, 2)?;
//! let tone: Vec<f32> = (0..44_100).map(|i| (i as f32 * 440.0 * std::f32::consts::TAU / 44_100.0).sin() * 0.5).collect();
//! let mut wav = bytes::BytesMut::new();
//! let mut enc = new_encoder(&EncoderConfig::new(OutputFormat::Wav, spec))?;
//! enc.encode(&PcmBuffer::from_planes(spec, vec![tone.clone(), tone]), &mut wav)?;
//! enc.finish(&mut wav)?;
//!
//! // Push it, in small pieces, through an incremental WAV -> MP3 transcoder.
//! let mut t = Transcoder::new(TranscodeOptions::new(OutputFormat::Mp3))?;
//! let mut mp3 = Vec::new();
//! for chunk in wav.chunks(1000) {
//!     t.push(chunk)?;
//!     mp3.extend_from_slice(&t.take_output());
//! }
//! mp3.extend_from_slice(&t.finish()?);
//! assert!(mp3.len() > 10_000); // about 16 kB at 128 kbit/s
//! # Ok(()) }
//! ```

pub mod decode;
pub mod dsp;
pub mod encode;
pub mod error;
pub mod format;
pub mod ladder;
pub mod loudness;
pub mod metadata;
pub mod mp4;
mod parallel;
pub mod pcm;
pub mod presets;
mod sniff;
pub mod transcode;

pub use encode::{Encoder, EncoderConfig, HeaderPatch, RateControl, new_encoder};
pub use error::{AudioError, Recovery, Result};
pub use format::{AudioSpec, Bitrate, Codec, Container, OutputFormat, SampleRate};
pub use metadata::{StreamInfo, Tags};
pub use pcm::PcmBuffer;
