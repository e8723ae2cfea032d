//! Events and the shared cache index against the real services: NATS with JetStream at
//! 127.0.0.1:4222 (an upload gives `veza.audio.uploaded`, a job `veza.job.*`), Redis at
//! 127.0.0.1:6379 (two caches sharing one directory and one Redis index see each other's entries
//! and evict in one least-recently-used order), and servers of our own started and killed by
//! these tests: NATS down at start, down then back (buffered events arrive in order), a full
//! buffer (the oldest dropped and counted), NATS without JetStream (core publish), Redis down
//! then back (serving goes on, `/ready` says degraded, the index is resynced).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use veza_stream_server::cache::{Lookup, TranscodeCache};
use veza_stream_server::events::Subject;
use veza_stream_server::{AppState, Config, app, build_state};
use veza_tests::corpus_dir;

const NATS: &str = "127.0.0.1:4222";
const REDIS: &str = "127.0.0.1:6379";

/// Fails (never skips) when a development service is down, saying how to start it.
fn require_service(name: &str, addr: &str, start: &str) {
    if std::net::TcpStream::connect(addr).is_err() {
        panic!("{name} is needed at {addr} for this test and is not running. Start it: {start}");
    }
}

fn require_nats() {
    require_service(
        "NATS (with JetStream)",
        NATS,
        "nats-server -js -a 127.0.0.1 -p 4222 -sd /var/lib/nats-server &",
    );
}

fn require_redis() {
    require_service(
        "Redis",
        REDIS,
        "redis-server --bind 127.0.0.1 --port 6379 --daemonize yes",
    );
}

/// A program the test starts itself, with an install hint when missing.
fn program(candidates: &[&str], install: &str) -> PathBuf {
    for c in candidates {
        let p = PathBuf::from(c);
        if p.is_absolute() && p.exists() {
            return p;
        }
        if !p.is_absolute()
            && Command::new(c)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        {
            return p;
        }
    }
    panic!("{} is needed for this test: {install}", candidates[0]);
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (bounded) until something listens on `port`.
fn wait_listening(port: u16, what: &str) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not start listening on port {port} within 10 s");
}

/// A server process of this test, killed (by its pid) when dropped.
struct Service {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    program: PathBuf,
    name: &'static str,
}

impl Service {
    fn nats(port: u16, store: Option<&Path>) -> Self {
        let program = program(
            &["/usr/sbin/nats-server", "nats-server"],
            "install it (Debian: apt-get install -y nats-server)",
        );
        let mut args = vec![
            "-a".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            port.to_string(),
        ];
        if let Some(dir) = store {
            args.extend([
                "-js".to_owned(),
                "-sd".to_owned(),
                dir.display().to_string(),
            ]);
        }
        Self {
            child: None,
            port,
            args,
            program,
            name: "nats-server",
        }
    }

