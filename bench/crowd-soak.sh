#!/usr/bin/env bash
# Crowds come and go: is the server still there for the next person? After a crowd leaves all at
# once, every newcomer must still get `welcome` (once, after 5,000 clients in 500 rooms drew and
# left together, every newcomer got 101 and never `welcome`).
#
# One long-lived livecanvas (fresh temporary --data-dir, --checkpoint-idle 200ms so that rooms
# have checkpoints in flight when their crowd leaves) meets wave after wave for --minutes: a crowd
# arrives, draws or idles, and leaves, the shapes taking turns (many rooms of 10, one busy room, an
# idle crowd), from target/release/livecanvas-load and from the independent seed load generator
# (../shared/tools/seed-loadgen, whose clients all leave at once: what triggered the issue). The
# first wave is a warm-up whose RSS is the baseline. After every wave:
#   1. a newcomer pair must be served within --newcomer-max-ms: A joins a fresh room and gets
#      `welcome`, B joins, A draws, B gets the draw (bench/newcomer.py, standard library only);
#   2. /healthz must answer 200 (it joins a probe room the way a client does);
#   3. /healthz must come to 0 connections and 0 rooms, and the server go quiet (under 5% of a
#      core: the rooms' last checkpoints render after the rooms are gone), within --empty-timeout;
#      its VmRSS (less SQLite's memory) must then come back within --rss-tolerance-mib of the
#      baseline within --rss-settle seconds (the server gives a crowd's memory back to the system
#      2 s after the last room of a burst closed; the baseline is read once that has happened
#      after the warm-up).
# At the end SIGTERM must stop the server within its --shutdown-grace + 2 s.
#
# Usage: bench/crowd-soak.sh [options]
#   --minutes M              how long to keep sending waves (default 5; the last wave may overrun)
#   --quick                  about a minute, shorter waves (a smoke run of the script)
#   --newcomer-max-ms MS     slowest acceptable newcomer pair (default 1000)
#   --rss-tolerance-mib N    RSS allowed above the baseline once the server is empty (default 20;
#                            both less SQLite's own memory, as /metrics gives it: its page cache
#                            fills up to 64 MiB as rooms are stored and then stays, a bounded
#                            cache, not a leak)
#   --rss-settle S           how long the RSS may take to come back after the server is quiet
#                            (default 15)
#   --empty-timeout S        how long the server may take to report 0 connections and 0 rooms
#                            and go quiet after a wave (default 30)
#   --trim                   before each RSS reading, also have gdb call malloc_trim(0) in the
#                            server (it trims by itself 2 s after a burst of rooms closed; this
#                            tells a leak from memory the allocator keeps at any moment)
#   --no-seed                only livecanvas-load waves
#   --port P                 the server's port (default 18084; refused if in use)
#   -h, --help               this text
#
# Nothing is built: BENCH_SERVER (default target/release/livecanvas) and BENCH_LOADGEN (default
# target/release/livecanvas-load) must exist; point them at copies for a long run, so that a
# `cargo build` meanwhile cannot swap them. The seed load generator is built into
# $BENCH_SEED_TARGET (default /tmp/seed-loadgen-target) when missing; without ../shared its waves
# are skipped. One Markdown row per wave goes to stdout as the wave ends, then PASS or FAIL (exit 1
# on any failure); progress to stderr; logs in bench/results/crowd-soak-<date>-<time>.logs/.
set -euo pipefail
export LC_ALL=C # a dot in $EPOCHREALTIME and in awk's numbers
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
SERVER=${BENCH_SERVER:-"$ROOT/target/release/livecanvas"}
LOADGEN=${BENCH_LOADGEN:-"$ROOT/target/release/livecanvas-load"}
SEED_DIR=${BENCH_SEED_DIR:-"$ROOT/../shared/tools/seed-loadgen"}
SEED_TARGET=${BENCH_SEED_TARGET:-/tmp/seed-loadgen-target}
SEED=""
log() { echo "[crowd-soak] $*" >&2; }
die() {
  log "$*"
  exit 2
}
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

