//! Configuration: environment variables (the names of the architecture document), an optional
//! TOML file (`VEZA_CONFIG`), and defaults. Validated at start: a bad setting is named in the
//! error and the process exits non-zero. docs/configuration.md lists every setting.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A setting that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {setting}: {message}")]
pub struct ConfigError {
    /// The environment variable (or TOML key) at fault.
    pub setting: String,
    /// What is wrong with it.
    pub message: String,
}

fn bad(setting: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: setting.to_owned(),
        message: message.into(),
    }
}

/// The server's settings. See docs/configuration.md for each one's default and unit.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address (`STREAM_SERVER_HOST`, default 0.0.0.0).
    pub host: IpAddr,
    /// Listen port (`STREAM_SERVER_PORT`, default 8080; 0 picks a free port).
    pub port: u16,
    /// Where the server keeps its state (`VEZA_DATA_DIR`, default `./data`).
    pub data_dir: PathBuf,
    /// Database (`DATABASE_URL`; default a SQLite file `veza.db` in the data directory).
    pub database_url: String,
    /// Redis for the shared cache index (`REDIS_URL`; default none: in-process index).
    pub redis_url: Option<String>,
    /// NATS for events and live relay (`NATS_URL`; default none: in-process bus).
    pub nats_url: Option<String>,
    /// Prefix of the Redis keys (`REDIS_KEY_PREFIX`, default `veza:`).
    pub redis_key_prefix: String,
    /// Events kept while NATS is unreachable (`EVENT_BUFFER_SIZE`, default 10000; the oldest
    /// is dropped past it).
    pub event_buffer_size: usize,
    /// Transcode cache (`AUDIO_CACHE_DIR`, default `<data>/cache`).
    pub cache_dir: PathBuf,
    /// Cache budget in bytes (`AUDIO_CACHE_MAX_SIZE`, default 1GB).
    pub cache_max_bytes: u64,
    /// Memory budget of finished HLS VOD renditions in bytes (`HLS_CACHE_MEMORY_SIZE`,
    /// default 256MB; renditions being made are not counted).
    pub hls_memory_bytes: u64,
    /// Uploaded files (`AUDIO_UPLOAD_DIR`, default `<data>/uploads`).
    pub upload_dir: PathBuf,
    /// Largest upload in bytes (`MAX_AUDIO_FILE_SIZE`, default 100MB).
    pub max_upload_bytes: u64,
    /// Socket buffer per listener in bytes (`STREAM_BUFFER_SIZE`, default 8192).
    pub stream_buffer_size: usize,
    /// Bytes per read when serving files (`STREAM_CHUNK_SIZE`, default 4096... 64 KiB).
    pub stream_chunk_size: usize,
    /// Live streams at once (`MAX_CONCURRENT_STREAMS`, default 100).
    pub max_concurrent_streams: usize,
    /// A second listener for `/metrics` (`PROMETHEUS_PORT`, default none).
    pub prometheus_port: Option<u16>,
    /// Worker threads for transcode jobs (`JOB_WORKERS`, default the number of CPUs).
    pub job_workers: usize,
    /// HS256 secret for JWTs (`JWT_SECRET`; default one created in the data directory).
    pub jwt_secret: Option<String>,
    /// Request timeout (`REQUEST_TIMEOUT`, default 30s; uploads and streams are exempt).
    pub request_timeout: Duration,
    /// PEM public key for RS256/EdDSA tokens (`JWT_PUBLIC_KEY_FILE`; replaces the HS256 secret).
    pub jwt_public_key_file: Option<PathBuf>,
    /// PEM private key matching it, for `veza-stream-server token` (`JWT_PRIVATE_KEY_FILE`).
    pub jwt_private_key_file: Option<PathBuf>,
    /// `RS256` or `EdDSA` with a public key (`JWT_ALGORITHM`; default from the key's type).
    pub jwt_algorithm: Option<String>,
    /// Required `iss` claim (`JWT_ISSUER`; default not checked).
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim (`JWT_AUDIENCE`; default not checked).
    pub jwt_audience: Option<String>,
    /// Anonymous callers may read public files and streams (`ALLOW_ANONYMOUS`, default true).
    pub allow_anonymous: bool,
    /// Requests per client IP (`RATE_LIMIT_PER_IP`, default `100/s`; `off` disables).
    pub rate_limit_ip: RateLimit,
    /// Requests per authenticated user (`RATE_LIMIT_PER_USER`, default `50/s`).
    pub rate_limit_user: RateLimit,
    /// Requests per API key (`RATE_LIMIT_PER_KEY`, default `500/s`).
    pub rate_limit_key: RateLimit,
    /// Take the client IP from `X-Forwarded-For` (`TRUST_PROXY_HEADERS`, default false).
    pub trust_proxy_headers: bool,
    /// Origins allowed by CORS (`CORS_ALLOWED_ORIGINS`: `*`, or a comma-separated list, or
    /// empty for none; default `*`).
    pub cors_allowed_origins: Vec<String>,
    /// TLS certificate chain, PEM (`TLS_CERT_FILE`; with `TLS_KEY_FILE`, serves HTTPS).
    pub tls_cert_file: Option<PathBuf>,
    /// TLS private key, PEM (`TLS_KEY_FILE`).
    pub tls_key_file: Option<PathBuf>,
    /// How often listener analytics are written to storage (`ANALYTICS_FLUSH_INTERVAL`,
    /// default 10s).
    pub analytics_flush_interval: Duration,
    /// Live streaming settings (`LIVE_*`).
    pub live: LiveSettings,
}

