#!/usr/bin/env bash
# bench/backlog.sh: issue #14's benchmark. What a session file lags behind its events,
# and what a backlog costs lowkey in memory and start-up time.
#
#   bench/backlog.sh                 # the whole run (about 3 to 5 minutes)
#   BENCH_QUICK=1 bench/backlog.sh   # backlogs of 10k and 100k only
#
# It prints:
#  (a) the lag from an event's 202 to its user message line in its session file
#      (p50, p99, max, and how many lines did not appear within BENCH_LAG_BOUND seconds
#      of their 202), open loop at BENCH_LAG_RATE events/s (1,000) for BENCH_LAG_SECONDS
#      (10), and closed loop at saturation (BENCH_SAT_CONNECTIONS connections as fast as
#      lowkey answers, BENCH_SAT_SECONDS). The source has a fixed target (the session
#      `bench`) and a slow agent (`sleep BENCH_LAG_AGENT_SECONDS`, maxConcurrent 1). Each
#      load runs on a fresh lowkey with an empty state folder.
#  (b) lowkey's VmRSS and VmHWM (/proc/PID/status) idle, and with BENCH_SIZES events
#      waiting (10k, 100k, 1M) behind an agent that blocks (`sleep 3600`, maxConcurrent
#      1): once right after the events were posted, once after a restart.
#  (c) the time from starting `lowkey serve` to its READY=1 (sd_notify, on a socket the
#      driver listens on) with those events pending: lowkey is stopped with SIGTERM with
#      the backlog in place and started again.
#  (d) durable ingest against the bare-hyper ceiling in the same run: bench/ingest.sh
#      with BENCH_AGENT_SECONDS=1, its req/s for both and their ratio.
# Then MET/MISSED against the targets of issue #14.
#
# The timing is done by examples/backlog_bench.rs (see its header): the HTTP load on
# keep-alive connections, the 202 times keyed by the event id in the answer, a thread
# that tails the session file every millisecond, and the READY=1 listener.
#
# Everything listens on 127.0.0.1 only, every wait is bounded, and lowkey and the
# temporary state folders are removed at the end, even on error or Ctrl-C.
#
# Environment:
#   BENCH_QUICK=1          backlogs of 10k and 100k only (no 1M: its targets are then
#                          reported as not measured)
#   BENCH_SIZES            backlog sizes, ascending (default "10000 100000 1000000")
#   BENCH_LAG_RATE         open-loop rate in events/s (default 1000)
#   BENCH_LAG_SECONDS      open-loop duration (default 10)
#   BENCH_SAT_SECONDS      closed-loop duration (default 5)
#   BENCH_SAT_CONNECTIONS  closed-loop connections (default 32)
#   BENCH_LAG_BOUND        seconds after its 202 within which a line counts (default 5)
#   BENCH_LAG_AGENT_SECONDS  how long each run of the lag's agent sleeps (default 2)
#   BENCH_BACKLOG_TARGET   the backlog source's target (default new_session: one session
#                          per event, as a flood from Stripe would make)
#   BENCH_FILL_CONNECTIONS connections posting the backlog (default 32)
#   BENCH_BODY_BYTES       size of each JSON body (default 1024)
#   BENCH_READY_TIMEOUT    seconds to wait for READY=1 (default 120)
#   BENCH_INGEST=0         skip (d)
#   BENCH_INGEST_DURATION  bench/ingest.sh's BENCH_DURATION (default 10s)
#   BENCH_PREV_RATIO       the ingest ratio (%) to hold (default 40.5, the last one in
#                          bench/README.md: fourth round, recorder 1 s)
#   BENCH_TMPDIR           where the state folders go (default $TMPDIR or /var/tmp; a
#                          real disk, or fsync costs nothing). A 1M backlog of 1 KiB
#                          bodies takes about 1.5 GB of queue.
#   BENCH_SKIP_BUILD=1     use the binaries already in target/release
#   BENCH_LOWKEY=PATH      measure this lowkey binary instead of target/release/lowkey
#   BENCH_KEEP=1           keep the state folders and logs, and print where they are
#   LOWKEY_LOG             lowkey's log filter (default info, as in production)
#
# Exit status: 0 when the run completed (targets are MET or MISSED: the figures are
# noisy on a shared machine); 1 when an accepted event is missing from disk (queue and
# session files, as `lowkey sessions list --json` counts them) or the run failed.