PORT=18084 minutes=5 quick=0 newcomer_max_ms=1000 rss_tolerance_mib=20 empty_timeout_s=30
rss_settle_s=15
# The server trims its heap this long after the last room of a burst closed (src/registry.rs),
# plus a margin: the baseline is read after that.
TRIM_SETTLE_S=4
trim=0 use_seed=1
while (($#)); do
  case $1 in
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --quick) quick=1; shift ;;
    --trim) trim=1; shift ;;
    --no-seed) use_seed=0; shift ;;
    --minutes | --newcomer-max-ms | --rss-tolerance-mib | --empty-timeout | --port)
      if (($# < 2)) || [[ ! $2 =~ ^[0-9]+$ ]]; then die "$1 needs a whole number"; fi
      case $1 in
        --minutes) minutes=$2 ;;
        --newcomer-max-ms) newcomer_max_ms=$2 ;;
        --rss-tolerance-mib) rss_tolerance_mib=$2 ;;
        --rss-settle) rss_settle_s=$2 ;;
        --empty-timeout) empty_timeout_s=$2 ;;
        --port) PORT=$2 ;;
      esac
      shift 2 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
for bin in "$SERVER" "$LOADGEN"; do
  [[ -x $bin ]] || die "$bin is missing: cargo build --release -p livecanvas -p livecanvas-load first (or set BENCH_SERVER/BENCH_LOADGEN)"
done
command -v curl > /dev/null || die "needs curl"
command -v python3 > /dev/null || die "needs python3"
((trim == 0)) || command -v gdb > /dev/null || die "--trim needs gdb"

# Wave sizes. The drawing rates stay below what 2 shared cores sustain, so that a wave tests
# whether the server recovers from crowds, not how it saturates (compare.sh measures that).
if ((quick)); then
  budget_s=60 draw_s=2 idle_s=2
else
  budget_s=$((minutes * 60)) draw_s=5 idle_s=5
fi
raise_open_files
idle_clients=$(idle_clients_allowed)
((idle_clients <= 10000)) || idle_clients=10000
idle_clients=$((idle_clients / 10 * 10)) # whole rooms of 10 for the seed load generator
# The grace the server is started with (lib.sh's flags), for the final SIGTERM's deadline.
grace_s=""
for i in "${!LIVECANVAS_BENCH_FLAGS[@]}"; do
  [[ ${LIVECANVAS_BENCH_FLAGS[i]} != --shutdown-grace ]] || grace_s=${LIVECANVAS_BENCH_FLAGS[i + 1]}
done
[[ $grace_s =~ ^[0-9]+s$ ]] || die "lib.sh's --shutdown-grace '$grace_s' is not whole seconds"
grace_s=${grace_s%s}

notes=()
if ((use_seed)); then
  SEED="$SEED_TARGET/release/loadgen"
  if [[ ! -f $SEED_DIR/Cargo.toml ]]; then
    notes+=("seed load generator not found at $SEED_DIR: its waves (all clients leaving at once) were skipped")
    log "${notes[-1]}"
    use_seed=0
  elif [[ ! -x $SEED ]]; then
    log "building the seed load generator into $SEED_TARGET"
    CARGO_TARGET_DIR=$SEED_TARGET timeout 900 cargo build --release --quiet \
      --manifest-path "$SEED_DIR/Cargo.toml" >&2 || die "the seed load generator did not build"
  fi
fi

# The watchdog: every step below has its own bound, this one bounds their sum (one wave may
# overrun the budget, then the settling and the shutdown). It signals the script, whose TERM trap
# (lib.sh) stops the server and the load generator; waiting on them with `wait` lets that trap run
# at once.
watchdog_s=$((budget_s + 300))
watchdog_pid=""
main_pid=$$
(
  trap 'kill "$nap" 2> /dev/null; exit 0' TERM
  sleep "$watchdog_s" &
  nap=$!
  wait "$nap"
  log "watchdog: still running after ${watchdog_s}s; stopping"
  kill -TERM "$main_pid"
) &
watchdog_pid=$!
trap '[[ -z $watchdog_pid ]] || kill "$watchdog_pid" 2> /dev/null; cleanup' EXIT

