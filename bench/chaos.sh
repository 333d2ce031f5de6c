#!/usr/bin/env bash
# A chaos run: under load, the server is killed with `kill -9` at random moments and
# restarted on the same --data-dir, and its disk is filled and freed; at the end every room's
# picture must hold every stroke the clients saw that the server promised to keep.
#
# One livecanvas (lib.sh's raised limits, --flush-interval) on a data directory that is, as root,
# a small tmpfs of its own (--tmpfs-mib) so that the disk really fills; `livecanvas-load chaos`
# draws into --rooms rooms of --clients clients (--senders of them drawing --rate strokes a second,
# each stroke in a cell of its own, batched as the page is) for --duration seconds, every client
# reconnecting whenever the server dies, and records when each stroke was first seen by another
# client (acknowledged), and /readyz every 100 ms. Meanwhile, at seeded random moments:
#   - --kills times: kill -9, then restart at once on the same data directory (a restart that
#     fails is retried every 0.5 s); --kills-while-full of them land while the disk is full;
#   - --fills times (root only): a filler file is written until ENOSPC, and removed 3-8 s later.
# Every kill, restart, fill and free goes to an event log (unix ms). After the load: the disk is
# freed, the server brought up if it is down, /readyz awaited (200: nothing held in memory), a
# graceful stop (SIGTERM: must exit 0), a clean start, and `livecanvas-load chaos-check` fetches
# every room's canvas.png and checks by pixels that every acknowledged stroke is there, except
# those the server may lose: first seen within the flush interval before a kill or while it was
# dead, or in an unsafe window (from a flush interval before a fill until the free; any time
# /readyz was not 200, from a flush interval before its last 200 to its next 200). Strokes after
# the last kill are checked too: the run ends with a graceful stop. Cells never drawn must be blank.
#
# Usage: bench/chaos.sh [options]
#   --duration S          drawing time of the load (default 60)
#   --kills N             kill -9 + restart this many times (default 5)
#   --kills-while-full N  of them, this many per fill while the disk is full (default 1)
#   --fills N             fill and free the disk this many times (default 1; root only)
#   --tmpfs-mib N         size of the data directory's tmpfs (default 64; root only): more than
#                         the server's own files take, or the disk also fills by itself (the
#                         WAL grows to 32 MiB before SQLite folds it; only a graceful stop
#                         truncates it; the summary says how close it came)
#   --seed N              the schedule's seed (default: from the clock; printed)
#   --rooms N --clients N --senders N --rate R
#                         the load (default 4 rooms x 4 clients, 2 drawing 20 strokes/s each)
#   --flush-interval MS   the server's --flush-interval, in ms (default 250)
#   --slack MS            widen every excluded window by this much more (default 0)
#   --port P              the server's port (default 18086; refused if in use)
#   --no-build            do not run cargo build first (the binaries must exist)
#   -h, --help            this text
#
# Builds with `cargo build --release -p livecanvas -p livecanvas-load` (into $CARGO_TARGET_DIR if
# set) unless --no-build or BENCH_SERVER / BENCH_LOADGEN point at binaries. Without root the data
# directory is an ordinary temporary directory and the fill step is skipped (said so in the
# summary). Logs, the event log, the acknowledged strokes, the check's JSON and the pictures go to
# bench/results/chaos-<date>-<time>.logs/. Exit code 0 on PASS, 1 when a checked stroke is missing
# (or another check failed), 2 on bad usage or a run that could not be made.
set -euo pipefail
export LC_ALL=C # a dot in $EPOCHREALTIME
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
TARGET_DIR=${CARGO_TARGET_DIR:-"$ROOT/target"}
build=1
[[ -z ${BENCH_SERVER:-} && -z ${BENCH_LOADGEN:-} ]] || build=0
SERVER=${BENCH_SERVER:-"$TARGET_DIR/release/livecanvas"}
LOADGEN=${BENCH_LOADGEN:-"$TARGET_DIR/release/livecanvas-load"}
script_start=$SECONDS
log() { echo "[chaos $((SECONDS - script_start))s] $*" >&2; }
die() {
  log "$*"
  exit 2
}
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

PORT=18086 duration_s=60 kills=5 kills_while_full=1 fills=1 tmpfs_mib=64 seed=""
rooms=4 clients=4 senders=2 rate=20 flush_ms=250 slack_ms=0
while (($#)); do
  case $1 in
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --no-build) build=0; shift ;;
    --rate)
      if (($# < 2)) || [[ ! $2 =~ ^[0-9]+([.][0-9]+)?$ ]]; then die "$1 needs a number"; fi
      rate=$2
      shift 2 ;;
    --duration | --kills | --kills-while-full | --fills | --tmpfs-mib | --seed | --rooms | --clients | \
      --senders | --flush-interval | --slack | --port)
      if (($# < 2)) || [[ ! $2 =~ ^[0-9]+$ ]]; then die "$1 needs a whole number"; fi
      case $1 in
        --duration) duration_s=$2 ;;
        --kills) kills=$2 ;;
        --kills-while-full) kills_while_full=$2 ;;
        --fills) fills=$2 ;;
        --tmpfs-mib) tmpfs_mib=$2 ;;
        --seed) seed=$2 ;;
        --rooms) rooms=$2 ;;
        --clients) clients=$2 ;;
        --senders) senders=$2 ;;
        --flush-interval) flush_ms=$2 ;;
        --slack) slack_ms=$2 ;;
        --port) PORT=$2 ;;
      esac
      shift 2 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
