#!/usr/bin/env bash
# What a cluster costs: the same broadcast load (target/release/livecanvas-load) against one
# livecanvas without Redis (today's single node, SQLite), one node with Redis (--redis-url) and two
# nodes sharing one Redis, on 127.0.0.1 only. The script starts its own redis-server (on a free
# port, in a temporary --dir, append-only file fsynced every second, no RDB snapshots), emptied
# (FLUSHALL) before each run; every node is a fresh livecanvas process on a free port with a fresh
# temporary --data-dir and lib.sh's raised limits. With several nodes the load generator spreads
# every room's clients over the nodes' URLs (--url U1,U2: a room's members take turns over them),
# and sums the nodes' CPU time over its window (--server-pid P1,P2). Redis is read before and
# after: INFO commandstats (every command, those run inside scripts included) and its process's CPU
# time in /proc, per stroke sent (a stroke is one segment a client drew).
#
# Usage: bench/cluster.sh [options]
#   --workloads LIST   presets of livecanvas-load (default: busy-room,many-rooms); W:R runs preset
#                      W at R segments/s per sender (e.g. busy-room:20,many-rooms:3)
#   --duration D       drawing time of each run, e.g. 10s (default 10s)
#   --rate R           segments per second per sender, overriding the presets' rates
#   --modes LIST       which setups to run, in order (default: single,redis-1,redis-2):
#                        single    one node, no Redis (SQLite in its --data-dir)
#                        redis-N   N nodes (N >= 1) sharing the script's Redis
#                        single-N  N independent nodes without Redis (N >= 2): a check of the
#                                  script and of the spreading only; the deliveries between nodes
#                                  are lost and each node's clientCount is its own
#   --repeat N         every workload x mode N times, the modes taking turns (default 1)
#   --unbatched        clients without ?batch=1 (default: batched, as the page is)
#   --ours-args "A B"  extra flags for every livecanvas node
#   --load-args "A B"  extra flags for the load generator, after the preset's
#   --no-build         do not run cargo build first (the binaries must exist)
#   -h, --help         this text
#
# Environment: BENCH_SERVER, BENCH_LOADGEN (other binaries, e.g. copies that a cargo build cannot
# swap during the run), REDIS_SERVER (default /usr/bin/redis-server), REDIS_CLI (default
# /usr/bin/redis-cli).
#
# The Markdown tables go to stdout, progress to stderr. Every run's JSON (the load generator's
# report plus mode, nodes, node pids and ports, the Redis figures: redis_commands,
# redis_script_calls, redis_cpu_s, redis_commandstats, the same *_drawing from the end of the
# connect phase on, and the ratios) is appended to bench/results/cluster-<date>-<time>.jsonl; the
# nodes', Redis's and the load generator's output go beside it (.logs/).
set -euo pipefail
export LC_ALL=C # a dot in $EPOCHREALTIME and in awk's numbers

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
LOADGEN=${BENCH_LOADGEN:-"$ROOT/target/release/livecanvas-load"}
SERVER=${BENCH_SERVER:-"$ROOT/target/release/livecanvas"}
REDIS_SERVER=${REDIS_SERVER:-/usr/bin/redis-server}
REDIS_CLI=${REDIS_CLI:-/usr/bin/redis-cli}
ALL_WORKLOADS="busy-room many-rooms join-storm smoke"
RUN_MARGIN_S=180 # load generator's bound beyond the drawing time (connect phase, drain)

workloads="busy-room,many-rooms"
duration="10s"
rate=""
modes="single,redis-1,redis-2"
repeat=1
batch=1
build=1
ours_args=""
load_args=""

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "cluster.sh: $*" >&2; exit 2; }
log() { echo "[cluster] $*" >&2; }
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