set -euo pipefail

die() { echo "bench: $*" >&2; exit 1; }
note() { echo "bench: $*" >&2; }

if [[ ${BENCH_QUICK:-0} == 1 ]]; then
    SIZES=${BENCH_SIZES:-10000 100000}
else
    SIZES=${BENCH_SIZES:-10000 100000 1000000}
fi
LAG_RATE=${BENCH_LAG_RATE:-1000}
LAG_SECONDS=${BENCH_LAG_SECONDS:-10}
SAT_SECONDS=${BENCH_SAT_SECONDS:-5}
SAT_CONNECTIONS=${BENCH_SAT_CONNECTIONS:-32}
BOUND_S=${BENCH_LAG_BOUND:-5}
LAG_AGENT_SECONDS=${BENCH_LAG_AGENT_SECONDS:-2}
BACKLOG_TARGET=${BENCH_BACKLOG_TARGET:-new_session}
FILL_CONNECTIONS=${BENCH_FILL_CONNECTIONS:-32}
BODY_BYTES=${BENCH_BODY_BYTES:-1024}
READY_TIMEOUT=${BENCH_READY_TIMEOUT:-120}
PREV_RATIO=${BENCH_PREV_RATIO:-40.5}
export LOWKEY_LOG=${LOWKEY_LOG:-info}

for v in LAG_RATE LAG_SECONDS SAT_SECONDS SAT_CONNECTIONS BOUND_S FILL_CONNECTIONS BODY_BYTES READY_TIMEOUT; do
    [[ ${!v} =~ ^[0-9]+$ && ${!v} -gt 0 ]] || die "bad $v: ${!v} (a whole number above 0)"
