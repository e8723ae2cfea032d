//! Live broadcasting end to end over a real port: ffmpeg as the Icecast source (MP3, ADTS AAC,
//! Ogg Vorbis; `PUT` and the legacy `SOURCE`), ffmpeg and raw sockets as listeners (the received
//! audio decodes and lasts as long as what was sent), ICY metadata blocks with the title set
//! through `/admin/metadata`, the stream record following the source (is_live, started_at,
//! viewer_count, events), the grace period of a dropped source, and the refusals (bad key 401,
//! second source 409, past MAX_CONCURRENT_STREAMS 503, unknown content type 415).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;
use veza_stream_server::auth::Role;
use veza_stream_server::events::Subject;
use veza_stream_server::{AppState, Config, app, build_state, start};
use veza_tests::{b64, decoded_secs, icecast_source, live_tone, require_tool};

async fn state_with(dir: &Path, edit: impl FnOnce(&mut Config)) -> AppState {
    let mut cfg = Config::for_tests(dir);
    cfg.live.grace_period = Duration::from_millis(1500);
    cfg.live.hls_ladder = Vec::new();
    edit(&mut cfg);
    build_state(cfg).await.unwrap()
}

fn token(state: &AppState) -> String {
    state
        .auth()
        .keys()
        .sign("alice", Role::Creator, Duration::from_secs(3600))
        .unwrap()
}