/// One rung of the live HLS ladder: a codec and a bitrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveRung {
    /// `aac` or `mp3`.
    pub codec: LiveCodec,
    /// Bitrate in kbit/s.
    pub kbps: u32,
}

/// The codecs of the live HLS ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveCodec {
    /// AAC-LC (fMP4 segments).
    Aac,
    /// MP3 (packed-audio segments).
    Mp3,
}

impl LiveRung {
    /// The rung's name in URLs, e.g. `aac-96`.
    pub fn name(&self) -> String {
        match self.codec {
            LiveCodec::Aac => format!("aac-{}", self.kbps),
            LiveCodec::Mp3 => format!("mp3-{}", self.kbps),
        }
    }
}

/// Live streaming settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSettings {
    /// Audio a new progressive listener gets at once, for a fast start (`LIVE_BURST`, default
    /// `2s`; `0s` starts at the live edge). A listener may ask for less with `?burst=MS`.
    pub burst: Duration,
    /// Bytes of audio between ICY metadata blocks (`LIVE_ICY_METAINT`, default 16000).
    pub icy_metaint: usize,
    /// How long a dropped source may take to return to the same stream (`LIVE_GRACE_PERIOD`,
    /// default `10s`).
    pub grace_period: Duration,
    /// Listeners per stream on one node (`LIVE_MAX_LISTENERS`, default 100000).
    pub max_listeners: usize,
    /// The live HLS ladder (`LIVE_HLS_LADDER`, default `aac:48,aac:96,aac:160,mp3:128`; `off`
    /// for none).
    pub hls_ladder: Vec<LiveRung>,
    /// Seconds of audio per live HLS segment (`LIVE_HLS_SEGMENT`, default `2s`).
    pub hls_segment: Duration,
    /// Record every live stream unless it says otherwise (`LIVE_RECORD_DEFAULT`, default false).
    pub record_default: bool,
    /// Where recordings are written (`LIVE_RECORDINGS_DIR`, default `DATA_DIR/recordings`).
    pub recordings_dir: PathBuf,
}

/// Parses `aac:48,aac:96,mp3:128` (or `off`).
pub fn parse_ladder(s: &str) -> Option<Vec<LiveRung>> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("off") || s.eq_ignore_ascii_case("none") {
        return Some(Vec::new());
    }
    let mut out: Vec<LiveRung> = Vec::new();
    for item in s.split(',') {
        let (c, k) = item.trim().split_once(':')?;
        let codec = match c.trim().to_ascii_lowercase().as_str() {
            "aac" => LiveCodec::Aac,
            "mp3" => LiveCodec::Mp3,
            _ => return None,
        };
        let kbps: u32 = k.trim().trim_end_matches('k').parse().ok()?;
        if !(16..=320).contains(&kbps) || out.iter().any(|r| r.codec == codec && r.kbps == kbps) {
            return None;
        }
        out.push(LiveRung { codec, kbps });
    }
    (out.len() <= 8).then_some(out)
}

