#!/usr/bin/env bash
# Side-by-side benchmark: livecanvas (batched and unbatched, storing in SQLite or in memory only)
# against the minimal Node `ws` relay in bench/node-relay, under the same load from
# target/release/livecanvas-load, on 127.0.0.1 only. Each server x workload run starts a fresh
# server (livecanvas: in a fresh temporary --data-dir, removed afterwards), waits for its port, runs
# the load generator, samples the server's CPU time (per thread too), peak RSS and bytes on disk,
# and stops the server. The load generator (--server-pid) also reads the server's CPU time and
# context switches over its drawing window (start of the drawing to the end of the drain), the
# window its deliveries and frames are counted in: hence CPU and context switches per delivery.
#
# Usage: bench/compare.sh [options]
#   --workloads LIST   comma-separated presets: busy-room,many-rooms,join-storm,idle-crowd,smoke
#                      (default: many-rooms,busy-room); W:R runs preset W at R segments/s per
#                      sender (e.g. busy-room:20,many-rooms:10)
#   --duration D       drawing time of each run, e.g. 10s (default 10s; idle-crowd keeps its
#                      preset's 35 s unless --duration is given)
#   --rate R           segments per second per sender, overriding the presets' rates
#   --step W:R1,R2,..  rate-step mode: run workload W at each rate on every server, then print
#                      per server the highest rate with p99 < 50 ms and lost == 0
#   --servers LIST     which of ours-batch,ours,ours-batch-mem,ours-mem,node to run (default:
#                      ours-batch,ours,node). ours-batch and ours store every room in SQLite (the
#                      server's default); the -mem kinds run the same with --storage memory
#   --repeat N         run every workload x server N times, the servers taking turns (default 1)
#   --ours-args "A B"  extra flags for every livecanvas server (e.g. "--flush-interval 1s")
#   --load-args "A B"  extra flags for the load generator, after the preset's (e.g. "--clients 100")
#   --quick            smoke check of the script: preset smoke, 2 s per run (well under a minute)
#   --ours-port P      livecanvas's port (default 18080)
#   --node-port P      the Node relay's port (default 18081)
#   --pin              pin the server to CPU 0 and the load generator to CPU 1 (taskset), so that
#                      neither takes the other's core; default: both float over every core
#   --no-build         do not run cargo build / npm ci first (the binaries must exist)
#   -h, --help         this text
#
# The Markdown table goes to stdout, progress to stderr; every run's JSON (the load generator's
# report plus server, workload, server_cpu_percent, server_peak_rss_mib, storage, disk_bytes,
# server_cpu_us_per_delivery, server_cpu_us_per_frame, ctx_switches_per_delivery, ...)
# is appended to bench/results/compare-<date>.jsonl, and the servers' and load generator's logs are
# kept beside it. When a run has a livecanvas kind with SQLite and the same with memory storage, a
# persistence table compares them (see also bench/persistence.sh).
set -euo pipefail
export LC_ALL=C # a dot in $EPOCHREALTIME and in awk's numbers

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
LOADGEN=${BENCH_LOADGEN:-"$ROOT/target/release/livecanvas-load"} # overridable for testing
SERVER=${BENCH_SERVER:-"$ROOT/target/release/livecanvas"}
RELAY_DIR="$BENCH_DIR/node-relay"
OURS_PORT=18080
NODE_PORT=18081
ALL_WORKLOADS="busy-room many-rooms join-storm idle-crowd smoke"
ALL_SERVERS="ours-batch ours ours-batch-mem ours-mem node"
P99_LIMIT_MS=50
RUN_MARGIN_S=180       # load generator's bound beyond the drawing time (connect phase, drain)

workloads="many-rooms,busy-room"
duration="10s"
duration_given=0
rate=""
step=""
servers="ours-batch,ours,node"
quick=0
pin=0
build=1
repeat=1
ours_args=""
load_args=""

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "compare.sh: $*" >&2; exit 2; }
log() { echo "[compare] $*" >&2; }
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

