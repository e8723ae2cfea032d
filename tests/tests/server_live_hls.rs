//! Live HLS / LL-HLS over a real port, with ffmpeg as the Icecast source (MP3, and ADTS AAC on a
//! private stream whose source drops and returns, which makes a discontinuity): the master playlist lists the ladder (AAC first, CODECS, BANDWIDTH, tokens
//! carried through); ffmpeg plays the master while the stream is live and stops at
//! `EXT-X-ENDLIST`; every rung, fetched whole after the end, decodes to as long as its playlist
//! says and as long as what was sent (within a segment); a blocking playlist reload returns the
//! next part; bad reload values get 400; a title set through `/admin/metadata` appears as timed
//! ID3 in the MP3 and AAC rungs; HLS clients count in `viewer_count`.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;
use veza_stream_server::auth::Role;
use veza_stream_server::{AppState, Config, app, build_state, start};
use veza_tests::{b64, decoded_secs, icecast_source, live_tone, require_tool};

/// Segment target of these tests (short, so that the test stays short).
const SEGMENT: Duration = Duration::from_secs(1);

async fn state_with(dir: &Path) -> AppState {
    let mut cfg = Config::for_tests(dir);
    cfg.live.grace_period = Duration::from_millis(1500);
    cfg.live.hls_segment = SEGMENT;
    build_state(cfg).await.unwrap()
}

fn token(state: &AppState) -> String {
    state
        .auth()
        .keys()
        .sign("alice", Role::Creator, Duration::from_secs(3600))
        .unwrap()
}

