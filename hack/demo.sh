#!/usr/bin/env bash
# The demo (`make demo`): vision-operator doing its job on the local cluster.
#
#   hack/demo.sh [up] [vision-dev demo flags, e.g. --count 300]
#       builds what is missing (the operator, visionctl, vision-dev, the cluster's
#       binaries), starts or reuses the local cluster with fake GPU nodes,
#       installs the CRDs, the demo queue and algorithms (hack/demo/), starts
#       the operator in the background, then submits ~1000 VisionJobs through
#       the Kubernetes API with `vision-dev demo` and follows them to the end.
#       Next to that simulated burst, a few jobs of a real algorithm
#       (examples/algorithms/face-detect: OpenCV face detection) run as real
#       containers on the cluster's kubelet node, and their detections are
#       printed at the end. The cluster and the operator are left running.
#   hack/demo.sh down
#       stops the demo's operator (by its pid) and the cluster (unless e2e
#       tests are using it).
#
# Environment: DEMO_HTTP_ADDR (operator's /metrics, default 127.0.0.1:8080),
# VISION_CLUSTER_DIR (cluster state, default .local/cluster), NO_BARS=1
# (plain progress lines even on a terminal; they are the default without one),
# DEMO_REAL_NODE=0 (skip the real node and the real algorithm's jobs: faster
# the first time, which builds the kubelet, containerd and the image).
set -euo pipefail
shopt -s inherit_errexit

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STATE="${VISION_CLUSTER_DIR:-$ROOT/.local/cluster}"
KCFG="$STATE/kubeconfig"
HTTP_ADDR="${DEMO_HTTP_ADDR:-127.0.0.1:8080}"
REAL="${DEMO_REAL_NODE:-1}"
PIDFILE="$ROOT/.local/demo-operator.pid"
LOG="$ROOT/.local/logs/demo-operator.log"
OPERATOR="$ROOT/target/debug/vision-operator"
VISIONDEV="$ROOT/target/debug/vision-dev"

say() { printf '[demo] %s\n' "$*" >&2; }
die() { printf '[demo] ERROR: %s\n' "$*" >&2; exit 1; }

# The pid in the pid file, if it is a live vision-operator.
operator_pid() {
  local pid
  [ -f "$PIDFILE" ] || return 1
  pid="$(cat "$PIDFILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'vision-operator' || return 1
  echo "$pid"
}

stop_operator() {
  local pid
  if pid="$(operator_pid)"; then
    say "stopping the demo operator (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$PIDFILE"
}

# Are e2e tests (hack/test.sh) using the cluster now? (They use the default
# cluster directory only.)
tests_running() {
  local f
  [ "$STATE" = "$ROOT/.local/cluster" ] || return 1
  for f in "$ROOT/.local/cluster-users"/*; do
    [ -e "$f" ] && kill -0 "${f##*/}" 2>/dev/null && return 0
  done
  pgrep -f 'cargo test' >/dev/null 2>&1
}

