#!/usr/bin/env bash
# Compares Veza's release examples with ffmpeg on the same jobs and the same input.
#
# usage: benches/compare.sh [--markdown FILE] [--seconds N] [--workdir DIR] [--keep]
#
#   RUNS=N        runs per job and tool (default 3); the best wall time is reported
#   --seconds N   length of the generated input (default 240: four minutes)
#   --markdown F  also write the table as Markdown to F
#   --workdir D   where the input and outputs go (default: a new temporary directory)
#   --keep        keep the work directory
#
# The input is a music-like 44.1 kHz stereo mix made once by ffmpeg's lavfi (pink noise at a
# low level plus chords, a stepping melody and tremolo), written as 16-bit WAV, with a FLAC copy
# made by ffmpeg. Each job runs ffmpeg with `-threads 1` and our example back to back, RUNS
# times, alternating. Wall time is measured around the process; peak RSS comes from
# `/usr/bin/time -f %M`. ffmpeg uses the same codec libraries as we do where it has them
# (libmp3lame, libvorbis, its own FLAC at level 5); for AAC it uses its native `aac` encoder
# (Debian's ffmpeg has no libfdk_aac, which is what we use), so that row compares two
# different encoders.
#
# When our examples accept `--threads N` (checked by running them with `--threads 2` on a tiny
# file), every job is also run with our 2 threads against the same ffmpeg `-threads 1` job.
set -euo pipefail

RUNS=${RUNS:-3}
SECONDS_IN=240
MARKDOWN=""
WORKDIR=""
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --markdown) MARKDOWN=$2; shift 2 ;;
        --seconds) SECONDS_IN=$2; shift 2 ;;
        --workdir) WORKDIR=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$RUNS" in ''|*[!0-9]*|0) echo "compare.sh: RUNS must be a positive integer" >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET" in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
BIN=$TARGET/release/examples

# --- tools ---------------------------------------------------------------------------------
need_pkg() { # command package
    if ! command -v "$1" >/dev/null 2>&1 && [ ! -x "$1" ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "installing $2 ..." >&2
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
        else
            echo "compare.sh: $1 is missing (install the $2 package)" >&2
            exit 1
        fi
    fi
}
need_pkg ffmpeg ffmpeg
need_pkg /usr/bin/time time
FF_ENCODERS=$(ffmpeg -hide_banner -encoders 2>/dev/null)
for enc in libmp3lame libvorbis aac flac; do
    if ! grep -qw "$enc" <<<"$FF_ENCODERS"; then
        echo "compare.sh: this ffmpeg lacks the $enc encoder" >&2
        exit 1
    fi
done

echo "building the examples (release) ..." >&2
(cd "$ROOT" && cargo build --release --quiet -p veza-examples --examples)
for ex in transcode ladder; do
    [ -x "$BIN/$ex" ] || { echo "compare.sh: $BIN/$ex not built" >&2; exit 1; }
done

if [ -z "$WORKDIR" ]; then
    WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/veza-compare.XXXXXX")
    [ "$KEEP" = 1 ] || trap 'rm -rf "$WORKDIR"' EXIT
fi
case "$WORKDIR$BIN" in *[[:space:]]*)
    echo "compare.sh: the work directory and target directory must not contain spaces" >&2; exit 2 ;;
esac
mkdir -p "$WORKDIR/out"
IN_WAV=$WORKDIR/input-${SECONDS_IN}s.wav
IN_FLAC=$WORKDIR/input-${SECONDS_IN}s.flac