RESULTS_DIR="$BENCH_DIR/results"
LOG_DIR="$RESULTS_DIR/crowd-soak-$(date +%Y%m%d-%H%M%S).logs"
mkdir -p "$LOG_DIR"
SERVER_LOG="$LOG_DIR/server.log"
new_data_dir
# RUST_LOG=warn: no line per connect (a wave is thousands), so what is logged is what went wrong.
spawn_server livecanvas "$PORT" $((watchdog_s + 60)) "$SERVER_LOG" env RUST_LOG=warn "$SERVER" \
  --bind "127.0.0.1:$PORT" --data-dir "$data_dir" "${LIVECANVAS_BENCH_FLAGS[@]}" \
  --checkpoint-idle 200ms || die "the server did not start"
soak_start=$SECONDS
log "server pid $server_pid on 127.0.0.1:$PORT; waves for ${budget_s}s; logs in $LOG_DIR"

HZ=$(getconf CLK_TCK)
QUIET_WINDOW_S=0.5 QUIET_CPU=0.05 # quiet: under 5% of a core over half a second
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$server_pid/stat"; }

# health: one /healthz request; prints "HTTP_STATUS CONNECTIONS ROOMS" ("000 - -" without an
# answer). Its JSON is flat, so sed is enough.
# The server's RSS less what SQLite says it uses (its page cache, bounded at 64 MiB, fills as new
# rooms are stored and then stays: a cache, not what a crowd left behind), in KiB.
own_kib() {
  local sqlite_bytes
  sqlite_bytes=$(curl -s -m 5 "http://127.0.0.1:$PORT/metrics" 2> /dev/null |
    sed -n 's/^livecanvas_sqlite_memory_bytes \([0-9]*\)$/\1/p' | grep . || echo 0)
  echo $(($(rss_kib "$server_pid") - sqlite_bytes / 1024))
}

health() {
  local body code
  body=$(curl -s -m 5 -w '\n%{http_code}' "http://127.0.0.1:$PORT/healthz" 2> /dev/null) || true
  code=${body##*$'\n'}
  body=${body%$'\n'*}
  echo "${code:-000}" \
    "$(sed -n 's/.*"connections":\([0-9]*\).*/\1/p' <<< "$body" | grep . || echo -)" \
    "$(sed -n 's/.*"rooms":\([0-9]*\).*/\1/p' <<< "$body" | grep . || echo -)"
}

# report_fields FILE: from a load generator's JSON report (livecanvas-load's or the seed one's),
# "CLIENTS CONNECTED DELIVERED LOST TROUBLE" ("-" for deliveries of an idle crowd), where TROUBLE
# counts connections refused, late or dropped before the end.
report_fields() {
  python3 - "$1" << 'EOF'
import json, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("{")]
if not lines:
    print("- - - - -")
    sys.exit()
r = json.loads(lines[-1])
if "stayed_up" in r:  # livecanvas-load
    delivered, lost = r["received"], r["lost"]
    trouble = r["connect_errors"] + r["disconnects"]
    expected = r["expected"]
else:  # seed loadgen
    delivered, lost = r["deliveries_received"], r["lost"]
    trouble = r["connect_errors"] + r["connect_late"] + r["disconnected_early"]
    expected = r["expected_deliveries"]
if expected == 0:
    delivered = lost = "-"
print(r["clients"], r["connected"], delivered, lost, trouble)
EOF
}

# run_generator NAME BOUND_S COMMAND...: one crowd, its report in $LOG_DIR/NAME.out.
run_generator() {
  local name=$1 bound=$2 rc=0
  shift 2
  timeout --kill-after=5 "$bound" "$@" > "$LOG_DIR/$name.out" 2> "$LOG_DIR/$name.err" &
  loadgen_pid=$!
  wait "$loadgen_pid" || rc=$?
  loadgen_pid=""
  return "$rc"
}

