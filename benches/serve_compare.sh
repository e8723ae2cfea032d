#!/usr/bin/env bash
# On-demand serving under load: veza-stream-server against nginx, same files, same run, loopback.
#
#   benches/serve_compare.sh [--seconds 10] [--connections 100] [--keep]
#
# 1. Builds the release server and the bench programs (loadgen, hls_cold), honouring
#    CARGO_TARGET_DIR; installs nginx with apt-get if it is missing (as root).
# 2. Makes a 4-minute 44.1 kHz stereo FLAC with ffmpeg's lavfi (tones + pink noise).
# 3. Starts our server on 127.0.0.1 (a temporary data directory, a free port) and measures the
#    cold HLS start (hls_cold: master -> first rendition's playlist -> first segment, on files
#    nobody played yet).
# 4. Uploads the FLAC, warms every aac-128 segment, and exports the same segment bytes and the
#    same FLAC to a directory that nginx serves (2 workers like our 2 runtime threads, sendfile
#    on, keep-alive, no access log; tcp_nopush stays off: with it, nginx's 206 answers stalled
#    about 40 ms each on delayed ACKs).
# 5. Runs loadgen against both: cached 128 kbit/s HLS segments (cycling through all of them) and
#    64 KiB random ranged reads of the FLAC (our /api/v1/audio/{id}/stream vs the file), then
#    prints a table with the ratio (ours / nginx), and stops both servers by PID.
set -euo pipefail

SECONDS_RUN=10
CONNECTIONS=100
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) SECONDS_RUN=$2; shift 2 ;;
        --connections) CONNECTIONS=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        *) echo "usage: $0 [--seconds N] [--connections N] [--keep]" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/veza-serve-compare.XXXXXX)
