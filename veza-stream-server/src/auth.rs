//! Authentication and authorisation: JWT bearer tokens (HS256 with a secret, RS256 or EdDSA with a
//! public key), API keys for services, roles (listener < creator < admin) with per-resource rules,
//! and rate limits per IP, per user and per key.
//!
//! The [`authenticate`] middleware reads the credentials of every request once (`Authorization:
//! Bearer <jwt|api key>`, `X-API-Key`, or `?access_token=` on GET/HEAD for players that cannot set
//! headers), answers 401 for bad ones, applies the rate limits (429 with `Retry-After`), and leaves
//! the [`Caller`] in the request's extensions for handlers.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Config, RateLimit};
use crate::error::ApiError;
use crate::state::AppState;

/// A role, ordered by power: each role may do what the roles below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Listens to public content and their own.
    Listener,
    /// Uploads files, creates streams, runs jobs.
    Creator,
    /// Everything, on everyone's resources; manages API keys.
    Admin,
}

impl Role {
    /// The role's name as in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Listener => "listener",
            Self::Creator => "creator",
            Self::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "listener" => Ok(Self::Listener),
            "creator" => Ok(Self::Creator),
            "admin" => Ok(Self::Admin),
            _ => Err(format!("unknown role {s:?} (listener, creator or admin)")),
        }
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The owner name recorded on resources: the JWT subject, or `key:<id>` for an API key.
    pub subject: String,
    /// The role.
    pub role: Role,
    /// The API key's id when the request used one.
    pub api_key: Option<String>,
}

impl Principal {
    /// True for admins.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// True when this principal owns a resource owned by `owner` (or is an admin).
    pub fn can_change(&self, owner: Option<&str>) -> bool {
        self.is_admin() || owner == Some(self.subject.as_str())
    }
}

/// The caller of a request (`None`: anonymous). Extracted from what [`authenticate`] found.
#[derive(Debug, Clone, Default)]
pub struct Caller(pub Option<Principal>);

impl Caller {
    /// The principal, or 401.
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] for anonymous callers.
    pub fn principal(&self) -> Result<&Principal, ApiError> {
        self.0.as_ref().ok_or(ApiError::Unauthorized)
    }

    /// The principal if it has at least `role`: 401 when anonymous, 403 when below.
    ///
    /// # Errors
    /// As above.
    pub fn require(&self, role: Role) -> Result<&Principal, ApiError> {
        let p = self.principal()?;
        if p.role >= role {
            Ok(p)
        } else {
            Err(ApiError::Forbidden)
        }
    }

    /// May this caller see a resource owned by `owner`, private or not? Private resources are
    /// visible to their owner and admins only; callers who may not see one get 404 (its existence
    /// is not revealed).
    pub fn can_see(&self, owner: Option<&str>, is_private: bool) -> bool {
        !is_private || self.0.as_ref().is_some_and(|p| p.can_change(owner))
    }

    /// 404 (`what` not found) unless [`Caller::can_see`].
    ///
    /// # Errors
    /// As above.
    pub fn check_see(
        &self,
        owner: Option<&str>,
        is_private: bool,
        what: &'static str,
    ) -> Result<(), ApiError> {
        if self.can_see(owner, is_private) {
            Ok(())
        } else {
            Err(ApiError::NotFound(what))
        }
    }

    /// May this caller change a resource owned by `owner`? 404 when it may not even see it,
    /// 401/403 otherwise.
    ///
    /// # Errors
    /// As above.
    pub fn check_change(
        &self,
        owner: Option<&str>,
        is_private: bool,
        what: &'static str,
    ) -> Result<&Principal, ApiError> {
        self.check_see(owner, is_private, what)?;
        let p = self.principal()?;
        if p.can_change(owner) {
            Ok(p)
        } else {
            Err(ApiError::Forbidden)
        }
    }

    /// The subject, if any.
    pub fn subject(&self) -> Option<&str> {
        self.0.as_ref().map(|p| p.subject.as_str())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or_default())
    }
}

/// The client's address as [`authenticate`] saw it (after `TRUST_PROXY_HEADERS`); `None` when
/// the router is driven without a socket.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ClientAddr>()
            .copied()
            .unwrap_or_default())
    }
}