# wave_command WAVE SHAPE: sets `label` and `gen_cmd` (the generator and its flags). Rates go
# 1, 2, 3 per sender from one round of the shapes to the next, so that no two rounds are alike.
wave_command() {
  local wave=$1 shape=$2 url="ws://127.0.0.1:$PORT"
  local r=$((1 + (wave + ${#cycle[@]} - 1) / ${#cycle[@]} % 3))
  local lc=("$LOADGEN" --url "$url/ws" --json --quiet --drain 2s)
  local seed=("$SEED" --url-base "$url" --json --room-prefix "soak-w$wave-" --warmup 1 --drain 2)
  case $shape in
    many-rooms)
      label="many-rooms 500x10, 2 drawing at $r/s, batched"
      gen_cmd=("${lc[@]}" --preset many-rooms --rooms 500 --clients 5000 --rate "$r"
        --duration "${draw_s}s" --batch) ;;
    busy-room)
      label="busy-room 1x500, 50 drawing at $((10 * r))/s, batched"
      gen_cmd=("${lc[@]}" --preset busy-room --rate $((10 * r)) --duration "${draw_s}s" --batch) ;;
    idle-crowd)
      label="idle-crowd $idle_clients in $((idle_clients / 10)) rooms"
      gen_cmd=("${lc[@]}" --preset idle-crowd --clients "$idle_clients" --rooms $((idle_clients / 10))
        --duration "${idle_s}s") ;;
    seed-many-rooms)
      label="many-rooms 500x10, 2 drawing at $r/s, all leave at once"
      gen_cmd=("${seed[@]}" --preset many-rooms --rooms 500 --clients-per-room 10 --rate "$r"
        --duration "$draw_s") ;;
    seed-busy-room)
      label="busy-room 1x500, 50 drawing at $((5 * r))/s, all leave at once"
      gen_cmd=("${seed[@]}" --preset busy-room --rate $((5 * r)) --duration "$draw_s") ;;
    seed-idle-crowd)
      label="idle-crowd $idle_clients in $((idle_clients / 10)) rooms, all leave at once"
      gen_cmd=("${seed[@]}" --idle --rooms $((idle_clients / 10)) --clients-per-room 10
        --duration "$idle_s") ;;
  esac
}

# The seed generator's waves sit between the in-repo ones, so that every shape is followed by a
# crowd leaving all at once (the issue's trigger) within a round.
if ((use_seed)); then
  cycle=(seed-many-rooms busy-room seed-idle-crowd many-rooms seed-busy-room idle-crowd)
else
  cycle=(busy-room idle-crowd many-rooms)
fi

