#!/usr/bin/env bash
# What a member costs in small and in big rooms: livecanvas and the Node `ws` relay
# (bench/node-relay) side by side in one run, one server process at a time, on 127.0.0.1 only,
# every process bounded in time. Three measures (--only picks some):
#
#   idle-memory  idle memory per connection, for each shape of --shapes (default 500 rooms x 20,
#                10,000 rooms x 1, 10 rooms x 1,000; the clients of a shape all join as fast as
#                --connect-concurrency lets them): the independent seed load generator
#                (../shared/tools/seed-loadgen, `--idle --server-pid`) connects the crowd to a fresh
#                server, holds it for --hold seconds and reads the server's RSS before connecting
#                and at the end of the hold; (end - before) / connections = KiB per connection.
#   join-bytes   what the server sends when --joins (1,000) clients join one room: livecanvas's
#                /metrics (`livecanvas_bytes_out_total`, `livecanvas_messages_out_total{type}`)
#                before the first join and once the room is quiet; for both servers the bytes the
#                kernel sent on the room's sockets (`ss -ti` bytes_sent); the frames, by type, that
#                the room's first member received during the storm, and what a newcomer gets at
#                the end (a small standard-library client embedded below).
#   big-room     one room of --room-sizes clients (default 5000), one of them drawing 10 segments/s
#                for --duration seconds: `livecanvas-load --clients N --rooms 1
#                --senders-per-room 1 --rate 10 --json`; the join storm's duration (the load
#                generator's connect phase: until all N are admitted) and join p99, the drawing's
#                p50/p99/max latency and the deliveries lost, the server's peak RSS.
#
# Usage: bench/big-rooms.sh [options]
#   --only LIST            measures, comma-separated: idle-memory,join-bytes,big-room (default all)
#   --servers LIST         livecanvas,node (default both)
#   --quick                small shapes and short holds, to check the script (under a minute)
#   --shapes LIST          idle-memory shapes ROOMSxCLIENTS (default 500x20,10000x1,10x1000)
#   --joins N              join-bytes: clients joining the room (default 1000)
#   --room-sizes LIST      big-room sizes (default 5000; e.g. 5000,10000: 10,000 is about the most
#                          one server process holds under the 20,000 open-file limit)
#   --duration S           big-room drawing time, seconds (default 20)
#   --hold S               idle-memory hold, seconds (default 20)
#   --connect-concurrency N  connection attempts in flight at once, every measure (default 1000)
#   --ours-args "A B"      extra flags for livecanvas (after the bench flags)
#   --malloc-stats         idle-memory: also ask livecanvas's glibc malloc, through gdb
#                          (`call malloc_stats()`, written to the server's log), how much of its
#                          heap is in use before the crowd, once it settled and again --hold - 5 s
#                          later, and how much it holds from the system: RSS that is freed memory
#                          glibc kept, not live data (the server stops for about a second each
#                          time; needs gdb)
#   --server PATH          livecanvas binary (default $BENCH_SERVER, else target/release/livecanvas)
#   --loadgen PATH         livecanvas-load binary (default $BENCH_LOADGEN, else
#                          target/release/livecanvas-load)
#   --ours-port P          livecanvas's port (default 18096)
#   --node-port P          the Node relay's port (default 18097)
#   --no-build             neither build the seed load generator nor run npm ci in node-relay/
#   -h, --help             this text
#
# livecanvas runs with lib.sh's LIVECANVAS_BENCH_FLAGS (per-IP and per-room limits raised),
# --max-rooms 1000000, RUST_LOG=warn, in a fresh temporary --data-dir (SQLite, the default
# storage); the relay is `node node-relay/relay.js`. Nothing of livecanvas is built: build it
# first, or point --server/--loadgen (BENCH_SERVER/BENCH_LOADGEN) at copies. The seed load
# generator is built with `cargo build --release` into ${CARGO_TARGET_DIR:-/tmp/seed-loadgen-target}.
# The Markdown table goes to stdout, progress to stderr; one JSON line per run is appended to
# bench/results/big-rooms-<date>-<time>.jsonl, the servers' and load generators' output kept in
# the .logs/ directory beside it. About 6 minutes with the defaults on 2 cores.
set -euo pipefail
export LC_ALL=C # a dot in $EPOCHREALTIME and in awk's numbers

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
SERVER=${BENCH_SERVER:-"$ROOT/target/release/livecanvas"}
LOADGEN=${BENCH_LOADGEN:-"$ROOT/target/release/livecanvas-load"}
RELAY_DIR="$BENCH_DIR/node-relay"
SEED_DIR=${BENCH_SEED_DIR:-"$ROOT/../shared/tools/seed-loadgen"}
SEED_TARGET=${CARGO_TARGET_DIR:-/tmp/seed-loadgen-target}
OURS_PORT=18096
NODE_PORT=18097
ALL_MEASURES="idle-memory join-bytes big-room"
ALL_SERVERS="livecanvas node"
RATE=10 # segments per second of the big room's one drawer

only="idle-memory,join-bytes,big-room"
servers="livecanvas,node"
quick=0 build=1
shapes="500x20,10000x1,10x1000" shapes_given=0
joins=1000 joins_given=0
room_sizes="5000" sizes_given=0
duration=20 duration_given=0
hold=20 hold_given=0
concurrency=1000
ours_args=""
malloc_stats=0

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "big-rooms.sh: $*" >&2; exit 2; }
log() { echo "[big-rooms $(date +%T)] $*" >&2; }
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

