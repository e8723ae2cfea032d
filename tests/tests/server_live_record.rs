//! Live recording end to end, with real clients: ffmpeg sends a stream through the Icecast
//! source protocol; when the stream ends its recording is an audio file of the API that lasts
//! as long as what was sent. And after the server is killed (`kill -9`) during a recording, the
//! next start restores the recording (missing at most the last second), once.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use veza_stream_server::auth::Role;
use veza_stream_server::{AppState, Config, app, build_state, start};

/// A child process killed (SIGKILL) and reaped when dropped, so a failed test leaves nothing
/// running.
struct Proc(Child);

impl Proc {
    fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An MP3 file of `secs` seconds of a 440 Hz tone, 128 kbit/s, 44.1 kHz.
fn tone(dir: &Path, secs: u32) -> PathBuf {
    tone_as(dir, secs, Fmt::MP3)
}

/// A source format: file extension, encoder, ffmpeg muxer, Content-Type, codec name of the
/// recording.
#[derive(Clone, Copy)]
struct Fmt {
    ext: &'static str,
    encoder: &'static str,
    muxer: &'static str,
    content_type: &'static str,
    codec: &'static str,
}

impl Fmt {
    const MP3: Fmt = Fmt {
        ext: "mp3",
        encoder: "libmp3lame",
        muxer: "mp3",
        content_type: "audio/mpeg",
        codec: "mp3",
    };
    const AAC: Fmt = Fmt {
        ext: "aac",
        encoder: "aac",
        muxer: "adts",
        content_type: "audio/aac",
        codec: "aac",
    };
    const OGG: Fmt = Fmt {
        ext: "ogg",
        encoder: "libvorbis",
        muxer: "ogg",
        content_type: "audio/ogg",
        codec: "vorbis",
    };
}

/// A file of `secs` seconds of a 440 Hz tone in `fmt`, 128 kbit/s, 44.1 kHz.
fn tone_as(dir: &Path, secs: u32, fmt: Fmt) -> PathBuf {
    veza_tests::require_tool("ffmpeg");
    veza_tests::require_tool("ffprobe");
    let out = dir.join(format!("tone-{secs}.{}", fmt.ext));
    let st = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!(
            "sine=frequency=440:sample_rate=44100:duration={secs}"
        ))
        .args(["-c:a", fmt.encoder, "-b:a", "128k", "-f", fmt.muxer])
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    out
}

/// The duration of a file or URL as ffmpeg decodes it, seconds (exact for ADTS too, whose
/// header-based estimate is not).
fn decoded_duration(input: &str) -> f64 {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostats", "-i", input, "-f", "null", "-"])
        .args(["-progress", "pipe:1"])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    let us = s
        .lines()
        .filter_map(|l| l.strip_prefix("out_time_us="))
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .max()
        .unwrap_or_else(|| panic!("ffmpeg {input}: {}", String::from_utf8_lossy(&out.stderr)));
    us as f64 / 1e6
}

/// The duration ffprobe gives a file or URL, seconds.
fn ffprobe_duration(input: &str) -> f64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "default=nw=1:nk=1",
            input,
        ])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    s.trim().parse().unwrap_or_else(|_| {
        panic!(
            "ffprobe {input}: {s} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `ffmpeg -re -i FILE -c copy -f mp3 icecast://source:KEY@ADDR/live/ID`, reporting its
/// progress (`out_time_us`) on stdout.
fn source(file: &Path, addr: SocketAddr, key: &str, id: &str) -> (Proc, Arc<AtomicU64>) {
    source_as(file, addr, key, id, Fmt::MP3)
}

/// As [`source`], in `fmt`.
fn source_as(
    file: &Path,
    addr: SocketAddr,
    key: &str,
    id: &str,
    fmt: Fmt,
) -> (Proc, Arc<AtomicU64>) {
    let mut child = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostats",
            "-re",
            "-i",
        ])
        .arg(file)
        .args([
            "-c",
            "copy",
            "-content_type",
            fmt.content_type,
            "-f",
            fmt.muxer,
        ])
        .args(["-progress", "pipe:1", "-stats_period", "0.1"])
        .arg(format!("icecast://source:{key}@{addr}/live/{id}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let stdout = child.stdout.take().unwrap();
    let s = sent.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(v) = line.strip_prefix("out_time_us=") {
                if let Ok(us) = v.trim().parse::<u64>() {
                    s.fetch_max(us, Ordering::Relaxed);
                }
            }
        }
    });
    (Proc(child), sent)
}

