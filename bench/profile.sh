#!/usr/bin/env bash
# Where the time goes per delivery: one server (release livecanvas, or the Node relay) under one
# load from target/release/livecanvas-load, on 127.0.0.1 only, looked at with perf while the
# clients draw. In turn, inside the drawing phase:
#   1. counting (cheap): perf stat -e task-clock,context-switches,cpu-migrations,page-faults
#      (+ cycles,instructions when the CPU exposes them; in a VM it often does not) and
#      sched:sched_waking on the server (wake-ups it causes), a system-wide sched:sched_waking
#      filtered on the server's threads (wake-ups of the server), and /proc per thread;
#   2. who wakes whom: perf record -a -e sched:sched_waking (no call graphs);
#   3. sampling: perf record --call-graph (dwarf when the binary has no frame pointers, else fp;
#      fp when dwarf is refused) on the server.
# Then per-delivery figures, the top of `perf report --no-children --sort dso,symbol`, a
# per-thread breakdown, and everything into bench/results/profile-<date>-<time>/ (summary.md,
# perf.data, the raw outputs). The summary is also printed on stdout.
#
# Usage: bench/profile.sh [options]
#   --server ours|node   livecanvas (default) or the Node ws relay of compare.sh
#   --workload W         many-rooms (default) or busy-room (the load generator's presets)
#   --rate R             segments per second per sender (default: the preset's: saturation)
#   --batch              the clients ask for batched delivery (?batch=1; livecanvas only)
#   --duration D         drawing time, e.g. 15s (default 15s; at least 4s)
#   --storage S          sqlite (default) or memory (livecanvas only)
#   --ours-args "A B"    extra flags for livecanvas
#   --load-args "A B"    extra flags for the load generator, after the preset's
#   --port P             the server's port (default 18090)
#   --call-graph M       auto (default), dwarf, fp or none (no call graphs)
#   --freq F             perf record's sampling frequency, Hz (default 999)
#   --top N              rows of the perf report in the summary (default 30)
#   --no-build           do not run cargo build / npm ci first (the binaries must exist)
#   -h, --help           this text
# BENCH_SERVER and BENCH_LOADGEN point it at other binaries, as for compare.sh.
#
# The three spans share what is left of the drawing after the connect phase: counting 40%,
# wake-ups 20%, sampling 40% (at most 5 s, 2 s and 5 s), after a 0.3 s lead-in; each perf is
# bounded by `timeout`, so is the server and the load generator: the whole run takes the connect
# phase + the duration + the drain + the reports (perf report with dwarf call graphs: seconds to
# a minute).
#
# Per-delivery figures come from two places. Exact: the load generator's --server-pid window
# (from the start of the drawing to the end of the drain: the server's CPU time and context
# switches of all its threads, /proc, against the deliveries and frames counted in that window).
# Estimated: the perf spans cover part of the drawing only; their deliveries are taken as the
# run's steady rate (deliveries / drawing time) x the span, which holds when the server keeps up
# with a fixed-rate load (nothing lost: the summary warns otherwise).
set -euo pipefail
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
LOADGEN=${BENCH_LOADGEN:-"$ROOT/target/release/livecanvas-load"}
SERVER=${BENCH_SERVER:-"$ROOT/target/release/livecanvas"}
RELAY_DIR="$BENCH_DIR/node-relay"

server_kind=ours
workload=many-rooms
rate=""
batch=0
duration=15s
storage=sqlite
ours_args=""
load_args=""
PORT=18090
call_graph=auto
freq=999
top=30
build=1
PERF_TIMEOUT_S=60    # bound of each perf record/stat beyond its span
REPORT_TIMEOUT_S=300 # bound of each perf report/script
RUN_MARGIN_S=180     # load generator's bound beyond the drawing time (connect phase, drain)

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "profile.sh: $*" >&2; exit 2; }
log() { echo "[profile] $*" >&2; }
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
sampler_pid="" node_map=""
profile_cleanup() {
  [[ -z $sampler_pid ]] || kill "$sampler_pid" 2> /dev/null || true
  cleanup
  [[ -z $node_map ]] || rm -f "$node_map"
}
trap profile_cleanup EXIT

