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
COPY Cargo.toml Cargo.lock ./
COPY proto proto
COPY server server
COPY client-rs client-rs
# Workspace members the binary does not use still have to be present for Cargo to load
# the workspace; only arbiter-server is compiled.
COPY client-py client-py
COPY tests tests
COPY migrations migrations
# protoc is vendored by proto/build.rs and rustls uses ring: no system packages needed.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p arbiter-server --bin arbiter \
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