/// The claims of our tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: the user's name or id.
    pub sub: String,
    /// Role (absent: listener).
    #[serde(default)]
    pub role: Option<String>,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Issued at, Unix seconds.
    #[serde(default)]
    pub iat: Option<u64>,
    /// Issuer, checked when `JWT_ISSUER` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience, checked when `JWT_AUDIENCE` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// A failure to set up or use the token keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file cannot be read or written.
    #[error("{setting}: {path}: {source}")]
    Io {
        /// The setting naming the file.
        setting: &'static str,
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key is not valid for its algorithm.
    #[error("{setting}: {message}")]
    Invalid {
        /// The setting at fault.
        setting: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Signing needs a private key that is not configured.
    #[error(
        "signing tokens needs JWT_SECRET (HS256) or JWT_PRIVATE_KEY_FILE (RS256/EdDSA); only a public key is configured"
    )]
    NoSigningKey,
}

/// The keys that verify (and, when available, sign) tokens.
#[derive(Clone)]
pub struct TokenKeys {
    algorithm: Algorithm,
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("algorithm", &self.algorithm)
            .field("can_sign", &self.encoding.is_some())
            .finish_non_exhaustive()
    }
}

/// The name of the secret file created in the data directory when no key is configured.
pub const SECRET_FILE: &str = "jwt_secret";

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Io {
        setting,
        path: path.display().to_string(),
        source,
    })
}

fn invalid(setting: &'static str, e: impl std::fmt::Display) -> KeyError {
    KeyError::Invalid {
        setting,
        message: e.to_string(),
    }
}