// ---------------------------------------------------------------------------------------------
// In process: a recording that ends normally.

fn token(state: &AppState, sub: &str, role: Role) -> String {
    state
        .auth()
        .keys()
        .sign(sub, role, Duration::from_secs(3600))
        .unwrap()
}

async fn call(
    state: &AppState,
    method: &str,
    uri: &str,
    tok: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = tok {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some(v) => b
            .header("content-type", "application/json")
            .body(Body::from(v.to_string()))
            .unwrap(),
        None => b.body(Body::empty()).unwrap(),
    };
    let resp = app(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_session_becomes_an_audio_file_as_long_as_what_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::for_tests(dir.path());
    cfg.live.grace_period = Duration::from_secs(1);
    let state = build_state(cfg).await.unwrap();
    let mut events = state.events().subscribe();
    let running = start(state.clone()).await.unwrap();
    let alice = token(&state, "alice", Role::Creator);
    let bob = token(&state, "bob", Role::Creator);

    let (st, v) = call(
        &state,
        "POST",
        "/api/v1/streams",
        Some(&alice),
        Some(json!({"title": "Morning show", "record": true})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["data"]["record"], json!(true));
    let id = v["data"]["id"].as_str().unwrap().to_owned();
    let key = v["data"]["ingest_key"].as_str().unwrap().to_owned();
    // PATCH can switch it off and back, or back to the server default (null).
    let uri = format!("/api/v1/streams/{id}");
    let (_, v) = call(
        &state,
        "PATCH",
        &uri,
        Some(&alice),
        Some(json!({"record": null})),
    )
    .await;
    assert_eq!(v["data"]["record"], Value::Null, "{v}");
    let (_, v) = call(
        &state,
        "PATCH",
        &uri,
        Some(&alice),
        Some(json!({"record": true})),
    )
    .await;
    assert_eq!(v["data"]["record"], json!(true), "{v}");

    let file = tone(dir.path(), 6);
    let sent = ffprobe_duration(file.to_str().unwrap());
    let (mut ffmpeg, _) = source(&file, running.addr, &key, &id);
    let t0 = Instant::now();
    loop {
        if let Some(st) = ffmpeg.0.try_wait().unwrap() {
            assert!(st.success(), "the source failed: {st}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the source did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // After the grace period the stream ends and the recording is saved.
    let rec_uri = format!("/api/v1/streams/{id}/recordings");
    let t0 = Instant::now();
    let rec = loop {
        let (st, v) = call(&state, "GET", &rec_uri, Some(&alice), None).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let items = v["data"].as_array().unwrap().clone();
        assert!(items.len() <= 1, "{v}");
        if let Some(r) = items.first().filter(|r| r["state"] != "recording") {
            break r.clone();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no finished recording: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(rec["state"], "finished", "{rec}");
    assert_eq!(rec["stream_id"], json!(id));
    assert!(rec["ended_at"].is_string(), "{rec}");
    let audio_id = rec["audio_id"].as_str().unwrap().to_owned();

    // Only the owner (or an admin) lists the recordings.
    let (st, _) = call(&state, "GET", &rec_uri, Some(&bob), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // It is an audio file like an upload: metadata, and the stream endpoint ffprobe reads.
    let (st, a) = call(
        &state,
        "GET",
        &format!("/api/v1/audio/{audio_id}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{a}");
    let a = &a["data"];
    assert_eq!(a["owner"], "alice");
    assert_eq!(a["is_private"], false);
    assert_eq!(a["codec"], "mp3", "{a}");
    assert!(
        a["title"]
            .as_str()
            .unwrap()
            .starts_with("Morning show (recording "),
        "{a}"
    );
    let meta = a["duration_ms"].as_i64().unwrap() as f64 / 1000.0;
    eprintln!("sent {sent:.3} s, recorded {meta:.3} s");
    assert!(
        (meta - sent).abs() <= 0.5,
        "recorded {meta} s, sent {sent} s"
    );
    let url = format!("http://{}/api/v1/audio/{audio_id}/stream", running.addr);
    let probed = tokio::task::spawn_blocking(move || ffprobe_duration(&url))
        .await
        .unwrap();
    assert!(
        (probed - sent).abs() <= 0.5,
        "ffprobe reads {probed} s, sent {sent} s"
    );

    // The event, and nothing left in the recordings directory.
    let mut seen = false;
    while let Ok(e) = events.try_recv() {
        if e.subject == "veza.recording.finished" {
            assert_eq!(e.data["audio_id"], json!(audio_id));
            assert_eq!(e.data["stream_id"], json!(id));
            seen = true;
        }
    }
    assert!(seen, "no veza.recording.finished event");
    let left: Vec<_> = std::fs::read_dir(&state.config().live.recordings_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    running.stop().await.unwrap();
}

/// AAC (ADTS) and Ogg Vorbis sources are recorded in their own codec, frames as received (Ogg
/// with its stream headers first), and last as long as what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aac_and_ogg_sessions_are_recorded_in_their_codec() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::for_tests(dir.path());
    cfg.live.grace_period = Duration::from_secs(1);
    cfg.live.record_default = true;
    let state = build_state(cfg).await.unwrap();
    let running = start(state.clone()).await.unwrap();
    let alice = token(&state, "alice", Role::Creator);
    let mut runs = Vec::new();
    for fmt in [Fmt::AAC, Fmt::OGG] {
        let (st, v) = call(
            &state,
            "POST",
            "/api/v1/streams",
            Some(&alice),
            Some(json!({"title": format!("Show in {}", fmt.ext)})),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        let id = v["data"]["id"].as_str().unwrap().to_owned();
        let key = v["data"]["ingest_key"].as_str().unwrap().to_owned();
        let file = tone_as(dir.path(), 6, fmt);
        let sent = decoded_duration(file.to_str().unwrap());
        let (proc, _) = source_as(&file, running.addr, &key, &id, fmt);
        runs.push((fmt, id, sent, proc));
    }
    for (fmt, id, sent, proc) in &mut runs {
        let t0 = Instant::now();
        loop {
            if let Some(st) = proc.0.try_wait().unwrap() {
                assert!(st.success(), "the {} source failed: {st}", fmt.ext);
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the source did not finish"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let t0 = Instant::now();
        let rec = loop {
            let list = state.store().list_recordings(id, 10).await.unwrap();
            if let Some(r) = list.first().filter(|r| r.state != "recording") {
                break r.clone();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "no finished recording"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(rec.state, "finished");
        let audio_id = rec.audio_id.unwrap();
        let (st, a) = call(
            &state,
            "GET",
            &format!("/api/v1/audio/{audio_id}"),
            Some(&alice),
            None,
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{a}");
        assert_eq!(a["data"]["codec"], fmt.codec, "{a}");
        let url = format!("http://{}/api/v1/audio/{audio_id}/stream", running.addr);
        let got = tokio::task::spawn_blocking(move || decoded_duration(&url))
            .await
            .unwrap();
        let meta = a["data"]["duration_ms"].as_i64().unwrap() as f64 / 1000.0;
        eprintln!(
            "{}: sent {sent:.3} s, recorded {got:.3} s (probe {meta:.3} s)",
            fmt.ext
        );
        assert!(
            (got - *sent).abs() <= 0.5,
            "{}: recorded {got} s, sent {sent} s",
            fmt.ext
        );
        assert!(
            (meta - *sent).abs() <= 0.5,
            "{}: probe says {meta} s, sent {sent} s",
            fmt.ext
        );
    }
    running.stop().await.unwrap();
}

/// A source that drops and returns within the grace period continues the same recording.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_returns_within_the_grace_period_continues_the_recording() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::for_tests(dir.path());
    cfg.live.grace_period = Duration::from_secs(3);
    cfg.live.record_default = true;
    let state = build_state(cfg).await.unwrap();
    let running = start(state.clone()).await.unwrap();
    let alice = token(&state, "alice", Role::Creator);
    let (st, v) = call(
        &state,
        "POST",
        "/api/v1/streams",
        Some(&alice),
        Some(json!({"title": "Two parts"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = v["data"]["id"].as_str().unwrap().to_owned();
    let key = v["data"]["ingest_key"].as_str().unwrap().to_owned();
    let file = tone(dir.path(), 3);
    let part = decoded_duration(file.to_str().unwrap());
    for _ in 0..2 {
        let (mut proc, _) = source(&file, running.addr, &key, &id);
        let t0 = Instant::now();
        loop {
            if let Some(st) = proc.0.try_wait().unwrap() {
                assert!(st.success(), "the source failed: {st}");
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the source did not finish"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let t0 = Instant::now();
    let list = loop {
        let list = state.store().list_recordings(&id, 10).await.unwrap();
        if list.first().is_some_and(|r| r.state != "recording") {
            break list;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no finished recording"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(list.len(), 1, "one recording: {list:?}");
    let audio = state
        .store()
        .get_audio(list[0].audio_id.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    let got = decoded_duration(&audio.path);
    eprintln!("sent 2 x {part:.3} s, recorded {got:.3} s");
    assert!(
        (got - 2.0 * part).abs() <= 0.5,
        "recorded {got} s of 2 x {part} s"
    );
    running.stop().await.unwrap();
}

/// A recorder that falls more than the taps' capacity behind takes the chunks it missed from the
/// ring: nothing is lost. The source here sends 28 s of audio at once while the runtime's only
/// thread is busy, so the recorder cannot keep up.
#[tokio::test(flavor = "current_thread")]
async fn a_recorder_that_lags_resyncs_from_the_ring() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::for_tests(dir.path());
    cfg.live.record_default = true;
    let state = build_state(cfg).await.unwrap();
    let alice = token(&state, "alice", Role::Creator);
    let (st, v) = call(
        &state,
        "POST",
        "/api/v1/streams",
        Some(&alice),
        Some(json!({"title": "Burst"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = v["data"]["id"].as_str().unwrap().to_owned();
    let rec = state.store().get_stream(&id).await.unwrap().unwrap();

    // One file (its LAME tag counts the frames of all of it), sent as about 1 s then 28 s.
    let all = std::fs::read(tone(dir.path(), 29)).unwrap();
    let (first, rest) = all.split_at(all.len() / 29);
    let source = state
        .live()
        .connect_source(
            &state,
            &rec,
            veza_stream_core::frame::FrameFormat::Mpeg,
            veza_stream_server::live::SourceInfo::default(),
        )
        .unwrap();
    for c in first.chunks(4096) {
        source.push(axum::body::Bytes::copy_from_slice(c)).unwrap();
    }
    // The recorder starts and takes the first second.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // 280 chunks with no chance to run: more than the 256 the taps keep.
    for c in rest.chunks(4096) {
        source.push(axum::body::Bytes::copy_from_slice(c)).unwrap();
    }
    source.end();

    let t0 = Instant::now();
    let rec = loop {
        let list = state.store().list_recordings(&id, 10).await.unwrap();
        if let Some(r) = list.first().filter(|r| r.state != "recording") {
            break r.clone();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no finished recording"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(rec.state, "finished");
    let audio = state
        .store()
        .get_audio(rec.audio_id.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    let got = audio.duration_ms.unwrap() as f64 / 1000.0;
    eprintln!("sent 29 s in a burst, recorded {got:.3} s");
    assert!((got - 29.0).abs() <= 0.2, "recorded {got} s of 29 s");
    let metrics = state.metrics().render();
    let lags = metrics
        .lines()
        .find(|l| l.starts_with("veza_live_recording_lags_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(lags >= 1.0, "the lag is counted:\n{metrics}");
}

/// The `record` setting and the recordings table on PostgreSQL (`$VEZA_TEST_POSTGRES_URL` or the
/// development machine's server; a schema of its own per run).
#[tokio::test]
async fn recordings_are_stored_on_postgres_too() {
    let base = std::env::var("VEZA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!(
        "rec{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let pool = sqlx::PgPool::connect(&base).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is needed at {base} ({e}). Start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start")
    });
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&pool)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::for_tests(dir.path());
    cfg.database_url = format!("{base}?options=-c%20search_path%3D{schema}");
    let state = build_state(cfg).await.unwrap();
    let alice = token(&state, "alice", Role::Creator);
    let (st, v) = call(
        &state,
        "POST",
        "/api/v1/streams",
        Some(&alice),
        Some(json!({"title": "On PG", "record": false})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["data"]["record"], json!(false));
    let id = v["data"]["id"].as_str().unwrap().to_owned();
    let (_, v) = call(
        &state,
        "PATCH",
        &format!("/api/v1/streams/{id}"),
        Some(&alice),
        Some(json!({"record": null})),
    )
    .await;
    assert_eq!(v["data"]["record"], Value::Null, "{v}");
    let store = state.store();
    store
        .insert_recording(&veza_stream_server::storage::RecordingRecord {
            id: "r1".into(),
            stream_id: id.clone(),
            audio_id: None,
            started_at: 1_000,
            ended_at: None,
            state: "recording".into(),
        })
        .await
        .unwrap();
    store
        .finish_recording("r1", Some("a1"), 2_000, "recovered")
        .await
        .unwrap();
    let (st, v) = call(
        &state,
        "GET",
        &format!("/api/v1/streams/{id}/recordings"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"][0]["audio_id"], "a1", "{v}");
    assert_eq!(v["data"][0]["state"], "recovered", "{v}");
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// The binary, killed during a recording.

/// The server binary next to this test's (`target/<profile>/veza-stream-server`), built first
/// so that it is the current code.
fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let target_dir = profile_dir.parent().unwrap().to_path_buf();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "veza-stream-server",
        "--bin",
        "veza-stream-server",
    ])
    .current_dir(env!("CARGO_MANIFEST_DIR"))
    .env("CARGO_TARGET_DIR", &target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let st = cmd.status().unwrap();
    assert!(st.success(), "cannot build veza-stream-server");
    let bin = profile_dir.join("veza-stream-server");
    assert!(bin.is_file(), "no server binary at {}", bin.display());
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const SECRET: &str = "a-test-secret-of-at-least-32-characters";

fn server_cmd(bin: &Path, data: &Path, port: u16) -> Command {
    let mut c = Command::new(bin);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("VEZA_DATA_DIR", data)
        .env("JWT_SECRET", SECRET)
        .env("STREAM_SERVER_HOST", "127.0.0.1")
        .env("STREAM_SERVER_PORT", port.to_string())
        .env("LIVE_RECORD_DEFAULT", "true")
        .env("LIVE_GRACE_PERIOD", "2s")
        .env("RATE_LIMIT_PER_IP", "off")
        .env("RATE_LIMIT_PER_USER", "off")
        .env("RATE_LIMIT_PER_KEY", "off")
        .env("RUST_LOG", "warn");
    c
}

fn spawn_server(bin: &Path, data: &Path, port: u16) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.join("server.log"))
        .unwrap();
    let child = server_cmd(bin, data, port)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let p = Proc(child);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let t0 = Instant::now();
    loop {
        if let Ok((200, _)) = http(addr, "GET", "/health", None, None) {
            return p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the server did not start: {}",
            std::fs::read_to_string(data.join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One HTTP/1.1 request (`Connection: close`); the status and the body as JSON (or null).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    tok: Option<&str>,
    body: Option<Value>,
) -> std::io::Result<(u16, Value)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = tok {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut r = rest;
        while let Some((len, after)) = r.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
            if n == 0 || after.len() < n {
                break;
            }
            out.push_str(&after[..n]);
            r = after[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        rest.to_owned()
    };
    Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

#[test]
fn a_recording_killed_with_the_server_is_restored_at_the_next_start() {
    let bin = server_binary();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut server = spawn_server(&bin, &data, port);

    // A creator's token, signed by the binary with the server's secret.
    let out = server_cmd(&bin, &data, port)
        .args([
            "token", "--sub", "alice", "--role", "creator", "--ttl", "1h",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tok = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    // No `record`: LIVE_RECORD_DEFAULT=true records it.
    let (st, v) = http(
        addr,
        "POST",
        "/api/v1/streams",
        Some(&tok),
        Some(json!({"title": "Night show", "is_private": true})),
    )
    .unwrap();
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["data"]["record"], Value::Null);
    let id = v["data"]["id"].as_str().unwrap().to_owned();
    let key = v["data"]["ingest_key"].as_str().unwrap().to_owned();

    let file = tone(dir.path(), 30);
    let (mut ffmpeg, sent) = source(&file, addr, &key, &id);
    let t0 = Instant::now();
    while sent.load(Ordering::Relaxed) < 5_000_000 {
        assert!(
            ffmpeg.0.try_wait().unwrap().is_none(),
            "the source stopped early"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the source is not sending"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // kill -9 while the source is still sending.
    let sent_before_kill = sent.load(Ordering::Relaxed) as f64 / 1e6;
    server.kill9();
    ffmpeg.kill9();
    let sessions = data.join("recordings").join(&id);
    assert_eq!(
        std::fs::read_dir(&sessions).unwrap().count(),
        1,
        "one unfinished recording on disk"
    );

    // The next start restores it before serving.
    let mut server = spawn_server(&bin, &data, port);
    let rec_uri = format!("/api/v1/streams/{id}/recordings");
    let (st, v) = http(addr, "GET", &rec_uri, Some(&tok), None).unwrap();
    assert_eq!(st, 200, "{v}");
    let items = v["data"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{v}");
    assert_eq!(items[0]["state"], "recovered", "{v}");
    let audio_id = items[0]["audio_id"].as_str().unwrap().to_owned();
    let (st, a) = http(
        addr,
        "GET",
        &format!("/api/v1/audio/{audio_id}"),
        Some(&tok),
        None,
    )
    .unwrap();
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["data"]["owner"], "alice");
    assert_eq!(a["data"]["is_private"], true);
    let restored = a["data"]["duration_ms"].as_i64().unwrap() as f64 / 1000.0;
    eprintln!("sent {sent_before_kill:.3} s before the kill, restored {restored:.3} s");
    assert!(
        restored >= sent_before_kill - 1.0,
        "restored {restored} s of the {sent_before_kill} s sent before the kill"
    );
    let url = format!("http://{addr}/api/v1/audio/{audio_id}/stream?access_token={tok}");
    let probed = ffprobe_duration(&url);
    assert!(
        probed >= sent_before_kill - 1.0,
        "ffprobe reads {probed} s of the {sent_before_kill} s sent before the kill"
    );
    assert!(
        !sessions.exists(),
        "the restored session's directory is removed"
    );

    // A second restart does nothing more.
    server.kill9();
    let _server = spawn_server(&bin, &data, port);
    let (_, v2) = http(addr, "GET", &rec_uri, Some(&tok), None).unwrap();
    assert_eq!(v2["data"], v["data"], "the restore ran once");
    let (st, _) = http(
        addr,
        "GET",
        &format!("/api/v1/audio/{audio_id}"),
        Some(&tok),
        None,
    )
    .unwrap();
    assert_eq!(st, 200);
}

/// A graceful stop while a recorded stream is on air ends the stream and finishes the recording
/// before the server returns (state `finished`, not restored later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_finishes_the_recording() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::for_tests(dir.path());
    cfg.live.record_default = true;
    let state = build_state(cfg).await.unwrap();
    let running = start(state.clone()).await.unwrap();
    let alice = token(&state, "alice", Role::Creator);
    let (st, v) = call(
        &state,
        "POST",
        "/api/v1/streams",
        Some(&alice),
        Some(json!({"title": "Late show"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = v["data"]["id"].as_str().unwrap().to_owned();
    let key = v["data"]["ingest_key"].as_str().unwrap().to_owned();
    let file = tone(dir.path(), 20);
    let (mut ffmpeg, _) = source(&file, running.addr, &key, &id);
    // About three seconds on air, then the server stops while the source still sends.
    let t0 = Instant::now();
    while state.live().get(&id).is_none() {
        assert!(t0.elapsed() < Duration::from_secs(10), "not live");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    running.stop().await.unwrap();
    let _ = ffmpeg.0.kill();
    let (st, v) = call(
        &state,
        "GET",
        &format!("/api/v1/streams/{id}/recordings"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let items = v["data"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{v}");
    assert_eq!(items[0]["state"], "finished", "{v}");
    assert!(items[0]["audio_id"].is_string(), "{v}");
}