/// A rate limit: `requests` per `per`, with a burst of `requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// No limit.
    Off,
    /// At most `requests` per `per` (bursts up to `requests`).
    Limit {
        /// Requests allowed per period (and the burst).
        requests: u32,
        /// The period.
        per: Duration,
    },
}

impl RateLimit {
    /// Parses `100/s`, `6000/min`, `50000/h`, or `off`/`0`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().to_ascii_lowercase();
        if s == "off" || s == "0" || s == "none" {
            return Some(Self::Off);
        }
        let (n, unit) = s.split_once('/').unwrap_or((&s, "s"));
        let requests: u32 = n.trim().parse().ok()?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return None,
        };
        Some(if requests == 0 {
            Self::Off
        } else {
            Self::Limit { requests, per }
        })
    }
}

/// Parses a size such as `100MB`, `512KiB`, `1G` or `1048576` (bytes).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        _ => return None,
    };
    let v = n * mult;
    (v.is_finite() && (0.0..1.8e19).contains(&v)).then_some(v as u64)
}

impl Config {
    /// Reads the environment (and `VEZA_CONFIG` if set) through `get`, so tests can pass a map.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad setting.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let file: toml::Table = match get("VEZA_CONFIG") {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| bad("VEZA_CONFIG", format!("cannot read {path}: {e}")))?;
                text.parse()
                    .map_err(|e| bad("VEZA_CONFIG", format!("{path} is not valid TOML: {e}")))?
            }
            None => toml::Table::new(),
        };
        // The environment wins over the file; file keys are the variable names in lowercase.
        let val = |name: &str| -> Option<String> {
            get(name).filter(|v| !v.is_empty()).or_else(|| {
                file.get(&name.to_ascii_lowercase()).map(|v| match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            })
        };
        fn num<T: std::str::FromStr>(
            name: &str,
            v: Option<String>,
            default: T,
        ) -> Result<T, ConfigError> {
            match v {
                None => Ok(default),
                Some(s) => s
                    .trim()
                    .parse()
                    .map_err(|_| bad(name, format!("{s:?} is not a valid number"))),
            }
        }
        let size = |name: &str, default: u64| -> Result<u64, ConfigError> {
            match val(name) {
                None => Ok(default),
                Some(s) => parse_size(&s)
                    .ok_or_else(|| bad(name, format!("{s:?} is not a size (e.g. 100MB, 512KiB)"))),
            }
        };
        let host: IpAddr = match val("STREAM_SERVER_HOST") {
            None => IpAddr::from([0, 0, 0, 0]),
            Some(h) => h
                .parse()
                .map_err(|_| bad("STREAM_SERVER_HOST", format!("{h:?} is not an IP address")))?,
        };
        let port = num("STREAM_SERVER_PORT", val("STREAM_SERVER_PORT"), 8080u16)?;
        let data_dir = PathBuf::from(val("VEZA_DATA_DIR").unwrap_or_else(|| "data".into()));
        let database_url = val("DATABASE_URL")
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", data_dir.join("veza.db").display()));
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(bad(
                "DATABASE_URL",
                "must start with sqlite:, postgres:// or postgresql://",
            ));
        }
        let url = |name: &str, schemes: &[&str]| -> Result<Option<String>, ConfigError> {
            match val(name) {
                None => Ok(None),
                Some(u) if schemes.iter().any(|s| u.starts_with(s)) => Ok(Some(u)),
                Some(u) => Err(bad(
                    name,
                    format!("{u:?} must start with {}", schemes.join(" or ")),
                )),
            }
        };
        let redis_url = url("REDIS_URL", &["redis://", "rediss://"])?;
        let nats_url = url("NATS_URL", &["nats://", "tls://"])?;
        let redis_key_prefix = val("REDIS_KEY_PREFIX").unwrap_or_else(|| "veza:".into());
        if redis_key_prefix.len() > 128 || redis_key_prefix.chars().any(char::is_whitespace) {
            return Err(bad(
                "REDIS_KEY_PREFIX",
                "must be at most 128 characters without spaces",
            ));
        }
        let event_buffer_size = num("EVENT_BUFFER_SIZE", val("EVENT_BUFFER_SIZE"), 10_000usize)?;
        if !(1..=10_000_000).contains(&event_buffer_size) {
            return Err(bad("EVENT_BUFFER_SIZE", "must be between 1 and 10000000"));
        }
        let cache_dir =
            val("AUDIO_CACHE_DIR").map_or_else(|| data_dir.join("cache"), PathBuf::from);
        let upload_dir =
            val("AUDIO_UPLOAD_DIR").map_or_else(|| data_dir.join("uploads"), PathBuf::from);
        let max_upload_bytes = size("MAX_AUDIO_FILE_SIZE", 100_000_000)?;
        if max_upload_bytes == 0 {
            return Err(bad("MAX_AUDIO_FILE_SIZE", "must be above zero"));
        }
        let cache_max_bytes = size("AUDIO_CACHE_MAX_SIZE", 1_000_000_000)?;
        let hls_memory_bytes = size("HLS_CACHE_MEMORY_SIZE", 256_000_000)?;
        let stream_buffer_size = num("STREAM_BUFFER_SIZE", val("STREAM_BUFFER_SIZE"), 8192usize)?;
        let stream_chunk_size = num("STREAM_CHUNK_SIZE", val("STREAM_CHUNK_SIZE"), 65_536usize)?;
        if !(512..=16 << 20).contains(&stream_chunk_size) {
            return Err(bad(
                "STREAM_CHUNK_SIZE",
                "must be between 512 and 16777216 bytes",
            ));
        }
        let max_concurrent_streams = num(
            "MAX_CONCURRENT_STREAMS",
            val("MAX_CONCURRENT_STREAMS"),
            100usize,
        )?;
        let prometheus_port = match val("PROMETHEUS_PORT") {
            None => None,
            Some(p) => Some(
                p.trim()
                    .parse::<u16>()
                    .map_err(|_| bad("PROMETHEUS_PORT", format!("{p:?} is not a port")))?,
            ),
        };
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let job_workers = num("JOB_WORKERS", val("JOB_WORKERS"), cpus)?;
        if job_workers == 0 {
            return Err(bad("JOB_WORKERS", "must be at least 1"));
        }
        let request_timeout = match val("REQUEST_TIMEOUT") {
            None => Duration::from_secs(30),
            Some(t) => humantime::parse_duration(&t).map_err(|_| {
                bad(
                    "REQUEST_TIMEOUT",
                    format!("{t:?} is not a duration (e.g. 30s)"),
                )
            })?,
        };
        let file_setting = |name: &str| val(name).map(PathBuf::from);
        let jwt_secret = val("JWT_SECRET");
        if jwt_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return Err(bad(
                "JWT_SECRET",
                "must have at least 32 characters (e.g. `openssl rand -hex 32`)",
            ));
        }
        let jwt_public_key_file = file_setting("JWT_PUBLIC_KEY_FILE");
        let jwt_algorithm = val("JWT_ALGORITHM");
        if let Some(a) = &jwt_algorithm {
            let ok = match a.to_ascii_uppercase().as_str() {
                "HS256" => jwt_public_key_file.is_none(),
                "RS256" | "EDDSA" => jwt_public_key_file.is_some(),
                _ => false,
            };
            if !ok {
                return Err(bad(
                    "JWT_ALGORITHM",
                    format!(
                        "{a:?}: HS256 (with JWT_SECRET), or RS256/EdDSA (with JWT_PUBLIC_KEY_FILE)"
                    ),
                ));
            }
        }
        let boolean = |name: &str, default: bool| -> Result<bool, ConfigError> {
            match val(name).map(|v| v.trim().to_ascii_lowercase()) {
                None => Ok(default),
                Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
                Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
                Some(v) => Err(bad(name, format!("{v:?} is not true or false"))),
            }
        };
        let limit = |name: &str, default: &str| -> Result<RateLimit, ConfigError> {
            let v = val(name).unwrap_or_else(|| default.to_owned());
            RateLimit::parse(&v).ok_or_else(|| {
                bad(
                    name,
                    format!("{v:?} is not a rate (e.g. 100/s, 6000/min, off)"),
                )
            })
        };
        let cors_allowed_origins = match val("CORS_ALLOWED_ORIGINS") {
            None => vec!["*".to_owned()],
            Some(v) => v
                .split(',')
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
        };
        for o in &cors_allowed_origins {
            if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
                return Err(bad(
                    "CORS_ALLOWED_ORIGINS",
                    format!("{o:?} is not `*` or an origin such as https://app.example.com"),
                ));
            }
        }
        let tls_cert_file = file_setting("TLS_CERT_FILE");
        let tls_key_file = file_setting("TLS_KEY_FILE");
        if tls_cert_file.is_some() != tls_key_file.is_some() {
            return Err(bad(
                if tls_cert_file.is_some() {
                    "TLS_KEY_FILE"
                } else {
                    "TLS_CERT_FILE"
                },
                "TLS needs both TLS_CERT_FILE and TLS_KEY_FILE",
            ));
        }
        let analytics_flush_interval = match val("ANALYTICS_FLUSH_INTERVAL") {
            None => Duration::from_secs(10),
            Some(t) => humantime::parse_duration(&t)
                .ok()
                .filter(|d| (Duration::from_millis(50)..=Duration::from_secs(3600)).contains(d))
                .ok_or_else(|| {
                    bad(
                        "ANALYTICS_FLUSH_INTERVAL",
                        format!("{t:?} is not a duration from 50ms to 1h"),
                    )
                })?,
        };
        let dur =
            |name: &str, default: Duration, range: std::ops::RangeInclusive<Duration>| match val(
                name,
            ) {
                None => Ok(default),
                Some(t) => humantime::parse_duration(&t)
                    .ok()
                    .filter(|d| range.contains(d))
                    .ok_or_else(|| {
                        bad(
                            name,
                            format!(
                                "{t:?} is not a duration from {} to {}",
                                humantime::format_duration(*range.start()),
                                humantime::format_duration(*range.end())
                            ),
                        )
                    }),
            };
        let live = LiveSettings {
            burst: dur("LIVE_BURST", Duration::from_secs(2), Duration::ZERO..=Duration::from_secs(20))?,
            icy_metaint: num("LIVE_ICY_METAINT", val("LIVE_ICY_METAINT"), 16_000usize)
                .and_then(|v| {
                    if (256..=1 << 20).contains(&v) {
                        Ok(v)
                    } else {
                        Err(bad("LIVE_ICY_METAINT", "must be between 256 and 1048576"))
                    }
                })?,
            grace_period: dur(
                "LIVE_GRACE_PERIOD",
                Duration::from_secs(10),
                Duration::ZERO..=Duration::from_secs(3600),
            )?,
            max_listeners: num("LIVE_MAX_LISTENERS", val("LIVE_MAX_LISTENERS"), 100_000usize)?,
            hls_ladder: match val("LIVE_HLS_LADDER") {
                None => parse_ladder("aac:48,aac:96,aac:160,mp3:128").unwrap_or_default(),
                Some(l) => parse_ladder(&l).ok_or_else(|| {
                    bad(
                        "LIVE_HLS_LADDER",
                        format!("{l:?} is not a list such as aac:48,aac:96,mp3:128 (at most 8 rungs of 16 to 320 kbit/s), or off"),
                    )
                })?,
            },
            hls_segment: dur(
                "LIVE_HLS_SEGMENT",
                Duration::from_secs(2),
                Duration::from_millis(500)..=Duration::from_secs(10),
            )?,
            record_default: boolean("LIVE_RECORD_DEFAULT", false)?,
            recordings_dir: val("LIVE_RECORDINGS_DIR")
                .map_or_else(|| data_dir.join("recordings"), PathBuf::from),
        };
        Ok(Self {
            live,
            analytics_flush_interval,
            jwt_public_key_file,
            jwt_private_key_file: file_setting("JWT_PRIVATE_KEY_FILE"),
            jwt_algorithm,
            jwt_issuer: val("JWT_ISSUER"),
            jwt_audience: val("JWT_AUDIENCE"),
            allow_anonymous: boolean("ALLOW_ANONYMOUS", true)?,
            rate_limit_ip: limit("RATE_LIMIT_PER_IP", "100/s")?,
            rate_limit_user: limit("RATE_LIMIT_PER_USER", "50/s")?,
            rate_limit_key: limit("RATE_LIMIT_PER_KEY", "500/s")?,
            trust_proxy_headers: boolean("TRUST_PROXY_HEADERS", false)?,
            cors_allowed_origins,
            tls_cert_file,
            tls_key_file,
            host,
            port,
            data_dir,
            database_url,
            redis_url,
            nats_url,
            redis_key_prefix,
            event_buffer_size,
            cache_dir,
            cache_max_bytes,
            hls_memory_bytes,
            upload_dir,
            max_upload_bytes,
            stream_buffer_size,
            stream_chunk_size,
            max_concurrent_streams,
            prometheus_port,
            job_workers,
            jwt_secret,
            request_timeout,
        })
    }

    /// The JWT secret of [`Config::for_tests`].
    pub const TEST_JWT_SECRET: &'static str = "test secret: not for production, 32+ characters";

    /// From the process environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad setting.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Settings for tests: everything under `dir`, port 0 on loopback, the HS256 secret
    /// [`Config::TEST_JWT_SECRET`], and no rate limits (tests that check them set their own).
    pub fn for_tests(dir: &std::path::Path) -> Self {
        let d = dir.display().to_string();
        Self::from_lookup(|k| match k {
            "VEZA_DATA_DIR" => Some(d.clone()),
            "STREAM_SERVER_HOST" => Some("127.0.0.1".into()),
            "STREAM_SERVER_PORT" => Some("0".into()),
            "JWT_SECRET" => Some(Self::TEST_JWT_SECRET.into()),
            "RATE_LIMIT_PER_IP" | "RATE_LIMIT_PER_USER" | "RATE_LIMIT_PER_KEY" => {
                Some("off".into())
            }
            _ => None,
        })
        .expect("the test defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(map: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = map
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn rates_parse() {
        assert_eq!(
            RateLimit::parse("100/s"),
            Some(RateLimit::Limit {
                requests: 100,
                per: Duration::from_secs(1)
            })
        );
        assert_eq!(
            RateLimit::parse("6000/min"),
            Some(RateLimit::Limit {
                requests: 6000,
                per: Duration::from_secs(60)
            })
        );
        assert_eq!(RateLimit::parse("off"), Some(RateLimit::Off));
        assert_eq!(RateLimit::parse("0"), Some(RateLimit::Off));
        assert_eq!(RateLimit::parse("ten/s"), None);
        assert_eq!(RateLimit::parse("10/day"), None);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("100MB"), Some(100_000_000));
        assert_eq!(parse_size("512KiB"), Some(524_288));
        assert_eq!(parse_size("1.5 GB"), Some(1_500_000_000));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("-5MB"), None);
    }

    #[test]
    fn defaults_and_bad_settings_are_named() {
        let c = from(&[]).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.max_upload_bytes, 100_000_000);
        assert!(c.database_url.starts_with("sqlite://"));
        for (k, v) in [
            ("STREAM_SERVER_PORT", "eighty"),
            ("MAX_AUDIO_FILE_SIZE", "huge"),
            ("DATABASE_URL", "mysql://x"),
            ("REDIS_URL", "http://x"),
            ("STREAM_SERVER_HOST", "localhost:1"),
            ("REQUEST_TIMEOUT", "soon"),
            ("JWT_SECRET", "short"),
            ("JWT_ALGORITHM", "RS256"),
            ("RATE_LIMIT_PER_IP", "fast"),
            ("ALLOW_ANONYMOUS", "maybe"),
            ("CORS_ALLOWED_ORIGINS", "example.com"),
            ("NATS_URL", "http://x"),
            ("EVENT_BUFFER_SIZE", "0"),
            ("EVENT_BUFFER_SIZE", "many"),
        ] {
            let e = from(&[(k, v)]).unwrap_err();
            assert_eq!(e.setting, k, "{e}");
        }
        // Half a TLS configuration names the missing half.
        let e = from(&[("TLS_CERT_FILE", "/tmp/cert.pem")]).unwrap_err();
        assert_eq!(e.setting, "TLS_KEY_FILE", "{e}");
    }
}
