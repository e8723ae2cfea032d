#!/usr/bin/env bash
# Live listeners under load: veza-stream-server against Icecast 2.4, one 128 kbit/s MP3 source,
# same run, loopback only.
#
#   benches/live_compare.sh [--icecast-counts "1000 10000"] [--veza-counts "1000 10000 20000"]
#                           [--ll-counts "10000"] [--two-node-counts "20000"] [--only icecast|veza]
#                           [--steady 20] [--settle 5] [--ramp 1000] [--connect-timeout 10]
#                           [--quiet-wait 120] [--hls-ladder off] [--two-node-db URL] [--icy] [--keep]
#
# 1. Builds the release server (unless --only icecast) and the `listeners` program, honouring
#    CARGO_TARGET_DIR; installs icecast2 with apt-get if it is missing (as root).
# 2. For each server and listener count, starts a fresh server (so memory figures are per row):
#    (a) icecast2 with a generated config in a temporary directory: 127.0.0.1, a free port,
#        25000 clients, 2 sources, the packaged config's queue (512 KiB) and burst (64 KiB), logs
#        in the temporary directory, and (as root) `changeowner` to the icecast2 user (Icecast
#        refuses to run as root); the mount is /bench.mp3, source password generated;
#    (b) veza-stream-server with VEZA_DATA_DIR in the temporary directory, a free port, rate
#        limits off (all listeners come from 127.0.0.1); a creator's token, a stream created with
#        POST /api/v1/streams {"title":"bench"} (data.id, data.ingest_key); the source PUTs to
#        /live/{id} with source:{ingest_key}; listeners GET /live/{id}.mp3, and the low-latency
#        rows GET /live/{id}.mp3?burst=0. `LIVE_HLS_LADDER=off` (`--hls-ladder` to change it):
#        these rows measure ICY listeners, as Icecast serves them, not a transcoding ladder;
#    (c) two veza-stream-server nodes (`--two-node-counts`, rows `veza-2node`): node A ingests,
#        node B relays it through the local NATS (nats://127.0.0.1:4222; started with
#        start-stop-daemon when the port is closed and this runs as root), both with the same
#        JWT_SECRET and the same database (DATABASE_URL: by default one SQLite file in the
#        temporary directory, shared by both processes; `--two-node-db postgres://...` for a
#        PostgreSQL database, e.g. postgres://postgres@127.0.0.1:5432/DB; measured on
#        2026-11-25: with the shared SQLite file about 30 % of the listeners got 503 (each
#        listener's stream lookup waits for a pool connection behind node A's per-join
#        viewer_count UPDATEs, one fsync each), with PostgreSQL none did);
#        half the listeners go to each node (listener i to node i mod 2, one listener process
#        per node), and the CPU and memory figures are sums over both server processes (each
#        node's own figures are printed too).
#    `listeners` is the source (PUT, timed synthetic frames, started 5 s before the listeners)
#    and the listeners (ramped at --ramp per second, split over ceil(N/9000) processes because one
#    process may hold at most 20,000 open files here; two-node rows: an even number of processes,
#    at most 10,000 listeners each); it measures the server's CPU (utime+stime
#    from /proc/PID/stat over the steady window) and memory (VmRSS at the end, VmHWM).
# 3. Prints a table and the ratios (veza / icecast) at the counts both ran.
#
# The machine has 2 cores and other work (builds) may run on it: before each row the script waits
# (at most --quiet-wait seconds) until the machine is less than 15 % busy over 2 s, and every row
# reports the machine's busy share during its steady window (`machine busy %`: compare it with
# server + generator CPU to see whether something else ran).
#
# Everything is bounded: each listeners run lasts ramp + settle + steady seconds (under `timeout`),
# servers are stopped by PID (trap on exit). Nothing but 127.0.0.1 is contacted.
#
# Note: the hard limit of open files per process is 20,000 on the project's machines, and a
# server needs a few descriptors besides its listeners' sockets, so a single-process
# 20,000-listener row will show a few refusals (EMFILE on the server side) unless the hard limit
# is higher; the two-node row is how one serves 20,000 listeners here.
set -euo pipefail