async fn api(state: &AppState, method: &str, uri: &str, body: Option<Value>) -> Value {
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
    assert!(
        resp.status().is_success(),
        "{method} {uri}: {}",
        resp.status()
    );
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

/// Creates a stream; returns (id, ingest key, stream_url).
async fn create_stream(state: &AppState, title: &str, private: bool) -> (String, String, String) {
    let v = api(
        state,
        "POST",
        "/api/v1/streams",
        Some(json!({"title": title, "is_private": private})),
    )
    .await;
    let d = &v["data"];
    (
        d["id"].as_str().unwrap().to_owned(),
        d["ingest_key"].as_str().unwrap().to_owned(),
        d["stream_url"].as_str().unwrap().to_owned(),
    )
}

async fn stream_doc(state: &AppState, id: &str) -> Value {
    api(state, "GET", &format!("/api/v1/streams/{id}"), None).await["data"].clone()
}

/// A response over a real connection.
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` (HTTP/1.0, read to the end).
async fn http_get(addr: SocketAddr, path: &str, extra: &str) -> Got {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("GET {path} HTTP/1.0\r\nHost: x\r\nUser-Agent: veza-test\r\n{extra}\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {}", String::from_utf8_lossy(&buf)));
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Got {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    }
}

/// Waits until `cond` holds (checked every 50 ms), at most `limit`.
async fn wait_for(limit: Duration, what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let t0 = Instant::now();
    while !cond().await {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The URIs of a playlist (lines that are not tags).
fn uris(playlist: &str) -> Vec<String> {
    playlist
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// The value of `URI="..."` in the last line starting with `tag`.
fn tag_uri(playlist: &str, tag: &str) -> Option<String> {
    let line = playlist.lines().rfind(|l| l.starts_with(tag))?;
    let start = line.find("URI=\"")? + 5;
    let end = line[start..].find('"')? + start;
    Some(line[start..end].to_owned())
}

/// Sum of the `EXTINF` durations.
fn listed_secs(playlist: &str) -> f64 {
    playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|d| d.trim_end_matches(',').parse::<f64>().unwrap())
        .sum()
}

/// Fetches a rung whole (init segment and every listed segment) into one file.
async fn fetch_rung(
    addr: SocketAddr,
    base: &str,
    query: &str,
    dir: &Path,
    name: &str,
) -> (PathBuf, f64) {
    let pl = http_get(addr, &format!("{base}/index.m3u8{query}"), "").await;
    assert_eq!(pl.status, 200, "{name}: {}", pl.text());
    let text = pl.text();
    assert!(text.contains("#EXT-X-ENDLIST"), "{name} ended: {text}");
    assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:"), "{text}");
    let mut all = Vec::new();
    if let Some(init) = tag_uri(&text, "#EXT-X-MAP:") {
        let g = http_get(addr, &format!("{base}/{init}"), "").await;
        assert_eq!(g.status, 200);
        all.extend_from_slice(&g.body);
    }
    for u in uris(&text) {
        let g = http_get(addr, &format!("{base}/{u}"), "").await;
        assert_eq!(g.status, 200, "{base}/{u}");
        assert!(
            g.header("cache-control").unwrap().contains("immutable"),
            "segments are immutable"
        );
        all.extend_from_slice(&g.body);
    }
    let ext = if name.starts_with("mp3") {
        "mp3"
    } else {
        "mp4"
    };
    let path = dir.join(format!("{name}.{ext}"));
    std::fs::write(&path, &all).unwrap();
    (path, listed_secs(&text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_ladder_plays_in_ffmpeg_with_ll_hls_and_titles() {
    require_tool("ffmpeg");
    let dir = tempfile::tempdir().unwrap();
    let state = state_with(dir.path()).await;
    let running = start(state.clone()).await.unwrap();
    let addr = running.addr;
    let (id, key, stream_url) = create_stream(&state, "HLS radio", false).await;
    assert_eq!(stream_url, format!("/live/{id}.m3u8"));
    // Not on air: 404.
    assert_eq!(http_get(addr, &stream_url, "").await.status, 404);

    let file = live_tone(
        dir.path(),
        "tone.mp3",
        10.0,
        &["-c:a", "libmp3lame", "-b:a", "128k"],
    );
    let sent = decoded_secs(&file);
    let mut src = icecast_source(addr, &id, &key, &file, "mp3", "audio/mpeg");
    wait_for(
        Duration::from_secs(10),
        "the stream to go live",
        async || state.live().get(&id).is_some(),
    )
    .await;

    // The master: every rung, AAC first, with CODECS and BANDWIDTH; it waits for the first
    // segment rather than answering too early.
    let master = http_get(addr, &stream_url, "").await;
    assert_eq!(master.status, 200, "{}", master.text());
    assert_eq!(
        master.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(master.header("access-control-allow-origin"), Some("*"));
    let m = master.text();
    assert_eq!(m.matches("#EXT-X-STREAM-INF:").count(), 4, "{m}");
    let rungs = uris(&m);
    assert_eq!(
        rungs,
        ["aac-48", "aac-96", "aac-160", "mp3-128"].map(|r| format!("{id}/{r}/index.m3u8")),
        "{m}"
    );
    assert!(
        m.contains("BANDWIDTH=") && m.contains("AVERAGE-BANDWIDTH=96000"),
        "{m}"
    );
    assert!(
        m.contains("CODECS=\"mp4a.40.2\"") && m.contains("CODECS=\"mp4a.40.34\""),
        "{m}"
    );

    // ffmpeg plays the master while the stream is live (and stops at EXT-X-ENDLIST).
    let heard = dir.path().join("heard.wav");
    let player = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(format!("http://{addr}{stream_url}"))
        .args(["-map", "0:a:0"])
        .arg(&heard)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // LL-HLS: the playlist advertises parts and blocking reload; asking for the hinted part
    // blocks until it is cut, then lists it.
    let base = format!("/live/{id}/aac-96");
    let pl = http_get(addr, &format!("{base}/index.m3u8"), "").await;
    assert_eq!(pl.status, 200);
    assert_eq!(pl.header("cache-control"), Some("no-cache"));
    let text = pl.text();
    assert!(text.contains("CAN-BLOCK-RELOAD=YES"), "{text}");
    assert!(text.contains("#EXT-X-PART-INF:PART-TARGET="), "{text}");
    let hint = tag_uri(&text, "#EXT-X-PRELOAD-HINT:").unwrap();
    // {prefix}{msn}.{part}.m4s
    let nums: Vec<u64> = hint
        .rsplit_once('-')
        .unwrap()
        .1
        .trim_end_matches(".m4s")
        .split('.')
        .map(|n| n.parse().unwrap())
        .collect();
    let (msn, part) = (nums[0], nums[1]);
    let asked = Instant::now();
    let blocked = http_get(
        addr,
        &format!("{base}/index.m3u8?_HLS_msn={msn}&_HLS_part={part}"),
        "",
    )
    .await;
    assert_eq!(blocked.status, 200);
    eprintln!(
        "blocking reload for part {msn}.{part} answered in {:?}",
        asked.elapsed()
    );
    let text = blocked.text();
    assert!(
        text.contains(&format!("URI=\"{hint}\"")) && text.contains("#EXT-X-PART:"),
        "the blocking reload lists part {msn}.{part}: {text}"
    );
    let p = http_get(addr, &format!("{base}/{hint}"), "").await;
    assert_eq!(p.status, 200);
    assert_eq!(p.header("content-type"), Some("audio/mp4"));
    assert!(p.body.windows(4).any(|w| w == b"moof"));
    // Bad reload values: 400.
    for q in [
        "_HLS_msn=x",
        "_HLS_part=1",
        "_HLS_msn=99999",
        "_HLS_skip=perhaps",
    ] {
        let g = http_get(addr, &format!("{base}/index.m3u8?{q}"), "").await;
        assert_eq!(g.status, 400, "{q}: {}", g.text());
    }
    assert_eq!(
        http_get(addr, &format!("/live/{id}/flac-9/index.m3u8"), "")
            .await
            .status,
        404
    );

    // A title through Icecast's admin endpoint becomes timed ID3 in the next segments.
    let g = http_get(
        addr,
        &format!("/admin/metadata?mount=/live/{id}&mode=updinfo&song=Bach%20-%20Air"),
        &format!("Authorization: Basic {}\r\n", b64(&format!("source:{key}"))),
    )
    .await;
    assert_eq!(g.status, 200);
    // HLS clients are viewers.
    wait_for(
        Duration::from_secs(8),
        "HLS viewers in the document",
        async || stream_doc(&state, &id).await["viewer_count"].as_i64() >= Some(1),
    )
    .await;

    let st = tokio::task::spawn_blocking(move || src.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success(), "the ffmpeg source failed");
    let out = tokio::task::spawn_blocking(move || player.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg played the master: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let played = decoded_secs(&heard);
    eprintln!("ffmpeg played {played:.3} s from the master; the source sent {sent:.3} s");
    assert!(
        played > 3.0 && played < sent + 1.0,
        "ffmpeg played {played:.2} s of {sent:.2} s"
    );

    // After the end: every rung is whole, lasts what its playlist says and what was sent.
    for rung in ["aac-48", "aac-96", "aac-160", "mp3-128"] {
        let (path, listed) =
            fetch_rung(addr, &format!("/live/{id}/{rung}"), "", dir.path(), rung).await;
        let got = decoded_secs(&path);
        eprintln!("{rung}: decoded {got:.3} s, listed {listed:.3} s, sent {sent:.3} s");
        let seg = SEGMENT.as_secs_f64();
        assert!(
            (got - listed).abs() < seg,
            "{rung}: decoded {got:.3} s, listed {listed:.3} s"
        );
        assert!(
            (got - sent).abs() < seg,
            "{rung}: decoded {got:.3} s, sent {sent:.3} s"
        );
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            bytes.windows(10).any(|w| w == b"Bach - Air"),
            "{rung}: the title is in the segments (ID3)"
        );
    }
    wait_for(
        Duration::from_secs(10),
        "the viewers to go quiet",
        async || state.live().hls().viewers(&id) == 0,
    )
    .await;
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_aac_stream_needs_a_token_carried_through_the_playlists() {
    require_tool("ffmpeg");
    let dir = tempfile::tempdir().unwrap();
    let state = state_with(dir.path()).await;
    let running = start(state.clone()).await.unwrap();
    let addr = running.addr;
    let (id, key, stream_url) = create_stream(&state, "Private AAC", true).await;
    // Two runs of 3 s: the source drops after the first and returns within the grace period.
    let file = live_tone(dir.path(), "tone.aac", 3.0, &["-c:a", "aac", "-b:a", "96k"]);
    let sent = 2.0 * decoded_secs(&file);
    let mut src = icecast_source(addr, &id, &key, &file, "adts", "audio/aac");
    wait_for(
        Duration::from_secs(10),
        "the stream to go live",
        async || state.live().get(&id).is_some(),
    )
    .await;
    let anonymous = http_get(addr, &stream_url, "").await;
    assert!(
        anonymous.status == 401 || anonymous.status == 404,
        "{}",
        anonymous.status
    );
    let t = token(&state);
    let q = format!("?access_token={t}");
    let master = http_get(addr, &format!("{stream_url}{q}"), "").await;
    assert_eq!(master.status, 200, "{}", master.text());
    for u in uris(&master.text()) {
        assert!(u.ends_with(&q), "{u}");
    }
    // A Bearer header works too, for the rung playlists as well.
    let g = http_get(
        addr,
        &format!("/live/{id}/mp3-128/index.m3u8"),
        &format!("Authorization: Bearer {t}\r\n"),
    )
    .await;
    assert_eq!(g.status, 200);
    let st = tokio::task::spawn_blocking(move || src.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success());
    let mut src = icecast_source(addr, &id, &key, &file, "adts", "audio/aac");
    let st = tokio::task::spawn_blocking(move || src.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success());
    wait_for(Duration::from_secs(10), "the stream to end", async || {
        http_get(addr, &format!("/live/{id}/aac-160/index.m3u8{q}"), "")
            .await
            .text()
            .contains("#EXT-X-ENDLIST")
    })
    .await;
    let pl = http_get(addr, &format!("/live/{id}/aac-160/index.m3u8{q}"), "").await;
    for u in uris(&pl.text()) {
        assert!(u.ends_with(&q), "{u}");
    }
    assert!(
        pl.text().contains(&format!("init.mp4{q}\"")),
        "{}",
        pl.text()
    );
    // Segments without the token: refused.
    let first = uris(&pl.text())[0].clone();
    let bare = first.split('?').next().unwrap();
    let g = http_get(addr, &format!("/live/{id}/aac-160/{bare}"), "").await;
    assert!(g.status == 401 || g.status == 404, "{}", g.status);
    let (path, listed) = fetch_rung(
        addr,
        &format!("/live/{id}/aac-160"),
        &q,
        dir.path(),
        "aac-160",
    )
    .await;
    // fetch_rung used the URIs as listed (with the token).
    let got = decoded_secs(&path);
    eprintln!("private aac-160: decoded {got:.3} s, listed {listed:.3} s, sent {sent:.3} s");
    assert!(
        (got - sent).abs() < SEGMENT.as_secs_f64(),
        "decoded {got:.3} s, sent {sent:.3} s"
    );
    running.stop().await.unwrap();
}

/// The hls.js build the browser test loads: `$VEZA_HLSJS`, or `tests/browser`'s npm install.
fn hlsjs() -> PathBuf {
    let path = std::env::var_os("VEZA_HLSJS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/browser/node_modules/hls.js/dist/hls.min.js"
            ))
        });
    assert!(
        path.exists(),
        "hls.js is needed for this test: npm ci --prefix tests/browser (scripts/test does it)"
    );
    path
}

/// The page: hls.js plays the master playlist in an audio element (LL-HLS on) and posts what
/// happens to `/report`.
const PAGE: &str = r#"<!doctype html><html><body><audio id="a" muted autoplay></audio>
<script src="/hls.js"></script>
<script>
const report = (o) => fetch('/report', {method: 'POST', body: JSON.stringify(o)});
const a = document.getElementById('a');
if (!Hls.isSupported()) { report({ev: 'unsupported'}); }
const hls = new Hls({lowLatencyMode: true, debug: DEBUG});
hls.on(Hls.Events.MANIFEST_PARSED, (e, d) => report({ev: 'manifest', levels: d.levels.length}));
hls.on(Hls.Events.FRAG_BUFFERED, (e, d) => report({ev: 'frag', sn: d.frag.sn, part: d.part ? d.part.index : -1}));
hls.on(Hls.Events.FRAG_PARSING_METADATA, (e, d) => {
  for (const s of d.samples) report({ev: 'id3', text: Array.from(s.data).map((c) => String.fromCharCode(c)).join('')});
});
hls.on(Hls.Events.ERROR, (e, d) => report({ev: 'error', details: d.details, fatal: d.fatal}));
hls.loadSource('SRC');
hls.attachMedia(a);
a.play().catch((e) => report({ev: 'play_error', message: String(e)}));
setInterval(() => report({ev: 'time', t: a.currentTime, paused: a.paused, latency: hls.latency}), 250);
</script></body></html>"#;

/// Serves the page and hls.js, and sends each report (a JSON body) to `tx`.
async fn page_server(src: String, tx: tokio::sync::mpsc::UnboundedSender<Value>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let page = PAGE.replace("SRC", &src).replace(
        "DEBUG",
        if std::env::var_os("VEZA_HLSJS_DEBUG").is_some() {
            "true"
        } else {
            "false"
        },
    );
    let js = std::fs::read(hlsjs()).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let (page, js, tx) = (page.clone(), js.clone(), tx.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut b = [0u8; 8192];
                let end = loop {
                    let Ok(n) = tcp.read(&mut b).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&b[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap_or(0));
                while buf.len() < end + len {
                    let Ok(n) = tcp.read(&mut b).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&b[..n]);
                }
                let (ct, body): (&str, Vec<u8>) = if head.starts_with("post /report") {
                    if let Ok(v) = serde_json::from_slice(&buf[end..end + len]) {
                        let _ = tx.send(v);
                    }
                    ("text/plain", Vec::new())
                } else if head.starts_with("get /hls.js") {
                    ("text/javascript", js)
                } else {
                    ("text/html", page.into_bytes())
                };
                let _ = tcp
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
                let _ = tcp.write_all(&body).await;
            });
        }
    });
    addr
}

/// hls.js in headless Chromium plays the live master playlist: it parses the ladder, buffers
/// fragments and parts (LL-HLS), playback time advances, and the title set through
/// `/admin/metadata` reaches it as ID3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_in_chromium_plays_the_live_ladder() {
    require_tool("ffmpeg");
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("Chromium is needed for this test (Debian: apt-get install chromium; scripts/test does it)");
    let dir = tempfile::tempdir().unwrap();
    let state = state_with(dir.path()).await;
    let running = start(state.clone()).await.unwrap();
    let addr = running.addr;
    let (id, key, stream_url) = create_stream(&state, "Browser radio", false).await;
    let file = live_tone(
        dir.path(),
        "tone.mp3",
        14.0,
        &["-c:a", "libmp3lame", "-b:a", "128k"],
    );
    let mut src = icecast_source(addr, &id, &key, &file, "mp3", "audio/mpeg");
    wait_for(
        Duration::from_secs(10),
        "the stream to go live",
        async || state.live().get(&id).is_some(),
    )
    .await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let page = page_server(format!("http://{addr}{stream_url}"), tx).await;
    let profile = dir.path().join("chromium-profile");
    let mut browser = Command::new(chromium)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--mute-audio",
            "--autoplay-policy=no-user-gesture-required",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("http://{page}/"))
        .arg("--enable-logging=stderr")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(match std::env::var_os("VEZA_HLSJS_DEBUG") {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::null(),
        })
        .spawn()
        .unwrap();
    let metadata = format!("/admin/metadata?mount=/live/{id}&mode=updinfo&song=Bach%20-%20Air");
    let auth = format!("Authorization: Basic {}\r\n", b64(&format!("source:{key}")));
    let (mut levels, mut frags, mut parts, mut played, mut titled) = (0, 0, 0, 0.0f64, false);
    let mut errors = Vec::new();
    let mut title_sent = false;
    let mut latency = f64::NAN;
    let mut seen: Vec<(i64, i64)> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    while let Ok(Some(v)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        match v["ev"].as_str().unwrap_or("") {
            "manifest" => levels = v["levels"].as_u64().unwrap_or(0),
            "frag" => {
                seen.push((
                    v["sn"].as_i64().unwrap_or(-9),
                    v["part"].as_i64().unwrap_or(-9),
                ));
                frags += 1;
                if v["part"].as_i64().unwrap_or(-1) >= 0 {
                    parts += 1;
                }
            }
            "id3" => titled |= v["text"].as_str().unwrap_or("").contains("Bach - Air"),
            "time" => {
                played = played.max(v["t"].as_f64().unwrap_or(0.0));
                if played > 0.0 {
                    latency = v["latency"].as_f64().unwrap_or(f64::NAN);
                }
            }
            "error" | "play_error" | "unsupported" => errors.push(v.clone()),
            _ => {}
        }
        if played > 1.0 && !title_sent {
            title_sent = true;
            assert_eq!(http_get(addr, &metadata, &auth).await.status, 200);
        }
        if played > 4.0 && titled {
            break;
        }
    }
    let _ = browser.kill();
    let _ = browser.wait();
    let _ = src.kill();
    let _ = src.wait();
    let mut runs: Vec<((i64, i64), usize)> = Vec::new();
    for f in &seen {
        match runs.last_mut() {
            Some((g, n)) if g == f => *n += 1,
            _ => runs.push((*f, 1)),
        }
    }
    eprintln!(
        "hls.js: {levels} levels, {frags} fragments buffered ({parts} parts), played {played:.2} s, latency {latency:.2} s, title {titled}, errors {errors:?}"
    );
    assert_eq!(levels, 4, "hls.js parsed the ladder; errors {errors:?}");
    assert!(
        frags > 0 && parts > 0,
        "hls.js loaded LL-HLS parts; errors {errors:?}"
    );
    assert!(
        played > 4.0,
        "playback advanced {played:.2} s; errors {errors:?}"
    );
    assert!(titled, "the ID3 title reached hls.js; errors {errors:?}");
    assert!(
        errors.iter().all(|e| e["fatal"] == false),
        "no fatal error: {errors:?}"
    );
    running.stop().await.unwrap();
}