while (($#)); do
  opt=$1
  case $opt in
    --*=*) set -- "${opt%%=*}" "${opt#*=}" "${@:2}"; continue ;;
    -h | --help) usage; exit 0 ;;
    --no-build) build=0; shift; continue ;;
    --unbatched) batch=0; shift; continue ;;
    --workloads | --duration | --rate | --modes | --repeat | --ours-args | --load-args)
      (($# >= 2)) || die "$opt needs a value"
      case $opt in
        --workloads) workloads=$2 ;;
        --duration) duration=$2 ;;
        --rate) rate=$2 ;;
        --modes) modes=$2 ;;
        --repeat) repeat=$2 ;;
        --ours-args) ours_args=$2 ;;
        --load-args) load_args=$2 ;;
      esac
      shift 2 ;;
    *) die "unknown option $opt (see --help)" ;;
  esac
done

IFS=, read -r -a workload_entries <<< "$workloads"
IFS=, read -r -a mode_list <<< "$modes"
read -r -a ours_extra <<< "$ours_args"
read -r -a load_extra <<< "$load_args"
((${#workload_entries[@]})) || die "--workloads is empty"
((${#mode_list[@]})) || die "--modes is empty"
number_re='^[0-9]+([.][0-9]+)?$'
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
need_redis=0
for m in "${mode_list[@]}"; do
  case $m in
    single) ;;
    redis-[1-9] | redis-[1-9][0-9]) need_redis=1 ;;
    single-[2-9] | single-[1-9][0-9]) ;;
    *) die "unknown mode '$m' (single, redis-N, single-N)" ;;
  esac
done
[[ $repeat =~ ^[1-9][0-9]*$ ]] || die "--repeat must be a positive whole number, got '$repeat'"
[[ -z $rate || $rate =~ $number_re ]] || die "--rate must be a number, got '$rate'"
[[ $duration =~ ^([0-9]+)(ms|s|m)$ ]] || die "--duration must look like 500ms, 10s or 2m, got '$duration'"
case ${BASH_REMATCH[2]} in
  ms) duration_s=$(((BASH_REMATCH[1] + 999) / 1000)) ;;
  s) duration_s=${BASH_REMATCH[1]} ;;
  m) duration_s=$((BASH_REMATCH[1] * 60)) ;;
esac
command -v python3 > /dev/null || die "python3 is needed (the JSON and the tables)"

# --- processes ----------------------------------------------------------------------------------
# Several servers at once: lib.sh's spawn_server and new_data_dir handle one (server_tpid,
# server_pid, data_dir); each is moved into these arrays as soon as it is started.
node_tpids=() node_pids=() node_ports=() node_dirs=()
redis_tpid="" redis_pid="" redis_port="" redis_dir=""

stop_nodes() {
  local i
  for i in "${!node_tpids[@]}"; do kill -TERM "${node_tpids[$i]}" 2> /dev/null || true; done
  for i in "${!node_tpids[@]}"; do stop_pid "${node_tpids[$i]}" "${node_pids[$i]}"; done
  for i in "${!node_dirs[@]}"; do
    data_dir=${node_dirs[$i]}
    remove_data_dir
  done
  node_tpids=() node_pids=() node_ports=() node_dirs=()
}

cleanup_cluster() {
  stop_nodes
  cleanup # lib.sh: the load generator and anything left in server_tpid/data_dir
  stop_pid "$redis_tpid" "$redis_pid"
  redis_tpid="" redis_pid=""
  [[ -n $redis_dir && $redis_dir == "${TMPDIR:-/tmp}"/livecanvas-bench-redis.* ]] && rm -rf -- "$redis_dir"
  redis_dir=""
}
trap cleanup_cluster EXIT

