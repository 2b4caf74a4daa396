#!/usr/bin/env bash
# The project's test command: starts the local cluster (building what is
# missing), runs every test target with the end-to-end tests enabled, and
# stops the cluster on exit.
#
# The real node (kubelet + containerd, hack/node/) is started too when the
# run includes tests/real_node.rs or tests/real_runtime.rs (no
# target-selecting argument, or `--test real_node` / `--test real_runtime`);
# REAL_NODE=1 or 0 forces it on or off. It goes down
# with the cluster.
#
# After cargo's tests, the Python client's (clients/python: ruff, mypy,
# pytest, its e2e tests on the same cluster) run through hack/python.sh,
# which makes their virtualenv; not when the arguments pick cargo targets
# (--test X, --lib, ...); PYTHON_TESTS=1 or 0 forces them on or off. With
# them, the web view's browser test (tests/browser: headless Chromium,
# installed by hack/chromium.sh, against `visionctl ui` during a burst;
# screenshots in .local/artifacts/browser/); BROWSER_TESTS=1 or 0 forces it.
#
# KEEP_CLUSTER=1 leaves the cluster running. Without KEEP_CLUSTER, a cluster
# that was already running when this script started (a developer's, shared by
# others in the same checkout) is reused and left running; KEEP_CLUSTER=0
# stops it anyway. Nor is it stopped while another hack/test.sh in the same
# checkout still uses it. CI always starts from no cluster and runs alone, so
# CI always stops it.
#
#   hack/test.sh [extra cargo test args: a test name filter, --test X, ...] [-- harness args]
#
# Exits non-zero if the cluster cannot be built or started, or a test fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
mkdir -p .local/logs

was_running=0
if hack/cluster.sh status >/dev/null 2>&1; then was_running=1; fi
# Test runs using the cluster now (one file per run, named by its pid).
users=.local/cluster-users
mkdir -p "$users"
touch "$users/$$"

others() {
  local f
  for f in "$users"/*; do
    [ -e "$f" ] || continue
    [ "${f##*/}" = "$$" ] && continue
    if kill -0 "${f##*/}" 2>/dev/null; then return 0; fi
    rm -f "$f"
  done
  return 1
}

cleanup() {
  local rc=$?
  rm -f "$users/$$"
  if [ "${KEEP_CLUSTER:-}" = 1 ] || { [ -z "${KEEP_CLUSTER:-}" ] && [ "$was_running" = 1 ]; }; then
    echo "[test] leaving the cluster running (hack/cluster.sh down stops it)" >&2
  elif others; then
    echo "[test] another test run is using the cluster: leaving it running" >&2
  else
    hack/cluster.sh down >/dev/null 2>&1 || echo "[test] hack/cluster.sh down failed" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start=$SECONDS
# Does this run include the real-node tests?
real_node=1
for a in "$@"; do
  case "$a" in
    --test | --tests | --lib | --bin | --bin=* | --bins | --bench | --bench=* | --benches | --example | --example=* | --examples | --doc | --test=*)
      real_node=0 ;;
  esac
done
for a in "$@"; do
  case "$a" in real_node | real_runtime | --test=real_node | --test=real_runtime) real_node=1 ;; esac
done
real_node="${REAL_NODE:-$real_node}"
# The Python client's tests (hack/python.sh test: ruff, mypy, pytest, the e2e
# ones on this cluster) run after cargo's, unless the arguments pick cargo
# targets; PYTHON_TESTS=1 or 0 forces them on or off.
python_tests=1
for a in "$@"; do
  case "$a" in
    --test | --tests | --lib | --bin | --bin=* | --bins | --bench | --bench=* | --benches | --example | --example=* | --examples | --doc | --test=*)
      python_tests=0 ;;
  esac
done
python_tests="${PYTHON_TESTS:-$python_tests}"
up_args=()
if [ "$real_node" = 1 ]; then up_args+=(--real-node); fi
if ! hack/cluster.sh up "${up_args[@]}" >.local/logs/cluster-up.log 2>&1; then
  echo "[test] hack/cluster.sh up failed:" >&2
  tail -n 60 .local/logs/cluster-up.log >&2
  exit 1
fi
echo "[test] cluster up in $((SECONDS - start))s"
# promtool (tests/alerts.rs) from its Go module: cached after the first build
# (about 10 min cold on 2 cores; hack/README.md), built here so that its cost
# shows as a step of its own rather than inside one test.
t=$SECONDS
if VISION_PROMTOOL="$(hack/cluster.sh promtool 2>>.local/logs/promtool-build.log)"; then
  export VISION_PROMTOOL
  echo "[test] promtool ready in $((SECONDS - t))s"
else
  echo "[test] building promtool failed (.local/logs/promtool-build.log); tests/alerts.rs will say so" >&2
fi

VISION_KUBECONFIG="$ROOT/.local/cluster/kubeconfig"
VISION_KUBECTL="$(hack/cluster.sh env | sed -n 's/^export PATH=\([^:]*\):.*/\1/p')/kubectl"
export VISION_KUBECONFIG VISION_KUBECTL
"$VISION_KUBECTL" --kubeconfig "$VISION_KUBECONFIG" get nodes -L nvidia.com/gpu.present

# Tests may be filtered (`hack/test.sh smoke`) or given harness flags after
# `--` (`hack/test.sh -- --nocapture`).
cargo_args=() test_args=()
while [ $# -gt 0 ]; do
  if [ "$1" = -- ]; then shift; test_args+=("$@"); break; fi
  cargo_args+=("$1"); shift
done
# All targets, unless the arguments pick some (--test X, --lib, ...).
targets=(--all-targets)
for a in "${cargo_args[@]}"; do
  case "$a" in
    --test | --test=* | --tests | --lib | --bin | --bin=* | --bins | --bench | --bench=* | --benches | --example | --example=* | --examples | --doc)
      targets=() ;;
  esac
done
# The offline image builder's own tests (a second, no cluster), with every
# unfiltered run.
if [ ${#targets[@]} -gt 0 ] && [ ${#cargo_args[@]} -eq 0 ]; then
  echo "[test] hack/images/tests: the offline image builder"
  python3 -W error -m unittest discover -s hack/images/tests
fi
# Two test threads, set through the environment: `-- --test-threads=2` would
# also reach the criterion bench binaries (--all-targets), which reject it.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"
rc=0
if [ ${#test_args[@]} -gt 0 ]; then
  cargo test --workspace --no-fail-fast "${targets[@]}" --features e2e "${cargo_args[@]}" -- "${test_args[@]}" || rc=$?
else
  cargo test --workspace --no-fail-fast "${targets[@]}" --features e2e "${cargo_args[@]}" || rc=$?
fi
# Every binary with the features of the `cargo test` above (the dev-
# dependencies' included), so nothing is compiled twice; the same build as
# WORKSPACE_BUILD in tests/harness/mod.rs.
workspace_build=(build --workspace --bins --tests --features e2e)
if [ "$python_tests" = 1 ]; then
  # Its e2e tests start target/debug/vision-operator (built above unless the
  # run picked targets).
  echo "[test] clients/python: hack/python.sh test"
  { cargo "${workspace_build[@]}" && hack/python.sh test; } || rc=1
  echo "[test] clients/python-worker: hack/python.sh worker"
  hack/python.sh worker || rc=1
fi
if [ "${BROWSER_TESTS:-$python_tests}" = 1 ]; then
  echo "[test] tests/browser: hack/python.sh browser (the web view in headless Chromium)"
  { cargo "${workspace_build[@]}" && hack/python.sh browser; } || rc=1
fi
exit "$rc"
