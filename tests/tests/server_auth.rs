//! Security of the server: bearer tokens and roles, ownership of files and streams, private
//! resources, API keys (created by an admin, shown once, revocable), rate limits (429 with
//! Retry-After), CORS and security headers, anonymous access switched off, and HTTPS with rustls
//! over a real port.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use veza_stream_server::auth::Role;
use veza_stream_server::config::RateLimit;
use veza_stream_server::{AppState, Config, app, build_state, start};

/// One second of a 440 Hz sine as a 16-bit mono WAV file.
fn wav() -> Vec<u8> {
    let rate = 16_000u32;
    let samples: Vec<i16> = (0..rate)
        .map(|i| ((i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin() * 8000.0) as i16)
        .collect();
    let data_len = (samples.len() * 2) as u32;
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data_len).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&(rate * 2).to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&16u16.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        v.extend_from_slice(&s.to_le_bytes());
    }
    v
}

async fn state_with(dir: &std::path::Path, edit: impl FnOnce(&mut Config)) -> AppState {
    let mut cfg = Config::for_tests(dir);
    edit(&mut cfg);
    build_state(cfg).await.unwrap()
}

fn token(state: &AppState, sub: &str, role: Role) -> String {
    state
        .auth()
        .keys()
        .sign(sub, role, Duration::from_secs(3600))
        .unwrap()
}

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Calls the router with `credential` as a bearer token (None: anonymous).
async fn call(
    state: &AppState,
    method: &str,
    uri: &str,
    credential: Option<&str>,
    body: Option<Value>,
) -> Resp {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(c) = credential {
        b = b.header(header::AUTHORIZATION, format!("Bearer {c}"));
    }
    let req = match body {
        Some(v) => b
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(v.to_string()))
            .unwrap(),
        None => b.body(Body::empty()).unwrap(),
    };
    send(state, req).await
}

