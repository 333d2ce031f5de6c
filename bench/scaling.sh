#!/usr/bin/env bash
# How livecanvas's figures scale: bench/compare.sh against livecanvas with batched clients only,
# varying one thing at a time from a preset:
#   - the batch tick (--batch-tick 5/10/20/40 ms), busy-room at its full rate;
#   - clients in the room (100/250/500/1000), busy-room's 50 senders at 60/s;
#   - senders in the room (10/25/50/100), busy-room's 500 clients at 60/s;
#   - rooms of 10 (250/500/1000), many-rooms's 2 senders per room at 5/s.
# Prints one table (the last column is the ratio delivered / expected deliveries per second).
#
# Usage: bench/scaling.sh [--quick] [--no-build] [--duration D]
#   --quick      smoke check of the script: two short runs (well under a minute)
#   --no-build   do not build first (target/release must be up to date)
#   --duration D drawing time of each run (default 10s)
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
quick=0 duration=10s build=()
while (($#)); do
  case $1 in
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --quick) quick=1; shift ;;
    --no-build) build=(--no-build); shift ;;
    --duration) (($# >= 2)) || { echo "scaling.sh: --duration needs a value" >&2; exit 2; }
      duration=$2; shift 2 ;;
    *) echo "scaling.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

# Each line: dimension|value|compare.sh arguments (besides --servers and --duration).
if ((quick)); then
  duration=2s
  variations=(
    "tick|5 ms|--workloads smoke --ours-args --batch-tick=5ms"
    "clients|20|--workloads smoke --load-args --clients=20"
  )
else
  variations=()
  for tick in 5 10 20 40; do
    variations+=("batch tick|$tick ms|--workloads busy-room --ours-args --batch-tick=${tick}ms")
  done
  for clients in 100 250 500 1000; do
    variations+=("clients in the room|$clients|--workloads busy-room --load-args --clients=$clients")
  done
  for senders in 10 25 50 100; do
    variations+=("senders in the room|$senders|--workloads busy-room --load-args --senders-per-room=$senders")
  done
  for rooms in 250 500 1000; do
    variations+=("rooms of 10|$rooms|--workloads many-rooms:5 --load-args --rooms=$rooms --load-args --clients=$((rooms * 10))")
  done
fi

summary=$(mktemp)
trap 'rm -f "$summary"' EXIT
for v in "${variations[@]}"; do
  IFS='|' read -r dimension value rest <<< "$v"
  read -r -a words <<< "$rest"
  # "--ours-args X" and "--load-args X" take one word each (A=B for "A B") and may repeat.
  args=() ours="" load=""
  for ((i = 0; i < ${#words[@]}; i++)); do
    case ${words[i]} in
      --ours-args) ours+=" ${words[i + 1]/=/ }"; i=$((i + 1)) ;;
      --load-args) load+=" ${words[i + 1]/=/ }"; i=$((i + 1)) ;;
      *) args+=("${words[i]}") ;;
    esac
  done
  echo "[scaling] $dimension = $value" >&2
  err=$(mktemp)
  "$BENCH_DIR/compare.sh" --servers ours-batch --duration "$duration" "${build[@]}" "${args[@]}" \
    ${ours:+--ours-args "${ours# }"} ${load:+--load-args "${load# }"} > /dev/null 2> "$err" || {
    cat "$err" >&2
    rm -f "$err"
    exit 1
  }
  build=(--no-build)
  jsonl=$(sed -n 's/^\[compare\] results: \([^ ]*\) .*/\1/p' "$err" | tail -n 1)
  rm -f "$err"
  [[ -n $jsonl && -f $jsonl ]] || { echo "scaling.sh: compare.sh named no results file" >&2; exit 1; }
  tail -n 1 "$jsonl" | DIMENSION=$dimension VALUE=$value python3 -c '
import json, os, sys
r = json.loads(sys.stdin.read())
r["dimension"], r["value"] = os.environ["DIMENSION"], os.environ["VALUE"]
print(json.dumps(r))' >> "$summary"
done

python3 - "$summary" << 'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def num(v, digits=1):
    return "-" if v is None else f"{v:,.{digits}f}"
print("| varied | value | offered seg/s | delivered/s | delivered / expected | p50 ms | p99 ms | lost | server CPU % | loadgen CPU % |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    expected = r.get("expected") or 0
    received = r.get("received") or 0
    share = "-" if not expected else f"{received / expected:.3f}"
    print(f"| {r['dimension']} | {r['value']} | {num(r.get('offered_per_s'), 0)} | "
          f"{num(r.get('delivered_per_s'), 0)} | {share} | {num(r.get('p50_ms'))} | "
          f"{num(r.get('p99_ms'))} | {r.get('lost', '-')} | {num(r.get('server_cpu_percent'), 0)} | "
          f"{num(r.get('loadgen_cpu_percent'), 0)} |")
EOF
