//! The Icecast protocols on the server's HTTP port: sources (`PUT` or the legacy `SOURCE` on
//! `/live/{mount}`, HTTP Basic auth with the stream's ingest key) and progressive listeners
//! (`GET`/`HEAD /live/{mount}[.ext]`, with ICY metadata on request), plus the admin metadata
//! update (`/admin/metadata?mount=&mode=updinfo&song=`).
//!
//! # Why the first request of a connection is read here, not by hyper
//! A source's request has no `Content-Length` and is not chunked: Icecast sources (ffmpeg,
//! BUTT, Liquidsoap) send the audio after the headers until they hang up, which HTTP/1.1 reads
//! as an empty body; `SOURCE` is not an HTTP method at all. So each accepted connection's first
//! request line is peeked ([`accept_loop`]): sources and progressive listeners are served by the
//! small handlers below (request heads parsed with `httparse`), everything else goes to hyper
//! unchanged. Listeners are served here too because a long-lived listener then costs only its
//! socket and a small task (no HTTP connection state), which is what lets one process hold tens of
//! thousands of them. The same listener routes also exist in the router (for TLS and for a
//! request that arrives on a kept-alive connection), and a chunked or sized `PUT` also works
//! through it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use veza_stream_core::analytics::Protocol;
use veza_stream_core::frame::FrameFormat;
use veza_stream_core::metadata::NowPlaying;

use super::{ListenerCursor, SourceInfo};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::metrics as m;
use crate::state::AppState;
use crate::storage::StreamRecord;

/// Most bytes of a request head read by the handlers here.
const MAX_HEAD: usize = 16 * 1024;
/// A source that sends nothing for this long is disconnected (Icecast's `source-timeout`).
const SOURCE_TIMEOUT: Duration = Duration::from_secs(10);
/// A listener whose socket takes no bytes for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Writes to a listener with a burst are grouped over this much time.
const COALESCE: Duration = Duration::from_millis(250);
/// Time a client has to send its request line and head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The live routes of the router: progressive listening (`GET`/`HEAD`), sized or chunked `PUT`
/// sources, and the admin metadata update.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/live/{mount}",
            get(listen_route).head(listen_route).put(put_route),
        )
        .route("/admin/metadata", get(admin_metadata_route))
}

/// What the first request line of a connection asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Source,
    Listen,
    Other,
    /// Not enough bytes yet.
    Unknown,
}

/// A progressive mount path: `/live/{id}` or `/live/{id}.{mp3,aac,ogg,opus}` (no further
/// segments, not a playlist).
fn mount_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/live/")?;
    let rest = rest.split('?').next().unwrap_or(rest);
    if rest.is_empty() || rest.contains('/') {
        return None;
    }
    let id = match rest.rsplit_once('.') {
        Some((id, "mp3" | "aac" | "ogg" | "opus" | "oga")) => id,
        Some(_) => return None,
        None => rest,
    };
    (!id.is_empty()).then_some(id)
}

fn classify(head: &[u8]) -> Route {
    let Some(end) = head.windows(2).position(|w| w == b"\r\n") else {
        return if head.len() >= 2048 {
            Route::Other
        } else {
            Route::Unknown
        };
    };
    let line = &head[..end];
    let mut parts = line.split(|b| *b == b' ');
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Route::Other;
    };
    let Ok(path) = std::str::from_utf8(path) else {
        return Route::Other;
    };
    match method {
        b"SOURCE" => Route::Source,
        b"PUT" if path.starts_with("/live/") => Route::Source,
        b"GET" | b"HEAD" if mount_of(path).is_some() => Route::Listen,
        _ => Route::Other,
    }
}

