#!/usr/bin/env bash
# The end-to-end benchmark (`make bench`): vision-operator on the local
# cluster, measured from outside (its own watches, the API server's
# /metrics, /proc of the operator). A command, not a test.
#
#   hack/bench.sh [--jobs N] [--max-running M] [--gpus G] [--runtime-ms R]
#                 [--nodes K] [--gpus-per-node X] [--memory-jobs N]
#                 [--no-ceiling] [--no-memory] [--scenario all|scale|queued|fairness|workers]
#                 [--minutes M] [--short] [--preemption POLICY]
#
# Defaults: 1000 jobs of 1 GPU and 2000 ms each through a queue of 32 slots
# on 4 nodes x 8 GPUs (ideal makespan ceil(1000/32) x 2 s = 64 s); the
# ceiling run (the same 1000 pods created directly, no operator); and 10,000
# jobs queued into a paused queue for the operator's memory. 8-12 minutes on
# a busy 2-core machine with the build cached (--no-memory saves about 4). Results: .local/bench/<time>/ (report.txt and one JSON per
# scenario). Scenarios: see docs/PERFORMANCE.md.
#
# --scenario scale (issue 14, the long one: about 45 min on 2 cores): every
# scale target from one run. The throughput and ceiling scenarios as above,
# then --memory-jobs (default 100000) jobs into a paused queue (RSS at every
# 10,000, creation-to-Queued lag against the API server's create rate),
# then the failover below, and one table of every target. The queued jobs
# are left in the cluster (deleting 100,000 takes longer than the run): run
# it on a cluster of its own and take that down afterwards:
#   VISION_CLUSTER_DIR=$PWD/.local/bench-cluster hack/bench.sh --scenario scale
#   VISION_CLUSTER_DIR=$PWD/.local/bench-cluster hack/cluster.sh down
#
# --scenario queued (e.g. with --memory-jobs 100000): only the
# memory scenario (RSS every 10,000 jobs Queued, creation-to-Queued lag
# against the API server's own rate), then a failover: the operator stops
# (releasing its lease), the queue is unpaused, a new operator starts, and
# the time from its start to its lease and to its first admission is taken.
#
# --scenario fairness (issue 17, docs/FAIRNESS.md): tenants alice and bob,
# weights 3:1, keep a 32-slot queue saturated with 5 s jobs for --minutes
# (default 10); carol (weight 1) starts at minute 5 (or half of a shorter
# run); an urgent job of priority 10 every 20 s with preemption LowerPriority,
# or --preemption LowerPriorityOrOverShare (carol may then evict jobs of the
# tenants over their share: the late tenant's time to its share with preemption).
# vision-dev takes the e2e tests' cluster turn, then starts the operator.
#
# --scenario workers (issue 18, docs/PERFORMANCE.md "Worker mode"): pod mode
# and worker mode on the same burst (--jobs, default 2000, of 100 ms each,
# one queue of --max-running 32): KWOK pods, then 4 SDK workers in the
# driver's process (the operator in its TEST-ONLY trust mode); then a worker
# and the leader killed mid-burst (PASS/FAIL: every job Succeeded, none run
# twice), and the API server's ceiling for a job's writes with no operator.
# --short: 300 jobs, 150 per fault burst. Run it on its own cluster:
# VISION_CLUSTER_DIR=$PWD/.local/bench-cluster-w hack/bench.sh --scenario workers
#
# Environment: BENCH_HTTP_ADDR (operator's /metrics, default 127.0.0.1:18090;
# 18091 for --scenario workers), BENCH_WORKER_ADDR (its worker endpoint in
# --scenario workers, default 127.0.0.1:19091),
# VISION_CLUSTER_DIR (cluster state, default .local/cluster), BENCH_FORCE=1
# (run even while e2e tests use the cluster: the numbers will be noisy and
# the tests' operators would compete).
set -euo pipefail
shopt -s inherit_errexit

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