while (($#)); do
  opt=$1
  case $opt in
    --*=*) set -- "${opt%%=*}" "${opt#*=}" "${@:2}"; continue ;;
    -h | --help) usage; exit 0 ;;
    --batch) batch=1; shift; continue ;;
    --no-build) build=0; shift; continue ;;
    --server | --workload | --rate | --duration | --storage | --ours-args | --load-args | --port | --call-graph | --freq | --top)
      (($# >= 2)) || die "$opt needs a value"
      case $opt in
        --server) server_kind=$2 ;;
        --workload) workload=$2 ;;
        --rate) rate=$2 ;;
        --duration) duration=$2 ;;
        --storage) storage=$2 ;;
        --ours-args) ours_args=$2 ;;
        --load-args) load_args=$2 ;;
        --port) PORT=$2 ;;
        --call-graph) call_graph=$2 ;;
        --freq) freq=$2 ;;
        --top) top=$2 ;;
      esac
      shift 2 ;;
    *) die "unknown option $opt (see --help)" ;;
  esac
done

in_list "$server_kind" "ours node" || die "--server must be ours or node, got '$server_kind'"
in_list "$workload" "many-rooms busy-room" || die "--workload must be many-rooms or busy-room, got '$workload'"
in_list "$storage" "sqlite memory" || die "--storage must be sqlite or memory, got '$storage'"
in_list "$call_graph" "auto dwarf fp none" || die "--call-graph must be auto, dwarf, fp or none"
[[ -z $rate || $rate =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--rate must be a number, got '$rate'"
[[ $freq =~ ^[1-9][0-9]*$ ]] || die "--freq must be a positive whole number"
[[ $top =~ ^[1-9][0-9]*$ ]] || die "--top must be a positive whole number"
if ! [[ $PORT =~ ^[0-9]+$ ]] || ((PORT == 0 || PORT > 65535)); then die "bad port '$PORT'"; fi
[[ $duration =~ ^([0-9]+)(s|m)$ ]] || die "--duration must look like 15s or 1m, got '$duration'"
duration_s=${BASH_REMATCH[1]}
[[ ${BASH_REMATCH[2]} == m ]] && duration_s=$((duration_s * 60))
((duration_s >= 4)) || die "--duration must be at least 4s (three perf spans share it)"
if [[ $server_kind == node ]]; then
  ((batch == 0)) || die "--batch: the Node relay has no batching"
  [[ -z $ours_args ]] || die "--ours-args is for livecanvas"
fi
read -r -a ours_extra <<< "$ours_args"
read -r -a load_extra <<< "$load_args"
command -v perf > /dev/null || die "perf not found (apt-get install linux-perf, or linux-tools-\$(uname -r))"
if ((EUID != 0)) && (($(cat /proc/sys/kernel/perf_event_paranoid) > 0)); then
  log "warning: not root and perf_event_paranoid > 0: the system-wide wake-up counts will fail"
fi

# The spans: a lead-in, then counting, wake-ups, sampling, within the drawing (less 0.5 s at the
# end and about 0.8 s for perf's own start-ups); each is cut short if the drawing is nearly over.
read -r span_stat span_wake span_record < <(awk -v d="$duration_s" 'BEGIN {
  a = d - 1.6; s = 0.4 * a; w = 0.2 * a; r = 0.4 * a
  if (s > 5) s = 5; if (w > 2) w = 2; if (r > 5) r = 5
  printf "%.2f %.2f %.2f\n", s, w, r }')

# --- build and binaries ---------------------------------------------------------------------------
cd "$ROOT"
if ((build)); then
  log "building: cargo build --release -p livecanvas -p livecanvas-load"
  timeout 1800 cargo build --release -p livecanvas -p livecanvas-load >&2 ||
    die "cargo build failed (use --no-build to run with existing binaries)"
  if [[ $server_kind == node && ! -d $RELAY_DIR/node_modules/ws ]]; then
    (cd "$RELAY_DIR" && timeout 300 npm ci --no-audit --no-fund >&2) || die "npm ci failed in $RELAY_DIR"
  fi
fi
[[ -x $LOADGEN ]] || die "$LOADGEN not found (cargo build --release -p livecanvas-load)"
if [[ $server_kind == ours ]]; then
  [[ -x $SERVER ]] || die "$SERVER not found (cargo build --release --bin livecanvas)"
else
  [[ -d $RELAY_DIR/node_modules/ws ]] || die "run npm ci in $RELAY_DIR first"
fi

stamp=$(date +%Y%m%d-%H%M%S)
OUT="$BENCH_DIR/results/profile-$stamp"
mkdir -p "$OUT"
raise_open_files
log "results: $OUT"

# Call-graph mode. Rust release builds omit frame pointers unless told otherwise: count the
# functions whose code sets one up (push %rbp; mov %rsp,%rbp) among a sample of symbols.
has_frame_pointers() {
  command -v objdump > /dev/null || return 1
  timeout 120 objdump -d --no-show-raw-insn "$1" 2> /dev/null | awk '
    /^[0-9a-f]+ <.*>:$/ { if (n >= 2000) exit; n++; look = 3; next }
    look > 0 && /mov +%rsp,%rbp/ { fp++; look = 0; next }
    look > 0 { look-- }
    END { exit !(n > 0 && fp / n > 0.5) }'
}
cg_args=() cg_mode=$call_graph
if [[ $call_graph == auto ]]; then
  if [[ $server_kind == node ]]; then
    cg_mode=fp # V8's JIT code keeps frame pointers and has no DWARF unwind tables
  elif has_frame_pointers "$SERVER"; then
    cg_mode=fp
  else
    cg_mode=dwarf
  fi
fi
if [[ $cg_mode == dwarf ]] &&
  ! timeout 30 perf record -q --call-graph dwarf -o "$OUT/probe.data" -- true > /dev/null 2>&1; then
  log "perf record refused --call-graph dwarf: using fp"
  cg_mode=fp
fi
rm -f "$OUT/probe.data"
case $cg_mode in
  dwarf) cg_args=(--call-graph dwarf) ;;
  fp) cg_args=(--call-graph fp) ;;
  none) cg_args=() ;;