/// The listener half handed to hyper: connections whose first request is not Icecast's.
#[derive(Debug)]
pub struct HyperConnections {
    rx: mpsc::Receiver<(TcpStream, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for HyperConnections {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop stopped: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Accepts connections on `listener`: Icecast sources and progressive listeners are served
/// here, the rest is passed to hyper through the returned [`HyperConnections`].
///
/// # Errors
/// When the listener has no local address.
pub fn accept_loop(
    state: AppState,
    listener: TcpListener,
) -> std::io::Result<(HyperConnections, tokio::task::JoinHandle<()>)> {
    let local = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(1024);
    let task = tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, as hyper does.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let state = state.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match sniff(&tcp).await {
                    Route::Source => source_connection(state, tcp, peer).await,
                    Route::Listen => listen_connection(state, tcp, peer).await,
                    Route::Other | Route::Unknown => {
                        let _ = tx.send((tcp, peer)).await;
                    }
                }
            });
        }
    });
    Ok((HyperConnections { rx, local }, task))
}

/// Peeks at the first request line (without consuming it).
async fn sniff(tcp: &TcpStream) -> Route {
    let mut buf = [0u8; 2048];
    let deadline = tokio::time::Instant::now() + HEAD_TIMEOUT;
    loop {
        let n = match tokio::time::timeout_at(deadline, tcp.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return Route::Other,
        };
        if n == 0 {
            return Route::Other;
        }
        match classify(&buf[..n]) {
            Route::Unknown => {
                // Part of a request line: peek returns at once while those bytes wait, so
                // poll again shortly.
                if tokio::time::Instant::now() >= deadline {
                    return Route::Other;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            r => return r,
        }
    }
}

/// A parsed request head.
#[derive(Debug)]
struct Head {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    http10: bool,
}

/// Reads a request head (at most [`MAX_HEAD`] bytes); returns it and the bytes read past it.
async fn read_head(tcp: &mut TcpStream) -> Result<(Head, BytesMut), ApiError> {
    let mut buf = BytesMut::with_capacity(1024);
    let read = async {
        loop {
            if buf.len() >= MAX_HEAD {
                return Err(ApiError::BadRequest("the request head is too large".into()));
            }
            let n = tcp
                .read_buf(&mut buf)
                .await
                .map_err(|_| ApiError::BadRequest("the connection failed".into()))?;
            if n == 0 {
                return Err(ApiError::BadRequest("the connection closed".into()));
            }
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut hs);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let method = Method::from_bytes(req.method.unwrap_or("GET").as_bytes())
                        .map_err(|_| ApiError::BadRequest("bad method".into()))?;
                    let uri: Uri = req
                        .path
                        .unwrap_or("/")
                        .parse()
                        .map_err(|_| ApiError::BadRequest("bad request target".into()))?;
                    let mut headers = HeaderMap::new();
                    for h in req.headers.iter() {
                        if let (Ok(n), Ok(v)) = (
                            HeaderName::from_bytes(h.name.as_bytes()),
                            HeaderValue::from_bytes(h.value),
                        ) {
                            headers.append(n, v);
                        }
                    }
                    let http10 = req.version == Some(0);
                    let rest = buf.split_off(len);
                    return Ok((
                        Head {
                            method,
                            uri,
                            headers,
                            http10,
                        },
                        rest,
                    ));
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return Err(ApiError::BadRequest("malformed request head".into())),
            }
        }
    };
    tokio::time::timeout(HEAD_TIMEOUT, read)
        .await
        .map_err(|_| ApiError::BadRequest("the request head took too long".into()))?
}

/// Writes a whole simple response (status line, headers, optional body).
async fn write_response(
    tcp: &mut TcpStream,
    status: StatusCode,
    headers: &[(String, String)],
    body: &[u8],
) {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nServer: veza-stream\r\nConnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (k, v) in headers {
        out.push_str(k);
        out.push_str(": ");
        out.push_str(v);
        out.push_str("\r\n");
    }
    if !body.is_empty() {
        out.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    out.push_str("\r\n");
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        tcp.write_all(out.as_bytes()).await?;
        tcp.write_all(body).await?;
        tcp.flush().await
    })
    .await;
}

async fn write_error(tcp: &mut TcpStream, e: &ApiError, extra: &[(String, String)]) {
    let body = e.body().to_string();
    let mut headers = extra.to_vec();
    if let ApiError::Unavailable { retry_after, .. } = e {
        headers.push(("Retry-After".into(), retry_after.to_string()));
    }
    write_response(tcp, e.status(), &headers, body.as_bytes()).await;
}