ICE_COUNTS="1000 10000"
VEZA_COUNTS="1000 10000 20000"
LL_COUNTS="10000"
TWO_COUNTS="20000"
HLS_LADDER=off
TWO_DB=""
ONLY=""
STEADY=20
SETTLE=5
RAMP=1000
CONNECT_TIMEOUT=10
QUIET_WAIT=120
ICY=""
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --icecast-counts) ICE_COUNTS=$2; shift 2 ;;
        --veza-counts) VEZA_COUNTS=$2; shift 2 ;;
        --ll-counts) LL_COUNTS=$2; shift 2 ;;
        --two-node-counts) TWO_COUNTS=$2; shift 2 ;;
        --hls-ladder) HLS_LADDER=$2; shift 2 ;;
        --two-node-db) TWO_DB=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --steady) STEADY=$2; shift 2 ;;
        --settle) SETTLE=$2; shift 2 ;;
        --ramp) RAMP=$2; shift 2 ;;
        --connect-timeout) CONNECT_TIMEOUT=$2; shift 2 ;;
        --quiet-wait) QUIET_WAIT=$2; shift 2 ;;
        --icy) ICY=--icy; shift ;;
        --keep) KEEP=1; shift ;;
        *) echo "usage: $0 [--icecast-counts \"1000 10000\"] [--veza-counts \"1000 10000 20000\"] [--ll-counts \"10000\"] [--two-node-counts \"20000\"] [--only icecast|veza] [--steady S] [--settle S] [--ramp N] [--connect-timeout S] [--quiet-wait S] [--hls-ladder off|LADDER] [--two-node-db URL] [--icy] [--keep]" >&2; exit 2 ;;
    esac
done
case "$ONLY" in
    icecast) VEZA_COUNTS=""; LL_COUNTS=""; TWO_COUNTS="" ;;
    veza) ICE_COUNTS="" ;;
    "") ;;
    *) echo "--only takes icecast or veza" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/veza-live-compare.XXXXXX)
