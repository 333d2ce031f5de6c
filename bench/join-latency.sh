#!/usr/bin/env bash
# Join latency against history: for every configuration, a fresh livecanvas (in a fresh temporary
# --data-dir, removed afterwards) on 127.0.0.1, then `livecanvas-load join-latency`, which seeds one
# room per --history value and times newcomers from their TCP connect to holding the whole picture
# (canvasState/canvasEmpty plus every draw after it). Prints a Markdown table.
#
# Usage: bench/join-latency.sh [options]
#   --history LIST   segments drawn into each room before timing (default 0,1000,10000,100000)
#   --newcomers K    newcomers timed while the room is open (default 50)
#   --cold K         newcomers timed after the room unloaded, read back from SQLite (default 10;
#                    not in the memory configuration, which keeps nothing once a room unloads)
#   --configs LIST   which of these to run (default: all, in this order):
#                      sqlite-batch   the default server; newcomers batched, as the page is
#                      sqlite         the same, newcomers unbatched (no 10 ms batch tick)
#                      memory-batch   --storage memory; newcomers batched
#                      tail-batch     the default server but --checkpoint-idle 1h, and the room
#                                     topped up to 499 operations after its checkpoint (the most a
#                                     quiet room holds with --checkpoint-ops 500): the worst case
#                      undo-batch     the default server; the seeders draw as the page does
#                                     (strokeIds, one browser each), so the room keeps its undoable
#                                     history (up to --undo-max-ops, 20,000) out of its checkpoint
#   --port P         the server's port (default 18082; the script refuses a port in use)
#   --no-build       do not run cargo build first (the binaries must exist)
#   -h, --help       this text
#
# The table goes to stdout, progress to stderr; every configuration's JSON report (the load
# generator's, plus config, storage, disk_bytes) is appended to
# bench/results/join-latency-<date>.jsonl, with the server's and load generator's logs beside it.
set -euo pipefail
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
LOADGEN=${BENCH_LOADGEN:-"$ROOT/target/release/livecanvas-load"}
SERVER=${BENCH_SERVER:-"$ROOT/target/release/livecanvas"}
ALL_CONFIGS="sqlite-batch sqlite memory-batch tail-batch undo-batch"
RUN_BOUND_S=900 # nothing here should take that long; only a hang does

history="0,1000,10000,100000"
newcomers=50
cold=10
configs="sqlite-batch,sqlite,memory-batch,tail-batch,undo-batch"
port=18082
build=1

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "join-latency.sh: $*" >&2; exit 2; }
log() { echo "[join-latency.sh] $*" >&2; }
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

while (($#)); do
  opt=$1
  case $opt in
    --*=*) set -- "${opt%%=*}" "${opt#*=}" "${@:2}"; continue ;;
    -h | --help) usage; exit 0 ;;
    --no-build) build=0; shift; continue ;;
    --history | --newcomers | --cold | --configs | --port)
      (($# >= 2)) || die "$opt needs a value"
      case $opt in
        --history) history=$2 ;;
        --newcomers) newcomers=$2 ;;
        --cold) cold=$2 ;;
        --configs) configs=$2 ;;
        --port) port=$2 ;;
      esac
      shift 2 ;;
    *) die "unknown option $opt (see --help)" ;;
  esac
