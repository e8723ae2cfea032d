//! `listeners`: a load generator for Icecast-compatible live streams, loopback only.
//!
//! The tool is the source and the audience at once, so it knows when each frame was sent:
//!
//! - Source (`--source URL --source-key KEY`): one connection that `PUT`s (or `SOURCE`s, with
//!   `--source-method SOURCE`) synthetic MPEG-1 Layer III frames, 128 kbit/s 44.1 kHz joint stereo
//!   CBR, paced in real time (1152 samples per frame, 417 or 418 bytes with the padding pattern of
//!   a real CBR encoder). Each frame is decodable silence: a header, 32 bytes of zero side
//!   information (part2_3_length = 0, so decoders output silence and ignore the rest) and, in the
//!   ancillary bytes, a tag: magic, sequence number, send time (CLOCK_REALTIME, nanoseconds, so
//!   several processes on one machine can compare).
//! - Listeners (`--url URL --listeners N`): N connections ramped at `--ramp` per second, each
//!   reading continuously, skipping ICY metadata (`--icy`), finding the tagged frames and
//!   measuring time to first byte, time to first whole frame, start lag (send time to receipt of
//!   the first frame: how far behind live a player that starts playing on the first frame stays,
//!   which is what a burst costs), distance behind live (now minus the send time of the newest
//!   frame received, sampled once per second per listener in the steady window: delivery delay,
//!   once a burst has been read), received rate, sequence gaps, disconnects and refusals.
//!
//! ```text
//! listeners --url URL [--url URL2 ...] [--listeners 1000] [--ramp 1000] [--duration 30] [--settle 5]
//!           [--procs 1] [--threads 1] [--icy] [--label NAME] [--behind-threshold 5]
//!           [--min-rate 0.95] [--connect-timeout 10] [--server-pid PID [--server-pid PID2 ...]]
//!           [--source URL --source-key KEY [--source-user source] [--source-method PUT|SOURCE]
//!            [--expect-continue] [--source-lead 5]]
//! ```
//!
//! Time line: the source starts `--source-lead` seconds before the listeners (so a server's burst
//! buffer is full); listeners start at the epoch, ramped; the steady window runs from the end of
//! the ramp plus `--settle` seconds to the end of `--duration` (counted from the epoch). Distance
//! samples, received rates and the server's CPU (`--server-pid`: utime + stime from
//! `/proc/PID/stat`, VmRSS and VmHWM at the end) are taken in that window.
//!
//! A listener is *falling behind* when one of its samples in the window exceeds
//! `--behind-threshold` seconds or when it received less than `--min-rate` of the source's frames
//! in the window. Disconnected listeners are counted apart.
//!
//! Several servers (for example two nodes of a cluster, one ingesting and one relaying): `--url`
//! may be given U times, and listener `i` then goes to URL `i mod U` (the summary adds one line
//! and the JSON a `per_url` entry per URL); `--server-pid` may be given several times, and the
//! server CPU and memory figures are then the sums over those processes (each process's own
//! figures are in the JSON's `servers`). With `--procs` a multiple of U, each child process talks
//! to one URL only.
//!
//! `--procs P` runs the listeners in P child processes of this program (listener `i` goes to
//! process `i mod P`), each raising RLIMIT_NOFILE to its hard limit, and merges their results: one
//! process may hold at most 20,000 open files here.
//!
//! Output: a human summary, then one JSON line (for scripts). Only `127.0.0.1`, `localhost` and
//! `[::1]` URLs are taken: this is a loopback benchmark, not a tool to load other hosts.
//!
//! HTTP is written by hand on raw TCP rather than with an HTTP client crate: Icecast answers
//! listeners with an `ICY 200 OK` status line (and SHOUTcast-era servers too), which HTTP client
//! crates reject, and the bodies are endless with no length; a source's request body likewise has
//! neither a length nor chunked framing (as ffmpeg sends it). A minimal HTTP/1.0 exchange is all
//! that is needed.

// The JSON report is one `json!` literal with many keys.
#![recursion_limit = "256"]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{MissedTickBehavior, interval_at, sleep_until, timeout_at};

/// Samples per MPEG-1 Layer III frame.
const SAMPLES_PER_FRAME: u64 = 1152;
/// Sample rate of the synthetic stream, Hz.
const SAMPLE_RATE: u64 = 44_100;
/// Bit rate of the synthetic stream, bit/s.
const BITRATE: u64 = 128_000;
/// Magic at the start of the tag in each frame's ancillary data.
const TAG_MAGIC: [u8; 8] = *b"VZLBTAG1";
/// Offset of the tag: after the 4-byte header and 32 bytes of stereo side information.
const TAG_OFFSET: usize = 36;
/// Bytes of a frame the listeners look at: header, side information, magic, sequence, time.
const HEAD_LEN: usize = TAG_OFFSET + 24;
/// Largest response head a listener accepts.
const MAX_HEAD: usize = 16 * 1024;
/// Read buffer per listener.
const READ_BUF: usize = 4096;

/// Source frames per second (44100 / 1152).
fn frames_per_sec() -> f64 {
    SAMPLE_RATE as f64 / SAMPLES_PER_FRAME as f64
}

/// Length of frame `seq`: 144 * bitrate / rate bytes per frame on average (417.96), so most
/// frames carry the padding byte, as a CBR encoder spreads it.
fn frame_len(seq: u64) -> usize {
    let per = 144 * BITRATE;
    let a = (seq + 1) * per / SAMPLE_RATE;
    let b = seq * per / SAMPLE_RATE;
    (a - b) as usize
}

/// Appends frame `seq`, sent at `send_ns` (CLOCK_REALTIME), to `out`.
fn write_frame(out: &mut Vec<u8>, seq: u64, send_ns: u64) {
    let len = frame_len(seq);
    let start = out.len();
    out.resize(start + len, 0);
    let f = &mut out[start..];
    // MPEG-1 Layer III, no CRC; 128 kbit/s, 44.1 kHz, padding bit; joint stereo (M/S), original.
    f[0] = 0xFF;
    f[1] = 0xFB;
    f[2] = if len == 418 { 0x92 } else { 0x90 };
    f[3] = 0x64;
    // f[4..36]: side information, all zero (main_data_begin 0, part2_3_length 0: silence).
    f[TAG_OFFSET..TAG_OFFSET + 8].copy_from_slice(&TAG_MAGIC);
    f[TAG_OFFSET + 8..TAG_OFFSET + 16].copy_from_slice(&seq.to_le_bytes());
    f[TAG_OFFSET + 16..TAG_OFFSET + 24].copy_from_slice(&send_ns.to_le_bytes());
}

/// Reads a tagged frame's head: `(frame length, sequence, send time)`.
fn parse_head(h: &[u8]) -> Option<(usize, u64, u64)> {
    if h.len() < HEAD_LEN
        || h[0] != 0xFF
        || h[1] != 0xFB
        || h[2] & 0xFD != 0x90
        || h[TAG_OFFSET..TAG_OFFSET + 8] != TAG_MAGIC
    {
        return None;
    }
    let len = 417 + usize::from((h[2] >> 1) & 1);
    let seq = u64::from_le_bytes(h[TAG_OFFSET + 8..TAG_OFFSET + 16].try_into().ok()?);
    let ns = u64::from_le_bytes(h[TAG_OFFSET + 16..TAG_OFFSET + 24].try_into().ok()?);
    Some((len, seq, ns))
}