JOBS=1000 MAX_RUNNING=32 GPUS=1 RUNTIME_MS=2000 NODES=4 GPUS_PER_NODE=8 MEMORY_JOBS=10000
CEILING=1 MEMORY=1 SCENARIO=all MINUTES=10 PREEMPTION=LowerPriority
usage() { sed -n '2,/^set -euo/p' "$0" | sed -n '/^#/p' | sed 's/^# \{0,1\}//'; exit 2; }
JOBS_SET=0 SHORT=0 MEMORY_JOBS_SET=0
int() { [[ "$2" =~ ^[0-9]+$ ]] || { echo "$1 takes an integer, got '$2'" >&2; exit 2; }; echo "$2"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --jobs) JOBS="$(int "$1" "${2:-}")"; JOBS_SET=1; shift 2 ;;
    --short) SHORT=1; shift ;;
    --max-running) MAX_RUNNING="$(int "$1" "${2:-}")"; shift 2 ;;
    --gpus) GPUS="$(int "$1" "${2:-}")"; shift 2 ;;
    --runtime-ms) RUNTIME_MS="$(int "$1" "${2:-}")"; shift 2 ;;
    --nodes) NODES="$(int "$1" "${2:-}")"; shift 2 ;;
    --gpus-per-node) GPUS_PER_NODE="$(int "$1" "${2:-}")"; shift 2 ;;
    --memory-jobs) MEMORY_JOBS="$(int "$1" "${2:-}")"; MEMORY_JOBS_SET=1; shift 2 ;;
    --no-ceiling) CEILING=0; shift ;;
    --minutes) MINUTES="$(int "$1" "${2:-}")"; shift 2 ;;
    --preemption) PREEMPTION="${2:-}"; shift 2
      case "$PREEMPTION" in Never|LowerPriority|LowerPriorityOrOverShare) ;; *) echo "--preemption takes Never, LowerPriority or LowerPriorityOrOverShare" >&2; exit 2 ;; esac ;;
    --no-memory) MEMORY=0; shift ;;
    --scenario) SCENARIO="${2:-}"; shift 2
      case "$SCENARIO" in all|scale|queued|fairness|workers) ;; *) echo "--scenario takes all, scale, queued, fairness or workers" >&2; exit 2 ;; esac ;;
    -h|--help) usage ;;
    *) echo "unknown flag $1" >&2; usage ;;
  esac
done

[ "$SCENARIO" = scale ] && [ "$MEMORY_JOBS_SET" = 0 ] && MEMORY_JOBS=100000
STATE="${VISION_CLUSTER_DIR:-$ROOT/.local/cluster}"
KCFG="$STATE/kubeconfig"
if [ "$SCENARIO" = workers ]; then
  if [ "$JOBS_SET" = 0 ]; then JOBS=2000; [ "$SHORT" = 1 ] && JOBS=300; fi
  FAULT_JOBS=500; [ "$SHORT" = 1 ] && FAULT_JOBS=150
  WORKERS=4
  HTTP_ADDR="${BENCH_HTTP_ADDR:-127.0.0.1:18091}"
else
  HTTP_ADDR="${BENCH_HTTP_ADDR:-127.0.0.1:18090}"
fi
WORKER_ADDR="${BENCH_WORKER_ADDR:-127.0.0.1:19091}"
OUT="$ROOT/.local/bench/$(date -u +%Y%m%dT%H%M%SZ)"
LOG="$ROOT/.local/logs/bench-operator.log"
# Its own log: another scenario may run at the same time on another cluster.
[ "$SCENARIO" = workers ] && LOG="$ROOT/.local/logs/bench-operator-workers.log"
OPERATOR="$ROOT/target/release/vision-operator"
# The operator runs with the allocator setting the chart gives it
# (charts/vision-operator/templates/deployment.yaml); BENCH_GLIBC_TUNABLES=
# (empty) measures glibc's default instead.
export GLIBC_TUNABLES="${BENCH_GLIBC_TUNABLES-glibc.malloc.arena_max=1}"
VISIONDEV="$ROOT/target/release/vision-dev"
CLK_TCK="$(getconf CLK_TCK 2>/dev/null || echo 100)"
OP_PID=""

say() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

stop_operator() {
  if [ -n "$OP_PID" ] && kill -0 "$OP_PID" 2>/dev/null; then
    kill -TERM "$OP_PID" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$OP_PID" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$OP_PID" 2>/dev/null; then kill -KILL "$OP_PID" 2>/dev/null || true; fi
  fi
  OP_PID=""
}
trap stop_operator EXIT
trap 'exit 130' INT TERM