while (($#)); do
  opt=$1
  case $opt in
    --*=*) set -- "${opt%%=*}" "${opt#*=}" "${@:2}"; continue ;;
    -h | --help) usage; exit 0 ;;
    --quick) quick=1; shift; continue ;;
    --no-build) build=0; shift; continue ;;
    --malloc-stats) malloc_stats=1; shift; continue ;;
    --only | --servers | --shapes | --joins | --room-sizes | --duration | --hold | --connect-concurrency | \
      --ours-args | --server | --loadgen | --ours-port | --node-port)
      (($# >= 2)) || die "$opt needs a value"
      case $opt in
        --only) only=$2 ;;
        --servers) servers=$2 ;;
        --shapes) shapes=$2; shapes_given=1 ;;
        --joins) joins=$2; joins_given=1 ;;
        --room-sizes) room_sizes=$2; sizes_given=1 ;;
        --duration) duration=$2; duration_given=1 ;;
        --hold) hold=$2; hold_given=1 ;;
        --connect-concurrency) concurrency=$2 ;;
        --ours-args) ours_args=$2 ;;
        --server) SERVER=$2 ;;
        --loadgen) LOADGEN=$2 ;;
        --ours-port) OURS_PORT=$2 ;;
        --node-port) NODE_PORT=$2 ;;
      esac
      shift 2 ;;
    *) die "unknown option $opt (see --help)" ;;
  esac
done

if ((quick)); then # small shapes, unless given explicitly
  ((shapes_given)) || shapes="20x10,200x1,2x100"
  ((joins_given)) || joins=100
  ((sizes_given)) || room_sizes=300
  ((duration_given)) || duration=2
  ((hold_given)) || hold=2