start_redis() {
  redis_port=$(free_port)
  redis_dir=$(mktemp -d "${TMPDIR:-/tmp}/livecanvas-bench-redis.XXXXXX")
  # Bounded like the nodes: it cannot outlive a killed script by long.
  local bound=$(((duration_s + RUN_MARGIN_S + READY_DEADLINE_S + 60) * ${#workload_list[@]} * ${#mode_list[@]} * repeat + 600))
  spawn_server redis-server "$redis_port" "$bound" "$LOG_DIR/redis.log" \
    "$REDIS_SERVER" --port "$redis_port" --bind 127.0.0.1 --dir "$redis_dir" --save '' \
    --appendonly yes --appendfsync everysec --daemonize no ||
    die "redis-server did not start (see $LOG_DIR/redis.log)"
  redis_tpid=$server_tpid redis_pid=$server_pid
  server_tpid="" server_pid=""
  log "redis-server $("$REDIS_SERVER" --version | sed -n 's/.* v=\([^ ]*\).*/\1/p') pid $redis_pid on 127.0.0.1:$redis_port (dir $redis_dir)"
}

redis() { timeout 10 "$REDIS_CLI" -h 127.0.0.1 -p "$redis_port" "$@"; }

# start_node NAME LOGFILE REDIS(0/1) INDEX: one livecanvas on a free port, fresh data directory.
start_node() {
  local name=$1 logfile=$2 with_redis=$3 index=$4 port cmd
  port=$(free_port) || return 1
  new_data_dir
  node_dirs+=("$data_dir")
  cmd=(env RUST_LOG=warn "$SERVER" --bind "127.0.0.1:$port" --data-dir "$data_dir"
    "${LIVECANVAS_BENCH_FLAGS[@]}")
  if ((with_redis)); then
    cmd+=(--redis-url "redis://127.0.0.1:$redis_port/0")
    ((has_node_id)) && cmd+=(--node-id "bench-$index")
  else
    cmd+=(--storage sqlite)
  fi
  cmd+=("${ours_extra[@]}")
  data_dir=""
  if ! spawn_server "$name" "$port" $((duration_s + RUN_MARGIN_S + READY_DEADLINE_S + 60)) \
    "$logfile" "${cmd[@]}"; then
    [[ -z $server_tpid ]] || node_tpids+=("$server_tpid") node_pids+=("$server_pid")
    server_tpid="" server_pid=""
    return 1
  fi
  node_tpids+=("$server_tpid") node_pids+=("$server_pid") node_ports+=("$port")
  server_tpid="" server_pid=""
}

cpu_ticks() { # user+system clock ticks of a process
  local stat fields
  stat=$(< "/proc/$1/stat")
  read -r -a fields <<< "${stat##*) }" # fields from the 3rd (state) on: utime is 14th, stime 15th
  echo $((fields[11] + fields[12]))
}
nodes_ticks() { # the nodes' ticks added up
  local pid sum=0
  for pid in "${node_pids[@]}"; do sum=$((sum + $(cpu_ticks "$pid"))); done
  echo "$sum"
}

# machine_busy_ticks: the whole machine's busy time so far (all cores), in ticks, from /proc/stat.
machine_busy_ticks() {
  awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}
# children_ticks VAR: sets VAR to the CPU time of this script's waited-for children so far (the
# load generator under `timeout`, redis-cli, ...), in ticks, from the `times` builtin (run in this
# shell: in a $(...) subshell it would see the subshell's children only).
children_ticks() {
  local t
  times > "$LOG_DIR/.times"
  t=$(tail -n1 "$LOG_DIR/.times")
  printf -v "$1" '%s' "$(awk -v t="$t" -v hz="$CLK_TCK" 'BEGIN {
    n = split(t, f, " "); s = 0
    for (i = 1; i <= n; i++) { m = f[i]; sub(/s$/, "", m); split(m, ms, "m"); s += ms[1] * 60 + ms[2] }
    printf "%d", s * hz + 0.5 }')"
}

# redis_snapshot FILE: Redis's commandstats (one cmdstat_ line per command) and its CPU ticks.
redis_snapshot() {
  { redis info commandstats | tr -d '\r' | grep '^cmdstat_' || true
    echo "cpu_ticks:$(cpu_ticks "$redis_pid")"; } > "$1"
}

# connect_done FILE CLIENTS: true once the load generator's stderr has its last connect line (the
# one where joined + errors = clients: the drawing starts 100 ms later).
connect_done() {
  local line
  line=$(grep -a '^\[connect' "$1" 2> /dev/null | tail -n1) || return 1
  [[ $line =~ joined\ ([0-9]+)/([0-9]+)\ errors\ ([0-9]+) ]] || return 1
  ((BASH_REMATCH[1] + BASH_REMATCH[3] >= BASH_REMATCH[2]))
}

CLK_TCK=$(getconf CLK_TCK)
stamp=$(date +%Y%m%d-%H%M%S)
RESULTS_DIR="$BENCH_DIR/results"
JSONL="$RESULTS_DIR/cluster-$stamp.jsonl"
LOG_DIR="$RESULTS_DIR/cluster-$stamp.logs"

# annotate LOADGEN_OUT FIELDS_JSON SNAP_DIR: the load generator's last JSON object with FIELDS and
# the Redis figures (from SNAP_DIR/redis.{before,drawing,after}, when there) added; one line.
annotate() {
  python3 - "$@" << 'EOF'
import json, os, sys

out, fields, snaps = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
report = {}
try:
    text, dec, pos = open(out).read(), json.JSONDecoder(), 0
    while True:
        start = text.find("{", pos)
        if start < 0:
            break
        try:
            obj, pos = dec.raw_decode(text, start)
            report = obj
        except ValueError:
            pos = start + 1
except OSError:
    pass
report.update(fields)
if not report.get("sent") and "error" not in report:
    report["error"] = "no load generator report"

def read(name):
    path = os.path.join(snaps, name)
    if not os.path.exists(path):
        return None
    calls, ticks = {}, None
    for line in open(path):
        line = line.strip()
        if line.startswith("cmdstat_"):
            name_, _, rest = line.partition(":")
            stats = dict(kv.split("=", 1) for kv in rest.split(",") if "=" in kv)
            calls[name_[len("cmdstat_"):]] = int(stats.get("calls", 0))
        elif line.startswith("cpu_ticks:"):
            ticks = int(line.split(":", 1)[1])
    return calls, ticks

def per(v, n, scale=1.0):
    return None if v is None or not n else v * scale / n

def figures(a, b, suffix):
    if a is None or b is None:
        return
    (c0, t0), (c1, t1) = a, b
    delta = {k: v - c0.get(k, 0) for k, v in c1.items() if v - c0.get(k, 0) > 0}
    # INFO itself (this script's readings) is not the nodes' doing.
    delta.pop("info", None)
    commands = sum(delta.values())
    scripts = delta.get("evalsha", 0) + delta.get("eval", 0) + delta.get("evalsha_ro", 0) + delta.get("eval_ro", 0)
    cpu_s = None if t0 is None or t1 is None else (t1 - t0) / hz
    sent = report.get("sent")
    report.update({
        "redis_commandstats" + suffix: delta,
        "redis_commands" + suffix: commands,
        "redis_script_calls" + suffix: scripts,
        "redis_cpu_s" + suffix: cpu_s,
        "redis_commands_per_stroke" + suffix: per(commands, sent),
        "redis_round_trips_per_stroke" + suffix: per(scripts, sent),
        "redis_cpu_us_per_stroke" + suffix: per(cpu_s, sent, 1e6),
    })

hz = float(fields.get("clk_tck") or 100)
before, drawing, after = read("redis.before"), read("redis.drawing"), read("redis.after")
figures(before, after, "")
figures(drawing, after, "_drawing")
report["server_cpu_us_per_delivery"] = per(report.get("server_window_cpu_s"), report.get("window_deliveries"), 1e6)
report["ctx_switches_per_delivery"] = per(report.get("server_window_ctx_switches"), report.get("window_deliveries"))
print(json.dumps(report, separators=(",", ":")))
EOF
}

# run_one MODE WORKLOAD RATE REP: fresh nodes (and an emptied Redis), one load run, one JSON line.
run_one() {
  local mode=$1 workload=$2 run_rate=$3 rep=$4 nodes with_redis=0 tag args urls="" pids="" i
  local code=0 error="" t0 t1 c0 c1 wall cpu=null snaps fields drawing_taken=0 clients_joined
  local m0 m1 k0 k1 r0=0 r1=0 other=null
  case $mode in
    single) nodes=1 ;;
    redis-*) nodes=${mode#redis-} with_redis=1 ;;
    single-*) nodes=${mode#single-} ;;
  esac
  tag="$mode-$workload${run_rate:+-r$run_rate}"
  ((repeat > 1)) && tag+="-$rep"
  snaps="$LOG_DIR/$tag.redis"
  fields="{\"mode\":\"$mode\",\"nodes\":$nodes,\"redis\":$( ((with_redis)) && echo true || echo false),"
  fields+="\"workload\":\"$workload\",\"requested_rate\":\"$run_rate\",\"repeat\":$rep,"
  fields+="\"clk_tck\":$CLK_TCK,\"host_cores\":$(nproc),\"started_at\":\"$(date -u +%FT%TZ)\","
  fields+="\"ours_args\":\"${ours_args//\"/}\",\"load_args\":\"${load_args//\"/}\""

  if ((with_redis)); then
    if ((!has_redis_url)); then
      log "$tag: skipped: $SERVER has no --redis-url (cluster mode not built in)"
      annotate /dev/null "$fields,\"error\":\"server without --redis-url\"}" /nonexistent >> "$JSONL"
      return 0
    fi
    redis flushall > /dev/null || die "redis-cli flushall failed"
  fi
  for ((i = 0; i < nodes; i++)); do
    if ! start_node "$tag node $i" "$LOG_DIR/$tag.node$i.log" "$with_redis" "$i"; then
      stop_nodes
      annotate /dev/null "$fields,\"error\":\"node $i did not start\"}" /nonexistent >> "$JSONL"
      return 0
    fi
    urls+="${urls:+,}ws://127.0.0.1:${node_ports[$i]}/ws"
    pids+="${pids:+,}${node_pids[$i]}"
  done
  args=(--url "$urls" --preset "$workload" --json --duration "$duration" --server-pid "$pids")
  [[ -n $run_rate ]] && args+=(--rate "$run_rate")
  ((batch)) && args+=(--batch)
  args+=("${load_extra[@]}")
  log "$tag: livecanvas-load ${args[*]}"

  mkdir -p "$snaps"
  ((with_redis)) && redis_snapshot "$snaps/redis.before"
  c0=$(nodes_ticks) m0=$(machine_busy_ticks)
  children_ticks k0
  ((with_redis)) && r0=$(cpu_ticks "$redis_pid")
  t0=$EPOCHREALTIME
  timeout --kill-after=5 $((duration_s + RUN_MARGIN_S)) "$LOADGEN" "${args[@]}" \
    > "$LOG_DIR/$tag.loadgen.out" 2> "$LOG_DIR/$tag.loadgen.err" &
  loadgen_pid=$!
  # Redis again once the connect phase is over: the figures *_drawing leave the joins out.
  if ((with_redis)); then
    while kill -0 "$loadgen_pid" 2> /dev/null; do
      if connect_done "$LOG_DIR/$tag.loadgen.err"; then
        redis_snapshot "$snaps/redis.drawing"
        drawing_taken=1
        break
      fi
      sleep 0.02
    done
  fi
  wait "$loadgen_pid" || code=$?
  loadgen_pid=""
  t1=$EPOCHREALTIME
  m1=$(machine_busy_ticks)
  children_ticks k1
  ((with_redis)) && r1=$(cpu_ticks "$redis_pid")
  if ((with_redis)); then
    redis_snapshot "$snaps/redis.after"
    ((drawing_taken)) || log "$tag: the end of the connect phase was not seen: no *_drawing figures"
  fi
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  for i in "${!node_pids[@]}"; do
    kill -0 "${node_pids[$i]}" 2> /dev/null || error="node $i died during the run"
  done
  if [[ -z $error ]]; then
    c1=$(nodes_ticks)
    cpu=$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v w="$wall" 'BEGIN { printf "%.1f", 100 * d / hz / w }')
    # Everything else the machine did meanwhile (builds, tests, other benchmarks): the whole
    # machine's busy time less the nodes', Redis's and the load generator's (and the script's
    # readings), in % of one core. More than a few % and the figures are not this setup's alone.
    other=$(awk -v d=$(((m1 - m0) - (c1 - c0) - (r1 - r0) - (k1 - k0))) -v hz="$CLK_TCK" -v w="$wall" \
      'BEGIN { v = 100 * d / hz / w; printf "%.1f", v < 0 ? 0 : v }')
    if awk -v o="$other" 'BEGIN { exit !(o > 10) }'; then
      log "$tag: warning: other processes used $other% of a core during the run: figures distorted"
    fi
  fi
  if ((code != 0)); then
    error="${error:+$error; }load generator exited $code"
    tail -n 5 "$LOG_DIR/$tag.loadgen.err" >&2 || true
  fi
  clients_joined=$(sed -n 's/.*"url_clients_joined":\(\[[0-9,]*\]\).*/\1/p' "$LOG_DIR/$tag.loadgen.out" | tail -n1)
  log "$tag: clients joined per node: ${clients_joined:-?}"
  stop_nodes
  fields+=",\"node_pids\":[$pids],\"server_cpu_percent\":$cpu,\"other_cpu_percent\":$other"
  fields+=",\"wall_s\":$wall,\"loadgen_exit\":$code"
  [[ -z $error ]] || fields+=",\"error\":\"$error\""
  annotate "$LOG_DIR/$tag.loadgen.out" "$fields}" "$snaps" >> "$JSONL"
}