failures=()
baseline_kib="" longest_s=0 wave=0 waves=0
printf '| wave | shape | generator | clients up | deliveries | lost | newcomer ms | /healthz | empty / quiet after s | RSS less SQLite MiB | wave s | result |\n'
printf '|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n'
while :; do
  if ((wave == 0)); then
    shape=many-rooms
  else
    shape=${cycle[(wave - 1) % ${#cycle[@]}]}
  fi
  wave_command "$wave" "$shape"
  if [[ $shape == seed-* ]]; then generator="seed-loadgen"; else generator="livecanvas-load"; fi
  name="wave-$wave.$shape"
  wave_start=$SECONDS
  problems=()
  log "wave $wave: $label"

  # The crowd. A generator that fails (or leaves no report) means the crowd did not happen.
  if ! run_generator "$name" $((idle_s + draw_s + 150)) "${gen_cmd[@]}"; then
    problems+=("$generator failed (see $name.err)")
  fi
  read -r clients connected delivered lost trouble < <(report_fields "$LOG_DIR/$name.out")
  [[ $trouble == 0 || $trouble == - ]] || log "wave $wave: $trouble connections refused or dropped"

  # 1. The newcomer pair, at once: the crowd's rooms are still checkpointing and closing.
  newcomer=$(timeout 15 python3 "$BENCH_DIR/newcomer.py" --port "$PORT" --room "newcomer-w$wave" \
    --timeout 5 2> "$LOG_DIR/$name.newcomer.err") || true
  echo "$newcomer" > "$LOG_DIR/$name.newcomer.json"
  newcomer_ms=$(sed -n 's/.*"total_ms": \([0-9.]*\).*/\1/p' <<< "$newcomer")
  if [[ $newcomer != *'"ok": true'* ]]; then
    problems+=("newcomer not served: $(sed -n 's/.*"step": "\([^"]*\)", "error": "\([^"]*\)".*/\1: \2/p' <<< "$newcomer")")
    newcomer_ms="${newcomer_ms:-?} (not served)"
  elif awk -v ms="$newcomer_ms" -v max="$newcomer_max_ms" 'BEGIN { exit !(ms > max) }'; then
    problems+=("newcomer took $newcomer_ms ms > $newcomer_max_ms")
  fi

  # 2. /healthz, whose probe joins a room like a client.
  read -r code _ _ < <(health)
  [[ $code == 200 ]] || problems+=("/healthz answered $code")

  # 3. Everyone gone and the server quiet, then the memory the crowd took must be given back.
  empty_s=- quiet_s=- rss_kib=0
  if kill -0 "$server_pid" 2> /dev/null; then
    empty_start=$EPOCHREALTIME
    deadline=$((SECONDS + empty_timeout_s))
    while :; do
      read -r _ conns rooms < <(health)
      [[ $conns == 0 && $rooms == 0 ]] && break
      if ((SECONDS >= deadline)); then
        problems+=("not empty after ${empty_timeout_s}s: $conns connections, $rooms rooms")
        break
      fi
      sleep 0.25
    done
    empty_s=$(awk -v a="$empty_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    # A room is gone before its last checkpoint is: that renders afterwards, holding its picture,
    # for seconds after a crowd of rooms. RSS read before the server is quiet would measure them.
    while :; do
      ticks=$(cpu_ticks)
      sleep "$QUIET_WINDOW_S"
      awk -v t=$(($(cpu_ticks) - ticks)) -v hz="$HZ" -v w="$QUIET_WINDOW_S" -v max="$QUIET_CPU" \
        'BEGIN { exit !(t / hz / w <= max) }' && break
      if ((SECONDS >= deadline)); then
        problems+=("still busy ${empty_timeout_s}s after the crowd left")
        break
      fi
    done
    quiet_s=$(awk -v a="$empty_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    if ((trim)) && ! timeout 30 gdb -p "$server_pid" -batch -ex 'call (int) malloc_trim(0)' \
      > /dev/null 2>&1; then
      problems+=("malloc_trim through gdb failed")
    fi
    if ((wave == 0)); then
      # The baseline: what the server keeps once it has given the warm-up's memory back.
      sleep "$TRIM_SETTLE_S"
      rss_kib=$(own_kib)
    else
      # Memory comes back a little after the rooms are gone: look until it has, or until the
      # bound, and judge the last reading.
      settle_deadline=$((SECONDS + rss_settle_s))
      while :; do
        rss_kib=$(own_kib)
        ((rss_kib <= baseline_kib + rss_tolerance_mib * 1024 || SECONDS >= settle_deadline)) && break
        sleep 0.5
      done
    fi
  else
    problems+=("the server exited (see $SERVER_LOG)")
  fi
  if ((wave == 0)); then
    baseline_kib=$rss_kib
    rss_cell=$(awk -v k="$rss_kib" 'BEGIN { printf "%.1f (baseline)", k / 1024 }')
  else
    rss_cell=$(awk -v k="$rss_kib" -v b="$baseline_kib" 'BEGIN { printf "%.1f (%+.1f)", k / 1024, (k - b) / 1024 }')
    if ((rss_kib > baseline_kib + rss_tolerance_mib * 1024)); then
      problems+=("RSS $(awk -v k="$rss_kib" -v b="$baseline_kib" 'BEGIN { printf "%.1f MiB over the baseline", (k - b) / 1024 }') (tolerance $rss_tolerance_mib)")
    fi
  fi

  wave_s=$((SECONDS - wave_start))
  ((wave_s <= longest_s)) || longest_s=$wave_s
  if ((${#problems[@]})); then
    result=$(printf '; %s' "${problems[@]}")
    result="FAIL: ${result#; }"
    failures+=("wave $wave ($shape): ${result#FAIL: }")
  else
    result=ok
  fi
  [[ $trouble == 0 || $trouble == - ]] || result+=" ($trouble connections refused or dropped)"
  printf '| %d%s | %s | %s | %s/%s | %s | %s | %s | %s | %s | %s | %d | %s |\n' "$wave" \
    "$( ((wave)) || echo ' (warm-up)')" "$label" "$generator" "$connected" "$clients" \
    "$delivered" "$lost" "${newcomer_ms:--}" "$code" "$empty_s / $quiet_s" "$rss_cell" "$wave_s" "$result"
  waves=$((wave + 1))
  kill -0 "$server_pid" 2> /dev/null || break
  wave=$waves
  # Another wave only if it should end within the budget (judged by the longest so far).
  ((wave < 2 || SECONDS - soak_start + longest_s <= budget_s)) || break
done

# The graceful stop: told to stop while empty, it must be gone within its grace (+2 s).
stop_deadline_s=$((grace_s + 2))
if kill -0 "$server_pid" 2> /dev/null; then
  stop_start=$EPOCHREALTIME
  kill -TERM "$server_pid"
  deadline=$((SECONDS + stop_deadline_s + 1))
  # timeout(1) exits as soon as the server does (the server's pid would linger as a zombie).
  while kill -0 "$server_tpid" 2> /dev/null && ((SECONDS < deadline)); do sleep 0.05; done
  stop_s=$(awk -v a="$stop_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
  if kill -0 "$server_tpid" 2> /dev/null; then
    failures+=("SIGTERM: still running after ${stop_s}s (grace ${grace_s}s + 2)")
    echo "shutdown: still running ${stop_s}s after SIGTERM (limit $stop_deadline_s s); killed"
  else
    status=0
    wait "$server_tpid" || status=$?
    server_tpid="" server_pid=""
    echo "shutdown: exited with status $status ${stop_s}s after SIGTERM (limit $stop_deadline_s s)"
    if awk -v s="$stop_s" -v max="$stop_deadline_s" 'BEGIN { exit !(s > max) }'; then
      failures+=("SIGTERM: took ${stop_s}s > ${stop_deadline_s}s")
    fi
    ((status == 0)) || failures+=("SIGTERM: exit status $status")
  fi
fi

# What the server logged at WARN and ERROR (the soak does not fail on it: read it).
errors=$(grep -c ' ERROR ' "$SERVER_LOG" || true)
warnings=$(grep -c ' WARN ' "$SERVER_LOG" || true)
echo "server log: $errors ERROR and $warnings WARN lines ($SERVER_LOG)"
if ((errors + warnings)); then
  # Most frequent messages, timestamps and room names stripped.
  grep -E ' (ERROR|WARN) ' "$SERVER_LOG" | sed -E 's/^\[[^ ]+ //; s/[0-9a-f-]{36}/<id>/g; s/soak-w[0-9]+-[0-9]+/<room>/g' |
    sort | uniq -c | sort -rn | head -n 5 | sed 's/^/  /'
fi
for note in "${notes[@]}"; do echo "note: $note"; done
total_s=$((SECONDS - soak_start))
if ((${#failures[@]})); then
  echo "FAIL in ${total_s}s, $waves waves:"
  printf '  - %s\n' "${failures[@]}"
  exit 1
fi
echo "PASS: $waves waves in ${total_s}s; every newcomer served within ${newcomer_max_ms} ms, /healthz 200, RSS within ${rss_tolerance_mib} MiB of the baseline, stopped within ${stop_deadline_s}s"