while (($#)); do
  opt=$1
  case $opt in
    --*=*) set -- "${opt%%=*}" "${opt#*=}" "${@:2}"; continue ;;
    -h | --help) usage; exit 0 ;;
    --quick) quick=1; shift; continue ;;
    --no-build) build=0; shift; continue ;;
    --pin) pin=1; shift; continue ;;
    --workloads | --duration | --rate | --step | --servers | --ours-port | --node-port | --repeat | --ours-args | --load-args)
      (($# >= 2)) || die "$opt needs a value"
      case $opt in
        --workloads) workloads=$2 ;;
        --duration) duration=$2; duration_given=1 ;;
        --rate) rate=$2 ;;
        --step) step=$2 ;;
        --servers) servers=$2 ;;
        --ours-port) OURS_PORT=$2 ;;
        --node-port) NODE_PORT=$2 ;;
        --repeat) repeat=$2 ;;
        --ours-args) ours_args=$2 ;;
        --load-args) load_args=$2 ;;
      esac
      shift 2 ;;
    *) die "unknown option $opt (see --help)" ;;
  esac
done

step_workload="" step_rates=()
if [[ -n $step ]]; then
  [[ $step == *:* ]] || die "--step wants WORKLOAD:R1,R2,... (e.g. many-rooms:5,10,20,30)"
  step_workload=${step%%:*}
  IFS=, read -r -a step_rates <<< "${step#*:}"
  ((${#step_rates[@]})) || die "--step: no rates given"
  workloads=$step_workload
fi
if ((quick)); then
  workloads="smoke"
  ((duration_given)) || duration="2s"
  duration_given=1
fi
IFS=, read -r -a workload_entries <<< "$workloads"
IFS=, read -r -a server_list <<< "$servers"
read -r -a ours_extra <<< "$ours_args"
read -r -a load_extra <<< "$load_args"
# --pin: what runs the server and the load generator (nothing when they float).
server_pin=() loadgen_pin=()
if ((pin)); then
  command -v taskset > /dev/null || die "--pin needs taskset (util-linux)"
  (($(nproc) >= 2)) || die "--pin needs at least 2 CPUs"
  server_pin=(taskset -c 0) loadgen_pin=(taskset -c 1)
fi
((${#workload_entries[@]})) || die "--workloads is empty"
((${#server_list[@]})) || die "--servers is empty"
number_re='^[0-9]+([.][0-9]+)?$'
# workload_list: the presets; workload_rates: each one's rate (empty: --rate, else the preset's).
workload_list=() workload_rates=()
for w in "${workload_entries[@]}"; do
  w_rate=$rate
  if [[ $w == *:* ]]; then
    w_rate=${w#*:} w=${w%%:*}
    [[ $w_rate =~ $number_re ]] || die "--workloads: '$w_rate' is not a rate (W:R)"
  fi
  in_list "$w" "$ALL_WORKLOADS" || die "unknown workload '$w' (one of: $ALL_WORKLOADS)"
  workload_list+=("$w") workload_rates+=("$w_rate")
done
for s in "${server_list[@]}"; do in_list "$s" "$ALL_SERVERS" || die "unknown server '$s' (one of: $ALL_SERVERS)"; done
[[ $repeat =~ ^[1-9][0-9]*$ ]] || die "--repeat must be a positive whole number, got '$repeat'"
for p in "$OURS_PORT" "$NODE_PORT"; do
  if ! [[ $p =~ ^[0-9]+$ ]] || ((p == 0 || p > 65535)); then die "bad port '$p'"; fi
done
[[ $OURS_PORT != "$NODE_PORT" ]] || die "--ours-port and --node-port must differ"
[[ -z $rate || $rate =~ $number_re ]] || die "--rate must be a number, got '$rate'"
for r in "${step_rates[@]}"; do [[ $r =~ $number_re ]] || die "--step: '$r' is not a rate"; done
[[ $duration =~ ^([0-9]+)(ms|s|m)$ ]] || die "--duration must look like 500ms, 10s or 2m, got '$duration'"
case ${BASH_REMATCH[2]} in
  ms) duration_s=$(((BASH_REMATCH[1] + 999) / 1000)) ;;
  s) duration_s=${BASH_REMATCH[1]} ;;
  m) duration_s=$((BASH_REMATCH[1] * 60)) ;;
esac

# --- JSON helpers: jq when installed, python3 otherwise -------------------------------------------
if command -v jq > /dev/null && [[ -z ${BENCH_NO_JQ:-} ]]; then have_jq=1; else have_jq=0; fi

# annotate SERVER WORKLOAD BATCH RATE CPU_PERCENT RSS_MIB WALL_S EXIT ERROR [EXTRA]: reads the
# load generator's JSON object on stdin, prints it on one line with the benchmark's fields added
# (and EXTRA, a JSON object of more fields).
annotate() {
  local extra=${10:-"{}"}
  if ((have_jq)); then
    jq -c --arg server "$1" --arg workload "$2" --argjson batch "$3" --arg rate "$4" \
      --argjson cpu "$5" --argjson rss "$6" --argjson wall "$7" --argjson code "$8" \
      --arg error "$9" --argjson cores "$(nproc)" --arg at "$(date -u +%FT%TZ)" \
      --argjson extra "$extra" \
      '. + {server: $server, workload: $workload, batch: $batch, requested_rate: $rate,
            server_cpu_percent: $cpu, server_peak_rss_mib: $rss, wall_s: $wall,
            loadgen_exit: $code, host_cores: $cores, started_at: $at}
         + $extra + (if $error == "" then {} else {error: $error} end)
      | def per($v; $n; $scale): if $v == null or ($n // 0) <= 0 then null else $v * $scale / $n end;
        . + {server_cpu_us_per_delivery: per(.server_window_cpu_s; .window_deliveries; 1e6),
             server_cpu_us_per_frame: per(.server_window_cpu_s; .window_frames; 1e6),
             ctx_switches_per_delivery: per(.server_window_ctx_switches; .window_deliveries; 1)}'
  else
    python3 -c '
import json, sys
a = sys.argv[1:]
o = json.loads(sys.stdin.read())
o.update(server=a[0], workload=a[1], batch=json.loads(a[2]), requested_rate=a[3],
         server_cpu_percent=json.loads(a[4]), server_peak_rss_mib=json.loads(a[5]),
         wall_s=json.loads(a[6]), loadgen_exit=json.loads(a[7]), host_cores=int(a[10]),
         started_at=a[11])
o.update(json.loads(a[9]))
if a[8]:
    o["error"] = a[8]
def per(v, n, scale=1):
    return None if v is None or not n else v * scale / n
o["server_cpu_us_per_delivery"] = per(o.get("server_window_cpu_s"), o.get("window_deliveries"), 1e6)
o["server_cpu_us_per_frame"] = per(o.get("server_window_cpu_s"), o.get("window_frames"), 1e6)
o["ctx_switches_per_delivery"] = per(o.get("server_window_ctx_switches"), o.get("window_deliveries"))
print(json.dumps(o, separators=(",", ":")))
' "${@:1:9}" "$extra" "$(nproc)" "$(date -u +%FT%TZ)"
  fi
}

# last_object FILE: the last JSON object in the load generator's stdout, on one line (or nothing).
last_object() {
  if ((have_jq)); then
    jq -c -s 'map(objects) | last // empty' "$1" 2> /dev/null && return 0
  else
    python3 -c '
import json, sys
text, dec, pos, last = open(sys.argv[1]).read(), json.JSONDecoder(), 0, None
while True:
    start = text.find("{", pos)
    if start < 0:
        break
    try:
        obj, pos = dec.raw_decode(text, start)
        last = obj
    except ValueError:
        pos = start + 1
if last is not None:
    print(json.dumps(last, separators=(",", ":")))
' "$1" && return 0
  fi
  grep '^{' "$1" | tail -n1 || true
}

# to_tsv: JSON lines on stdin -> one tab-separated row per run (missing values empty).
TSV_FIELDS=(server workload rate offered_per_s delivered_per_s p50_ms p99_ms lost connect_errors
  server_cpu_percent server_peak_rss_mib loadgen_cpu_percent error clients stayed_up join_p99_ms
  storage disk_bytes_live disk_bytes store_cpu_percent disk_written_bytes
  server_cpu_us_per_delivery server_cpu_us_per_frame ctx_switches_per_delivery)
to_tsv() {
  if ((have_jq)); then
    local filter
    filter="[$(printf '.%s,' "${TSV_FIELDS[@]}")] | map(. // \"\" | tostring | gsub(\"[\\t\\n]\"; \" \")) | @tsv"
    filter=${filter/,]/]}
    filter=${filter/.rate,/(.rate \/\/ .requested_rate),}
    jq -r "$filter"
  else
    python3 -c '
import json, sys
fields = sys.argv[1:]
for line in sys.stdin:
    if line.strip():
        o = json.loads(line)
        cell = lambda v: "" if v is None else (json.dumps(v) if isinstance(v, bool) else str(v))
        o["rate"] = o.get("rate", o.get("requested_rate"))
        print("\t".join(cell(o.get(f)).replace("\t", " ").replace("\n", " ") for f in fields))
' "${TSV_FIELDS[@]}"
  fi
}

# --- processes ----------------------------------------------------------------------------------
# start_server KIND LOGFILE: spawn_server (bench/lib.sh) with KIND's command; livecanvas gets a
# fresh temporary data directory ($data_dir).
start_server() {
  local kind=$1 logfile=$2 port cmd storage=sqlite
  case $kind in
    ours | ours-batch | ours-mem | ours-batch-mem)
      port=$OURS_PORT
      [[ $kind == *-mem ]] && storage=memory
      new_data_dir
      cmd=("${server_pin[@]}" env RUST_LOG=warn "$SERVER" --bind "127.0.0.1:$port"
        --storage "$storage" --data-dir "$data_dir" "${LIVECANVAS_BENCH_FLAGS[@]}"
        "${ours_extra[@]}") ;;
    node) port=$NODE_PORT; cmd=("${server_pin[@]}" node "$RELAY_DIR/relay.js" --port "$port") ;;
  esac
  spawn_server "$kind" "$port" $((duration_s + RUN_MARGIN_S + READY_DEADLINE_S + 60)) \
    "$logfile" "${cmd[@]}"
}

cpu_ticks() { # user+system clock ticks of a process
  local stat fields
  stat=$(< "/proc/$1/stat")
  read -r -a fields <<< "${stat##*) }" # fields from the 3rd (state) on: utime is 14th, stime 15th
  echo $((fields[11] + fields[12]))
}
# Bytes the process caused to be written to storage (page cache included), from /proc/PID/io.
written_bytes() { awk '/^write_bytes:/ { print $2 }' "/proc/$1/io" 2> /dev/null || echo 0; }

# thread_ticks PID: one line per thread, "TID TICKS COMM" (user+system; COMM may hold spaces).
thread_ticks() {
  local t stat comm fields
  for t in /proc/"$1"/task/*; do
    stat=$(< "$t/stat") 2> /dev/null || continue
    comm=${stat#*\(} comm=${comm%\)*}
    read -r -a fields <<< "${stat##*) }"
    echo "${t##*/} $((fields[11] + fields[12])) $comm"
  done
}

# thread_cpu_json BEFORE AFTER WALL_S: {"thread name": % of one core, ...} over the run, threads of
# one name added up (threads that ended during the run are missing: the process total has them).
thread_cpu_json() {
  awk -v hz="$CLK_TCK" -v w="$3" '
    NR == FNR { before[$1] = $2; next }
    { comm = $0; sub(/^[0-9]+ [0-9]+ /, "", comm); gsub(/["\\]/, "", comm)
      sum[comm] += $2 - (($1 in before) ? before[$1] : 0) }
    END { printf "{"; sep = ""
          for (c in sum) { printf "%s\"%s\":%.1f", sep, c, 100 * sum[c] / hz / w; sep = "," }
          printf "}" }' "$1" "$2"
}


CLK_TCK=$(getconf CLK_TCK)
stamp=$(date +%Y%m%d-%H%M%S)
RESULTS_DIR="$BENCH_DIR/results"
JSONL="$RESULTS_DIR/compare-$stamp.jsonl"
LOG_DIR="$RESULTS_DIR/compare-$stamp.logs"

# run_one KIND WORKLOAD RATE [REP]: one fresh server, one load run, one JSON line appended to
# $JSONL.
run_one() {
  local kind=$1 workload=$2 run_rate=$3 rep=${4:-1} port batch=false tag args json="" error="" code=0
  local t0 t1 c0 c1 cpu rss wall extra=() storage=null threads="{}" disk_live=null disk_after=null
  local store_cpu=null more w0 written=null
  tag="$kind-$workload${run_rate:+-r$run_rate}"
  ((repeat > 1)) && tag+="-$rep"
  case $kind in ours-batch | ours-batch-mem) batch=true ;; esac
  case $kind in ours | ours-batch) storage='"sqlite"' ;; ours-mem | ours-batch-mem) storage='"memory"' ;; esac
  if [[ $kind == node ]]; then port=$NODE_PORT; else port=$OURS_PORT; fi
  args=(--url "ws://127.0.0.1:$port/ws" --preset "$workload" --json)
  [[ -n $run_rate ]] && args+=(--rate "$run_rate")
  if ((duration_given)) || [[ $workload != idle-crowd ]]; then args+=(--duration "$duration"); fi
  [[ $batch == true ]] && args+=(--batch)
  args+=("${load_extra[@]}")
  if [[ $workload == idle-crowd ]] && ((idle_clients)); then extra=(--clients "$idle_clients"); fi
  log "$tag: livecanvas-load ${args[*]} ${extra[*]}"

  if ! start_server "$kind" "$LOG_DIR/$tag.server.log"; then
    stop_pid "$server_tpid" "$server_pid"
    server_tpid="" server_pid=""
    remove_data_dir
    echo '{}' | annotate "$kind" "$workload" "$batch" "$run_rate" null null null null \
      "server did not start" >> "$JSONL"
    return 0
  fi
  # The load generator reads the server's CPU time and context switches itself, over the same
  # window as it counts deliveries and frames in (drawing start to end of drain).
  args+=(--server-pid "$server_pid")
  thread_ticks "$server_pid" > "$LOG_DIR/$tag.threads.before"
  w0=$(written_bytes "$server_pid")
  c0=$(cpu_ticks "$server_pid")
  t0=$EPOCHREALTIME
  timeout --kill-after=5 $((duration_s + RUN_MARGIN_S)) "${loadgen_pin[@]}" "$LOADGEN" "${args[@]}" "${extra[@]}" \
    > "$LOG_DIR/$tag.loadgen.out" 2> "$LOG_DIR/$tag.loadgen.err" &
  loadgen_pid=$!
  wait "$loadgen_pid" || code=$?
  loadgen_pid=""
  t1=$EPOCHREALTIME
  if kill -0 "$server_pid" 2> /dev/null; then
    c1=$(cpu_ticks "$server_pid")
    rss=$(awk -v k="$(peak_rss_kib "$server_pid")" 'BEGIN { printf "%.1f", k / 1024 }')
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    cpu=$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v w="$wall" 'BEGIN { printf "%.1f", 100 * d / hz / w }')
    written=$(($(written_bytes "$server_pid") - w0))
    thread_ticks "$server_pid" > "$LOG_DIR/$tag.threads.after"
    threads=$(thread_cpu_json "$LOG_DIR/$tag.threads.before" "$LOG_DIR/$tag.threads.after" "$wall")
    [[ $kind == *-mem ]] || store_cpu=$(echo "$threads" | sed -n 's/.*"livecanvas-stor":\([0-9.]*\).*/\1/p')
    [[ -n $store_cpu ]] || store_cpu=null
  else
    cpu=null rss=null wall=null error="server died during the run"
  fi
  [[ -n $data_dir ]] && disk_live=$(dir_bytes "$data_dir")
  stop_pid "$server_tpid" "$server_pid"
  server_tpid="" server_pid=""
  if [[ -n $data_dir ]]; then
    disk_after=$(dir_bytes "$data_dir")
    ls -l "$data_dir" > "$LOG_DIR/$tag.data-dir.txt" 2>&1 || true
    remove_data_dir
  fi
  more="{\"storage\":$storage,\"repeat\":$rep,\"server_threads_cpu_percent\":$threads,"
  more+="\"store_cpu_percent\":$store_cpu,\"disk_bytes_live\":$disk_live,\"disk_bytes\":$disk_after,"
  more+="\"disk_written_bytes\":$written,\"ours_args\":\"${ours_args//\"/}\","
  more+="\"load_args\":\"${load_args//\"/}\",\"pinned\":$( ((pin)) && echo true || echo false)}"

  json=$(last_object "$LOG_DIR/$tag.loadgen.out")
  if [[ -z $json ]]; then
    if ((code == 124)); then
      error="${error:+$error; }load generator timed out"
    else
      error="${error:+$error; }load generator exited $code without a report"
    fi
    tail -n 5 "$LOG_DIR/$tag.loadgen.err" >&2 || true
    json='{}'
  fi
  if ! echo "$json" | annotate "$kind" "$workload" "$batch" "$run_rate" "$cpu" "$rss" "$wall" \
    "$code" "$error" "$more" >> "$JSONL"; then
    echo '{}' | annotate "$kind" "$workload" "$batch" "$run_rate" "$cpu" "$rss" "$wall" "$code" \
      "unparsable load generator output" "$more" >> "$JSONL"
  fi
}