done
[[ $history =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--history wants numbers separated by commas"
[[ $newcomers =~ ^[0-9]+$ && $cold =~ ^[0-9]+$ ]] || die "--newcomers and --cold want whole numbers"
if ! [[ $port =~ ^[0-9]+$ ]] || ((port == 0 || port > 65535)); then die "bad port '$port'"; fi
IFS=, read -r -a config_list <<< "$configs"
((${#config_list[@]})) || die "--configs is empty"
for c in "${config_list[@]}"; do in_list "$c" "$ALL_CONFIGS" || die "unknown config '$c' (one of: $ALL_CONFIGS)"; done

# start_server LOGFILE FLAG...: a fresh livecanvas in a fresh data directory (spawn_server, in
# bench/lib.sh).
start_server() {
  local logfile=$1
  shift
  new_data_dir
  spawn_server livecanvas "$port" "$RUN_BOUND_S" "$logfile" env RUST_LOG=warn "$SERVER" \
    --bind "127.0.0.1:$port" --data-dir "$data_dir" "${LIVECANVAS_BENCH_FLAGS[@]}" "$@"
}

cd "$ROOT"
if ((build)); then
  log "building: cargo build --release -p livecanvas -p livecanvas-load"
  timeout 1800 cargo build --release -p livecanvas -p livecanvas-load >&2 ||
    die "cargo build failed (use --no-build to run with existing binaries)"
fi
[[ -x $LOADGEN && -x $SERVER ]] || die "$LOADGEN or $SERVER not found (cargo build --release -p livecanvas -p livecanvas-load)"
command -v python3 > /dev/null || die "python3 is needed for the table"

stamp=$(date +%Y%m%d-%H%M%S)
RESULTS_DIR="$BENCH_DIR/results"
JSONL="$RESULTS_DIR/join-latency-$stamp.jsonl"
LOG_DIR="$RESULTS_DIR/join-latency-$stamp.logs"
mkdir -p "$LOG_DIR"
log "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
log "results: $JSONL (logs in $LOG_DIR)"

for config in "${config_list[@]}"; do
  server_flags=() load_flags=(--history "$history" --newcomers "$newcomers") storage=sqlite
  case $config in
    sqlite-batch) load_flags+=(--batch --cold "$cold") ;;
    sqlite) load_flags+=(--cold "$cold") ;;
    memory-batch) storage=memory; server_flags+=(--storage memory); load_flags+=(--batch) ;;
    tail-batch)
      server_flags+=(--checkpoint-idle 1h --checkpoint-ops 500)
      load_flags+=(--batch --tail 499 --settle 1s) ;;
    undo-batch) load_flags+=(--batch --undoable --cold "$cold") ;;
  esac
  log "$config: livecanvas ${server_flags[*]}; livecanvas-load join-latency ${load_flags[*]}"
  error="" code=0 rss=null disk=null
  if start_server "$LOG_DIR/$config.server.log" "${server_flags[@]}"; then
    timeout --kill-after=5 "$RUN_BOUND_S" "$LOADGEN" join-latency \
      --url "ws://127.0.0.1:$port/ws" --json "${load_flags[@]}" \
      > "$LOG_DIR/$config.loadgen.out" 2> "$LOG_DIR/$config.loadgen.err" &
    loadgen_pid=$!
    wait "$loadgen_pid" || code=$?
    loadgen_pid=""
    if kill -0 "$server_pid" 2> /dev/null; then
      rss=$(awk -v k="$(peak_rss_kib "$server_pid")" 'BEGIN { printf "%.1f", k / 1024 }')
    else
      error="server died during the run"
    fi
    stop_pid "$server_tpid" "$server_pid"
    disk=$(dir_bytes "$data_dir")
  else
    error="server did not start"
    stop_pid "$server_tpid" "$server_pid"
  fi
  server_tpid="" server_pid=""
  remove_data_dir
  ((code == 0)) || error="${error:+$error; }load generator exited $code"
  [[ -z $error ]] || { log "$config: $error"; tail -n 5 "$LOG_DIR/$config.loadgen.err" >&2 || true; }
  report=$(grep '^{' "$LOG_DIR/$config.loadgen.out" | tail -n1 || true)
  python3 -c '
import json, sys
a = sys.argv[1:]
try:
    o = json.loads(a[0]) if a[0] else {}
except ValueError:
    o = {}
o.update(config=a[1], storage=a[2], server_peak_rss_mib=json.loads(a[3]),
         disk_bytes_after_stop=json.loads(a[4]), host_cores=int(a[5]))
if a[6]:
    o["error"] = a[6]
print(json.dumps(o, separators=(",", ":")))
' "$report" "$config" "$storage" "$rss" "$disk" "$(nproc)" "$error" >> "$JSONL"
done

echo
echo "Join latency against history, $(date +%F), $(nproc) cores, load generator on the same machine"
echo "(ms from a newcomer's TCP connect to holding the picture and every draw after it)"
echo
python3 - "$JSONL" << 'EOF'
import json, sys

def f(v, fmt="{:.1f}"):
    return "-" if v is None else fmt.format(v)

names = {
    "sqlite-batch": "sqlite, batched",
    "sqlite": "sqlite, unbatched",
    "memory-batch": "memory, batched",
    "tail-batch": "sqlite, batched, +499 ops",
    "undo-batch": "sqlite, batched, undoable strokes",
}
print("| server, newcomers | history (segments) | newcomers get | canvasState KiB | ops after it | "
      "warm p50 | warm p99 | warm max | cold p50 | cold p99 | cold max |")
print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for line in open(sys.argv[1]):
    o = json.loads(line)
    name = names.get(o.get("config"), o.get("config"))
    if o.get("error") and not o.get("runs"):
        print(f"| {name} | failed: {o['error']} |||||||||")
        continue
    for r in o.get("runs", []):
        if r.get("error"):
            print(f"| {name} | {r['history']:,} | failed: {r['error']} ||||||||")
            continue
        warm, cold = r.get("warm") or {}, r.get("cold") or {}
        def phase(p, key):
            if not p:
                return "-"
            if p.get("complete") != p.get("newcomers"):
                return f"{f(p.get(key))} ({p.get('complete')}/{p.get('newcomers')} ok)"
            return f(p.get(key))
        size = r.get("canvas_state_bytes") or 0
        print(f"| {name} | {r['history']:,} | {r.get('picture') or '-'} | "
              f"{f(size / 1024, '{:,.0f}') if size else '-'} | {r.get('tail_ops', '-')} | "
              f"{phase(warm, 'p50_ms')} | {phase(warm, 'p99_ms')} | {phase(warm, 'max_ms')} | "
              f"{phase(cold, 'p50_ms')} | {phase(cold, 'p99_ms')} | {phase(cold, 'max_ms')} |")
EOF
echo
echo "Raw results: ${JSONL#"$ROOT"/}"