/// Nanoseconds since the Unix epoch (CLOCK_REALTIME), comparable across processes.
fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The `Instant` at which CLOCK_REALTIME reads `ns`.
fn instant_at_realtime(ns: u64) -> Instant {
    let (now_i, now_r) = (Instant::now(), realtime_ns());
    if ns >= now_r {
        now_i + Duration::from_nanos(ns - now_r)
    } else {
        now_i
            .checked_sub(Duration::from_nanos(now_r - ns))
            .unwrap_or(now_i)
    }
}

/// Finds the tagged frames in a byte stream (audio bytes only, ICY metadata removed).
#[derive(Debug, Default)]
struct Scanner {
    /// Bytes not yet consumed (less than a frame head plus one read).
    buf: Vec<u8>,
    /// Bytes of the current frame still to skip after its head.
    skip: usize,
    synced: bool,
    /// Times the stream lost frame sync after having it.
    resyncs: u64,
}

impl Scanner {
    /// Feeds audio bytes; calls `on_frame(seq, send_ns)` for each tagged frame found.
    fn feed(&mut self, mut data: &[u8], on_frame: &mut impl FnMut(u64, u64)) {
        if self.skip > 0 && self.buf.is_empty() {
            let n = self.skip.min(data.len());
            self.skip -= n;
            data = &data[n..];
        }
        if data.is_empty() {
            return;
        }
        self.buf.extend_from_slice(data);
        let mut pos = 0;
        loop {
            if self.skip > 0 {
                let n = self.skip.min(self.buf.len() - pos);
                pos += n;
                self.skip -= n;
                if self.skip > 0 {
                    break;
                }
            }
            if self.buf.len() - pos < HEAD_LEN {
                break;
            }
            if let Some((len, seq, ns)) = parse_head(&self.buf[pos..pos + HEAD_LEN]) {
                on_frame(seq, ns);
                self.synced = true;
                pos += HEAD_LEN;
                self.skip = len - HEAD_LEN;
            } else {
                if self.synced {
                    self.synced = false;
                    self.resyncs += 1;
                }
                // Next candidate sync word (0xFF 0xFB), or keep a trailing 0xFF.
                let rest = &self.buf[pos + 1..];
                pos = match rest.windows(2).position(|w| w == [0xFF, 0xFB]) {
                    Some(i) => pos + 1 + i,
                    None if rest.last() == Some(&0xFF) => self.buf.len() - 1,
                    None => self.buf.len(),
                };
            }
        }
        self.buf.drain(..pos);
    }
}

/// Where an ICY stream is: audio bytes left before the next metadata block, or inside one.
#[derive(Debug, Clone, Copy)]
enum IcyState {
    Audio(usize),
    Len,
    Meta(usize),
}

/// Removes ICY metadata blocks (`icy-metaint` audio bytes, a length byte, length * 16 bytes).
#[derive(Debug)]
struct IcyDemux {
    metaint: usize,
    state: IcyState,
    /// Non-empty metadata blocks seen.
    blocks: u64,
}

impl IcyDemux {
    fn new(metaint: usize) -> Self {
        Self {
            metaint,
            state: IcyState::Audio(metaint),
            blocks: 0,
        }
    }

    /// Feeds received body bytes; calls `audio` with each run of audio bytes.
    fn feed(&mut self, mut data: &[u8], audio: &mut impl FnMut(&[u8])) {
        while !data.is_empty() {
            match self.state {
                IcyState::Audio(left) => {
                    let n = left.min(data.len());
                    audio(&data[..n]);
                    data = &data[n..];
                    self.state = if n == left {
                        IcyState::Len
                    } else {
                        IcyState::Audio(left - n)
                    };
                }
                IcyState::Len => {
                    let len = usize::from(data[0]) * 16;
                    data = &data[1..];
                    self.state = if len == 0 {
                        IcyState::Audio(self.metaint)
                    } else {
                        self.blocks += 1;
                        IcyState::Meta(len)
                    };
                }
                IcyState::Meta(left) => {
                    let n = left.min(data.len());
                    data = &data[n..];
                    self.state = if n == left {
                        IcyState::Audio(self.metaint)
                    } else {
                        IcyState::Meta(left - n)
                    };
                }
            }
        }
    }
}

/// A loopback URL split for a raw request.
#[derive(Debug, Clone)]
struct Target {
    /// The URL as given (passed on to child processes).
    url: String,
    /// `host:port` to connect to.
    addr: String,
    /// `Host` header value.
    host: String,
    /// Path and query.
    path: String,
}

fn parse_url(u: &str) -> Result<Target, String> {
    let rest = u
        .strip_prefix("http://")
        .ok_or_else(|| format!("{u}: only http:// URLs"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = match hostport.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => h,
        _ => hostport,
    };
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        return Err(format!(
            "{u}: loopback hosts only (127.0.0.1, localhost, [::1])"
        ));
    }
    let addr = if hostport.len() > host.len() {
        hostport.to_owned()
    } else {
        format!("{hostport}:80")
    };
    Ok(Target {
        url: u.to_owned(),
        addr,
        host: hostport.to_owned(),
        path: path.to_owned(),
    })
}

/// How the source connects.
#[derive(Debug, Clone)]
struct SourceArgs {
    target: Target,
    user: String,
    key: String,
    /// `PUT` or `SOURCE`.
    method: String,
    expect_continue: bool,
}

#[derive(Debug, Clone)]
struct Args {
    /// Listener `i` goes to `urls[i % urls.len()]`.
    urls: Vec<Target>,
    listeners: usize,
    ramp: f64,
    duration: Duration,
    settle: Duration,
    procs: usize,
    threads: usize,
    icy: bool,
    label: String,
    behind_threshold: Duration,
    min_rate: f64,
    connect_timeout: Duration,
    /// The server processes measured (figures summed).
    server_pids: Vec<u32>,
    source: Option<SourceArgs>,
    source_lead: Duration,
    /// In a child process: (index, count).
    child: Option<(usize, usize)>,
    /// In a child process: the listeners' epoch, CLOCK_REALTIME ns.
    epoch_ns: Option<u64>,
}

const USAGE: &str = "usage: listeners --url URL [--url URL2 ...] [--listeners N] [--ramp PER_S] [--duration S] [--settle S] [--procs P] [--threads T] [--icy] [--label NAME] [--behind-threshold S] [--min-rate R] [--connect-timeout S] [--server-pid PID ...] [--source URL --source-key KEY [--source-user USER] [--source-method PUT|SOURCE] [--expect-continue] [--source-lead S]]";

fn usage(msg: &str) -> ! {
    eprintln!("listeners: {msg}\n{USAGE}");
    std::process::exit(2)
}