start_operator() {
  local host="${HTTP_ADDR%:*}" port="${HTTP_ADDR##*:}"
  if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
    die "$HTTP_ADDR is in use; set BENCH_HTTP_ADDR=127.0.0.1:<free port>"
  fi
  # As deployed: leader election on (its lease renewals are counted).
  "$OPERATOR" --kubeconfig "$KCFG" --http-addr "$HTTP_ADDR" \
    --leader-election true --lease-name vision-operator-bench --lease-namespace default \
    >>"$LOG" 2>&1 </dev/null &
  OP_PID=$!
  for _ in $(seq 1 120); do
    if curl -fsS "http://$HTTP_ADDR/readyz" >/dev/null 2>&1; then return 0; fi
    kill -0 "$OP_PID" 2>/dev/null || { tail -n 20 "$LOG" >&2; die "the operator exited"; }
    sleep 0.5
  done
  tail -n 20 "$LOG" >&2
  die "the operator did not become ready"
}

tests_running() {
  local f
  [ "$STATE" = "$ROOT/.local/cluster" ] || return 1
  for f in "$ROOT/.local/cluster-users"/*; do
    [ -e "$f" ] && kill -0 "${f##*/}" 2>/dev/null && return 0
  done
  pgrep -f 'cargo test' >/dev/null 2>&1
}

command -v curl >/dev/null || die "curl is not installed"
# The fairness and workers scenarios wait for the tests' turn (a Lease) instead.
if [ "$SCENARIO" != fairness ] && [ "$SCENARIO" != workers ] && tests_running && [ "${BENCH_FORCE:-0}" != 1 ]; then
  die "e2e tests are using the local cluster; wait for them, use VISION_CLUSTER_DIR=$ROOT/.local/bench-cluster, or BENCH_FORCE=1"
fi
if [ -f "$ROOT/.local/demo-operator.pid" ] && kill -0 "$(cat "$ROOT/.local/demo-operator.pid")" 2>/dev/null; then
  die "the demo's operator is running on the cluster (make demo-down stops it)"
fi

mkdir -p "$OUT" "$ROOT/.local/logs"
: >"$LOG"
say "building the operator and vision-dev (cargo build --release)"
cargo build --release --bin vision-operator --bin vision-dev
say "starting or reusing the local cluster ($NODES nodes x $GPUS_PER_NODE GPUs)"
# A healthy cluster with the wanted nodes is reused as it is.
have_nodes() {
  local kb
  kb="$(hack/cluster.sh env | sed -n 's/^export PATH=\([^:]*\):.*/\1/p')"
  [ "$("$kb/kubectl" --kubeconfig "$KCFG" get nodes -l type=kwok \
    -o jsonpath='{range .items[*]}{.status.allocatable.nvidia\.com/gpu}{"\n"}{end}' 2>/dev/null |
    grep -cx "$GPUS_PER_NODE")" = "$NODES" ] &&
  [ "$("$kb/kubectl" --kubeconfig "$KCFG" get nodes -l type=kwok -o name 2>/dev/null | wc -l)" = "$NODES" ]
}
if hack/cluster.sh status >/dev/null 2>&1 && have_nodes; then
  say "reusing the running cluster"
elif ! hack/cluster.sh up --nodes "$NODES" --gpus "$GPUS_PER_NODE" >"$ROOT/.local/logs/bench-cluster-up.log" 2>&1; then
  tail -n 40 "$ROOT/.local/logs/bench-cluster-up.log" >&2
  die "hack/cluster.sh up failed"
fi
KBIN="$(hack/cluster.sh env | sed -n 's/^export PATH=\([^:]*\):.*/\1/p')"
kubectl=("$KBIN/kubectl" --kubeconfig "$KCFG")
"${kubectl[@]}" apply --server-side --force-conflicts -f crds/ >/dev/null
# As the chart installs it on a cluster that serves it (1.36+): the policy
# that gives new jobs the operator's finalizer at creation.
if "${kubectl[@]}" api-resources --api-group admissionregistration.k8s.io -o name 2>/dev/null |
  grep -qx 'mutatingadmissionpolicies.admissionregistration.k8s.io'; then
  "$KBIN/helm" template vision-bench charts/vision-operator --kube-version 1.37.2 \
    --api-versions admissionregistration.k8s.io/v1/MutatingAdmissionPolicy \
    --show-only templates/job-finalizer-policy.yaml |
    "${kubectl[@]}" apply --server-side --force-conflicts -f - >/dev/null
