//! HLS VOD made on demand: the playlists are planned from the file's metadata and served before
//! the rendition is encoded; every segment, fetched and concatenated, decodes (ffmpeg) to the
//! source's length within one codec frame per segment; a segment has the same bytes whenever it
//! is fetched, also after the rendition is dropped from memory and encoded again; and ffmpeg
//! plays the playlists over a real port without errors.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;
use veza_stream_server::vod::rung_index;
use veza_stream_server::{AppState, Config, app, build_state, start};
use veza_tests::{ffmpeg_decode_frames, require_tool};

const SOURCE_SECS: u32 = 150;

/// A music-like 44.1 kHz stereo FLAC (tones with tremolo over pink noise) made by ffmpeg.
fn make_source(dir: &std::path::Path) -> std::path::PathBuf {
    require_tool("ffmpeg");
    let path = dir.join("source.flac");
    let d = SOURCE_SECS;
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-y", "-v", "error", "-f", "lavfi", "-i"])
        .arg(format!(
            "aevalsrc=exprs='0.3*sin(2*PI*220*t)*(0.6+0.4*sin(2*PI*0.5*t))+0.1*sin(2*PI*331*t)|0.3*sin(2*PI*277*t)+0.1*sin(2*PI*415*t)':s=44100:d={d}"
        ))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("anoisesrc=d={d}:c=pink:a=0.05:r=44100:seed=3"))
        .args([
            "-filter_complex",
            "[1]aformat=channel_layouts=stereo[n];[0][n]amix=inputs=2:normalize=0",
            "-ar",
            "44100",
            "-ac",
            "2",
            "-c:a",
            "flac",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg could not make the source: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

async fn get(state: &AppState, uri: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let resp = app(state.clone())
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

fn uris(playlist: &[u8]) -> Vec<String> {
    String::from_utf8(playlist.to_vec())
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

async fn fetch_all(state: &AppState, hls: &str, rendition: &str) -> Vec<Vec<u8>> {
    let (s, _, playlist) = get(state, &format!("{hls}/{rendition}/index.m3u8")).await;
    assert_eq!(s, StatusCode::OK);
    let mut segs = Vec::new();
    for u in uris(&playlist) {
        let (s, h, b) = get(state, &format!("{hls}/{rendition}/{u}")).await;
        assert_eq!(s, StatusCode::OK, "{rendition}/{u}");
        let ct = h[header::CONTENT_TYPE].to_str().unwrap().to_owned();
        assert!(ct == "audio/aac" || ct == "audio/mpeg", "{ct}");
        segs.push(b);
    }
    segs
}

/// A segment without its leading ID3v2 tag (checked to be there).
fn without_id3(seg: &[u8]) -> &[u8] {
    assert_eq!(
        &seg[..3],
        b"ID3",
        "a segment starts with its ID3 timestamp tag"
    );
    let size = seg[6..10]
        .iter()
        .fold(0usize, |a, &b| (a << 7) | usize::from(b & 0x7F));
    &seg[10 + size..]
}

/// A token of the creator who uploads.
fn creator(state: &veza_stream_server::AppState) -> String {
    state
        .auth()
        .keys()
        .sign(
            "alice",
            veza_stream_server::auth::Role::Creator,
            std::time::Duration::from_secs(3600),
        )
        .unwrap()
}

#[tokio::test]
async fn hls_vod_is_made_on_demand_and_stable() {
    require_tool("ffmpeg");
    let dir = tempfile::tempdir().unwrap();
    let source = make_source(dir.path());
    let state = build_state(Config {
        max_upload_bytes: 100_000_000,
        ..Config::for_tests(dir.path())
    })
    .await
    .unwrap();
    let resp = app(state.clone())
        .oneshot(
            Request::post("/api/v1/audio?name=source.flac")
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header(header::AUTHORIZATION, format!("Bearer {}", creator(&state)))
                .body(Body::from(std::fs::read(&source).unwrap()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let v: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let id = v["data"]["id"].as_str().unwrap().to_owned();
    let hls = format!("/api/v1/audio/{id}/hls");

    // The playlist is there while the rendition's encode has only started (it takes seconds for
    // this source; the playlist needs none of it).
    let rung = rung_index("aac-128").unwrap();
    let (s, h, playlist) = get(&state, &format!("{hls}/aac-128/index.m3u8")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "application/vnd.apple.mpegurl");
    let r = state.vod().cached(&id, rung).unwrap();
    assert!(!r.is_complete(), "the playlist waited for the whole encode");
    let text = String::from_utf8(playlist.clone()).unwrap();
    assert!(text.contains("#EXT-X-ENDLIST"), "{text}");
    let planned: f64 = text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|l| l.trim_end_matches(',').parse::<f64>().unwrap())
        .sum();
    assert!(
        (planned - f64::from(SOURCE_SECS)).abs() < 0.2,
        "playlist total {planned} s"
    );

    let rate = 44_100usize;
    let src_frames = SOURCE_SECS as usize * rate;
    let mut first_pass = Vec::new();
    for (rendition, frame_len) in [("aac-128", 1024usize), ("mp3-128", 1152), ("aac-64", 1024)] {
        let segs = fetch_all(&state, &hls, rendition).await;
        // Fetched again: the same bytes.
        for (i, seg) in segs.iter().enumerate().step_by(7) {
            let (_, _, again) = get(
                &state,
                &format!("{hls}/{rendition}/seg{i}.{}", &rendition[..3]),
            )
            .await;
            assert!(
                again == *seg,
                "{rendition} segment {i} changed between two fetches"
            );
        }
        // Concatenated, the segments decode to the source's length within a frame per segment.
        let ext = if rendition.starts_with("mp3") {
            "mp3"
        } else {
            "aac"
        };
        let all = dir.path().join(format!("{rendition}.{ext}"));
        // Each segment starts with its ID3 timestamp tag, which HLS players take off; a plain
        // MP3 demuxer would stop at the second one, so the audio is joined without them.
        let audio: Vec<u8> = segs
            .iter()
            .flat_map(|s| without_id3(s).iter().copied())
            .collect();
        std::fs::write(&all, audio).unwrap();
        let (decoded, errors) = ffmpeg_decode_frames(&all);
        assert!(errors.trim().is_empty(), "{rendition}: ffmpeg: {errors}");
        let tolerance = segs.len() * frame_len;
        assert!(
            decoded.abs_diff(src_frames) <= tolerance,
            "{rendition}: {decoded} frames decoded, source {src_frames}, tolerance {tolerance} ({} segments)",
            segs.len()
        );
        first_pass.push(segs);
    }

    // Dropped from memory and made again: the same bytes (the encoders are deterministic).
    state.vod().forget(&id);
    assert!(state.vod().cached(&id, rung).is_none());
    let again = fetch_all(&state, &hls, "aac-128").await;
    assert!(
        again == first_pass[0],
        "aac-128 changed after being made again"
    );
    let again = fetch_all(&state, &hls, "mp3-128").await;
    assert!(
        again == first_pass[1],
        "mp3-128 changed after being made again"
    );

    // Unknown segments and renditions.
    for bad in [
        "aac-128/seg99999.aac",
        "aac-128/seg0.mp3",
        "flac-1/seg0.aac",
        "aac-128/x.aac",
    ] {
        let (s, _, _) = get(&state, &format!("{hls}/{bad}")).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{bad}");
    }

    // ffmpeg plays the master playlist and a rendition over a real port, without errors.
    let running = start(state.clone()).await.unwrap();
    for path in ["master.m3u8", "aac-64/index.m3u8", "mp3-128/index.m3u8"] {
        let url = format!("http://{}{hls}/{path}", running.addr);
        let out = tokio::process::Command::new("ffmpeg")
            .args([
                "-nostdin", "-v", "error", "-i", &url, "-map", "0:a:0", "-f", "s16le", "-ac", "1",
                "-",
            ])
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{path}: {stderr}");
        // ffmpeg warns about one repeated timestamp at packed-MP3 segment joins (see the core's
        // HLS test); anything else is an error.
        assert!(
            stderr
                .lines()
                .all(|l| l.contains("non monotonically increasing dts")),
            "{path}: {stderr}"
        );
        let frames = out.stdout.len() / 2;
        assert!(
            frames.abs_diff(src_frames) < rate / 5,
            "{path}: {frames} frames played, source {src_frames}"
        );
    }
    running.stop().await.unwrap();

    // Deleting the file drops its renditions.
    let resp = app(state.clone())
        .oneshot(
            Request::delete(format!("/api/v1/audio/{id}"))
                .header(header::AUTHORIZATION, format!("Bearer {}", creator(&state)))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (s, _, _) = get(&state, &format!("{hls}/aac-128/seg0.aac")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    state.store().close().await;
}
