#!/usr/bin/env bash
# cursors.sh — does a room full of moving cursors slow its drawing down? One room of 110 clients:
# 10 draw 20 segments/s each, and 0 or 100 others move a cursor 20 times a second
# (`livecanvas-load --cursors N --cursor-rate 20`). Each run gets a fresh server (raised limits,
# fresh temporary data directory) and reports drawing latency, cursor messages received and the
# server's CPU (`--server-pid`). Runs with 0 and 100 cursors alternate, `--repeat` times.
#
#   bench/cursors.sh [--batch] [--repeat N] [--duration 10s] [--port 18391]
#
# BENCH_SERVER / BENCH_LOADGEN point it at copies of the binaries (default target/release/…), so a
# build during the run cannot swap them. Build first: cargo build --release -p livecanvas -p livecanvas-load
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
server_bin=${BENCH_SERVER:-target/release/livecanvas}
load_bin=${BENCH_LOADGEN:-target/release/livecanvas-load}
batch=() repeat=2 duration=10s port=18391
while [[ $# -gt 0 ]]; do
  case $1 in
    --batch) batch=(--batch); shift ;;
    --repeat) repeat=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
for ((i = 0; i < repeat; i++)); do
  for cursors in 0 100; do
    dir=$(mktemp -d "${TMPDIR:-/tmp}/livecanvas-bench.XXXXXX")
    RUST_LOG=warn "$server_bin" --bind "127.0.0.1:$port" --data-dir "$dir" \
      "${LIVECANVAS_BENCH_FLAGS[@]}" >"$dir.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    echo "=== cursors=$cursors ${batch[*]}"
    "$load_bin" --url "ws://127.0.0.1:$port/ws" --clients 110 --rooms 1 --senders-per-room 10 \
      --rate 20 --cursors "$cursors" --cursor-rate 20 --duration "$duration" --server-pid "$pid" \
      --quiet "${batch[@]}" | grep -E "delivered|latency|cursors|server"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$dir" "$dir.log"
  done
done