fi
# Just-created CRDs have no conditions yet, which `kubectl wait` takes as an error.
for _ in $(seq 1 60); do
  "${kubectl[@]}" wait --for condition=established --timeout=5s \
    crd/visionjobs.vision.zjlab.io crd/visionqueues.vision.zjlab.io crd/visionalgorithms.vision.zjlab.io >/dev/null 2>&1 && break
  sleep 1
done

common=(--gpus "$GPUS" --runtime-ms "$RUNTIME_MS" --max-running "$MAX_RUNNING" --clk-tck "$CLK_TCK")
vdev() { "$VISIONDEV" --kubeconfig "$KCFG" "$@"; }

{
  echo "# vision-operator end-to-end benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(free -g | awk '/^Mem:/ {print $2}') GiB"
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src crates || echo ' (with local changes in src/ or crates/)')"
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min) at the start"
  echo "operator environment: GLIBC_TUNABLES=$GLIBC_TUNABLES"
  if [ "$SCENARIO" = workers ]; then
    echo "command: hack/bench.sh --scenario workers --jobs $JOBS --max-running $MAX_RUNNING$([ "$SHORT" = 1 ] && echo ' --short') ($FAULT_JOBS jobs per fault burst, $WORKERS workers)"
  else
  echo "command: hack/bench.sh --scenario $SCENARIO --jobs $JOBS --max-running $MAX_RUNNING --gpus $GPUS --runtime-ms $RUNTIME_MS --nodes $NODES --gpus-per-node $GPUS_PER_NODE --memory-jobs $MEMORY_JOBS$([ $CEILING = 1 ] || echo ' --no-ceiling')$([ $MEMORY = 1 ] || echo ' --no-memory')"
  fi
  echo "cluster: $("${kubectl[@]}" version -o json 2>/dev/null | grep -m1 gitVersion | tr -d ' ",' | sed 's/gitVersion://' | tail -1), $NODES fake nodes x $GPUS_PER_NODE GPUs (KWOK)"
} | tee "$OUT/report.txt"

# A new leader with the memory scenario's jobs queued: from the process's
# start to its lease, its rebuild and its first admission (polled from its
# /metrics every 50 ms). The former operator stops gracefully first, so the
# lease is free at once.
failover() {
  local from t0 t_admit lines lease rebuilt t_lease=""
  stop_operator
  "${kubectl[@]}" patch visionqueue vision-bench-paused --type merge -p '{"spec":{"paused":false}}' >/dev/null
  lines="$(wc -l <"$LOG")"
  t0="$(date +%s.%N)"
  "$OPERATOR" --kubeconfig "$KCFG" --http-addr "$HTTP_ADDR" \
    --leader-election true --lease-name vision-operator-bench --lease-namespace default \
    >>"$LOG" 2>&1 </dev/null &
  OP_PID=$!
  t_admit=""
  for _ in $(seq 1 6000); do
    if curl -fsS "http://$HTTP_ADDR/metrics" 2>/dev/null |
      awk '/^vision_operator_admissions_total/ {s += $NF} END {exit !(s > 0)}'; then
      t_admit="$(date +%s.%N)"; break
    fi
    kill -0 "$OP_PID" 2>/dev/null || die "the new operator exited"
    sleep 0.05
  done
  # (The log's colour codes stripped first.)
  from() { tail -n +"$((lines + 1))" "$LOG" | sed 's/\x1b\[[0-9;]*m//g' | grep -m1 "$1" | grep -o '^[0-9T:.-]*Z' || true; }
  lease="$(from 'acquired the lease')"
  rebuilt="$(tail -n +"$((lines + 1))" "$LOG" | sed 's/\x1b\[[0-9;]*m//g' | grep -m1 'worker pool rebuilt' | grep -o 'elapsed_ms=[0-9]*' || true)"
  [ -n "$lease" ] && t_lease="$(date -d "$lease" +%s.%N)"
  # Seconds between two times, or null (JSON) when one is missing.
  span() { if [ -n "$1" ] && [ -n "$2" ]; then echo "$2 - $1" | bc | sed 's/^\./0./;s/^-\./-0./'; else echo null; fi; }
  local rss hwm rebuild_ms="${rebuilt#elapsed_ms=}"
  rebuild_ms="${rebuild_ms:-null}"
  rss="$(awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$OP_PID/status" 2>/dev/null || true)"
  hwm="$(awk '/^VmHWM/ {printf "%.1f", $2/1024}' "/proc/$OP_PID/status" 2>/dev/null || true)"
  cat >"$OUT/failover.json" <<JSON
{"jobs": $MEMORY_JOBS, "startToLeaseS": $(span "$t0" "$t_lease"), "leaseToFirstAdmissionS": $(span "$t_lease" "$t_admit"),
 "startToFirstAdmissionS": $(span "$t0" "$t_admit"), "rebuildMs": $rebuild_ms,
 "rssMiB": ${rss:-null}, "peakRssMiB": ${hwm:-null}}
