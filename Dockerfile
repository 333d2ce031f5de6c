# livecanvas: multi-stage build. The first stage compiles (with a cached dependency layer), the
# second is a small Debian runtime with the binary, the frontend, a data volume and a non-root user.
# tests/dockerfile.rs keeps this file consistent with the crate, .dockerignore and compose.yaml, and
# runs hadolint over it.

FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the manifests or Cargo.lock change. The stub
# sources let cargo build every dependency without the real code.
# The workspace's other member, the load generator, does not belong in the image: cargo only needs
# its manifest and a stub target to read the workspace, and never builds it here.
COPY Cargo.toml Cargo.lock ./
COPY crates/livecanvas-load/Cargo.toml ./crates/livecanvas-load/
RUN mkdir -p src crates/livecanvas-load/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > crates/livecanvas-load/src/main.rs \
    && cargo build --release --locked --bin livecanvas \
    && rm -rf src
COPY src ./src
# The font texts are drawn in is built into the binary (src/lettering.rs).
COPY frontend/fonts ./frontend/fonts
# Make sure cargo sees the real sources as newer than the stub's build. Only the server is built.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin livecanvas

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="livecanvas" \
      org.opencontainers.image.description="A real-time shared drawing canvas: actix actors, WebSockets, a vanilla-JS frontend." \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="MIT"
# A fixed numeric uid/gid, so that USER is resolvable without /etc/passwd and volume ownership is
# predictable on the host. /data is created here so that a fresh named volume inherits the owner.
RUN groupadd --gid 10001 livecanvas \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin livecanvas \
    && mkdir /data \
    && chown 10001:10001 /data
WORKDIR /app
COPY --from=build /src/target/release/livecanvas /app/livecanvas
COPY frontend /app/frontend
# LIVECANVAS_DATA_DIR is where the server keeps what it persists.
ENV LIVECANVAS_BIND=0.0.0.0:8080 \
    LIVECANVAS_FRONTEND_DIR=/app/frontend \
    LIVECANVAS_DATA_DIR=/data \
    RUST_LOG=info
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8080
# The binary checks itself: GET http://127.0.0.1:<port of LIVECANVAS_BIND, or of
# LIVECANVAS_METRICS_BIND if set>/healthz, exit 0 on 200. No curl or wget in the image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/app/livecanvas", "healthcheck"]
ENTRYPOINT ["/app/livecanvas"]
