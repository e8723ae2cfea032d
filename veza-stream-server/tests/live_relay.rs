//! Two server processes on loopback, one PostgreSQL database and the local NATS server: a stream
//! ingested by ffmpeg on node A is heard whole by a listener on node B (relayed through NATS), the
//! viewer count is the sum over both nodes on both nodes, each listener is one analytics session
//! (no double counting), and node B drops its relay when the stream ends.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SECRET: &str = "relay test secret, at least thirty-two characters";

fn database_url() -> String {
    std::env::var("VEZA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn require(addr: &str, what: &str) {
    assert!(
        TcpStream::connect(addr).is_ok(),
        "{what} is needed at {addr} for this test and is not running (see DEVELOPERS.md / .ci/run)"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node(dir: &Path) -> Node {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_veza-stream-server"))
        .env_clear()
        .env("VEZA_DATA_DIR", dir)
        .env("STREAM_SERVER_HOST", "127.0.0.1")
        .env("STREAM_SERVER_PORT", port.to_string())
        .env("DATABASE_URL", database_url())
        .env("NATS_URL", "nats://127.0.0.1:4222")
        .env("JWT_SECRET", SECRET)
        .env("RATE_LIMIT_PER_IP", "off")
        .env("RATE_LIMIT_PER_USER", "off")
        .env("LIVE_GRACE_PERIOD", "1s")
        .env("LIVE_HLS_LADDER", "off")
        .env("ANALYTICS_FLUSH_INTERVAL", "200ms")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let t0 = Instant::now();
    while http(addr, "GET", "/health", None, None).0 != 200 {
        assert!(t0.elapsed() < Duration::from_secs(20), "node did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Node { child, addr }
}

/// One HTTP/1.0 request; returns (status, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Vec<u8>) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, Vec::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: x\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (0, out);
    };
    let status = String::from_utf8_lossy(&out[..end])
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out[end + 4..].to_vec())
}

fn json(addr: SocketAddr, method: &str, path: &str, token: &str, body: Option<&str>) -> Value {
    let (status, b) = http(addr, method, path, Some(token), body);
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {}",
        String::from_utf8_lossy(&b)
    );
    serde_json::from_slice(&b).unwrap()
}

/// A progressive listener reading until the stream ends; returns the bytes.
fn listen(addr: SocketAddr, id: &str) -> std::thread::JoinHandle<Vec<u8>> {
    let id = id.to_owned();
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(format!("GET /live/{id}.mp3?burst=20000 HTTP/1.0\r\n\r\n").as_bytes())
            .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let end = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head");
        assert!(
            out.starts_with(b"HTTP/1.0 200"),
            "{}",
            String::from_utf8_lossy(&out[..end])
        );
        out[end + 4..].to_vec()
    })
}

fn decoded_secs(dir: &Path, name: &str, bytes: &[u8]) -> f64 {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&p)
        .args(["-f", "s16le", "-ac", "1", "-ar", "8000", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.len() as f64 / 16000.0
}

#[test]
fn a_stream_ingested_on_one_node_is_heard_on_another() {
    require("127.0.0.1:4222", "NATS");
    require("127.0.0.1:5432", "PostgreSQL");
    let dir = tempfile::tempdir().unwrap();
    let a_dir = dir.path().join("a");
    let b_dir = dir.path().join("b");
    let a = node(&a_dir);
    let b = node(&b_dir);
    let out = Command::new(env!("CARGO_BIN_EXE_veza-stream-server"))
        .env_clear()
        .env("VEZA_DATA_DIR", &a_dir)
        .env("JWT_SECRET", SECRET)
        .args(["token", "--sub", "dj", "--role", "creator"])
        .output()
        .unwrap();
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let created = json(
        a.addr,
        "POST",
        "/api/v1/streams",
        &token,
        Some(r#"{"title":"relay"}"#),
    );
    let id = created["data"]["id"].as_str().unwrap().to_owned();
    let key = created["data"]["ingest_key"].as_str().unwrap().to_owned();
    // Not on air anywhere: node B says 404 (nobody answers its relay request).
    assert_eq!(
        http(b.addr, "GET", &format!("/live/{id}"), None, None).0,
        404
    );

    let tone = dir.path().join("tone.mp3");
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("sine=frequency=440:sample_rate=44100:duration=8")
        .args(["-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k"])
        .arg(&tone)
        .status()
        .unwrap();
    assert!(st.success());
    let sent = decoded_secs(dir.path(), "sent.mp3", &std::fs::read(&tone).unwrap());
    let mut src = Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-i"])
        .arg(&tone)
        .args(["-c", "copy", "-f", "mp3", "-content_type", "audio/mpeg"])
        .arg(format!("icecast://source:{key}@{}/live/{id}", a.addr))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        let doc = json(
            a.addr,
            "GET",
            &format!("/api/v1/streams/{id}"),
            &token,
            None,
        );
        if doc["data"]["is_live"] == true {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the stream did not go live"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let on_a = listen(a.addr, &id);
    let on_b = listen(b.addr, &id);
    // Both nodes count both listeners (each node's count plus the other's, through NATS).
    let t0 = Instant::now();
    loop {
        let va = json(
            a.addr,
            "GET",
            &format!("/api/v1/streams/{id}"),
            &token,
            None,
        );
        let vb = json(
            b.addr,
            "GET",
            &format!("/api/v1/streams/{id}"),
            &token,
            None,
        );
        if va["data"]["viewer_count"] == 2 && vb["data"]["viewer_count"] == 2 {
            assert_eq!(vb["data"]["is_live"], true);
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(6),
            "viewer counts: A {} B {}",
            va["data"]["viewer_count"],
            vb["data"]["viewer_count"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(src.wait().unwrap().success(), "the ffmpeg source failed");
    let heard_a = decoded_secs(dir.path(), "a.mp3", &on_a.join().unwrap());
    let heard_b = decoded_secs(dir.path(), "b.mp3", &on_b.join().unwrap());
    assert!(
        (heard_a - sent).abs() < 0.1,
        "sent {sent:.3} s, A heard {heard_a:.3} s"
    );
    assert!(
        (heard_b - sent).abs() < 0.1,
        "sent {sent:.3} s, B heard {heard_b:.3} s"
    );

    // Ended everywhere; one analytics session per listener across the two nodes.
    let t0 = Instant::now();
    loop {
        let vb = json(
            b.addr,
            "GET",
            &format!("/api/v1/streams/{id}"),
            &token,
            None,
        );
        let an = json(
            a.addr,
            "GET",
            &format!("/api/v1/streams/{id}/analytics"),
            &token,
            None,
        );
        if vb["data"]["is_live"] == false && an["data"]["sessions"] == 2 {
            assert_eq!(vb["data"]["viewer_count"], 0);
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "after the end: B {} analytics {}",
            vb["data"],
            an["data"]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        http(b.addr, "GET", &format!("/live/{id}"), None, None).0,
        404
    );
}