JSON
  echo
  echo "Failover with $MEMORY_JOBS jobs queued"
  if [ -n "$t_admit" ]; then
    echo "  new operator started -> first admission: $(span "$t0" "$t_admit") s"
  else
    echo "  no admission within 300 s"
  fi
  if [ -n "$t_lease" ]; then
    echo "  new operator started -> acquired the lease: $(span "$t0" "$t_lease") s"
    [ -n "$t_admit" ] && echo "  acquired the lease -> first admission: $(span "$t_lease" "$t_admit") s"
  fi
  echo "  rebuild of the worker pool: ${rebuilt:-?}"
  echo "  operator RSS after the rebuild: ${rss:-?} MiB, peak ${hwm:-?} MiB"
}

if [ "$SCENARIO" = fairness ]; then
  late="$(( MINUTES >= 10 ? 5 : MINUTES / 2 ))"
  [ "$late" -ge 1 ] || late=0.5
  say "scenario fairness: $MINUTES min, tenants 3:1, a third tenant from minute $late, urgent jobs with preemption $PREEMPTION"
  echo "command: hack/bench.sh --scenario fairness --minutes $MINUTES --preemption $PREEMPTION" >>"$OUT/report.txt"
  vdev bench fairness --minutes "$MINUTES" --late-minute "$late" --max-running "$MAX_RUNNING" --preemption "$PREEMPTION" \
    --operator-bin "$OPERATOR" --operator-log "$LOG" --ready-url "http://$HTTP_ADDR/readyz" \
    --out "$OUT/fairness.json" -- --kubeconfig "$KCFG" --http-addr "$HTTP_ADDR" \
    --leader-election true --lease-name vision-operator-bench --lease-namespace default |
    tee -a "$OUT/report.txt"
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min) at the end" | tee -a "$OUT/report.txt"
  say "results in ${OUT#"$ROOT"/}/ (report.txt, fairness.json); operator log .local/logs/bench-operator.log"
  exit 0
fi

if [ "$SCENARIO" = workers ]; then
  say "scenario workers: $JOBS jobs of 100 ms, maxRunning $MAX_RUNNING: pod mode, then $WORKERS SDK workers; faults with $FAULT_JOBS jobs each"
  say "the operator serves workers on $WORKER_ADDR in its TEST-ONLY trust mode (--worker-trust-local-test-only): bench only, never in a cluster"
  rc=0
  vdev bench workers --jobs "$JOBS" --max-running "$MAX_RUNNING" --workers "$WORKERS" --task-ms 100 \
    --fault-jobs "$FAULT_JOBS" --clk-tck "$CLK_TCK" --worker-url "http://$WORKER_ADDR" \
    --metrics-url "http://$HTTP_ADDR/metrics" --ready-url "http://$HTTP_ADDR/readyz" \
    --operator-bin "$OPERATOR" --operator-log "$LOG" --out "$OUT/workers.json" -- \
    --kubeconfig "$KCFG" --http-addr "$HTTP_ADDR" --leader-election true \
    --lease-name vision-operator-bench --lease-namespace default \
    --worker-addr "$WORKER_ADDR" --worker-trust-local-test-only |
    tee -a "$OUT/report.txt" || rc=$?
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min) at the end" | tee -a "$OUT/report.txt"
  say "results in ${OUT#"$ROOT"/}/ (report.txt, workers.json); operator log ${LOG#"$ROOT"/}"
  exit "$rc"