# --- the table ----------------------------------------------------------------------------------
AWK_COMMON='
function name(k) { return k == "ours-batch" ? "livecanvas (batch=1)" : k == "ours" ? "livecanvas" : k == "ours-batch-mem" ? "livecanvas (batch=1, memory)" : k == "ours-mem" ? "livecanvas (memory)" : k == "node" ? "node ws relay" : k }
function num(x, fmt) { return x == "" ? "-" : sprintf(fmt, x) }
'
print_table() {
  echo "| server | workload | rate/sender | offered seg/s | delivered seg/s | p50 ms | p99 ms | lost | conn err | clients up | join p99 ms | server CPU % | peak RSS MiB | loadgen CPU % | server CPU µs/delivery | server CPU µs/frame | ctx switches/delivery |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  to_tsv < "$JSONL" | awk -F'\t' "$AWK_COMMON"'{
    if ($13 != "") { printf "| %s | %s | %s | failed: %s ||||||||||||||\n", name($1), $2, num($3, "%s"), $13; next }
    up = $15 == "" ? "-" : $14 == "" ? $15 : $15 "/" $14
    printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", name($1), $2,
      num($3, "%g"), num($4, "%.0f"), num($5, "%.0f"), num($6, "%.2f"), num($7, "%.2f"),
      num($8, "%d"), num($9, "%d"), up, num($16, "%.1f"), num($10, "%.0f"), num($11, "%.1f"),
      num($12, "%.0f"), num($22, "%.2f"), num($23, "%.2f"), num($24, "%.3f") }'
}