/// The HS256 secret of the data directory, created (32 random bytes, hex, mode 0600) when
/// missing, so that the server and `veza-stream-server token` agree without configuration.
fn data_dir_secret(data_dir: &Path) -> Result<String, KeyError> {
    let path = data_dir.join(SECRET_FILE);
    let io = |source| KeyError::Io {
        setting: "VEZA_DATA_DIR",
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => return Ok(s.trim().to_owned()),
        Ok(_) => {
            return Err(invalid(
                "VEZA_DATA_DIR",
                format!(
                    "{} holds a secret shorter than 32 characters",
                    path.display()
                ),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let secret = hex::encode(rand::random::<[u8; 32]>());
    // Written to a temporary file and linked into place, so two processes starting at once agree
    // on one secret (the loser reads the winner's).
    let tmp = data_dir.join(format!(".{SECRET_FILE}.{}", std::process::id()));
    {
        use std::io::Write as _;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(secret.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(secret),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let s = std::fs::read_to_string(&path).map_err(io)?;
            Ok(s.trim().to_owned())
        }
        Err(e) => Err(io(e)),
    }
}

impl TokenKeys {
    /// The keys of a configuration: `JWT_PUBLIC_KEY_FILE` (RS256 or EdDSA, by `JWT_ALGORITHM` or
    /// the key's type), else `JWT_SECRET` (HS256), else the secret file of the data directory
    /// (created at first start).
    ///
    /// # Errors
    /// [`KeyError`] naming the setting at fault.
    pub fn from_config(cfg: &Config) -> Result<Self, KeyError> {
        let (algorithm, decoding, encoding) = if let Some(path) = &cfg.jwt_public_key_file {
            let pem = read("JWT_PUBLIC_KEY_FILE", path)?;
            let algorithm = match cfg.jwt_algorithm.as_deref() {
                Some(a) => parse_algorithm(a)?,
                None if std::str::from_utf8(&pem).is_ok_and(|p| p.contains("RSA"))
                    || pem.len() > 200 =>
                {
                    Algorithm::RS256
                }
                None => Algorithm::EdDSA,
            };
            let decoding = match algorithm {
                Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
                _ => DecodingKey::from_ed_pem(&pem),
            }
            .map_err(|e| invalid("JWT_PUBLIC_KEY_FILE", e))?;
            let encoding = match &cfg.jwt_private_key_file {
                None => None,
                Some(p) => {
                    let pem = read("JWT_PRIVATE_KEY_FILE", p)?;
                    Some(
                        match algorithm {
                            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
                            _ => EncodingKey::from_ed_pem(&pem),
                        }
                        .map_err(|e| invalid("JWT_PRIVATE_KEY_FILE", e))?,
                    )
                }
            };
            (algorithm, decoding, encoding)
        } else {
            let secret = match &cfg.jwt_secret {
                Some(s) => s.clone(),
                None => data_dir_secret(&cfg.data_dir)?,
            };
            (
                Algorithm::HS256,
                DecodingKey::from_secret(secret.as_bytes()),
                Some(EncodingKey::from_secret(secret.as_bytes())),
            )
        };
        Ok(Self {
            algorithm,
            decoding,
            encoding,
            issuer: cfg.jwt_issuer.clone(),
            audience: cfg.jwt_audience.clone(),
        })
    }

    /// The algorithm tokens must use.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Signs a token for `sub` with `role`, valid for `ttl`.
    ///
    /// # Errors
    /// [`KeyError::NoSigningKey`] when only a public key is configured.
    pub fn sign(&self, sub: &str, role: Role, ttl: Duration) -> Result<String, KeyError> {
        let key = self.encoding.as_ref().ok_or(KeyError::NoSigningKey)?;
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: sub.to_owned(),
            role: Some(role.as_str().to_owned()),
            exp: now.saturating_add(ttl.as_secs()),
            iat: Some(now),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key)
            .map_err(|e| invalid("token", e))
    }

    /// Verifies a token: signature with the configured algorithm only, expiry (30 s leeway),
    /// issuer and audience when configured, a non-empty subject and a known role.
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] for anything wrong.
    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let mut v = Validation::new(self.algorithm);
        v.leeway = 30;
        v.set_required_spec_claims(&["exp", "sub"]);
        match &self.issuer {
            Some(i) => v.set_issuer(&[i]),
            None => v.iss = None,
        }
        match &self.audience {
            Some(a) => v.set_audience(&[a]),
            None => v.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v).map_err(|e| {
            tracing::debug!(error = %e, "token refused");
            ApiError::Unauthorized
        })?;
        let c = data.claims;
        if c.sub.is_empty() || c.sub.len() > 200 || c.sub.starts_with("key:") {
            return Err(ApiError::Unauthorized);
        }
        let role = match c.role.as_deref() {
            None => Role::Listener,
            Some(r) => r.parse().map_err(|_| ApiError::Unauthorized)?,
        };
        Ok(Principal {
            subject: c.sub,
            role,
            api_key: None,
        })
    }
}

fn parse_algorithm(a: &str) -> Result<Algorithm, KeyError> {
    match a.to_ascii_uppercase().as_str() {
        "RS256" => Ok(Algorithm::RS256),
        "EDDSA" | "ED25519" => Ok(Algorithm::EdDSA),
        other => Err(invalid(
            "JWT_ALGORITHM",
            format!("{other:?}: with a public key, RS256 or EdDSA"),
        )),
    }
}

/// The prefix of our API keys (it tells them from JWTs and makes leaked keys searchable).
pub const API_KEY_PREFIX: &str = "vza_";

/// A new random API key and its stored hash.
pub fn new_api_key() -> (String, String) {
    let key = format!(
        "{API_KEY_PREFIX}{}",
        hex::encode(rand::random::<[u8; 24]>())
    );
    let hash = hash_api_key(&key);
    (key, hash)
}

/// The stored form of an API key (SHA-256, hex). Keys are 192 random bits, so a fast hash is
/// enough: there is nothing to brute-force.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Rate limiters keyed by client IP, user and API key.
pub struct RateLimits {
    ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    user: Option<DefaultKeyedRateLimiter<String>>,
    key: Option<DefaultKeyedRateLimiter<String>>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("ip", &self.ip.is_some())
            .field("user", &self.user.is_some())
            .field("key", &self.key.is_some())
            .finish()
    }
}

fn quota(l: RateLimit) -> Option<Quota> {
    let RateLimit::Limit { requests, per } = l else {
        return None;
    };
    let n = NonZeroU32::new(requests)?;
    let period = per.checked_div(requests)?;
    Quota::with_period(period).map(|q| q.allow_burst(n))
}