esac

# --- the server and the load ----------------------------------------------------------------------
case $server_kind in
  ours)
    new_data_dir
    server_name="livecanvas ($storage)"
    ((batch == 0)) || server_name="livecanvas ($storage, batch=1)"
    cmd=(env RUST_LOG=warn "$SERVER" --bind "127.0.0.1:$PORT" --storage "$storage"
      --data-dir "$data_dir" "${LIVECANVAS_BENCH_FLAGS[@]}" "${ours_extra[@]}") ;;
  node)
    server_name="node ws relay"
    # --perf-basic-prof: V8 writes /tmp/perf-PID.map, perf's names for JIT-compiled functions.
    cmd=(node --perf-basic-prof "$RELAY_DIR/relay.js" --port "$PORT") ;;
esac
echo "${cmd[*]}" > "$OUT/server.cmd"
spawn_server "$server_kind" "$PORT" $((duration_s + RUN_MARGIN_S + READY_DEADLINE_S + 600)) \
  "$OUT/server.log" "${cmd[@]}" || die "the server did not start (its log: $OUT/server.log)"
pid=$server_pid
[[ $server_kind != node ]] || node_map="/tmp/perf-$pid.map"
log "$server_name: pid $pid, $(find "/proc/$pid/task" -mindepth 1 -maxdepth 1 | wc -l) threads"

load=(--url "ws://127.0.0.1:$PORT/ws" --preset "$workload" --duration "$duration" --json
  --server-pid "$pid")
[[ -n $rate ]] && load+=(--rate "$rate")
((batch)) && load+=(--batch)
load+=("${load_extra[@]}")
echo "$LOADGEN ${load[*]}" > "$OUT/load.cmd"
log "livecanvas-load ${load[*]}"
timeout --kill-after=5 $((duration_s + RUN_MARGIN_S)) "$LOADGEN" "${load[@]}" \
  > "$OUT/load.json" 2> "$OUT/load.err" &
loadgen_pid=$!

# The drawing starts 100 ms after the connect phase's last line (joined + errors = clients).
connect_done() {
  [[ -s $OUT/load.err ]] || return 1
  awk '/^\[connect/ { if (match($0, /joined [0-9]+\/[0-9]+ errors [0-9]+/)) {
         split(substr($0, RSTART, RLENGTH), f, /[ \/]/); if (f[2] + f[5] >= f[3]) found = 1 } }
       /^\[run / { found = 1 } END { exit !found }' "$OUT/load.err"
}
deadline=$((SECONDS + RUN_MARGIN_S))
until connect_done; do
  kill -0 "$loadgen_pid" 2> /dev/null || die "the load generator ended before drawing: $(tail -n 3 "$OUT/load.err")"
  ((SECONDS < deadline)) || die "the load generator did not finish connecting within ${RUN_MARGIN_S}s"
  sleep 0.05
