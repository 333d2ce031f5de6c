#!/usr/bin/env bash
# What idle clients cost livecanvas: with N clients connected that only answer pings (the load
# generator's idle-crowd preset), the server's CPU (% of one core) and context switches a second
# over a window that starts once every client is in (its /healthz counts them), then its memory.
#
# Usage: bench/idle-cpu.sh [--clients N] [--window S] [--no-build]
#   --clients N  idle connections (default 20000, or the open-file limit less 1000 if lower)
#   --window S   seconds measured once all are connected (default 30)
#   --no-build   do not build first (target/release must be up to date)
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
log() { echo "[idle-cpu] $*" >&2; }
die() {
  log "$*"
  exit 2
}
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

PORT=18082
clients="" window=30 build=1
while (($#)); do
  case $1 in
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --clients | --window)
      (($# >= 2)) || die "$1 needs a value"
      if [[ $1 == --clients ]]; then clients=$2; else window=$2; fi
      shift 2 ;;
    --no-build) build=0; shift ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
raise_open_files
[[ -n $clients ]] || clients=$(idle_clients_allowed)
[[ $clients =~ ^[0-9]+$ && $window =~ ^[0-9]+$ ]] || die "--clients and --window are whole numbers"
if ((build)); then
  (cd "$ROOT" && timeout 1800 cargo build --release -p livecanvas -p livecanvas-load >&2) ||
    die "the release build failed"
fi

connections() { # the server's open connections, from /healthz (empty if it does not answer)
  python3 -c 'import json, sys, urllib.request
try:
    print(json.load(urllib.request.urlopen(sys.argv[1], timeout=2))["connections"])
except Exception:
    pass' "http://127.0.0.1:$PORT/healthz"
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$server_pid/stat"; }
switches() { cat /proc/"$server_pid"/task/*/status | awk '/ctxt_switches/ { s += $2 } END { print s }'; }

new_data_dir
spawn_server livecanvas "$PORT" $((window + 300)) "$data_dir/server.log" \
  target/release/livecanvas --bind "127.0.0.1:$PORT" --data-dir "$data_dir" \
  "${LIVECANVAS_BENCH_FLAGS[@]}" || die "the server did not start"
baseline_kib=$(rss_kib "$server_pid")
log "connecting $clients idle clients"
"$ROOT/target/release/livecanvas-load" --url "ws://127.0.0.1:$PORT/ws" --preset idle-crowd \
  --clients "$clients" --duration "$((window + 120))s" --batch --quiet > /dev/null 2>&1 &
loadgen_pid=$!
deadline=$((SECONDS + 120))
until [[ $(connections) == "$clients" ]]; do
  ((SECONDS < deadline)) || die "only $(connections) of $clients clients connected within 120 s"
  kill -0 "$loadgen_pid" 2> /dev/null || die "the load generator exited early"
  sleep 0.5
done
log "all $clients connected; measuring for ${window}s"
ticks0=$(cpu_ticks) switches0=$(switches)
sleep "$window"
ticks1=$(cpu_ticks) switches1=$(switches)
[[ $(connections) == "$clients" ]] || log "warning: $(connections) of $clients still connected at the end"
now_kib=$(rss_kib "$server_pid")
peak_kib=$(peak_rss_kib "$server_pid")
hz=$(getconf CLK_TCK)
awk -v c="$clients" -v w="$window" -v t=$((ticks1 - ticks0)) -v hz="$hz" \
  -v s=$((switches1 - switches0)) -v rss="$now_kib" -v peak="$peak_kib" -v base="$baseline_kib" \
  'BEGIN {
    printf "| idle clients | window s | server CPU %% of a core | context switches/s | RSS MiB | peak RSS MiB | KiB per connection (peak / connections) | KiB per connection over the empty server |\n"
    printf "|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    printf "| %d | %d | %.1f | %d | %.1f | %.1f | %.1f | %.1f |\n", c, w, 100 * t / hz / w, s / w,
      rss / 1024, peak / 1024, peak / c, (rss - base) / c
  }'
