//! AAC-LC encoding with the Fraunhofer FDK encoder, in ADTS frames ([`AacEncoder`]) or as raw
//! access units for a container ([`FdkEncoder`] with [`Transport::Raw`], used by the M4A writer).
//!
//! # Why `fdk-aac-sys` and not the `fdk-aac` safe wrapper
//! The wrapper crate (`fdk-aac` 0.8) has no afterburner setting, no end-of-stream flush (the
//! last ~68 ms of audio are lost), at most 2 channels, and no access to the AudioSpecificConfig
//! and encoder delay that an MP4 file needs (its `esds` box and gapless edit list). The FDK C API
//! exposes all of that, so this module is a thin safe layer over `fdk-aac-sys` 0.5: one owned
//! encoder handle, fixed-size buffers allocated once, and every C call checked.
//!
//! # Settings
//! - Audio object type 2 (AAC-LC), 1024-sample frames.
//! - [`RateControl::Cbr`] and [`RateControl::Abr`] both give FDK's CBR mode, 8 to 320 kbit/s
//!   for the whole stream; FDK's own limits for the rate and channel count are checked too (it
//!   would silently clamp: for example 8 kHz stereo allows at most 96 kbit/s).
//! - [`RateControl::Vbr`]`(q)`, `q` in 0.0..=10.0, maps to FDK's VBR modes 1 to 5:
//!   `mode = 1 + round(q * 4 / 10)` (0-1.2 -> 1, 1.3-3.7 -> 2, 3.8-6.2 -> 3, 6.3-8.7 -> 4,
//!   8.8-10 -> 5). FDK's VBR modes aim at about 32, 40, 56, 72 and 112 kbit/s for mono and
//!   40, 64, 96, 128 and 192 kbit/s for stereo.
//! - [`EncoderConfig::aac_afterburner`] sets `AACENC_AFTERBURNER`.
//! - 1 or 2 channels, or 6 as 5.1 (input in WAV order: L R C LFE Ls Rs); other counts must be
//!   downmixed first.
//! - Sample rates 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200
//!   and 96000 Hz.
//!
//! # Build
//! `fdk-aac-sys` compiles FDK's C++ with the `cc` crate, which takes the optimisation level
//! from cargo's `OPT_LEVEL`: 3 in every profile here, since the root `Cargo.toml` builds all
//! dependencies at `opt-level = 3` even in dev (checked: the objects match a `g++ -O3` build).
//! `cc` adds no `-march`; set `CXXFLAGS` for CPU-specific code.
//!
//! # Delay
//! FDK's output starts with [`FdkEncoder::encoder_delay`] samples of priming (1600 for LC at
//! 1024-sample frames: one frame of MDCT overlap plus the block-switching look-ahead).
//! [`Encoder::finish`] flushes the encoder until FDK reports the end of stream, so the decoded
//! output holds every input sample: it is `delay + input + padding` samples long, the padding
//! being less than one frame. ADTS cannot say how much to trim; the M4A writer does it with an
//! edit list.

use std::ffi::c_void;
use std::fmt;

use bytes::BytesMut;
use fdk_aac_sys as fdk;

use crate::encode::{Encoder, EncoderConfig, RateControl, check_spec};
use crate::error::{AudioError, Result};
use crate::format::{AudioSpec, Bitrate, OutputFormat};
use crate::pcm::{PcmBuffer, f32_to_i16};

const CODEC: &str = "aac";

/// The sample rates FDK's AAC-LC encoder accepts, in Hz.
pub const SUPPORTED_SAMPLE_RATES: [u32; 12] = [
    8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000,
];

/// The lowest CBR bitrate accepted, for the whole stream.
pub const MIN_BITRATE: Bitrate = Bitrate::kbps(8);
/// The highest CBR bitrate accepted, for the whole stream.
pub const MAX_BITRATE: Bitrate = Bitrate::kbps(320);

/// PCM frames (samples per channel) in one AAC-LC access unit.
pub const FRAME_LENGTH: u32 = 1024;

/// How the encoded access units are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Each access unit behind a 7-byte ADTS header (a self-describing `.aac` stream).
    Adts,
    /// Bare access units; the decoder needs [`FdkEncoder::audio_specific_config`] from the
    /// container (MP4's `esds`).
    Raw,
}

/// The FDK bitrate mode for a rate control (0 = CBR, 1..=5 = VBR modes).
fn bitrate_mode(rc: RateControl) -> Result<(u32, Option<Bitrate>)> {
    match rc {
        RateControl::Cbr(b) | RateControl::Abr(b) => {
            if b < MIN_BITRATE || b > MAX_BITRATE {
                return Err(AudioError::config(format!(
                    "AAC bitrate {b} is outside {MIN_BITRATE} to {MAX_BITRATE}"
                )));
            }
            Ok((0, Some(b)))
        }
        RateControl::Vbr(q) => {
            if !(0.0..=10.0).contains(&q) {
                return Err(AudioError::config(format!(
                    "AAC VBR quality {q} is outside 0 to 10"
                )));
            }
            // In range, so the cast is exact: 1..=5.
            let mode = 1 + (q * 0.4).round() as u32;
            Ok((mode.min(5), None))
        }
    }
}