print_ratios() { # ours / node for delivered/s and p99, per workload (and rate)
  to_tsv < "$JSONL" | awk -F'\t' "$AWK_COMMON"'
    $13 == "" { key = $2 SUBSEP $3; d[$1, key] = $5; p[$1, key] = $7; c[$1, key] = $22; if (!(key in seen)) { seen[key] = 1; keys[++n] = key } }
    END {
      for (i = 1; i <= n; i++) {
        split(keys[i], kw, SUBSEP)
        if (!(("node", keys[i]) in d)) continue
        for (j = 1; j <= 2; j++) {
          k = j == 1 ? "ours-batch" : "ours"
          if (!((k, keys[i]) in d)) continue
          dr = d["node", keys[i]] > 0 ? sprintf("%.3g", d[k, keys[i]] / d["node", keys[i]]) : "-"
          pr = p["node", keys[i]] > 0 ? sprintf("%.3g", p[k, keys[i]] / p["node", keys[i]]) : "-"
          cr = c["node", keys[i]] > 0 && c[k, keys[i]] != "" ? sprintf("%.3g", c[k, keys[i]] / c["node", keys[i]]) : "-"
          if (dr == "-" && pr == "-") continue
          if (!header++) {
            print ""
            print "| workload | rate/sender | ours | delivered/s ours / node | p99 ours / node | CPU per delivery ours / node |"
            print "|---|---:|---|---:|---:|---:|"
          }
          printf "| %s | %s | %s | %s | %s | %s |\n", kw[1], num(kw[2], "%g"), name(k), dr, pr, cr
        }
      }
    }'
}

