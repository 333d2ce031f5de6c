# shellcheck shell=bash
# Shared by the benchmark scripts (sourced, not run): starting and stopping a server under
# `timeout`, its temporary data directory, and /proc readings. The sourcing script defines `log`
# and `die`, and sets ROOT and SERVER before calling start_livecanvas.

READY_DEADLINE_S=30 # how long a server may take to accept connections
STOP_DEADLINE_S=15  # how long a server may take to exit after SIGTERM

# livecanvas's per-address, per-room and per-connection limits are meant for people; one address
# opening thousands of sockets needs them raised.
# shellcheck disable=SC2034 # used by the scripts that source this file
LIVECANVAS_BENCH_FLAGS=(
  --max-connections-per-ip 1000000 --connection-rate-per-ip 1000000
  --connection-burst-per-ip 1000000 --max-clients-per-room 1000000
  --max-connections 1000000 --draws-per-second 1000000 --draw-burst 1000000
  --shutdown-grace 2s
)

server_tpid="" server_pid="" loadgen_pid="" data_dir=""

in_list() { [[ " $2 " == *" $1 "* ]]; }

stop_pid() { # stop_pid TIMEOUT_PID CHILD_PID: SIGTERM, then SIGKILL after the deadline
  local tpid=$1 pid=$2 deadline=$((SECONDS + STOP_DEADLINE_S))
  [[ -n $tpid ]] || return 0
  kill -TERM "$tpid" 2> /dev/null || true
  while kill -0 "$tpid" 2> /dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  if kill -0 "$tpid" 2> /dev/null; then
    log "pid $tpid did not stop within ${STOP_DEADLINE_S}s; killing it"
    [[ -z $pid ]] || kill -KILL "$pid" 2> /dev/null || true
    kill -KILL "$tpid" 2> /dev/null || true
  fi
  wait "$tpid" 2> /dev/null || true
}

# The temporary data directory of the current livecanvas run (never ./data).
remove_data_dir() {
  [[ -n $data_dir && $data_dir == "${TMPDIR:-/tmp}"/livecanvas-bench.* ]] && rm -rf -- "$data_dir"
  data_dir=""
}

cleanup() {
  stop_pid "$loadgen_pid" ""
  stop_pid "$server_tpid" "$server_pid"
  loadgen_pid="" server_tpid="" server_pid=""
  remove_data_dir
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Thousands of sockets per process: raise_open_files raises the open-file limit as far as allowed
# and sets $nofile; idle_clients_allowed then prints how many idle-crowd connections fit (the
# preset's IDLE_CLIENTS, or the limit less 1,000 for everything else when that is lower).
IDLE_CLIENTS=20000
raise_open_files() {
  ulimit -n "$(ulimit -Hn)" 2> /dev/null || true
  nofile=$(ulimit -n)
}
idle_clients_allowed() {
  if [[ $nofile != unlimited ]] && ((nofile < IDLE_CLIENTS + 1000)); then
    echo $((nofile - 1000))
  else
    echo "$IDLE_CLIENTS"
  fi
}

port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2> /dev/null; }

# free_port: a TCP port on 127.0.0.1 that nothing listens on (the kernel's pick). Callers take it
# with $(free_port), a subshell: nothing is remembered between calls.
free_port() {
  local port tries=0
  while ((tries++ < 50)); do
    port=$(python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
    if ! port_open "$port"; then
      echo "$port"
      return 0
    fi
  done
  die "no free port found"
}
dir_bytes() { find "$1" -type f -printf '%s\n' 2> /dev/null | awk '{ s += $1 } END { print s + 0 }'; }
peak_rss_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# new_data_dir: a fresh temporary data directory in $data_dir.
new_data_dir() { data_dir=$(mktemp -d "${TMPDIR:-/tmp}/livecanvas-bench.XXXXXX"); }

# spawn_server NAME PORT BOUND_S LOGFILE COMMAND...: runs COMMAND under `timeout BOUND_S` (so it
# cannot outlive a killed script by long), sets server_tpid/server_pid and waits until PORT accepts
# connections. Refuses a port already in use.
spawn_server() {
  local name=$1 port=$2 bound=$3 logfile=$4 deadline
  shift 4
  server_pid=""
  if port_open "$port"; then
    die "something already listens on 127.0.0.1:$port; stop it first"
  fi
  (cd "$ROOT" && exec timeout --kill-after=5 "$bound" "$@") > "$logfile" 2>&1 &
  server_tpid=$!
  deadline=$((SECONDS + READY_DEADLINE_S))
  while :; do
    if [[ -z $server_pid ]]; then
      # timeout's child; with `env` in front it execs the server, keeping the pid.
      server_pid=$(pgrep -P "$server_tpid" | head -n1 || true)
    fi
    if [[ -n $server_pid ]] && port_open "$port"; then return 0; fi
    if ! kill -0 "$server_tpid" 2> /dev/null; then
      log "$name exited before accepting connections; its log ($logfile):"
      tail -n 20 "$logfile" >&2
      server_tpid="" server_pid=""
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "$name did not accept connections on 127.0.0.1:$port within ${READY_DEADLINE_S}s"
      return 1
    fi
    sleep 0.1
  done
}
