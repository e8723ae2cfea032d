//! `hls_cold`: how long a player waits for its first HLS VOD segment of a file nobody has played.
//!
//! Each run uploads the file again (a new file id, so nothing is cached for it), then times the
//! player's sequence on one keep-alive connection: master playlist, the first rendition's media
//! playlist, its first segment (whole body). Prints each run and the median and worst totals, as
//! text and as one JSON line. Loopback servers only.
//!
//! ```text
//! hls_cold --base http://127.0.0.1:PORT --file FILE.flac [--runs 5] [--rendition NAME]
//! ```
//! Without `--rendition`, the first rendition of the master playlist is used (as players do).

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

fn usage(msg: &str) -> ! {
    eprintln!(
        "hls_cold: {msg}\nusage: hls_cold --base http://127.0.0.1:PORT --file FILE [--runs N] [--rendition NAME]"
    );
    std::process::exit(2)
}

async fn connect(addr: &str) -> Sender {
    let stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| usage(&format!("cannot connect to {addr}: {e}")));
    let _ = stream.set_nodelay(true);
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap_or_else(|e| usage(&format!("handshake: {e}")));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// The bearer token of `--token` (uploads need a creator's token).
static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

async fn call(s: &mut Sender, addr: &str, method: &str, path: &str, body: Bytes) -> (u16, Bytes) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr)
        .header("content-type", "application/octet-stream");
    if let Some(t) = TOKEN.get() {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req
        .body(Full::new(body))
        .unwrap_or_else(|e| usage(&format!("bad request: {e}")));
    if s.ready().await.is_err() {
        usage("the connection closed");
    }
    let resp = s
        .send_request(req)
        .await
        .unwrap_or_else(|e| usage(&format!("{method} {path}: {e}")));
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| usage(&format!("{method} {path}: {e}")))
        .to_bytes();
    (status, body)
}

/// The first URI (non-comment line) of a playlist.
fn first_uri(playlist: &[u8]) -> String {
    String::from_utf8_lossy(playlist)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_else(|| usage("a playlist has no URI"))
        .to_owned()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let mut base = None;
    let mut file = None;
    let mut runs = 5usize;
    let mut rendition: Option<String> = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--base" => base = it.next(),
            "--file" => file = it.next(),
            "--runs" => {
                runs = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| (1..=100).contains(&n))
                    .unwrap_or_else(|| usage("--runs takes 1 to 100"));
            }
            "--rendition" => rendition = it.next(),
            "--token" => {
                let _ = TOKEN.set(it.next().unwrap_or_else(|| usage("--token needs a value")));
            }
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    let base = base.unwrap_or_else(|| usage("--base is needed"));
    let addr = base
        .strip_prefix("http://")
        .map(|s| s.trim_end_matches('/').to_owned())
        .filter(|a| a.starts_with("127.0.0.1:") || a.starts_with("localhost:"))
        .unwrap_or_else(|| usage("--base must be http://127.0.0.1:PORT (loopback only)"));
    let file = file.unwrap_or_else(|| usage("--file is needed"));
    let data = Bytes::from(std::fs::read(&file).unwrap_or_else(|e| usage(&format!("{file}: {e}"))));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| usage(&format!("runtime: {e}")));
    rt.block_on(async {
        let mut totals = Vec::new();
        for run in 1..=runs {
            let mut s = connect(&addr).await;
            let (st, body) = call(&mut s, &addr, "POST", "/api/v1/audio?name=cold.flac", data.clone()).await;
            if st != 201 {
                usage(&format!("upload: status {st}: {}", String::from_utf8_lossy(&body)));
            }
            let v: serde_json::Value =
                serde_json::from_slice(&body).unwrap_or_else(|e| usage(&format!("upload answer: {e}")));
            let id = v["data"]["id"]
                .as_str()
                .unwrap_or_else(|| usage("upload answer has no id"))
                .to_owned();
            drop(s);
            let hls = format!("/api/v1/audio/{id}/hls");
            let t0 = Instant::now();
            let mut s = connect(&addr).await;
            let (st, master) = call(&mut s, &addr, "GET", &format!("{hls}/master.m3u8"), Bytes::new()).await;
            let t_master = t0.elapsed();
            if st != 200 {
                usage(&format!("master: status {st}"));
            }
            let media_uri = match &rendition {
                Some(r) => format!("{r}/index.m3u8"),
                None => first_uri(&master),
            };
            let (st, media) = call(&mut s, &addr, "GET", &format!("{hls}/{media_uri}"), Bytes::new()).await;
            let t_media = t0.elapsed();
            if st != 200 {
                usage(&format!("{media_uri}: status {st}"));
            }
            let dir = media_uri.rsplit_once('/').map_or("", |(d, _)| d);
            let seg = first_uri(&media);
            let (st, body) = call(&mut s, &addr, "GET", &format!("{hls}/{dir}/{seg}"), Bytes::new()).await;
            let total = t0.elapsed();
            if st != 200 || body.is_empty() {
                usage(&format!("{dir}/{seg}: status {st}, {} bytes", body.len()));
            }
            println!(
                "run {run}: {dir}/{seg} ({} bytes): master {:.1} ms, media playlist {:.1} ms, first segment {:.1} ms (total)",
                body.len(),
                ms(t_master),
                ms(t_media),
                ms(total)
            );
            totals.push(ms(total));
        }
        totals.sort_by(f64::total_cmp);
        let median = totals[totals.len() / 2];
        let worst = totals[totals.len() - 1];
        println!("cold master -> playlist -> first segment: median {median:.1} ms, worst {worst:.1} ms over {runs} runs");
        println!("{{\"runs\":{runs},\"median_ms\":{median:.2},\"worst_ms\":{worst:.2}}}");
    });
}
