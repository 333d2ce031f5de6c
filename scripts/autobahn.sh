#!/usr/bin/env bash
# WebSocket protocol conformance: runs the Autobahn|Testsuite fuzzingclient (sections 1-7 and 10:
# framing, pings/pongs, reserved bits, opcodes, fragmentation, UTF-8, closing, auto-fragmentation)
# against a livecanvas binary and re-judges the report with scripts/autobahn_judge.py, because
# Autobahn's own verdicts assume an echo server and livecanvas never echoes (see that script).
# Not part of `cargo test` (it takes about 3 minutes and a Python 2 install); .ci/run runs it after
# the tests. Everything stays on 127.0.0.1.
#
# Usage, from the project root:
#   scripts/autobahn.sh [path/to/livecanvas]     default target/release/livecanvas
#   scripts/autobahn.sh --install-only           only install Autobahn into the cache
# Exits 1 if a case is FAILED or NON-STRICT, or the server died, hung or panicked.
#
# Environment:
#   AUTOBAHN_HOME     install cache (default /tmp/livecanvas-autobahn), reused once its marker is there
#   AUTOBAHN_INSTALL  auto (default) | python2 (way A only) | debs (way B, even if a Python 2.7 exists)
#   AUTOBAHN_ALLOW    the judge's --allow (default "1.2.": binary echo, which livecanvas refuses with
#                     1003 by design); set it empty to judge those cases like any other
#   AUTOBAHN_TIMEOUT  seconds allowed for wstest (default 1200; a run takes about 2 minutes)
#
# Autobahn|Testsuite is Python 2 only. It is installed as shared/autobahn/RECIPE.md says: with an
# existing CPython 2.7 (way A: pyenv's on the Rust machine image), else with Debian bullseye's
# python2.7 packages unpacked into the cache (way B: bookworm has no Python 2), fetched with a private
# apt configuration so that the system's apt state is not touched. Tools that a bare Debian 12 lacks
# (python3, pip, gcc, curl) are installed with apt-get when running as root.
set -euo pipefail
CALLER_PWD=$PWD
cd "$(dirname "$0")/.."

AUTOBAHN_HOME=${AUTOBAHN_HOME:-/tmp/livecanvas-autobahn}
AUTOBAHN_INSTALL=${AUTOBAHN_INSTALL:-auto}
AUTOBAHN_ALLOW=${AUTOBAHN_ALLOW-1.2.}
AUTOBAHN_TIMEOUT=${AUTOBAHN_TIMEOUT:-1200}
# The versions the recipe was checked with (its freeze.txt): the last autobahntestsuite, and a
# virtualenv that runs under Python 2.7 and seeds a pip (20.3.4) that still supports it.
SUITE_VERSION=25.10.1
VIRTUALENV_VERSION=20.15.1
MARKER="$AUTOBAHN_HOME/.installed-autobahntestsuite-$SUITE_VERSION"
LOG="$AUTOBAHN_HOME/install.log"

say() { printf '== %s\n' "$*"; }
die() { printf 'autobahn.sh: %s\n' "$*" >&2; exit 1; }

# Runs a step with its output in the install log, and shows the log's end only when the step fails:
# a good install prints two lines, a bad one prints why.
quietly() {
    printf '\n$ %s\n' "$*" >>"$LOG"
    if ! "$@" >>"$LOG" 2>&1; then
        printf 'autobahn.sh: install step failed: %s\n--- last lines of %s ---\n' "$*" "$LOG" >&2
        tail -n 40 "$LOG" >&2
        exit 1
    fi
}

