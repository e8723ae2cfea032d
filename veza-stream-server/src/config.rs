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
        Ok(Self {
            host,
            port,
            data_dir,
            database_url,
            redis_url,
            nats_url,
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
            jwt_secret: val("JWT_SECRET"),
            request_timeout,
        })
    }

    /// From the process environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad setting.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Settings for tests: everything under `dir`, port 0 on loopback.
    pub fn for_tests(dir: &std::path::Path) -> Self {
        let d = dir.display().to_string();
        Self::from_lookup(|k| match k {
            "VEZA_DATA_DIR" => Some(d.clone()),
            "STREAM_SERVER_HOST" => Some("127.0.0.1".into()),
            "STREAM_SERVER_PORT" => Some("0".into()),
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
        ] {
            let e = from(&[(k, v)]).unwrap_err();
            assert_eq!(e.setting, k, "{e}");
        }
    }
}
