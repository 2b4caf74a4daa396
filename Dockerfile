# The operator image: one static binary on an empty base, running as a
# non-root user. Two steps, from the repository root:
#
#   RUSTFLAGS="-C target-feature=+crt-static" \
#     cargo build --release --locked --target x86_64-unknown-linux-gnu --bin vision-operator
#   docker build -t ghcr.io/zjlab/vision-operator:0.1.0 .
#
# PROFILE is the Cargo profile whose binary is copied (default release, what
# users ship). The project's tests pass --build-arg PROFILE=image-test: the
# same static binary, optimised less, so that CI's rebuild on every change
# takes a minute or two instead of 5-8 (Cargo.toml, [profile.image-test]).
#
# The binary is built on the host (glibc, linked statically: it needs no
# libraries, no shell and no CA bundle; in the cluster it trusts the
# ServiceAccount's CA). The project's own tests build this same file without
# a container engine (hack/images/oci_image.py, which accepts exactly the
# instructions used here) and run it on the local cluster's real node; see
# docs/INSTALL.md.
FROM scratch
ARG PROFILE=release
LABEL org.opencontainers.image.title="vision-operator" \
      org.opencontainers.image.description="Kubernetes operator dispatching AI vision jobs onto GPU pods" \
      org.opencontainers.image.source="https://github.com/zjlab/vision-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY target/x86_64-unknown-linux-gnu/${PROFILE}/vision-operator /usr/local/bin/vision-operator
# 65532:65532, the UID/GID the Helm chart's securityContext uses.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/vision-operator"]