# --- the tables ---------------------------------------------------------------------------------
print_tables() {
  python3 - "$JSONL" << 'EOF'
import json, sys
from collections import OrderedDict

runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
names = {"single": "1 node, no Redis (SQLite)"}
def name(m):
    if m in names:
        return names[m]
    kind, _, n = m.partition("-")
    if kind == "redis":
        return f"{n} node{'s' if n != '1' else ''} + Redis"
    return f"{n} independent nodes, no Redis"
def num(v, fmt):
    return "-" if v is None else format(v, fmt)
def rate(r):
    return r.get("rate") if r.get("rate") is not None else (r.get("requested_rate") or None)

print("| mode | workload | rate/sender | offered seg/s | delivered seg/s | p50 ms | p99 ms | lost | "
      "server CPU µs/delivery | Redis cmds/stroke | Redis round trips/stroke | Redis CPU µs/stroke | "
      "clients per node | other CPU % |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
for r in runs:
    if r.get("error") and not r.get("sent"):
        print(f"| {name(r['mode'])} | {r['workload']} | {rate(r) or '-'} | failed: {r['error']} ||||||||||")
        continue
    # The drawing-phase Redis figures when there (joins left out), else the whole run's.
    d = "_drawing" if r.get("redis_commands_drawing") is not None else ""
    per_node = "/".join(str(n) for n in r.get("url_clients_joined") or []) or "-"
    print(f"| {name(r['mode'])} | {r['workload']} | {num(rate(r), 'g')} | {num(r.get('offered_per_s'), '.0f')} | "
          f"{num(r.get('delivered_per_s'), '.0f')} | {num(r.get('p50_ms'), '.2f')} | {num(r.get('p99_ms'), '.2f')} | "
          f"{num(r.get('lost'), 'd')} | {num(r.get('server_cpu_us_per_delivery'), '.2f')} | "
          f"{num(r.get('redis_commands_per_stroke' + d), '.2f')} | {num(r.get('redis_round_trips_per_stroke' + d), '.2f')} | "
          f"{num(r.get('redis_cpu_us_per_stroke' + d), '.1f')} | {per_node} | {num(r.get('other_cpu_percent'), '.0f')} |")
    if r.get("error"):
        print(f"|  | (error: {r['error']}) ||||||||||||")

# The Redis hop: p50 of one node with Redis less p50 of one node without, per workload and rate
# (repeats averaged).
groups = OrderedDict()
for r in runs:
    if r.get("p50_ms") is None:
        continue
    key = (r["workload"], rate(r))
    groups.setdefault(key, {}).setdefault(r["mode"], []).append(r)
rows = []
for (w, rt), modes in groups.items():
    if "single" not in modes:
        continue
    avg = lambda m, f: sum(x[f] for x in modes[m]) / len(modes[m]) if m in modes else None
    a50, a99 = avg("single", "p50_ms"), avg("single", "p99_ms")
    cols = [w, num(rt, "g"), num(a50, ".2f")]
    for m in ("redis-1", "redis-2"):
        b50 = avg(m, "p50_ms")
        cols += [num(b50, ".2f"), num(None if b50 is None else b50 - a50, "+.2f")]
    rows.append(cols)
if rows:
    print()
    print("| workload | rate/sender | p50 ms 1 node, no Redis (a) | p50 ms 1 node + Redis (b) | "
          "Redis hop (b) - (a) ms | p50 ms 2 nodes + Redis (c) | (c) - (a) ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for cols in rows:
        print("| " + " | ".join(cols) + " |")
EOF
}

# --- main ---------------------------------------------------------------------------------------
cd "$ROOT"
if ((build)); then
  log "building: cargo build --release -p livecanvas -p livecanvas-load"
  timeout 1800 cargo build --release -p livecanvas -p livecanvas-load >&2 ||
    die "cargo build failed (use --no-build to run with existing binaries)"
fi
[[ -x $LOADGEN ]] || die "$LOADGEN not found (cargo build --release -p livecanvas-load)"
[[ -x $SERVER ]] || die "$SERVER not found (cargo build --release --bin livecanvas)"
[[ $("$LOADGEN" --help) == *"SEVERAL NODES"* ]] ||
  die "$LOADGEN does not take several --url (build the current livecanvas-load)"
server_help=$("$SERVER" --help 2> /dev/null || true)
has_redis_url=0 has_node_id=0
[[ $server_help == *--redis-url* ]] && has_redis_url=1
[[ $server_help == *--node-id* ]] && has_node_id=1
if ((need_redis)); then
  [[ -x $REDIS_SERVER ]] || die "$REDIS_SERVER not found (apt-get install redis-server, or REDIS_SERVER=...)"
  [[ -x $REDIS_CLI ]] || die "$REDIS_CLI not found (apt-get install redis-tools, or REDIS_CLI=...)"
  ((has_redis_url)) || log "warning: $SERVER has no --redis-url: the redis-N modes are skipped"
fi

raise_open_files
mkdir -p "$LOG_DIR"
log "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), open files $nofile"
log "results: $JSONL (logs in $LOG_DIR)"
if ((need_redis && has_redis_url)); then start_redis; fi

for i in "${!workload_list[@]}"; do
  for ((r = 1; r <= repeat; r++)); do
    for m in "${mode_list[@]}"; do run_one "$m" "${workload_list[$i]}" "${workload_rates[$i]}" "$r"; done
  done
done

rm -f "$LOG_DIR/.times"

echo
echo "livecanvas with and without Redis, $(date +%F), $(nproc) cores, $( ((batch)) && echo batched || echo unbatched) clients, load generator and Redis on the same machine"
echo
print_tables
echo
echo "Raw results: ${JSONL#"$ROOT"/}"