done
draw_end=$(awk -v t="$EPOCHREALTIME" -v d="$duration_s" 'BEGIN { printf "%.3f", t + 0.1 + d }')
sleep 0.4
lpid=$(pgrep -P "$loadgen_pid" | head -n1 || true) # the load generator itself (under timeout)

# Thread ids of the server and the load generator, every 0.2 s until the spans are over (threads
# come and go: tokio's blocking threads that render checkpoints, for one).
sample_tids() {
  local until=$((SECONDS + duration_s + 60))
  while ((SECONDS < until)); do
    find "/proc/$pid/task" -mindepth 1 -maxdepth 1 -printf 'S %f\n' 2> /dev/null || true
    [[ -z $lpid ]] || find "/proc/$lpid/task" -mindepth 1 -maxdepth 1 -printf 'L %f\n' 2> /dev/null || true
    sleep 0.2
  done
}
sample_tids > "$OUT/tids.txt" &
sampler_pid=$!
proc_ticks() { local stat fields; stat=$(< "/proc/$1/stat"); read -r -a fields <<< "${stat##*) }"; echo $((fields[11] + fields[12])); }

# fit SECONDS: SECONDS, or less when the drawing ends sooner (0.5 s before its end, with 0.3 s for
# perf to start); 0 when there is no time left.
fit() {
  awk -v want="$1" -v now="$EPOCHREALTIME" -v end="$draw_end" 'BEGIN {
    left = end - 0.5 - 0.3 - now; s = want < left ? want : left
    printf "%.2f\n", (s >= 0.2 ? s : 0) }'
}

# /proc per thread: "TID TICKS VOLUNTARY NONVOLUNTARY COMM".
thread_sample() {
  local t stat comm fields v n
  for t in /proc/"$1"/task/*; do
    stat=$(< "$t/stat") 2> /dev/null || continue
    comm=${stat#*\(} comm=${comm%\)*}
    read -r -a fields <<< "${stat##*) }"
    v=$(awk '/^voluntary_ctxt_switches:/ { print $2 }' "$t/status" 2> /dev/null) || v=0
    n=$(awk '/^nonvoluntary_ctxt_switches:/ { print $2 }' "$t/status" 2> /dev/null) || n=0
    echo "${t##*/} $((fields[11] + fields[12])) ${v:-0} ${n:-0} $comm"
  done
}

# 1. Counting.
span_stat=$(fit "$span_stat")
[[ $span_stat != 0.00 ]] || die "the drawing was over before the first span: give a longer --duration"
log "counting for ${span_stat}s: perf stat"
stat_events=task-clock,context-switches,cpu-migrations,page-faults,cycles,instructions
# The wake-up tracepoint needs tracefs (perf mounts it when it can); without it, no wake-up counts.
have_waking=0
if timeout 30 perf stat -e sched:sched_waking -o /dev/null -- true > /dev/null 2>&1; then
  have_waking=1 stat_events+=,sched:sched_waking
else
  log "warning: no sched:sched_waking tracepoint here (tracefs?): no wake-up counts"
fi
tids=$(find "/proc/$pid/task" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n)
filter=$(echo "$tids" | awk '{ printf "%s(pid == %s)", (NR > 1 ? " || " : ""), $1 }')
thread_sample "$pid" > "$OUT/threads.before"
p0=$(proc_ticks "$pid")
t0=$EPOCHREALTIME
timeout $((PERF_TIMEOUT_S)) perf stat -x, -o "$OUT/stat.csv" -e "$stat_events" -p "$pid" \
  -- sleep "$span_stat" 2> "$OUT/stat.err" &
stat_pid=$!
wakee_ok=1
if ((!have_waking)); then
  wakee_ok=0
  sleep "$span_stat"
