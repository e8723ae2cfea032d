//! The operator commands of the binary: `token` signs with the secret the server uses (created in
//! the data directory at first use), `api-key create` prints a key the server accepts, and a bad
//! setting stops the binary with exit status 2 and the setting's name.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;

use veza_stream_server::Config;
use veza_stream_server::auth::{Role, TokenKeys, hash_api_key};

fn bin(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_veza-stream-server"));
    c.env_clear()
        .env("VEZA_DATA_DIR", dir)
        .env("RUST_LOG", "error");
    c
}

#[test]
fn token_is_signed_with_the_data_directory_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin(dir.path())
        .args(["token", "--sub", "ops", "--role", "admin", "--ttl", "2h"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    // The server, started later on the same data directory, accepts it.
    let cfg =
        Config::from_lookup(|k| (k == "VEZA_DATA_DIR").then(|| dir.path().display().to_string()))
            .unwrap();
    let p = TokenKeys::from_config(&cfg)
        .unwrap()
        .verify(token.trim())
        .unwrap();
    assert_eq!(p.subject, "ops");
    assert_eq!(p.role, Role::Admin);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("jwt_secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the secret is readable by others: {mode:o}"
        );
    }
    let bad = bin(dir.path())
        .args(["token", "--sub", "ops", "--role", "emperor"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[tokio::test]
async fn api_key_create_prints_a_key_the_server_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin(dir.path())
        .args([
            "api-key",
            "create",
            "--name",
            "ingest bot",
            "--role",
            "creator",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("vza_"), "{key}");
    let listed = bin(dir.path()).args(["api-key", "list"]).output().unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains("ingest bot") && listed.contains("active"),
        "{listed}"
    );
    assert!(!listed.contains(&key));
    let cfg = Config::for_tests(dir.path());
    let store = veza_stream_server::storage::Store::connect(&cfg.database_url)
        .await
        .unwrap();
    let rec = store
        .api_key_by_hash(&hash_api_key(&key))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.role, "creator");
    let revoked = bin(dir.path())
        .args(["api-key", "revoke", &rec.id])
        .output()
        .unwrap();
    assert!(revoked.status.success());
    let rec = store
        .api_key_by_hash(&hash_api_key(&key))
        .await
        .unwrap()
        .unwrap();
    assert!(rec.revoked_at.is_some());
}

#[test]
fn a_bad_setting_is_named_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin(dir.path())
        .env("RATE_LIMIT_PER_IP", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RATE_LIMIT_PER_IP"), "{err}");
}