async fn api(
    state: &AppState,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {}", token(state)));
    let body = match body {
        Some(v) => {
            b = b.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let resp = app(state.clone())
        .oneshot(b.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Creates a stream; returns (id, ingest key).
async fn create_stream(state: &AppState, title: &str) -> (String, String) {
    let (status, v) = api(
        state,
        "POST",
        "/api/v1/streams",
        Some(json!({"title": title})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    (
        v["data"]["id"].as_str().unwrap().to_owned(),
        v["data"]["ingest_key"].as_str().unwrap().to_owned(),
    )
}

async fn stream_doc(state: &AppState, id: &str) -> Value {
    let (status, v) = api(state, "GET", &format!("/api/v1/streams/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["data"].clone()
}

/// Waits until `cond` holds (checked every 50 ms), at most `limit`.
async fn wait_for(limit: Duration, what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let t0 = Instant::now();
    while !cond().await {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a raw request head and reads the response head; returns (status line, headers, the
/// stream positioned at the body, bytes of body already read).
async fn raw_get(
    addr: SocketAddr,
    head: &str,
) -> (String, Vec<(String, String)>, TcpStream, Vec<u8>) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let end = loop {
        let mut b = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "closed before the response head: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&b[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
    };
    let text = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = buf[end + 4..].to_vec();
    (status, headers, tcp, rest)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Reads until EOF or `limit`.
async fn read_to_end(tcp: &mut TcpStream, mut out: Vec<u8>, limit: Duration) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut b = vec![0u8; 65536];
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, tcp.read(&mut b)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[..n]);
    }
    out
}

/// Splits an ICY stream into audio and the titles of its metadata blocks.
fn split_icy(stream: &[u8], metaint: usize) -> (Vec<u8>, Vec<String>) {
    let mut audio = Vec::new();
    let mut titles = Vec::new();
    let mut i = 0;
    while i < stream.len() {
        let n = metaint.min(stream.len() - i);
        audio.extend_from_slice(&stream[i..i + n]);
        i += n;
        if i >= stream.len() {
            break;
        }
        let len = stream[i] as usize * 16;
        let end = (i + 1 + len).min(stream.len());
        let text = String::from_utf8_lossy(&stream[i + 1..end]).to_string();
        if let Some(t) = text.split("StreamTitle='").nth(1) {
            titles.push(t.split("';").next().unwrap_or("").to_owned());
        }
        i = end;
    }
    (audio, titles)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ffmpeg_mp3_source_reaches_icy_listeners_whole() {
    require_tool("ffmpeg");
    let dir = tempfile::tempdir().unwrap();
    let state = state_with(dir.path(), |_| {}).await;
    let mut events = state.events().subscribe();
    let running = start(state.clone()).await.unwrap();
    let addr = running.addr;
    let (id, key) = create_stream(&state, "Morning show").await;
    // Not on air yet: listeners get 404, the document says not live.
    let (status, _, _, _) = raw_get(addr, &format!("GET /live/{id}.mp3 HTTP/1.0\r\n\r\n")).await;
    assert!(status.contains("404"), "{status}");
    assert_eq!(stream_doc(&state, &id).await["is_live"], false);

    let file = live_tone(
        dir.path(),
        "tone.mp3",
        6.0,
        &["-c:a", "libmp3lame", "-b:a", "128k"],
    );
    let sent = decoded_secs(&file);
    let mut src = icecast_source(addr, &id, &key, &file, "mp3", "audio/mpeg");
    wait_for(
        Duration::from_secs(10),
        "the stream to go live",
        async || stream_doc(&state, &id).await["is_live"] == true,
    )
    .await;
    // A listener with ICY metadata, starting from the beginning (a burst longer than what was
    // sent so far), and a plain one through ffmpeg.
    let (status, headers, mut icy_tcp, first) = raw_get(
        addr,
        &format!("GET /live/{id}?burst=20000 HTTP/1.1\r\nHost: x\r\nIcy-MetaData: 1\r\nUser-Agent: test\r\n\r\n"),
    )
    .await;
    assert!(status.starts_with("HTTP/1.0 200"), "{status}");
    assert_eq!(header(&headers, "content-type"), Some("audio/mpeg"));
    assert_eq!(header(&headers, "icy-name"), Some("Veza Test FM"));
    assert_eq!(header(&headers, "icy-genre"), Some("Test"));
    assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
    let metaint: usize = header(&headers, "icy-metaint").unwrap().parse().unwrap();
    assert_eq!(metaint, 16000);
    let doc = stream_doc(&state, &id).await;
    assert_eq!(doc["viewer_count"], 1, "{doc}");
    assert!(doc["started_at"].is_string(), "{doc}");
    // Now-playing through Icecast's admin endpoint, with the source's credentials.
    let (st, _, mut t, rest) = raw_get(
        addr,
        &format!(
            "GET /admin/metadata?mount=/live/{id}&mode=updinfo&song=Bach%20-%20Air HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\n\r\n",
            b64(&format!("source:{key}"))
        ),
    )
    .await;
    assert!(st.contains("200"), "{st}");
    let body = read_to_end(&mut t, rest, Duration::from_secs(2)).await;
    assert!(String::from_utf8_lossy(&body).contains("<return>1</return>"));
    // A wrong key cannot change it.
    let (st, _, _, _) = raw_get(
        addr,
        &format!(
            "GET /admin/metadata?mount=/live/{id}&mode=updinfo&song=x HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\n\r\n",
            b64("source:wrong")
        ),
    )
    .await;
    assert!(st.contains("401"), "{st}");

    let ffmpeg_out = dir.path().join("heard.wav");
    let mut listener = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(format!("http://{addr}/live/{id}.mp3?burst=20000"))
        .arg(&ffmpeg_out)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();

    // The source ends; after the grace period the stream ends and listeners get EOF.
    let st = tokio::task::spawn_blocking(move || src.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success(), "the ffmpeg source failed");
    let stream = read_to_end(&mut icy_tcp, first, Duration::from_secs(15)).await;
    let (audio, titles) = split_icy(&stream, metaint);
    assert!(
        titles.iter().any(|t| t == "Bach - Air"),
        "titles {titles:?}"
    );
    let heard_path = dir.path().join("heard.mp3");
    std::fs::write(&heard_path, &audio).unwrap();
    let heard = decoded_secs(&heard_path);
    assert!(
        (heard - sent).abs() < 0.1,
        "sent {sent:.3} s, the ICY listener heard {heard:.3} s"
    );
    let st = tokio::task::spawn_blocking(move || listener.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success());
    let heard = decoded_secs(&ffmpeg_out);
    assert!(
        (heard - sent).abs() < 0.1,
        "sent {sent:.3} s, ffmpeg heard {heard:.3} s"
    );
    wait_for(Duration::from_secs(5), "the stream to end", async || {
        stream_doc(&state, &id).await["is_live"] == false
    })
    .await;
    assert_eq!(stream_doc(&state, &id).await["viewer_count"], 0);
    // Events: started then ended, for this stream.
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        if e.data["id"] == id.as_str() {
            seen.push(e.subject.clone());
        }
    }
    let started = seen
        .iter()
        .position(|s| s.as_str() == Subject::StreamStarted.as_str());
    let ended = seen
        .iter()
        .position(|s| s.as_str() == Subject::StreamEnded.as_str());
    assert!(
        matches!((started, ended), (Some(a), Some(b)) if a < b),
        "events {seen:?}"
    );
    running.stop().await.unwrap();
}

/// AAC (ADTS) and Ogg Vorbis sources, each heard whole by ffmpeg over ICY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aac_and_ogg_vorbis_sources_are_heard_whole() {
    require_tool("ffmpeg");
    let dir = tempfile::tempdir().unwrap();
    let state = state_with(dir.path(), |_| {}).await;
    let running = start(state.clone()).await.unwrap();
    let addr = running.addr;
    let cases = [
        (
            "tone.aac",
            vec!["-c:a", "aac", "-b:a", "96k"],
            "adts",
            "audio/aac",
            "aac",
        ),
        (
            "tone.ogg",
            vec!["-c:a", "libvorbis", "-q:a", "3"],
            "ogg",
            "audio/ogg",
            "ogg",
        ),
    ];
    for (name, args, fmt, ct, ext) in cases {
        let (id, key) = create_stream(&state, name).await;
        let file = live_tone(dir.path(), name, 5.0, &args);
        let sent = decoded_secs(&file);
        let mut src = icecast_source(addr, &id, &key, &file, fmt, ct);
        wait_for(
            Duration::from_secs(10),
            "the stream to go live",
            async || state.live().get(&id).is_some(),
        )
        .await;
        let (status, headers, mut tcp, first) = raw_get(
            addr,
            &format!("GET /live/{id}.{ext}?burst=20000 HTTP/1.0\r\n\r\n"),
        )
        .await;
        assert!(status.contains("200"), "{status}");
        assert_eq!(header(&headers, "content-type"), Some(ct));
        let st = tokio::task::spawn_blocking(move || src.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(st.success(), "the ffmpeg {fmt} source failed");
        let body = read_to_end(&mut tcp, first, Duration::from_secs(15)).await;
        let heard_path = dir.path().join(format!("heard.{ext}"));
        std::fs::write(&heard_path, &body).unwrap();
        let heard = decoded_secs(&heard_path);
        assert!(
            (heard - sent).abs() < 0.15,
            "{fmt}: sent {sent:.3} s, heard {heard:.3} s"
        );
    }
    running.stop().await.unwrap();
}

/// Bad key 401 (with a Basic challenge), unknown mount 404, unsupported content type 415, a
/// second source 409, a stream past MAX_CONCURRENT_STREAMS 503; the legacy SOURCE method works;
/// a source that drops and returns within the grace period continues the same stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_are_refused_clearly_and_may_return_within_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_with(dir.path(), |c| c.max_concurrent_streams = 1).await;
    let running = start(state.clone()).await.unwrap();
    let addr = running.addr;
    let (id, key) = create_stream(&state, "one").await;
    let (id2, key2) = create_stream(&state, "two").await;
    let auth = |k: &str| b64(&format!("source:{k}"));

    let put = |id: &str, k: &str, ct: &str| {
        format!(
            "PUT /live/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\nContent-Type: {ct}\r\nIce-Name: x\r\n\r\n",
            auth(k)
        )
    };
    let (st, h, _, _) = raw_get(addr, &put(&id, "wrong", "audio/mpeg")).await;
    assert!(st.contains("401"), "{st}");
    assert!(header(&h, "www-authenticate").unwrap().starts_with("Basic"));
    let (st, _, _, _) = raw_get(
        addr,
        &put(&uuid::Uuid::new_v4().to_string(), &key, "audio/mpeg"),
    )
    .await;
    assert!(st.contains("404"), "{st}");
    let (st, _, _, _) = raw_get(addr, &put(&id, &key, "video/mp4")).await;
    assert!(st.contains("415"), "{st}");

    // The legacy SOURCE method (HTTP/1.0), then MP3 frames.
    let frame = {
        let mut f = vec![0u8; 417];
        f[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
        f
    };
    let (st, _, mut first, _) = raw_get(
        addr,
        &format!(
            "SOURCE /live/{id} HTTP/1.0\r\nAuthorization: Basic {}\r\nContent-Type: audio/mpeg\r\n\r\n",
            auth(&key)
        ),
    )
    .await;
    assert!(st.starts_with("HTTP/1.0 200"), "{st}");
    for _ in 0..20 {
        first.write_all(&frame).await.unwrap();
    }
    wait_for(
        Duration::from_secs(5),
        "the stream to go live",
        async || stream_doc(&state, &id).await["is_live"] == true,
    )
    .await;
    let started_at = stream_doc(&state, &id).await["started_at"].clone();
    // A second source on the same mount: 409. Another stream past the limit: 503.
    let (st, _, _, _) = raw_get(addr, &put(&id, &key, "audio/mpeg")).await;
    assert!(st.contains("409"), "{st}");
    let (st, h, _, _) = raw_get(addr, &put(&id2, &key2, "audio/mpeg")).await;
    assert!(st.contains("503"), "{st}");
    assert!(header(&h, "retry-after").is_some());

    // The source drops and returns within the grace period: the same stream goes on.
    let (_, _, mut listener, _) = raw_get(addr, &format!("GET /live/{id} HTTP/1.0\r\n\r\n")).await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (st, _, mut again, _) = raw_get(addr, &put(&id, &key, "audio/mpeg")).await;
    assert!(st.contains("200"), "{st}");
    for _ in 0..40 {
        again.write_all(&frame).await.unwrap();
    }
    let doc = stream_doc(&state, &id).await;
    assert_eq!(doc["is_live"], true);
    assert_eq!(
        doc["started_at"], started_at,
        "a returning source continues the stream"
    );
    // The listener kept its connection and gets the new audio.
    let mut b = vec![0u8; 417 * 10];
    tokio::time::timeout(Duration::from_secs(5), listener.read_exact(&mut b))
        .await
        .unwrap()
        .unwrap();
    // Gone for good: after the grace period the stream ends and the listener gets EOF.
    drop(again);
    let rest = read_to_end(&mut listener, Vec::new(), Duration::from_secs(10)).await;
    assert!(rest.len() < 417 * 100);
    let mut one = [0u8; 1];
    assert_eq!(
        listener.read(&mut one).await.unwrap(),
        0,
        "the listener's connection ends"
    );
    wait_for(Duration::from_secs(5), "the stream to end", async || {
        stream_doc(&state, &id).await["is_live"] == false
    })
    .await;
    // The slot is free again: the other stream may go live.
    let (st, _, _, _) = raw_get(addr, &put(&id2, &key2, "audio/mpeg")).await;
    assert!(st.contains("200"), "{st}");
    running.stop().await.unwrap();
}

/// A browser-style WebSocket source sending PCM (encoded to MP3 by the server), a WebSocket
/// listener receiving the start message, the frames and a title change, then the end; the
/// listener's audio decodes and lasts as long as the PCM sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_pcm_source_and_websocket_listener() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    require_tool("ffmpeg");
    let dir = tempfile::tempdir().unwrap();
    let state = state_with(dir.path(), |_| {}).await;
    let running = start(state.clone()).await.unwrap();
    let addr = running.addr;
    let (id, _key) = create_stream(&state, "browser show").await;
    let tok = token(&state);

    // A listener's handshake before the stream is on air: 404.
    let early = tokio_tungstenite::connect_async(format!(
        "ws://{addr}/api/v1/streams/{id}/listen?access_token={tok}"
    ))
    .await;
    assert!(early.is_err(), "no listening before the stream is live");

    let (mut src, _) = tokio_tungstenite::connect_async(format!(
        "ws://{addr}/api/v1/streams/{id}/ingest?format=s16le&rate=44100&channels=2&encode=mp3&bitrate=128&access_token={tok}"
    ))
    .await
    .unwrap();
    let hello = src.next().await.unwrap().unwrap();
    assert!(hello.to_text().unwrap().contains("live"), "{hello:?}");
    // A wrong ingest key is refused at the handshake.
    let bad = tokio_tungstenite::connect_async(format!(
        "ws://{addr}/api/v1/streams/{id}/ingest?key=nope"
    ))
    .await;
    assert!(bad.is_err());

    // 4 s of a 440 Hz stereo sine in 20 ms messages, paced at twice real time.
    let pcm = veza_tests::sine(44_100, 2, 440.0, 0.5, 4.0);
    let mut interleaved = Vec::new();
    for i in 0..pcm.frames() {
        for c in 0..2 {
            let s = (pcm.plane(c)[i] * 32767.0) as i16;
            interleaved.extend_from_slice(&s.to_le_bytes());
        }
    }
    let sent_secs = pcm.frames() as f64 / 44_100.0;
    let per_msg = 882 * 4; // 20 ms of stereo s16
    let mut chunks = interleaved.chunks(per_msg);
    // Send the first 200 ms, then join as a listener from the start.
    for c in chunks.by_ref().take(10) {
        src.send(Message::Binary(c.to_vec().into())).await.unwrap();
    }
    let listener = {
        let url = format!("ws://{addr}/api/v1/streams/{id}/listen?burst=20000&access_token={tok}");
        tokio::spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            let mut audio = Vec::new();
            let mut texts = Vec::new();
            while let Ok(Some(Ok(m))) =
                tokio::time::timeout(Duration::from_secs(15), ws.next()).await
            {
                match m {
                    Message::Binary(b) => audio.extend_from_slice(&b),
                    Message::Text(t) => texts.push(t.to_string()),
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            (audio, texts)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stream_doc(&state, &id).await["viewer_count"], 1);
    for (i, c) in chunks.enumerate() {
        if i == 50 {
            src.send(Message::Text(
                json!({"type": "metadata", "title": "Sine", "artist": "Lab"})
                    .to_string()
                    .into(),
            ))
            .await
            .unwrap();
        }
        src.send(Message::Binary(c.to_vec().into())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    src.send(Message::Text(json!({"type": "end"}).to_string().into()))
        .await
        .unwrap();
    let (audio, texts) = listener.await.unwrap();
    assert!(
        texts[0].contains("\"start\"") && texts[0].contains("audio/mpeg"),
        "{texts:?}"
    );
    assert!(texts.iter().any(|t| t.contains("Lab - Sine")), "{texts:?}");
    let p = dir.path().join("ws.mp3");
    std::fs::write(&p, &audio).unwrap();
    let heard = decoded_secs(&p);
    // The MP3 encoder adds its delay and pads the last frame: at most about two frames.
    assert!(
        heard >= sent_secs - 0.01 && heard - sent_secs < 0.1,
        "sent {sent_secs:.3} s of PCM, heard {heard:.3} s"
    );
    wait_for(Duration::from_secs(5), "the stream to end", async || {
        stream_doc(&state, &id).await["is_live"] == false
    })
    .await;
    running.stop().await.unwrap();
}

/// A listener request on a kept-alive connection (served by the router, not the first-request
/// path), HEAD, and the CORS preflight a browser sends for `Icy-MetaData`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_listeners_head_and_preflight() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_with(dir.path(), |_| {}).await;
    let running = start(state.clone()).await.unwrap();
    let addr = running.addr;
    let (id, key) = create_stream(&state, "keep-alive").await;
    let frame = {
        let mut f = vec![0u8; 417];
        f[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
        f
    };
    let (st, _, mut src, _) = raw_get(
        addr,
        &format!(
            "PUT /live/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\nContent-Type: audio/mpeg\r\nIce-Name: KA\r\n\r\n",
            b64(&format!("source:{key}"))
        ),
    )
    .await;
    assert!(st.contains("200"), "{st}");
    for _ in 0..30 {
        src.write_all(&frame).await.unwrap();
    }
    wait_for(
        Duration::from_secs(5),
        "the stream to go live",
        async || state.live().get(&id).is_some(),
    )
    .await;

    // HEAD: headers only.
    let (st, h, mut t, rest) = raw_get(
        addr,
        &format!("HEAD /live/{id}.mp3 HTTP/1.1\r\nHost: x\r\n\r\n"),
    )
    .await;
    assert!(st.contains("200"), "{st}");
    assert_eq!(header(&h, "icy-name"), Some("KA"));
    let body = read_to_end(&mut t, rest, Duration::from_secs(2)).await;
    assert!(body.is_empty(), "HEAD has no body");

    // Preflight for a cross-origin player that sends Icy-MetaData.
    let (st, h, _, _) = raw_get(
        addr,
        &format!("OPTIONS /live/{id} HTTP/1.1\r\nHost: x\r\nOrigin: https://player.example\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: icy-metadata\r\n\r\n"),
    )
    .await;
    assert!(st.contains("200") || st.contains("204"), "{st}");
    assert!(
        header(&h, "access-control-allow-headers")
            .is_some_and(|v| v.to_ascii_lowercase().contains("icy-metadata")),
        "{h:?}"
    );

    // First a JSON request, then the stream on the same connection: the router serves it.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    tcp.write_all(
        format!("GET /live/{id}?burst=20000 HTTP/1.1\r\nHost: x\r\nIcy-MetaData: 1\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    while got.len() < 417 * 20 {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got[..200]).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("icy-metaint: 16000"), "{text}");
    running.stop().await.unwrap();
}

/// Players tune in: ffplay (SDL's dummy audio driver, no display) and mpv (null audio output)
/// play the ICY stream for a few seconds and exit cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffplay_and_mpv_play_the_live_stream() {
    require_tool("ffmpeg");
    let mpv_ok = Command::new("mpv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        mpv_ok,
        "mpv is needed for this test: apt-get install -y mpv (scripts/test installs it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let state = state_with(dir.path(), |_| {}).await;
    let running = start(state.clone()).await.unwrap();
    let addr = running.addr;
    let (id, key) = create_stream(&state, "players").await;
    let file = live_tone(
        dir.path(),
        "tone.mp3",
        8.0,
        &["-c:a", "libmp3lame", "-b:a", "128k"],
    );
    let mut src = icecast_source(addr, &id, &key, &file, "mp3", "audio/mpeg");
    wait_for(
        Duration::from_secs(10),
        "the stream to go live",
        async || state.live().get(&id).is_some(),
    )
    .await;
    let url = format!("http://{addr}/live/{id}");
    let players = tokio::task::spawn_blocking(move || {
        // Both at once, while the broadcast is on.
        let ffplay = Command::new("ffplay")
            .args(["-v", "error", "-nodisp", "-autoexit", "-t", "3", "-i", &url])
            .env("SDL_AUDIODRIVER", "dummy")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mpv = Command::new("mpv")
            .args([
                "--no-config",
                "--ytdl=no",
                "--no-video",
                "--ao=null",
                "--length=3",
            ])
            .arg(&url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        (
            ffplay.wait_with_output().unwrap(),
            mpv.wait_with_output().unwrap(),
        )
    });
    let (ffplay, mpv) = tokio::time::timeout(Duration::from_secs(30), players)
        .await
        .unwrap()
        .unwrap();
    // When the live stream ends, ffmpeg's HTTP reader says the (unbounded) body "ends
    // prematurely": that is the end of the broadcast, not an error of the stream.
    let ffplay_err = String::from_utf8_lossy(&ffplay.stderr);
    let real_errors: Vec<&str> = ffplay_err
        .lines()
        .filter(|l| !l.contains("Stream ends prematurely") && !l.contains("Last message repeated"))
        .collect();
    assert!(
        ffplay.status.success() && real_errors.is_empty(),
        "ffplay: {:?} {ffplay_err}",
        ffplay.status
    );
    let log =
        String::from_utf8_lossy(&mpv.stdout).to_string() + &String::from_utf8_lossy(&mpv.stderr);
    assert!(mpv.status.success(), "mpv: {:?} {log}", mpv.status);
    assert!(
        log.contains("mp3") && log.contains("AO: [null]"),
        "mpv did not play audio: {log}"
    );
    let _ = src.kill();
    let _ = src.wait();
    running.stop().await.unwrap();
}

/// An HTML `<audio>` element in a real browser (headless Chromium) plays the stream: after a few
/// seconds its `currentTime` has advanced and it reports no error. The page comes from a small
/// server of the test's own (another origin, as on a real site).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_html_audio_element_plays_the_live_stream() {
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("Chromium is needed for this test: apt-get install -y chromium (scripts/test installs it)");
    let dir = tempfile::tempdir().unwrap();
    let state = state_with(dir.path(), |_| {}).await;
    let running = start(state.clone()).await.unwrap();
    let addr = running.addr;
    let (id, key) = create_stream(&state, "browser").await;
    let file = live_tone(
        dir.path(),
        "tone.mp3",
        15.0,
        &["-c:a", "libmp3lame", "-b:a", "128k"],
    );
    let mut src = icecast_source(addr, &id, &key, &file, "mp3", "audio/mpeg");
    wait_for(
        Duration::from_secs(10),
        "the stream to go live",
        async || state.live().get(&id).is_some(),
    )
    .await;

    // The page's own origin: serves the page, takes the report.
    let site = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let site_addr = site.local_addr().unwrap();
    let page = format!(
        "<!doctype html><audio id=a src=\"http://{addr}/live/{id}\" autoplay></audio><script>\
         const a=document.getElementById('a');let perr='none';\
         a.play().catch(e=>{{perr=e.name;}});\
         setTimeout(()=>fetch('/report?t='+a.currentTime+'&err='+(a.error?a.error.code:0)+'&paused='+a.paused+'&ready='+a.readyState+'&net='+a.networkState+'&play='+perr),5000);\
         </script>"
    );
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        for conn in site.incoming().flatten() {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let path = line.split(' ').nth(1).unwrap_or("").to_owned();
            let mut conn = conn;
            if path.starts_with("/report") {
                let _ = conn.write_all(b"HTTP/1.0 204 No Content\r\n\r\n");
                let _ = tx.send(path);
                return;
            }
            let _ = write!(
                conn,
                "HTTP/1.0 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{page}",
                page.len()
            );
        }
    });
    let profile = dir.path().join("profile");
    let mut chrome = Command::new(browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--autoplay-policy=no-user-gesture-required",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("http://{site_addr}/page"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let report = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap();
    let _ = chrome.kill();
    let _ = chrome.wait();
    let _ = src.kill();
    let _ = src.wait();
    let report = report.expect("the page reported within 30 s");
    let field = |k: &str| {
        report
            .split(['?', '&'])
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .to_owned()
    };
    let t: f64 = field("t").parse().unwrap_or(0.0);
    assert_eq!(field("err"), "0", "media error: {report}");
    assert!(t > 2.0, "the audio element did not play: {report}");
    running.stop().await.unwrap();
}

/// A WebSocket listener adapted on the server (`?abr=true`): it starts on the lowest AAC rung of
/// the live ladder and, taking the bytes as fast as they come, is moved up; the frames it gets
/// across the switches decode as one AAC stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_listeners_are_adapted_on_the_server() {
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    require_tool("ffmpeg");
    let dir = tempfile::tempdir().unwrap();
    let state = state_with(dir.path(), |c| {
        c.live.hls_ladder =
            veza_stream_server::config::parse_ladder("aac:48,aac:96,aac:160").unwrap();
        c.live.hls_segment = Duration::from_secs(1);
    })
    .await;
    let running = start(state.clone()).await.unwrap();
    let addr = running.addr;
    let (id, key) = create_stream(&state, "adaptive").await;
    let file = live_tone(
        dir.path(),
        "tone.mp3",
        12.0,
        &["-c:a", "libmp3lame", "-b:a", "128k"],
    );
    let mut src = icecast_source(addr, &id, &key, &file, "mp3", "audio/mpeg");
    wait_for(
        Duration::from_secs(10),
        "the stream to go live",
        async || state.live().get(&id).is_some(),
    )
    .await;
    let tok = token(&state);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{addr}/api/v1/streams/{id}/listen?abr=true&access_token={tok}"
    ))
    .await
    .unwrap();
    let mut audio = Vec::new();
    let mut renditions = Vec::new();
    let mut start_msg = String::new();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(15), ws.next()).await {
        match m {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                match v["type"].as_str() {
                    Some("start") => start_msg = t.to_string(),
                    Some("rendition") => renditions.push(v["name"].as_str().unwrap().to_owned()),
                    _ => {}
                }
            }
            Message::Binary(b) => audio.extend_from_slice(&b),
            Message::Close(_) => break,
            _ => {}
        }
    }
    let _ = src.wait();
    assert!(
        start_msg.contains("\"adaptive\":true") && start_msg.contains("audio/aac"),
        "{start_msg}"
    );
    assert_eq!(
        renditions.first().map(String::as_str),
        Some("aac-48"),
        "{renditions:?}"
    );
    assert!(
        renditions.iter().any(|r| r != "aac-48"),
        "a fast listener is moved up: {renditions:?}"
    );
    let p = dir.path().join("adaptive.aac");
    std::fs::write(&p, &audio).unwrap();
    let heard = decoded_secs(&p);
    assert!(heard > 5.0, "heard {heard:.2} s of adapted AAC");
    running.stop().await.unwrap();
}