# --- input ---------------------------------------------------------------------------------
# Left and right differ a little (detune, noise seeds). The melody steps every 0.25 s; the
# chords change every 2 s; amplitudes move with slow tremolos. Peak stays below full scale.
if [ ! -s "$IN_WAV" ]; then
    echo "generating ${SECONDS_IN} s of input ..." >&2
    tone='0.07*(0.6+0.4*sin(2*PI*0.3*t))*(sin(2*PI*F1*D*t)+sin(2*PI*F2*D*t)+sin(2*PI*F3*D*t))'
    tone="$tone+0.03*(sin(4*PI*F1*D*t)+sin(6*PI*F2*D*t))"
    # Chord roots cycle A, G, F, E (triads); melody notes cycle through a scale.
    chord='if(lt(mod(t,8),2),1,if(lt(mod(t,8),4),0.8909,if(lt(mod(t,8),6),0.7937,0.7491)))'
    melody='0.18*exp(-3*mod(t,0.25)*4)*sin(2*PI*D*t*440*pow(2,floor(mod(t*4,8))/12))'
    mkexpr() { # detune
        local e=${tone//F1/(220*$chord)}
        e=${e//F2/(277.18*$chord)}
        e=${e//F3/(329.63*$chord)}
        e="$e+${melody}"
        echo "${e//D/$1}"
    }
    ffmpeg -nostdin -y -v error \
        -f lavfi -i "anoisesrc=d=${SECONDS_IN}:c=pink:a=0.05:r=44100:seed=1" \
        -f lavfi -i "anoisesrc=d=${SECONDS_IN}:c=pink:a=0.05:r=44100:seed=2" \
        -f lavfi -i "aevalsrc=exprs='$(mkexpr 1)|$(mkexpr 1.001)':s=44100:d=${SECONDS_IN}" \
        -filter_complex "[0][1][2]amerge=inputs=3,pan=stereo|c0=c0+c2|c1=c1+c3" \
        -ac 2 -ar 44100 -c:a pcm_s16le "$IN_WAV"
    ffmpeg -nostdin -y -v error -i "$IN_WAV" -c:a flac "$IN_FLAC"
fi
DURATION=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$IN_WAV")

# --- do our examples take --threads? -------------------------------------------------------
TINY=$WORKDIR/tiny.wav
ffmpeg -nostdin -y -v error -f lavfi -i "sine=f=440:d=0.2:r=44100" -ac 2 -c:a pcm_s16le "$TINY"
TRANSCODE_THREADS=0
LADDER_THREADS=0
if "$BIN/transcode" "$TINY" -o "$WORKDIR/tiny.mp3" --no-progress --threads 2 >/dev/null 2>&1; then
    TRANSCODE_THREADS=1
fi
if "$BIN/ladder" "$TINY" --rung mp3:64 --out-dir "$WORKDIR/tiny" --threads 2 >/dev/null 2>&1; then
    LADDER_THREADS=1
fi
echo "threads option: transcode $([ $TRANSCODE_THREADS = 1 ] && echo yes || echo no)," \
    "ladder $([ $LADDER_THREADS = 1 ] && echo yes || echo no)" >&2

# --- jobs ----------------------------------------------------------------------------------
# Each job: name | input | ffmpeg output arguments (@T@ = thread count) | our command (an
# example's name and its arguments).
O=$WORKDIR/out
FF_LADDER=""
for k in 64 128 192 320; do
    FF_LADDER="$FF_LADDER -map 0 -threads @T@ -c:a libmp3lame -b:a ${k}k $O/ff-ladder-$k.mp3"
done
JOBS=(
    "flac->mp3 cbr128|$IN_FLAC|-threads @T@ -c:a libmp3lame -b:a 128k $O/ff.mp3|transcode $IN_FLAC -o $O/ours.mp3 --bitrate 128 --no-progress"
    "flac->aac 128 adts|$IN_FLAC|-threads @T@ -c:a aac -b:a 128k -f adts $O/ff.aac|transcode $IN_FLAC -o $O/ours.aac --format aac --bitrate 128 --no-progress"
    "flac->vorbis q4|$IN_FLAC|-threads @T@ -c:a libvorbis -q:a 4 $O/ff.ogg|transcode $IN_FLAC -o $O/ours.ogg --vbr 4 --no-progress"
    "wav->flac l5|$IN_WAV|-threads @T@ -c:a flac -compression_level 5 $O/ff.flac|transcode $IN_WAV -o $O/ours.flac --no-progress"
    "mp3 ladder 64/128/192/320|$IN_FLAC|$FF_LADDER|ladder $IN_FLAC --rung mp3:64 --rung mp3:128 --rung mp3:192 --rung mp3:320 --out-dir $O/ladder"
)

# Runs "$@" once; prints "WALL_SECONDS PEAK_RSS_KB". Fails the script when the command fails.
measure() {
    local tf=$WORKDIR/time.txt start end
    start=$(date +%s.%N)
    if ! /usr/bin/time -f %M -o "$tf" "$@" >"$WORKDIR/cmd.log" 2>&1; then
        echo "compare.sh: command failed: $*" >&2
        cat "$WORKDIR/cmd.log" >&2
        exit 1
    fi
    end=$(date +%s.%N)
    echo "$(echo "$end - $start" | awk '{print $1 - $3}') $(tail -n 1 "$tf")"
}

min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b < a) ? b : a }'; }
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b > a) ? b : a }'; }

