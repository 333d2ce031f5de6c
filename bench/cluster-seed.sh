#!/usr/bin/env bash
# A second opinion on the cluster: the independent seed load generator (../shared/tools/seed-loadgen)
# through a real HAProxy (Debian's haproxy: `apt-get install haproxy`) in front of two livecanvas
# nodes sharing one redis-server, all on 127.0.0.1 with free ports and temporary directories. HAProxy
# spreads the connections (leastconn, no stickiness), so a room's members sit on both nodes; the seed
# generator checks every delivery (lost, duplicated, out of order, echoed) and its latency.
#
# Usage: bench/cluster-seed.sh [seed loadgen flags...]
#   e.g. bench/cluster-seed.sh --rooms 100 --clients-per-room 10 --senders-per-room 2 --rate 5 --duration 15
#        bench/cluster-seed.sh --preset busy-room --duration 10
#
# Nothing of livecanvas is built: BENCH_SERVER (default target/release/livecanvas) must exist. The
# seed load generator is built into $BENCH_SEED_TARGET (default /tmp/seed-loadgen-target) when
# missing. The seed generator's report goes to stdout; the nodes', Redis's and HAProxy's logs to a
# temporary directory that is printed and kept.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
SERVER=${BENCH_SERVER:-"$ROOT/target/release/livecanvas"}
SEED_DIR=${BENCH_SEED_DIR:-"$ROOT/../shared/tools/seed-loadgen"}
SEED_TARGET=${BENCH_SEED_TARGET:-/tmp/seed-loadgen-target}
log() { echo "[cluster-seed] $*" >&2; }
die() {
  log "$*"
  exit 2
}
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

[[ -x $SERVER ]] || { log "no $SERVER: cargo build --release first"; exit 2; }
command -v haproxy >/dev/null || { log "haproxy is not installed (apt-get install haproxy)"; exit 2; }
command -v redis-server >/dev/null || { log "redis-server is not installed"; exit 2; }
SEED="$SEED_TARGET/release/loadgen"
if [[ ! -x $SEED ]]; then
  [[ -d $SEED_DIR ]] || { log "no seed load generator at $SEED_DIR"; exit 2; }
  log "building the seed load generator into $SEED_TARGET"
  (cd "$SEED_DIR" && CARGO_TARGET_DIR="$SEED_TARGET" cargo build --release -q)
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/livecanvas-cluster-seed.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  log "logs kept in $work"
}
trap cleanup EXIT

redis_port=$(free_port)
mkdir "$work/redis"
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" --save '' \
  --appendonly yes --appendfsync everysec --daemonize no --loglevel warning >"$work/redis.log" 2>&1 &
pids+=($!)
limits=(--max-connections-per-ip 100000 --connection-rate-per-ip 100000
  --connection-burst-per-ip 100000 --max-clients-per-room 100000
  --draws-per-second 100000 --draw-burst 100000)
node_ports=()
for n in 1 2; do
  port=$(free_port)
  node_ports+=("$port")
  RUST_LOG=warn "$SERVER" --bind "127.0.0.1:$port" --frontend-dir "$ROOT/frontend" \
    --redis-url "redis://127.0.0.1:$redis_port/0" --node-id "n$n" "${limits[@]}" \
    >"$work/n$n.log" 2>&1 &
  pids+=($!)
done
proxy_port=$(free_port)
cat >"$work/haproxy.cfg" <<CFG
global
    # Two descriptors per connection (client and node side); this machine's open-file limit is
    # 20,000, and HAProxy refuses to start when maxconn needs more.
    maxconn 9000
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 5s
    timeout tunnel 1h
frontend canvas
    bind 127.0.0.1:$proxy_port
    default_backend livecanvas
backend livecanvas
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 1s
    server n1 127.0.0.1:${node_ports[0]}
    server n2 127.0.0.1:${node_ports[1]}
CFG
haproxy -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pids+=($!)
# Ready when both nodes say so (connected to Redis) and HAProxy answers.
ready=""
for _ in $(seq 1 200); do
  if curl -sf "http://127.0.0.1:${node_ports[0]}/readyz" >/dev/null &&
    curl -sf "http://127.0.0.1:${node_ports[1]}/readyz" >/dev/null &&
    curl -sf "http://127.0.0.1:$proxy_port/readyz" >/dev/null; then
    ready=1
    break
  fi
  sleep 0.1
done
[[ -n $ready ]] || { log "the nodes or HAProxy did not become ready (see $work)"; exit 1; }
# HAProxy marks a server UP after its first good check (inter 1s).
sleep 2
"$SEED" --url-base "ws://127.0.0.1:$proxy_port" "$@"
