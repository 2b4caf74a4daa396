# The operator image: one static binary on an empty base, running as a
# non-root user. Two steps, from the repository root:
#
#   RUSTFLAGS="-C target-feature=+crt-static" \
#     cargo build --release --locked --target x86_64-unknown-linux-gnu --bin vision-operator
#   docker build -t ghcr.io/zjlab/vision-operator:0.1.0 .
#
# The binary is built on the host (glibc, linked statically: it needs no
# libraries, no shell and no CA bundle; in the cluster it trusts the
# ServiceAccount's CA). The project's own tests build this same file without
# a container engine (hack/images/oci_image.py, which accepts exactly the
# instructions used here) and run it on the local cluster's real node; see
# docs/INSTALL.md.
FROM scratch
LABEL org.opencontainers.image.title="vision-operator" \
      org.opencontainers.image.description="Kubernetes operator dispatching AI vision jobs onto GPU pods" \
      org.opencontainers.image.source="https://github.com/zjlab/vision-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY target/x86_64-unknown-linux-gnu/release/vision-operator /usr/local/bin/vision-operator
# 65532:65532, the UID/GID the Helm chart's securityContext uses.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/vision-operator"]