# print_persistence: each livecanvas kind with SQLite against the same kind with --storage memory,
# per workload and rate (repeats averaged).
print_persistence() {
  to_tsv < "$JSONL" | awk -F'\t' "$AWK_COMMON"'
    function mib(x) { return x == "" ? "-" : sprintf("%.1f", x / 1048576) }
    $13 == "" && $1 ~ /^ours/ {
      base = $1; sub(/-mem$/, "", base)
      key = $2 SUBSEP $3 SUBSEP base
      if (!(key in seen)) { seen[key] = 1; keys[++n] = key }
      k = key SUBSEP $1
      runs[k]++; off[k] += $4; del[k] += $5; p50[k] += $6; p99[k] += $7; lost[k] += $8
      cpu[k] += $10; rss[k] += $11; live[k] += $18; after[k] += $19; store[k] += $20; wr[k] += $21
      if ($20 != "") hasstore[k] = 1
    }
    END {
      for (i = 1; i <= n; i++) {
        split(keys[i], kw, SUBSEP)
        s = keys[i] SUBSEP kw[3]; m = keys[i] SUBSEP kw[3] "-mem"
        if (!((s in runs) && (m in runs))) continue
        if (!header++) {
          print ""
          print "| workload | rate/sender | server | storage | runs | offered seg/s | delivered seg/s | p50 ms | p99 ms | lost | server CPU % | store thread CPU % | peak RSS MiB | MiB written | disk MiB at the end / after stop |"
          print "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        }
        for (j = 1; j <= 2; j++) {
          k = j == 1 ? s : m; c = runs[k]
          printf "| %s | %s | %s | %s | %d | %.0f | %.0f | %.2f | %.2f | %d | %.0f | %s | %.1f | %s | %s |\n",
            kw[1], num(kw[2], "%g"), name(kw[3]), j == 1 ? "sqlite" : "memory", c, off[k] / c,
            del[k] / c, p50[k] / c, p99[k] / c, lost[k] / c, cpu[k] / c,
            (k in hasstore) ? sprintf("%.1f", store[k] / c) : "-", rss[k] / c, mib(wr[k] / c),
            j == 1 ? mib(live[k] / c) " / " mib(after[k] / c) : "-"
        }
        ratio[i] = sprintf("| %s | %s | %s | %s | %s | %s | %s |", kw[1], num(kw[2], "%g"), name(kw[3]),
          del[m] > 0 ? sprintf("%.3f", (del[s] / runs[s]) / (del[m] / runs[m])) : "-",
          p50[m] > 0 ? sprintf("%.2f", (p50[s] / runs[s]) / (p50[m] / runs[m])) : "-",
          p99[m] > 0 ? sprintf("%.2f", (p99[s] / runs[s]) / (p99[m] / runs[m])) : "-",
          cpu[m] > 0 ? sprintf("%.3f", (cpu[s] / runs[s]) / (cpu[m] / runs[m])) : "-")
      }
      if (!header) exit
      print ""
      print "| workload | rate/sender | server | delivered/s sqlite / memory | p50 sqlite / memory | p99 sqlite / memory | server CPU sqlite / memory |"
      print "|---|---:|---|---:|---:|---:|---:|"
      for (i = 1; i <= n; i++) if (i in ratio) print ratio[i]
    }'
}

print_step_summary() {
  echo "| server | highest rate/sender with p99 < $P99_LIMIT_MS ms and lost == 0 |"
  echo "|---|---:|"
  to_tsv < "$JSONL" | awk -F'\t' -v limit="$P99_LIMIT_MS" "$AWK_COMMON"'
    { if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1; best[$1] = "" } }
    $13 == "" && $7 != "" && $7 + 0 < limit && $8 != "" && $8 + 0 == 0 {
      if (best[$1] == "" || $3 + 0 > best[$1] + 0) best[$1] = $3 }
    END { for (i = 1; i <= n; i++) printf "| %s | %s |\n", name(order[i]), best[order[i]] == "" ? "none" : num(best[order[i]], "%g") }'
}