chmod 755 "$WORK"
SERVER_PID=""
SERVER_PID2=""
stop_pid() {
    kill "$1" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
stop_server() {
    if [ -n "$SERVER_PID2" ]; then stop_pid "$SERVER_PID2"; SERVER_PID2=""; fi
    if [ -n "$SERVER_PID" ]; then stop_pid "$SERVER_PID"; SERVER_PID=""; fi
}
cleanup() {
    stop_server
    if [ "$KEEP" = 1 ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need() { command -v "$1" >/dev/null 2>&1; }
for t in curl python3 timeout; do need $t || { echo "live_compare.sh: $t is missing" >&2; exit 1; }; done
if [ -n "$ICE_COUNTS" ] && ! need icecast2; then
    if [ "$(id -u)" = 0 ] && need apt-get; then
        echo "installing icecast2 (apt-get install -y icecast2)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq icecast2 >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq icecast2 >/dev/null; }
    else
        echo "live_compare.sh: icecast2 is missing (apt-get install -y icecast2)" >&2; exit 1
    fi
fi

echo "building (release): listeners${VEZA_COUNTS:+, veza-stream-server}" >&2
(cd "$ROOT" && cargo build --release -q -p veza-benches --bin listeners)
if [ -n "$VEZA_COUNTS$LL_COUNTS$TWO_COUNTS" ]; then
    (cd "$ROOT" && cargo build --release -q -p veza-stream-server --bin veza-stream-server)
fi
LISTENERS=$TARGET/release/listeners
SERVER=$TARGET/release/veza-stream-server

# Servers and generator may use up to the hard limit of open files.
ulimit -n "$(ulimit -Hn)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RESULTS=$WORK/results.jsonl
: >"$RESULTS"

# Busy share of all cores over 2 s, percent (from /proc/stat; idle and iowait are not busy).
busy_pct() {
    local a b
    a=$(head -1 /proc/stat); sleep 2; b=$(head -1 /proc/stat)
    python3 -c 'import sys
a=[int(x) for x in sys.argv[1].split()[1:9]]; b=[int(x) for x in sys.argv[2].split()[1:9]]
d=[y-x for x,y in zip(a,b)]; t=sum(d) or 1
print(int(100*(t-d[3]-d[4])/t))' "$a" "$b"
}
wait_quiet() {
    local until=$(( $(date +%s) + QUIET_WAIT )) b
    while :; do
        b=$(busy_pct)
        [ "$b" -lt 15 ] && return 0
        if [ "$(date +%s)" -ge "$until" ]; then
            echo "warning: the machine is still ${b}% busy after ${QUIET_WAIT}s; measuring anyway" >&2
            return 0
        fi
        echo "waiting for a quiet machine (${b}% busy)" >&2
        sleep 8
    done
}

# run_listeners LABEL SERVER_NAME MODE COUNT URL SOURCE_URL KEY [URL2 PID2]
# (with URL2 and PID2: listener i goes to URL i mod 2, both servers are measured, and the
# listener processes are an even number of at most 10,000 listeners each)
run_listeners() {
    local label=$1 server=$2 mode=$3 n=$4 url=$5 src=$6 key=$7 url2=${8:-} pid2=${9:-}
    local procs=$(( (n + 8999) / 9000 ))
    local extra=()
    if [ -n "$url2" ]; then
        procs=$(( (n + 9999) / 10000 )); procs=$(( procs + procs % 2 ))
        extra=(--url "$url2" --server-pid "$pid2")
    fi
    local ramp_s=$(( (n + RAMP - 1) / RAMP ))
    local dur=$(( ramp_s + SETTLE + STEADY ))
    wait_quiet
    echo "== $label: $n listeners, $procs procs, ${dur}s (ramp ${ramp_s}s, settle ${SETTLE}s, steady ${STEADY}s)" >&2
    local out=$WORK/$label.txt
    timeout -k 5 $(( dur + 60 )) "$LISTENERS" --label "$label" --url "$url" --listeners "$n" \
        --ramp "$RAMP" --duration "$dur" --settle "$SETTLE" --procs "$procs" $ICY --connect-timeout "$CONNECT_TIMEOUT" \
        --server-pid "$SERVER_PID" --source "$src" --source-key "$key" --source-lead 5 "${extra[@]}" \
        >"$out" || echo "listeners exited with status $? (see above)" >&2
    grep -v '^{' "$out" >&2 || true
    grep '^{' "$out" | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line); r["server"] = sys.argv[1]; r["mode"] = sys.argv[2]
    print(json.dumps(r))' "$server" "$mode" >>"$RESULTS" || true
}

start_icecast() {
    local dir=$WORK/icecast
    rm -rf "$dir"; mkdir -p "$dir/log"
    ICE_PORT=$(free_port)
    ICE_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
    local owner=""
    if [ "$(id -u)" = 0 ]; then
        local user=icecast2 group=icecast
        getent passwd "$user" >/dev/null || user=nobody
        getent group "$group" >/dev/null || group=nogroup
        chown "$user:$group" "$dir/log"
        owner="<changeowner><user>$user</user><group>$group</group></changeowner>"
    fi
    cat >"$dir/icecast.xml" <<XML
<icecast>
    <location>loopback</location>
    <admin>bench@localhost</admin>
    <limits>
        <clients>25000</clients>
        <sources>2</sources>
        <queue-size>524288</queue-size>
        <client-timeout>30</client-timeout>
        <header-timeout>15</header-timeout>
        <source-timeout>10</source-timeout>
        <burst-on-connect>1</burst-on-connect>
        <burst-size>65535</burst-size>
    </limits>
    <authentication>
        <source-password>$ICE_KEY</source-password>
        <relay-password>$ICE_KEY</relay-password>
        <admin-user>admin</admin-user>
        <admin-password>$ICE_KEY</admin-password>
    </authentication>
    <hostname>127.0.0.1</hostname>
    <listen-socket>
        <port>$ICE_PORT</port>
        <bind-address>127.0.0.1</bind-address>
    </listen-socket>
    <fileserve>1</fileserve>
    <paths>
        <basedir>/usr/share/icecast2</basedir>
        <logdir>$dir/log</logdir>
        <webroot>/usr/share/icecast2/web</webroot>
        <adminroot>/usr/share/icecast2/admin</adminroot>
    </paths>
    <logging>
        <accesslog>access.log</accesslog>
        <errorlog>error.log</errorlog>
        <loglevel>2</loglevel>
        <logsize>10000</logsize>
    </logging>
    <security>
        <chroot>0</chroot>
        $owner
    </security>
</icecast>
XML
    icecast2 -c "$dir/icecast.xml" >"$dir/stdout.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$ICE_PORT/" 2>/dev/null && break; sleep 0.1; done
    curl -s -o /dev/null "http://127.0.0.1:$ICE_PORT/" \
        || { echo "icecast did not start:" >&2; cat "$dir/stdout.log" "$dir/log/error.log" >&2 2>/dev/null; exit 1; }
}

# Settings a node must not inherit from the caller's environment (each row sets its own).
VEZA_UNSET=(-u NATS_URL -u DATABASE_URL -u JWT_SECRET -u REDIS_URL -u VEZA_CONFIG -u LIVE_BURST
    -u LIVE_MAX_LISTENERS -u LIVE_HLS_LADDER -u LIVE_RECORD_DEFAULT -u MAX_CONCURRENT_STREAMS)

# start_veza_node DATA_DIR PORT LOG [ENV=VALUE...]: starts a node, prints its PID once /health
# answers.
start_veza_node() {
    local data=$1 port=$2 log=$3; shift 3
    env "${VEZA_UNSET[@]}" VEZA_DATA_DIR="$data" STREAM_SERVER_HOST=127.0.0.1 STREAM_SERVER_PORT="$port" \
        RATE_LIMIT_PER_IP=off RATE_LIMIT_PER_USER=off LIVE_HLS_LADDER="$HLS_LADDER" RUST_LOG=warn "$@" \
        "$SERVER" >"$log" 2>&1 &
    local pid=$!
    local base=http://127.0.0.1:$port
    for _ in $(seq 150); do curl -sf "$base/health" >/dev/null 2>&1 && break; sleep 0.1; done
    curl -sf "$base/health" >/dev/null || { echo "veza-stream-server did not start:" >&2; cat "$log" >&2; kill "$pid" 2>/dev/null; exit 1; }
    echo "$pid"
}

# create_stream BASE TOKEN: sets VEZA_ID and VEZA_KEY.
create_stream() {
    local resp
    resp=$(curl -sf -X POST -H "authorization: Bearer $2" -H 'content-type: application/json' \
        -d '{"title":"bench"}' "$1/api/v1/streams") \
        || { echo "veza: POST /api/v1/streams failed" >&2; return 1; }
    VEZA_ID=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["data"]["id"])' "$resp")
    VEZA_KEY=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["data"]["ingest_key"])' "$resp")
}