/// FDK's channel mode for a channel count.
fn channel_mode(channels: u16) -> Result<fdk::CHANNEL_MODE> {
    match channels {
        1 => Ok(fdk::CHANNEL_MODE_MODE_1),
        2 => Ok(fdk::CHANNEL_MODE_MODE_2),
        6 => Ok(fdk::CHANNEL_MODE_MODE_1_2_2_1),
        n => Err(AudioError::config(format!(
            "the AAC encoder takes 1, 2 or 6 (5.1) channels, not {n}: downmix first"
        ))),
    }
}

/// A readable name for an FDK encoder error code.
fn error_name(code: fdk::AACENC_ERROR) -> &'static str {
    match code {
        fdk::AACENC_ERROR_AACENC_OK => "ok",
        fdk::AACENC_ERROR_AACENC_INVALID_HANDLE => "invalid handle",
        fdk::AACENC_ERROR_AACENC_MEMORY_ERROR => "out of memory",
        fdk::AACENC_ERROR_AACENC_UNSUPPORTED_PARAMETER => "unsupported parameter",
        fdk::AACENC_ERROR_AACENC_INVALID_CONFIG => "invalid configuration",
        fdk::AACENC_ERROR_AACENC_INIT_ERROR => "initialisation error",
        fdk::AACENC_ERROR_AACENC_INIT_AAC_ERROR => "AAC core initialisation error",
        fdk::AACENC_ERROR_AACENC_INIT_SBR_ERROR => "SBR initialisation error",
        fdk::AACENC_ERROR_AACENC_INIT_TP_ERROR => "transport initialisation error",
        fdk::AACENC_ERROR_AACENC_INIT_META_ERROR => "metadata initialisation error",
        fdk::AACENC_ERROR_AACENC_INIT_MPS_ERROR => "MPEG surround initialisation error",
        fdk::AACENC_ERROR_AACENC_ENCODE_ERROR => "encoding error",
        fdk::AACENC_ERROR_AACENC_ENCODE_EOF => "end of stream",
        _ => "unknown error",
    }
}

fn fdk_error(what: &str, code: fdk::AACENC_ERROR) -> AudioError {
    AudioError::encoder(
        CODEC,
        format!("{what}: FDK error {code:#x} ({})", error_name(code)),
    )
}

/// The owned FDK encoder instance; closed on drop.
struct Handle(fdk::HANDLE_AACENCODER);

// SAFETY: an FDK encoder instance is plain heap memory with no thread affinity and no shared
// global state; `Handle` owns it exclusively and every use goes through `&mut self`.
unsafe impl Send for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from a successful `aacEncOpen` and is closed only here.
        unsafe {
            fdk::aacEncClose(&mut self.0);
        }
    }
}

impl Handle {
    fn set(&mut self, param: fdk::AACENC_PARAM, value: u32, what: &str) -> Result<()> {
        // SAFETY: valid handle; SetParam only stores the value (checked at init).
        let code = unsafe { fdk::aacEncoder_SetParam(self.0, param, value) };
        if code != fdk::AACENC_ERROR_AACENC_OK {
            return Err(AudioError::config(format!(
                "FDK rejected {what} = {value}: error {code:#x} ({})",
                error_name(code)
            )));
        }
        Ok(())
    }

    fn get(&self, param: fdk::AACENC_PARAM) -> u32 {
        // SAFETY: valid handle; GetParam only reads the configuration.
        unsafe { fdk::aacEncoder_GetParam(self.0, param) }
    }
}

/// A shared FDK AAC-LC encoder: planar `f32` PCM in, one callback per encoded access unit.
///
/// [`AacEncoder`] uses it with [`Transport::Adts`]; the M4A writer uses it with
/// [`Transport::Raw`] and puts [`FdkEncoder::audio_specific_config`] and
/// [`FdkEncoder::encoder_delay`] in the file headers.
///
/// Input is converted to interleaved `i16` into a buffer of one frame and given to FDK one
/// whole frame at a time, so the output bytes do not depend on how the input was split into
/// blocks. After construction no call allocates.
pub struct FdkEncoder {
    handle: Handle,
    spec: AudioSpec,
    transport: Transport,
    /// Interleaved samples per frame (`FRAME_LENGTH * channels`).
    frame_samples: usize,
    /// Interleaved `i16` input, at most one frame.
    pending: Vec<i16>,
    /// FDK's output buffer (one access unit).
    out_buf: Vec<u8>,
    delay: u32,
    asc: Vec<u8>,
    bitrate: Option<Bitrate>,
    vbr_mode: u32,
    frames_in: u64,
    units_out: u64,
    finished: bool,
}

