#!/usr/bin/env bash
# The chaos suite's long mode (issue 12; docs/RELIABILITY.md): at least 2,000
# jobs through three operator replicas while the leader is SIGKILLed at least
# 20 times, SIGSTOPped 5 times for longer than its lease, kube-apiserver and
# etcd are restarted, and the fault proxy blackholes, delays and answers
# 429/500 to the lease renewals, pod creates and status writes of one
# replica. Prints the table and exits non-zero on any violation.
#
#   hack/chaos.sh [extra `vision-chaos run` flags, e.g. --seed 7 --jobs 4000]
#
# The restarts disturb everyone using the local cluster: run it on a
# cluster of your own (or when nobody else is testing). It starts the
# cluster if needed (hack/cluster.sh up) and leaves it running.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
mkdir -p .local/logs/chaos

hack/cluster.sh up >.local/logs/cluster-up.log 2>&1 || {
  tail -n 40 .local/logs/cluster-up.log >&2
  exit 1
}
# The build the tests make (tests/harness WORKSPACE_BUILD): `-p` builds
# unify features differently and would compile kube once more.
cargo build --quiet --workspace --bins --tests --features e2e

out=".local/logs/chaos/long-$(date -u +%Y%m%dT%H%M%SZ).md"
echo "[chaos] table goes to $out; replica logs and the timeline to .local/logs/chaos/<namespace>/" >&2
set +e
target/debug/vision-chaos run \
  --kubeconfig .local/cluster/kubeconfig \
  --operator target/debug/vision-operator \
  --cluster-dir .local/cluster \
  --jobs 2000 --replicas 3 --kills 20 --pauses 5 --restarts 1 --proxy-faults 2 \
  --seed 1 --timeout 3600 "$@" | tee "$out"
rc=${PIPESTATUS[0]}
exit "$rc"
