# shellcheck shell=bash
# The real node of the local cluster: containerd 2.x, runc, the CNI bridge,
# the kubelet and kube-proxy as host processes, joined to the control plane of
# hack/cluster.sh, which sources this file (it provides STATE, BIN, CACHE,
# LOGS, MODS, K8S_VERSION, build_component, k8s_ldflags, kubectl_, log, die).
#
# Owns: building the node binaries, preparing the host, starting and stopping
# the node's processes, and undoing every host change on `node_down`.
# See hack/README.md ("The real node").

NODE_NAME=vision-node
NODE="$STATE/node"
NODE_CONF="$ROOT/hack/node"
NODE_POD_CIDR="${VISION_NODE_POD_CIDR:-10.244.0.0/24}"
NODE_BRIDGE=vision0
NODE_GPUS="${VISION_REAL_NODE_GPUS:-2}"
# The taint keeps every pod that does not ask for the real node (all the
# KWOK-driven tests and the demo burst) off it.
NODE_TAINT_KEY=vision.zjlab.io/real-node
NODE_LABELS="type=real,$NODE_TAINT_KEY=true,nvidia.com/gpu.present=true"
CONTAINERD_VERSION="$(modver containerd github.com/containerd/containerd/v2)"
NODE_K8S_VERSION="$(modver node k8s.io/kubernetes)"
# Fixed host paths the node uses although every configurable one is under
# $NODE: the kubelet's device-plugin and pod-resources sockets, container logs
# (/var/log/pods, /var/log/containers), containerd's shim sockets
# (/run/containerd/s) and libcni's result cache (/var/lib/cni). `node_down`
# removes those that did not exist before `node_up`.
NODE_HOST_DIRS=(/var/lib/kubelet /var/log/pods /var/log/containers /run/containerd /var/lib/cni)
# Sysctls the kubelet (kernel.panic*, vm.overcommit_memory) and the bridge
# plugin (net.ipv4.ip_forward) set; restored on `node_down`.
NODE_SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory net.ipv4.ip_forward)
# Debian packages the node needs from the host.
NODE_PACKAGES=(runc containernetworking-plugins iptables conntrack openssl)
NODE_RUNC=/usr/sbin/runc
NODE_CNI_BIN=/usr/lib/cni

node_ctr() { "$NODE_BIN/ctr" --address "$NODE/containerd.sock" -n k8s.io "$@"; }