((duration_s >= 10)) || die "--duration must be at least 10 (seconds)"
((tmpfs_mib >= 2)) || die "--tmpfs-mib must be at least 2"
((flush_ms >= 1)) || die "--flush-interval must be at least 1 (ms)"
command -v curl > /dev/null || die "needs curl"
[[ -n $seed ]] || seed=$(($(date +%s%N) / 1000 % 1000000))
RANDOM=$seed

notes=()
root=0
if ((EUID == 0)) && command -v mount > /dev/null; then root=1; fi
if ((!root)); then
  if ((fills)); then
    notes+=("not root: the data directory is an ordinary directory and the disk was never filled (run as root for the fill/free step)")
    log "${notes[-1]}"
  fi
  fills=0
fi
((fills)) || kills_while_full=0
((kills >= fills * kills_while_full)) || die "--kills ($kills) must be at least --fills x --kills-while-full"

if ((build)); then
  log "building: cargo build --release -p livecanvas -p livecanvas-load"
  (cd "$ROOT" && timeout 1800 cargo build --release -p livecanvas -p livecanvas-load >&2) ||
    die "cargo build failed (use --no-build to run with existing binaries)"
fi
for bin in "$SERVER" "$LOADGEN"; do
  [[ -x $bin ]] || die "$bin is missing: cargo build --release -p livecanvas -p livecanvas-load first (or set BENCH_SERVER/BENCH_LOADGEN)"
done

RESULTS_DIR="$BENCH_DIR/results"
LOG_DIR="$RESULTS_DIR/chaos-$(date +%Y%m%d-%H%M%S).logs"
mkdir -p "$LOG_DIR"
EVENTS="$LOG_DIR/events.log"
ACKS="$LOG_DIR/acks.json"
: > "$EVENTS"

# The data directory: a tmpfs of its own inside lib.sh's temporary directory, as root.
mounted=""
new_data_dir
disk="$data_dir/disk"
mkdir "$disk"
if ((root)); then
  mount -t tmpfs -o "size=${tmpfs_mib}m,mode=0700" tmpfs "$disk" || die "mount -t tmpfs on $disk failed"
  mounted=$disk
fi
chaos_cleanup() {
  stop_pid "$loadgen_pid" ""
  loadgen_pid=""
  if [[ -n $server_pid ]]; then kill -KILL "$server_pid" 2> /dev/null || true; fi
  stop_pid "$server_tpid" "$server_pid"
  server_tpid="" server_pid=""
  if [[ -n $mounted ]]; then
    umount "$mounted" || umount -l "$mounted" || log "could not unmount $mounted"
    mounted=""
  fi
  cleanup # lib.sh: removes the temporary data directory
}
trap chaos_cleanup EXIT