done
[[ $LAG_AGENT_SECONDS =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "bad BENCH_LAG_AGENT_SECONDS: $LAG_AGENT_SECONDS"
[[ $PREV_RATIO =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "bad BENCH_PREV_RATIO: $PREV_RATIO"
prev=0
for n in $SIZES; do
    [[ $n =~ ^[0-9]+$ && $n -gt $prev ]] || die "BENCH_SIZES must be ascending whole numbers: $SIZES"
    prev=$n
done

# Targets from issue #14.
TARGET_LAG_PACED_US=100000
TARGET_LAG_SAT_US=1000000
TARGET_RSS_1M_KIB=$((48 * 1024))
TARGET_IDLE_RSS_KIB=$((8 * 1024))
TARGET_READY_1M_US=2000000

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# --- state and cleanup ----------------------------------------------------------------

WORK=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/var/tmp}}/lowkey-backlog.XXXXXX")
# Shared with bench/ingest.sh, which warns when files were deleted shortly before.
LAST_CLEANUP=$(dirname "$WORK")/lowkey-bench.last-cleanup
LK_PID=""
DRIVER_PID=""

# Alive and not a zombie.
alive() {
    [[ -n $1 && -r /proc/$1/stat ]] || return 1
    [[ $(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) != Z ]]
}

stop_pid() { # pid, seconds to wait after TERM
    local pid=$1 wait_s=$2 i
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < wait_s * 10; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    note "pid $pid still running after ${wait_s}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    stop_pid "$LK_PID" 60
    [[ -n $DRIVER_PID ]] && { stop_pid "$DRIVER_PID" 5; wait "$DRIVER_PID" 2>/dev/null || true; }
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        note "kept the state folders and logs in $WORK"
    else
        rm -rf "$WORK"
        touch "$LAST_CLEANUP" 2>/dev/null || true
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

FSTYPE=$(stat -f -c %T "$WORK")
[[ $FSTYPE == tmpfs || $FSTYPE == ramfs ]] &&
    note "warning: $WORK is on $FSTYPE, where fsync costs nothing; set BENCH_TMPDIR to a disk"
DEV=$(findmnt -n -o SOURCE -T "$WORK" 2>/dev/null || true)
if [[ -n $DEV && -r /sys/fs/ext4/${DEV##*/}/journal_task ]]; then
    FSTYPE=ext4
    [[ $(cat "/sys/fs/ext4/${DEV##*/}/journal_task") == "<none>" ]] && FSTYPE="ext4 (no journal)"
fi

# --- build ----------------------------------------------------------------------------

if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
    note "building (cargo build --release --examples --bins)"
    cargo build --release --examples --bins --quiet || die "the build failed"
fi
LOWKEY=${BENCH_LOWKEY:-$ROOT/target/release/lowkey}
DRIVER=$ROOT/target/release/examples/backlog_bench
[[ -x $LOWKEY && -x $DRIVER ]] || die "missing $LOWKEY or $DRIVER"
SLEEP=$(command -v sleep)

# --- helpers --------------------------------------------------------------------------

API_KEY=lk_bench_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
PROJECT=$WORK/project
mkdir -p "$PROJECT"

new_home() { # name, target, agent seconds → prints the folder
    local home=$WORK/$1
    mkdir -p "$home"
    chmod 700 "$home"
    cat >"$home/config.json" <<EOF
{
  "apiKey": "$API_KEY",
  "listen": "127.0.0.1:0",
  "defaultAgent": "slow",
  "agents": {
    "slow": { "command": ["$SLEEP", "$3"], "timeoutSec": 7200, "maxConcurrent": 1 }
  },
  "webhooks": {
    "bench": { "project": "$PROJECT", "agent": "slow", "target": "$2" }
  }
}
EOF
    chmod 600 "$home/config.json"
    echo "$home"
}

status_kib() { # pid field → KiB
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}

# Starts lowkey on HOME through the driver, which times READY=1. Sets LK_PID, LK_ADDR,
# LK_READY_US and DRIVER_PID (lowkey's parent until it exits).
start_lowkey() { # home
    local home=$1 out=$WORK/serve.out line attempt i
    for attempt in 1 2 3 4 5; do
        rm -f "$out"
        "$DRIVER" serve --lowkey "$LOWKEY" --home "$home" --notify "$WORK/notify.sock" \
            --out "$out" --log "$home.log" --timeout-s "$READY_TIMEOUT" 2>>"$WORK/driver.log" &
        DRIVER_PID=$!
        for ((i = 0; i < (READY_TIMEOUT + 30) * 10; i++)); do
            [[ -f $out ]] && break
            kill -0 "$DRIVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        line=$(cat "$out" 2>/dev/null || true)
        if [[ $line == pid=* ]]; then
            LK_PID=$(sed 's/.*pid=\([0-9]*\).*/\1/' <<<"$line")
            LK_ADDR=$(sed 's/.*addr=\([0-9.:]*\).*/\1/' <<<"$line")
            LK_READY_US=$(sed 's/.*ready_us=\([0-9]*\).*/\1/' <<<"$line")
            return 0
        fi
        stop_pid "$DRIVER_PID" 30
        wait "$DRIVER_PID" 2>/dev/null || true
        DRIVER_PID=""
        # A port taken meanwhile makes lowkey exit before READY: try again. Anything
        # else (no READY in time) is a failed run.
        [[ $line == *"exited before READY"* ]] || break
        note "lowkey did not start (${line#error=}); attempt $attempt"
    done
    tail -n 20 "$home.log" >&2 || true
    cat "$WORK/driver.log" >&2 || true
    die "lowkey did not start: ${line:-no answer from the driver}"
}

# SIGTERM, then waits for lowkey and its driver. Sets LK_STOP_MS.
stop_lowkey() {
    local t0
    t0=$(date +%s%N)
    stop_pid "$LK_PID" 60
    LK_STOP_MS=$((($(date +%s%N) - t0) / 1000000))
    LK_PID=""
    if [[ -n $DRIVER_PID ]]; then
        stop_pid "$DRIVER_PID" 10
        wait "$DRIVER_PID" 2>/dev/null || true
        DRIVER_PID=""
    fi
}

# Sessions and events on disk (session files merged with the queue). Sets C_SESSIONS,
# C_EVENTS.
count_on_disk() { # home
    local line
    line=$("$DRIVER" count --lowkey "$LOWKEY" --home "$1" --timeout-s 600) || die "counting $1 failed"
    C_SESSIONS=$(sed 's/.* sessions=\([0-9]*\).*/\1/' <<<"$line")
    C_EVENTS=$(sed 's/.* events=\([0-9]*\).*/\1/' <<<"$line")
}

field() { # line, name → value
    sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"
}

FAIL=0
CHECKS=()
check() { # ok?, text
    if [[ $1 == 1 ]]; then
        CHECKS+=("OK      $2")
    else
        CHECKS+=("FAILED  $2")
        FAIL=1
    fi
}

note "state folders: $WORK ($FSTYPE)"

# --- (d) durable ingest against the ceiling ---------------------------------------------
# First, so that this run's own deletions (GBs of queue) do not slow it down.

INGEST_LK_RPS="" INGEST_BARE_RPS="" INGEST_RATIO=""
if [[ ${BENCH_INGEST:-1} != 0 ]]; then
    note "(d) bench/ingest.sh with BENCH_AGENT_SECONDS=1, BENCH_DURATION=${BENCH_INGEST_DURATION:-10s}"
    if BENCH_AGENT_SECONDS=1 BENCH_SKIP_BUILD=1 BENCH_LOWKEY=$LOWKEY BENCH_KEEP=0 \
        BENCH_DURATION=${BENCH_INGEST_DURATION:-10s} BENCH_TMPDIR=$(dirname "$WORK") \
        "$ROOT/bench/ingest.sh" >"$WORK/ingest.txt"; then
        check 1 "bench/ingest.sh: every accepted event on disk, agent cap held"
    else
        cat "$WORK/ingest.txt" >&2
        check 0 "bench/ingest.sh failed (above)"
    fi
    INGEST_LK_RPS=$(awk '$1 == "req/s" { print $2 }' "$WORK/ingest.txt")
    INGEST_BARE_RPS=$(awk '$1 == "req/s" { print $3 }' "$WORK/ingest.txt")
    INGEST_RATIO=$(sed -n 's/^durable ingest = \([0-9.]*\)%.*/\1/p' "$WORK/ingest.txt")
    INGEST_P=$(awk '$1 == "p50" { p50 = $3 " " $4 } $1 == "p99" { p99 = $3 " " $4 } END { print p50 " / " p99 }' "$WORK/ingest.txt")
fi

# --- (a) lag from the 202 to the session line ---------------------------------------------

run_lag() { # name, driver args... → sets LAG_LINE
    local name=$1 home
    shift
    home=$(new_home "$name" bench "$LAG_AGENT_SECONDS")
    start_lowkey "$home"
    LAG_LINE=$("$DRIVER" lag --addr "$LK_ADDR" --key "$API_KEY" --source bench \
        --session-file "$home/sessions/bench.jsonl" --bound-s "$BOUND_S" \
        --body-bytes "$BODY_BYTES" "$@") || die "the lag driver failed ($name)"
    stop_lowkey
    count_on_disk "$home"
    local accepted
    accepted=$(field "$LAG_LINE" accepted)
    # The driver waits for every answer, so its count of 202s is exact.
    check "$((C_EVENTS == accepted && C_SESSIONS == 1))" \
        "$name: $accepted events accepted, $C_EVENTS on disk in $C_SESSIONS session(s)"
    [[ ${BENCH_KEEP:-0} == 1 ]] || rm -rf "$home"
}

note "(a) lag at $LAG_RATE events/s for ${LAG_SECONDS}s (open loop), bound ${BOUND_S}s"
run_lag lag-paced --rate "$LAG_RATE" --duration-s "$LAG_SECONDS"
LAG_PACED=$LAG_LINE
note "(a) lag at saturation: $SAT_CONNECTIONS connections for ${SAT_SECONDS}s (closed loop)"
run_lag lag-saturated --rate 0 --connections "$SAT_CONNECTIONS" --duration-s "$SAT_SECONDS"
LAG_SAT=$LAG_LINE

# --- (b) RSS and (c) READY against the backlog ---------------------------------------------

note "(b, c) backlog behind a blocked agent: $SIZES"
BL_HOME=$(new_home backlog "$BACKLOG_TARGET" 3600)
start_lowkey "$BL_HOME"
READY_EMPTY_US=$LK_READY_US
sleep 1
IDLE_RSS=$(status_kib "$LK_PID" VmRSS)
IDLE_HWM=$(status_kib "$LK_PID" VmHWM)
filled=0
ROWS=()
RSS_1M="" READY_1M=""
for size in $SIZES; do
    note "(b) posting $((size - filled)) events, to $size waiting"
    line=$("$DRIVER" fill --addr "$LK_ADDR" --key "$API_KEY" --source bench \
        --count $((size - filled)) --connections "$FILL_CONNECTIONS" \
        --body-bytes "$BODY_BYTES" --timeout-s 600) || die "posting the backlog failed"
    filled=$size
    fill_rate=$(field "$line" rate)
    sleep 1
    rss=$(status_kib "$LK_PID" VmRSS)
    hwm=$(status_kib "$LK_PID" VmHWM)
    note "(c) restarting with $size pending"
    stop_lowkey
    stop_ms=$LK_STOP_MS
    start_lowkey "$BL_HOME"
    ready_us=$LK_READY_US
    sleep 1
    rss2=$(status_kib "$LK_PID" VmRSS)
    hwm2=$(status_kib "$LK_PID" VmHWM)
    ROWS+=("$size $fill_rate $rss $hwm $stop_ms $ready_us $rss2 $hwm2")
    if ((size == 1000000)); then
        RSS_1M=$((rss > rss2 ? rss : rss2))
        READY_1M=$ready_us
    fi
done
stop_lowkey
note "counting what is on disk"
count_on_disk "$BL_HOME"
if [[ $BACKLOG_TARGET == new_session ]]; then
    check "$((C_EVENTS == filled && C_SESSIONS == filled))" \
        "backlog: $filled events accepted, $C_EVENTS on disk in $C_SESSIONS sessions"
else
    check "$((C_EVENTS == filled))" "backlog: $filled events accepted, $C_EVENTS on disk"
fi

# --- report ---------------------------------------------------------------------------

ms() { # µs → text; -1 is "not within the bound"
    if (($1 < 0)); then echo "> ${BOUND_S} s"; else awk -v us="$1" 'BEGIN { printf "%.1f ms", us / 1000 }'; fi
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
secs() { awk -v us="$1" 'BEGIN { printf "%.2f s", us / 1e6 }'; }
verdict() { # ok?, text
    if [[ $1 == 1 ]]; then echo "MET     $2"; else echo "MISSED  $2"; fi
}

echo
echo "lowkey backlog benchmark (issue #14): $(nproc) CPUs, POST ${BODY_BYTES}-byte JSON, state on $FSTYPE"
echo
echo "(a) lag from the 202 to the event's user message line in sessions/bench.jsonl"
echo "    fixed target \"bench\", agent: sleep ${LAG_AGENT_SECONDS} s, maxConcurrent 1; a line counts if it appears within ${BOUND_S} s of its 202"
printf '    %-34s %9s %9s %10s %10s %11s %11s\n' "load" "accepted" "req/s" "p50" "p99" "max within" "not within"
lag_row() { # label, line
    printf '    %-34s %9s %9s %10s %10s %11s %11s\n' "$1" "$(field "$2" accepted)" "$(field "$2" rate)" \
        "$(ms "$(field "$2" p50_us)")" "$(ms "$(field "$2" p99_us)")" "$(ms "$(field "$2" max_us)")" \
        "$(field "$2" missing)"
}
lag_row "open loop, $LAG_RATE/s for ${LAG_SECONDS} s" "$LAG_PACED"
lag_row "closed loop, $SAT_CONNECTIONS conns for ${SAT_SECONDS} s" "$LAG_SAT"
for l in "$LAG_PACED" "$LAG_SAT"; do
    bad=$(($(field "$l" non202) + $(field "$l" failed)))
    ((bad == 0)) || echo "    note: $bad requests without a 202 ($(field "$l" statuses) / $(field "$l" failed) failed)"
done
echo
echo "(b, c) memory and start-up against events waiting (agent: sleep 3600, maxConcurrent 1, target $BACKLOG_TARGET)"
echo "    idle (empty state folder): VmRSS $(mib "$IDLE_RSS"), VmHWM $(mib "$IDLE_HWM"); READY after $(secs "$READY_EMPTY_US")"
printf '    %10s %11s %12s %12s %9s %9s %12s %12s\n' "waiting" "posted/s" "VmRSS" "VmHWM" "stop" "READY" "VmRSS after" "VmHWM after"
for row in "${ROWS[@]}"; do
    read -r size fill_rate rss hwm stop_ms ready_us rss2 hwm2 <<<"$row"
    printf '    %10s %11s %12s %12s %9s %9s %12s %12s\n' "$size" "$fill_rate" "$(mib "$rss")" "$(mib "$hwm")" \
        "$(awk -v m="$stop_ms" 'BEGIN { printf "%.2f s", m / 1000 }')" "$(secs "$ready_us")" "$(mib "$rss2")" "$(mib "$hwm2")"
done
echo "    (VmRSS/VmHWM 1 s after the last 202; stop = SIGTERM to exit; READY = spawn to READY=1; \"after\" = 1 s after READY)"
echo
if [[ -n $INGEST_RATIO ]]; then
    echo "(d) durable ingest, bench/ingest.sh (agent 1 s, ${BENCH_INGEST_DURATION:-10s}): lowkey $INGEST_LK_RPS req/s ($INGEST_P)," \
        "bare hyper $INGEST_BARE_RPS req/s, ratio $INGEST_RATIO %"
else
    echo "(d) durable ingest: skipped (BENCH_INGEST=0)"
fi
echo

le() { awk -v a="$1" -v b="$2" 'BEGIN { print (a >= 0 && a <= b) ? 1 : 0 }'; }
p=$(field "$LAG_PACED" p99_us)
verdict "$(le "$p" $TARGET_LAG_PACED_US)" "lag p99 <= 100 ms at $LAG_RATE/s ($(ms "$p"), $(field "$LAG_PACED" missing) not within ${BOUND_S} s)"
p=$(field "$LAG_SAT" p99_us)
verdict "$(le "$p" $TARGET_LAG_SAT_US)" "lag p99 <= 1 s at saturation ($(ms "$p"), $(field "$LAG_SAT" missing) not within ${BOUND_S} s)"
if [[ -n $RSS_1M ]]; then
    verdict "$(le "$RSS_1M" $TARGET_RSS_1M_KIB)" "VmRSS <= 48 MiB with 1,000,000 events waiting ($(mib "$RSS_1M"), the larger of the two)"
    verdict "$(le "$READY_1M" $TARGET_READY_1M_US)" "READY <= 2 s with 1,000,000 events pending ($(secs "$READY_1M"))"
else
    echo "-       VmRSS and READY with 1,000,000 events: not measured (BENCH_SIZES=\"$SIZES\")"
fi
verdict "$(le "$IDLE_RSS" $TARGET_IDLE_RSS_KIB)" "idle VmRSS <= 8 MiB ($(mib "$IDLE_RSS"))"
if [[ -n $INGEST_RATIO ]]; then
    verdict "$(awk -v r="$INGEST_RATIO" -v p="$PREV_RATIO" 'BEGIN { print (r + 0 >= p + 0) ? 1 : 0 }')" \
        "durable ingest ratio not below the previous one (${INGEST_RATIO} % against ${PREV_RATIO} %)"
fi
echo
printf '%s\n' "${CHECKS[@]}"
exit "$FAIL"