elif ((${#filter} < 4000)); then
  timeout $((PERF_TIMEOUT_S)) perf stat -x, -o "$OUT/wakeups.csv" -a -e sched:sched_waking \
    --filter "$filter" -- sleep "$span_stat" 2> "$OUT/wakeups.err" || wakee_ok=0
else
  wakee_ok=0
  echo "too many threads for a tracepoint filter" > "$OUT/wakeups.err"
  sleep "$span_stat"
fi
wait "$stat_pid" || log "perf stat failed: $(tail -n 2 "$OUT/stat.err")"
t1=$EPOCHREALTIME
thread_sample "$pid" > "$OUT/threads.after"
p1=$(proc_ticks "$pid")
stat_wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')

# 2. Who wakes whom (system-wide, tracepoint only).
span_wake=$(fit "$span_wake")
if ((have_waking)) && [[ $span_wake != 0.00 ]]; then
  log "wake-ups for ${span_wake}s: perf record -a -e sched:sched_waking"
  timeout $((PERF_TIMEOUT_S)) perf record -q -a -e sched:sched_waking -o "$OUT/wake.data" \
    -- sleep "$span_wake" > "$OUT/wake.err" 2>&1 || log "perf record of the wake-ups failed: $(tail -n 2 "$OUT/wake.err")"
else
  log "no wake-up span (no tracepoint, or no time left)"
fi

# 3. Sampling.
span_record=$(fit "$span_record")
[[ $span_record != 0.00 ]] || log "warning: no time left in the drawing for the sampling span"
if [[ $span_record == 0.00 ]]; then
  :
elif [[ $cg_mode == none ]]; then
  log "sampling for ${span_record}s: perf record -F $freq (no call graphs)"
else
  log "sampling for ${span_record}s: perf record -F $freq ${cg_args[*]}"
fi
if [[ $span_record != 0.00 ]]; then
  # (the time the sampling stopped: perf's own work on the data comes after it)
  timeout $((PERF_TIMEOUT_S)) perf record -q -F "$freq" "${cg_args[@]}" -p "$pid" -o "$OUT/perf.data" \
    -- sh -c "sleep $span_record; date +%s.%N > '$OUT/record.end'" > "$OUT/record.err" 2>&1 ||
    log "perf record failed: $(tail -n 2 "$OUT/record.err")"
fi
[[ -s $OUT/record.end ]] || echo "$EPOCHREALTIME" > "$OUT/record.end"
late=$(awk -v now="$(cat "$OUT/record.end")" -v end="$draw_end" 'BEGIN { printf "%.2f", now - end }')

kill "$sampler_pid" 2> /dev/null || true
wait "$sampler_pid" 2> /dev/null || true
sampler_pid=""
log "waiting for the load generator (drawing, then the drain)"
code=0
wait "$loadgen_pid" || code=$?
loadgen_pid=""
((code == 0)) || log "the load generator exited $code: $(tail -n 3 "$OUT/load.err")"

# --- reports (before the server stops: node's perf map file is read then) -----------------------
log "perf report"
timeout "$REPORT_TIMEOUT_S" perf report -i "$OUT/perf.data" --no-children --sort dso,symbol --stdio \
  -g none --percent-limit 0.2 > "$OUT/report-symbols.txt" 2> "$OUT/report.err" || true
timeout "$REPORT_TIMEOUT_S" perf report -i "$OUT/perf.data" --no-children --sort comm --stdio -g none \
  > "$OUT/report-comm.txt" 2>> "$OUT/report.err" || true
if [[ $cg_mode != none ]]; then
  timeout "$REPORT_TIMEOUT_S" perf report -i "$OUT/perf.data" --no-children --sort dso,symbol --stdio \
    -g caller,0.5,callee,function,percent --percent-limit 2 \
    > "$OUT/report-callgraph.txt" 2>> "$OUT/report.err" || true
fi
# The wake-ups: waker (context of sched_waking) -> wakee (its pid= field).
if [[ -s $OUT/wake.data ]]; then
  timeout "$REPORT_TIMEOUT_S" perf script -i "$OUT/wake.data" -F comm,pid,tid,trace \
    > "$OUT/wake.txt" 2> "$OUT/wake-script.err" || true
fi
stop_pid "$server_tpid" "$server_pid"
server_tpid="" server_pid=""
remove_data_dir
[[ -z $node_map ]] || rm -f "$node_map"

# --- summary --------------------------------------------------------------------------------------
json=$(grep '^{' "$OUT/load.json" | tail -n1 || true)
[[ -n $json ]] || die "the load generator gave no report (see $OUT/load.err)"
jf() { # a field of the load generator's report ("" when missing or null)
  if command -v jq > /dev/null; then
    jq -r ".$1 // empty" <<< "$json"
  else
    python3 -c 'import json, sys; v = json.loads(sys.argv[1]).get(sys.argv[2]); print("" if v is None else v)' "$json" "$1"
  fi
}
received=$(jf window_deliveries) frames=$(jf window_frames) window_s=$(jf window_s)
wcpu=$(jf server_window_cpu_s) wcs=$(jf server_window_ctx_switches)
wvol=$(jf server_window_voluntary_ctx_switches) wnon=$(jf server_window_nonvoluntary_ctx_switches)
drawing_s=$(jf duration_s) lost=$(jf lost) offered=$(jf offered_per_s) delivered=$(jf delivered_per_s)
# Deliveries per second while drawing (steady): all deliveries come from segments sent then.
rate_d=$(awk -v r="$received" -v d="$drawing_s" 'BEGIN { printf "%.3f", (d > 0 ? r / d : 0) }')
span_deliveries() { awk -v r="$rate_d" -v s="$1" 'BEGIN { printf "%.0f", r * s }'; }
stat_deliveries=$(span_deliveries "$stat_wall")
wake_deliveries=$(span_deliveries "$span_wake")

# stat.csv: value,unit,event,... -> "event value" (not counted / supported: "event -").
stat_value() {
  awk -F, -v e="$1" '$3 == e || $3 ~ "^" e "(:u)?$" { v = $1 } END { print ((v == "" || v ~ /^</) ? "-" : v) }' "$OUT/stat.csv" 2> /dev/null || echo -
}
per() { # per VALUE COUNT SCALE FORMAT
  awk -v v="$1" -v n="$2" -v s="$3" -v f="$4" 'BEGIN { if (v == "-" || v == "" || n + 0 <= 0) print "-"; else printf f "\n", v * s / n }'
}
task_clock_ms=$(stat_value task-clock)
st_cs=$(stat_value context-switches) st_mig=$(stat_value cpu-migrations) st_pf=$(stat_value page-faults)
st_cyc=$(stat_value cycles) st_ins=$(stat_value instructions) st_wk=$(stat_value sched:sched_waking)
wakee=-
if ((wakee_ok)); then
  wakee=$(awk -F, '$3 ~ /sched:sched_waking/ { v = $1 } END { print ((v == "" || v ~ /^</) ? "-" : v) }' "$OUT/wakeups.csv")
fi
ipc=- no_pmu=""
[[ $st_cyc != - ]] || no_pmu=" (not supported here: no hardware counters, as in many VMs)"
if [[ $st_cyc != - && $st_ins != - ]]; then ipc=$(per "$st_ins" "$st_cyc" 1 "%.2f"); fi

# Who woke the server, and whom the server woke, over the wake span.
wake_table() {
  awk -v n="$wake_deliveries" -v spid="$pid" -v lpid="${lpid:-0}" '
    NR == FNR { if ($1 == "S") server[$2] = 1; else if ($1 == "L") loadgen[$2] = 1; next }
    {
      # "  COMM  PID/TID comm=WAKEE pid=WAKEE_TID prio=P target_cpu=C": the waker is the context.
      if (!match($0, / pid=[0-9]+/)) next
      wakee = substr($0, RSTART + 5, RLENGTH - 5)
      ctx = $0; sub(/ comm=.*/, "", ctx); sub(/^ +/, "", ctx); sub(/ +$/, "", ctx)
      ids = ctx; sub(/.* /, "", ids); split(ids, id, "/")
      wcomm = ctx; sub(/ +[0-9]+\/[0-9]+$/, "", wcomm)
      wc = $0; sub(/.* comm=/, "", wc); sub(/ pid=.*/, "", wc)
      if (id[1] == spid) { server[id[2]] = 1; who = "server: " wcomm }
      else if (id[1] == lpid) { loadgen[id[2]] = 1; who = "loadgen: " wcomm }
      else who = wcomm
      ev[NR] = who SUBSEP wakee SUBSEP wc SUBSEP (id[1] == spid)
    }
    END {
      for (i in ev) {
        split(ev[i], e, SUBSEP)
        if (e[2] in server) { into[e[1]]++; total_in++ }
        else if (e[4]) { out[((e[2] in loadgen) ? "loadgen: " : "") e[3]]++; total_out++ }
      }
      rows(into, total_in, "wake-ups of server threads, by waker")
      print ""
      rows(out, total_out, "wake-ups the server caused in other processes, by wakee")
    }
    function rows(a, total, title,   k, m, i, j, key, tmp) {
      printf "| %s | count | per delivery |\n|---|---:|---:|\n", title
      m = 0; for (k in a) key[++m] = k
      for (i = 2; i <= m; i++) for (j = i; j > 1 && a[key[j]] > a[key[j - 1]]; j--) {
        tmp = key[j]; key[j] = key[j - 1]; key[j - 1] = tmp }
      for (i = 1; i <= m && i <= 12; i++)
        printf "| %s | %d | %s |\n", key[i], a[key[i]], (n > 0 ? sprintf("%.4f", a[key[i]] / n) : "-")
      printf "| **all** | %d | %s |\n", total, (n > 0 ? sprintf("%.4f", total / n) : "-")
    }' "$OUT/tids.txt" "$OUT/wake.txt"
}

# Per thread over the counting span, threads of one name together.
thread_table() {
  awk -v hz="$(getconf CLK_TCK)" -v w="$stat_wall" -v n="$stat_deliveries" -v total=$((p1 - p0)) '
    NR == FNR { t[$1] = $2; v[$1] = $3; nv[$1] = $4; next }
    { comm = $0; sub(/^[0-9]+ [0-9]+ [0-9]+ [0-9]+ /, "", comm)
      if (!(comm in seen)) { seen[comm] = 1; order[++k] = comm }
      threads[comm]++
      d = $2 - (($1 in t) ? t[$1] : 0); cpu[comm] += d; sum += d
      vol[comm] += $3 - (($1 in v) ? v[$1] : 0)
      non[comm] += $4 - (($1 in nv) ? nv[$1] : 0) }
    function row(c, ticks, vs, ns, th) {
      printf "| %s | %s | %.1f | %s | %s | %s | %s |\n", c, th, 100 * ticks / hz / w,
        (n > 0 ? sprintf("%.2f", ticks / hz * 1e6 / n) : "-"), vs, ns,
        (n > 0 && vs != "-" ? sprintf("%.4f", (vs + ns) / n) : "-")
    }
    END {
      print "| thread | threads | CPU % of a core | CPU µs/delivery | voluntary cs | nonvoluntary cs | cs/delivery |"
      print "|---|---:|---:|---:|---:|---:|---:|"
      for (i = 2; i <= k; i++) for (j = i; j > 1 && cpu[order[j]] > cpu[order[j - 1]]; j--) {
        tmp = order[j]; order[j] = order[j - 1]; order[j - 1] = tmp }
      for (i = 1; i <= k; i++) { c = order[i]; row(c, cpu[c], vol[c], non[c], threads[c]) }
      if (total - sum > 0) row("(threads that ended during the span)", total - sum, "-", "-", "-")
      row("**process**", total, "-", "-", "-")
    }' "$OUT/threads.before" "$OUT/threads.after"
}

# perf report pads its columns (and adds empty IPC columns): trailing blanks and dashes go.
trim() { sed -E 's/([[:space:]]+-){2}[[:space:]]*$//; s/[[:space:]]+$//'; }

warnings=()
if awk -v l="$late" 'BEGIN { exit !(l > 0) }'; then
  warnings+=("the spans ended ${late} s after the drawing: the sampling span holds some of the drain and the stop (use a longer --duration)")
fi
[[ ${lost:-0} == 0 ]] || warnings+=("$lost deliveries were lost: the server did not keep up, so the span figures (deliveries estimated from the run's rate) are rough")
while IFS= read -r w; do warnings+=("${w#livecanvas-load: }"); done < <(grep '^livecanvas-load: warning' "$OUT/load.err" || true)
git_rev=$(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo "?")
git -C "$ROOT" diff --quiet HEAD -- src 2> /dev/null || git_rev+=" (server sources modified)"

{
  echo "# Profile: $server_name, $workload${rate:+ at $rate/s per sender}, $duration_s s"
  echo
  echo "$(date '+%F %T'), $(nproc) cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), tree at $git_rev"
  echo
  echo "- server: \`$(cat "$OUT/server.cmd")\` (pid $pid)"
  echo "- load: \`$(cat "$OUT/load.cmd")\`"
  echo "- offered $(printf '%.0f' "$offered") seg/s, delivered $(printf '%.0f' "$delivered") deliveries/s, lost $lost, p50 $(jf p50_ms) ms, p99 $(jf p99_ms) ms, loadgen CPU $(printf '%.0f' "$(jf loadgen_cpu_percent)") %"
  echo "- spans inside the drawing: counting ${stat_wall} s (≈ $stat_deliveries deliveries), wake-ups ${span_wake} s (≈ $wake_deliveries), sampling ${span_record} s (perf record -F $freq, call graphs: $cg_mode)"
  for w in "${warnings[@]}"; do echo "- **$w**"; done
  echo
  echo "## Per delivery"
  echo
  echo "| figure | per delivery | total | over |"
  echo "|---|---:|---:|---|"
  echo "| server CPU µs (/proc) | $(per "$wcpu" "$received" 1e6 "%.2f") | $wcpu s | window: drawing + drain, $(printf '%.2f' "$window_s") s, $received deliveries (exact) |"
  echo "| server CPU µs per frame (/proc) | $(per "$wcpu" "$frames" 1e6 "%.2f") per frame | $frames frames | window ($(per "$received" "$frames" 1 "%.2f") deliveries per frame) |"
  echo "| context switches, all threads (/proc) | $(per "$wcs" "$received" 1 "%.4f") | $wcs ($wvol voluntary, $wnon nonvoluntary) | window ($(jf server_window_threads_new) threads came, $(jf server_window_threads_gone) went; a thread's switches go with it) |"
  echo "| task-clock µs (perf stat) | $(per "$task_clock_ms" "$stat_deliveries" 1e3 "%.2f") | $task_clock_ms ms | counting span |"
  echo "| context switches (perf stat) | $(per "$st_cs" "$stat_deliveries" 1 "%.4f") | $st_cs | counting span |"
  echo "| wake-ups of server threads (sched_waking, -a, filtered) | $(per "$wakee" "$stat_deliveries" 1 "%.4f") | $wakee | counting span (the $(wc -w <<< "$tids") threads there at its start) |"
  echo "| wake-ups caused by the server (sched_waking in its threads) | $(per "$st_wk" "$stat_deliveries" 1 "%.4f") | $st_wk | counting span |"
  echo "| cpu-migrations | $(per "$st_mig" "$stat_deliveries" 1 "%.4f") | $st_mig | counting span |"
  echo "| page-faults | $(per "$st_pf" "$stat_deliveries" 1 "%.4f") | $st_pf | counting span |"
  echo "| cycles | $(per "$st_cyc" "$stat_deliveries" 1 "%.0f") | $st_cyc | counting span${no_pmu} |"
  echo "| instructions | $(per "$st_ins" "$stat_deliveries" 1 "%.0f") | $st_ins | counting span (IPC $ipc) |"
  echo
  echo "## Threads (counting span, /proc)"
  echo
  thread_table
  echo
  echo "## Wake-ups (wake-up span, perf record -a -e sched:sched_waking)"
  echo
  if [[ -s $OUT/wake.txt ]]; then wake_table; else echo "(no wake-up record: see wake.err)"; fi
  echo
  echo "## Where the CPU goes: perf report --no-children --sort dso,symbol (top $top)"
  echo
  echo '```'
  grep -v '^#' "$OUT/report-symbols.txt" | grep -v '^$' | head -n "$top" | trim || true
  echo '```'
  echo
  echo "## By thread: perf report --sort comm"
  echo
  echo '```'
  grep -v '^#' "$OUT/report-comm.txt" | grep -v '^$' | head -n 15 | trim || true
  echo '```'
  echo
  echo "Files in ${OUT#"$ROOT"/}/: perf.data (\`perf report -i perf.data\`), report-symbols.txt,"
  echo "report-comm.txt, report-callgraph.txt (callers of the symbols above 2 %), stat.csv,"
  echo "wakeups.csv, wake.data / wake.txt, threads.before/after, load.json, load.err, server.log."
} > "$OUT/summary.md"
cat "$OUT/summary.md"
