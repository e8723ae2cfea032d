//! `loadgen`: an HTTP/1.1 load generator for on-demand serving, loopback only.
//!
//! N keep-alive connections (default 100), each sending one GET at a time for a bounded duration,
//! cycling through the given URLs (each connection starts at a different one), optionally with a
//! random byte range of a fixed size. Reports requests/s, latency percentiles (p50, p99, max),
//! errors and bytes/s, as text and as one JSON line (for scripts).
//!
//! ```text
//! loadgen [--connections 100] [--duration 10] [--warmup 2] [--threads N] [--label NAME]
//!         [--range SIZE:TOTAL] (--url URL ... | --urls-file FILE)
//! ```
//!
//! `--range 65536:5000000` asks each request for `bytes=o-(o+65535)` with `o` random in
//! `0..=5000000-65536` (expecting 206). Only `http://127.0.0.1` and `http://localhost` URLs are
//! taken: this is a loopback benchmark, not a tool to load other hosts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
struct Target {
    /// `host:port`.
    addr: String,
    /// Path and query.
    path: String,
}

#[derive(Debug)]
struct Args {
    connections: usize,
    duration: Duration,
    warmup: Duration,
    threads: usize,
    label: String,
    range: Option<(u64, u64)>,
    targets: Vec<Target>,
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "loadgen: {msg}\nusage: loadgen [--connections N] [--duration SECS] [--warmup SECS] [--threads N] [--label NAME] [--range SIZE:TOTAL] (--url URL ... | --urls-file FILE)"
    );
    std::process::exit(2)
}

fn parse_url(u: &str) -> Target {
    let rest = u
        .strip_prefix("http://")
        .unwrap_or_else(|| usage(&format!("{u}: only http:// URLs")));
    let (addr, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        usage(&format!(
            "{u}: loopback hosts only (127.0.0.1, localhost, [::1])"
        ));
    }
    let addr = if addr.contains(':') {
        addr.to_owned()
    } else {
        format!("{addr}:80")
    };
    Target {
        addr,
        path: path.to_owned(),
    }
}

fn parse_args() -> Args {
    let mut a = Args {
        connections: 100,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        label: "run".into(),
        range: None,
        targets: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    let secs = |v: Option<String>| -> Duration {
        v.and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && (0.0..=3600.0).contains(s))
            .map(Duration::from_secs_f64)
            .unwrap_or_else(|| usage("durations are seconds, at most 3600"))
    };
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--connections" | "-c" => {
                a.connections = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| (1..=10_000).contains(&n))
                    .unwrap_or_else(|| usage("--connections takes 1 to 10000"));
            }
            "--duration" | "-d" => a.duration = secs(it.next()),
            "--warmup" => a.warmup = secs(it.next()),
            "--threads" => {
                a.threads = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| (1..=64).contains(&n))
                    .unwrap_or_else(|| usage("--threads takes 1 to 64"));
            }
            "--label" => a.label = it.next().unwrap_or_else(|| usage("--label takes a name")),
            "--range" => {
                let v = it.next().unwrap_or_default();
                let (s, t) = v
                    .split_once(':')
                    .and_then(|(s, t)| Some((s.parse::<u64>().ok()?, t.parse::<u64>().ok()?)))
                    .filter(|&(s, t)| s > 0 && s <= t)
                    .unwrap_or_else(|| usage("--range takes SIZE:TOTAL with 0 < SIZE <= TOTAL"));
                a.range = Some((s, t));
            }
            "--url" => {
                let u = it.next().unwrap_or_else(|| usage("--url takes a URL"));
                a.targets.push(parse_url(&u));
            }
            "--urls-file" => {
                let p = it
                    .next()
                    .unwrap_or_else(|| usage("--urls-file takes a path"));
                let text = std::fs::read_to_string(&p)
                    .unwrap_or_else(|e| usage(&format!("cannot read {p}: {e}")));
                a.targets.extend(
                    text.lines()
                        .filter(|l| !l.trim().is_empty())
                        .map(|l| parse_url(l.trim())),
                );
            }
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    if a.targets.is_empty() {
        usage("no URL given");
    }
    a
}