impl fmt::Debug for FdkEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FdkEncoder")
            .field("spec", &self.spec)
            .field("transport", &self.transport)
            .field("bitrate", &self.bitrate)
            .field("vbr_mode", &self.vbr_mode)
            .field("delay", &self.delay)
            .field("frames_in", &self.frames_in)
            .field("units_out", &self.units_out)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl FdkEncoder {
    /// Opens and configures an FDK encoder for `config` (its `spec`, `rate_control` and
    /// `aac_afterburner`; the format field is not looked at) with the given framing.
    ///
    /// # Errors
    /// [`AudioError::InvalidConfig`] for a sample rate FDK does not support, a channel count
    /// other than 1, 2 or 6, a CBR/ABR bitrate outside 8..=320 kbit/s or outside what FDK
    /// allows at this rate and channel count, or a VBR quality outside 0..=10;
    /// [`AudioError::Encoder`] when FDK fails to open or initialise.
    pub fn new(config: &EncoderConfig, transport: Transport) -> Result<Self> {
        let spec = config.spec;
        let rate = spec.sample_rate.hz();
        if !SUPPORTED_SAMPLE_RATES.contains(&rate) {
            return Err(AudioError::config(format!(
                "AAC cannot encode at {rate} Hz (supported: {SUPPORTED_SAMPLE_RATES:?}); resample first"
            )));
        }
        let mode = channel_mode(spec.channels)?;
        let (vbr_mode, bitrate) = bitrate_mode(config.rate_control)?;
        let channels = usize::from(spec.channels);

        let mut raw: fdk::HANDLE_AACENCODER = std::ptr::null_mut();
        // Modules: 0x01 = AAC core only (no SBR, PS, MPEG surround or metadata).
        // SAFETY: `raw` is a valid out-pointer; FDK allocates the instance.
        let code = unsafe { fdk::aacEncOpen(&mut raw, 0x01, u32::from(spec.channels)) };
        if code != fdk::AACENC_ERROR_AACENC_OK || raw.is_null() {
            return Err(fdk_error("opening the encoder", code));
        }
        let mut handle = Handle(raw);

        handle.set(
            fdk::AACENC_PARAM_AACENC_AOT,
            2,
            "audio object type (AAC-LC)",
        )?;
        handle.set(fdk::AACENC_PARAM_AACENC_SAMPLERATE, rate, "sample rate")?;
        // The mode is one of the three positive constants above.
        handle.set(
            fdk::AACENC_PARAM_AACENC_CHANNELMODE,
            mode as u32,
            "channel mode",
        )?;
        // 1 = WAV channel order (L R C LFE Ls Rs), the order of our planar PCM.
        handle.set(fdk::AACENC_PARAM_AACENC_CHANNELORDER, 1, "channel order")?;
        handle.set(
            fdk::AACENC_PARAM_AACENC_BITRATEMODE,
            vbr_mode,
            "bitrate mode",
        )?;
        if let Some(b) = bitrate {
            handle.set(fdk::AACENC_PARAM_AACENC_BITRATE, b.as_bps(), "bitrate")?;
        }
        let tt = match transport {
            Transport::Adts => fdk::TRANSPORT_TYPE_TT_MP4_ADTS,
            Transport::Raw => fdk::TRANSPORT_TYPE_TT_MP4_RAW,
        };
        handle.set(
            fdk::AACENC_PARAM_AACENC_TRANSMUX,
            tt as u32,
            "transport type",
        )?;
        handle.set(
            fdk::AACENC_PARAM_AACENC_AFTERBURNER,
            u32::from(config.aac_afterburner),
            "afterburner",
        )?;

        // Initialise now (a call with only the handle), so that bad settings fail here.
        // SAFETY: valid handle; the null descriptors ask FDK for (re)initialisation only.
        let code = unsafe {
            fdk::aacEncEncode(
                handle.0,
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null_mut(),
            )
        };
        if code != fdk::AACENC_ERROR_AACENC_OK {
            let msg = format!(
                "FDK cannot encode AAC-LC at {rate} Hz, {} channels, {}: error {code:#x} ({})",
                spec.channels,
                bitrate.map_or_else(|| format!("VBR mode {vbr_mode}"), |b| b.to_string()),
                error_name(code)
            );
            return Err(if code == fdk::AACENC_ERROR_AACENC_INVALID_CONFIG {
                AudioError::InvalidConfig(msg)
            } else {
                AudioError::encoder(CODEC, msg)
            });
        }

        // FDK clamps a CBR bitrate it cannot honour instead of failing: read it back.
        if let Some(b) = bitrate {
            let got = handle.get(fdk::AACENC_PARAM_AACENC_BITRATE);
            if got != b.as_bps() {
                let bound = if got < b.as_bps() {
                    "at most"
                } else {
                    "at least"
                };
                return Err(AudioError::config(format!(
                    "AAC-LC at {rate} Hz with {} channels takes {bound} {} (asked {b})",
                    spec.channels,
                    Bitrate::bps(got)
                )));
            }
        }

        // SAFETY: an all-zero InfoStruct is a valid value (integers and a byte array).
        let mut info: fdk::AACENC_InfoStruct = unsafe { std::mem::zeroed() };
        // SAFETY: valid, initialised handle; `info` is a valid out-pointer.
        let code = unsafe { fdk::aacEncInfo(handle.0, &mut info) };
        if code != fdk::AACENC_ERROR_AACENC_OK {
            return Err(fdk_error("reading the encoder info", code));
        }
        if info.frameLength != FRAME_LENGTH || info.inputChannels != u32::from(spec.channels) {
            return Err(AudioError::encoder(
                CODEC,
                format!(
                    "unexpected FDK setup: frame length {}, {} input channels",
                    info.frameLength, info.inputChannels
                ),
            ));
        }
        let conf_len = (info.confSize as usize).min(info.confBuf.len());
        let asc = info.confBuf.get(..conf_len).unwrap_or_default().to_vec();
        if transport == Transport::Raw && asc.len() < 2 {
            return Err(AudioError::encoder(
                CODEC,
                "FDK gave no AudioSpecificConfig",
            ));
        }
        let frame_samples = FRAME_LENGTH as usize * channels;
        // One access unit is at most 6144 bits per channel, plus a header.
        let out_len = (info.maxOutBufBytes as usize).max(768 * channels + 64);

        Ok(FdkEncoder {
            handle,
            spec,
            transport,
            frame_samples,
            pending: Vec::with_capacity(frame_samples),
            out_buf: vec![0; out_len],
            delay: info.nDelay,
            asc,
            bitrate,
            vbr_mode,
            frames_in: 0,
            units_out: 0,
            finished: false,
        })
    }

    /// The spec of the PCM expected (and of the output).
    pub fn spec(&self) -> AudioSpec {
        self.spec
    }

    /// The framing of the access units.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// PCM frames in one access unit (1024).
    pub fn frame_length(&self) -> u32 {
        FRAME_LENGTH
    }

    /// Priming samples (per channel) at the start of the decoded output, as FDK reports them
    /// (`nDelay`: 1600 for AAC-LC). A container's edit list skips them for gapless playback.
    pub fn encoder_delay(&self) -> u32 {
        self.delay
    }

    /// The MPEG-4 AudioSpecificConfig of the stream (2 bytes for AAC-LC), for MP4's `esds`.
    pub fn audio_specific_config(&self) -> &[u8] {
        &self.asc
    }

    /// The CBR bitrate, `None` in VBR mode.
    pub fn bitrate(&self) -> Option<Bitrate> {
        self.bitrate
    }

    /// PCM frames pushed so far.
    pub fn frames_in(&self) -> u64 {
        self.frames_in
    }

    /// Access units produced so far.
    pub fn access_units_out(&self) -> u64 {
        self.units_out
    }

    /// True once [`FdkEncoder::finish`] has run.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Encodes `pcm` (which must have [`FdkEncoder::spec`]) and calls `on_unit` with each
    /// access unit that is ready (with its ADTS header in [`Transport::Adts`]). Does not
    /// allocate.
    ///
    /// # Errors
    /// [`AudioError::InvalidState`] after `finish`, [`AudioError::InvalidSpec`] for PCM of
    /// another spec, [`AudioError::Encoder`] when FDK fails.
    pub fn encode(&mut self, pcm: &PcmBuffer, mut on_unit: impl FnMut(&[u8])) -> Result<()> {
        if self.finished {
            return Err(AudioError::InvalidState("encode after finish"));
        }
        check_spec(self.spec, pcm)?;
        let frames = pcm.frames();
        let channels = usize::from(self.spec.channels);
        let planes = pcm.planes();
        let mut pos = 0;
        while pos < frames {
            let room = (self.frame_samples - self.pending.len()) / channels;
            let take = room.min(frames - pos);
            for i in pos..pos + take {
                for plane in planes {
                    // Planes of a PcmBuffer all have `frames` samples.
                    self.pending
                        .push(f32_to_i16(plane.get(i).copied().unwrap_or(0.0)));
                }
            }
            pos += take;
            if self.pending.len() == self.frame_samples {
                self.feed_pending(&mut on_unit)?;
            }
        }
        self.frames_in += frames as u64;
        Ok(())
    }

    /// Encodes what is buffered, then flushes FDK's delay line until it reports the end of
    /// the stream, calling `on_unit` with each access unit. Later calls do nothing.
    ///
    /// # Errors
    /// [`AudioError::Encoder`] when FDK fails.
    pub fn finish(&mut self, mut on_unit: impl FnMut(&[u8])) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        if !self.pending.is_empty() {
            // A partial frame: FDK takes it into its input buffer and waits for more.
            self.feed_pending(&mut on_unit)?;
        }
        // Each flush call pads the input with zeros and encodes one frame, until FDK has
        // appended at least its delay in zeros; bound the loop in case it never says EOF.
        let max_calls = self.delay as usize / FRAME_LENGTH as usize + 4;
        for _ in 0..max_calls {
            let (code, _, out_bytes) = self.call(-1)?;
            if out_bytes > 0 {
                self.emit(out_bytes, &mut on_unit);
            }
            if code == fdk::AACENC_ERROR_AACENC_ENCODE_EOF {
                return Ok(());
            }
        }
        Err(AudioError::encoder(
            CODEC,
            "FDK did not end the stream when flushed",
        ))
    }

    /// Gives `pending` to FDK until it is all taken, emitting the access units produced.
    fn feed_pending(&mut self, on_unit: &mut impl FnMut(&[u8])) -> Result<()> {
        let mut taken = 0;
        // One full frame is taken in one call; allow a few calls in case FDK takes less.
        for _ in 0..8 {
            let left = self.pending.len() - taken;
            if left == 0 {
                break;
            }
            let (_, consumed, out_bytes) = self.call_with_input(taken, left)?;
            if out_bytes > 0 {
                self.emit(out_bytes, on_unit);
            }
            if consumed == 0 && out_bytes == 0 {
                break;
            }
            taken += consumed;
        }
        if taken != self.pending.len() {
            return Err(AudioError::encoder(
                CODEC,
                format!("FDK took {taken} of {} input samples", self.pending.len()),
            ));
        }
        self.pending.clear();
        Ok(())
    }

    fn emit(&mut self, out_bytes: usize, on_unit: &mut impl FnMut(&[u8])) {
        if let Some(unit) = self.out_buf.get(..out_bytes) {
            self.units_out += 1;
            on_unit(unit);
        }
    }

    /// `aacEncEncode` in flush mode (`num_in == -1`): no input buffer is read.
    fn call(&mut self, num_in: i32) -> Result<(fdk::AACENC_ERROR, usize, usize)> {
        self.raw_call(std::ptr::null_mut(), 0, num_in)
    }

    /// `aacEncEncode` with `len` interleaved samples of `pending` from `start`.
    fn call_with_input(
        &mut self,
        start: usize,
        len: usize,
    ) -> Result<(fdk::AACENC_ERROR, usize, usize)> {
        let input = self.pending.get_mut(start..start + len).unwrap_or_default();
        let (ptr, input_len) = (input.as_mut_ptr(), input.len());
        // At most one frame (1024 * 6 samples), far below i32::MAX.
        self.raw_call(ptr, input_len, input_len as i32)
    }

    /// One `aacEncEncode` call. Returns the code (OK or EOF), the samples consumed and the
    /// output bytes written to `out_buf`.
    fn raw_call(
        &mut self,
        input: *mut i16,
        input_len: usize,
        num_in: i32,
    ) -> Result<(fdk::AACENC_ERROR, usize, usize)> {
        let mut in_ptrs = [input.cast::<c_void>()];
        let mut in_ids = [fdk::AACENC_BufferIdentifier_IN_AUDIO_DATA as i32];
        let mut in_sizes = [(input_len * std::mem::size_of::<i16>()) as i32];
        let mut in_el_sizes = [std::mem::size_of::<i16>() as i32];
        let in_desc = fdk::AACENC_BufDesc {
            numBufs: if input.is_null() { 0 } else { 1 },
            bufs: in_ptrs.as_mut_ptr(),
            bufferIdentifiers: in_ids.as_mut_ptr(),
            bufSizes: in_sizes.as_mut_ptr(),
            bufElSizes: in_el_sizes.as_mut_ptr(),
        };
        let mut out_ptrs = [self.out_buf.as_mut_ptr().cast::<c_void>()];
        let mut out_ids = [fdk::AACENC_BufferIdentifier_OUT_BITSTREAM_DATA as i32];
        // The output buffer is a few kB: fits i32.
        let mut out_sizes = [self.out_buf.len() as i32];
        let mut out_el_sizes = [1i32];
        let out_desc = fdk::AACENC_BufDesc {
            numBufs: 1,
            bufs: out_ptrs.as_mut_ptr(),
            bufferIdentifiers: out_ids.as_mut_ptr(),
            bufSizes: out_sizes.as_mut_ptr(),
            bufElSizes: out_el_sizes.as_mut_ptr(),
        };
        let in_args = fdk::AACENC_InArgs {
            numInSamples: num_in,
            numAncBytes: 0,
        };
        let mut out_args = fdk::AACENC_OutArgs {
            numOutBytes: 0,
            numInSamples: 0,
            numAncBytes: 0,
            bitResState: 0,
        };
        // SAFETY: valid handle; the descriptors point at arrays living until the call returns;
        // the input pointer (when given) covers `input_len` samples of `pending`, and FDK reads
        // at most `num_in` of them; the output buffer is `out_buf.len()` bytes, which FDK
        // checks against its own maximum.
        let code = unsafe {
            fdk::aacEncEncode(self.handle.0, &in_desc, &out_desc, &in_args, &mut out_args)
        };
        if code != fdk::AACENC_ERROR_AACENC_OK && code != fdk::AACENC_ERROR_AACENC_ENCODE_EOF {
            return Err(fdk_error("encoding", code));
        }
        let consumed = usize::try_from(out_args.numInSamples).unwrap_or(0);
        let out_bytes = usize::try_from(out_args.numOutBytes).unwrap_or(0);
        if out_bytes > self.out_buf.len() {
            return Err(AudioError::encoder(
                CODEC,
                "FDK wrote past its output buffer",
            ));
        }
        Ok((code, consumed, out_bytes))
    }
}