start_veza() {
    local data=$WORK/veza-data
    rm -rf "$data"; mkdir -p "$data"
    VEZA_PORT=$(free_port)
    VEZA_TOKEN=$(env "${VEZA_UNSET[@]}" VEZA_DATA_DIR="$data" "$SERVER" token --sub bench --role creator --ttl 2h)
    SERVER_PID=$(start_veza_node "$data" "$VEZA_PORT" "$WORK/veza.log")
    create_stream "http://127.0.0.1:$VEZA_PORT" "$VEZA_TOKEN"
}

nats_up() { python3 -c 'import socket; socket.create_connection(("127.0.0.1", 4222), 1).close()' 2>/dev/null; }
ensure_nats() {
    nats_up && return 0
    if [ "$(id -u)" = 0 ] && need start-stop-daemon && [ -x /usr/sbin/nats-server ]; then
        echo "starting nats-server on 127.0.0.1:4222" >&2
        mkdir -p /var/lib/nats-server
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
            -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server
        for _ in $(seq 50); do nats_up && return 0; sleep 0.1; done
    fi
    echo "live_compare.sh: no NATS server on 127.0.0.1:4222 (two-node rows skipped)" >&2
    return 1
}

# Two nodes: A ingests, B relays through NATS; the same JWT secret and SQLite database.
start_veza_pair() {
    local data=$WORK/veza-pair
    rm -rf "$data"; mkdir -p "$data/a" "$data/b"
    local secret db
    secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
    db=${TWO_DB:-"sqlite://$data/veza.db?mode=rwc"}
    local common=(NATS_URL=nats://127.0.0.1:4222 JWT_SECRET="$secret" DATABASE_URL="$db")
    VEZA_PORT=$(free_port)
    VEZA_PORT2=$(free_port)
    VEZA_TOKEN=$(env "${VEZA_UNSET[@]}" VEZA_DATA_DIR="$data/a" "${common[@]}" "$SERVER" token --sub bench --role creator --ttl 2h)
    SERVER_PID=$(start_veza_node "$data/a" "$VEZA_PORT" "$WORK/veza-a.log" "${common[@]}")
    SERVER_PID2=$(start_veza_node "$data/b" "$VEZA_PORT2" "$WORK/veza-b.log" "${common[@]}")
    create_stream "http://127.0.0.1:$VEZA_PORT" "$VEZA_TOKEN"
}

for n in $ICE_COUNTS; do
    start_icecast
    url=http://127.0.0.1:$ICE_PORT/bench.mp3
    run_listeners "icecast-$n" icecast burst "$n" "$url" "$url" "$ICE_KEY"
    stop_server
done
for n in $VEZA_COUNTS; do
    if start_veza; then
        base=http://127.0.0.1:$VEZA_PORT/live/$VEZA_ID
        run_listeners "veza-$n" veza burst "$n" "$base.mp3" "$base" "$VEZA_KEY"
    fi
    stop_server
done
for n in $LL_COUNTS; do
    if start_veza; then
        base=http://127.0.0.1:$VEZA_PORT/live/$VEZA_ID
        run_listeners "veza-ll-$n" veza no-burst "$n" "$base.mp3?burst=0" "$base" "$VEZA_KEY"
    fi
    stop_server
done
if [ -n "$TWO_COUNTS" ] && ensure_nats; then
    for n in $TWO_COUNTS; do
        if start_veza_pair; then
            base=http://127.0.0.1:$VEZA_PORT/live/$VEZA_ID
            run_listeners "veza-2node-$n" veza-2node burst "$n" "$base.mp3" "$base" "$VEZA_KEY" \
                "http://127.0.0.1:$VEZA_PORT2/live/$VEZA_ID.mp3" "$SERVER_PID2"
            for f in "$WORK"/veza-a.log "$WORK"/veza-b.log; do
                grep -E 'WARN|ERROR' "$f" | tail -5 | sed "s|^|$(basename "$f"): |" >&2 || true
            done
        fi
        stop_server
    done
fi

python3 - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def f(v, d=1):
    return "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
def mb(kb):
    return "-" if kb is None else f"{kb/1024:.0f}"
print()
print("| server | mode | listeners | connected | refused | disconnected | falling behind | TTFB p50/p99 ms | first audio p50/p99 ms | start lag p50 ms | behind live p50/p99 ms | server CPU % | RSS MB | HWM MB | generator CPU % | machine busy % |")
# (veza-2node: CPU, RSS and HWM are sums over both server processes; per node below the table)
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['server']} | {r['mode']} | {r['listeners']} | {r['connected']} | {r['refused']} | {r['disconnected']} | {r['falling_behind']} | "
          f"{f(r['ttfb_p50_ms'])}/{f(r['ttfb_p99_ms'])} | {f(r['first_audio_p50_ms'])}/{f(r['first_audio_p99_ms'])} | {f(r.get('start_lag_p50_ms'))} | "
          f"{f(r['behind_p50_ms'])}/{f(r['behind_p99_ms'])} | {f(r['server_cpu_pct'])} | {mb(r['server_rss_kb'])} | {mb(r['server_hwm_kb'])} | {f(r['generator_cpu_pct'])} | {f(r.get('machine_busy_pct'))} |")