// ---------------------------------------------------------------------------------------------
// Sources
// ---------------------------------------------------------------------------------------------

/// The stream of a mount, with the source's key checked (HTTP Basic: any user, the ingest key as
/// password; Icecast clients send `source:KEY`).
async fn authorize_source(
    state: &AppState,
    id: &str,
    headers: &HeaderMap,
) -> Result<StreamRecord, ApiError> {
    let key = basic_password(headers).ok_or(ApiError::Unauthorized)?;
    let id = uuid::Uuid::parse_str(id)
        .map_err(|_| ApiError::NotFound("stream"))?
        .hyphenated()
        .to_string();
    let rec = state
        .store()
        .get_stream(&id)
        .await?
        .ok_or(ApiError::NotFound("stream"))?;
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    if !constant_time_eq(hash.as_bytes(), rec.ingest_key_hash.as_bytes()) {
        return Err(ApiError::Unauthorized);
    }
    Ok(rec)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The password of an HTTP Basic `Authorization` header.
fn basic_password(headers: &HeaderMap) -> Option<String> {
    use base64::Engine as _;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (_, pass) = text.split_once(':')?;
    Some(pass.to_owned())
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().chars().take(256).collect::<String>())
        .filter(|s| !s.is_empty())
}

/// The source's `ice-*` headers (and the legacy `icy-*` ones some clients send).
fn source_info(headers: &HeaderMap, content_type: &str) -> SourceInfo {
    let get = |a: &str, b: &str| header_str(headers, a).or_else(|| header_str(headers, b));
    let bitrate = get("ice-bitrate", "icy-br")
        .and_then(|b| b.parse().ok())
        .or_else(|| {
            // ice-audio-info: bitrate=128;samplerate=44100;channels=2
            header_str(headers, "ice-audio-info").and_then(|i| {
                i.split(';').find_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    (k.trim().eq_ignore_ascii_case("bitrate") || k.trim() == "ice-bitrate")
                        .then(|| v.trim().parse().ok())
                        .flatten()
                })
            })
        });
    SourceInfo {
        name: get("ice-name", "icy-name"),
        description: get("ice-description", "icy-description"),
        genre: get("ice-genre", "icy-genre"),
        url: get("ice-url", "icy-url"),
        bitrate,
        public: get("ice-public", "icy-pub").is_some_and(|p| p == "1"),
        content_type: content_type.to_owned(),
    }
}

/// The source format of a request's `Content-Type`.
fn source_format(headers: &HeaderMap) -> Result<(FrameFormat, String), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("audio/mpeg")
        .to_ascii_lowercase();
    let ct = ct.split(';').next().unwrap_or("").trim().to_owned();
    FrameFormat::from_content_type(&ct)
        .map(|f| (f, ct.clone()))
        .ok_or_else(|| {
            ApiError::UnsupportedMedia(format!(
                "a live source must send audio/mpeg, audio/aac or audio/ogg, not {ct:?}"
            ))
        })
}

