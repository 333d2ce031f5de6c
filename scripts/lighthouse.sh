#!/usr/bin/env bash
# Lighthouse on the page, so its scores cannot slip unnoticed (.ci/run runs it; docs/performance.md
# records the last figures). Starts the given server binary (default: the release build) on a free
# 127.0.0.1 port with a temporary data directory, runs Lighthouse 12 with Debian's Chromium under
# its mobile and its desktop preset (three runs each, the median one judged), prints the scores,
# and fails when any is under its target:
#   performance >= 95, accessibility >= 98, best practices >= 98, SEO >= 95, CLS < 0.05.
#
#   scripts/lighthouse.sh [BINARY]          e.g. scripts/lighthouse.sh target/release/livecanvas
#   (the page from LIVECANVAS_FRONTEND_DIR if set, else frontend/)
#
# Lighthouse (npm, pinned) is installed once into a cache outside the repository
# ($LIVECANVAS_CACHE, else ~/.cache/livecanvas); its reports go to target/lighthouse/ (or
# $LIGHTHOUSE_OUT): PRESET-N.json for run N, PRESET.json the median one (LIGHTHOUSE_RUNS runs).
# Needs Node 18 or later and /usr/bin/chromium (scripts/test installs both; this installs npm
# where it is missing, as root). Never downloads a browser.
set -euo pipefail
cd "$(dirname "$0")/.."

LIGHTHOUSE_VERSION=12.2.3
binary=${1:-target/release/livecanvas}
cache=${LIVECANVAS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/livecanvas}/lighthouse-$LIGHTHOUSE_VERSION
out=${LIGHTHOUSE_OUT:-target/lighthouse}
chromium=/usr/bin/chromium

[ -x "$binary" ] || { echo "no server binary at $binary (cargo build --release)" >&2; exit 1; }
[ -x "$chromium" ] || { echo "$chromium is missing: apt-get install -y chromium" >&2; exit 1; }
# npm installs Lighthouse; like scripts/test, install Debian's package where it is missing.
if ! command -v npm >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq npm >/dev/null
fi

cli=$cache/node_modules/lighthouse/cli/index.js
if [ ! -f "$cli" ]; then
    mkdir -p "$cache"
    (cd "$cache" && npm init -y >/dev/null &&
        npm install --save-exact --no-audit --no-fund --loglevel=error "lighthouse@$LIGHTHOUSE_VERSION")
fi

work=$(mktemp -d)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$binary" --bind "127.0.0.1:$port" --data-dir "$work/data" --frontend-dir "${LIVECANVAS_FRONTEND_DIR:-frontend}" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null

mkdir -p "$out"
# The flags of the browser tests: headless, and no background traffic to a closed network.
flags="--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --disable-background-networking \
--disable-component-update --disable-sync --disable-quic --no-first-run"
# Lighthouse's performance score moves with whatever else the machine is doing (its simulation
# scales the CPU time it observed), so each preset runs $runs times and the run with the median
# performance score is judged, as Lighthouse's documentation advises for variable machines.
runs=${LIGHTHOUSE_RUNS:-3}
for preset in mobile desktop; do
    extra=()
    [ "$preset" = desktop ] && extra=(--preset=desktop)
    for run in $(seq 1 "$runs"); do
        CHROME_PATH=$chromium node "$cli" "http://127.0.0.1:$port/" "${extra[@]}" --quiet \
            --output=json --output-path="$out/$preset-$run.json" --chrome-flags="$flags" \
            2>"$work/lighthouse.log" || { cat "$work/lighthouse.log" >&2; exit 1; }
    done
done

node - "$out" "$runs" <<'EOF'
const fs = require('node:fs');
const path = require('node:path');
const TARGETS = { performance: 95, accessibility: 98, 'best-practices': 98, seo: 95 };
const MAX_CLS = 0.05;
const [dir, runs] = [process.argv[2], Number(process.argv[3])];
const score = (report, id) => Math.round((report.categories[id]?.score ?? 0) * 100);
let failed = false;
for (const preset of ['mobile', 'desktop']) {
  const reports = [];
  for (let run = 1; run <= runs; run++) {
    reports.push(JSON.parse(fs.readFileSync(path.join(dir, `${preset}-${run}.json`), 'utf8')));
  }
  const all = reports.map((r) => score(r, 'performance'));
  reports.sort((a, b) => score(a, 'performance') - score(b, 'performance'));
  const report = reports[Math.floor((reports.length - 1) / 2)];
  fs.writeFileSync(path.join(dir, `${preset}.json`), JSON.stringify(report));
  const cells = [];
  for (const [id, min] of Object.entries(TARGETS)) {
    const value = score(report, id);
    const ok = value >= min;
    failed ||= !ok;
    cells.push(`${id} ${value}${ok ? '' : ` (under ${min})`}`);
  }
  const cls = report.audits['cumulative-layout-shift']?.numericValue ?? Infinity;
  failed ||= !(cls < MAX_CLS);
  cells.push(`CLS ${cls.toFixed(3)}${cls < MAX_CLS ? '' : ` (not under ${MAX_CLS})`}`);
  console.log(`lighthouse ${report.lighthouseVersion} ${preset}, the median of runs scoring ` +
    `${all.join(', ')}: ${cells.join(', ')}`);
  if (report.runtimeError) {
    console.log(`  runtime error: ${report.runtimeError.message}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
EOF