print()
for r in rows:
    for s, u in zip(r.get("servers") or [], r.get("per_url") or []):
        print(f"{r['server']} {r['listeners']}: node {u['url']}: {u['listeners']} listeners, {u['connected']} connected, "
              f"{u['refused']} refused, {u['falling_behind']} falling behind, first audio p50 {f(u['first_audio_p50_ms'])} ms, "
              f"behind live p50/p99 {f(u['behind_p50_ms'])}/{f(u['behind_p99_ms'])} ms; server CPU {f(s['cpu_pct'])} %, "
              f"RSS {mb(s['rss_kb'])} MB, HWM {mb(s['hwm_kb'])} MB")
by = {(r["server"], r["mode"], r["listeners"]): r for r in rows}
for (s, m, n), v in sorted(by.items(), key=lambda x: x[0][2]):
    i = by.get(("icecast", "burst", n))
    if s != "veza" or m != "burst" or not i:
        continue
    def ratio(k):
        a, b = v.get(k), i.get(k)
        return "-" if a is None or not b else f"{a/b:.2f}"
    print(f"{n} listeners, veza/icecast: CPU {ratio('server_cpu_pct')}, RSS {ratio('server_rss_kb')}, HWM {ratio('server_hwm_kb')}, "
          f"first audio p50 {ratio('first_audio_p50_ms')}, behind live p50 {ratio('behind_p50_ms')}")
    if i["connected"] != v["connected"]:
        print(f"  (not like for like: icecast served {i['connected']} listeners, veza {v['connected']})")
for r in rows:
    if r["mode"] == "no-burst":
        print(f"low latency ({r['listeners']} listeners, burst=0): behind live p99 {f(r['behind_p99_ms'])} ms (target < 300), first audio p50 {f(r['first_audio_p50_ms'])} ms (target < 100)")
PY