fn parse_args(argv: impl Iterator<Item = String>) -> Args {
    let mut a = Args {
        urls: Vec::new(),
        listeners: 1000,
        ramp: 1000.0,
        duration: Duration::from_secs(30),
        settle: Duration::from_secs(5),
        procs: 1,
        threads: 1,
        icy: false,
        label: "run".into(),
        behind_threshold: Duration::from_secs(5),
        min_rate: 0.95,
        connect_timeout: Duration::from_secs(10),
        server_pids: Vec::new(),
        source: None,
        source_lead: Duration::from_secs(5),
        child: None,
        epoch_ns: None,
    };
    let mut source_url = None;
    let mut source_key = None;
    let mut source_user = "source".to_owned();
    let mut source_method = "PUT".to_owned();
    let mut expect_continue = false;
    let mut it = argv;
    let val = |it: &mut dyn Iterator<Item = String>, flag: &str| -> String {
        it.next()
            .unwrap_or_else(|| usage(&format!("{flag} takes a value")))
    };
    let secs = |v: String, flag: &str| -> Duration {
        v.parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && (0.0..=3600.0).contains(s))
            .map(Duration::from_secs_f64)
            .unwrap_or_else(|| usage(&format!("{flag} takes seconds, 0 to 3600")))
    };
    fn num<T: std::str::FromStr + PartialOrd>(v: &str, flag: &str, lo: T, hi: T) -> T {
        v.parse::<T>()
            .ok()
            .filter(|n| *n >= lo && *n <= hi)
            .unwrap_or_else(|| usage(&format!("{flag}: {v:?} out of range")))
    }
    while let Some(flag) = it.next() {
        let f = flag.as_str();
        match f {
            "--url" => {
                a.urls
                    .push(parse_url(&val(&mut it, f)).unwrap_or_else(|e| usage(&e)));
            }
            "--listeners" | "-n" => a.listeners = num(&val(&mut it, f), f, 0, 1_000_000),
            "--ramp" => a.ramp = num(&val(&mut it, f), f, 1.0, 1_000_000.0),
            "--duration" | "-d" => a.duration = secs(val(&mut it, f), f),
            "--settle" => a.settle = secs(val(&mut it, f), f),
            "--procs" => a.procs = num(&val(&mut it, f), f, 1, 64),
            "--threads" => a.threads = num(&val(&mut it, f), f, 1, 64),
            "--icy" => a.icy = true,
            "--label" => a.label = val(&mut it, f),
            "--behind-threshold" => a.behind_threshold = secs(val(&mut it, f), f),
            "--min-rate" => a.min_rate = num(&val(&mut it, f), f, 0.0, 1.0),
            "--connect-timeout" => a.connect_timeout = secs(val(&mut it, f), f),
            "--server-pid" => a.server_pids.push(num(&val(&mut it, f), f, 1, u32::MAX)),
            "--source" => source_url = Some(val(&mut it, f)),
            "--source-key" => source_key = Some(val(&mut it, f)),
            "--source-user" => source_user = val(&mut it, f),
            "--source-method" => {
                source_method = val(&mut it, f).to_ascii_uppercase();
                if !matches!(source_method.as_str(), "PUT" | "SOURCE") {
                    usage("--source-method takes PUT or SOURCE");
                }
            }
            "--expect-continue" => expect_continue = true,
            "--source-lead" => a.source_lead = secs(val(&mut it, f), f),
            "--child" => {
                let v = val(&mut it, f);
                let (i, n) = v
                    .split_once('/')
                    .and_then(|(i, n)| Some((i.parse().ok()?, n.parse().ok()?)))
                    .filter(|&(i, n): &(usize, usize)| i < n)
                    .unwrap_or_else(|| usage("--child takes I/N"));
                a.child = Some((i, n));
            }
            "--epoch-ns" => a.epoch_ns = Some(num(&val(&mut it, f), f, 0, u64::MAX)),
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    if let Some(u) = source_url {
        let target = parse_url(&u).unwrap_or_else(|e| usage(&e));
        let key = source_key.unwrap_or_else(|| usage("--source needs --source-key"));
        a.source = Some(SourceArgs {
            target,
            user: source_user,
            key,
            method: source_method,
            expect_continue,
        });
    }
    if a.urls.len() > 16 {
        usage("at most 16 --url");
    }
    if a.urls.is_empty() && a.listeners > 0 {
        usage("no --url given (or --listeners 0 with --source for a source only)");
    }
    a
}

/// Standard base64 (for HTTP Basic credentials).
fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(input.len().div_ceil(3) * 4);
    for c in input.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                s.push(char::from(T[((n >> shift) & 63) as usize]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// End of an HTTP response head (index after the blank line).
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Status code of an `HTTP/1.x NNN` or `ICY NNN` status line.
fn status_code(head: &[u8]) -> Option<u16> {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = std::str::from_utf8(&head[..line_end]).ok()?.trim_end();
    let mut parts = line.split_ascii_whitespace();
    let proto = parts.next()?;
    if !(proto.starts_with("HTTP/1.") || proto == "ICY") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// A header's value (case-insensitive name) in a response head.
fn header<'a>(head: &'a [u8], name: &str) -> Option<&'a str> {
    std::str::from_utf8(head)
        .ok()?
        .lines()
        .skip(1)
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
}

/// What the source did.
#[derive(Debug, Default, Clone, Serialize)]
struct SourceReport {
    frames: u64,
    bytes: u64,
    /// Largest lateness of a frame against its real-time schedule, ms.
    late_max_ms: f64,
    /// The server's status line, when it answered.
    response: Option<String>,
    error: Option<String>,
}

/// Shared state between the source thread and the rest.
#[derive(Debug, Default)]
struct SourceShared {
    stop: AtomicBool,
    connected: AtomicBool,
    frames: AtomicU64,
    report: Mutex<SourceReport>,
}

impl SourceShared {
    fn fail(&self, e: String) {
        if let Ok(mut r) = self.report.lock() {
            r.error.get_or_insert(e);
        }
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The source: connects, sends the request head, then paced frames until told to stop.
fn run_source(cfg: &SourceArgs, shared: &Arc<SourceShared>) {
    let addr = match cfg
        .target
        .addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
    {
        Some(a) => a,
        None => return shared.fail(format!("cannot resolve {}", cfg.target.addr)),
    };
    let mut sock = match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => return shared.fail(format!("source connect: {e}")),
    };
    let _ = sock.set_nodelay(true);
    let _ = sock.set_write_timeout(Some(Duration::from_secs(5)));
    let auth = base64(format!("{}:{}", cfg.user, cfg.key).as_bytes());
    let proto = if cfg.method == "SOURCE" {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    let mut req = format!(
        "{} {} {proto}\r\nHost: {}\r\nAuthorization: Basic {auth}\r\nContent-Type: audio/mpeg\r\nUser-Agent: veza-listeners/1\r\nIce-Name: listeners bench\r\nIce-Public: 0\r\nIce-Audio-Info: bitrate=128;samplerate=44100;channels=2\r\n",
        cfg.method, cfg.target.path, cfg.target.host
    );
    if cfg.expect_continue {
        req.push_str("Expect: 100-continue\r\n");
    }
    req.push_str("\r\n");
    if let Err(e) = sock.write_all(req.as_bytes()) {
        return shared.fail(format!("source request: {e}"));
    }
    let reader = match sock.try_clone() {
        Ok(r) => r,
        Err(e) => return shared.fail(format!("source socket: {e}")),
    };
    let _ = reader.set_read_timeout(Some(Duration::from_millis(200)));
    // The answer comes whenever the server chooses (Icecast: at once; a server that reads the
    // body first: at the end), so a thread watches for it and stops the source on a refusal.
    let watcher = {
        let shared = Arc::clone(shared);
        let mut reader = reader;
        std::thread::spawn(move || {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !shared.stop.load(Ordering::Relaxed) {
                match reader.read(&mut buf) {
                    Ok(0) => {
                        if !shared.stop.load(Ordering::Relaxed) {
                            shared.fail("source: the server closed the connection".into());
                        }
                        return;
                    }
                    Ok(n) if head.len() < MAX_HEAD => {
                        head.extend_from_slice(&buf[..n]);
                        // Several heads may come (100 Continue, then 200).
                        while let Some(end) = head_end(&head) {
                            let line = String::from_utf8_lossy(
                                &head[..head.iter().position(|&b| b == b'\n').unwrap_or(end)],
                            )
                            .trim_end()
                            .to_owned();
                            let code = status_code(&head);
                            if let Ok(mut r) = shared.report.lock() {
                                r.response = Some(line.clone());
                            }
                            match code {
                                Some(100) => shared.connected.store(true, Ordering::SeqCst),
                                Some(c) if (200..300).contains(&c) => {
                                    shared.connected.store(true, Ordering::SeqCst);
                                }
                                _ => return shared.fail(format!("source refused: {line}")),
                            }
                            head.drain(..end);
                        }
                    }
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => return shared.fail(format!("source read: {e}")),
                }
            }
        })
    };
    if cfg.expect_continue {
        let until = Instant::now() + Duration::from_secs(5);
        while !shared.connected.load(Ordering::SeqCst) && !shared.stop.load(Ordering::SeqCst) {
            if Instant::now() > until {
                shared.fail("source: no 100 Continue within 5 s".into());
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    } else {
        shared.connected.store(true, Ordering::SeqCst);
    }
    let frame_ns = 1e9 / frames_per_sec();
    let start = Instant::now();
    let mut seq = 0u64;
    let mut bytes = 0u64;
    let mut late_max = Duration::ZERO;
    let mut buf = Vec::with_capacity(16 * 1024);
    while !shared.stop.load(Ordering::Relaxed) {
        let due = start + Duration::from_nanos((seq as f64 * frame_ns) as u64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let now = Instant::now();
        late_max = late_max.max(now.saturating_duration_since(due));
        buf.clear();
        // Every frame that is due (at most 2 s worth, if this thread was starved).
        while buf.len() < 80 * 418
            && start + Duration::from_nanos((seq as f64 * frame_ns) as u64) <= now
        {
            write_frame(&mut buf, seq, realtime_ns());
            seq += 1;
        }
        if let Err(e) = sock.write_all(&buf) {
            shared.fail(format!("source write: {e}"));
            break;
        }
        bytes += buf.len() as u64;
        shared.frames.store(seq, Ordering::Relaxed);
    }
    let _ = sock.shutdown(std::net::Shutdown::Both);
    let _ = watcher.join();
    if let Ok(mut r) = shared.report.lock() {
        r.frames = seq;
        r.bytes = bytes;
        r.late_max_ms = late_max.as_secs_f64() * 1e3;
    }
}

/// What one process's listeners measured (a child prints this as JSON; the parent merges).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Partial {
    requested: usize,
    connected: usize,
    /// Refusals by kind (`connect_ConnectionRefused`, `status_503`, `timeout`, ...).
    refused: BTreeMap<String, usize>,
    disconnected: usize,
    no_audio: usize,
    falling_behind: usize,
    over_threshold: usize,
    low_rate: usize,
    ttfb_us: Vec<u32>,
    first_audio_us: Vec<u32>,
    start_lag_us: Vec<u32>,
    behind_us: Vec<u32>,
    /// Frames received in the window over frames sent in it, per listener that stayed.
    rates: Vec<f32>,
    bytes_window: u64,
    frames_skipped: u64,
    listeners_with_gaps: usize,
    duplicates: u64,
    resyncs: u64,
    icy_blocks: u64,
}

impl Partial {
    fn merge(&mut self, o: Partial) {
        self.requested += o.requested;
        self.connected += o.connected;
        for (k, v) in o.refused {
            *self.refused.entry(k).or_default() += v;
        }
        self.disconnected += o.disconnected;
        self.no_audio += o.no_audio;
        self.falling_behind += o.falling_behind;
        self.over_threshold += o.over_threshold;
        self.low_rate += o.low_rate;
        self.ttfb_us.extend(o.ttfb_us);
        self.first_audio_us.extend(o.first_audio_us);
        self.start_lag_us.extend(o.start_lag_us);
        self.behind_us.extend(o.behind_us);
        self.rates.extend(o.rates);
        self.bytes_window += o.bytes_window;
        self.frames_skipped += o.frames_skipped;
        self.listeners_with_gaps += o.listeners_with_gaps;
        self.duplicates += o.duplicates;
        self.resyncs += o.resyncs;
        self.icy_blocks += o.icy_blocks;
    }
}

/// The shared plan of one process's listeners.
#[derive(Debug)]
struct Plan {
    target: Target,
    request: Vec<u8>,
    icy: bool,
    connect_timeout: Duration,
    window_start: Instant,
    end: Instant,
}

/// What one listener measured.
#[derive(Debug, Default)]
struct ListenerResult {
    refused: Option<String>,
    ttfb_us: Option<u32>,
    first_audio_us: Option<u32>,
    /// Send time to receipt of the first frame: how far behind live a player that starts on
    /// the first frame plays (a burst puts it that far back for the whole session).
    start_lag_us: Option<u32>,
    disconnected: bool,
    behind_us: Vec<u32>,
    frames_window: u64,
    bytes_window: u64,
    last_seq: Option<u64>,
    newest_ns: u64,
    frames_skipped: u64,
    duplicates: u64,
    resyncs: u64,
    icy_blocks: u64,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// One listener: connect, request, read the head, then read and scan until the end.
async fn listener(plan: Arc<Plan>, start_at: Instant) -> ListenerResult {
    let mut r = ListenerResult::default();
    sleep_until(start_at.into()).await;
    let t0 = Instant::now();
    let deadline = (t0 + plan.connect_timeout).min(plan.end);
    let refuse = |mut r: ListenerResult, why: String| {
        r.refused = Some(why);
        r
    };
    let mut stream = match timeout_at(deadline.into(), TcpStream::connect(&plan.target.addr)).await
    {
        Err(_) => return refuse(r, "timeout".into()),
        Ok(Err(e)) => return refuse(r, format!("connect_{:?}", e.kind())),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    match timeout_at(deadline.into(), stream.write_all(&plan.request)).await {
        Err(_) => return refuse(r, "timeout".into()),
        Ok(Err(e)) => return refuse(r, format!("write_{:?}", e.kind())),
        Ok(Ok(())) => {}
    }
    let mut rbuf = vec![0u8; READ_BUF];
    let mut head = Vec::with_capacity(512);
    let body_at = loop {
        let n = match timeout_at(deadline.into(), stream.read(&mut rbuf)).await {
            Err(_) => return refuse(r, "timeout".into()),
            Ok(Err(e)) => return refuse(r, format!("read_{:?}", e.kind())),
            Ok(Ok(0)) => return refuse(r, "closed".into()),
            Ok(Ok(n)) => n,
        };
        r.ttfb_us.get_or_insert_with(|| micros(t0.elapsed()));
        head.extend_from_slice(&rbuf[..n]);
        if let Some(end) = head_end(&head) {
            break end;
        }
        if head.len() > MAX_HEAD {
            return refuse(r, "bad_response".into());
        }
    };
    match status_code(&head) {
        Some(200) => {}
        Some(c) => return refuse(r, format!("status_{c}")),
        None => return refuse(r, "bad_response".into()),
    }
    let mut icy = if plan.icy {
        header(&head[..body_at], "icy-metaint")
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&m| m > 0)
            .map(IcyDemux::new)
    } else {
        None
    };
    let mut scan = Scanner::default();
    let mut feed = |r: &mut ListenerResult, data: &[u8], now: Instant| {
        let in_window = now >= plan.window_start;
        if in_window {
            r.bytes_window += data.len() as u64;
        }
        let mut on_frame = |seq: u64, ns: u64| {
            if r.first_audio_us.is_none() {
                r.first_audio_us = Some(micros(now.duration_since(t0)));
                r.start_lag_us = Some(
                    u32::try_from(realtime_ns().saturating_sub(ns) / 1000).unwrap_or(u32::MAX),
                );
            }
            if let Some(last) = r.last_seq {
                if seq > last + 1 {
                    r.frames_skipped += seq - last - 1;
                } else if seq <= last {
                    r.duplicates += 1;
                }
            }
            r.last_seq = Some(seq);
            r.newest_ns = r.newest_ns.max(ns);
            if in_window {
                r.frames_window += 1;
            }
        };
        match icy.as_mut() {
            Some(d) => d.feed(data, &mut |a: &[u8]| scan.feed(a, &mut on_frame)),
            None => scan.feed(data, &mut on_frame),
        }
    };
    let body = head.split_off(body_at);
    feed(&mut r, &body, Instant::now());
    let mut tick = interval_at((t0 + Duration::from_secs(1)).into(), Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let end = sleep_until(plan.end.into());
    tokio::pin!(end);
    loop {
        tokio::select! {
            biased;
            _ = &mut end => break,
            res = stream.read(&mut rbuf) => match res {
                Ok(0) | Err(_) => {
                    r.disconnected = true;
                    break;
                }
                Ok(n) => feed(&mut r, &rbuf[..n], Instant::now()),
            },
            _ = tick.tick() => {
                let now = Instant::now();
                if now >= plan.window_start && now < plan.end && r.newest_ns > 0 {
                    let behind = realtime_ns().saturating_sub(r.newest_ns);
                    r.behind_us.push(u32::try_from(behind / 1000).unwrap_or(u32::MAX));
                }
            }
        }
    }
    r.resyncs = scan.resyncs;
    r.icy_blocks = icy.map_or(0, |d| d.blocks);
    r
}

/// Runs this process's share of the listeners (index `k` of `n` processes) and tallies them,
/// one [`Partial`] per URL (listener `i` goes to URL `i mod U`).
fn run_listeners(args: &Args, k: usize, n: usize, epoch_ns: u64) -> Vec<Partial> {
    let epoch = instant_at_realtime(epoch_ns);
    let ramp_secs = args.listeners as f64 / args.ramp;
    let window_start = epoch + Duration::from_secs_f64(ramp_secs) + args.settle;
    let end = epoch + args.duration;
    let plans: Vec<Arc<Plan>> = args
        .urls
        .iter()
        .map(|target| {
            let mut request = format!(
                "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: veza-listeners/1\r\nAccept: */*\r\n",
                target.path, target.host
            );
            if args.icy {
                request.push_str("Icy-MetaData: 1\r\n");
            }
            request.push_str("\r\n");
            Arc::new(Plan {
                target: target.clone(),
                request: request.into_bytes(),
                icy: args.icy,
                connect_timeout: args.connect_timeout,
                window_start,
                end,
            })
        })
        .collect();
    if plans.is_empty() {
        return Vec::new();
    }
    let rt = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("listeners: cannot start the runtime: {e}");
            std::process::exit(1)
        }
    };
    let results = rt.block_on(async {
        let handles: Vec<_> = (k..args.listeners)
            .step_by(n)
            .map(|i| {
                let at = epoch + Duration::from_secs_f64(i as f64 / args.ramp);
                let u = i % plans.len();
                (u, tokio::spawn(listener(Arc::clone(&plans[u]), at)))
            })
            .collect();
        let mut out = Vec::with_capacity(handles.len());
        for (u, h) in handles {
            match h.await {
                Ok(r) => out.push((u, r)),
                Err(e) => out.push((
                    u,
                    ListenerResult {
                        refused: Some(format!("task_{e}")),
                        ..ListenerResult::default()
                    },
                )),
            }
        }
        out
    });
    let window = end.saturating_duration_since(window_start);
    let expected = window.as_secs_f64() * frames_per_sec();
    let threshold_us = micros(args.behind_threshold);
    let mut parts: Vec<Partial> = plans.iter().map(|_| Partial::default()).collect();
    for (u, r) in results {
        let p = &mut parts[u];
        p.requested += 1;
        if let Some(why) = r.refused {
            *p.refused.entry(why).or_default() += 1;
            continue;
        }
        p.connected += 1;
        p.ttfb_us.extend(r.ttfb_us);
        p.first_audio_us.extend(r.first_audio_us);
        p.start_lag_us.extend(r.start_lag_us);
        p.bytes_window += r.bytes_window;
        p.frames_skipped += r.frames_skipped;
        p.listeners_with_gaps += usize::from(r.frames_skipped > 0);
        p.duplicates += r.duplicates;
        p.resyncs += r.resyncs;
        p.icy_blocks += r.icy_blocks;
        let over = r.behind_us.iter().any(|&b| b > threshold_us);
        p.behind_us.extend(r.behind_us);
        if r.disconnected {
            p.disconnected += 1;
            continue;
        }
        if r.last_seq.is_none() {
            p.no_audio += 1;
        }
        let rate = if expected > 0.0 {
            r.frames_window as f64 / expected
        } else {
            1.0
        };
        p.rates.push(rate as f32);
        let low = rate < args.min_rate;
        p.over_threshold += usize::from(over);
        p.low_rate += usize::from(low);
        p.falling_behind += usize::from(over || low);
    }
    parts
}

/// CPU time (utime + stime) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// A `kB` field of `/proc/PID/status`.
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a constant of the system.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Raises RLIMIT_NOFILE to its hard limit; returns the soft limit now in force.
fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; setrlimit reads it.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
    }
    r.rlim_cur
}

/// Value at quantile `q` (nearest rank) of sorted values.
fn quantile(sorted: &[u32], q: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}

fn ms(v: Option<u32>) -> serde_json::Value {
    v.map_or(serde_json::Value::Null, |us| {
        serde_json::json!((f64::from(us) / 100.0).round() / 10.0)
    })
}

/// CPU and memory of one server process over the steady window.
#[derive(Debug, Default, Clone, Serialize)]
struct ProcessFigures {
    pid: u32,
    cpu_pct: Option<f64>,
    rss_kb: Option<u64>,
    hwm_kb: Option<u64>,
}

/// CPU and memory of the servers over the steady window (sums over the server processes).
#[derive(Debug, Default, Clone)]
struct ServerFigures {
    cpu_pct: Option<f64>,
    rss_kb: Option<u64>,
    hwm_kb: Option<u64>,
    /// Each server process's own figures.
    servers: Vec<ProcessFigures>,
    gen_cpu_pct: Option<f64>,
    /// The whole machine's busy time over the window, percent of all cores.
    machine_busy_pct: Option<f64>,
}

/// `(busy, total)` jiffies of all CPUs from `/proc/stat` (idle and iowait are not busy).
fn machine_ticks() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> = s
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_ascii_whitespace()
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

/// Sum of the values when every one is known.
fn sum_all<T: std::iter::Sum<T>>(v: impl Iterator<Item = Option<T>>) -> Option<T> {
    v.collect::<Option<Vec<T>>>()
        .filter(|v| !v.is_empty())
        .map(|v| v.into_iter().sum())
}

/// Samples the servers' and the generator's CPU at the window's start and end, and the
/// servers' memory at the end (a thread: the listeners may run in this process).
fn measure(
    servers: Vec<u32>,
    gen_pids: Vec<u32>,
    start: Instant,
    end: Instant,
) -> std::thread::JoinHandle<ServerFigures> {
    std::thread::spawn(move || {
        let hz = clock_ticks_per_sec();
        let now = Instant::now();
        if start > now {
            std::thread::sleep(start - now);
        }
        let t0 = Instant::now();
        let s0: Vec<Option<u64>> = servers.iter().map(|&p| cpu_ticks(p)).collect();
        let m0 = machine_ticks();
        let g0: Vec<Option<u64>> = gen_pids.iter().map(|&p| cpu_ticks(p)).collect();
        let now = Instant::now();
        // Stop a little before the listeners do, so all processes are still there.
        let stop = end.checked_sub(Duration::from_millis(200)).unwrap_or(end);
        if stop > now {
            std::thread::sleep(stop - now);
        }
        let secs = t0.elapsed().as_secs_f64().max(1e-3);
        let s1: Vec<Option<u64>> = servers.iter().map(|&p| cpu_ticks(p)).collect();
        let m1 = machine_ticks();
        let gen_ticks: u64 = gen_pids
            .iter()
            .zip(g0)
            .filter_map(|(&p, a)| Some(cpu_ticks(p)?.saturating_sub(a?)))
            .sum();
        let per: Vec<ProcessFigures> = servers
            .iter()
            .zip(s0.iter().zip(&s1))
            .map(|(&pid, (a, b))| ProcessFigures {
                pid,
                cpu_pct: a
                    .zip(*b)
                    .map(|(a, b)| (b.saturating_sub(a) as f64 / hz) / secs * 100.0),
                rss_kb: status_kb(pid, "VmRSS"),
                hwm_kb: status_kb(pid, "VmHWM"),
            })
            .collect();
        ServerFigures {
            cpu_pct: sum_all(per.iter().map(|f| f.cpu_pct)),
            rss_kb: sum_all(per.iter().map(|f| f.rss_kb)),
            hwm_kb: sum_all(per.iter().map(|f| f.hwm_kb)),
            servers: per,
            gen_cpu_pct: Some(gen_ticks as f64 / hz / secs * 100.0),
            machine_busy_pct: m0.zip(m1).and_then(|((b0, t0), (b1, t1))| {
                (t1 > t0).then(|| b1.saturating_sub(b0) as f64 / (t1 - t0) as f64 * 100.0)
            }),
        }
    })
}

/// Child arguments: the same run, one share of the listeners, no source.
fn child_args(a: &Args, k: usize, n: usize, epoch_ns: u64) -> Vec<String> {
    let mut v = vec![
        "--listeners".into(),
        a.listeners.to_string(),
        "--ramp".into(),
        a.ramp.to_string(),
        "--duration".into(),
        a.duration.as_secs_f64().to_string(),
        "--settle".into(),
        a.settle.as_secs_f64().to_string(),
        "--threads".into(),
        a.threads.to_string(),
        "--label".into(),
        a.label.clone(),
        "--behind-threshold".into(),
        a.behind_threshold.as_secs_f64().to_string(),
        "--min-rate".into(),
        a.min_rate.to_string(),
        "--connect-timeout".into(),
        a.connect_timeout.as_secs_f64().to_string(),
        "--child".into(),
        format!("{k}/{n}"),
        "--epoch-ns".into(),
        epoch_ns.to_string(),
    ];
    for u in &a.urls {
        v.push("--url".into());
        v.push(u.url.clone());
    }
    if a.icy {
        v.push("--icy".into());
    }
    v
}

fn main() {
    let args = parse_args(std::env::args().skip(1));
    let nofile = raise_nofile();
    if let Some((k, n)) = args.child {
        let epoch = args.epoch_ns.unwrap_or_else(realtime_ns);
        let p = run_listeners(&args, k, n, epoch);
        match serde_json::to_string(&p) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("listeners: child {k}: {e}");
                std::process::exit(1)
            }
        }
        return;
    }
    let per_proc = args.listeners.div_ceil(args.procs);
    if per_proc as u64 + 64 > nofile {
        usage(&format!(
            "{per_proc} listeners per process but only {nofile} open files allowed: raise --procs"
        ));
    }
    let ramp_secs = args.listeners as f64 / args.ramp;
    let window_secs = args.duration.as_secs_f64() - ramp_secs - args.settle.as_secs_f64();
    if args.listeners > 0 && window_secs < 1.0 {
        usage(&format!(
            "--duration {} s leaves no steady window after the ramp ({ramp_secs:.1} s) and --settle ({} s)",
            args.duration.as_secs_f64(),
            args.settle.as_secs_f64()
        ));
    }

    // The source first, so the server has a mount (and a full burst buffer) for the listeners.
    let shared = Arc::new(SourceShared::default());
    let source_thread = args.source.clone().map(|cfg| {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || run_source(&cfg, &shared))
    });
    if source_thread.is_some() {
        let until = Instant::now() + args.source_lead;
        while Instant::now() < until && !shared.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if shared.stop.load(Ordering::SeqCst) {
            let err = shared
                .report
                .lock()
                .ok()
                .and_then(|r| r.error.clone())
                .unwrap_or_default();
            eprintln!("listeners: the source failed: {err}");
            std::process::exit(1)
        }
    }

    // Children need a moment to start; the epoch leaves it to them.
    let lead = if args.procs > 1 { 1000 } else { 200 };
    let epoch_ns = realtime_ns() + lead * 1_000_000;
    let epoch = instant_at_realtime(epoch_ns);
    let window_start = epoch + Duration::from_secs_f64(ramp_secs) + args.settle;
    let end = epoch + args.duration;

    let mut children = Vec::new();
    if args.procs > 1 && args.listeners > 0 {
        let exe = std::env::current_exe().unwrap_or_else(|e| {
            eprintln!("listeners: cannot find my own executable: {e}");
            std::process::exit(1)
        });
        for k in 0..args.procs {
            match std::process::Command::new(&exe)
                .args(child_args(&args, k, args.procs, epoch_ns))
                .stdout(std::process::Stdio::piped())
                .spawn()
            {
                Ok(c) => children.push(c),
                Err(e) => {
                    eprintln!("listeners: cannot start child {k}: {e}");
                    for mut c in children {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    std::process::exit(1)
                }
            }
        }
    }
    let mut gen_pids = vec![std::process::id()];
    gen_pids.extend(children.iter().map(std::process::Child::id));
    let meter = measure(args.server_pids.clone(), gen_pids, window_start, end);

    // One tally per URL.
    let mut by_url: Vec<Partial> = args.urls.iter().map(|_| Partial::default()).collect();
    let mut add = |parts: Vec<Partial>| {
        for (t, p) in by_url.iter_mut().zip(parts) {
            t.merge(p);
        }
    };
    let mut child_errors = 0;
    if args.listeners == 0 {
        std::thread::sleep(end.saturating_duration_since(Instant::now()));
    } else if children.is_empty() {
        add(run_listeners(&args, 0, 1, epoch_ns));
    } else {
        for (k, c) in children.into_iter().enumerate() {
            let parsed = c
                .wait_with_output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| serde_json::from_slice::<Vec<Partial>>(&o.stdout).ok());
            match parsed {
                Some(p) => add(p),
                None => {
                    eprintln!("listeners: child {k} gave no result");
                    child_errors += 1;
                }
            }
        }
    }
    let figures = meter.join().unwrap_or_default();
    shared.stop.store(true, Ordering::SeqCst);
    if let Some(t) = source_thread {
        let _ = t.join();
    }
    let source = shared.report.lock().map(|r| r.clone()).unwrap_or_default();
    report(&args, by_url, &source, &figures, window_secs, child_errors);
}

/// The listeners' figures of a tally (counts, quantiles, rates) as JSON fields.
fn listener_stats(t: &mut Partial, window_secs: f64) -> serde_json::Map<String, serde_json::Value> {
    t.ttfb_us.sort_unstable();
    t.first_audio_us.sort_unstable();
    t.start_lag_us.sort_unstable();
    t.behind_us.sort_unstable();
    t.rates.sort_unstable_by(f32::total_cmp);
    let refused: usize = t.refused.values().sum();
    let ok = t.connected - t.disconnected - t.falling_behind;
    let q = |v: &[u32], x| ms(quantile(v, x));
    let rate_at = |x: f64| -> serde_json::Value {
        if t.rates.is_empty() {
            return serde_json::Value::Null;
        }
        let i = ((x * t.rates.len() as f64).ceil() as usize).clamp(1, t.rates.len()) - 1;
        serde_json::json!((f64::from(t.rates[i]) * 1000.0).round() / 1000.0)
    };
    let j = serde_json::json!({
        "connected": t.connected,
        "refused": refused,
        "refused_kinds": t.refused,
        "disconnected": t.disconnected,
        "no_audio": t.no_audio,
        "falling_behind": t.falling_behind,
        "over_threshold": t.over_threshold,
        "low_rate": t.low_rate,
        "ok": ok,
        "ttfb_p50_ms": q(&t.ttfb_us, 0.5),
        "ttfb_p99_ms": q(&t.ttfb_us, 0.99),
        "ttfb_max_ms": q(&t.ttfb_us, 1.0),
        "first_audio_p50_ms": q(&t.first_audio_us, 0.5),
        "first_audio_p99_ms": q(&t.first_audio_us, 0.99),
        "first_audio_max_ms": q(&t.first_audio_us, 1.0),
        "start_lag_p50_ms": q(&t.start_lag_us, 0.5),
        "start_lag_p99_ms": q(&t.start_lag_us, 0.99),
        "behind_p50_ms": q(&t.behind_us, 0.5),
        "behind_p99_ms": q(&t.behind_us, 0.99),
        "behind_max_ms": q(&t.behind_us, 1.0),
        "behind_samples": t.behind_us.len(),
        "rate_min": rate_at(0.0),
        "rate_p1": rate_at(0.01),
        "rate_p50": rate_at(0.5),
        "bytes_per_s": if window_secs > 0.0 { (t.bytes_window as f64 / window_secs).round() } else { 0.0 },
        "frames_skipped": t.frames_skipped,
        "listeners_with_gaps": t.listeners_with_gaps,
        "duplicates": t.duplicates,
        "resyncs": t.resyncs,
        "icy_blocks": t.icy_blocks,
    });
    match j {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// Prints the human summary and the JSON line.
fn report(
    args: &Args,
    mut by_url: Vec<Partial>,
    source: &SourceReport,
    fig: &ServerFigures,
    window_secs: f64,
    child_errors: usize,
) {
    let mut t = Partial::default();
    let mut per_url = Vec::new();
    for (u, p) in by_url.iter_mut().enumerate() {
        let mut s = listener_stats(p, window_secs);
        s.insert("url".into(), serde_json::json!(args.urls[u].url));
        s.insert("listeners".into(), serde_json::json!(p.requested));
        per_url.push(serde_json::Value::Object(s));
    }
    for p in by_url {
        t.merge(p);
    }
    let mut j = listener_stats(&mut t, window_secs);
    let extra = serde_json::json!({
        "label": args.label,
        "listeners": args.listeners,
        "procs": args.procs,
        "window_s": (window_secs * 10.0).round() / 10.0,
        "child_errors": child_errors,
        "source_frames": source.frames,
        "source_late_max_ms": (source.late_max_ms * 10.0).round() / 10.0,
        "source_response": source.response,
        "source_error": source.error,
        "server_pid": args.server_pids.first(),
        "server_pids": args.server_pids,
        "server_cpu_pct": fig.cpu_pct.map(|c| (c * 10.0).round() / 10.0),
        "server_rss_kb": fig.rss_kb,
        "server_hwm_kb": fig.hwm_kb,
        "servers": fig.servers.iter().map(|s| serde_json::json!({
            "pid": s.pid,
            "cpu_pct": s.cpu_pct.map(|c| (c * 10.0).round() / 10.0),
            "rss_kb": s.rss_kb,
            "hwm_kb": s.hwm_kb,
        })).collect::<Vec<_>>(),
        "generator_cpu_pct": fig.gen_cpu_pct.map(|c| (c * 10.0).round() / 10.0),
        "machine_busy_pct": fig.machine_busy_pct.map(|c| (c * 10.0).round() / 10.0),
        "per_url": if per_url.len() > 1 { serde_json::Value::Array(per_url.clone()) } else { serde_json::Value::Null },
    });
    if let serde_json::Value::Object(m) = extra {
        j.extend(m);
    }
    let j = serde_json::Value::Object(j);
    let g = |k: &str| j.get(k).map_or_else(String::new, ToString::to_string);
    let refused: usize = t.refused.values().sum();
    let ok = t.connected - t.disconnected - t.falling_behind;
    println!(
        "{}: {} listeners ({} procs): {} connected, {} refused {}, {} disconnected, {} falling behind ({} over {} s, {} under {:.0} % of the rate), {} ok",
        args.label,
        args.listeners,
        args.procs,
        t.connected,
        refused,
        g("refused_kinds"),
        t.disconnected,
        t.falling_behind,
        t.over_threshold,
        args.behind_threshold.as_secs_f64(),
        t.low_rate,
        args.min_rate * 100.0,
        ok
    );
    println!(
        "  ttfb p50/p99/max {}/{}/{} ms; first audio {}/{}/{} ms; start lag p50/p99 {}/{} ms; behind live p50/p99/max {}/{}/{} ms ({} samples, {:.1} s window)",
        g("ttfb_p50_ms"),
        g("ttfb_p99_ms"),
        g("ttfb_max_ms"),
        g("first_audio_p50_ms"),
        g("first_audio_p99_ms"),
        g("first_audio_max_ms"),
        g("start_lag_p50_ms"),
        g("start_lag_p99_ms"),
        g("behind_p50_ms"),
        g("behind_p99_ms"),
        g("behind_max_ms"),
        t.behind_us.len(),
        window_secs
    );
    println!(
        "  rate min/p1/p50 {}/{}/{} of the source; {} B/s in all; {} frames skipped ({} listeners), {} resyncs; source {} frames, late max {:.1} ms{}",
        g("rate_min"),
        g("rate_p1"),
        g("rate_p50"),
        g("bytes_per_s"),
        t.frames_skipped,
        t.listeners_with_gaps,
        t.resyncs,
        source.frames,
        source.late_max_ms,
        source
            .error
            .as_ref()
            .map_or_else(String::new, |e| format!(", error: {e}"))
    );
    for u in per_url.iter().filter(|_| per_url.len() > 1) {
        let g = |k: &str| u.get(k).map_or_else(String::new, ToString::to_string);
        println!(
            "  {}: {} listeners, {} connected, {} refused, {} disconnected, {} falling behind; ttfb p50 {} ms; first audio p50 {} ms; behind live p50/p99/max {}/{}/{} ms",
            g("url"),
            g("listeners"),
            g("connected"),
            g("refused"),
            g("disconnected"),
            g("falling_behind"),
            g("ttfb_p50_ms"),
            g("first_audio_p50_ms"),
            g("behind_p50_ms"),
            g("behind_p99_ms"),
            g("behind_max_ms"),
        );
    }
    println!(
        "  server cpu {} % of one core, rss {} kB, hwm {} kB{}; generator cpu {} %; machine busy {} % of all cores",
        g("server_cpu_pct"),
        g("server_rss_kb"),
        g("server_hwm_kb"),
        if fig.servers.len() > 1 {
            format!(
                " (sums over {} processes: {})",
                fig.servers.len(),
                fig.servers
                    .iter()
                    .map(|s| format!(
                        "pid {} cpu {:.1} % rss {} kB",
                        s.pid,
                        s.cpu_pct.unwrap_or(f64::NAN),
                        s.rss_kb.unwrap_or(0)
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            String::new()
        },
        g("generator_cpu_pct"),
        g("machine_busy_pct")
    );
    println!("{j}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(frames: u64) -> Vec<u8> {
        let mut v = Vec::new();
        for s in 0..frames {
            write_frame(&mut v, s, 1_000 + s);
        }
        v
    }

    #[test]
    fn frame_lengths_follow_the_cbr_padding_pattern() {
        let total: usize = (0..44_100).map(frame_len).sum();
        // 44100 frames of 1152 samples at 44.1 kHz = 1152 s at 16000 B/s.
        assert_eq!(total, 1152 * 16_000);
        assert!((0..1000).all(|s| matches!(frame_len(s), 417 | 418)));
        let v = stream(3);
        assert_eq!(&v[..4], &[0xFF, 0xFB, 0x90, 0x64]);
    }

    #[test]
    fn scanner_finds_every_frame_in_any_chunking_and_after_garbage() {
        let mut data = vec![0xFF, 0x00, 0xFF, 0xFB, 1, 2, 3];
        data.extend(stream(200));
        for chunk in [1, 7, 60, 417, 1000, 5000] {
            let mut s = Scanner::default();
            let mut seen = Vec::new();
            for c in data.chunks(chunk) {
                s.feed(c, &mut |seq, ns| seen.push((seq, ns)));
            }
            assert_eq!(seen.len(), 200, "chunk {chunk}");
            assert!(
                seen.iter()
                    .enumerate()
                    .all(|(i, &(q, n))| q == i as u64 && n == 1000 + q)
            );
        }
    }

    #[test]
    fn icy_blocks_are_removed() {
        let audio = stream(100);
        let metaint = 1000;
        let mut wire = Vec::new();
        for (i, c) in audio.chunks(metaint).enumerate() {
            wire.extend_from_slice(c);
            if c.len() == metaint {
                if i % 2 == 0 {
                    wire.push(2);
                    wire.extend_from_slice(&[b'x'; 32]);
                } else {
                    wire.push(0);
                }
            }
        }
        let mut d = IcyDemux::new(metaint);
        let mut out = Vec::new();
        for c in wire.chunks(333) {
            d.feed(c, &mut |a: &[u8]| out.extend_from_slice(a));
        }
        assert_eq!(out, audio);
        assert!(d.blocks > 0);
    }

    #[test]
    fn status_lines_and_headers() {
        assert_eq!(status_code(b"ICY 200 OK\r\n"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 200 OK\r\n"), Some(200));
        assert_eq!(status_code(b"HTTP/1.1 503 Busy\r\n"), Some(503));
        assert_eq!(status_code(b"SPDY 200\r\n"), None);
        let h = b"HTTP/1.0 200 OK\r\nicy-metaint: 16000\r\n\r\n";
        assert_eq!(head_end(h), Some(h.len()));
        assert_eq!(header(h, "Icy-MetaInt"), Some("16000"));
        assert_eq!(base64(b"source:hackme"), "c291cmNlOmhhY2ttZQ==");
        assert_eq!(base64(b"ab"), "YWI=");
    }

    #[test]
    fn only_loopback_urls() {
        assert!(parse_url("http://127.0.0.1:8000/live/x").is_ok());
        assert!(parse_url("http://[::1]:8000/live/x").is_ok());
        assert!(parse_url("http://example.com/live/x").is_err());
        assert!(parse_url("http://10.0.0.1:80/").is_err());
        let t = parse_url("http://localhost/a?b=1").expect("loopback");
        assert_eq!(
            (t.addr.as_str(), t.path.as_str()),
            ("localhost:80", "/a?b=1")
        );
    }

    #[test]
    fn several_urls_and_server_pids() {
        let a = parse_args(
            [
                "--url",
                "http://127.0.0.1:1/live/a.mp3",
                "--url",
                "http://127.0.0.1:2/live/a.mp3",
                "--server-pid",
                "10",
                "--server-pid",
                "11",
                "--procs",
                "2",
            ]
            .into_iter()
            .map(String::from),
        );
        assert_eq!(a.urls.len(), 2);
        assert_eq!(a.server_pids, vec![10, 11]);
        // Children get every URL (listener i goes to URL i mod 2).
        let c = child_args(&a, 1, 2, 0);
        assert_eq!(c.iter().filter(|x| *x == "--url").count(), 2);
        assert_eq!(sum_all([Some(1u64), Some(2)].into_iter()), Some(3));
        assert_eq!(sum_all([Some(1u64), None].into_iter()), None);
        assert_eq!(sum_all(std::iter::empty::<Option<u64>>()), None);
    }

    /// The synthetic frames decode with ffmpeg without errors and last as long as they should.
    #[test]
    fn synthetic_frames_decode_with_ffmpeg() {
        let dir = std::env::temp_dir().join(format!("veza-listeners-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let f = dir.join("capture.mp3");
        // 383 frames: 10.004 s.
        std::fs::write(&f, stream(383)).expect("write");
        let out = std::process::Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-xerror", "-i"])
            .arg(&f)
            .args(["-f", "null", "-"])
            .output()
            .expect("ffmpeg runs");
        let probe = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-count_frames", "-select_streams", "a:0"])
            .args([
                "-show_entries",
                "stream=nb_read_frames,sample_rate,channels",
            ])
            .args(["-of", "csv=p=0"])
            .arg(&f)
            .output()
            .expect("ffprobe runs");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let p = String::from_utf8_lossy(&probe.stdout);
        assert_eq!(p.trim(), "44100,2,383", "{p}");
    }
}
