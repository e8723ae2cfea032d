//! An M4A input (fragmented MP4, as our own encoder writes it) reports its real length, so that
//! what depends on the length (fade-out, progress, duration, bitrate) works for it.
//!
//! symphonia's MP4 reader counts only the samples of the `moov` sample tables, which are empty
//! in a fragmented file, so it reports the track as 0 frames long; the decoder must not pass
//! that on as the length.

use std::time::Duration;

use veza_audio::OutputFormat;
use veza_audio::decode::{Decoder, DecoderOptions};
use veza_audio::transcode::{TranscodeOptions, transcode_bytes};
use veza_tests::{db, decode_bytes, rms, sine, wav_bytes};

const RATE: u32 = 44_100;

fn m4a() -> Vec<u8> {
    let wav = wav_bytes(&sine(RATE, 2, 1000.0, 0.5, 3.0), 16);
    transcode_bytes(wav.into(), &TranscodeOptions::new(OutputFormat::M4a))
        .expect("M4A encode")
        .0
}

#[test]
fn decoder_reports_the_length_of_a_fragmented_m4a() {
    let bytes = m4a();
    let decoded = decode_bytes(&bytes).expect("decode").frames() as u64;
    assert!(
        decoded.abs_diff(3 * u64::from(RATE)) <= 1024,
        "{decoded} frames"
    );
    let d = Decoder::from_seekable(std::io::Cursor::new(bytes), DecoderOptions::default())
        .expect("open");
    let total = d.info().total_frames;
    // Unknown (None) is acceptable; a wrong length is not.
    assert!(
        total.is_none_or(|t| t.abs_diff(decoded) <= 1024),
        "the decoder reports {total:?} frames for an M4A that decodes to {decoded}"
    );
    if let Some(d) = d.info().duration() {
        assert!(d > Duration::from_secs(2), "duration {d:?}");
    }
}

#[test]
fn fade_out_of_an_m4a_source_keeps_the_audio_before_the_fade() {
    let mut opts = TranscodeOptions::new(OutputFormat::Wav);
    opts.processing.fade_out = Some(Duration::from_secs(1));
    let (out, _) = transcode_bytes(m4a().into(), &opts).expect("transcode");
    let d = decode_bytes(&out).expect("decode");
    // The first second is before the fade: full level (-6 dBFS peak sine, RMS 0.354).
    let first = db(rms(&d.planes[0][RATE as usize / 4..RATE as usize]) / 0.3536);
    assert!(
        first.abs() < 1.0,
        "the first second is at {first:+.1} dB: the fade-out started at the wrong place"
    );
}