fi

if [ "$SCENARIO" = queued ]; then
  say "scenario queued: $MEMORY_JOBS jobs into a paused queue, then a failover"
  start_operator
  vdev bench memory --namespace vision-bench-mem --queue vision-bench-paused --jobs "$MEMORY_JOBS" \
    --concurrency 32 "${common[@]}" --operator-pid "$OP_PID" --out "$OUT/memory.json" | tee -a "$OUT/report.txt"
  echo "API server: $(uptime | sed 's/.*load average/load average/') after the submissions" | tee -a "$OUT/report.txt"
  # Not in a pipeline: the new operator's pid must reach stop_operator.
  failover > >(tee -a "$OUT/report.txt")
  say "cleaning up the $MEMORY_JOBS jobs"
  vdev bench cleanup --namespace vision-bench-mem ||
    say "cleanup of vision-bench-mem failed: rerun vision-dev bench cleanup --namespace vision-bench-mem with an operator running"
  stop_operator
  say "results in ${OUT#"$ROOT"/}/ (report.txt, memory.json); operator log .local/logs/bench-operator.log"
  exit 0
fi

say "scenario 1/3: throughput ($JOBS jobs, maxRunning $MAX_RUNNING)"
start_operator
vdev bench throughput --jobs "$JOBS" "${common[@]}" --operator-pid "$OP_PID" \
  --metrics-url "http://$HTTP_ADDR/metrics" --out "$OUT/throughput.json" | tee -a "$OUT/report.txt"
say "cleaning up the benchmark's jobs"
vdev bench cleanup --namespace vision-bench || say "cleanup of vision-bench failed: rerun vision-dev bench cleanup --namespace vision-bench with an operator running"
stop_operator

report=(--throughput "$OUT/throughput.json")
if [ "$CEILING" = 1 ]; then
  say "scenario 2/3: ceiling ($JOBS bare pods, no operator)"
  vdev bench ceiling --namespace vision-bench-ceiling --jobs "$JOBS" "${common[@]}" \
    --out "$OUT/ceiling.json" | tee -a "$OUT/report.txt"
  vdev bench cleanup --namespace vision-bench-ceiling || say "cleanup of vision-bench-ceiling failed"
  report+=(--ceiling "$OUT/ceiling.json")
fi

if [ "$SCENARIO" = scale ]; then
  say "scenario 3/3: $MEMORY_JOBS jobs into a paused queue, then a failover"
  start_operator
  vdev bench memory --namespace vision-bench-mem --queue vision-bench-paused --jobs "$MEMORY_JOBS" \
    --concurrency 32 --timeout 7200 "${common[@]}" --operator-pid "$OP_PID" --out "$OUT/memory.json" |
    tee -a "$OUT/report.txt"
  # Not in a pipeline: the new operator's pid must reach stop_operator.
  failover > >(tee -a "$OUT/report.txt")
  sleep 1
  stop_operator
  report+=(--memory "$OUT/memory.json" --failover "$OUT/failover.json")
  say "the $MEMORY_JOBS jobs stay in namespace vision-bench-mem: take this cluster down (VISION_CLUSTER_DIR=$STATE hack/cluster.sh down)"
elif [ "$MEMORY" = 1 ]; then
  say "scenario 3/3: memory ($MEMORY_JOBS jobs into a paused queue)"
  start_operator
  vdev bench memory --namespace vision-bench-mem --queue vision-bench-paused --jobs "$MEMORY_JOBS" \
    --concurrency 32 "${common[@]}" --operator-pid "$OP_PID" --out "$OUT/memory.json" | tee -a "$OUT/report.txt"
  say "cleaning up the $MEMORY_JOBS queued jobs"
  vdev bench cleanup --namespace vision-bench-mem ||
    say "cleanup of vision-bench-mem failed: rerun vision-dev bench cleanup --namespace vision-bench-mem with an operator running"
  stop_operator
  report+=(--memory "$OUT/memory.json")
fi

rc=0
vdev bench report "${report[@]}" | tee -a "$OUT/report.txt" || rc=$?
say "results in ${OUT#"$ROOT"/}/ (report.txt, *.json); operator log .local/logs/bench-operator.log"
say "the cluster is left running: hack/cluster.sh down (or make cluster-down) stops it"
exit "$rc"
