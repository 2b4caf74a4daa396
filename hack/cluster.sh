#!/usr/bin/env bash
# Local Kubernetes cluster for tests, benchmarks and the demo: a real control
# plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) built
# from Go modules, with KWOK simulating GPU nodes and pod lifecycles.
#
#   hack/cluster.sh up [--nodes N] [--gpus M]   build what is missing, start (or reuse)
#   hack/cluster.sh down                        stop every process, remove the state
#   hack/cluster.sh status                      is it running, what nodes
#   hack/cluster.sh env                         print KUBECONFIG and PATH exports
#   hack/cluster.sh build                       only build the binaries
#   hack/cluster.sh up --real-node              also start the real node (kubelet, containerd)
#   hack/cluster.sh node up|down|status|build   only the real node (hack/node/node.sh)
#   hack/cluster.sh image NAME                  build an image (hack/images), print its archive
#   hack/cluster.sh promtool                    build promtool (rule checks), print its path
#
# Environment: VISION_NODES, VISION_GPUS (defaults 4 and 8), VISION_CACHE_DIR
# (binary cache, default ~/.cache/vision-operator), VISION_CLUSTER_DIR (state,
# default <repo>/.local/cluster). See hack/README.md.
set -euo pipefail
shopt -s inherit_errexit

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODS="$ROOT/hack/cluster"
KWOK_CONF="$ROOT/hack/kwok"
STATE="${VISION_CLUSTER_DIR:-$ROOT/.local/cluster}"
LOGS="$ROOT/.local/logs"
CACHE="${VISION_CACHE_DIR:-${HOME:-/root}/.cache/vision-operator}"
NAME=vision
NODES="${VISION_NODES:-4}"
GPUS="${VISION_GPUS:-8}"
NODE_CPU="${VISION_NODE_CPU:-64}"
NODE_MEMORY="${VISION_NODE_MEMORY:-256Gi}"
NODE_PODS="${VISION_NODE_PODS:-1000}"

# Go may be installed but not on a minimal PATH (CI).
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then PATH="/usr/local/go/bin:$PATH"; fi
# Builds use the Go module proxy only; never switch toolchains behind our back.
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export GOFLAGS="${GOFLAGS:--mod=readonly -buildvcs=false}"
export KWOK_WORKDIR="$STATE/kwok"

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

# Version of a required module, read from the committed go.mod (single source
# of truth for the pins).
modver() { awk -v m="$2" '$1 == m { print $2; exit }' "$MODS/$1/go.mod"; }

K8S_VERSION="$(modver k8s k8s.io/kubernetes)"
ETCD_VERSION="$(modver etcd go.etcd.io/etcd/server/v3)"
KWOK_VERSION="$(modver kwok sigs.k8s.io/kwok)"
HELM_VERSION="$(modver helm helm.sh/helm/v3)"
[ -n "$K8S_VERSION" ] && [ -n "$ETCD_VERSION" ] && [ -n "$KWOK_VERSION" ] && [ -n "$HELM_VERSION" ] ||
  die "cannot read pinned versions from $MODS/*/go.mod"

BIN="$CACHE/bin/$K8S_VERSION-$ETCD_VERSION-$KWOK_VERSION-$HELM_VERSION"

# The real node and the offline image builds (functions only).
# shellcheck source=hack/node/node.sh
source "$ROOT/hack/node/node.sh"
# shellcheck source=hack/images/images.sh
source "$ROOT/hack/images/images.sh"

k8s_ldflags() {
  local v="$K8S_VERSION" minor ld="-s -w" p
  minor="$(echo "$v" | cut -d. -f2)"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitCommit=0000000000000000000000000000000000000000"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$ld"
}

helm_ldflags() {
  echo "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$(echo "$K8S_VERSION" | cut -d. -f2)"
}

