# syntax=docker/dockerfile:1
# The image helm/arbiter deploys: the `arbiter` binary alone, at /usr/local/bin/arbiter,
# running as an unprivileged user. No test builds it (there is no Docker engine in CI);
# the chart tests run the same binary with the rendered command, args and environment.
#
#   docker build -t ghcr.io/arbiter-pdp/arbiter:0.1.0 .

# --- build -------------------------------------------------------------------------
# Pinned to the workspace's toolchain generation; bookworm matches the runtime's glibc.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Manifests first: the dependency layer is rebuilt only when Cargo.lock changes.
COPY Cargo.toml Cargo.lock ./
COPY proto/Cargo.toml proto/Cargo.toml
COPY server/Cargo.toml server/Cargo.toml
COPY client-rs/Cargo.toml client-rs/Cargo.toml
COPY tests/Cargo.toml tests/Cargo.toml
COPY proto proto
COPY server server
COPY client-rs client-rs
COPY tests tests
COPY migrations migrations
# protoc is vendored by proto/build.rs and rustls uses ring: no system packages needed.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin arbiter \
 && install -D -m 0755 target/release/arbiter /out/arbiter

# --- runtime -----------------------------------------------------------------------
# distroless/cc: glibc and CA certificates, no shell, no package manager. Its nonroot
# user is 65532, the uid the chart's securityContext runs as.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/arbiter /usr/local/bin/arbiter
USER 65532:65532
# The chart mounts its volume here; outside Kubernetes, mount one too (`-v …:/var/lib/arbiter`).
ENV ARBITER_STORAGE__DATA_DIR=/var/lib/arbiter
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/arbiter"]
CMD ["serve"]
