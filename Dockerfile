# syntax=docker/dockerfile:1
#
# The operator image: a static (musl) binary on a distroless base, running as
# a non-root user. Build from the repository root:
#
#   docker build -t ghcr.io/zjlab/vision-operator:0.1.0 .
#
# (The project's own test environment has no container engine; this file is
# not built by hack/test.sh. See docs/INSTALL.md.)

ARG RUST_VERSION=1.95

# --- build: Rust on Alpine targets musl, which links statically by default.
FROM rust:${RUST_VERSION}-alpine AS build
# ring (TLS) compiles a little C and assembly.
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target directory between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin vision-operator \
 && cp target/release/vision-operator /vision-operator

# --- run: no shell, no package manager; CA certificates and a "nonroot" user.
FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="vision-operator" \
      org.opencontainers.image.description="Kubernetes operator dispatching AI vision jobs onto GPU pods" \
      org.opencontainers.image.source="https://github.com/zjlab/vision-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /vision-operator /usr/local/bin/vision-operator
# nonroot is 65532:65532, the UID the Helm chart's securityContext uses.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/vision-operator"]