impl RateLimits {
    /// The limiters of a configuration (`RATE_LIMIT_PER_IP`, `_PER_USER`, `_PER_KEY`).
    pub fn new(cfg: &Config) -> Self {
        Self {
            ip: quota(cfg.rate_limit_ip).map(DefaultKeyedRateLimiter::keyed),
            user: quota(cfg.rate_limit_user).map(DefaultKeyedRateLimiter::keyed),
            key: quota(cfg.rate_limit_key).map(DefaultKeyedRateLimiter::keyed),
        }
    }

    /// Takes one request from the caller's buckets; `Err(seconds to wait)` when one is empty.
    pub fn check(&self, ip: Option<IpAddr>, caller: &Caller) -> Result<(), u64> {
        // The wait is computed from the limiter's own clock, and only on refusal: building a
        // clock per request costs a CPUID calibration (a VM exit on virtual machines).
        fn secs<P: governor::clock::Reference>(nu: governor::NotUntil<P>, now: P) -> u64 {
            nu.wait_time_from(now).as_secs().max(1)
        }
        if let (Some(l), Some(ip)) = (&self.ip, ip) {
            l.check_key(&ip).map_err(|nu| secs(nu, l.clock().now()))?;
        }
        if let Some(p) = &caller.0 {
            let (limiter, key) = match &p.api_key {
                Some(id) => (&self.key, id),
                None => (&self.user, &p.subject),
            };
            if let Some(l) = limiter {
                l.check_key(key).map_err(|nu| secs(nu, l.clock().now()))?;
            }
        }
        Ok(())
    }

    /// Forgets buckets that are full again, so the maps stay as small as the set of recently
    /// active clients (called periodically).
    pub fn forget_idle(&self) {
        if let Some(l) = &self.ip {
            l.retain_recent();
            l.shrink_to_fit();
        }
        for l in [&self.user, &self.key].into_iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// The shared authentication state.
#[derive(Debug, Clone)]
pub struct Auth {
    keys: TokenKeys,
    limits: Arc<RateLimits>,
}

impl Auth {
    /// Loads the keys and builds the limiters.
    ///
    /// # Errors
    /// [`KeyError`] naming the setting at fault.
    pub fn new(cfg: &Config) -> Result<Self, KeyError> {
        Ok(Self {
            keys: TokenKeys::from_config(cfg)?,
            limits: Arc::new(RateLimits::new(cfg)),
        })
    }

    /// The token keys.
    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    /// The rate limiters.
    pub fn limits(&self) -> &Arc<RateLimits> {
        &self.limits
    }
}

/// The credential presented by a request, if any.
pub(crate) fn credential(
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
) -> Option<String> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_owned());
    }
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(rest.trim().to_owned());
        }
        // Any other scheme is a credential we cannot check.
        return Some(String::new());
    }
    if method == Method::GET || method == Method::HEAD {
        let q = uri.query()?;
        for pair in q.split('&') {
            if let Some(t) = pair.strip_prefix("access_token=") {
                return Some(t.to_owned());
            }
        }
    }
    None
}

/// Resolves a credential to a principal: an API key (looked up by hash, refused when revoked)
/// or a JWT.
///
/// # Errors
/// 401 for unknown, revoked, expired or malformed credentials; 503 when the database is down.
pub async fn resolve(state: &AppState, cred: &str) -> Result<Principal, ApiError> {
    if cred.is_empty() || cred.len() > 8192 {
        return Err(ApiError::Unauthorized);
    }
    if cred.starts_with(API_KEY_PREFIX) {
        let key = state
            .store()
            .api_key_by_hash(&hash_api_key(cred))
            .await?
            .filter(|k| k.revoked_at.is_none())
            .ok_or(ApiError::Unauthorized)?;
        let role = key.role.parse().map_err(|_| ApiError::Unauthorized)?;
        return Ok(Principal {
            subject: format!("key:{}", key.id),
            role,
            api_key: Some(key.id),
        });
    }
    state.auth().keys().verify(cred)
}