/// What one connection measured.
#[derive(Debug, Default)]
struct Tally {
    /// Latency of each request completed after the warm-up, in microseconds.
    latencies: Vec<u32>,
    errors: u64,
    bytes: u64,
}

/// xorshift64*: enough randomness for offsets, no dependency.
fn next_rand(s: &mut u64) -> u64 {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    s.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

async fn connect(
    addr: &str,
) -> Result<
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    Box<dyn std::error::Error + Send + Sync>,
> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

async fn worker(
    id: usize,
    args: Arc<Args>,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut t = Tally::default();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ ((id as u64 + 1) * 0x1234_5678_9ABC_DEF1);
    let mut i = id;
    let mut send = None;
    while !stop.load(Ordering::Relaxed) {
        let target = &args.targets[i % args.targets.len()];
        i += 1;
        if send.is_none() {
            match connect(&target.addr).await {
                Ok(s) => send = Some(s),
                Err(_) => {
                    t.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = send.as_mut() else { continue };
        let mut req = Request::get(target.path.as_str()).header("host", target.addr.as_str());
        let mut expect = 200;
        if let Some((size, total)) = args.range {
            let o = next_rand(&mut seed) % (total - size + 1);
            req = req.header("range", format!("bytes={o}-{}", o + size - 1));
            expect = 206;
        }
        let Ok(req) = req.body(Empty::<Bytes>::new()) else {
            t.errors += 1;
            continue;
        };
        let started = Instant::now();
        let result = async {
            s.ready().await?;
            let resp = s.send_request(req).await?;
            let status = resp.status().as_u16();
            let mut body = resp.into_body();
            let mut n = 0u64;
            while let Some(frame) = body.frame().await {
                if let Some(d) = frame?.data_ref() {
                    n += d.len() as u64;
                }
            }
            Ok::<_, hyper::Error>((status, n))
        }
        .await;
        let took = started.elapsed();
        let counted = measuring.load(Ordering::Relaxed);
        match result {
            Ok((status, n)) if status == expect => {
                if counted {
                    t.latencies
                        .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                    t.bytes += n;
                }
            }
            Ok(_) => {
                if counted {
                    t.errors += 1;
                }
            }
            Err(_) => {
                if counted {
                    t.errors += 1;
                }
                send = None;
            }
        }
    }
    t
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    f64::from(sorted[i]) / 1000.0
}

fn main() {
    let args = Arc::new(parse_args());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .unwrap_or_else(|e| usage(&format!("cannot start the runtime: {e}")));
    rt.block_on(async {
        let measuring = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..args.connections)
            .map(|i| {
                tokio::spawn(worker(
                    i,
                    args.clone(),
                    measuring.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(args.warmup).await;
        measuring.store(true, Ordering::Relaxed);
        let started = Instant::now();
        tokio::time::sleep(args.duration).await;
        measuring.store(false, Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        let (mut errors, mut bytes) = (0u64, 0u64);
        for t in tasks {
            // A connection stuck on a request past the end is not waited for long.
            if let Ok(Ok(t)) = tokio::time::timeout(Duration::from_secs(5), t).await {
                all.extend_from_slice(&t.latencies);
                errors += t.errors;
                bytes += t.bytes;
            }
        }
        all.sort_unstable();
        let n = all.len();
        let rps = n as f64 / elapsed;
        let (p50, p99, max) = (pct(&all, 0.50), pct(&all, 0.99), pct(&all, 1.0));
        let mbps = bytes as f64 / elapsed / 1e6;
        println!(
            "{}: {} connections, {:.1} s: {n} requests, {rps:.0} req/s, p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms, {errors} errors, {mbps:.1} MB/s",
            args.label,
            args.connections,
            elapsed
        );
        println!(
            "{{\"label\":\"{}\",\"connections\":{},\"seconds\":{elapsed:.3},\"requests\":{n},\"rps\":{rps:.1},\"p50_ms\":{p50:.3},\"p99_ms\":{p99:.3},\"max_ms\":{max:.3},\"errors\":{errors},\"bytes_per_s\":{:.0}}}",
            args.label.replace(['"', '\\'], ""),
            args.connections,
            bytes as f64 / elapsed
        );
    });
}