/// AAC-LC in ADTS frames (`.aac`): each access unit carries its own 7-byte header, so the
/// stream can be cut and joined anywhere between frames. See the module docs for the settings.
#[derive(Debug)]
pub struct AacEncoder {
    inner: FdkEncoder,
}

impl AacEncoder {
    /// Makes an ADTS encoder for `config`.
    ///
    /// # Errors
    /// [`AudioError::InvalidConfig`] for settings FDK cannot encode (see [`FdkEncoder::new`]);
    /// [`AudioError::Encoder`] when FDK fails to start.
    pub fn new(config: &EncoderConfig) -> Result<Self> {
        Ok(AacEncoder {
            inner: FdkEncoder::new(config, Transport::Adts)?,
        })
    }

    /// Priming samples at the start of the decoded output (see [`FdkEncoder::encoder_delay`]).
    pub fn encoder_delay(&self) -> u32 {
        self.inner.encoder_delay()
    }

    /// The underlying FDK encoder.
    pub fn fdk(&self) -> &FdkEncoder {
        &self.inner
    }
}

impl Encoder for AacEncoder {
    fn format(&self) -> OutputFormat {
        OutputFormat::Aac
    }

    fn spec(&self) -> AudioSpec {
        self.inner.spec()
    }

    fn encode(&mut self, pcm: &PcmBuffer, out: &mut BytesMut) -> Result<()> {
        self.inner.encode(pcm, |unit| out.extend_from_slice(unit))
    }

