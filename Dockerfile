# livecanvas: multi-stage build. The first stage compiles (with a cached dependency layer), the
# second is a small Debian runtime with the binary, the frontend, and a non-root user.

FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first: this layer is rebuilt only when Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
# Make sure cargo sees the real sources as newer than the stub's build.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin livecanvas
WORKDIR /app
COPY --from=build /src/target/release/livecanvas /app/livecanvas
COPY frontend /app/frontend
ENV LIVECANVAS_BIND=0.0.0.0:8080 \
    LIVECANVAS_FRONTEND_DIR=/app/frontend \
    RUST_LOG=info
USER livecanvas
EXPOSE 8080
ENTRYPOINT ["/app/livecanvas"]
