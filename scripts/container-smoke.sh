#!/usr/bin/env bash
# Opt-in smoke test of the container image, for a machine with podman but no Docker engine and no
# reachable container registry. Not part of `cargo test` or .ci/run. Needs root and Debian.
#
# 1. Base images: where `debian:bookworm-slim` / `rust:1-bookworm` are not in podman's store (none can
#    be pulled), stand-ins are made locally: a debootstrap minbase of bookworm, and for the builder the
#    same plus gcc/g++/libc6-dev/make/ca-certificates and this machine's Rust toolchain in
#    /usr/local/cargo/bin. The Dockerfile is used unchanged.
# 2. `podman build` of the Dockerfile (docker format, so HEALTHCHECK is kept). The build reaches
#    crates.io through the host's network and trusts the host's CA bundle (mounted at build time only).
# 3. The image's config: non-root numeric USER, EXPOSE, VOLUME, HEALTHCHECK, LIVECANVAS_* env.
# 4. A container with no network but its own loopback (--network=none), a named volume at /data:
#    - it runs as uid 10001 and can write to /data;
#    - `podman healthcheck run` (the image's HEALTHCHECK, i.e. `livecanvas healthcheck`) is healthy;
#    - from inside its network namespace (nsenter, loopback only): GET /healthz 200, GET / serves the
#      page, and /ws answers a WebSocket handshake with 101;
#    - `livecanvas healthcheck` exits 1 when nothing listens (a second, idle container);
#    - with a WebSocket client connected, `podman stop` (SIGTERM) ends it with exit code 0 in less
#      than compose's stop_grace_period (15s).
# All traffic stays on loopback inside the container's own network namespace.
#
# Usage: sudo scripts/container-smoke.sh        (LIVECANVAS_SMOKE_KEEP=1 keeps image and volume)
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=localhost/livecanvas:smoke
NAME=livecanvas-smoke
VOLUME=livecanvas-smoke-data
WORK=${LIVECANVAS_SMOKE_DIR:-/var/tmp/livecanvas-smoke}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Sandboxed machines: no CAP_SYS_RESOURCE (podman's default rlimits cannot be set, so lower ones are
# given) and cgroup v1/v2 hybrid mounts that crun refuses (runc copes).
read -r -a PODMAN <<<"${LIVECANVAS_SMOKE_PODMAN:-podman --runtime runc}"
read -r -a LIMITS <<<"${LIVECANVAS_SMOKE_LIMITS:---ulimit nofile=4096:4096 --ulimit nproc=4096:4096}"

say() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
pass() { printf 'ok: %s\n' "$*"; }

[ "$(id -u)" = 0 ] || fail "run as root (rootful podman, debootstrap)"
need=()
for tool in podman debootstrap runc curl nsenter; do
    command -v "$tool" >/dev/null || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
    say "installing podman, runc, debootstrap, curl"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        podman runc debootstrap curl util-linux ca-certificates >/dev/null
fi

cleanup() {
    "${PODMAN[@]}" rm -f -v "$NAME" "$NAME-idle" >/dev/null 2>&1 || true
    if [ -z "${LIVECANVAS_SMOKE_KEEP:-}" ]; then
        "${PODMAN[@]}" volume rm -f "$VOLUME" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT
cleanup

# --- 1. base images ----------------------------------------------------------------------------
mkdir -p "$WORK"
if ! "${PODMAN[@]}" image exists docker.io/library/debian:bookworm-slim; then
    say "making debian:bookworm-slim with debootstrap (minbase)"
    rm -rf "$WORK/slim"
    debootstrap --variant=minbase bookworm "$WORK/slim" "$DEBIAN_MIRROR" >"$WORK/slim.log"
    rm -rf "$WORK"/slim/var/cache/apt/archives/*.deb "$WORK"/slim/var/lib/apt/lists/*
    tar -C "$WORK/slim" -c . | "${PODMAN[@]}" import --change 'CMD ["bash"]' - \
        docker.io/library/debian:bookworm-slim >/dev/null
fi
if ! "${PODMAN[@]}" image exists docker.io/library/rust:1-bookworm; then
    say "making rust:1-bookworm: debootstrap + build tools + this machine's Rust toolchain"
    toolchain=$(dirname "$(dirname "$(rustup which cargo)")")
    rm -rf "$WORK/rust"
    debootstrap --variant=minbase --include=gcc,g++,libc6-dev,make,pkg-config,ca-certificates \
        bookworm "$WORK/rust" "$DEBIAN_MIRROR" >"$WORK/rust.log"
    rm -rf "$WORK"/rust/var/cache/apt/archives/*.deb "$WORK"/rust/var/lib/apt/lists/*
    mkdir -p "$WORK/rust/usr/local/cargo"
    cp -a "$toolchain/bin" "$toolchain/lib" "$toolchain/libexec" "$WORK/rust/usr/local/cargo/"
    tar -C "$WORK/rust" -c . | "${PODMAN[@]}" import \
        --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV CARGO_HOME=/usr/local/cargo' \
        --change 'CMD ["bash"]' - docker.io/library/rust:1-bookworm >/dev/null
fi

# --- 2. build ----------------------------------------------------------------------------------
say "podman build"
"${PODMAN[@]}" build "${LIMITS[@]}" --pull=never --format docker --network=host \
    -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
    -t "$IMAGE" . >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; fail "build (log: $WORK/build.log)"; }
pass "built $IMAGE ($("${PODMAN[@]}" image inspect "$IMAGE" --format '{{.Size}}') bytes)"

# --- 3. image config ---------------------------------------------------------------------------
say "image config"
config() { "${PODMAN[@]}" image inspect "$IMAGE" --format "$1"; }
[ "$(config '{{.Config.User}}')" = "10001:10001" ] || fail "USER is $(config '{{.Config.User}}')"
pass "USER 10001:10001"
config '{{json .Config.ExposedPorts}}' | grep -q '"8080/tcp"' || fail "EXPOSE"
pass "EXPOSE 8080/tcp"
config '{{json .Config.Volumes}}' | grep -q '"/data"' || fail "VOLUME /data"
pass "VOLUME /data"
config '{{json .Config.Healthcheck}}' | grep -q '"/app/livecanvas","healthcheck"' \
    || fail "HEALTHCHECK missing: $(config '{{json .Config.Healthcheck}}')"
pass "HEALTHCHECK $(config '{{json .Config.Healthcheck.Test}}')"
for env in LIVECANVAS_BIND=0.0.0.0:8080 LIVECANVAS_FRONTEND_DIR=/app/frontend LIVECANVAS_DATA_DIR=/data; do
    config '{{json .Config.Env}}' | grep -q "\"$env\"" || fail "ENV $env"
done
pass "ENV LIVECANVAS_BIND, LIVECANVAS_FRONTEND_DIR, LIVECANVAS_DATA_DIR"

# --- 4. run ------------------------------------------------------------------------------------
say "run (--network=none: loopback only)"
"${PODMAN[@]}" run -d "${LIMITS[@]}" --network=none --name "$NAME" -v "$VOLUME:/data" "$IMAGE" >/dev/null
pid=$("${PODMAN[@]}" inspect "$NAME" --format '{{.State.Pid}}')
inside() { nsenter -t "$pid" -n "$@"; }
for _ in $(seq 50); do
    inside curl -fsS -o /dev/null http://127.0.0.1:8080/healthz 2>/dev/null && break
    sleep 0.2
done
health=$(inside curl -fsS http://127.0.0.1:8080/healthz) || {
    "${PODMAN[@]}" logs "$NAME"; fail "GET /healthz"; }
pass "GET /healthz: $health"
inside curl -fsS http://127.0.0.1:8080/ | grep -q '<canvas' || fail "GET / does not serve the page"
pass "GET / serves the canvas page from /app/frontend"
status=$(inside curl -s -o /dev/null -w '%{http_code}' --max-time 3 \
    -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' \
    -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' http://127.0.0.1:8080/ws || true)
[ "$status" = 101 ] || fail "GET /ws upgrade answered $status"
pass "GET /ws: 101 Switching Protocols"

uid=$("${PODMAN[@]}" exec "$NAME" id -u)
[ "$uid" = 10001 ] || fail "runs as uid $uid"
pass "the server runs as uid 10001"
"${PODMAN[@]}" exec "$NAME" sh -c 'echo probe > /data/.probe && rm /data/.probe' || fail "/data not writable"
pass "/data (named volume) is writable by the server's user"

"${PODMAN[@]}" exec "$NAME" /app/livecanvas healthcheck || fail "livecanvas healthcheck in the container"
pass "livecanvas healthcheck exits 0 while serving"
"${PODMAN[@]}" healthcheck run "$NAME" || fail "podman healthcheck run"
pass "podman healthcheck run (the image's HEALTHCHECK): healthy"

"${PODMAN[@]}" run -d "${LIMITS[@]}" --network=none --name "$NAME-idle" --entrypoint sleep "$IMAGE" 60 >/dev/null
if "${PODMAN[@]}" exec "$NAME-idle" /app/livecanvas healthcheck 2>/dev/null; then
    fail "livecanvas healthcheck passed with nothing listening"
fi
pass "livecanvas healthcheck exits non-zero when nothing listens"

say "stop (SIGTERM) with a WebSocket client connected"
inside curl -s -N -o /dev/null --max-time 30 \
    -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' \
    -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' http://127.0.0.1:8080/ws/smoke &
client=$!
for _ in $(seq 50); do
    inside curl -fsS http://127.0.0.1:8080/healthz | grep -q '"connections":1' && break
    sleep 0.2
done
inside curl -fsS http://127.0.0.1:8080/healthz | grep -q '"connections":1' || fail "the client did not connect"
start=$(date +%s)
"${PODMAN[@]}" stop -t 15 "$NAME" >/dev/null
took=$(($(date +%s) - start))
code=$("${PODMAN[@]}" inspect "$NAME" --format '{{.State.ExitCode}}')
[ "$code" = 0 ] || fail "exit code $code after SIGTERM (took ${took}s)"
[ "$took" -lt 15 ] || fail "stop took ${took}s, more than compose's stop_grace_period"
wait "$client" || true
pass "stopped on SIGTERM in ${took}s with exit code 0, a client connected"

printf '\nall container smoke checks passed\n'