    fn finish(&mut self, out: &mut BytesMut) -> Result<()> {
        self.inner.finish(|unit| out.extend_from_slice(unit))
    }

    fn frames_in(&self) -> u64 {
        self.inner.frames_in()
    }
}

/// Test helpers shared by the AAC and M4A tests: signals, measurements, and decoding with
/// symphonia and ffmpeg.
#[cfg(test)]
pub(crate) mod testkit {
    use std::path::PathBuf;
    use std::process::Command;

    use crate::format::AudioSpec;
    use crate::pcm::PcmBuffer;

    /// Decoded PCM, interleaved.
    #[derive(Debug, Default)]
    pub struct Decoded {
        pub rate: u32,
        pub channels: usize,
        pub samples: Vec<f32>,
    }

    impl Decoded {
        pub fn frames(&self) -> usize {
            self.samples.len() / self.channels.max(1)
        }

        /// Channel `ch` of frames `range`.
        pub fn channel(&self, ch: usize, range: std::ops::Range<usize>) -> Vec<f32> {
            range
                .filter_map(|i| self.samples.get(i * self.channels + ch).copied())
                .collect()
        }
    }

    /// `secs` of a sine at `freq` Hz and `amp` peak on every channel.
    pub fn sine(spec: AudioSpec, secs: f64, freq: f64, amp: f32) -> PcmBuffer {
        let rate = f64::from(spec.sample_rate.hz());
        let n = (secs * rate).round() as usize;
        let plane: Vec<f32> = (0..n)
            .map(|i| amp * (2.0 * std::f64::consts::PI * freq * i as f64 / rate).sin() as f32)
            .collect();
        PcmBuffer::from_planes(spec, vec![plane; usize::from(spec.channels)])
    }