async fn send(state: &AppState, req: Request<Body>) -> Resp {
    let resp = app(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

async fn upload(state: &AppState, credential: Option<&str>, private: bool) -> Resp {
    let mut b = Request::post(format!("/api/v1/audio?name=tone.wav&private={private}"))
        .header(header::CONTENT_TYPE, "application/octet-stream");
    if let Some(c) = credential {
        b = b.header(header::AUTHORIZATION, format!("Bearer {c}"));
    }
    send(state, b.body(Body::from(wav())).unwrap()).await
}

#[tokio::test]
async fn roles_and_ownership_decide_who_does_what() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_with(dir.path(), |_| {}).await;
    let alice = token(&state, "alice", Role::Creator);
    let bob = token(&state, "bob", Role::Creator);
    let lena = token(&state, "lena", Role::Listener);
    let root = token(&state, "root", Role::Admin);

    // Anonymous and listeners cannot upload; a bad token is refused even where anonymous works.
    let r = upload(&state, None, false).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(r.json()["error"]["code"], "unauthorized");
    assert_eq!(
        upload(&state, Some(&lena), false).await.status,
        StatusCode::FORBIDDEN
    );
    let mut forged = alice.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");
    assert_eq!(
        upload(&state, Some(&forged), false).await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = call(&state, "GET", "/api/v1/streams", Some("not-a-token"), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Alice uploads a public and a private file; both are hers.
    let r = upload(&state, Some(&alice), false).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    let public = r.json()["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(r.json()["data"]["owner"], "alice");
    let r = upload(&state, Some(&alice), true).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let private = r.json()["data"]["id"].as_str().unwrap().to_owned();

    // The public file is readable by anyone; the private one by alice and admins only, and
    // others are told it does not exist (metadata, stream, HLS, jobs).
    for who in [None, Some(lena.as_str()), Some(bob.as_str())] {
        let r = call(&state, "GET", &format!("/api/v1/audio/{public}"), who, None).await;
        assert_eq!(r.status, StatusCode::OK);
        for path in [
            format!("/api/v1/audio/{private}"),
            format!("/api/v1/audio/{private}/stream"),
            format!("/api/v1/audio/{private}/hls/master.m3u8"),
        ] {
            let r = call(&state, "GET", &path, who, None).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{path} {who:?}");
        }
    }
    for who in [&alice, &root] {
        let r = call(
            &state,
            "GET",
            &format!("/api/v1/audio/{private}/stream"),
            Some(who),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, wav());
    }
    let r = call(
        &state,
        "POST",
        "/api/v1/audio/transcode",
        Some(&bob),
        Some(json!({"file_id": private, "output_format": "mp3"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // A job belongs to whoever asked for it, and so does the file it makes.
    let r = call(
        &state,
        "POST",
        "/api/v1/audio/transcode",
        Some(&bob),
        Some(json!({"file_id": public, "output_format": "mp3", "bitrate": 64})),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json());
    let job = r.json()["data"]["id"].as_str().unwrap().to_owned();
    let job_url = format!("/api/v1/jobs/{job}");
    assert_eq!(
        call(&state, "GET", &job_url, Some(&alice), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&state, "GET", &job_url, None, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let made = loop {
        let r = call(&state, "GET", &job_url, Some(&bob), None).await;
        assert_eq!(r.status, StatusCode::OK);
        let d = r.json()["data"].clone();
        match d["state"].as_str().unwrap() {
            "done" => break d["result_file_id"].as_str().unwrap().to_owned(),
            "failed" => panic!("job failed: {d}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let r = call(
        &state,
        "GET",
        &format!("/api/v1/audio/{made}"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(r.json()["data"]["owner"], "bob");

    // Only the owner or an admin deletes.
    let url = format!("/api/v1/audio/{public}");
    assert_eq!(
        call(&state, "DELETE", &url, Some(&bob), None).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&state, "DELETE", &url, None, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&state, "DELETE", &url, Some(&root), None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(
            &state,
            "DELETE",
            &format!("/api/v1/audio/{private}"),
            Some(&alice),
            None
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );

    // Streams: creators create; the owner or an admin changes; private ones are hidden and
    // left out of others' listings.
    let r = call(
        &state,
        "POST",
        "/api/v1/streams",
        Some(&lena),
        Some(json!({"title": "nope"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = call(
        &state,
        "POST",
        "/api/v1/streams",
        Some(&alice),
        Some(json!({"title": "Secret rehearsal", "is_private": true})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let secret = r.json()["data"]["id"].as_str().unwrap().to_owned();
    let r = call(
        &state,
        "POST",
        "/api/v1/streams",
        Some(&alice),
        Some(json!({"title": "Morning show"})),
    )
    .await;
    let show = r.json()["data"]["id"].as_str().unwrap().to_owned();
    let total = |v: Value| v["data"]["total"].as_i64().unwrap();
    assert_eq!(
        total(
            call(&state, "GET", "/api/v1/streams", None, None)
                .await
                .json()
        ),
        1
    );
    assert_eq!(
        total(
            call(&state, "GET", "/api/v1/streams", Some(&bob), None)
                .await
                .json()
        ),
        1
    );
    assert_eq!(
        total(
            call(&state, "GET", "/api/v1/streams", Some(&alice), None)
                .await
                .json()
        ),
        2
    );
    assert_eq!(
        total(
            call(&state, "GET", "/api/v1/streams", Some(&root), None)
                .await
                .json()
        ),
        2
    );
    let secret_url = format!("/api/v1/streams/{secret}");
    assert_eq!(
        call(&state, "GET", &secret_url, Some(&bob), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&state, "GET", &secret_url, Some(&alice), None)
            .await
            .status,
        StatusCode::OK
    );
    let show_url = format!("/api/v1/streams/{show}");
    let r = call(
        &state,
        "PATCH",
        &show_url,
        Some(&bob),
        Some(json!({"title": "mine"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = call(
        &state,
        "PATCH",
        &show_url,
        Some(&root),
        Some(json!({"title": "Renamed"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["data"]["title"], "Renamed");
    assert_eq!(
        call(&state, "DELETE", &show_url, Some(&bob), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&state, "DELETE", &show_url, Some(&alice), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );

    // Ids never reach a path or a query unchecked.
    for bad in ["..%2F..%2Fetc%2Fpasswd", "%2e%2e", "x'%20OR%201=1"] {
        let r = call(
            &state,
            "GET",
            &format!("/api/v1/audio/{bad}/stream"),
            Some(&root),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{bad}");
    }
}

#[tokio::test]
async fn api_keys_are_shown_once_stored_hashed_and_revocable() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_with(dir.path(), |_| {}).await;
    let root = token(&state, "root", Role::Admin);
    let alice = token(&state, "alice", Role::Creator);
    let body = json!({"name": "ingest bot", "role": "creator"});
    let r = call(
        &state,
        "POST",
        "/api/v1/api-keys",
        Some(&alice),
        Some(body.clone()),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = call(&state, "POST", "/api/v1/api-keys", Some(&root), Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let key = r.json()["data"]["key"].as_str().unwrap().to_owned();
    let id = r.json()["data"]["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("vza_"));
    let r = call(
        &state,
        "POST",
        "/api/v1/api-keys",
        Some(&root),
        Some(json!({"name": "x", "role": "emperor"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    // The listing never shows keys; the database holds only a hash.
    let r = call(&state, "GET", "/api/v1/api-keys", Some(&root), None).await;
    assert!(!String::from_utf8_lossy(&r.body).contains(&key));
    assert_eq!(r.json()["data"][0]["name"], "ingest bot");
    let stored = state
        .store()
        .api_key_by_hash(&veza_stream_server::auth::hash_api_key(&key))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(stored.key_hash, key);

    // The key works as a bearer token and as X-API-Key; what it makes is owned by the key.
    let r = upload(&state, Some(&key), false).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["data"]["owner"], format!("key:{id}"));
    let req = Request::post("/api/v1/streams")
        .header("x-api-key", &key)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"title": "bot radio"}).to_string()))
        .unwrap();
    assert_eq!(send(&state, req).await.status, StatusCode::CREATED);

    // Revoked: refused at once. Unknown keys likewise.
    let r = call(
        &state,
        "DELETE",
        &format!("/api/v1/api-keys/{id}"),
        Some(&root),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        upload(&state, Some(&key), false).await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = call(
        &state,
        "DELETE",
        &format!("/api/v1/api-keys/{id}"),
        Some(&root),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        upload(&state, Some("vza_0000"), false).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_with(dir.path(), |c| {
        c.rate_limit_user = RateLimit::Limit {
            requests: 5,
            per: Duration::from_secs(60),
        };
    })
    .await;
    let alice = token(&state, "alice", Role::Listener);
    let bob = token(&state, "bob", Role::Listener);
    for _ in 0..5 {
        let r = call(&state, "GET", "/api/v1/streams", Some(&alice), None).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = call(&state, "GET", "/api/v1/streams", Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.json()["error"]["code"], "rate_limited");
    let wait: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Others are not affected.
    let r = call(&state, "GET", "/api/v1/streams", Some(&bob), None).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn per_ip_limits_apply_over_a_real_port() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_with(dir.path(), |c| {
        c.rate_limit_ip = RateLimit::Limit {
            requests: 3,
            per: Duration::from_secs(60),
        };
    })
    .await;
    let running = start(state).await.unwrap();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(raw_get(running.addr, "/api/v1/streams").await);
    }
    assert_eq!(statuses[..3], ["200", "200", "200"]);
    assert_eq!(statuses[3..], ["429", "429"]);
    // Operations endpoints are not limited (probes must keep working).
    assert_eq!(raw_get(running.addr, "/health").await, "200");
    running.stop().await.unwrap();
}

/// The status code of a GET over a plain TCP connection.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out)[9..12].to_owned()
}

#[tokio::test]
async fn cors_security_headers_and_closed_anonymous_access() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_with(dir.path(), |c| {
        c.allow_anonymous = false;
        c.cors_allowed_origins = vec!["https://player.example".into()];
    })
    .await;
    // A browser's preflight from an allowed origin is answered without credentials.
    let req = Request::builder()
        .method("OPTIONS")
        .uri("/api/v1/streams")
        .header(header::ORIGIN, "https://player.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization,content-type",
        )
        .body(Body::empty())
        .unwrap();
    let r = send(&state, req).await;
    assert!(r.status.is_success(), "{}", r.status);
    assert_eq!(
        r.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://player.example"
    );
    // Another origin gets no CORS grant.
    let req = Request::get("/health")
        .header(header::ORIGIN, "https://evil.example")
        .body(Body::empty())
        .unwrap();
    let r = send(&state, req).await;
    assert!(r.headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    // Security headers on every response, errors included.
    let r = call(&state, "GET", "/api/v1/streams", None, None).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "anonymous access is off"
    );
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    assert_eq!(r.headers["x-frame-options"], "DENY");
    let t = token(&state, "lena", Role::Listener);
    let r = call(&state, "GET", "/api/v1/streams", Some(&t), None).await;
    assert_eq!(r.status, StatusCode::OK);
    // Players that cannot set headers pass the token in the query (GET only).
    let r = call(
        &state,
        "GET",
        &format!("/api/v1/streams?access_token={t}"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn expired_and_foreign_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_with(dir.path(), |_| {}).await;
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "alice", "role": "admin", "exp": 1_000_000}),
        &jsonwebtoken::EncodingKey::from_secret(Config::TEST_JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let foreign = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "alice", "role": "admin", "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(b"someone else's secret, also long enough"),
    )
    .unwrap();
    let no_exp = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "alice", "role": "admin"}),
        &jsonwebtoken::EncodingKey::from_secret(Config::TEST_JWT_SECRET.as_bytes()),
    )
    .unwrap();
    for t in [expired, foreign, no_exp] {
        let r = call(&state, "GET", "/api/v1/api-keys", Some(&t), None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn https_with_rustls_when_a_certificate_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let state = state_with(dir.path(), |c| {
        c.tls_cert_file = Some(cert_path.clone());
        c.tls_key_file = Some(key_path.clone());
    })
    .await;
    let running = start(state).await.unwrap();
    assert!(running.tls);

    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(
        text.contains("strict-transport-security: max-age="),
        "{text}"
    );
    // Plain HTTP on the TLS port does not get an answer.
    let mut plain = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut out)).await;
    assert!(!String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    running.stop().await.unwrap();
}

#[tokio::test]
async fn openapi_document_lists_every_route_and_the_docs_page_renders_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_with(dir.path(), |_| {}).await;
    let r = call(&state, "GET", "/api-docs/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/api/v1/audio", "post"),
        ("/api/v1/audio/{file_id}", "get"),
        ("/api/v1/audio/{file_id}", "delete"),
        ("/api/v1/audio/{file_id}/stream", "get"),
        ("/api/v1/audio/{file_id}/analytics", "get"),
        ("/api/v1/audio/transcode", "post"),
        ("/api/v1/audio/compress", "post"),
        ("/api/v1/jobs/{job_id}", "get"),
        ("/api/v1/streams", "get"),
        ("/api/v1/streams", "post"),
        ("/api/v1/streams/{stream_id}", "get"),
        ("/api/v1/streams/{stream_id}", "patch"),
        ("/api/v1/streams/{stream_id}", "delete"),
        ("/api/v1/streams/{stream_id}/analytics", "get"),
        ("/api/v1/api-keys", "post"),
        ("/api/v1/api-keys/{key_id}", "delete"),
        ("/api/v1/audio/{file_id}/hls/master.m3u8", "get"),
        ("/api/v1/audio/{file_id}/hls/{rendition}/index.m3u8", "get"),
        ("/api/v1/audio/{file_id}/hls/{rendition}/{segment}", "get"),
        ("/health", "get"),
        ("/ready", "get"),
        ("/metrics", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
    // Every documented path answers something other than 404/405 from the router (the document
    // is not describing routes that do not exist).
    let alice = token(&state, "root", Role::Admin);
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let uri = path
                .replace("{file_id}", "00000000-0000-4000-8000-000000000000")
                .replace("{stream_id}", "00000000-0000-4000-8000-000000000000")
                .replace("{job_id}", "00000000-0000-4000-8000-000000000000")
                .replace("{key_id}", "00000000-0000-4000-8000-000000000000")
                .replace("{rendition}", "aac-128")
                .replace("{segment}", "seg0.aac");
            let r = call(&state, &method.to_uppercase(), &uri, Some(&alice), None).await;
            assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
            if r.status == StatusCode::NOT_FOUND {
                // A 404 must be the API's own (unknown id), not the router's.
                assert_eq!(r.json()["error"]["code"], "not_found", "{method} {uri}");
            }
        }
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["AudioRecord"]["properties"]["loudness_lufs"].is_object());
    let r = call(&state, "GET", "/api-docs", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let html = String::from_utf8(r.body).unwrap();
    assert!(html.contains("/api-docs/openapi.json"));
}

#[tokio::test]
async fn eddsa_tokens_verify_with_a_configured_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let public = dir.path().join("jwt-public.pem");
    let private = dir.path().join("jwt-private.pem");
    std::fs::write(&public, key.public_key_pem()).unwrap();
    std::fs::write(&private, key.serialize_pem()).unwrap();
    let state = state_with(dir.path(), |c| {
        c.jwt_public_key_file = Some(public.clone());
        c.jwt_private_key_file = Some(private.clone());
        c.jwt_algorithm = Some("EdDSA".into());
    })
    .await;
    assert_eq!(
        state.auth().keys().algorithm(),
        jsonwebtoken::Algorithm::EdDSA
    );
    // A token signed with the private key is accepted...
    let t = token(&state, "root", Role::Admin);
    let r = call(&state, "GET", "/api/v1/api-keys", Some(&t), None).await;
    assert_eq!(r.status, StatusCode::OK);
    // ...an HS256 token with the test secret is not (only the configured algorithm counts).
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "root", "role": "admin", "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(Config::TEST_JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let r = call(&state, "GET", "/api/v1/api-keys", Some(&hs), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // ...nor one signed by another Ed25519 key.
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &json!({"sub": "root", "role": "admin", "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_ed_pem(other.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let r = call(&state, "GET", "/api/v1/api-keys", Some(&forged), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}