# build_component NAME VERSION MODULE-DIR LDFLAGS OUT=PKG...
# Builds into $CACHE/bin/components/NAME-VERSION-HASH (HASH covers go.mod,
# go.sum and ldflags) unless it is already there.
build_component() {
  local name="$1" version="$2" mod="$3" ldflags="$4"; shift 4
  local hash dir tmp logf spec out pkg pkgs=()
  # BUILD_TAGS / BUILD_CGO (optional) change the build, so they are hashed too
  # (when unset the hash is what it always was: caches stay valid).
  hash="$(cat "$MODS/$mod/go.mod" "$MODS/$mod/go.sum" <(echo "$ldflags"; [ -z "${BUILD_TAGS:-}${BUILD_CGO:-}" ] || echo "tags=${BUILD_TAGS:-} cgo=${BUILD_CGO:-}") | sha256sum | cut -c1-10)"
  dir="$CACHE/bin/components/$name-$version-$hash"
  if [ -f "$dir/.complete" ]; then
    echo "$dir"
    return 0
  fi
  mkdir -p "$CACHE/bin/components" "$LOGS"
  logf="$LOGS/build-$name.log"
  tmp="$(mktemp -d "$CACHE/bin/components/.tmp-$name.XXXXXX")"
  log "building $name $version (log: ${logf#"$ROOT"/})"
  local start=$SECONDS
  for spec in "$@"; do pkgs+=("${spec#*=}"); done
  # One go build for all the mains of a module shares the compile work.
  local o="$tmp/"
  if [ $# -eq 1 ]; then o="$tmp/${1%%=*}"; fi
  local extra=()
  if [ -n "${BUILD_TAGS:-}" ]; then extra+=(-tags "$BUILD_TAGS"); fi
  if ! (cd "$MODS/$mod" && if [ -n "${BUILD_CGO:-}" ]; then export CGO_ENABLED="$BUILD_CGO"; fi &&
    go build -trimpath "${extra[@]}" -ldflags "$ldflags" -o "$o" "${pkgs[@]}") >"$logf" 2>&1; then
    tail -n 40 "$logf" >&2
    rm -rf "$tmp"
    die "building $name failed (full log: $logf)"
  fi
  for spec in "$@"; do
    out="${spec%%=*}"
    [ -x "$tmp/$out" ] || die "building $name produced no $out"
  done
  chmod 755 "$tmp"
  touch "$tmp/.complete"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  log "built $name in $((SECONDS - start))s"
  echo "$dir"
}

build() {
  if [ -f "$BIN/.complete" ]; then return 0; fi
  command -v go >/dev/null || die "go is not installed (needs Go >= 1.26)"
  mkdir -p "$CACHE/bin"
  # Serialise concurrent builds (two test runs, a developer and CI).
  exec 9>"$CACHE/bin/.lock"
  flock 9
  if [ -f "$BIN/.complete" ]; then flock -u 9; return 0; fi
  local k e w h
  k="$(build_component kubernetes "$K8S_VERSION" k8s "$(k8s_ldflags)" \
    kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
    kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
    kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler \
    kubectl=k8s.io/kubernetes/cmd/kubectl)"
  e="$(build_component etcd "$ETCD_VERSION" etcd "-s -w" etcd=go.etcd.io/etcd/server/v3)"
  w="$(build_component kwok "$KWOK_VERSION" kwok "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
    kwok=sigs.k8s.io/kwok/cmd/kwok kwokctl=sigs.k8s.io/kwok/cmd/kwokctl)"
  h="$(build_component helm "$HELM_VERSION" helm "$(helm_ldflags)" helm=helm.sh/helm/v3/cmd/helm)"
  # One directory for PATH, with links into the per-component cache.
  local tmp f
  tmp="$(mktemp -d "$CACHE/bin/.tmp-bin.XXXXXX")"
  for f in "$k"/* "$e"/* "$w"/* "$h"/*; do ln -s "$f" "$tmp/$(basename "$f")"; done
  chmod 755 "$tmp"
  touch "$tmp/.complete"
  rm -rf "$BIN"
  mv "$tmp" "$BIN"
  flock -u 9
}

# promtool (Prometheus rule checks and rule unit tests; not part of the
# cluster): its own module and cache directory, built on first use.
promtool_() {
  local v d
  v="$(modver promtool github.com/prometheus/prometheus)"
  [ -n "$v" ] || die "cannot read the promtool pin from $MODS/promtool/go.mod"
  command -v go >/dev/null || die "go is not installed (needs Go >= 1.26)"
  mkdir -p "$CACHE/bin"
  exec 9>"$CACHE/bin/.lock"
  flock 9
  d="$(build_component promtool "$v" promtool \
    "-s -w -X github.com/prometheus/common/version.Version=$v -X github.com/prometheus/common/version.Branch=HEAD -X github.com/prometheus/common/version.Revision=0000000000000000000000000000000000000000" \
    promtool=github.com/prometheus/prometheus/cmd/promtool)"
  flock -u 9
  echo "$d/promtool"
}

kubectl_() { "$BIN/kubectl" --kubeconfig "$STATE/kubeconfig" "$@"; }

healthy() {
  [ -f "$STATE/kubeconfig" ] && [ -x "$BIN/kubectl" ] &&
    kubectl_ get --raw /readyz --request-timeout=5s >/dev/null 2>&1
}

# Pids of the processes kwokctl started (one file each, no trailing newline).
pids() {
  local f
  for f in "$KWOK_WORKDIR/clusters/$NAME/pids/"*.pid; do
    [ -f "$f" ] && { cat "$f"; echo; }
  done
  return 0
}

# Is pid a live process of this cluster? (A stale pid file, e.g. after a
# reboot, may name an unrelated process: never kill that.)
ours() {
  kill -0 "$1" 2>/dev/null && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF "$KWOK_WORKDIR/"
}

nodes_yaml() {
  local i
  for ((i = 0; i < NODES; i++)); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-gpu-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    nvidia.com/gpu.present: "true"
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: kwok-gpu-$i
    node-role.kubernetes.io/agent: ""
spec: {}
status:
  capacity:
    cpu: "$NODE_CPU"
    memory: $NODE_MEMORY
    pods: "$NODE_PODS"
    nvidia.com/gpu: "$GPUS"
  allocatable:
    cpu: "$NODE_CPU"
    memory: $NODE_MEMORY
    pods: "$NODE_PODS"
    nvidia.com/gpu: "$GPUS"
EOF
  done
}

ensure_nodes() {
  local want=() n
  for ((n = 0; n < NODES; n++)); do want+=("kwok-gpu-$n"); done
  nodes_yaml | kubectl_ apply -f - >/dev/null
  # The status is not updated by apply on existing nodes: patch it so that a
  # changed --gpus takes effect on a reused cluster.
  for n in "${want[@]}"; do
    # The API server taints new nodes node.kubernetes.io/not-ready; the node
    # lifecycle controller, which would lift it, is deliberately not run (it
    # could mark fake nodes NotReady on a loaded 2-core machine). Fake nodes
    # carry no taints: pods need no tolerations.
    kubectl_ patch node "$n" --type=merge -p '{"spec":{"taints":null}}' >/dev/null
    kubectl_ patch node "$n" --subresource=status --type=merge -p \
      "{\"status\":{\"capacity\":{\"cpu\":\"$NODE_CPU\",\"memory\":\"$NODE_MEMORY\",\"pods\":\"$NODE_PODS\",\"nvidia.com/gpu\":\"$GPUS\"},\"allocatable\":{\"cpu\":\"$NODE_CPU\",\"memory\":\"$NODE_MEMORY\",\"pods\":\"$NODE_PODS\",\"nvidia.com/gpu\":\"$GPUS\"}}}" >/dev/null
  done
  # Remove fake nodes beyond N (when a reused cluster is asked for fewer).
  for n in $(kubectl_ get nodes -l type=kwok -o name); do
    n="${n#node/}"
    if [[ ! " ${want[*]} " == *" $n "* ]]; then kubectl_ delete node "$n" --wait=false >/dev/null; fi
  done
  kubectl_ wait --for=condition=Ready node -l type=kwok --timeout=60s >/dev/null ||
    die "fake nodes did not become Ready"
}

usage_text() {
  cat <<EOF
Cluster '$NAME' is up: Kubernetes $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION, $NODES fake nodes x $GPUS nvidia.com/gpu.
Use it:
  eval "\$(hack/cluster.sh env)"
  kubectl get nodes
Stop it:
  hack/cluster.sh down
EOF
}

up() {
  build
  if healthy; then
    log "reusing the running cluster"
  else
    if [ -d "$STATE" ]; then
      log "removing a stale cluster state"
      down >/dev/null
    fi
    mkdir -p "$STATE" "$LOGS"
    log "starting the control plane (log: ${LOGS#"$ROOT"/}/kwokctl-create.log)"
    local start=$SECONDS
    # The configuration names files of this cluster's PKI (made by kwokctl).
    sed "s#@PKI@#$KWOK_WORKDIR/clusters/$NAME/pki#g" "$KWOK_CONF/kwokctl.yaml" >"$STATE/kwokctl.yaml"
    # kube-controller-manager: the garbage collector (ownerReferences cascade)
    # and the few controllers a namespace-per-test suite needs; see
    # hack/kwok/kwokctl.yaml for the full list and the other tunings.
    if ! KWOK_KUBECTL_BINARY="$BIN/kubectl" "$BIN/kwokctl" create cluster \
      --name "$NAME" \
      --runtime binary \
      --config "$STATE/kwokctl.yaml" \
      --config "$KWOK_CONF/node-stages.yaml" \
      --config "$KWOK_CONF/pod-stages.yaml" \
      --kube-apiserver-binary "$BIN/kube-apiserver" \
      --kube-controller-manager-binary "$BIN/kube-controller-manager" \
      --kube-scheduler-binary "$BIN/kube-scheduler" \
      --kwok-controller-binary "$BIN/kwok" \
      --etcd-binary "$BIN/etcd" \
      --kubeconfig "$STATE/kubeconfig" \
      --wait 120s \
      >"$LOGS/kwokctl-create.log" 2>&1 8>&- 9>&-; then
      tail -n 40 "$LOGS/kwokctl-create.log" >&2
      for f in "$KWOK_WORKDIR/clusters/$NAME/logs/"*.log; do
        [ -f "$f" ] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }
      done
      die "kwokctl create cluster failed"
    fi
    local i
    for ((i = 0; i < 120; i++)); do
      healthy && break
      sleep 1
    done
    healthy || die "the API server did not become ready (logs: $KWOK_WORKDIR/clusters/$NAME/logs)"
    log "control plane ready in $((SECONDS - start))s"
  fi
  ensure_nodes
  # A namespace is usable once its default ServiceAccount exists.
  local i
  for ((i = 0; i < 60; i++)); do
    kubectl_ -n default get serviceaccount default >/dev/null 2>&1 && break
    sleep 1
  done
  usage_text
}

down() {
  # The real node first: its processes and host changes outlive the state dir.
  node_down
  if [ -x "$BIN/kwokctl" ] && [ -d "$KWOK_WORKDIR/clusters/$NAME" ]; then
    local p
    p="$(pids)"
    "$BIN/kwokctl" delete cluster --name "$NAME" >"$LOGS/kwokctl-delete.log" 2>&1 ||
      log "kwokctl delete cluster failed (see ${LOGS#"$ROOT"/}/kwokctl-delete.log); killing by pid"
    # Make sure every process that was started is gone.
    for pid in $p; do
      if ours "$pid"; then kill "$pid" 2>/dev/null || true; fi
    done
    for pid in $p; do
      for _ in 1 2 3 4 5 6 7 8 9 10; do ours "$pid" || break; sleep 0.5; done
      if ours "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
    done
  elif [ -d "$KWOK_WORKDIR/clusters/$NAME/pids" ]; then
    for pid in $(pids); do
      if ours "$pid"; then kill "$pid" 2>/dev/null || true; fi
    done
  fi
  rm -rf "$STATE"
  log "cluster '$NAME' is down"
}

status() {
  if healthy; then
    echo "running: Kubernetes $K8S_VERSION, kubeconfig $STATE/kubeconfig"
    kubectl_ get nodes \
      -o custom-columns='NAME:.metadata.name,STATUS:.status.conditions[?(@.type=="Ready")].status,GPU:.status.allocatable.nvidia\.com/gpu,CPU:.status.allocatable.cpu,MEMORY:.status.allocatable.memory'
  elif [ -d "$STATE" ]; then
    echo "not healthy (state in $STATE; run hack/cluster.sh down && hack/cluster.sh up)"
    return 1
  else
    echo "not running"
    return 1
  fi
}

env_() {
  echo "export KUBECONFIG=$STATE/kubeconfig"
  echo "export PATH=$BIN:\$PATH"
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
REAL_NODE="${VISION_REAL_NODE:-0}"
sub=""
if [ "$cmd" = node ] || [ "$cmd" = image ]; then sub="${1:-}"; [ $# -gt 0 ] && shift; fi
while [ $# -gt 0 ]; do
  case "$1" in
    --real-node) REAL_NODE=1; shift ;;
    --nodes) NODES="$2"; shift 2 ;;
    --nodes=*) NODES="${1#*=}"; shift ;;
    --gpus) GPUS="$2"; shift 2 ;;
    --gpus=*) GPUS="${1#*=}"; shift ;;
    *) die "unknown flag $1" ;;
  esac
done
[[ "$NODES" =~ ^[0-9]+$ ]] && [[ "$GPUS" =~ ^[0-9]+$ ]] || die "--nodes and --gpus take integers"

# One up/down at a time per cluster directory (several test runs may share a
# checkout).
lock() {
  mkdir -p "$(dirname "$STATE")"
  exec 8>"$STATE.lock"
  flock -w 600 8 || die "waited 10 min for $STATE.lock (another hack/cluster.sh up/down running?)"
}
# (The cluster's processes must not inherit fd 8, or they would hold the lock
# for as long as they run: kwokctl is started with 8>&-.)

case "$cmd" in
  up) lock; up; if [ "$REAL_NODE" = 1 ]; then node_up; fi ;;
  down) lock; down ;;
  status) status; if [ -d "$NODE" ]; then node_status || true; fi ;;
  node)
    case "$sub" in
      up) lock; node_up ;;
      down) lock; node_down ;;
      status) node_status ;;
      build) node_build; echo "$NODE_BIN" ;;
      *) die "usage: hack/cluster.sh node up|down|status|build" ;;
    esac ;;
  image)
    [ -n "$sub" ] || die "usage: hack/cluster.sh image NAME"
    read -r archive ref < <(image_build "$sub")
    # Imported at once into a running real node.
    if node_running; then NODE_BIN="$CACHE/bin/node-$K8S_VERSION-$CONTAINERD_VERSION"; node_import "$archive"; fi
    echo "$archive $ref" ;;
  env) env_ ;;
  build) build; echo "$BIN" ;;
  promtool) promtool_ ;;
  *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
