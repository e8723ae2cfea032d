//! The `veza-stream-server` binary (bootstrap only).

fn main() {
    eprintln!(
        "veza-stream-server is not built yet; try `cargo run --release --example transcode -- --help`"
    );
    std::process::exit(2);
}