/// The client's address: the socket's peer, or the first `X-Forwarded-For` hop when
/// `TRUST_PROXY_HEADERS` is on.
fn client_ip(req: &Request, trust_proxy: bool) -> Option<IpAddr> {
    if trust_proxy {
        if let Some(ip) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
        {
            return Some(ip);
        }
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The middleware: credentials -> [`Caller`] (401 when bad), then rate limits (429).
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let caller = match credential(req.method(), req.uri(), req.headers()) {
        None => Caller(None),
        Some(c) => match resolve(&state, &c).await {
            Ok(p) => Caller(Some(p)),
            Err(e) => return e.into_response(),
        },
    };
    // This middleware wraps `/api/v1` only: operations endpoints stay open.
    if caller.0.is_none() && !state.config().allow_anonymous {
        return ApiError::Unauthorized.into_response();
    }
    let ip = client_ip(&req, state.config().trust_proxy_headers);
    if let Err(retry_after) = state.auth().limits().check(ip, &caller) {
        metrics::counter!("veza_http_rate_limited_total").increment(1);
        return ApiError::TooManyRequests { retry_after }.into_response();
    }
    req.extensions_mut().insert(caller);
    req.extensions_mut().insert(ClientAddr(ip));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> Config {
        Config::for_tests(dir)
    }

    #[test]
    fn tokens_round_trip_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = TokenKeys::from_config(&cfg(dir.path())).unwrap();
        let t = keys
            .sign("alice", Role::Creator, Duration::from_secs(60))
            .unwrap();
        let p = keys.verify(&t).unwrap();
        assert_eq!(p.subject, "alice");
        assert_eq!(p.role, Role::Creator);
        // The secret was created in the data directory and is reused.
        let again = TokenKeys::from_config(&cfg(dir.path())).unwrap();
        assert_eq!(again.verify(&t).unwrap().subject, "alice");
        // Tampered, expired, other secret, alg none.
        let mut bad = t.clone();
        bad.pop();
        assert!(keys.verify(&bad).is_err());
        let mut c = cfg(dir.path());
        c.jwt_secret = Some("another secret of at least thirty-two chars".into());
        let other = TokenKeys::from_config(&c).unwrap();
        assert!(other.verify(&t).is_err());
        let old = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "bob".into(),
                role: None,
                exp: 1000,
                iat: None,
                iss: None,
                aud: None,
            },
            &EncodingKey::from_secret(b"another secret of at least thirty-two chars"),
        )
        .unwrap();
        assert!(other.verify(&old).is_err());
        let parts: Vec<&str> = t.split('.').collect();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]);
        assert!(keys.verify(&none).is_err());
    }

    #[test]
    fn roles_order_and_ownership() {
        assert!(Role::Admin > Role::Creator && Role::Creator > Role::Listener);
        let alice = Caller(Some(Principal {
            subject: "alice".into(),
            role: Role::Creator,
            api_key: None,
        }));
        let anon = Caller(None);
        assert!(alice.can_see(Some("alice"), true));
        assert!(!alice.can_see(Some("bob"), true));
        assert!(alice.can_see(Some("bob"), false));
        assert!(!anon.can_see(Some("bob"), true));
        assert!(matches!(
            alice.check_change(Some("bob"), false, "x"),
            Err(ApiError::Forbidden)
        ));
        assert!(matches!(
            anon.require(Role::Listener),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            alice.require(Role::Admin),
            Err(ApiError::Forbidden)
        ));
    }

    #[test]
    fn rate_limits_refuse_past_the_burst() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path());
        c.rate_limit_ip = RateLimit::Limit {
            requests: 3,
            per: Duration::from_secs(60),
        };
        let l = RateLimits::new(&c);
        let ip = Some(IpAddr::from([10, 0, 0, 1]));
        for _ in 0..3 {
            assert!(l.check(ip, &Caller(None)).is_ok());
        }
        let wait = l.check(ip, &Caller(None)).unwrap_err();
        assert!((1..=20).contains(&wait), "{wait}");
        assert!(
            l.check(Some(IpAddr::from([10, 0, 0, 2])), &Caller(None))
                .is_ok()
        );
    }
}