SERVER_PID=""
NGINX_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null || true
    if [ "$KEEP" = 1 ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx && [ ! -x /usr/sbin/nginx ]; then
    if [ "$(id -u)" = 0 ] && need apt-get; then
        echo "installing nginx (apt-get install -y nginx)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }
    else
        echo "serve_compare.sh: nginx is missing (apt-get install -y nginx)" >&2; exit 1
    fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
for t in ffmpeg curl python3; do need $t || { echo "serve_compare.sh: $t is missing" >&2; exit 1; }; done

echo "building (release): veza-stream-server, loadgen, hls_cold" >&2
(cd "$ROOT" && cargo build --release -q -p veza-stream-server --bin veza-stream-server \
    && cargo build --release -q -p veza-benches --bin loadgen --bin hls_cold)
SERVER=$TARGET/release/veza-stream-server
LOADGEN=$TARGET/release/loadgen
COLD=$TARGET/release/hls_cold

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

SRC=$WORK/source.flac
ffmpeg -nostdin -y -v error \
    -f lavfi -i "aevalsrc=exprs='0.25*sin(2*PI*220*t)*(0.6+0.4*sin(2*PI*0.5*t))+0.15*sin(2*PI*331*t)+0.1*sin(2*PI*(440+40*sin(2*PI*0.2*t))*t)|0.25*sin(2*PI*277*t)+0.15*sin(2*PI*415*t)*(0.5+0.5*sin(2*PI*0.25*t))':s=44100:d=240" \
    -f lavfi -i "anoisesrc=d=240:c=pink:a=0.04:r=44100:seed=1" \
    -filter_complex "[1]aformat=channel_layouts=stereo[n];[0][n]amix=inputs=2:normalize=0" \
    -ar 44100 -ac 2 -c:a flac "$SRC"
SRC_SIZE=$(stat -c %s "$SRC")

PORT=$(free_port)
mkdir -p "$WORK/data"
# A creator's token for the uploads (signed with the data directory's secret, as the server's).
TOKEN=$(VEZA_DATA_DIR=$WORK/data "$SERVER" token --sub bench --role creator --ttl 2h)
# The load comes from one loopback address: per-IP and per-user limits are off for the bench.
VEZA_DATA_DIR=$WORK/data STREAM_SERVER_HOST=127.0.0.1 STREAM_SERVER_PORT=$PORT \
    RATE_LIMIT_PER_IP=off RATE_LIMIT_PER_USER=off \
    MAX_AUDIO_FILE_SIZE=200MB RUST_LOG=warn "$SERVER" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
BASE=http://127.0.0.1:$PORT
for _ in $(seq 100); do curl -sf "$BASE/health" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "$BASE/health" >/dev/null || { echo "our server did not start:" >&2; cat "$WORK/server.log" >&2; exit 1; }

echo "== cold HLS start (4-minute 44.1 kHz stereo FLAC; each run a new upload)" >&2
"$COLD" --base "$BASE" --file "$SRC" --token "$TOKEN" --runs 5 | tee "$WORK/cold.txt"
"$COLD" --base "$BASE" --file "$SRC" --token "$TOKEN" --runs 3 --rendition aac-128 | tee "$WORK/cold128.txt"

ID=$(curl -sf --data-binary @"$SRC" -H 'content-type: application/octet-stream' -H "authorization: Bearer $TOKEN" \
    "$BASE/api/v1/audio?name=source.flac" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["id"])')
HLS=$BASE/api/v1/audio/$ID/hls/aac-128
WWW=$WORK/www
mkdir -p "$WWW/hls/aac-128"
curl -sf "$HLS/index.m3u8" -o "$WWW/hls/aac-128/index.m3u8"
: >"$WORK/ours-seg.txt"; : >"$WORK/nginx-seg.txt"
NPORT=$(free_port)
for seg in $(grep -v '^#' "$WWW/hls/aac-128/index.m3u8"); do
    curl -sf "$HLS/$seg" -o "$WWW/hls/aac-128/$seg"
    echo "$HLS/$seg" >>"$WORK/ours-seg.txt"
    echo "http://127.0.0.1:$NPORT/hls/aac-128/$seg" >>"$WORK/nginx-seg.txt"
done
cp "$SRC" "$WWW/source.flac"
NSEG=$(wc -l <"$WORK/ours-seg.txt")
SEG_BYTES=$(cat "$WWW"/hls/aac-128/seg*.aac | wc -c)
echo "warmed and exported $NSEG aac-128 segments ($SEG_BYTES bytes); FLAC $SRC_SIZE bytes" >&2

mkdir -p "$WORK/nginx/logs"
chmod 755 "$WORK"
cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes 2;
user $(id -un);
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    access_log off;
    types { audio/aac aac; audio/flac flac; application/vnd.apple.mpegurl m3u8; }
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$NPORT;
        root $WWW;
    }
}
CONF
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$NPORT/source.flac" -o /dev/null -r 0-0 2>/dev/null && break; sleep 0.1; done
cmp <(curl -sf "$(head -1 "$WORK/nginx-seg.txt")") <(curl -sf "$(head -1 "$WORK/ours-seg.txt")") \
    || { echo "nginx and our server disagree on segment 0" >&2; exit 1; }

run() { # label, extra args...
    local label=$1; shift
    "$LOADGEN" --label "$label" --connections "$CONNECTIONS" --duration "$SECONDS_RUN" --warmup 2 "$@" \
        | tee -a "$WORK/loadgen.txt" >&2
}
: >"$WORK/loadgen.txt"
echo "== load: $CONNECTIONS connections, ${SECONDS_RUN}s each (after 2 s of warm-up)" >&2
run nginx-segments --urls-file "$WORK/nginx-seg.txt"
run veza-segments --urls-file "$WORK/ours-seg.txt"
run nginx-ranges --range "65536:$SRC_SIZE" --url "http://127.0.0.1:$NPORT/source.flac"
run veza-ranges --range "65536:$SRC_SIZE" --url "$BASE/api/v1/audio/$ID/stream"

python3 - "$WORK/loadgen.txt" <<'PY'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line)
        rows[r["label"]] = r
print()
print("| workload | server | req/s | p50 ms | p99 ms | max ms | errors | MB/s |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for w in ["segments", "ranges"]:
    for s in ["nginx", "veza"]:
        r = rows.get(f"{s}-{w}")
        if r:
            print(f"| {w} | {s} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.2f} | {r['errors']} | {r['bytes_per_s']/1e6:.0f} |")
print()
for w in ["segments", "ranges"]:
    a, b = rows.get(f"veza-{w}"), rows.get(f"nginx-{w}")
    if a and b and b["rps"] > 0:
        print(f"{w}: veza/nginx requests per second = {a['rps']/b['rps']:.2f}; p99 veza {a['p99_ms']:.2f} ms, nginx {b['p99_ms']:.2f} ms")
PY