async fn source_connection(state: AppState, mut tcp: TcpStream, peer: SocketAddr) {
    let (head, rest) = match read_head(&mut tcp).await {
        Ok(h) => h,
        Err(e) => return write_error(&mut tcp, &e, &[]).await,
    };
    let path = head.uri.path().to_owned();
    let Some(id) = path.strip_prefix("/live/").map(|s| {
        s.rsplit_once('.')
            .map_or(s, |(id, _)| id)
            .trim_end_matches('/')
    }) else {
        return write_error(&mut tcp, &ApiError::NotFound("mount"), &[]).await;
    };
    let id = id.to_owned();
    let source = match start_source(&state, &id, &head.headers).await {
        Ok(s) => s,
        Err(e) => {
            refused(&e);
            let extra = if matches!(e, ApiError::Unauthorized) {
                vec![(
                    "WWW-Authenticate".to_owned(),
                    "Basic realm=\"Veza Stream source\"".to_owned(),
                )]
            } else {
                Vec::new()
            };
            return write_error(&mut tcp, &e, &extra).await;
        }
    };
    tracing::info!(stream = %id, %peer, method = %head.method, "source connected");
    // `Expect: 100-continue` (ffmpeg's icecast output sends it): say go on, then OK at once,
    // as Icecast does; the source never waits for a final response.
    let expects = head
        .headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let mut greeting = String::new();
    if expects {
        greeting.push_str("HTTP/1.1 100 Continue\r\n\r\n");
    }
    greeting.push_str(if head.http10 || head.method.as_str() == "SOURCE" {
        "HTTP/1.0 200 OK\r\nServer: veza-stream\r\n\r\n"
    } else {
        "HTTP/1.1 200 OK\r\nServer: veza-stream\r\nConnection: close\r\n\r\n"
    });
    if tcp.write_all(greeting.as_bytes()).await.is_err() {
        return;
    }
    let chunked = head
        .headers
        .get(header::TRANSFER_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length: Option<u64> = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let mut body = BodyReader {
        tcp,
        buf: rest,
        chunked: chunked.then(Dechunk::default),
        remaining: if chunked { None } else { length },
    };
    loop {
        match tokio::time::timeout(SOURCE_TIMEOUT, body.next()).await {
            Ok(Ok(Some(data))) => {
                if source.push(data).is_err() {
                    break;
                }
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                tracing::info!(stream = %id, error = %e, "source connection failed");
                break;
            }
            Err(_) => {
                tracing::info!(stream = %id, "source sent nothing for 10 s; disconnecting it");
                break;
            }
        }
    }
    tracing::info!(stream = %id, %peer, "source disconnected");
    drop(source);
}

fn refused(e: &ApiError) {
    let reason = match e.status() {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::CONFLICT => "busy",
        StatusCode::SERVICE_UNAVAILABLE => "capacity",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "format",
        _ => "other",
    };
    metrics::counter!(m::LIVE_SOURCES_REFUSED, "reason" => reason).increment(1);
}

async fn start_source(
    state: &AppState,
    id: &str,
    headers: &HeaderMap,
) -> Result<super::SourceGuard, ApiError> {
    let rec = authorize_source(state, id, headers).await?;
    let (format, ct) = source_format(headers)?;
    let info = source_info(headers, &ct);
    let guard = state.live().connect_source(state, &rec, format, info)?;
    if let Some(song) = header_str(headers, "ice-title") {
        let _ = guard.channel().set_metadata(NowPlaying::from_song(&song));
    }
    Ok(guard)
}

/// Reads a source's body: until the connection closes, or `Content-Length` bytes, or chunked.
struct BodyReader {
    tcp: TcpStream,
    buf: BytesMut,
    chunked: Option<Dechunk>,
    remaining: Option<u64>,
}

impl BodyReader {
    async fn next(&mut self) -> std::io::Result<Option<Bytes>> {
        loop {
            if let Some(d) = self.chunked.as_mut() {
                match d.take(&mut self.buf)? {
                    DechunkStep::Data(b) => return Ok(Some(b)),
                    DechunkStep::End => return Ok(None),
                    DechunkStep::More => {}
                }
            } else if !self.buf.is_empty() {
                let mut n = self.buf.len();
                if let Some(r) = self.remaining.as_mut() {
                    n = n.min(usize::try_from(*r).unwrap_or(usize::MAX));
                    *r -= n as u64;
                }
                return Ok(Some(self.buf.split_to(n).freeze()));
            }
            if self.remaining == Some(0) {
                return Ok(None);
            }
            self.buf.reserve(64 * 1024);
            if self.tcp.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }
}

/// Decodes `Transfer-Encoding: chunked` (sizes parsed with `httparse`).
#[derive(Debug, Default)]
struct Dechunk {
    /// Bytes left in the current chunk.
    left: u64,
    /// The CRLF after a chunk's data is pending.
    crlf: bool,
    done: bool,
}

enum DechunkStep {
    Data(Bytes),
    More,
    End,
}

impl Dechunk {
    fn take(&mut self, buf: &mut BytesMut) -> std::io::Result<DechunkStep> {
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunked body");
        loop {
            if self.done {
                return Ok(DechunkStep::End);
            }
            if self.left > 0 {
                if buf.is_empty() {
                    return Ok(DechunkStep::More);
                }
                let n = buf
                    .len()
                    .min(usize::try_from(self.left).unwrap_or(usize::MAX));
                self.left -= n as u64;
                if self.left == 0 {
                    self.crlf = true;
                }
                return Ok(DechunkStep::Data(buf.split_to(n).freeze()));
            }
            if self.crlf {
                if buf.len() < 2 {
                    return Ok(DechunkStep::More);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(bad());
                }
                let _ = buf.split_to(2);
                self.crlf = false;
            }
            match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((used, size))) => {
                    let _ = buf.split_to(used);
                    if size == 0 {
                        self.done = true;
                        return Ok(DechunkStep::End);
                    }
                    self.left = size;
                }
                Ok(httparse::Status::Partial) => {
                    if buf.len() > 1024 {
                        return Err(bad());
                    }
                    return Ok(DechunkStep::More);
                }
                Err(_) => return Err(bad()),
            }
        }
    }
}