fi
IFS=, read -r -a measure_list <<< "$only"
IFS=, read -r -a server_list <<< "$servers"
IFS=, read -r -a shape_list <<< "$shapes"
IFS=, read -r -a size_list <<< "$room_sizes"
read -r -a ours_extra <<< "$ours_args"
((${#measure_list[@]})) || die "--only is empty"
((${#server_list[@]})) || die "--servers is empty"
for m in "${measure_list[@]}"; do in_list "$m" "$ALL_MEASURES" || die "unknown measure '$m' (one of: $ALL_MEASURES)"; done
for s in "${server_list[@]}"; do in_list "$s" "$ALL_SERVERS" || die "unknown server '$s' (one of: $ALL_SERVERS)"; done
for sh in "${shape_list[@]}"; do [[ $sh =~ ^[1-9][0-9]*x[1-9][0-9]*$ ]] || die "--shapes: '$sh' is not ROOMSxCLIENTS"; done
for n in "${size_list[@]}" "$joins" "$duration" "$hold" "$concurrency"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "'$n' is not a positive whole number"
done
((joins >= 2)) || die "--joins must be at least 2 (the first member observes)"
for p in "$OURS_PORT" "$NODE_PORT"; do
  if ! [[ $p =~ ^[0-9]+$ ]] || ((p == 0 || p > 65535)); then die "bad port '$p'"; fi
done
[[ $OURS_PORT != "$NODE_PORT" ]] || die "--ours-port and --node-port must differ"
wants() { in_list "$1" "${measure_list[*]}"; }
uses() { in_list "$1" "${server_list[*]}"; }

# --- what it needs --------------------------------------------------------------------------------
command -v python3 > /dev/null || die "python3 is needed"
command -v ss > /dev/null || die "ss (iproute2) is needed"
if ((malloc_stats)); then command -v gdb > /dev/null || die "--malloc-stats needs gdb"; fi
SEED="$SEED_TARGET/release/loadgen"
if wants idle-memory || wants join-bytes; then
  if ((build)); then
    [[ -f $SEED_DIR/Cargo.toml ]] || die "the seed load generator is not at $SEED_DIR"
    log "building the seed load generator (CARGO_TARGET_DIR=$SEED_TARGET)"
    (cd "$ROOT" && CARGO_TARGET_DIR=$SEED_TARGET timeout 900 cargo build --release --quiet \
      --manifest-path "$SEED_DIR/Cargo.toml" >&2) || die "the seed load generator did not build"
  fi
  [[ -x $SEED ]] || die "$SEED not found (run without --no-build)"
fi
if uses livecanvas; then
  [[ -x $SERVER ]] || die "$SERVER not found (cargo build --release --bin livecanvas, or BENCH_SERVER=...)"
fi
if wants big-room; then
  [[ -x $LOADGEN ]] || die "$LOADGEN not found (cargo build --release -p livecanvas-load, or BENCH_LOADGEN=...)"
fi
if uses node; then
  command -v node > /dev/null || die "node is needed for the relay (or --servers livecanvas)"
  if [[ ! -d $RELAY_DIR/node_modules/ws ]]; then
    ((build)) || die "run npm ci in $RELAY_DIR first"
    log "installing the relay's dependencies: npm ci"
    (cd "$RELAY_DIR" && timeout 300 npm ci --no-audit --no-fund >&2) || die "npm ci failed in $RELAY_DIR"
  fi
fi

raise_open_files
most=0
for sh in "${shape_list[@]}"; do c=$((${sh%x*} * ${sh#*x})); ((c > most)) && most=$c; done
for n in "${size_list[@]}" "$joins"; do ((n > most)) && most=$n; done
if [[ $nofile != unlimited ]] && ((most + 200 > nofile)); then
  die "$most connections do not fit in the open-file limit $nofile of one process"
fi

stamp=$(date +%Y%m%d-%H%M%S)
RESULTS_DIR="$BENCH_DIR/results"
JSONL="$RESULTS_DIR/big-rooms-$stamp.jsonl"
LOG_DIR="$RESULTS_DIR/big-rooms-$stamp.logs"
mkdir -p "$LOG_DIR"

# --- helpers --------------------------------------------------------------------------------------
observer_pid=""
big_rooms_cleanup() {
  stop_pid "$observer_pid" ""
  observer_pid=""
  cleanup
}
trap big_rooms_cleanup EXIT

port_of() { if [[ $1 == node ]]; then echo "$NODE_PORT"; else echo "$OURS_PORT"; fi; }

# start_server KIND TAG BOUND_S: a fresh server of that kind (lib.sh's spawn_server), log in LOG_DIR.
start_server() {
  local kind=$1 tag=$2 bound=$3 cmd
  case $kind in
    livecanvas)
      new_data_dir
      cmd=(env RUST_LOG=warn "$SERVER" --bind "127.0.0.1:$OURS_PORT" --data-dir "$data_dir"
        "${LIVECANVAS_BENCH_FLAGS[@]}" --max-rooms 1000000 "${ours_extra[@]}") ;;
    node) cmd=(node "$RELAY_DIR/relay.js" --port "$NODE_PORT") ;;
  esac
  spawn_server "$kind" "$(port_of "$kind")" "$bound" "$LOG_DIR/$tag.server.log" "${cmd[@]}"
}
stop_server() {
  stop_pid "$server_tpid" "$server_pid"
  server_tpid="" server_pid=""
  remove_data_dir
}

# http_get PORT PATH: the body (empty when the server does not answer).
http_get() {
  python3 -c 'import sys, urllib.request
try:
    sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())
except Exception:
    pass' "http://127.0.0.1:$1$2"
}
# metric FILE NAME: one unlabelled metric's value from a saved /metrics text (empty if missing).
metric() { awk -v n="$2" '$1 == n { print $2; exit }' "$1"; }

# wire_bytes PORT: "BYTES CONNECTIONS": the bytes the kernel sent (ss bytes_sent, HTTP upgrade
# responses and WebSocket frame headers included) on the established server-side sockets of
# 127.0.0.1:PORT, and how many there are.
wire_bytes() {
  ss -tinH state established "( sport = :$1 )" | awk '
    /^[0-9]/ { n++ }
    { for (i = 1; i <= NF; i++) if ($i ~ /^bytes_sent:/) { split($i, a, ":"); s += a[2] } }
    END { printf "%.0f %d\n", s, n }'
}

# wait_settled PORT WANT DEADLINE_S PID: waits until WANT connections to PORT are established and
# the bytes sent on them grew by less than 8 bytes per connection in each of 4 polls 0.5 s apart
# (heartbeat pings are allowed; any presence or count frame is not). Gives up at the deadline or
# when PID (the load generator) exits. Prints "SETTLED(0/1) CONNECTIONS BYTES SECONDS".
wait_settled() {
  local port=$1 want=$2 deadline=$((SECONDS + $3)) pid=$4 prev=-1 stable=0 b=0 n=0 t0=$EPOCHREALTIME
  while ((SECONDS < deadline)) && kill -0 "$pid" 2> /dev/null; do
    read -r b n < <(wire_bytes "$port")
    if ((n >= want && prev >= 0 && b - prev < 8 * want)); then
      stable=$((stable + 1))
      if ((stable >= 4)); then
        echo "1 $n $b $(awk -v a="$t0" -v z="$EPOCHREALTIME" 'BEGIN { printf "%.1f", z - a }')"
        return 0
      fi
    else
      stable=0
    fi
    prev=$b
    sleep 0.5
  done
  echo "0 $n $b $(awk -v a="$t0" -v z="$EPOCHREALTIME" 'BEGIN { printf "%.1f", z - a }')"
}

# wait_file FILE DEADLINE_S PID: until FILE exists (1) or the deadline passes or PID exits (0).
wait_file() {
  local deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)) && kill -0 "$3" 2> /dev/null; do
    [[ -e $1 ]] && return 0
    sleep 0.1
  done
  [[ -e $1 ]]
}

# heap_stats LOGFILE: "SYSTEM_BYTES IN_USE_BYTES" of the server's glibc malloc (all arenas and
# mmapped chunks), from malloc_stats(), which it writes to its stderr, the log ("null null" if
# nothing new came out: gdb could not attach, or no glibc malloc). gdb's exit status says nothing
# (it fails on "Couldn't write extended state status" after the call went through).
heap_stats() {
  local blocks
  blocks=$(grep -c '^Total (incl. mmap):' "$1" || true)
  timeout 60 gdb -p "$server_pid" -batch -ex 'call (void)malloc_stats()' > /dev/null 2>&1 || true
  if (($(grep -c '^Total (incl. mmap):' "$1" || true) <= blocks)); then
    echo "null null"
    return 0
  fi
  awk '/^Total \(incl. mmap\):/ { t = 1; next }
       t && /system bytes/ { s = $NF } t && /in use bytes/ { u = $NF; t = 0 }
       END { print (s == "" ? "null" : s), (u == "" ? "null" : u) }' "$1"
}

cpu_s() { # user+system CPU seconds of a process
  local stat fields
  stat=$(< "/proc/$1/stat")
  read -r -a fields <<< "${stat##*) }"
  awk -v t=$((fields[11] + fields[12])) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'
}

# emit FIELD... : one JSON object appended to $JSONL. FIELD is key=string, key:=JSON, or
# key@=FILE (the file's last JSON object, null when there is none).
emit() {
  python3 -c '
import json, sys
def last_object(path):
    try:
        text = open(path).read()
    except OSError:
        return None
    dec, pos, last = json.JSONDecoder(), 0, None
    while True:
        start = text.find("{", pos)
        if start < 0:
            return last
        try:
            last, pos = dec.raw_decode(text, start)
        except ValueError:
            pos = start + 1
out = {}
for arg in sys.argv[1:]:
    for sep in ("@=", ":=", "="):
        key, found, value = arg.partition(sep)
        if found and "=" not in key and ":" not in key and "@" not in key:
            break
    if sep == "@=":
        out[key] = last_object(value)
    elif sep == ":=":
        out[key] = json.loads(value) if value != "" else None
    else:
        out[key] = value
print(json.dumps(out, separators=(",", ":")))
' "$@" >> "$JSONL"
}

# A WebSocket client on the standard library only: joins ROOM and counts the text frames it
# receives by type (payload bytes), answering pings, until SIGTERM or SECS have passed; touches
# READY_FILE once the first message is in. Prints one JSON object on stdout.
# Usage: python3 -c "$FRAMES_PY" PORT ROOM SECS READY_FILE
# shellcheck disable=SC2016
FRAMES_PY='
import base64, json, os, signal, socket, struct, sys, time
port, room, secs, ready = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
t0 = time.monotonic()
out = {"room": room, "frames": 0, "bytes": 0, "types": {}, "error": None}
def record(text):
    try:
        kind = json.loads(text).get("type", "?")
    except ValueError:
        kind = "?"
    t = out["types"].setdefault(kind, {"frames": 0, "bytes": 0, "max_bytes": 0})
    t["frames"] += 1
    t["bytes"] += len(text)
    t["max_bytes"] = max(t["max_bytes"], len(text))
    out["frames"] += 1
    out["bytes"] += len(text)
    if out["frames"] == 1:
        out["first_message_ms"] = round((time.monotonic() - t0) * 1000, 1)
        open(ready, "w").close()
def send(sock, opcode, payload):
    mask = os.urandom(4)
    sock.sendall(struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + mask
                 + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
sock = None
try:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws/{room} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("closed during the upgrade")
        buf += chunk
    head, buf = buf.split(b"\r\n\r\n", 1)
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if " 101 " not in status + " ":
        raise OSError("upgrade refused: " + status)
    sock.settimeout(0.2)
    text = b""
    while not stop and time.monotonic() - t0 < secs:
        while len(buf) >= 2:
            b0, n, off = buf[0], buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, off = struct.unpack("!H", buf[2:4])[0], 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, off = struct.unpack("!Q", buf[2:10])[0], 10
            if len(buf) < off + n:
                break
            payload, buf = buf[off:off + n], buf[off + n:]
            opcode = b0 & 0x0F
            if opcode == 0x9:
                send(sock, 0xA, payload)
            elif opcode == 0x8:
                raise OSError("closed by the server")
            elif opcode in (0x0, 0x1):
                text += payload
                if b0 & 0x80:
                    record(text)
                    text = b""
        try:
            chunk = sock.recv(1 << 18)
        except socket.timeout:
            continue
        if not chunk:
            raise OSError("connection closed by the server")
        buf += chunk
except (OSError, ValueError) as e:
    out["error"] = str(e) or type(e).__name__
finally:
    if sock is not None:
        try:
            send(sock, 0x8, struct.pack("!H", 1000))
            sock.close()
        except OSError:
            pass
out["seconds"] = round(time.monotonic() - t0, 2)
print(json.dumps(out))
'

# --- measure 1: idle memory per connection ---------------------------------------------------------
run_idle() { # run_idle KIND ROOMS CLIENTS_PER_ROOM
  local kind=$1 rooms=$2 per=$3 clients tag port code=0 fresh settled_kib=null peak=null end_kib=null
  local settled n b secs sqlite=null error="" t0 sys0=null use0=null sys1=null use1=null
  local sys2=null use2=null late=null
  clients=$((rooms * per)) tag="idle-memory-$kind-${rooms}x$per" port=$(port_of "$kind")
  log "$tag: $clients idle clients, held ${hold}s (seed loadgen --idle)"
  if ! start_server "$kind" "$tag" $((hold + 300)); then
    stop_server
    emit measure=idle-memory server="$kind" shape="${rooms}x$per" rooms:="$rooms" clients_per_room:="$per" \
      error="server did not start"
    return 0
  fi
  sleep 1 # a fresh server, as it stands before anyone connects
  fresh=$(rss_kib "$server_pid")
  if ((malloc_stats)) && [[ $kind == livecanvas ]]; then
    read -r sys0 use0 < <(heap_stats "$LOG_DIR/$tag.server.log")
  fi
  t0=$EPOCHREALTIME
  timeout --kill-after=5 $((hold + 240)) "$SEED" --url-base "ws://127.0.0.1:$port" --idle \
    --rooms "$rooms" --clients-per-room "$per" --duration "$hold" \
    --connect-concurrency "$concurrency" --connect-timeout 60 --connect-phase-max 150 \
    --room-prefix "im$rooms-" \
    --server-pid "$server_pid" --json > "$LOG_DIR/$tag.loadgen.out" 2> "$LOG_DIR/$tag.loadgen.err" &
  loadgen_pid=$!
  # A second reading of our own, once the crowd is in and the server quiet (the load generator's
  # is at the end of the hold).
  read -r settled n b secs < <(wait_settled "$port" "$clients" $((hold + 200)) "$loadgen_pid")
  if ((settled)); then
    settled_kib=$(rss_kib "$server_pid")
    log "$tag: $n connected and quiet after ${secs}s; RSS $((settled_kib / 1024)) MiB"
    if [[ $kind == livecanvas ]]; then
      http_get "$port" /metrics > "$LOG_DIR/$tag.metrics"
      sqlite=$(metric "$LOG_DIR/$tag.metrics" livecanvas_sqlite_memory_bytes)
      [[ -n $sqlite ]] || sqlite=null
      if ((malloc_stats)); then
        read -r sys1 use1 < <(heap_stats "$LOG_DIR/$tag.server.log")
        log "$tag: glibc malloc holds $((${sys1/null/0} / 1048576)) MiB from the system, $((${use1/null/0} / 1048576)) MiB in use"
        if ((hold > 6)); then # again near the end of the hold (the load generator's reading)
          late=$((hold - 5))
          sleep "$late"
          read -r sys2 use2 < <(heap_stats "$LOG_DIR/$tag.server.log")
          log "$tag: ${late}s later: $((${sys2/null/0} / 1048576)) MiB from the system, $((${use2/null/0} / 1048576)) MiB in use"
        fi
      fi
    fi
  else
    log "$tag: not settled ($n of $clients connected, after ${secs}s)"
  fi
  wait "$loadgen_pid" || code=$?
  loadgen_pid=""
  if kill -0 "$server_pid" 2> /dev/null; then
    end_kib=$(rss_kib "$server_pid") peak=$(peak_rss_kib "$server_pid")
  else
    error="server died during the run"
  fi
  stop_server
  ((code == 0)) || error="${error:+$error; }seed loadgen exited $code"
  emit measure=idle-memory server="$kind" shape="${rooms}x$per" rooms:="$rooms" clients_per_room:="$per" \
    clients:="$clients" hold_s:="$hold" connect_concurrency:="$concurrency" fresh_rss_kib:="$fresh" \
    settled:="$( ((settled)) && echo true || echo false)" settled_after_s:="$secs" \
    settled_connections:="$n" settled_rss_kib:="$settled_kib" after_close_rss_kib:="$end_kib" \
    peak_rss_kib:="$peak" sqlite_memory_bytes:="$sqlite" malloc_system_bytes_fresh:="$sys0" \
    malloc_in_use_bytes_fresh:="$use0" malloc_system_bytes_settled:="$sys1" \
    malloc_in_use_bytes_settled:="$use1" malloc_late_after_s:="$late" \
    malloc_system_bytes_late:="$sys2" malloc_in_use_bytes_late:="$use2" \
    wall_s:="$(awk -v a="$t0" -v z="$EPOCHREALTIME" 'BEGIN { printf "%.1f", z - a }')" \
    error="$error" loadgen@="$LOG_DIR/$tag.loadgen.out"
}

# --- measure 2: bytes sent for N joins into one room ------------------------------------------------
run_join_bytes() { # run_join_bytes KIND
  local kind=$1 tag port room code=0 settled n b secs error="" connect_line
  tag="join-bytes-$kind" port=$(port_of "$kind") room="jb-$kind-0"
  log "$tag: $joins clients join one room (1 observer first, then $((joins - 1)) from the seed loadgen)"
  if ! start_server "$kind" "$tag" 400; then
    stop_server
    emit measure=join-bytes server="$kind" joins:="$joins" error="server did not start"
    return 0
  fi
  sleep 1
  [[ $kind == livecanvas ]] && http_get "$port" /metrics > "$LOG_DIR/$tag.before.metrics"
  rm -f "$LOG_DIR/$tag.ready"
  timeout --kill-after=5 300 python3 -c "$FRAMES_PY" "$port" "$room" 290 "$LOG_DIR/$tag.ready" \
    > "$LOG_DIR/$tag.observer.json" 2> "$LOG_DIR/$tag.observer.err" &
  observer_pid=$!
  if ! wait_file "$LOG_DIR/$tag.ready" 15 "$observer_pid"; then
    error="the observer got no message"
  fi
  # Held long; stopped once measured (its report is not needed: ss counts the connections).
  timeout --kill-after=5 300 "$SEED" --url-base "ws://127.0.0.1:$port" --idle --rooms 1 \
    --clients-per-room $((joins - 1)) --duration 240 --connect-concurrency "$concurrency" \
    --connect-timeout 60 --connect-phase-max 150 --room-prefix "jb-$kind-" \
    > "$LOG_DIR/$tag.loadgen.out" 2> "$LOG_DIR/$tag.loadgen.err" &
  loadgen_pid=$!
  read -r settled n b secs < <(wait_settled "$port" "$joins" 150 "$loadgen_pid")
  ((settled)) || error="${error:+$error; }not settled: $n of $joins connected after ${secs}s"
  log "$tag: $n connected, room quiet after ${secs}s: $b bytes on the wire"
  [[ $kind == livecanvas ]] && http_get "$port" /metrics > "$LOG_DIR/$tag.after.metrics"
  # What a newcomer gets in a room of $joins (its own bytes are not in the figures above).
  timeout --kill-after=5 20 python3 -c "$FRAMES_PY" "$port" "$room" 1.5 /dev/null \
    > "$LOG_DIR/$tag.newcomer.json" 2> "$LOG_DIR/$tag.newcomer.err" || true
  stop_pid "$observer_pid" ""
  observer_pid=""
  stop_pid "$loadgen_pid" ""
  wait "$loadgen_pid" 2> /dev/null || code=$?
  loadgen_pid=""
  connect_line=$(grep -m1 ' connected in ' "$LOG_DIR/$tag.loadgen.err" || true)
  kill -0 "$server_pid" 2> /dev/null || error="${error:+$error; }server died during the run"
  stop_server
  emit measure=join-bytes server="$kind" joins:="$joins" connect_concurrency:="$concurrency" \
    settled:="$( ((settled)) && echo true || echo false)" settled_after_s:="$secs" \
    connections:="$n" wire_bytes:="$b" loadgen_connect="$connect_line" \
    metrics_before="$LOG_DIR/$tag.before.metrics" metrics_after="$LOG_DIR/$tag.after.metrics" \
    observer@="$LOG_DIR/$tag.observer.json" newcomer@="$LOG_DIR/$tag.newcomer.json" error="$error"
}

# --- measure 3: one big room, one drawer ----------------------------------------------------------
run_big_room() { # run_big_room KIND CLIENTS
  local kind=$1 clients=$2 tag port code=0 error="" peak=null rss=null cpu0 cpu1=null t0
  tag="big-room-$kind-$clients" port=$(port_of "$kind")
  log "$tag: livecanvas-load --clients $clients --rooms 1 --senders-per-room 1 --rate $RATE --duration ${duration}s"
  if ! start_server "$kind" "$tag" $((duration + 400)); then
    stop_server
    emit measure=big-room server="$kind" clients:="$clients" rate:="$RATE" error="server did not start"
    return 0
  fi
  sleep 1
  cpu0=$(cpu_s "$server_pid")
  t0=$EPOCHREALTIME
  timeout --kill-after=5 $((duration + 300)) "$LOADGEN" --url "ws://127.0.0.1:$port/ws" \
    --clients "$clients" --rooms 1 --senders-per-room 1 --rate "$RATE" --duration "${duration}s" \
    --connect-concurrency "$concurrency" --connect-timeout 60s --server-pid "$server_pid" --json \
    > "$LOG_DIR/$tag.loadgen.out" 2> "$LOG_DIR/$tag.loadgen.err" &
  loadgen_pid=$!
  wait "$loadgen_pid" || code=$?
  loadgen_pid=""
  if kill -0 "$server_pid" 2> /dev/null; then
    peak=$(peak_rss_kib "$server_pid") rss=$(rss_kib "$server_pid") cpu1=$(cpu_s "$server_pid")
    cpu1=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.2f", b - a }')
  else
    error="server died during the run"
  fi
  stop_server
  ((code == 0)) || error="${error:+$error; }livecanvas-load exited $code"
  emit measure=big-room server="$kind" clients:="$clients" rate:="$RATE" duration_s:="$duration" \
    connect_concurrency:="$concurrency" peak_rss_kib:="$peak" end_rss_kib:="$rss" \
    server_cpu_s:="$cpu1" wall_s:="$(awk -v a="$t0" -v z="$EPOCHREALTIME" 'BEGIN { printf "%.1f", z - a }')" \
    error="$error" loadgen@="$LOG_DIR/$tag.loadgen.out"
}

# --- the table --------------------------------------------------------------------------------------
print_table() {
  python3 - "$JSONL" "$joins" << 'PY'
import json, re, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
joins = int(sys.argv[2])
servers = ["livecanvas", "node"]
out = []
def row(label, cells):
    out.append("| " + label + " | " + " | ".join(cells.get(s, "-") for s in servers) + " |")
def n(x, fmt="{:,.0f}"):
    return "-" if x is None else fmt.format(x)
def find(measure, **keys):
    return {r["server"]: r for r in rows
            if r.get("measure") == measure and all(r.get(k) == v for k, v in keys.items())}
def failed(r):
    return r.get("error") or ""
def prom(path):
    vals = {}
    try:
        for line in open(path):
            m = re.match(r'^(livecanvas_\w+)(\{[^}]*\})?\s+(\S+)$', line.strip())
            if m:
                vals[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    except OSError:
        pass
    return vals

def shape_key(r):
    return (r["rooms"], r["clients_per_room"])
shapes = []
for r in rows:
    if r.get("measure") == "idle-memory" and shape_key(r) not in shapes:
        shapes.append(shape_key(r))
for rooms, per in shapes:
    runs = find("idle-memory", rooms=rooms, clients_per_room=per)
    label = f"{rooms:,} room{'s' if rooms > 1 else ''} x {per:,}"
    kib, rss, note, heap = {}, {}, {}, {}
    for s, r in runs.items():
        lg = r.get("loadgen") or {}
        srv = lg.get("server") or {}
        before = (srv.get("before") or {}).get("rss_kb")
        end = (srv.get("window_end") or {}).get("rss_kb")
        conn = lg.get("connected") or 0
        if before is None or end is None or not conn:
            kib[s] = "failed: " + (failed(r) or "no report")
            continue
        kib[s] = f"{(end - before) / conn:.1f}"
        if conn != r["clients"]:
            kib[s] += f" ({conn:,} of {r['clients']:,} connected)"
        settled = r.get("settled_rss_kib")
        extra = f", settled {settled / 1024:.1f}" if settled else ""
        peak = r.get("peak_rss_kib") or (srv.get("end") or {}).get("hwm_kb") or 0
        rss[s] = f"{before / 1024:.1f} → {end / 1024:.1f} (peak {peak / 1024:.1f}{extra})"
        if r.get("sqlite_memory_bytes"):
            note[s] = f"{r['sqlite_memory_bytes'] / 1048576:.1f}"
        if r.get("malloc_in_use_bytes_settled") is not None and r.get("malloc_in_use_bytes_fresh") is not None:
            u0, u1 = r["malloc_in_use_bytes_fresh"], r["malloc_in_use_bytes_settled"]
            heap[s] = (f"settled: {u1 / 1048576:.1f} MiB in use ({(u1 - u0) / 1024 / conn:.1f} KiB/conn), "
                       f"{r['malloc_system_bytes_settled'] / 1048576:.1f} MiB held")
            u2 = r.get("malloc_in_use_bytes_late")
            if u2 is not None:
                heap[s] += (f"; {r['malloc_late_after_s']} s later: {u2 / 1048576:.1f} MiB in use "
                            f"(**{(u2 - u0) / 1024 / conn:.1f} KiB/conn**), "
                            f"{r['malloc_system_bytes_late'] / 1048576:.1f} MiB held")
        if failed(r):
            kib[s] += " (" + failed(r) + ")"
    row(f"idle, {label} ({rooms * per:,} conns): **KiB per connection**", kib)
    row(f"idle, {label}: server RSS MiB, fresh → end of hold (peak, settled)", rss)
    if note:
        row(f"idle, {label}: of which SQLite's own memory, MiB (/metrics)", note)
    if heap:
        row(f"idle, {label}: livecanvas's glibc malloc (--malloc-stats)", heap)

jb = find("join-bytes")
if jb:
    q, qj, w, wj, types, first, newc, storm = {}, {}, {}, {}, {}, {}, {}, {}
    for s, r in jb.items():
        if r.get("wire_bytes") is None:
            q[s] = w[s] = "failed: " + (failed(r) or "no figures")
            continue
        if r.get("connections"):
            w[s] = f"{r['wire_bytes'] / 1e6:.1f}"
            wj[s] = n(r["wire_bytes"] / joins)
            if r.get("error"):
                w[s] += " (" + r["error"] + ")"
        if s == "livecanvas":
            a, b = prom(r.get("metrics_before", "")), prom(r.get("metrics_after", ""))
            if "livecanvas_bytes_out_total" in b:
                d = b["livecanvas_bytes_out_total"] - a.get("livecanvas_bytes_out_total", 0)
                q[s] = f"{d / 1e6:.1f}"
                qj[s] = n(d / joins)
            counts = {}
            for k, v in b.items():
                m = re.match(r'livecanvas_messages_out_total\{type="([^"]+)"\}', k)
                if m:
                    counts[m.group(1)] = v - a.get(k, 0)
            top = sorted(((v, k) for k, v in counts.items() if v), reverse=True)
            types[s] = ", ".join(f"{k} {v:,.0f}" for v, k in top) or "-"
        for key, cells in (("observer", first), ("newcomer", newc)):
            o = r.get(key) or {}
            t = o.get("types") or {}
            if not t:
                continue
            parts = sorted(t.items(), key=lambda kv: -kv[1]["bytes"])
            cells[s] = "; ".join(
                f"{k} {v['frames']:,} × ≤{v['max_bytes']:,} B = {v['bytes']:,} B" for k, v in parts[:4])
            if o.get("error"):
                cells[s] += f" ({o['error']})"
        m = re.search(r"connected in ([0-9.]+) s \((\d+) failed", r.get("loadgen_connect") or "")
        if m:
            storm[s] = f"{m.group(1)} s ({m.group(2)} failed)"
    row(f"{joins:,} joins into one room: **MB queued** (/metrics bytes_out_total)", q)
    row(f"{joins:,} joins: bytes queued per join", qj)
    row(f"{joins:,} joins: MB sent on the wire (ss bytes_sent of the {joins:,} sockets)", w)
    row(f"{joins:,} joins: wire bytes per join", wj)
    row(f"{joins:,} joins: messages queued, by type (/metrics, count)", types)
    row(f"{joins:,} joins: frames the first member got, by type (count × largest = total)", first)
    row(f"{joins:,} joins: what newcomer {joins + 1:,} got in its first 1.5 s", newc)
    row(f"{joins:,} joins: seed loadgen's {joins - 1:,} connected in", storm)

sizes = []
for r in rows:
    if r.get("measure") == "big-room" and r["clients"] not in sizes:
        sizes.append(r["clients"])
for size in sizes:
    runs = find("big-room", clients=size)
    rate = next((r["rate"] for r in runs.values() if r.get("rate")), "?")
    lab = f"one room of {size:,}, 1 drawer at {rate}/s"
    storm, join, lat, lost, mem, busy = {}, {}, {}, {}, {}, {}
    for s, r in runs.items():
        lg = r.get("loadgen") or {}
        if not lg:
            storm[s] = "failed: " + (failed(r) or "no report")
            continue
        storm[s] = f"{lg.get('connect_s', 0):.2f} s ({lg.get('connected', 0):,} of {lg.get('clients', 0):,}, {lg.get('connect_errors', 0)} errors)"
        join[s] = f"{n(lg.get('join_p50_ms'), '{:.0f}')} / {n(lg.get('join_p99_ms'), '{:.0f}')} / {n(lg.get('join_max_ms'), '{:.0f}')}"
        lat[s] = f"{n(lg.get('p50_ms'), '{:.1f}')} / **{n(lg.get('p99_ms'), '{:.1f}')}** / {n(lg.get('max_ms'), '{:.1f}')}"
        lost[s] = f"{lg.get('lost', 0):,} of {lg.get('expected', 0):,}"
        if lg.get("disconnects"):
            lost[s] += f" ({lg['disconnects']} disconnects)"
        if r.get("peak_rss_kib"):
            mem[s] = f"{r['peak_rss_kib'] / 1024:.1f} / {r['server_cpu_s']:.1f} s"
        busy[s] = f"{lg.get('machine_busy_percent', 0):.0f} % / {lg.get('loadgen_cpu_percent', 0):.0f} %"
        if failed(r):
            lost[s] += " (" + failed(r) + ")"
    row(f"{lab}: join storm, all admitted in (connect phase)", storm)
    row(f"{lab}: join ms p50 / p99 / max", join)
    row(f"{lab}: drawing latency ms p50 / **p99** / max", lat)
    row(f"{lab}: deliveries lost", lost)
    row(f"{lab}: server peak RSS MiB / CPU over the run", mem)
    row(f"{lab}: machine busy / loadgen CPU (% of one core), drawing", busy)

print("| measure | livecanvas | node ws relay |")
print("|---|---|---|")
print("\n".join(out))
PY
}

# --- main -------------------------------------------------------------------------------------------
cd "$ROOT"
started=$SECONDS
loadavg0=$(cut -d' ' -f1-3 /proc/loadavg)
log "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), open files $nofile"
log "results: $JSONL (logs in $LOG_DIR)"
server_sum=""
if uses livecanvas; then
  server_sum=$(sha256sum "$SERVER" | cut -c1-12)
  log "livecanvas: $SERVER (sha256 $server_sum)"
fi
emit measure=run started_at="$(date -u +%FT%TZ)" server_bin="$SERVER" server_sha256="$server_sum" \
  loadgen_bin="$LOADGEN" seed_bin="$SEED" cores:="$(nproc)" loadavg="$loadavg0" \
  git_head="$(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo unknown)" \
  quick:="$quick" only="$only" shapes="$shapes" joins:="$joins" room_sizes="$room_sizes" \
  duration_s:="$duration" hold_s:="$hold" connect_concurrency:="$concurrency" ours_args="$ours_args"

if wants idle-memory; then
  for sh in "${shape_list[@]}"; do
    for s in "${server_list[@]}"; do run_idle "$s" "${sh%x*}" "${sh#*x}"; done
  done
fi
if wants join-bytes; then
  for s in "${server_list[@]}"; do run_join_bytes "$s"; done
fi
if wants big-room; then
  for size in "${size_list[@]}"; do
    for s in "${server_list[@]}"; do run_big_room "$s" "$size"; done
  done
fi
elapsed=$((SECONDS - started))
log "done in ${elapsed}s"

echo "Big rooms: livecanvas vs the Node ws relay, $(date +%F), $(nproc) cores, load generators on the same machine"
echo
echo "livecanvas: \`${SERVER#"$ROOT"/}\` (sha256 ${server_sum:-n/a}); run time ${elapsed} s$( ((quick)) && echo ' (--quick)')"
echo
print_table
echo
echo "KiB = 1024 bytes, MB = 10^6 bytes. Idle memory: (server RSS at the end of a ${hold} s hold - RSS"
echo "before connecting) / connections, from the seed load generator's /proc readings; 'settled' is"
echo "this script's own reading once the crowd was in and no frames moved for 2 s. Latency figures"
echo "depend on what else the machine was doing (load average at the start: $loadavg0, at the end: $(cut -d' ' -f1-3 /proc/loadavg))."
echo
echo "Raw results: ${JSONL#"$ROOT"/}"