# The real algorithm: build its image offline (hack/images), import it into
# the real node, register it as the VisionAlgorithm `face-detect` pinned to
# that node, and submit a few jobs with different detector settings. They
# share the demo queue with the simulated burst, at a higher priority.
submit_real_jobs() {
  local kubectl=("$@") ref n
  say "building the face-detect image and importing it into the real node (hack/cluster.sh image face-detect)"
  ref="$(hack/cluster.sh image face-detect | awk '{print $2}')" || die "building the face-detect image failed"
  [ -n "$ref" ] || die "hack/cluster.sh image face-detect printed no image reference"
  "${kubectl[@]}" apply --server-side --force-conflicts -f examples/algorithms/face-detect/algorithm.yaml >/dev/null
  # The locally imported image (never pulled), on the tainted real node.
  "${kubectl[@]}" patch visionalgorithm face-detect --type=json -p "[
    {\"op\": \"replace\", \"path\": \"/spec/template/spec/containers/0/image\", \"value\": \"$ref\"},
    {\"op\": \"add\", \"path\": \"/spec/template/spec/containers/0/imagePullPolicy\", \"value\": \"Never\"},
    {\"op\": \"add\", \"path\": \"/spec/template/spec/nodeSelector\", \"value\": {\"type\": \"real\"}},
    {\"op\": \"add\", \"path\": \"/spec/template/spec/tolerations\", \"value\": [
      {\"key\": \"vision.zjlab.io/real-node\", \"operator\": \"Exists\", \"effect\": \"NoSchedule\"}]}
  ]" >/dev/null
  "${kubectl[@]}" create namespace vision-demo --dry-run=client -o yaml | "${kubectl[@]}" apply -f - >/dev/null
  "${kubectl[@]}" delete visionjobs -n vision-demo -l demo.vision.zjlab.io/real=true --wait=true >/dev/null 2>&1 || true
  for n in 3 5 8; do
    "${kubectl[@]}" apply -f - >/dev/null <<EOF
apiVersion: vision.zjlab.io/v1alpha1
kind: VisionJob
metadata:
  name: faces-min-neighbors-$n
  namespace: vision-demo
  labels: {demo.vision.zjlab.io/real: "true"}
spec:
  algorithm: face-detect
  priority: 10
  input: {image: astronaut.jpg}
  params: {minNeighbors: $n}
EOF
  done
  say "submitted 3 face-detect jobs (real containers on the node vision-node)"
}

# Waits for the real algorithm's jobs, prints their detections, and fails
# unless all succeeded.
show_real_jobs() {
  local kubectl=("$@") names=()
  mapfile -t names < <("${kubectl[@]}" get visionjobs -n vision-demo \
    -l demo.vision.zjlab.io/real=true -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
  [ "${#names[@]}" -gt 0 ] || return 1
  "$ROOT/target/debug/visionctl" --kubeconfig "$KCFG" -n vision-demo wait "${names[@]}" --wait-timeout 5m >/dev/null || true
  echo
  echo "The real algorithm: OpenCV face detection in real containers on the kubelet node vision-node"
  "${kubectl[@]}" get visionjobs -n vision-demo -l demo.vision.zjlab.io/real=true -o \
    custom-columns='JOB:.metadata.name,PHASE:.status.phase,POD:.status.podName,DETECTIONS:.status.result.detections'
  local phases
  phases="$("${kubectl[@]}" get visionjobs -n vision-demo -l demo.vision.zjlab.io/real=true \
    -o jsonpath='{.items[*].status.phase}')"
  [ -z "$(tr ' ' '\n' <<<"$phases" | grep -v '^Succeeded$')" ]
}

down() {
  stop_operator
  if tests_running; then
    say "e2e tests are using the cluster: leaving it running (hack/cluster.sh down stops it)"
  else
    hack/cluster.sh down
  fi
}

up() {
  command -v cargo >/dev/null || die "cargo is not installed"
  command -v curl >/dev/null || die "curl is not installed"
  if tests_running && [ "${DEMO_FORCE:-0}" != 1 ]; then
    die "e2e tests are running on the local cluster (hack/test.sh / cargo test): their operators and the demo's would both admit the same jobs. Wait for them, use a separate cluster (VISION_CLUSTER_DIR=$ROOT/.local/demo-cluster make demo), or DEMO_FORCE=1."
  fi
  say "building vision-operator, visionctl and vision-dev (cargo build; minutes the first time)"
  cargo build --bin vision-operator --bin visionctl --bin vision-dev || die "cargo build failed"

  mkdir -p "$ROOT/.local/logs"
  say "starting the local cluster (hack/cluster.sh up; the first time builds Kubernetes from source, which takes a while)"
  # A healthy cluster is reused as it is (`up` would only re-apply its nodes).
  local up_args=()
  if [ "$REAL" = 1 ]; then up_args+=(--real-node); fi
  if hack/cluster.sh status >/dev/null 2>&1; then
    say "reusing the running cluster"
    if [ "$REAL" = 1 ] && ! hack/cluster.sh node status >/dev/null 2>&1; then
      say "starting its real kubelet node (hack/cluster.sh node up)"
      hack/cluster.sh node up >"$ROOT/.local/logs/demo-cluster-up.log" 2>&1 ||
        { tail -n 40 "$ROOT/.local/logs/demo-cluster-up.log" >&2; die "hack/cluster.sh node up failed"; }
    fi
  elif ! hack/cluster.sh up "${up_args[@]}" >"$ROOT/.local/logs/demo-cluster-up.log" 2>&1; then
    tail -n 40 "$ROOT/.local/logs/demo-cluster-up.log" >&2
    die "hack/cluster.sh up failed (log: .local/logs/demo-cluster-up.log)"
  fi
  local envs kbin
  envs="$(hack/cluster.sh env)"
  kbin="$(sed -n 's/^export PATH=\([^:]*\):.*/\1/p' <<<"$envs")"
  local kubectl=("$kbin/kubectl" --kubeconfig "$KCFG")

  say "installing the CRDs, the demo queue and algorithms (hack/demo/)"
  "${kubectl[@]}" apply --server-side --force-conflicts -f crds/ >/dev/null
  # Just-created CRDs have no conditions yet, which `kubectl wait` takes as an error.
  for _ in $(seq 1 60); do
    "${kubectl[@]}" wait --for condition=established --timeout=5s \
      crd/visionjobs.vision.zjlab.io crd/visionqueues.vision.zjlab.io crd/visionalgorithms.vision.zjlab.io >/dev/null 2>&1 && break
    sleep 1
  done
  "${kubectl[@]}" apply --server-side --force-conflicts -f hack/demo/ >/dev/null

  stop_operator
  local host="${HTTP_ADDR%:*}" port="${HTTP_ADDR##*:}"
  if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
    die "$HTTP_ADDR is already in use (another operator?); set DEMO_HTTP_ADDR=127.0.0.1:<free port>"
  fi
  say "starting the operator (log: .local/logs/demo-operator.log)"
  nohup "$OPERATOR" --kubeconfig "$KCFG" --http-addr "$HTTP_ADDR" --leader-election false \
    >"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  local ready=0
  for _ in $(seq 1 120); do
    if curl -fsS "http://$HTTP_ADDR/readyz" >/dev/null 2>&1; then ready=1; break; fi
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { tail -n 20 "$LOG" >&2; die "the operator exited"; }
    sleep 0.5
  done
  [ "$ready" = 1 ] || { tail -n 20 "$LOG" >&2; die "the operator did not become ready"; }

  if [ "$REAL" = 1 ]; then submit_real_jobs "${kubectl[@]}"; fi

  local rc=0
  "$VISIONDEV" --kubeconfig "$KCFG" demo --metrics-url "http://$HTTP_ADDR/metrics" "$@" || rc=$?

  if [ "$REAL" = 1 ]; then show_real_jobs "${kubectl[@]}" || rc=1; fi

  cat <<EOF

The cluster and the operator (pid $(cat "$PIDFILE"), log .local/logs/demo-operator.log) are still running. Explore:
  export KUBECONFIG=$KCFG
  export PATH=$kbin:$ROOT/target/debug:\$PATH
  kubectl get vj -n vision-demo            # or: visionctl get -n vision-demo
  kubectl get vq,va                        # queues and algorithms
  visionctl submit -n vision-demo -a demo-detect --input '{"uri":"s3://frames/cam1/1.jpg"}' --name my-job --wait
  curl -s http://$HTTP_ADDR/metrics | grep '^vision_operator_'
Stop everything:
  make demo-down
EOF
  if [ "$rc" != 0 ]; then
    say "the demo did not finish cleanly (exit $rc): see the jobs above and .local/logs/demo-operator.log"
  fi
  return "$rc"
}

cmd="${1:-up}"
case "$cmd" in
  up) [ $# -gt 0 ] && shift; up "$@" ;;
  down) down ;;
  -*) up "$@" ;;
  *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