# Builds containerd (+ shim, ctr) and the kubelet + kube-proxy into the
# component cache; sets NODE_BIN (a directory of links to both).
node_build() {
  [ "$NODE_K8S_VERSION" = "$K8S_VERSION" ] ||
    die "hack/cluster/node pins k8s.io/kubernetes $NODE_K8S_VERSION but the control plane is $K8S_VERSION: update hack/cluster/node/go.mod"
  NODE_BIN="$CACHE/bin/node-$K8S_VERSION-$CONTAINERD_VERSION"
  if [ -f "$NODE_BIN/.complete" ]; then return 0; fi
  exec 9>"$CACHE/bin/.lock"
  flock 9
  if [ -f "$NODE_BIN/.complete" ]; then flock -u 9; return 0; fi
  local c k tmp f
  # Pure Go containerd: no cgo, no snapshotters needing C libraries.
  c="$(BUILD_CGO=0 BUILD_TAGS="no_btrfs no_devmapper no_zfs" build_component containerd "$CONTAINERD_VERSION" containerd \
    "-s -w -X github.com/containerd/containerd/v2/version.Version=${CONTAINERD_VERSION#v}" \
    containerd=github.com/containerd/containerd/v2/cmd/containerd \
    containerd-shim-runc-v2=github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
    ctr=github.com/containerd/containerd/v2/cmd/ctr)"
  k="$(build_component kubelet "$K8S_VERSION" node "$(k8s_ldflags)" \
    kubelet=k8s.io/kubernetes/cmd/kubelet kube-proxy=k8s.io/kubernetes/cmd/kube-proxy)"
  tmp="$(mktemp -d "$CACHE/bin/.tmp-node.XXXXXX")"
  for f in "$c"/* "$k"/*; do ln -s "$f" "$tmp/$(basename "$f")"; done
  chmod 755 "$tmp"
  touch "$tmp/.complete"
  rm -rf "$NODE_BIN"
  mv "$tmp" "$NODE_BIN"
  flock -u 9
}

node_packages() {
  local p missing=()
  for p in "${NODE_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  command -v apt-get >/dev/null || die "needs the Debian packages ${missing[*]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >"$LOGS/node-apt.log" 2>&1; then
    apt-get update >>"$LOGS/node-apt.log" 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >>"$LOGS/node-apt.log" 2>&1 ||
      die "apt-get install ${missing[*]} failed (log: $LOGS/node-apt.log)"
  fi
}

# The host's first global IPv4 address: the API server advertises it (the
# `kubernetes` Service endpoint) and the kubelet serves on it.
node_ip() { ip -4 -o addr show scope global | awk '{ split($4, a, "/"); print a[1]; exit }'; }

node_running() { [ -f "$NODE/pids/kubelet.pid" ] && node_alive kubelet; }

# Is the process of pid file NAME alive and ours (its command line names $NODE)?
node_alive() {
  local pid
  pid="$(cat "$NODE/pids/$1.pid" 2>/dev/null)" || return 1
  kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$NODE/"
}

# node_start NAME CMD...: a background host process, its log in $NODE/logs.
node_start() {
  local name="$1"; shift
  setsid "$@" >"$NODE/logs/$name.log" 2>&1 </dev/null 8>&- 9>&- &
  echo $! >"$NODE/pids/$name.pid"
}

node_render() {
  sed -e "s#@NODE@#$NODE#g" -e "s#@PKI@#$KWOK_WORKDIR/clusters/$NAME/pki#g" \
    -e "s#@NODE_IP@#$NODE_IP#g" -e "s#@NODE_NAME@#$NODE_NAME#g" \
    -e "s#@POD_CIDR@#$NODE_POD_CIDR#g" -e "s#@BRIDGE@#$NODE_BRIDGE#g" \
    -e "s#@PAUSE@#$NODE_PAUSE_IMAGE#g" -e "s#@RUNC@#$NODE_RUNC#g" -e "s#@CNI_BIN@#$NODE_CNI_BIN#g" \
    -e "s#@KUBELET_PORT@#10250#g" -e "s#@KUBELET_HEALTHZ_PORT@#10248#g" \
    -e "s#@PROXY_HEALTHZ_PORT@#10256#g" -e "s#@PROXY_METRICS_PORT@#10249#g" \
    "$1"
}

# node_cert NAME CN O: a client+server certificate of the cluster CA for the
# node's address and name.
node_cert() {
  local pki="$KWOK_WORKDIR/clusters/$NAME/pki" out="$NODE/pki/$1"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$out.key" -out "$out.csr" \
    -subj "/O=$3/CN=$2" >/dev/null 2>&1
  printf 'subjectAltName=IP:%s,IP:127.0.0.1,DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n' \
    "$NODE_IP" "$NODE_NAME" >"$out.ext"
  openssl x509 -req -in "$out.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -CAserial "$NODE/pki/ca.srl" -days 30 -extfile "$out.ext" -out "$out.crt" >/dev/null 2>&1 ||
    die "cannot sign the $1 certificate with $pki/ca.key"
}

node_kubeconfig() {
  local server
  server="$(kubectl_ config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
  cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: vision
  cluster: {server: "$server", certificate-authority: "$KWOK_WORKDIR/clusters/$NAME/pki/ca.crt"}
users:
- name: $1
  user: {client-certificate: "$NODE/pki/$1.crt", client-key: "$NODE/pki/$1.key"}
contexts:
- name: vision
  context: {cluster: vision, user: $1}
current-context: vision
EOF
}

# Records what node_down must restore: sysctl values and which fixed host
# directories existed.
node_record_host() {
  local s d
  : >"$NODE/host/sysctls"
  for s in "${NODE_SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")" >>"$NODE/host/sysctls"; done
  : >"$NODE/host/created-dirs"
  for d in "${NODE_HOST_DIRS[@]}"; do [ -e "$d" ] || echo "$d" >>"$NODE/host/created-dirs"; done
}

# The images every real node has: the pod sandbox (pause) and the test probe.
node_images() {
  read -r NODE_PAUSE_ARCHIVE NODE_PAUSE_IMAGE < <(image_build pause)
  read -r NODE_PROBE_ARCHIVE _ < <(image_build probe)
}

node_import_images() {
  node_import "$NODE_PAUSE_ARCHIVE"
  node_import "$NODE_PROBE_ARCHIVE"
}

# node_import ARCHIVE: into the CRI namespace of the node's containerd.
node_import() {
  node_ctr images import "$1" >>"$NODE/logs/import.log" 2>&1 ||
    { tail -n 5 "$NODE/logs/import.log" >&2; die "ctr images import $1 failed"; }
}

# A control plane started before hack/kwok/kwokctl.yaml prepared it for a
# real node would let KWOK take the node over, or refuse in-cluster clients.
node_check_control_plane() {
  local cluster="$KWOK_WORKDIR/clusters/$NAME" pid
  pid="$(cat "$cluster/pids/kwok-controller.pid" 2>/dev/null)" || die "no kwok-controller pid in $cluster/pids"
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--manage-nodes-with-annotation-selector=" &&
    openssl x509 -in "$cluster/pki/admin.crt" -noout -text | grep -q "IP Address:10.0.0.1" ||
    die "the running control plane was started before it supported a real node: hack/cluster.sh down && hack/cluster.sh up --real-node"
}

node_up() {
  healthy || die "the control plane is not running: hack/cluster.sh up first"
  if node_running; then
    log "reusing the running real node $NODE_NAME"
    node_ready
    return 0
  fi
  node_check_control_plane
  [ -d "$NODE" ] && node_down
  node_packages
  node_build
  local start=$SECONDS
  NODE_IP="$(node_ip)"
  [ -n "$NODE_IP" ] || die "the host has no global IPv4 address"
  mkdir -p "$NODE"/{pids,logs,pki,host,cni/net.d,kubelet,images}
  node_record_host
  node_images
  node_cert kubelet "system:node:$NODE_NAME" system:nodes
  node_cert kube-proxy system:kube-proxy system:node-proxier
  node_kubeconfig kubelet >"$NODE/kubeconfig-kubelet"
  node_kubeconfig kube-proxy >"$NODE/kubeconfig"
  node_render "$NODE_CONF/containerd.toml" >"$NODE/containerd.toml"
  node_render "$NODE_CONF/cni.conflist" >"$NODE/cni/net.d/10-vision.conflist"
  node_render "$NODE_CONF/kubelet.yaml" >"$NODE/kubelet.yaml"
  node_render "$NODE_CONF/kube-proxy.yaml" >"$NODE/kube-proxy.yaml"
  # Bridged pod traffic must pass iptables (Services between pods of the
  # node); the module may be built in or missing: not fatal.
  modprobe br_netfilter 2>/dev/null || true

  # containerd finds its shim and runc on PATH.
  PATH="$NODE_BIN:$PATH" node_start containerd "$NODE_BIN/containerd" --config "$NODE/containerd.toml"
  local i
  for ((i = 0; i < 60; i++)); do
    node_ctr version >/dev/null 2>&1 && break
    node_alive containerd || { tail -n 30 "$NODE/logs/containerd.log" >&2; die "containerd exited"; }
    sleep 0.5
  done
  node_ctr version >/dev/null 2>&1 || die "containerd did not start (log: $NODE/logs/containerd.log)"
  node_import_images

  node_start kubelet "$NODE_BIN/kubelet" \
    --config "$NODE/kubelet.yaml" \
    --kubeconfig "$NODE/kubeconfig-kubelet" \
    --root-dir "$NODE/kubelet" \
    --container-runtime-endpoint "unix://$NODE/containerd.sock" \
    --hostname-override "$NODE_NAME" \
    --node-ip "$NODE_IP" \
    --node-labels "$NODE_LABELS" \
    --register-with-taints "$NODE_TAINT_KEY=true:NoSchedule"
  node_start kube-proxy "$NODE_BIN/kube-proxy" --config "$NODE/kube-proxy.yaml"

  for ((i = 0; i < 120; i++)); do
    kubectl_ get node "$NODE_NAME" >/dev/null 2>&1 && break
    node_alive kubelet || { tail -n 30 "$NODE/logs/kubelet.log" >&2; die "the kubelet exited"; }
    sleep 0.5
  done
  kubectl_ get node "$NODE_NAME" >/dev/null 2>&1 || die "the kubelet did not register $NODE_NAME (log: $NODE/logs/kubelet.log)"
  node_ready
  log "real node $NODE_NAME Ready in $((SECONDS - start))s (logs: $NODE/logs)"
}

# Fake GPUs: the node's status advertises nvidia.com/gpu, so the scheduler
# and the kubelet count GPU requests; no device is injected into containers.
node_ready() {
  kubectl_ patch node "$NODE_NAME" --subresource=status --type=json -p \
    "[{\"op\":\"add\",\"path\":\"/status/capacity/nvidia.com~1gpu\",\"value\":\"$NODE_GPUS\"}]" >/dev/null
  kubectl_ wait --for=condition=Ready "node/$NODE_NAME" --timeout=120s >/dev/null ||
    die "$NODE_NAME did not become Ready (log: $NODE/logs/kubelet.log)"
  # The API server taints a new node not-ready; the node lifecycle controller
  # that would lift it does not run in this cluster (hack/kwok/kwokctl.yaml).
  kubectl_ taint node "$NODE_NAME" node.kubernetes.io/not-ready:NoSchedule- >/dev/null 2>&1 || true
  local i
  for ((i = 0; i < 60; i++)); do
    [ "$(kubectl_ get node "$NODE_NAME" -o jsonpath='{.status.allocatable.nvidia\.com/gpu}')" = "$NODE_GPUS" ] && return 0
    sleep 0.5
  done
  die "$NODE_NAME does not show $NODE_GPUS allocatable nvidia.com/gpu"
}

# Stops every process of the node and undoes the host changes recorded by
# node_up. Safe to run twice, and on a half-started node.
node_down() {
  [ -d "$NODE" ] || return 0
  NODE_BIN="$CACHE/bin/node-$K8S_VERSION-$CONTAINERD_VERSION"
  local name pid
  for name in kube-proxy kubelet; do
    if node_alive "$name"; then kill "$(cat "$NODE/pids/$name.pid")" 2>/dev/null || true; fi
  done
  # Containers outlive the kubelet (their shims belong to containerd): kill
  # every task, then containerd.
  if node_alive containerd && [ -x "$NODE_BIN/ctr" ]; then
    local t
    for t in $(node_ctr tasks ls -q 2>/dev/null); do node_ctr tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
    sleep 1
    for t in $(node_ctr tasks ls -q 2>/dev/null); do node_ctr tasks delete -f "$t" >/dev/null 2>&1 || true; done
  fi
  for name in containerd kube-proxy kubelet; do
    if node_alive "$name"; then kill "$(cat "$NODE/pids/$name.pid")" 2>/dev/null || true; fi
  done
  # Shims (their command line names our containerd socket) and anything else
  # still running from the node's directory.
  for pid in $(pgrep -f "$NODE/" 2>/dev/null || true); do
    [ "$pid" = $$ ] || kill -9 "$pid" 2>/dev/null || true
  done
  for name in containerd kube-proxy kubelet; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do node_alive "$name" || break; sleep 0.5; done
    if node_alive "$name"; then kill -9 "$(cat "$NODE/pids/$name.pid")" 2>/dev/null || true; fi
  done
  # Mounts: overlay rootfs, volumes (tmpfs), network namespaces and the
  # kubelet root dir's own bind mount; innermost first.
  local m
  for m in $(awk -v p="$NODE/" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  # Pod cgroups (cgroupfs driver: kubepods in every v1 hierarchy): anything
  # left in them is a container of this node; then remove them deepest first.
  local c
  for c in $(find /sys/fs/cgroup/pids/kubepods -name cgroup.procs 2>/dev/null); do
    xargs -r kill -9 <"$c" 2>/dev/null || true
  done
  sleep 0.5
  for c in $(find /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods -depth -type d 2>/dev/null); do
    rmdir "$c" 2>/dev/null || true
  done
  ip link del "$NODE_BRIDGE" 2>/dev/null || true
  node_iptables_clean
  if [ -f "$NODE/host/sysctls" ]; then
    local kv
    while read -r kv; do sysctl -q -w "$kv" >/dev/null 2>&1 || true; done <"$NODE/host/sysctls"
  fi
  if [ -f "$NODE/host/created-dirs" ]; then
    local d
    while read -r d; do
      awk -v p="$d/" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r | xargs -r umount -l 2>/dev/null || true
      rm -rf "$d"
    done <"$NODE/host/created-dirs"
  fi
  rm -rf "$NODE"
  log "real node $NODE_NAME is down"
}

# Removes the chains that the kubelet, kube-proxy and the CNI plugins made
# (KUBE-*, CNI-*) and every rule that jumps to them, IPv4 and IPv6.
node_iptables_clean() {
  local v
  for v in iptables ip6tables; do
    command -v "$v-save" >/dev/null || continue
    if "$v-save" 2>/dev/null | grep -qE 'KUBE-|CNI-'; then
      "$v-save" | grep -vE 'KUBE-|CNI-' | "$v-restore" || log "$v-restore failed: check $v-save for KUBE-/CNI- rules"
    fi
  done
  return 0
}

node_status() {
  if node_running; then
    echo "real node $NODE_NAME: running (logs: $NODE/logs)"
    kubectl_ get node "$NODE_NAME" -o wide 2>/dev/null || true
  else
    echo "real node: not running"
    return 1
  fi
}