# --- main ---------------------------------------------------------------------------------------
cd "$ROOT"
if ((build)); then
  log "building: cargo build --release -p livecanvas -p livecanvas-load"
  timeout 1800 cargo build --release -p livecanvas -p livecanvas-load >&2 ||
    die "cargo build failed (use --no-build to run with existing binaries)"
  if [[ ! -d $RELAY_DIR/node_modules/ws ]]; then
    log "installing the relay's dependencies: npm ci"
    (cd "$RELAY_DIR" && timeout 300 npm ci --no-audit --no-fund >&2) || die "npm ci failed in $RELAY_DIR"
  fi
fi
[[ -x $LOADGEN ]] || die "$LOADGEN not found (cargo build --release -p livecanvas-load)"
for s in "${server_list[@]}"; do
  case $s in
    ours*) [[ -x $SERVER ]] || die "$SERVER not found (cargo build --release --bin livecanvas)" ;;
    node) [[ -d $RELAY_DIR/node_modules/ws ]] || die "run npm ci in $RELAY_DIR first" ;;
  esac
done

raise_open_files
idle_clients=0
if in_list idle-crowd "${workload_list[*]}" && (($(idle_clients_allowed) < IDLE_CLIENTS)); then
  idle_clients=$(idle_clients_allowed)
  log "open-file limit is $nofile: idle-crowd runs with --clients $idle_clients instead of $IDLE_CLIENTS"
fi

mkdir -p "$LOG_DIR"
log "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), open files $nofile"
log "results: $JSONL (logs in $LOG_DIR)"

if [[ -n $step ]]; then
  for s in "${server_list[@]}"; do
    for r in "${step_rates[@]}"; do run_one "$s" "$step_workload" "$r"; done
  done
else
  for i in "${!workload_list[@]}"; do
    for ((r = 1; r <= repeat; r++)); do
      for s in "${server_list[@]}"; do run_one "$s" "${workload_list[$i]}" "${workload_rates[$i]}" "$r"; done
    done
  done
fi

echo
if in_list node "${server_list[*]}"; then
  echo "livecanvas vs a Node ws relay, $(date +%F), $(nproc) cores, load generator on the same machine"
else
  echo "livecanvas (${server_list[*]}), $(date +%F), $(nproc) cores, load generator on the same machine"
fi
echo
print_table
print_ratios
print_persistence
if [[ -n $step ]]; then
  echo
  print_step_summary
fi
echo
echo "Raw results: ${JSONL#"$ROOT"/}"
