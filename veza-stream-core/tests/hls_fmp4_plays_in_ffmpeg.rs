//! fMP4 HLS output plays in a real client: real AAC-LC frames (veza-audio's FDK encoder, ADTS
//! from the live path) are segmented as fMP4; the initialisation segment, the segments and the
//! playlist are written to a temporary directory; ffprobe sees AAC-LC 44.1 kHz stereo, ffmpeg
//! reads the whole playlist without an error and decodes the full duration; the LL-HLS parts,
//! listed as segments of their own, play too (each is a self-contained fragment); now-playing
//! changes ride as ID3 `emsg` events that do not disturb ffmpeg. FLAC frames
//! (veza-audio's encoder) in fMP4 (`fLaC` + `dfLa`) decode to the exact input length.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use common::{encoded_frames, tool};
use veza_audio::OutputFormat;
use veza_stream_core::hls::{Fmp4Track, Input, Output, Segmenter, SegmenterConfig};
use veza_stream_core::metadata::NowPlaying;

/// Runs ffmpeg on `playlist` and returns the decoded samples (mono, 44.1 kHz), failing on any
/// message ffmpeg prints at the error level.
fn decoded_samples(playlist: &Path) -> u64 {
    // As a player would: read everything, decode, discard.
    let out = tool("ffmpeg")
        .args(["-allowed_extensions", "ALL", "-i"])
        .arg(playlist)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "ffmpeg -f null: {stderr}"
    );
    let out = tool("ffmpeg")
        .args(["-allowed_extensions", "ALL", "-i"])
        .arg(playlist)
        .args(["-f", "s16le", "-ac", "1", "-ar", "44100", "-"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffmpeg failed: {stderr}");
    assert!(stderr.trim().is_empty(), "ffmpeg reported errors: {stderr}");
    out.stdout.len() as u64 / 2
}

fn probe(path: &Path, entry: &str) -> String {
    let out = tool("ffprobe")
        .args(["-allowed_extensions", "ALL", "-select_streams", "a:0"])
        .args(["-show_entries", entry, "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The HLS demuxer lists the stream under its program too: the first line is enough.
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().unwrap_or_default().trim().to_string()
}

#[test]
fn hls_fmp4_plays_in_ffmpeg() {
    let frames = encoded_frames(OutputFormat::Aac, 20.0);
    let samples: u64 = frames.iter().map(|f| u64::from(f.samples)).sum();
    let track = Fmp4Track::aac_from_adts(&frames[0].data).unwrap();
    assert_eq!(track.codecs(), "mp4a.40.2");
    let t0 = Instant::now();
    let mut cfg = SegmenterConfig::fmp4(track);
    cfg.window = 100;
    let mut seg = Segmenter::new(cfg, t0);
    seg.handle_input(Input::WallClock {
        now: t0,
        unix_ms: 1_795_995_701_000,
    });
    let mut segments = Vec::new();
    let mut parts = Vec::new();
    let mut drain = |seg: &mut Segmenter| loop {
        match seg.poll_output() {
            Output::SegmentReady { msn } => segments.push(msn),
            Output::PartReady { msn, part } => parts.push((msn, part)),
            Output::Timeout(_) => break,
            other => panic!("unexpected {other:?}"),
        }
    };
    for (i, f) in frames.iter().enumerate() {
        if i == 300 || i == 600 {
            // Now-playing changes: ID3 in an emsg before the next fragment.
            seg.handle_input(Input::Metadata {
                now: t0,
                now_playing: NowPlaying {
                    title: Some(format!("Sweep {i}")),
                    artist: Some("Veza".into()),
                    url: None,
                },
            });
        }
        seg.handle_input(Input::Frame {
            now: t0,
            data: f.data.clone(),
            samples: f.samples,
            sample_rate: f.sample_rate,
        });
        drain(&mut seg);
    }
    seg.handle_input(Input::End { now: t0 });
    drain(&mut seg);
    assert!(segments.len() >= 5, "{segments:?}");
    // Two emsg events: ID3 with the title, at the media time the metadata came.
    let events: Vec<Vec<u8>> = segments
        .iter()
        .flat_map(|msn| common::mp4::fragments(&seg.segment(*msn).unwrap()))
        .flat_map(|f| f.events)
        .collect();
    assert_eq!(events.len(), 2);
    for (event, at) in events.iter().zip([300u64, 600]) {
        assert_eq!(&event[..4], &[1, 0, 0, 0], "version 1");
        assert_eq!(u32::from_be_bytes(event[4..8].try_into().unwrap()), 44_100);
        assert_eq!(
            u64::from_be_bytes(event[8..16].try_into().unwrap()),
            at * 1024
        );
        let rest = &event[24..];
        let scheme_end = rest.iter().position(|&b| b == 0).unwrap();
        assert_eq!(&rest[..scheme_end], b"https://aomedia.org/emsg/ID3");
        let data = &rest[scheme_end + 2..];
        assert_eq!(&data[..3], b"ID3");
        let title = format!("Sweep {at}");
        assert!(data.windows(title.len()).any(|w| w == title.as_bytes()));
    }

    let dir = std::env::temp_dir().join(format!("veza-hls-fmp4-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(seg.init_uri().unwrap()),
        seg.init_segment().unwrap(),
    )
    .unwrap();
    for msn in &segments {
        std::fs::write(dir.join(seg.segment_uri(*msn)), seg.segment(*msn).unwrap()).unwrap();
    }
    let playlist = seg.media_playlist();
    assert!(playlist.contains("#EXT-X-MAP:URI=\"seginit.mp4\"\n"));
    assert!(playlist.contains("#EXT-X-PROGRAM-DATE-TIME:2026-11-29T23:41:41.000Z\n"));
    assert!(playlist.ends_with("#EXT-X-ENDLIST\n"));
    std::fs::write(dir.join("index.m3u8"), &playlist).unwrap();

    assert_eq!(
        probe(
            &dir.join("index.m3u8"),
            "stream=codec_name,profile,sample_rate,channels"
        ),
        "aac,LC,44100,2"
    );
    let decoded = decoded_samples(&dir.join("index.m3u8"));
    eprintln!("AAC fMP4: sent {samples} samples, ffmpeg decoded {decoded}");
    // Every access unit is decoded (no edit list: the encoder's priming stays in, as in the
    // packed-audio output).
    assert!(
        decoded.abs_diff(samples) <= 1024,
        "sent {samples} samples, ffmpeg decoded {decoded}"
    );

    // The parts as a playlist of their own: each is a fragment that plays after the map.
    let mut pl = String::from(
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI=\"seginit.mp4\"\n",
    );
    let mut part_samples = 0u64;
    for (i, (msn, part)) in parts.iter().enumerate() {
        let data = seg.part(*msn, *part).unwrap();
        let frags = common::mp4::fragments(&data);
        let n: u64 = frags
            .iter()
            .flat_map(|f| f.durations.iter())
            .map(|&d| u64::from(d))
            .sum();
        part_samples += n;
        let name = format!("part{i}.m4s");
        std::fs::write(dir.join(&name), &data).unwrap();
        pl.push_str(&format!("#EXTINF:{:.5},\n{name}\n", n as f64 / 44_100.0));
    }
    pl.push_str("#EXT-X-ENDLIST\n");
    assert_eq!(part_samples, samples);
    std::fs::write(dir.join("parts.m3u8"), pl).unwrap();
    let decoded = decoded_samples(&dir.join("parts.m3u8"));
    assert!(
        decoded.abs_diff(samples) <= 1024,
        "parts: sent {samples} samples, ffmpeg decoded {decoded}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// CRC-8 (polynomial 0x07) of a FLAC frame header.
fn crc8(bytes: &[u8]) -> u8 {
    let mut crc = 0u8;
    for &b in bytes {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The block size of the FLAC frame header at the start of `b` if it is a valid fixed-blocksize
/// header (sync, reserved bits, CRC-8) numbered `number`.
fn flac_header(b: &[u8], number: u64) -> Option<u32> {
    if b.len() < 16 || b[0] != 0xFF || b[1] != 0xF8 || b[3] & 1 != 0 {
        return None;
    }
    // UTF-8-like coded frame number.
    let lead = b[4].leading_ones() as usize;
    let n_bytes = match lead {
        0 => 1,
        2..=6 => lead,
        _ => return None,
    };
    let mut value = u64::from(b[4] & (0x7F >> lead));
    for &c in &b[5..4 + n_bytes] {
        if c & 0xC0 != 0x80 {
            return None;
        }
        value = (value << 6) | u64::from(c & 0x3F);
    }
    if value != number {
        return None;
    }
    let mut at = 4 + n_bytes;
    let block = match b[2] >> 4 {
        1 => 192,
        n @ 2..=5 => 576 << (n - 2),
        6 => {
            at += 1;
            u32::from(b[at - 1]) + 1
        }
        7 => {
            at += 2;
            u32::from(u16::from_be_bytes([b[at - 2], b[at - 1]])) + 1
        }
        n @ 8..=15 => 256 << (n - 8),
        _ => return None,
    };
    match b[2] & 0x0F {
        12 => at += 1,
        13 | 14 => at += 2,
        15 => return None,
        _ => {}
    }
    (crc8(&b[..at]) == b[at]).then_some(block)
}

/// A FLAC stream cut into its header (`fLaC` and the metadata blocks) and its frames with
/// their sample counts.
fn flac_frames(stream: &[u8]) -> (Vec<u8>, Vec<(Bytes, u32)>) {
    assert_eq!(&stream[..4], b"fLaC");
    let mut pos = 4;
    loop {
        let len = (usize::from(stream[pos + 1]) << 16)
            | (usize::from(stream[pos + 2]) << 8)
            | usize::from(stream[pos + 3]);
        let last = stream[pos] & 0x80 != 0;
        pos += 4 + len;
        if last {
            break;
        }
    }
    let header = stream[..pos].to_vec();
    let mut frames = Vec::new();
    let mut number = 0;
    while pos < stream.len() {
        let block = flac_header(&stream[pos..], number).expect("a frame header");
        let end = (pos + 2..stream.len())
            .find(|&p| flac_header(&stream[p..], number + 1).is_some())
            .unwrap_or(stream.len());
        frames.push((Bytes::copy_from_slice(&stream[pos..end]), block));
        pos = end;
        number += 1;
    }
    (header, frames)
}

#[test]
fn hls_fmp4_flac_plays_in_ffmpeg() {
    use veza_audio::{AudioSpec, EncoderConfig, PcmBuffer};
    let spec = AudioSpec::new(44_100, 2).unwrap();
    let n = 441_000usize; // 10 s
    let samples: Vec<f32> = (0..n)
        .flat_map(|i| {
            let v = (i as f32 * 440.0 * std::f32::consts::TAU / 44_100.0).sin() * 0.3;
            [v, -v]
        })
        .collect();
    let mut enc = veza_audio::new_encoder(&EncoderConfig::new(OutputFormat::Flac, spec)).unwrap();
    let mut out = bytes::BytesMut::new();
    enc.encode(&PcmBuffer::from_interleaved(spec, &samples), &mut out)
        .unwrap();
    enc.finish(&mut out).unwrap();
    let (header, frames) = flac_frames(&out);
    assert_eq!(
        frames.iter().map(|f| u64::from(f.1)).sum::<u64>(),
        n as u64,
        "the frames cover the input"
    );
    let track = Fmp4Track::flac(&header).unwrap();
    assert_eq!(
        (track.sample_rate, track.channels, track.codecs()),
        (44_100, 2, "fLaC".into())
    );
    let t0 = Instant::now();
    let mut cfg = SegmenterConfig::fmp4(track);
    cfg.window = 100;
    cfg.uri_prefix = "flac".into();
    let mut seg = Segmenter::new(cfg, t0);
    for (data, block) in &frames {
        seg.handle_input(Input::Frame {
            now: t0,
            data: data.clone(),
            samples: *block,
            sample_rate: 44_100,
        });
        while !matches!(seg.poll_output(), Output::Timeout(_)) {}
    }
    seg.handle_input(Input::End { now: t0 });
    while !matches!(seg.poll_output(), Output::Timeout(_)) {}
    let dir = std::env::temp_dir().join(format!("veza-hls-fmp4-flac-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(seg.init_uri().unwrap()),
        seg.init_segment().unwrap(),
    )
    .unwrap();
    for msn in 0..seg.next_msn() {
        std::fs::write(dir.join(seg.segment_uri(msn)), seg.segment(msn).unwrap()).unwrap();
    }
    std::fs::write(dir.join("index.m3u8"), seg.media_playlist()).unwrap();
    assert_eq!(
        probe(
            &dir.join("index.m3u8"),
            "stream=codec_name,sample_rate,channels"
        ),
        "flac,44100,2"
    );
    // Lossless and without priming: exactly the input's length.
    assert_eq!(decoded_samples(&dir.join("index.m3u8")), n as u64);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The packets of an Ogg stream (one logical stream), in order.
fn ogg_packets(mut b: &[u8]) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    let mut current = Vec::new();
    while b.len() >= 27 {
        assert_eq!(&b[..4], b"OggS");
        let n = usize::from(b[26]);
        let table = &b[27..27 + n];
        let mut body = &b[27 + n..];
        let page_len = 27 + n + table.iter().map(|&l| usize::from(l)).sum::<usize>();
        for &lace in table {
            current.extend_from_slice(&body[..usize::from(lace)]);
            body = &body[usize::from(lace)..];
            if lace < 255 {
                packets.push(std::mem::take(&mut current));
            }
        }
        b = &b[page_len..];
    }
    packets
}

/// Samples (at 48 kHz) in an Opus packet, from its TOC byte (RFC 6716 section 3.1).
fn opus_samples(packet: &[u8]) -> u32 {
    let config = packet[0] >> 3;
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match packet[0] & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(packet[1] & 0x3F),
    };
    frame * frames
}

#[test]
fn hls_fmp4_opus_plays_in_ffmpeg() {
    let dir = std::env::temp_dir().join(format!("veza-hls-fmp4-opus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // 8 s of a tone encoded by ffmpeg's libopus (veza-audio has no Opus encoder).
    let ogg = dir.join("tone.opus");
    let out = tool("ffmpeg")
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000:duration=8",
        ])
        .args(["-ac", "2", "-c:a", "libopus", "-b:a", "96k", "-y"])
        .arg(&ogg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let packets = ogg_packets(&std::fs::read(&ogg).unwrap());
    let track = Fmp4Track::opus_from_head(&packets[0]).unwrap();
    assert_eq!((track.channels, track.codecs()), (2, "Opus".into()));
    assert_eq!(&packets[1][..8], b"OpusTags");
    let t0 = Instant::now();
    let mut cfg = SegmenterConfig::fmp4(track);
    cfg.window = 100;
    let mut seg = Segmenter::new(cfg, t0);
    let mut sent = 0u64;
    for p in &packets[2..] {
        let n = opus_samples(p);
        sent += u64::from(n);
        seg.handle_input(Input::Frame {
            now: t0,
            data: Bytes::copy_from_slice(p),
            samples: n,
            sample_rate: 48_000,
        });
        while !matches!(seg.poll_output(), Output::Timeout(_)) {}
    }
    seg.handle_input(Input::End { now: t0 });
    while !matches!(seg.poll_output(), Output::Timeout(_)) {}
    std::fs::write(
        dir.join(seg.init_uri().unwrap()),
        seg.init_segment().unwrap(),
    )
    .unwrap();
    for msn in 0..seg.next_msn() {
        std::fs::write(dir.join(seg.segment_uri(msn)), seg.segment(msn).unwrap()).unwrap();
    }
    std::fs::write(dir.join("index.m3u8"), seg.media_playlist()).unwrap();
    assert_eq!(
        probe(
            &dir.join("index.m3u8"),
            "stream=codec_name,sample_rate,channels"
        ),
        "opus,48000,2"
    );
    // Decoded at 44.1 kHz by `decoded_samples`: 8 s of tone plus at most the last packet's
    // padding, less the pre-skip when ffmpeg applies it.
    let decoded = decoded_samples(&dir.join("index.m3u8"));
    eprintln!("Opus fMP4: sent {sent} samples at 48 kHz, ffmpeg decoded {decoded} at 44.1 kHz");
    let sent_44k = sent * 44_100 / 48_000;
    assert!(
        decoded.abs_diff(sent_44k) <= 1_000 && decoded.abs_diff(8 * 44_100) <= 1_000,
        "sent {sent} samples at 48 kHz, ffmpeg decoded {decoded} at 44.1 kHz"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