# For tools the Rust machine image has but a bare Debian 12 may not.
apt_install() {
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        die "missing: $* (Debian: apt-get install $*)"
    fi
    say "installing $* with apt-get"
    quietly apt-get update -qq
    quietly env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# A Python 2.7 that really runs: pyenv's `python2.7` shim exists even when 2.7 is not a selected
# version, and then fails, so candidates are run, not just looked up.
find_python27() {
    local candidates=() py
    if command -v pyenv >/dev/null 2>&1; then
        candidates+=("$(pyenv root)/versions/2.7.18/bin/python")
    fi
    if command -v python2.7 >/dev/null 2>&1; then
        candidates+=("$(command -v python2.7)")
    fi
    for py in "${candidates[@]}"; do
        if [ -x "$py" ] && "$py" -c 'import sys; assert sys.version_info[:2] == (2, 7); print(sys.executable)' 2>/dev/null; then
            return 0
        fi
    done
    return 1
}

# Prints the system's Debian archive URI, then its security archive URI (from deb822 .sources and
# one-line .list files), so that bullseye's packages come through the same mirror or proxy as the
# system's own: on a machine whose only way out is that mirror, another may not be reachable.
system_debian_uris() {
    python3 - <<'PY'
import glob, re
main = security = None
def consider(uri, suites):
    global main, security
    for suite in suites:
        if suite.endswith('-security'):
            security = security or uri.rstrip('/')
        elif re.fullmatch(r'bookworm|bullseye|trixie|stable|oldstable', suite):
            main = main or uri.rstrip('/')
for path in sorted(glob.glob('/etc/apt/sources.list.d/*.sources')):
    for stanza in re.split(r'\n\s*\n', open(path).read()):
        fields = {}
        for line in stanza.splitlines():
            if ':' in line and not line.startswith('#') and not line[:1].isspace():
                key, value = line.split(':', 1)
                fields[key.strip().lower()] = value.split()
        if 'deb' in fields.get('types', []) and fields.get('enabled', ['yes'])[0] != 'no':
            for uri in fields.get('uris', []):
                consider(uri, fields.get('suites', []))
for path in ['/etc/apt/sources.list'] + sorted(glob.glob('/etc/apt/sources.list.d/*.list')):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        words = re.sub(r'\[[^]]*\]', '', line.split('#', 1)[0]).split()
        if len(words) >= 3 and words[0] == 'deb':
            consider(words[1], [words[2]])
print(main or 'http://deb.debian.org/debian')
print(security or 'http://deb.debian.org/debian-security')
PY
}

# Way B: bullseye's CPython 2.7, and the libssl1.1 and libffi7 it links against (gone from bookworm),
# unpacked into $AUTOBAHN_HOME/py27. Its other libraries (zlib, bz2, expat, ...) are bookworm's, with
# the same sonames.
fetch_bullseye_python27() {
    local apt="$AUTOBAHN_HOME/apt" main security deb
    { read -r main; read -r security; } < <(system_debian_uris)
    rm -rf "$apt" "$AUTOBAHN_HOME/py27"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/parts" "$apt/debs" "$AUTOBAHN_HOME/py27"
    : >"$apt/status"
    cat >"$apt/sources.list" <<EOF
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $main bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $security bullseye-security main
EOF
    # Every path apt reads or writes is in the scratch folder; the empty parts folder keeps the
    # system's own sources and pins out.
    cat >"$apt/apt.conf" <<EOF
Dir::Etc::SourceList "$apt/sources.list";
Dir::Etc::SourceParts "$apt/parts";
Dir::Etc::Preferences "$apt/parts/none.pref";
Dir::Etc::PreferencesParts "$apt/parts";
Dir::State::Lists "$apt/lists";
Dir::State::status "$apt/status";
Dir::Cache "$apt/cache";
Acquire::Languages "none";
APT::Sandbox::User "$(id -un)";
EOF
    say "Autobahn install: fetching bullseye's python2.7 from $main (way B), log $LOG"
    quietly env APT_CONFIG="$apt/apt.conf" apt-get update
    (cd "$apt/debs" && quietly env APT_CONFIG="$apt/apt.conf" apt-get download \
        python2.7 python2.7-minimal libpython2.7-minimal libpython2.7-stdlib libpython2.7 \
        python2.7-dev libpython2.7-dev libssl1.1 libffi7)
    for deb in "$apt"/debs/*.deb; do
        quietly dpkg -x "$deb" "$AUTOBAHN_HOME/py27"
    done
    rm -rf "$apt"
}

# Builds the virtualenv in $AUTOBAHN_HOME and the entry points bin/wstest and bin/python.
build_autobahn() {
    # A half-made install (no marker) is started over rather than patched.
    rm -f "$MARKER"
    rm -rf "${AUTOBAHN_HOME:?}/venv" "${AUTOBAHN_HOME:?}/vtool" "${AUTOBAHN_HOME:?}/py27" "${AUTOBAHN_HOME:?}/bin"
    : >"$LOG"
    local started=$SECONDS py2="" py way ldpath=""
    command -v gcc >/dev/null || apt_install gcc libc6-dev # wsaccel, Twisted and ujson build C code
    case "$AUTOBAHN_INSTALL" in
        auto | python2) py2=$(find_python27) || py2="" ;;
        debs) ;;
        *) die "AUTOBAHN_INSTALL must be auto, python2 or debs, not '$AUTOBAHN_INSTALL'" ;;
    esac
    if [ -n "$py2" ]; then
        way="A, $py2"
        say "Autobahn install: autobahntestsuite==$SUITE_VERSION with $py2 (way A), log $LOG"
        quietly "$py2" -m pip install --target "$AUTOBAHN_HOME/vtool" "virtualenv==$VIRTUALENV_VERSION"
        quietly env PYTHONPATH="$AUTOBAHN_HOME/vtool" "$py2" -m virtualenv "$AUTOBAHN_HOME/venv"
        quietly "$AUTOBAHN_HOME/venv/bin/pip" install --no-cache-dir "autobahntestsuite==$SUITE_VERSION"
    else
        [ "$AUTOBAHN_INSTALL" != python2 ] || die "AUTOBAHN_INSTALL=python2, but no working Python 2.7 was found"
        if ! command -v apt-get >/dev/null || ! command -v dpkg >/dev/null; then
            die "no Python 2.7, and no apt-get and dpkg to fetch one (see shared/autobahn/RECIPE.md)"
        fi
        # The unpacked Python 2.7 has no pip: python3's brings the virtualenv tool.
        python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
        fetch_bullseye_python27
        way="B, bullseye's python2.7 in $AUTOBAHN_HOME/py27"
        for ldpath in "$AUTOBAHN_HOME"/py27/usr/lib/*-linux-gnu*; do break; done
        [ -d "$ldpath" ] || die "the unpacked python2.7 has no usr/lib/<multiarch> folder"
        py="$AUTOBAHN_HOME/py27/usr/bin/python2.7"
        quietly env LD_LIBRARY_PATH="$ldpath" "$py" -c 'import ssl, ctypes, zlib'
        quietly python3 -m pip install --target "$AUTOBAHN_HOME/vtool" "virtualenv==$VIRTUALENV_VERSION"
        quietly env PYTHONPATH="$AUTOBAHN_HOME/vtool" LD_LIBRARY_PATH="$ldpath" \
            python3 -m virtualenv -p "$py" "$AUTOBAHN_HOME/venv"
        say "Autobahn install: autobahntestsuite==$SUITE_VERSION into $AUTOBAHN_HOME/venv"
        quietly env LD_LIBRARY_PATH="$ldpath" \
            CFLAGS="-I$AUTOBAHN_HOME/py27/usr/include/python2.7 -I$AUTOBAHN_HOME/py27/usr/include" \
            "$AUTOBAHN_HOME/venv/bin/pip" install --no-cache-dir "autobahntestsuite==$SUITE_VERSION"
    fi
    # Entry points alike for both ways: way B's interpreter needs its private libraries on every call.
    mkdir -p "$AUTOBAHN_HOME/bin"
    local tool
    for tool in wstest python; do
        {
            printf '#!/usr/bin/env bash\n'
            # shellcheck disable=SC2016 # expanded when the entry point runs
            [ -z "$ldpath" ] || printf 'export LD_LIBRARY_PATH=%q${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}\n' "$ldpath"
            printf 'exec %q "$@"\n' "$AUTOBAHN_HOME/venv/bin/$tool"
        } >"$AUTOBAHN_HOME/bin/$tool"
        chmod +x "$AUTOBAHN_HOME/bin/$tool"
    done
    quietly "$AUTOBAHN_HOME/venv/bin/pip" freeze
    quietly "$AUTOBAHN_HOME/bin/wstest" --help
    printf 'autobahntestsuite %s, way %s, installed %s\n' "$SUITE_VERSION" "$way" "$(date -u +%FT%TZ)" >"$MARKER"
    say "Autobahn install: done in $((SECONDS - started)) s (way $way)"
}

install_autobahn() {
    mkdir -p "$AUTOBAHN_HOME"
    # Two runs at once (CI and a developer, say) would otherwise build into one folder. The lock is
    # let go at once after, so that the server and wstest do not inherit it.
    exec 9>"$AUTOBAHN_HOME/.lock"
    flock 9
    if [ ! -f "$MARKER" ] || [ ! -x "$AUTOBAHN_HOME/bin/wstest" ] || [ ! -x "$AUTOBAHN_HOME/bin/python" ]; then
        build_autobahn
    fi
    exec 9>&-
}

# --- arguments ------------------------------------------------------------------------------------
BIN=target/release/livecanvas
case "${1:-}" in
    --install-only) install_autobahn; exit 0 ;;
    -h | --help) sed -n '2,/^set -euo/p' scripts/autobahn.sh | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    /*) BIN=$1 ;;
    *) BIN=$CALLER_PWD/$1 ;;
esac
[ $# -le 1 ] || die "usage: scripts/autobahn.sh [path/to/livecanvas]"
[ -x "$BIN" ] || die "no executable livecanvas at $BIN (build it with: cargo build --release)"

mkdir -p "$AUTOBAHN_HOME"
missing=()
command -v python3 >/dev/null || missing+=(python3)
command -v curl >/dev/null || missing+=(curl)
[ ${#missing[@]} = 0 ] || apt_install "${missing[@]}"
install_autobahn

# --- run ------------------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/livecanvas-autobahn-run.XXXXXX)
DATA=$(mktemp -d /tmp/livecanvas-autobahn-data.XXXXXX)
SERVER_PID=""
WSTEST_PID=""
STOP_RC=""

# SIGTERM, then the server's own shutdown grace (10 s) and a margin, then SIGKILL. Sets STOP_RC.
stop_server() {
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 200); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        STOP_RC=killed
        wait "$SERVER_PID" 2>/dev/null || true
    else
        wait "$SERVER_PID" && STOP_RC=0 || STOP_RC=$?
    fi
    SERVER_PID=""
}
cleanup() {
    [ -z "$WSTEST_PID" ] || kill -TERM "$WSTEST_PID" 2>/dev/null || true
    [ -z "$SERVER_PID" ] || stop_server
    rm -rf "$DATA"
}
trap cleanup EXIT
# A signal ends the script through the EXIT trap, so the server never outlives it.
trap 'exit 130' INT
trap 'exit 143' TERM

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="ws://127.0.0.1:$PORT/ws/autobahn"
# The cases and options of shared/autobahn/fuzzingclient.json. Sections 9 (throughput, with binary
# messages and messages over 64 KiB, both refused by design) and 12-13 (permessage-deflate, which
# livecanvas declines) are left out: they test echo speed and compression, not protocol handling.
cat >"$WORK/fuzzingclient.json" <<EOF
{
  "outdir": "$WORK/reports",
  "servers": [
    {"agent": "livecanvas", "url": "$URL"}
  ],
  "cases": ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*"],
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
EOF

# The case ids the spec selects, as Autobahn resolves them: wstest stops at the first case it cannot
# connect for and reports only the cases it ran, so the judge is told which ones to expect.
"$AUTOBAHN_HOME/bin/python" - "$WORK/fuzzingclient.json" >"$WORK/cases.txt" <<'PY' || die "Autobahn could not list the spec's cases"
import json, sys
from autobahntestsuite.case import Cases, CaseCategories, CaseSubCategories, CaseSetname, CaseBasename
from autobahntestsuite.caseset import CaseSet
case_set = CaseSet(CaseSetname, CaseBasename, Cases, CaseCategories, CaseSubCategories)
print('\n'.join(case_set.parseSpecCases(json.load(open(sys.argv[1])))))
PY

# Autobahn opens one connection per case from one address, and sends bursts of non-JSON and invalid
# messages: the per-IP and abuse limits would close connections for reasons of their own and hide
# the protocol handling under test.
say "server: $BIN on 127.0.0.1:$PORT (log $WORK/server.log)"
"$BIN" --bind "127.0.0.1:$PORT" --data-dir "$DATA" \
    --max-connections-per-ip 100000 --connection-rate-per-ip 100000 --connection-burst-per-ip 100000 \
    --max-invalid-messages 1000000 --draws-per-second 100000 --draw-burst 100000 \
    --flood-close-after 1000000 >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
healthy() { curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/healthz" 2>/dev/null; }
for _ in $(seq 150); do
    healthy && break
    kill -0 "$SERVER_PID" 2>/dev/null ||
        { tail -n 20 "$WORK/server.log" >&2; die "the server exited before answering /healthz"; }
    sleep 0.2
done
healthy || { tail -n 20 "$WORK/server.log" >&2; die "/healthz did not answer within 30 s"; }

say "wstest -m fuzzingclient against $URL (log $WORK/wstest.log)"
started=$SECONDS
# In the background so that a signal is handled at once, not after the last case.
(cd "$WORK" && exec timeout "$AUTOBAHN_TIMEOUT" "$AUTOBAHN_HOME/bin/wstest" -m fuzzingclient -s fuzzingclient.json) \
    >"$WORK/wstest.log" 2>&1 &
WSTEST_PID=$!
wait "$WSTEST_PID" && wstest_rc=0 || wstest_rc=$?
WSTEST_PID=""
say "wstest finished in $((SECONDS - started)) s (exit code $wstest_rc)"

# A server that died or hung under the fuzzer is the worst finding: it is reported whatever the table.
problems=()
if kill -0 "$SERVER_PID" 2>/dev/null; then
    stop_server
    case "$STOP_RC" in
        0) ;;
        killed) problems+=("the server did not stop within 20 s of SIGTERM") ;;
        *) problems+=("the server exited with code $STOP_RC after SIGTERM") ;;
    esac
else
    wait "$SERVER_PID" && rc=0 || rc=$?
    SERVER_PID=""
    problems+=("the server died during the run (exit code $rc)")
fi
if grep -q 'panicked' "$WORK/server.log"; then
    problems+=("the server log has $(grep -c panicked "$WORK/server.log") panic(s)")
fi
[ "$wstest_rc" = 0 ] || problems+=("wstest exited with code $wstest_rc (124: timed out); see $WORK/wstest.log")
if [ ! -f "$WORK/reports/index.json" ]; then
    tail -n 20 "$WORK/wstest.log" >&2
    die "wstest wrote no report; ${problems[*]:-}"
fi

echo
judge_rc=0
python3 scripts/autobahn_judge.py --cases "$WORK/cases.txt" ${AUTOBAHN_ALLOW:+--allow "$AUTOBAHN_ALLOW"} \
    "$WORK/reports" || judge_rc=$?
echo
echo "report: $WORK/reports (index.html; one JSON per case; spec, wstest.log and server.log in $WORK)"
for problem in "${problems[@]}"; do
    echo "PROBLEM: $problem (server log: $WORK/server.log)" >&2
done
[ "$judge_rc" = 0 ] && [ "${#problems[@]}" = 0 ]