    fn redis(port: u16) -> Self {
        let program = program(
            &["redis-server", "/usr/bin/redis-server"],
            "install it (Debian: apt-get install -y redis-server)",
        );
        let args = [
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        Self {
            child: None,
            port,
            args,
            program,
            name: "redis-server",
        }
    }

    fn start(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name));
        self.child = Some(child);
        wait_listening(self.port, self.name);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn state_with(dir: &Path, tune: impl FnOnce(&mut Config)) -> AppState {
    let mut cfg = Config::for_tests(dir);
    cfg.max_upload_bytes = 2_000_000;
    tune(&mut cfg);
    build_state(cfg).await.unwrap()
}

/// Calls the router as the creator "alice".
async fn call(
    state: &AppState,
    mut req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let t = state
        .auth()
        .keys()
        .sign(
            "alice",
            veza_stream_server::auth::Role::Creator,
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
    req.headers_mut().insert(
        axum::http::header::AUTHORIZATION,
        format!("Bearer {t}").parse().unwrap(),
    );
    let resp = app(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, headers, v)
}

async fn get(state: &AppState, url: &str) -> (StatusCode, axum::http::HeaderMap, Value) {
    call(state, Request::get(url).body(Body::empty()).unwrap()).await
}

async fn send_json(state: &AppState, method: &str, url: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (s, _, v) = call(state, req).await;
    (s, v)
}

async fn upload(state: &AppState, path: &Path) -> String {
    let req = Request::post("/api/v1/audio?name=test")
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from(std::fs::read(path).unwrap()))
        .unwrap();
    let (s, _, v) = call(state, req).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["data"]["id"].as_str().unwrap().to_owned()
}

/// Polls `/ready` (bounded) until `dep`'s state is `want`; returns the last body.
async fn wait_ready(state: &AppState, dep: &str, want: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..300 {
        let (s, _, v) = get(state, "/ready").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if v["data"]["dependencies"][dep]["state"] == want {
            return v;
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{dep} did not become {want} within 30 s: {last}");
}

/// Waits for the next message on `sub` whose payload satisfies `pred` (bounded).
async fn next_matching(
    sub: &mut async_nats::Subscriber,
    what: &str,
    pred: impl Fn(&str, &Value) -> bool,
) -> Value {
    let wait = async {
        while let Some(m) = sub.next().await {
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            if pred(m.subject.as_str(), &v) {
                assert_eq!(v["subject"], m.subject.as_str(), "{v}");
                return v;
            }
        }
        panic!("the subscription ended before {what}");
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .unwrap_or_else(|_| panic!("no {what} within 60 s"))
}

fn check_envelope(v: &Value) {
    let id = v["id"].as_str().unwrap();
    assert_eq!(id.len(), 36, "{v}");
    assert_eq!(&id[14..15], "4", "a UUID v4: {v}");
    let ts = v["timestamp"].as_str().unwrap();
    assert!(ts.ends_with('Z') && ts.contains('T'), "RFC 3339: {v}");
    assert!(
        v["timestamp_ms"].as_i64().unwrap() > 1_600_000_000_000,
        "{v}"
    );
    assert!(v["data"].is_object(), "{v}");
}

#[tokio::test]
async fn upload_job_and_stream_events_reach_nats() {
    require_nats();
    let Some(corpus) = corpus_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let state = state_with(dir.path(), |c| c.nats_url = Some(format!("nats://{NATS}"))).await;
    let ready = wait_ready(&state, "nats", "up").await;
    assert_eq!(
        ready["data"]["dependencies"]["nats"]["mode"], "jetstream",
        "the development NATS has JetStream: {ready}"
    );
    let client = async_nats::connect(NATS).await.unwrap();
    let mut sub = client.subscribe("veza.>").await.unwrap();
    client.flush().await.unwrap();
    // The in-process bus sees the same events.
    let mut local = state.events().subscribe();

    let file = upload(&state, &corpus.join("mp3/androidx-bear-id3.mp3")).await;
    let up = next_matching(&mut sub, "veza.audio.uploaded", |s, v| {
        s == "veza.audio.uploaded" && v["data"]["file_id"] == file.as_str()
    })
    .await;
    check_envelope(&up);
    assert_eq!(up["data"]["codec"], "mp3");
    let l = local.recv().await.unwrap();
    assert_eq!(l.id, up["id"].as_str().unwrap());

    // A job: queued, running, the new file processed, done; in that order.
    let (s, v) = send_json(
        &state,
        "POST",
        "/api/v1/audio/transcode",
        json!({"file_id": file, "output_format": "wav"}),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let job = v["data"]["id"].as_str().unwrap().to_owned();
    let mut seen = Vec::new();
    let mut made = None;
    while seen.last().map(String::as_str) != Some("veza.job.done") {
        let v = next_matching(&mut sub, "the job's events", |s, v| {
            (s.starts_with("veza.job.") && v["data"]["job_id"] == job.as_str())
                || (s == "veza.audio.processed" && v["data"]["job_id"] == job.as_str())
        })
        .await;
        check_envelope(&v);
        let s = v["subject"].as_str().unwrap().to_owned();
        assert_ne!(s, "veza.job.failed", "{v}");
        if s == "veza.audio.processed" {
            assert_eq!(v["data"]["source_file_id"], file.as_str());
            made = v["data"]["file_id"].as_str().map(str::to_owned);
        }
        if s == "veza.job.done" {
            assert_eq!(v["data"]["result_file_id"].as_str(), made.as_deref(), "{v}");
        }
        seen.push(s);
    }
    assert_eq!(
        seen,
        [
            "veza.job.queued",
            "veza.job.running",
            "veza.audio.processed",
            "veza.job.done"
        ]
    );

    // Stream records: created, updated, deleted; the ingest key is not in the event.
    let (s, v) = send_json(&state, "POST", "/api/v1/streams", json!({"title": "t"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let sid = v["data"]["id"].as_str().unwrap().to_owned();
    let url = format!("/api/v1/streams/{sid}");
    let (s, _) = send_json(&state, "PATCH", &url, json!({"title": "u"})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = call(&state, Request::delete(&url).body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    for subject in [
        "veza.stream.created",
        "veza.stream.updated",
        "veza.stream.deleted",
    ] {
        let v = next_matching(&mut sub, subject, |s, v| {
            s.starts_with("veza.stream.") && v["data"]["id"] == sid.as_str()
        })
        .await;
        assert_eq!(v["subject"], subject, "{v}");
        assert!(v["data"].get("ingest_key").is_none(), "{v}");
    }
    // Audio delete.
    let (s, _, _) = call(
        &state,
        Request::delete(format!("/api/v1/audio/{file}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    next_matching(&mut sub, "veza.audio.deleted", |s, v| {
        s == "veza.audio.deleted" && v["data"]["file_id"] == file.as_str()
    })
    .await;

    // Acknowledged events are stored in the JetStream stream.
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js.get_stream("VEZA_EVENTS").await.unwrap();
    let info = stream.info().await.unwrap();
    assert!(info.config.subjects.iter().any(|s| s == "veza.audio.>"));
    assert!(info.state.messages > 0);
    let text = state.metrics().render();
    assert!(
        text.contains("veza_events_published_total{subject=\"veza.audio.uploaded\"}"),
        "{text}"
    );
}

/// Reads messages 1..=n of the `VEZA_EVENTS` stream of the NATS at `port`.
async fn stored_events(port: u16, n: u64) -> Vec<Value> {
    let client = async_nats::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("VEZA_EVENTS").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, n, "{:?}", info.state);
    let mut out = Vec::new();
    for seq in 1..=n {
        let m = stream.get_raw_message(seq).await.unwrap();
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(v["subject"], m.subject.as_str());
        out.push(v);
    }
    out
}

#[tokio::test]
async fn events_wait_for_nats_and_arrive_in_order() {
    let store = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut nats = Service::nats(port, Some(store.path()));
    let dir = tempfile::tempdir().unwrap();
    // The server starts with NATS down.
    let state = state_with(dir.path(), |c| {
        c.nats_url = Some(format!("nats://127.0.0.1:{port}"));
    })
    .await;
    let v = wait_ready(&state, "nats", "degraded").await;
    assert_eq!(v["data"]["degraded"], true, "{v}");
    assert_eq!(v["data"]["ready"], true, "{v}");
    let events = state.events().clone();
    for n in 0..2 {
        events.publish(Subject::StreamUpdated, json!({ "n": n }));
    }
    assert_eq!(events.status().buffered, 2);

    // NATS comes: the buffer is sent.
    nats.start();
    assert!(
        events.flush(Duration::from_secs(30)).await,
        "{:?}",
        events.status()
    );
    wait_ready(&state, "nats", "up").await;

    // NATS goes: events wait, in order.
    nats.stop();
    wait_ready(&state, "nats", "degraded").await;
    for n in 2..52 {
        events.publish(Subject::StreamUpdated, json!({ "n": n }));
    }
    let (s, _, v) = get(&state, "/ready").await;
    assert_eq!(
        s,
        StatusCode::OK,
        "only an optional dependency is down: {v}"
    );
    assert_eq!(v["data"]["dependencies"]["nats"]["buffered"], 50, "{v}");
    assert_eq!(v["data"]["degraded_dependencies"], json!(["nats"]), "{v}");

    // NATS is back on the same port (same store): everything arrives, in order, once.
    nats.start();
    assert!(
        events.flush(Duration::from_secs(30)).await,
        "{:?}",
        events.status()
    );
    let stored = stored_events(port, 52).await;
    let ns: Vec<i64> = stored
        .iter()
        .map(|v| v["data"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, (0..52).collect::<Vec<_>>());
    assert!(stored.iter().all(|v| v["subject"] == "veza.stream.updated"));
    assert_eq!(events.status().dropped, 0);
}

#[tokio::test]
async fn a_full_buffer_drops_the_oldest_and_counts_them() {
    let store = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut nats = Service::nats(port, Some(store.path()));
    let dir = tempfile::tempdir().unwrap();
    let state = state_with(dir.path(), |c| {
        c.nats_url = Some(format!("nats://127.0.0.1:{port}"));
        c.event_buffer_size = 5;
    })
    .await;
    let events = state.events().clone();
    for n in 0..8 {
        events.publish(Subject::JobQueued, json!({ "n": n }));
    }
    let st = events.status();
    assert_eq!((st.buffered, st.dropped), (5, 3), "{st:?}");
    let text = state.metrics().render();
    let dropped: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("veza_events_dropped_total "))
        .unwrap_or_else(|| panic!("no veza_events_dropped_total in {text}"))
        .trim()
        .parse()
        .unwrap();
    assert!(dropped >= 3.0, "{text}");
    nats.start();
    assert!(
        events.flush(Duration::from_secs(30)).await,
        "{:?}",
        events.status()
    );
    let ns: Vec<i64> = stored_events(port, 5)
        .await
        .iter()
        .map(|v| v["data"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [3, 4, 5, 6, 7]);
}

#[tokio::test]
async fn without_jetstream_events_use_core_publish() {
    let port = free_port();
    let mut nats = Service::nats(port, None);
    nats.start();
    let dir = tempfile::tempdir().unwrap();
    let state = state_with(dir.path(), |c| {
        c.nats_url = Some(format!("nats://127.0.0.1:{port}"));
    })
    .await;
    let client = async_nats::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let mut sub = client.subscribe("veza.stream.>").await.unwrap();
    client.flush().await.unwrap();
    for n in 0..20 {
        state
            .events()
            .publish(Subject::StreamCreated, json!({ "n": n }));
    }
    for n in 0..20 {
        let v = next_matching(&mut sub, "a core event", |_, _| true).await;
        assert_eq!(v["data"]["n"], n, "{v}");
    }
    let v = wait_ready(&state, "nats", "up").await;
    assert_eq!(v["data"]["dependencies"]["nats"]["mode"], "core", "{v}");
}

fn key(i: u8) -> veza_stream_core::cache::CacheKey {
    let hash = format!("{i:02x}").repeat(16);
    veza_stream_core::cache::CacheKey::try_new(
        &hash,
        veza_audio::OutputFormat::Wav,
        None,
        None,
        None,
    )
    .unwrap()
}

/// Makes `key` with `bytes` bytes through `cache`; returns whether it was a hit.
async fn entry(cache: &TranscodeCache, i: u8, bytes: usize) -> Lookup {
    let (path, lookup) = cache
        .get_or_make(&key(i), move |tmp| {
            std::fs::write(tmp, vec![i; bytes])?;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap().len(), bytes);
    lookup
}

fn unique_prefix() -> String {
    format!("veza-test:{}:", uuid::Uuid::new_v4().simple())
}

async fn clear_prefix(url: &str, prefix: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut c)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut c)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn two_caches_share_one_redis_index() {
    require_redis();
    let url = format!("redis://{REDIS}");
    let prefix = unique_prefix();
    let dir = tempfile::tempdir().unwrap();
    let a = TranscodeCache::open_shared(dir.path(), 3000, &url, &prefix)
        .await
        .unwrap();
    let b = TranscodeCache::open_shared(dir.path(), 3000, &url, &prefix)
        .await
        .unwrap();
    assert_eq!(a.redis_up().await, Some(true));
    assert_eq!(entry(&a, 1, 1000).await, Lookup::Miss);
    // B sees A's entry.
    assert_eq!(entry(&b, 1, 1000).await, Lookup::Hit);
    assert_eq!(entry(&b, 2, 1000).await, Lookup::Miss);
    assert_eq!(entry(&a, 3, 1000).await, Lookup::Miss);
    assert_eq!(a.shared_used().await, Some(3000));
    assert_eq!(b.shared_used().await, Some(3000));
    // A uses 1 again: 2 is now the least recently used of both nodes, and B's next entry
    // evicts it (its file goes), not 1.
    assert_eq!(entry(&a, 1, 1000).await, Lookup::Hit);
    assert_eq!(entry(&b, 4, 1000).await, Lookup::Miss);
    assert!(!dir.path().join(key(2).file_name()).exists());
    for i in [1, 3, 4] {
        assert!(dir.path().join(key(i).file_name()).exists(), "entry {i}");
    }
    assert_eq!(b.shared_used().await, Some(3000));
    assert_eq!(entry(&a, 3, 1000).await, Lookup::Hit);
    // 2 is made again; 1 (used before 4 and 3) goes.
    assert_eq!(entry(&a, 2, 1000).await, Lookup::Miss);
    assert!(!dir.path().join(key(1).file_name()).exists());
    assert_eq!(a.shared_used().await, Some(3000));
    // A third node opening the directory resyncs without changing the totals.
    let c = TranscodeCache::open_shared(dir.path(), 3000, &url, &prefix)
        .await
        .unwrap();
    assert_eq!(c.shared_used().await, Some(3000));
    assert_eq!(entry(&c, 2, 1000).await, Lookup::Hit);
    clear_prefix(&url, &prefix).await;
}

#[tokio::test]
async fn serving_goes_on_while_redis_is_down() {
    let Some(corpus) = corpus_dir() else { return };
    let port = free_port();
    let mut redis_srv = Service::redis(port);
    let url = format!("redis://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    // The server starts with Redis down, and says so.
    let state = state_with(dir.path(), |c| {
        c.redis_url = Some(url.clone());
        c.redis_key_prefix = unique_prefix();
    })
    .await;
    let v = wait_ready(&state, "redis", "degraded").await;
    assert_eq!(v["data"]["degraded_dependencies"], json!(["redis"]), "{v}");
    redis_srv.start();
    wait_ready(&state, "redis", "up").await;
    let file = upload(&state, &corpus.join("mp3/androidx-bear-id3.mp3")).await;
    let wav = format!("/api/v1/audio/{file}/stream?format=wav");
    let (s, h, _) = get(&state, &wav).await;
    assert_eq!(
        (s, h["x-cache"].to_str().unwrap()),
        (StatusCode::OK, "MISS")
    );

    redis_srv.stop();
    // Still served, from the local index.
    let (s, h, _) = get(&state, &wav).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["x-cache"], "HIT");
    let v = wait_ready(&state, "redis", "degraded").await;
    assert_eq!(v["data"]["degraded"], true, "{v}");
    assert_eq!(v["data"]["ready"], true, "{v}");
    // A new transcode while Redis is down.
    let mp3 = format!("/api/v1/audio/{file}/stream?format=mp3&bitrate=64");
    let (s, h, _) = get(&state, &mp3).await;
    assert_eq!(
        (s, h["x-cache"].to_str().unwrap()),
        (StatusCode::OK, "MISS")
    );
    let (s, h, _) = get(&state, &mp3).await;
    assert_eq!((s, h["x-cache"].to_str().unwrap()), (StatusCode::OK, "HIT"));

    // Redis is back, empty: the index is rebuilt from the directory.
    redis_srv.start();
    wait_ready(&state, "redis", "up").await;
    let used = state.cache().shared_used().await.unwrap();
    let on_disk: u64 = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(on_disk > 0);
    assert_eq!(used, on_disk);
    let (s, h, _) = get(&state, &wav).await;
    assert_eq!((s, h["x-cache"].to_str().unwrap()), (StatusCode::OK, "HIT"));
}