/// `PUT /live/{mount}` through the router: a sized or chunked body (e.g. `curl -T -`).
async fn put_route(
    State(state): State<AppState>,
    UrlPath(mount): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = mount.rsplit_once('.').map_or(mount.as_str(), |(id, _)| id);
    let source = start_source(&state, id, &headers)
        .await
        .inspect_err(refused)?;
    let mut stream = body.into_data_stream();
    while let Ok(Some(Ok(data))) = tokio::time::timeout(SOURCE_TIMEOUT, stream.next()).await {
        source.push(data)?;
    }
    drop(source);
    Ok(StatusCode::OK.into_response())
}

// ---------------------------------------------------------------------------------------------
// Listeners
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct ListenQuery {
    /// Burst in milliseconds (0: start at the live edge).
    burst: Option<u64>,
}

fn parse_query(uri: &Uri) -> ListenQuery {
    uri.query()
        .and_then(|q| serde_urlencoded_lite(q, "burst"))
        .map(|b| ListenQuery { burst: Some(b) })
        .unwrap_or_default()
}

/// The integer value of `key` in a query string.
fn serde_urlencoded_lite(q: &str, key: &str) -> Option<u64> {
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

/// The response headers of a progressive listener, Icecast's names.
fn listen_headers(
    state: &AppState,
    ch: &super::Channel,
    rec: &StreamRecord,
    metaint: Option<usize>,
    origin: Option<&str>,
) -> Vec<(String, String)> {
    let info = ch.info();
    let clean = |s: &str| s.replace(['\r', '\n'], " ");
    let mut h = vec![
        (
            "Content-Type".to_owned(),
            if info.content_type.is_empty() {
                ch.format().content_type().to_owned()
            } else {
                info.content_type.clone()
            },
        ),
        ("Cache-Control".into(), "no-cache, no-store".into()),
        ("Pragma".into(), "no-cache".into()),
        ("Expires".into(), "Mon, 26 Jul 1997 05:00:00 GMT".into()),
        (
            "icy-name".into(),
            clean(info.name.as_deref().unwrap_or(&rec.title)),
        ),
        ("icy-pub".into(), if info.public { "1" } else { "0" }.into()),
    ];
    if let Some(d) = info.description.as_deref().or(rec.description.as_deref()) {
        h.push(("icy-description".into(), clean(d)));
    }
    if let Some(g) = &info.genre {
        h.push(("icy-genre".into(), clean(g)));
    }
    if let Some(u) = &info.url {
        h.push(("icy-url".into(), clean(u)));
    }
    if let Some(b) = info.bitrate {
        h.push(("icy-br".into(), b.to_string()));
    }
    if let Some(mi) = metaint {
        h.push(("icy-metaint".into(), mi.to_string()));
    }
    h.extend(cors_headers(state, origin));
    h
}

/// CORS for browser players (`Icy-MetaData` is a custom header, so it is preflighted).
fn cors_headers(state: &AppState, origin: Option<&str>) -> Vec<(String, String)> {
    let allowed = &state.config().cors_allowed_origins;
    let allow = if allowed.iter().any(|o| o == "*") {
        Some("*".to_owned())
    } else {
        origin
            .filter(|o| allowed.iter().any(|a| a == o))
            .map(str::to_owned)
    };
    let Some(allow) = allow else {
        return Vec::new();
    };
    let mut h = vec![
        ("Access-Control-Allow-Origin".to_owned(), allow.clone()),
        (
            "Access-Control-Allow-Headers".into(),
            "Origin, Accept, X-Requested-With, Content-Type, Icy-MetaData, Authorization, Range"
                .into(),
        ),
        (
            "Access-Control-Allow-Methods".into(),
            "GET, OPTIONS, HEAD".into(),
        ),
        (
            "Access-Control-Expose-Headers".into(),
            "icy-br, icy-description, icy-genre, icy-metaint, icy-name, icy-pub, icy-url".into(),
        ),
    ];
    if allow != "*" {
        h.push(("Vary".into(), "Origin".into()));
    }
    h
}

/// Everything a listener request resolves to before the body starts.
struct Listening {
    cursor: Option<ListenerCursor>,
    headers: Vec<(String, String)>,
}

/// Checks a listener's request (the stream exists, the caller may see it, it is on air) and
/// joins it (not for `HEAD`).
async fn prepare_listen(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    ip: Option<IpAddr>,
) -> Result<Listening, ApiError> {
    let id = mount_of(uri.path()).ok_or(ApiError::NotFound("mount"))?;
    let id = uuid::Uuid::parse_str(id)
        .map_err(|_| ApiError::NotFound("stream"))?
        .hyphenated()
        .to_string();
    let caller = match crate::auth::credential(method, uri, headers) {
        Some(c) => Caller(Some(crate::auth::resolve(state, &c).await?)),
        None => Caller(None),
    };
    let ch = state.live().get(&id).filter(|c| !c.is_ended());
    // A stream on air here: its record came with the channel (no query per listener).
    let rec = match &ch {
        Some(c) => c.record(),
        None => state
            .store()
            .get_stream(&id)
            .await?
            .ok_or(ApiError::NotFound("stream"))?,
    };
    caller.check_see(rec.owner.as_deref(), rec.is_private, "stream")?;
    let ch = match ch {
        Some(c) => c,
        None => match state.live().relay_for(state, &id).await {
            Some(c) => c,
            None => return Err(ApiError::NotFound("live stream (it is not on air)")),
        },
    };
    let icy = headers
        .get("icy-metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "1");
    let metaint = icy.then_some(state.config().live.icy_metaint);
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let out_headers = listen_headers(state, &ch, &rec, metaint, origin);
    if method == Method::HEAD {
        return Ok(Listening {
            cursor: None,
            headers: out_headers,
        });
    }
    let q = parse_query(uri);
    let burst = q.burst.map(|ms| Duration::from_millis(ms.min(20_000)));
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let session = state.analytics().join(
        format!("stream:{id}"),
        crate::analytics::listener_key(caller.subject(), ip, agent),
        Protocol::Icy,
        None,
        Some(agent.chars().take(64).collect()),
    );
    let cursor = state.live().listen(state, &id, burst, icy, Some(session))?;
    Ok(Listening {
        cursor: Some(cursor),
        headers: out_headers,
    })
}

async fn listen_connection(state: AppState, mut tcp: TcpStream, peer: SocketAddr) {
    let (head, _) = match read_head(&mut tcp).await {
        Ok(h) => h,
        Err(e) => return write_error(&mut tcp, &e, &[]).await,
    };
    let ip = if state.config().trust_proxy_headers {
        head.headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
            .or(Some(peer.ip()))
    } else {
        Some(peer.ip())
    };
    let listening = match prepare_listen(&state, &head.method, &head.uri, &head.headers, ip).await {
        Ok(l) => l,
        Err(e) => {
            let origin = head
                .headers
                .get(header::ORIGIN)
                .and_then(|v| v.to_str().ok());
            return write_error(&mut tcp, &e, &cors_headers(&state, origin)).await;
        }
    };
    // HTTP/1.0 and no length: the body lasts until the stream ends or either side hangs up.
    let out = response_head(&listening.headers);
    drop(head);
    if tcp.write_all(out.as_bytes()).await.is_err() {
        return;
    }
    drop(out);
    if let Some(cursor) = listening.cursor {
        // A task of its own, holding only what streaming needs (the request's state is freed).
        tokio::spawn(stream_to_listener(tcp, cursor));
    }
}

fn response_head(headers: &[(String, String)]) -> String {
    let mut out = String::from("HTTP/1.0 200 OK\r\nServer: veza-stream\r\n");
    for (k, v) in headers {
        out.push_str(k);
        out.push_str(": ");
        out.push_str(v);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out
}

async fn stream_to_listener(tcp: TcpStream, mut cursor: ListenerCursor) {
    // The client sends nothing more; a read that returns means it hung up.
    let (mut rd, mut wr) = tcp.into_split();
    let hangup = async move {
        let mut b = [0u8; 16];
        loop {
            match rd.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let send = async move {
        let mut batch: Vec<Bytes> = Vec::new();
        // A listener with a burst is seconds behind the edge anyway: its writes are grouped
        // (at most one every COALESCE), which halves the system calls, the largest cost of
        // serving thousands of listeners. A low-latency listener gets each chunk at once.
        let coalesce = (!cursor.low_latency()).then_some(COALESCE);
        let mut last_write: Option<tokio::time::Instant> = None;
        while cursor.next_batch(&mut batch).await {
            if let (Some(c), Some(last)) = (coalesce, last_write) {
                let due = last + c;
                if tokio::time::Instant::now() < due {
                    tokio::time::sleep_until(due).await;
                    cursor.take_ready(&mut batch);
                }
            }
            last_write = Some(tokio::time::Instant::now());
            let ok = tokio::time::timeout(WRITE_TIMEOUT, write_all_vectored(&mut wr, &mut batch))
                .await
                .is_ok_and(|r| r.is_ok());
            batch.clear();
            if !ok {
                return;
            }
        }
        let _ = wr.shutdown().await;
    };
    tokio::select! {
        () = hangup => {},
        () = send => {},
    }
}

/// Writes every buffer, with as few system calls as the socket allows.
async fn write_all_vectored(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    bufs: &mut [Bytes],
) -> std::io::Result<()> {
    use bytes::Buf as _;
    let mut i = 0;
    while i < bufs.len() {
        let slices: Vec<std::io::IoSlice<'_>> = bufs[i..]
            .iter()
            .take(64)
            .map(|b| std::io::IoSlice::new(b))
            .collect();
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 && i < bufs.len() {
            let len = bufs[i].len();
            if n >= len {
                n -= len;
                i += 1;
            } else {
                bufs[i].advance(n);
                n = 0;
            }
        }
    }
    Ok(())
}

/// `GET`/`HEAD /live/{mount}` through the router (TLS, or a kept-alive connection); the live
/// HLS master playlist (`/live/{id}.m3u8`) too.
async fn listen_route(
    State(state): State<AppState>,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    if req.uri().path().ends_with(".m3u8") {
        return super::hls::master(&state, req).await;
    }
    let ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|a| a.0.ip());
    let listening = prepare_listen(&state, req.method(), req.uri(), req.headers(), ip).await?;
    let mut resp = Response::new(Body::empty());
    for (k, v) in &listening.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    if let Some(cursor) = listening.cursor {
        let stream = futures_util::stream::unfold(
            (cursor, std::collections::VecDeque::<Bytes>::new()),
            |(mut cursor, mut pending)| async move {
                loop {
                    if let Some(b) = pending.pop_front() {
                        return Some((Ok::<_, std::io::Error>(b), (cursor, pending)));
                    }
                    let mut batch = Vec::new();
                    if !cursor.next_batch(&mut batch).await {
                        return None;
                    }
                    pending.extend(batch);
                }
            },
        );
        *resp.body_mut() = Body::from_stream(stream);
    }
    Ok(resp)
}

// ---------------------------------------------------------------------------------------------
// Admin metadata
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct MetadataQuery {
    mount: Option<String>,
    mode: Option<String>,
    song: Option<String>,
    title: Option<String>,
    artist: Option<String>,
    url: Option<String>,
}

fn iceresponse(ok: bool, message: &str) -> String {
    let message = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!(
        "<?xml version=\"1.0\"?>\n<iceresponse><message>{message}</message><return>{}</return></iceresponse>\n",
        u8::from(ok)
    )
}

/// `GET /admin/metadata?mount=/live/ID&mode=updinfo&song=Artist%20-%20Title` with the source's
/// Basic credentials (as Icecast): sets now-playing for ICY, HLS ID3 and the events.
async fn admin_metadata_route(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<MetadataQuery>,
) -> Response {
    let xml = |status: StatusCode, ok: bool, msg: &str| {
        (
            status,
            [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
            iceresponse(ok, msg),
        )
            .into_response()
    };
    if q.mode.as_deref().unwrap_or("updinfo") != "updinfo" {
        return xml(
            StatusCode::BAD_REQUEST,
            false,
            "only mode=updinfo is supported",
        );
    }
    let Some(mount) = q.mount.as_deref() else {
        return xml(StatusCode::BAD_REQUEST, false, "missing mount");
    };
    let id = mount
        .trim_start_matches('/')
        .trim_start_matches("live/")
        .split('.')
        .next()
        .unwrap_or("");
    let rec = match authorize_source(&state, id, &headers).await {
        Ok(r) => r,
        Err(ApiError::Unauthorized) => {
            let mut r = xml(StatusCode::UNAUTHORIZED, false, "authentication required");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Veza Stream source\""),
            );
            return r;
        }
        Err(e) => return xml(e.status(), false, &e.to_string()),
    };
    let Some(ch) = state
        .live()
        .get(&rec.id)
        .filter(|c| !c.is_ended() && !c.is_relayed())
    else {
        return xml(StatusCode::NOT_FOUND, false, "Source does not exist");
    };
    let np = match (q.song, q.title) {
        (Some(song), _) => NowPlaying {
            url: q.url,
            ..NowPlaying::from_song(&song.chars().take(1024).collect::<String>())
        },
        (None, title) => NowPlaying {
            title: title.map(|t| t.chars().take(1024).collect()),
            artist: q.artist.map(|a| a.chars().take(1024).collect()),
            url: q.url,
        },
    };
    match ch.set_metadata(np) {
        Ok(()) => xml(StatusCode::OK, true, "Metadata update successful"),
        Err(e) => xml(e.status(), false, &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_lines_are_classified() {
        assert_eq!(classify(b"SOURCE /live/x HTTP/1.0\r\n"), Route::Source);
        assert_eq!(classify(b"PUT /live/x HTTP/1.1\r\n"), Route::Source);
        assert_eq!(classify(b"GET /live/abc HTTP/1.1\r\n"), Route::Listen);
        assert_eq!(classify(b"GET /live/abc.mp3 HTTP/1.1\r\n"), Route::Listen);
        assert_eq!(
            classify(b"HEAD /live/abc.ogg?burst=0 HTTP/1.1\r\n"),
            Route::Listen
        );
        assert_eq!(classify(b"GET /live/abc.m3u8 HTTP/1.1\r\n"), Route::Other);
        assert_eq!(
            classify(b"GET /live/abc/aac-96/1.m4s HTTP/1.1\r\n"),
            Route::Other
        );
        assert_eq!(classify(b"GET /api/v1/streams HTTP/1.1\r\n"), Route::Other);
        assert_eq!(classify(b"GET /live/ab"), Route::Unknown);
        assert_eq!(classify(&[b'A'; 4096]), Route::Other);
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let wire = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        for cut in 0..wire.len() {
            let mut d = Dechunk::default();
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                buf.extend_from_slice(part);
                while let DechunkStep::Data(b) = d.take(&mut buf).unwrap() {
                    out.extend_from_slice(&b);
                }
            }
            assert_eq!(out, b"hello world", "cut at {cut}");
            assert!(d.done);
        }
        let mut d = Dechunk::default();
        let mut buf = BytesMut::from(&b"zz\r\n"[..]);
        assert!(d.take(&mut buf).is_err());
    }

    #[test]
    fn basic_passwords_are_read() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic c291cmNlOmtleTpwYXJ0"),
        );
        assert_eq!(basic_password(&h).as_deref(), Some("key:part"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(basic_password(&h), None);
    }
}