    pub fn rms(x: &[f32]) -> f64 {
        (x.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / x.len().max(1) as f64).sqrt()
    }

    /// Power of `x` at `freq` Hz (Goertzel).
    pub fn goertzel(x: &[f32], rate: u32, freq: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
        let c = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &v in x {
            let s0 = f64::from(v) + c * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        s1 * s1 + s2 * s2 - c * s1 * s2
    }

    /// Checks a decoded sine: the tone at `freq` dominates its neighbours and the RMS is
    /// within 1 dB of `expected_rms`, on every channel, over frames `range`.
    pub fn assert_sine(d: &Decoded, range: std::ops::Range<usize>, freq: f64, expected_rms: f64) {
        for ch in 0..d.channels {
            let x = d.channel(ch, range.clone());
            assert!(x.len() > 4096, "too few frames to analyse: {}", x.len());
            let p = goertzel(&x, d.rate, freq);
            for off in [0.7, 0.8, 1.25, 1.5] {
                let q = goertzel(&x, d.rate, freq * off);
                assert!(
                    p > 1000.0 * q,
                    "ch {ch}: {freq} Hz not dominant ({p} vs {q} at x{off})"
                );
            }
            let db = 20.0 * (rms(&x) / expected_rms).log10();
            assert!(db.abs() < 1.0, "ch {ch}: level off by {db:.2} dB");
        }
    }

    /// A fresh path in the temp dir.
    pub fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("veza-{}-{name}", std::process::id()))
    }

    fn run(cmd: &mut Command) -> std::process::Output {
        cmd.output().unwrap_or_else(|e| {
            panic!("cannot run {cmd:?} ({e}): install ffmpeg (it provides ffmpeg and ffprobe)")
        })
    }

    /// `ffprobe -show_streams -show_format` as `key=value` pairs (tags as `TAG:key`).
    pub fn ffprobe(path: &std::path::Path) -> Vec<(String, String)> {
        let out = run(Command::new("ffprobe")
            .args(["-v", "error", "-show_streams", "-show_format"])
            .args(["-of", "default=noprint_wrappers=1"])
            .arg(path));
        assert!(
            out.status.success(),
            "ffprobe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect()
    }

    pub fn probe_value<'a>(p: &'a [(String, String)], key: &str) -> &'a str {
        p.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("ffprobe gave no {key}: {p:?}"))
    }

    /// Decodes with ffmpeg to interleaved f32; asserts ffmpeg printed no error.
    pub fn ffmpeg_decode(path: &std::path::Path, rate: u32, channels: usize) -> Decoded {
        let out = run(Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(path)
            .args(["-f", "f32le", "-c:a", "pcm_f32le", "-"]));
        assert!(
            out.status.success(),
            "ffmpeg failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "ffmpeg complained: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let samples = out
            .stdout
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Decoded {
            rate,
            channels,
            samples,
        }
    }

    /// Decodes with symphonia (format probed from the bytes, `ext` as a hint).
    pub fn symphonia_decode(bytes: Vec<u8>, ext: &str) -> symphonia::core::errors::Result<Decoded> {
        use symphonia::core::codecs::audio::AudioDecoderOptions;
        use symphonia::core::formats::probe::Hint;
        use symphonia::core::formats::{FormatOptions, TrackType};
        use symphonia::core::io::MediaSourceStream;
        use symphonia::core::meta::MetadataOptions;

        let mss = MediaSourceStream::new(Box::new(std::io::Cursor::new(bytes)), Default::default());
        let mut hint = Hint::new();
        hint.with_extension(ext);
        let mut reader = symphonia::default::get_probe().probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )?;
        let track = reader
            .default_track(TrackType::Audio)
            .expect("an audio track");
        let id = track.id;
        let params = track
            .codec_params
            .as_ref()
            .and_then(|p| p.audio())
            .expect("audio")
            .clone();
        let mut dec = symphonia::default::get_codecs()
            .make_audio_decoder(&params, &AudioDecoderOptions::default())?;
        let mut d = Decoded::default();
        let mut tmp: Vec<f32> = Vec::new();
        while let Some(packet) = reader.next_packet()? {
            if packet.track_id != id {
                continue;
            }
            let buf = dec.decode(&packet)?;
            d.rate = buf.spec().rate();
            d.channels = buf.spec().channels().count();
            buf.copy_to_vec_interleaved(&mut tmp);
            d.samples.extend_from_slice(&tmp);
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::*;
    use crate::format::SampleRate;

    fn config(rate: u32, channels: u16, rc: RateControl) -> EncoderConfig {
        EncoderConfig::new(OutputFormat::Aac, AudioSpec::new(rate, channels).unwrap())
            .with_rate_control(rc)
    }

    fn encode_all(config: &EncoderConfig, pcm: &PcmBuffer, block: usize) -> (Vec<u8>, u32) {
        let mut enc = AacEncoder::new(config).unwrap();
        let mut out = BytesMut::new();
        let mut part = PcmBuffer::new(pcm.spec());
        let mut pos = 0;
        while pos < pcm.frames() {
            let end = (pos + block).min(pcm.frames());
            part.clear();
            for (dst, src) in part.planes_mut().iter_mut().zip(pcm.planes()) {
                dst.extend_from_slice(&src[pos..end]);
            }
            enc.encode(&part, &mut out).unwrap();
            pos = end;
        }
        enc.finish(&mut out).unwrap();
        assert_eq!(enc.frames_in(), pcm.frames() as u64);
        (out.to_vec(), enc.encoder_delay())
    }

    /// -6 dBFS peak: RMS of the sine.
    const AMP: f32 = 0.501_187;
    fn sine_rms() -> f64 {
        f64::from(AMP) / std::f64::consts::SQRT_2
    }

    /// Encodes 3 s of a 1 kHz sine, checks ffprobe's view, then decodes with ffmpeg and
    /// symphonia: rate, channels, length (nothing lost at the tail), tone and level.
    fn sine_round_trip(rate: u32, channels: u16, rc: RateControl, name: &str) {
        let spec = AudioSpec::new(rate, channels).unwrap();
        let pcm = sine(spec, 3.0, 1000.0, AMP);
        let n = pcm.frames();
        let (bytes, delay) = encode_all(&config(rate, channels, rc), &pcm, 4000);
        assert_eq!(delay, 1600);
        let path = temp_path(name);
        std::fs::write(&path, &bytes).unwrap();

        let probe = ffprobe(&path);
        assert_eq!(probe_value(&probe, "codec_name"), "aac");
        assert_eq!(probe_value(&probe, "profile"), "LC");
        assert_eq!(probe_value(&probe, "sample_rate"), rate.to_string());
        assert_eq!(probe_value(&probe, "channels"), channels.to_string());
        assert_eq!(probe_value(&probe, "format_name"), "aac");

        let ff = ffmpeg_decode(&path, rate, usize::from(channels));
        let sy = symphonia_decode(bytes, "aac").unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!((sy.rate, sy.channels), (rate, usize::from(channels)));
        // Decoded: priming + input + padding of less than one frame, in whole frames.
        let delay = delay as usize;
        for d in [&ff, &sy] {
            assert_eq!(d.frames() % 1024, 0);
            assert!(
                d.frames() >= n + delay,
                "tail lost: {} < {}",
                d.frames(),
                n + delay
            );
            assert!(d.frames() < n + delay + 1024, "too long: {}", d.frames());
            // The whole signal, and its last 50 ms alone (the tail the flush recovers).
            assert_sine(d, delay + 1024..delay + n - 1024, 1000.0, sine_rms());
            let tail = d.channel(0, delay + n - rate as usize / 20..delay + n - 64);
            let db = 20.0 * (rms(&tail) / sine_rms()).log10();
            assert!(db.abs() < 1.0, "tail level off by {db:.2} dB");
        }
        // The two decoders agree to within rounding.
        let diff = ff
            .samples
            .iter()
            .zip(&sy.samples)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-3, "ffmpeg and symphonia differ by {diff}");
    }

    #[test]
    fn stereo_44k_sine_keeps_tone_level_and_tail() {
        sine_round_trip(
            44_100,
            2,
            RateControl::Cbr(Bitrate::kbps(128)),
            "stereo.aac",
        );
    }

    #[test]
    fn mono_48k_sine_keeps_tone_level_and_tail() {
        sine_round_trip(48_000, 1, RateControl::Cbr(Bitrate::kbps(64)), "mono.aac");
    }

    #[test]
    fn vbr_sine_round_trip() {
        sine_round_trip(44_100, 2, RateControl::Vbr(5.0), "vbr.aac");
    }

    #[test]
    fn impulse_lands_after_the_reported_delay() {
        let spec = AudioSpec::new(44_100, 1).unwrap();
        let mut pcm = PcmBuffer::from_planes(spec, vec![vec![0.0; 22_050]]);
        pcm.planes_mut()[0][10_000] = 0.9;
        let rc = RateControl::Cbr(Bitrate::kbps(128));
        let (bytes, delay) = encode_all(&config(44_100, 1, rc), &pcm, 4096);
        let d = symphonia_decode(bytes, "aac").unwrap();
        let peak = d
            .samples
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .map(|(i, _)| i)
            .unwrap();
        assert!(
            peak.abs_diff(10_000 + delay as usize) <= 2,
            "peak at {peak}, delay {delay}"
        );
    }

    #[test]
    fn block_splits_give_identical_bytes() {
        let spec = AudioSpec::new(44_100, 2).unwrap();
        let pcm = sine(spec, 1.0, 440.0, 0.3);
        let c = config(44_100, 2, RateControl::Cbr(Bitrate::kbps(96)));
        let (whole, _) = encode_all(&c, &pcm, usize::MAX);
        for block in [1, 17, 1000, 1024, 4097] {
            let (split, _) = encode_all(&c, &pcm, block);
            assert!(split == whole, "block size {block} changed the bytes");
        }
    }

    #[test]
    fn five_point_one_keeps_channel_order() {
        // A tone in the centre channel only (WAV order: L R C LFE Ls Rs).
        let spec = AudioSpec::new(48_000, 6).unwrap();
        let tone = sine(AudioSpec::new(48_000, 1).unwrap(), 1.0, 1000.0, AMP);
        let mut planes = vec![vec![0.0; 48_000]; 6];
        planes[2] = tone.plane(0).to_vec();
        let pcm = PcmBuffer::from_planes(spec, planes);
        let rc = RateControl::Cbr(Bitrate::kbps(320));
        let (bytes, delay) = encode_all(&config(48_000, 6, rc), &pcm, 4800);
        let path = temp_path("surround.aac");
        std::fs::write(&path, &bytes).unwrap();
        let probe = ffprobe(&path);
        assert_eq!(probe_value(&probe, "channels"), "6");
        assert_eq!(probe_value(&probe, "channel_layout"), "5.1");
        let ff = ffmpeg_decode(&path, 48_000, 6);
        std::fs::remove_file(&path).ok();
        let delay = delay as usize;
        assert!(ff.frames() >= 48_000 + delay);
        let range = delay + 1024..delay + 48_000 - 1024;
        // ffmpeg's 5.1 output order is also L R C LFE Ls Rs.
        for ch in 0..6 {
            let level = rms(&ff.channel(ch, range.clone()));
            if ch == 2 {
                assert!(
                    (20.0 * (level / sine_rms()).log10()).abs() < 1.0,
                    "centre {level}"
                );
            } else {
                assert!(level < 0.01 * sine_rms(), "channel {ch} leaks: {level}");
            }
        }
        // symphonia 0.6's AAC decoder stops at stereo ("aac too complex"): not checked.
        assert!(symphonia_decode(bytes, "aac").is_err());
    }

    #[test]
    fn bad_settings_are_invalid_config() {
        let cbr = |k| RateControl::Cbr(Bitrate::kbps(k));
        let bad = [
            (44_100, 2, cbr(7)),
            (44_100, 2, cbr(999)),
            (7000, 2, cbr(128)),
            (44_100, 8, cbr(128)),
            (44_100, 3, cbr(128)),
            // FDK's own ceiling: 6144 bits per channel and frame, 96 kbit/s at 8 kHz stereo.
            (8000, 2, cbr(128)),
            (44_100, 2, RateControl::Vbr(10.5)),
            (44_100, 2, RateControl::Vbr(f32::NAN)),
        ];
        for (rate, ch, rc) in bad {
            match AacEncoder::new(&config(rate, ch, rc)) {
                Err(AudioError::InvalidConfig(msg)) => assert!(!msg.is_empty()),
                other => panic!("{rate} Hz {ch} ch {rc:?}: {other:?}"),
            }
        }
        let msg = AacEncoder::new(&config(8000, 2, cbr(128)))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("at most 96 kbit/s"), "{msg}");
        let msg = AacEncoder::new(&config(22_050, 1, cbr(320)))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("at most 132 kbit/s"), "{msg}");
        for (rate, ch, rc) in [(8000, 1, cbr(8)), (96_000, 2, cbr(320)), (8000, 2, cbr(96))] {
            let r = AacEncoder::new(&config(rate, ch, rc));
            assert!(r.is_ok(), "{rate} {ch} {rc:?}: {r:?}");
        }
    }

    #[test]
    fn state_errors_and_double_finish() {
        let spec = AudioSpec::new(SampleRate::DVD.hz(), 2).unwrap();
        let mut enc = AacEncoder::new(&config(48_000, 2, RateControl::Vbr(0.0))).unwrap();
        let mut out = BytesMut::new();
        let mono = PcmBuffer::new(AudioSpec::new(48_000, 1).unwrap());
        assert!(matches!(
            enc.encode(&mono, &mut out),
            Err(AudioError::InvalidSpec(_))
        ));
        enc.encode(&sine(spec, 0.1, 1000.0, 0.5), &mut out).unwrap();
        enc.finish(&mut out).unwrap();
        let len = out.len();
        assert!(len > 0 && out[0] == 0xFF, "ADTS sync word first");
        enc.finish(&mut out).unwrap();
        assert_eq!(out.len(), len);
        assert!(matches!(
            enc.encode(&PcmBuffer::new(spec), &mut out),
            Err(AudioError::InvalidState(_))
        ));
        // An encoder that got nothing still ends cleanly.
        let mut empty = AacEncoder::new(&config(48_000, 2, RateControl::Vbr(0.0))).unwrap();
        empty.finish(&mut out).unwrap();
    }
}