now_ms() {
  local t=$EPOCHREALTIME
  echo $((${t%.*} * 1000 + 10#${t#*.} / 1000))
}
# ev KIND [DETAIL...]: one line of the event log, and on stderr.
ev() {
  echo "$(now_ms) $*" >> "$EVENTS"
  log "$*"
}
# rand_below N: a seeded random whole number in 0..N-1, in $REPLY (no subshell: it would not
# advance $RANDOM here).
rand_below() {
  REPLY=$((((RANDOM << 15) | RANDOM) % $1))
}

server_runs=0 server_up=0
# start_server: a new server process on the data directory, its log server-N.log; 1 if it did not
# come up (its log's tail is shown).
start_server() {
  local logf="$LOG_DIR/server-$server_runs.log"
  server_runs=$((server_runs + 1))
  if spawn_server livecanvas "$PORT" $((duration_s + 900)) "$logf" env RUST_LOG=info "$SERVER" \
    --bind "127.0.0.1:$PORT" --data-dir "$disk" "${LIVECANVAS_BENCH_FLAGS[@]}" \
    --flush-interval "${flush_ms}ms"; then
    server_up=1
    return 0
  fi
  server_tpid="" server_pid="" server_up=0
  return 1
}
kill_server() {
  ev kill "pid $server_pid"
  kill -KILL "$server_pid" 2> /dev/null || true
  wait "$server_tpid" 2> /dev/null || true
  server_tpid="" server_pid="" server_up=0
  ev killed
}
# fill_disk / free_disk: a filler file written until the file system is full, and removed.
filler="$disk/filler"
disk_full=0 fill_count=0
fill_disk() {
  ev fill
  dd if=/dev/zero of="$filler" bs=64k > /dev/null 2>&1 || true
  disk_full=1 fill_count=$((fill_count + 1))
  ev full "filler $(stat -c %s "$filler") bytes, $(disk_avail) bytes left"
}
free_disk() {
  rm -f -- "$filler"
  disk_full=0
  ev free "$(disk_avail) bytes available"
}
disk_avail() { df -B1 --output=avail "$disk" | tail -n1 | tr -d ' '; }
readyz_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$PORT/readyz" 2> /dev/null || true; }

# The schedule, in ms after the load starts: the fills (and frees) in equal slots of the middle
# of the run, --kills-while-full kills inside each full stretch, the other kills in equal slots of
# the whole run (at least 1 s apart).
duration_ms=$((duration_s * 1000))
schedule=()
full_kills=0
if ((fills)); then
  slot=$((duration_ms * 7 / 10 / fills))
  for ((i = 0; i < fills; i++)); do
    rand_below 5001
    hold=$((3000 + REPLY))
    ((hold <= slot - 1000)) || hold=$((slot - 1000))
    ((hold >= 1000)) || die "--duration is too short for --fills $fills"
    rand_below $((slot - hold))
    at=$((duration_ms * 15 / 100 + i * slot + REPLY))
    schedule+=("$at fill" "$((at + hold)) free")
    for ((k = 0; k < kills_while_full; k++)); do
      rand_below $((hold - 600))
      schedule+=("$((at + 300 + REPLY)) kill")
      full_kills=$((full_kills + 1))
    done
  done
fi
free_kills=$((kills - full_kills))
if ((free_kills)); then
  span=$((duration_ms - 3000))
  slot=$((span / free_kills))
  ((slot >= 1500)) || die "--kills $kills do not fit in --duration $duration_s (1.5 s each)"
  for ((i = 0; i < free_kills; i++)); do
    rand_below $((slot - 1000))
    schedule+=("$((1500 + i * slot + 500 + REPLY)) kill")
  done
fi
mapfile -t schedule < <(printf '%s\n' "${schedule[@]}" | sort -n)
log "seed $seed; schedule (ms after the load starts): $(printf '%s; ' "${schedule[@]}")"
if ((root)); then
  log "data directory: a ${tmpfs_mib} MiB tmpfs at $disk"
else
  log "data directory: $disk (not root: no tmpfs, no fill)"
fi

start_server || die "the server did not start"
ev start "pid $server_pid"

# The load, bounded by timeout.
load_args=(chaos --url "ws://127.0.0.1:$PORT/ws" --rooms "$rooms" --clients "$clients"
  --senders "$senders" --rate "$rate" --duration "${duration_s}s" --batch --out "$ACKS")
log "load: livecanvas-load ${load_args[*]}"
timeout --kill-after=5 $((duration_s + 60)) "$LOADGEN" "${load_args[@]}" \
  > "$LOG_DIR/load.out" 2> "$LOG_DIR/load.err" &
loadgen_pid=$!
load_start=$(now_ms)
ev load

# The least space left on the disk while it was not being filled, sampled every second: the
# server's own files must not fill it (its WAL grows to 32 MiB, SQLite's wal_autocheckpoint of
# 8192 pages, before it is folded into the database, and only a graceful stop truncates it).
next=0 pending_kills=0 kill_not_before=0 retry_at=0 next_df=0 least_avail=""
while kill -0 "$loadgen_pid" 2> /dev/null; do
  now=$(($(now_ms) - load_start))
  if ((root && !disk_full && now >= next_df)); then
    avail=$(disk_avail)
    if [[ -z $least_avail ]] || ((avail < least_avail)); then least_avail=$avail; fi
    next_df=$((now + 1000))
  fi
  while ((next < ${#schedule[@]})); do
    read -r at action <<< "${schedule[next]}"
    ((at <= now)) || break
    next=$((next + 1))
    case $action in
      fill) fill_disk ;;
      free) free_disk ;;
      kill) pending_kills=$((pending_kills + 1)) ;;
    esac
  done
  if ((pending_kills && server_up && now >= kill_not_before)); then
    pending_kills=$((pending_kills - 1))
    kill_server
    retry_at=0
  fi
  if ((!server_up && now >= retry_at)); then
    if start_server; then
      ev restart "pid $server_pid"
      kill_not_before=$(($(now_ms) - load_start + 1000))
    else
      ev restart_failed "see server-$((server_runs - 1)).log"
      retry_at=$(($(now_ms) - load_start + 500))
    fi
  fi
  sleep 0.05
done
load_rc=0
wait "$loadgen_pid" || load_rc=$?
loadgen_pid=""
ev load_end "exit status $load_rc"
((load_rc == 0)) || notes+=("the load generator exited with status $load_rc (see load.err)")
((pending_kills == 0)) || notes+=("$pending_kills scheduled kills did not happen (the server was down until the end)")

# The end: space back, the server up and holding nothing, a graceful stop, a clean start.
failures=()
((!disk_full)) || free_disk
deadline=$((SECONDS + 60))
while ((!server_up)); do
  if start_server; then
    ev restart "pid $server_pid (after the load)"
  elif ((SECONDS >= deadline)); then
    failures+=("the server would not start again within 60 s")
    break
  else
    ev restart_failed "see server-$((server_runs - 1)).log"
    sleep 0.5
  fi
done
if ((server_up)); then
  deadline=$((SECONDS + 60))
  while [[ $(readyz_code) != 200 ]]; do
    if ((SECONDS >= deadline)); then
      failures+=("/readyz was not 200 within 60 s after the load: strokes may still be held in memory")
      break
    fi
    sleep 0.1
  done
  ev ready "/readyz $(readyz_code)"
  ev stop "SIGTERM to pid $server_pid"
  kill -TERM "$server_pid"
  status=0
  wait "$server_tpid" || status=$?
  server_tpid="" server_pid="" server_up=0
  ev stopped "exit status $status"
  ((status == 0)) || failures+=("the graceful stop exited with status $status")
fi
disk_usage="$(du -sk "$disk" | cut -f1) KiB used after the stop ($(find "$disk" -type f -printf '%f %s B; ' 2> /dev/null))"
log "$disk_usage"
start_server || die "the server did not start for the check (see server-$((server_runs - 1)).log)"
ev final_start "pid $server_pid"

check_rc=0
"$LOADGEN" chaos-check --acks "$ACKS" --events "$EVENTS" --url "ws://127.0.0.1:$PORT/ws" \
  --flush-interval "${flush_ms}ms" --slack "${slack_ms}ms" --out "$LOG_DIR/check.json" \
  --save-pictures "$LOG_DIR" | tee "$LOG_DIR/check.out" || check_rc=$?
stop_pid "$server_tpid" "$server_pid"
server_tpid="" server_pid="" server_up=0

echo "== chaos run =="
echo "seed $seed; load: $rooms rooms x $clients clients, $senders drawing at $rate/s each, ${duration_s}s, batched; --flush-interval ${flush_ms}ms"
if ((root)); then
  echo "data directory: ${tmpfs_mib} MiB tmpfs; least free outside the fills $((${least_avail:-0} / 1024)) KiB; $disk_usage"
  if ((${least_avail:-0} < 1024 * 1024)); then
    notes+=("the server's own files (its WAL) all but filled the ${tmpfs_mib} MiB disk outside the fills: raise --tmpfs-mib, or the run also measures a disk that fills by itself")
  fi
else
  echo "data directory: ordinary temporary directory (not root); $disk_usage"
fi
echo "kill -9: $(grep -c ' kill ' "$EVENTS" || true) ($full_kills scheduled while the disk was full); restarts: $(grep -c ' restart ' "$EVENTS" || true), failed restart attempts: $(grep -c ' restart_failed ' "$EVENTS" || true); fill/free cycles: $fill_count"
echo "load generator: $(grep -F "[chaos  done]" "$LOG_DIR/load.err" | sed "s/^\[chaos  done\] //" || true)"
# What the servers logged at WARN and ERROR, and any panic (the run does not fail on them: read them).
errors=$(cat "$LOG_DIR"/server-*.log | grep -c ' ERROR ' || true)
warnings=$(cat "$LOG_DIR"/server-*.log | grep -c ' WARN ' || true)
panics=$(cat "$LOG_DIR"/server-*.log | grep -ci 'panic' || true)
echo "server logs ($server_runs processes): $errors ERROR, $warnings WARN, $panics panic lines"
if ((errors + warnings + panics)); then
  # Most frequent messages, timestamps, ids and numbers stripped.
  cat "$LOG_DIR"/server-*.log | grep -Ei ' (ERROR|WARN) |panic' |
    sed -E 's/^\[[^ ]+ //; s/[0-9a-f-]{36}/<id>/g; s/[0-9]+(\.[0-9]+)?/N/g' |
    sort | uniq -c | sort -rn | head -n 8 | sed 's/^/  /'
fi
for note in "${notes[@]}"; do echo "note: $note"; done
((check_rc == 0)) || failures+=("the check failed (exit status $check_rc): see above")
echo "logs: $LOG_DIR"
echo "run time: $((SECONDS - script_start)) s"
if ((${#failures[@]})); then
  echo "FAIL:"
  printf '  - %s\n' "${failures[@]}"
  exit 1
fi
echo "PASS"
