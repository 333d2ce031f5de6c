#!/usr/bin/env bash
# What persistence costs broadcasting: bench/compare.sh with livecanvas storing in SQLite (the
# default, each run in a fresh temporary --data-dir) against the same server with --storage memory,
# the two taking turns, batched clients, at rates this 2-core machine sustains. Prints compare.sh's
# tables; the last two compare sqlite with memory (repeats averaged) and give the bytes on disk.
#
# Usage: bench/persistence.sh [compare.sh options]
#   defaults: --servers ours-batch,ours-batch-mem --workloads busy-room:20,many-rooms:3 --repeat 2
#   (any option given is passed on and overrides these; e.g. --workloads busy-room,many-rooms for
#   the presets' full rates, which saturate a 2-core machine; --servers ours,ours-mem for unbatched)
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
case ${1:-} in
  -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
esac
exec "$BENCH_DIR/compare.sh" --servers ours-batch,ours-batch-mem \
  --workloads busy-room:20,many-rooms:3 --repeat 2 "$@"