ROWS=()
COMMANDS=()
run_job() { # name input ffargs ours threads
    local name=$1 input=$2 ffargs=$3 ours=$4 threads=$5
    local ff_best="" ff_rss="" our_best="" our_rss="" r m ourcmd
    # shellcheck disable=SC2206
    # ffmpeg always runs with -threads 1: the reference of the targets ("2 threads" rows compare
    # our two threads with ffmpeg's one-process, one-thread job; ffmpeg's audio encoders are
    # single-threaded anyway).
    local ffcmd=(ffmpeg -nostdin -y -v error -threads 1 -i "$input" ${ffargs//@T@/1})
    # shellcheck disable=SC2206
    ourcmd=($ours)
    ourcmd[0]=$BIN/${ourcmd[0]}
    if [ "${ourcmd[0]}" = "$BIN/transcode" ] && [ "$TRANSCODE_THREADS" = 1 ]; then
        ourcmd+=(--threads "$threads")
    fi
    if [ "${ourcmd[0]}" = "$BIN/ladder" ] && [ "$LADDER_THREADS" = 1 ]; then
        ourcmd+=(--threads "$threads")
    fi
    local tf to
    rm -rf "$O" && mkdir -p "$O/ladder"
    for ((r = 1; r <= RUNS; r++)); do
        read -r tf m < <(measure "${ffcmd[@]}")
        ff_best=$(min "$ff_best" "$tf"); ff_rss=$(max "$ff_rss" "$m")
        read -r to m < <(measure "${ourcmd[@]}")
        our_best=$(min "$our_best" "$to"); our_rss=$(max "$our_rss" "$m")
        echo "  $name, ${threads} thread(s), run $r: ffmpeg ${tf}s, ours ${to}s" >&2
    done
    # Output sizes, a check that both sides did the same work (bitrates, FLAC compression).
    local ff_bytes our_bytes
    ff_bytes=$(find "$O" -maxdepth 1 -name 'ff*' -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
    our_bytes=$(find "$O" -name 'ours*' -type f -printf '%s\n' -o -path "$O/ladder/*" -type f -printf '%s\n' |
        awk '{ s += $1 } END { print s + 0 }')
    ROWS+=("$(awk -v n="$name" -v th="$threads" -v d="$DURATION" -v f="$ff_best" -v o="$our_best" \
        -v fm="$ff_rss" -v om="$our_rss" -v fb="$ff_bytes" -v ob="$our_bytes" 'BEGIN {
        printf "%s|%d|%.2f|%.1f|%.2f|%.1f|%.2f|%.1f|%.1f|%.2f|%.2f", n, th, f, d / f, o, d / o, f / o,
            fm / 1024, om / 1024, fb / 1e6, ob / 1e6 }')")
    COMMANDS+=("${ffcmd[*]}" "${ourcmd[*]}")
}

for job in "${JOBS[@]}"; do
    IFS='|' read -r name input ffargs ours <<<"$job"
    echo "job: $name" >&2
    run_job "$name" "$input" "$ffargs" "$ours" 1
done
if [ "$TRANSCODE_THREADS" = 1 ] || [ "$LADDER_THREADS" = 1 ]; then
    for job in "${JOBS[@]}"; do
        IFS='|' read -r name input ffargs ours <<<"$job"
        case "$ours" in
            transcode*) [ "$TRANSCODE_THREADS" = 1 ] || continue ;;
            ladder*) [ "$LADDER_THREADS" = 1 ] || continue ;;
        esac
        echo "job: $name (2 threads)" >&2
        run_job "$name" "$input" "$ffargs" "$ours" 2
    done
fi

# --- report --------------------------------------------------------------------------------
HEADER="job|our threads|ffmpeg best s|ffmpeg x realtime|ours best s|ours x realtime|speed ours/ffmpeg|ffmpeg peak RSS MB|ours peak RSS MB|ffmpeg output MB|ours output MB"
echo
echo "input: $(basename "$IN_WAV") ($DURATION s, 44.1 kHz stereo 16-bit; FLAC copy by ffmpeg), best of $RUNS runs"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "ffmpeg: $(ffmpeg -version | head -n 1 | cut -d' ' -f1-3)"
{
    echo "$HEADER"
    printf '%s\n' "${ROWS[@]}"
} | column -t -s '|'
echo "(speed ours/ffmpeg > 1 means we are faster)"

if [ -n "$MARKDOWN" ]; then
    {
        echo "Input: $DURATION s of generated 44.1 kHz stereo 16-bit audio (FLAC copy by ffmpeg), best of $RUNS runs."
        echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average at the end $(cut -d' ' -f1-3 /proc/loadavg)."
        echo "ffmpeg: $(ffmpeg -version | head -n 1 | cut -d' ' -f1-3). Speed ours/ffmpeg > 1 means we are faster."
        echo
        echo "| ${HEADER//|/ | } |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        for row in "${ROWS[@]}"; do echo "| ${row//|/ | } |"; done
        echo
        echo "Commands (paths shortened to the work directory):"
        echo
        echo '```'
        for c in "${COMMANDS[@]}"; do echo "${c//$WORKDIR/\$W}"; done | sed "s#$BIN/#examples/#" | awk '!seen[$0]++'
        echo '```'
    } >"$MARKDOWN"
    echo "wrote $MARKDOWN"
fi
