"""The local cluster for the e2e tests, as the Rust harness (tests/harness/)
uses it: its kubeconfig, the cluster "turn" every test run holding an
operator takes, the operator as a child process, and one test world (a
namespace, a queue, an algorithm, an operator) cleaned up in the Rust
scenario's order.

A missing cluster fails the tests with the fix (hack/cluster.sh up); they
never skip.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

REPO = Path(__file__).resolve().parents[3]
NOT_REACHABLE = "local cluster not reachable: run hack/cluster.sh up"
#: Label on every namespace the e2e tests create (to find leftovers).
E2E_LABEL = "vision.zjlab.io/e2e"
#: The field manager of what the tests apply (the Rust harness's).
FIELD_MANAGER = "vision-e2e"
GROUP, VERSION = "vision.zjlab.io", "v1alpha1"

#: The turn (crates/vision-chaos/src/turn.rs): a Lease every test run with an
#: operator takes, created (or taken over once expired), renewed every 5 s,
#: deleted on release.
TURN_LEASE, TURN_NAMESPACE, TURN_SECONDS, TURN_RENEW_EVERY = "vision-e2e-turn", "default", 30, 5.0
TURN_WAIT_AT_MOST = 30 * 60.0


def kubeconfig_path() -> Path:
    """``$VISION_KUBECONFIG``, else ``<repo>/.local/cluster/kubeconfig`` (tests/harness/cluster.rs)."""
    path = os.environ.get("VISION_KUBECONFIG")
    return Path(path) if path else REPO / ".local" / "cluster" / "kubeconfig"


def api_client() -> k8s.ApiClient:
    """An admin client of the local cluster; fails naming the fix if it does not answer."""
    path = kubeconfig_path()
    if not path.exists():
        raise RuntimeError(f"{NOT_REACHABLE} (no kubeconfig {path})")
    client: k8s.ApiClient = k8s_config.new_client_from_config(config_file=str(path), persist_config=False)
    try:
        k8s.VersionApi(client).get_code(_request_timeout=10)
    except Exception as e:
        raise RuntimeError(f"{NOT_REACHABLE} (API server of {path}: {e})") from e
    return client


def unique_name(prefix: str) -> str:
    """``<prefix>-<pid><time>``: unique across processes and calls."""
    unique_name.seq = getattr(unique_name, "seq", 0) + 1  # type: ignore[attr-defined]
    return f"{prefix}-{os.getpid():x}{time.time_ns() % 0xFFFFFFFF:x}{unique_name.seq}"  # type: ignore[attr-defined]


def wait_for(timeout: float, pred: Callable[[], bool]) -> bool:
    """Polls ``pred`` every 100 ms until true; False if ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _micro_time() -> str:
    """Now as a Kubernetes MicroTime (RFC 3339, six fractional digits)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Turn:
    """The cluster's turn (tests/harness/turn.rs): taken before the world is
    made, released after it is cleaned up, so no other test run's operator
    meets this one's jobs.

    The Lease is written through the dynamic client, as raw JSON: the typed
    client would send its MicroTimes through ``datetime.isoformat()``, which
    drops a zero fraction the API server then refuses."""

    def __init__(self, client: k8s.ApiClient) -> None:
        self._leases = DynamicClient(client).resources.get(api_version="coordination.k8s.io/v1", kind="Lease")
        self.holder = unique_name("pytest")
        self._uid = self._take()
        self._stop = threading.Event()
        self._renewal = threading.Thread(target=self._renew, name="turn-renewal", daemon=True)
        self._renewal.start()

    def _take(self) -> str:
        deadline = time.monotonic() + TURN_WAIT_AT_MOST
        while True:
            taken, who = self._try_take()
            if taken:
                return who
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"another test run has held the cluster ({TURN_NAMESPACE}/{TURN_LEASE}, holder {who}) "
                    f"for {TURN_WAIT_AT_MOST:g}s"
                )
            time.sleep(0.5)

    def _read(self) -> dict[str, Any] | None:
        try:
            lease: dict[str, Any] = self._leases.get(name=TURN_LEASE, namespace=TURN_NAMESPACE).to_dict()
            return lease
        except NotFoundError:
            return None

    def _write(self, spec: dict[str, Any], resource_version: str | None) -> dict[str, Any]:
        metadata = {"name": TURN_LEASE, "namespace": TURN_NAMESPACE}
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}
        if resource_version is None:
            written = self._leases.create(body=body, namespace=TURN_NAMESPACE)
        else:
            metadata["resourceVersion"] = resource_version
            written = self._leases.replace(body=body, namespace=TURN_NAMESPACE)
        result: dict[str, Any] = written.to_dict()
        return result

    def _try_take(self) -> tuple[bool, str]:
        """(True, uid of the Lease) when this holder won; (False, the holder) otherwise."""
        now = _micro_time()
        spec = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": TURN_SECONDS,
            "acquireTime": now,
            "renewTime": now,
        }
        try:
            current = self._read()
            if current is not None:
                held = current.get("spec") or {}
                renewed, seconds = held.get("renewTime"), held.get("leaseDurationSeconds")
                if renewed and seconds and _parse_time(renewed) + seconds > time.time():
                    return False, str(held.get("holderIdentity"))
            rv = current["metadata"]["resourceVersion"] if current is not None else None
            return True, str(self._write(spec, rv)["metadata"]["uid"])
        except ApiException as e:  # lost a race (409) or a transient error: try again
            return False, f"(attempt failed: {e.status} {e.reason})"

    def _renew(self) -> None:
        while not self._stop.wait(TURN_RENEW_EVERY):
            try:
                lease = self._read()
                spec = (lease or {}).get("spec") or {}
                if lease is None or spec.get("holderIdentity") != self.holder:
                    return
                self._write({**spec, "renewTime": _micro_time()}, lease["metadata"]["resourceVersion"])
            except ApiException:
                continue

    def release(self) -> None:
        """Stops renewing; deletes the Lease if it is still this turn's."""
        self._stop.set()
        self._renewal.join()
        try:
            lease = self._read()
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.holder:
                return
            preconditions = {"uid": self._uid, "resourceVersion": lease["metadata"]["resourceVersion"]}
            self._leases.delete(name=TURN_LEASE, namespace=TURN_NAMESPACE, body={"preconditions": preconditions})
        except ApiException as e:
            print(f"releasing the cluster turn: {e.status} {e.reason}")


def _parse_time(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 time (``...Z`` or with an offset)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def operator_binary() -> Path:
    """``$VISION_OPERATOR_BIN``, else ``<cargo target dir>/debug/vision-operator``."""
    explicit = os.environ.get("VISION_OPERATOR_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    binary = (target if target.is_absolute() else REPO / target) / "debug" / "vision-operator"
    if not binary.exists():
        raise RuntimeError(
            f"{binary} missing: build it first"
            " (cargo build --workspace --bins --tests --features e2e; hack/test.sh does)"
        )
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Operator:
    """The vision-operator binary as a child process, with the Rust tests'
    flags (tests/harness/operator.rs); its log goes to
    ``.local/logs/operator-<identity>-<port>.log``."""

    def __init__(self, lease_name: str, identity: str) -> None:
        self.port = free_port()
        logs = REPO / ".local" / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log = logs / f"operator-{identity}-{self.port}.log"
        # Only the flags configure it, not the caller's environment.
        env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "VISION_LOG")}
        args = [
            str(operator_binary()),
            "--kubeconfig",
            str(kubeconfig_path()),
            "--http-addr",
            f"127.0.0.1:{self.port}",
            "--lease-name",
            lease_name,
            "--lease-namespace",
            "default",
            "--identity",
            identity,
            "--lease-seconds",
            # The Rust harness's 8 s (tests/harness/operator.rs, 75d3ba4): with
            # 4 s a renewal during a burst on 2 busy cores can miss its deadline,
            # and the lone replica steps down with nobody to replace it.
            "8",
            "--retry-backoff-base-ms",
            "200",
            "--retry-backoff-max-ms",
            "2000",
            "--log-level",
            "info,vision_operator=debug",
        ]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = 60.0) -> None:
        if not wait_for(timeout, lambda: self.ready() or self.process.poll() is not None) or not self.ready():
            raise RuntimeError(f"operator not ready in {timeout:g}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def ensure_crds(client: k8s.ApiClient) -> None:
    """Server-side applies crds/*.yaml (what the Rust harness applies from the
    same types) and waits until they are established."""
    crds = DynamicClient(client).resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
    names = []
    for path in sorted((REPO / "crds").glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        crds.server_side_apply(body=body, field_manager=FIELD_MANAGER, force_conflicts=True)
        names.append(body["metadata"]["name"])
    extensions = k8s.ApiextensionsV1Api(client)

    def established(name: str) -> bool:
        status = extensions.read_custom_resource_definition(name).status
        conditions = (status.conditions if status else None) or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    for name in names:
        if not wait_for(30, partial(established, name)):
            raise RuntimeError(f"CRD {name} not established in 30s")


class World:
    """One test session's world on the cluster: the turn, a fresh namespace,
    a queue and an algorithm (cluster-scoped, named ``<local>-<namespace>``),
    and an operator. :meth:`close` cleans up in the Rust scenario's order:
    the jobs go while the operator runs (a job keeps its finalizer until the
    operator removes it), then the operator stops, then the queue, the
    algorithm and the namespace go, and last the turn."""

    def __init__(self, prefix: str, *, queue_slots: int, algorithm_annotations: dict[str, str]) -> None:
        self.client = api_client()
        self.custom = k8s.CustomObjectsApi(self.client)
        self.core = k8s.CoreV1Api(self.client)
        self.operator: Operator | None = None
        self.cluster_objects: list[tuple[str, str]] = []
        self.turn = Turn(self.client)
        try:
            self.namespace = unique_name(prefix)
            self.core.create_namespace(
                k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=self.namespace, labels={E2E_LABEL: "true"}))
            )
            if not wait_for(30, self._has_default_service_account):
                raise RuntimeError(f"namespace {self.namespace}: no default ServiceAccount in 30s")
            ensure_crds(self.client)
            self.queue = self._create(
                "visionqueues",
                {"kind": "VisionQueue", "metadata": {"name": "pool"}, "spec": {"maxRunning": queue_slots}},
            )
            self.algorithm = self._create(
                "visionalgorithms",
                {
                    "kind": "VisionAlgorithm",
                    "metadata": {"name": "detect"},
                    "spec": {
                        "template": {
                            "metadata": {"annotations": algorithm_annotations},
                            "spec": {"containers": [{"name": "algorithm", "image": "registry.example/vision/algo:1"}]},
                        },
                        "gpusPerJob": 1,
                    },
                },
            )
            self.operator = Operator(lease_name=f"e2e-{prefix}", identity=prefix)
            self.operator.wait_ready()
        except BaseException:
            self.close()
            raise

    def _has_default_service_account(self) -> bool:
        try:
            self.core.read_namespaced_service_account("default", self.namespace)
            return True
        except ApiException:
            return False

    def _create(self, plural: str, body: dict[str, Any]) -> str:
        """Creates a cluster-scoped object named ``<local name>-<namespace>``
        (fields the schema does not know are refused: no silent typo)."""
        name = f"{body['metadata']['name']}-{self.namespace}"
        body = {**body, "apiVersion": f"{GROUP}/{VERSION}", "metadata": {"name": name}}
        self.custom.create_cluster_custom_object(
            GROUP, VERSION, plural, body, field_manager=FIELD_MANAGER, field_validation="Strict"
        )
        self.cluster_objects.append((plural, name))
        return name

    def close(self) -> None:
        try:
            if hasattr(self, "namespace"):
                self._release_jobs()
        finally:
            if self.operator is not None:
                self.operator.stop()
            for plural, name in self.cluster_objects:
                self._ignore_missing(partial(self.custom.delete_cluster_custom_object, GROUP, VERSION, plural, name))
            if hasattr(self, "namespace"):
                self._ignore_missing(lambda: self.core.delete_namespace(self.namespace))
            self.turn.release()
            self.client.close()

    def _release_jobs(self) -> None:
        """Deletes the namespace's jobs and removes their finalizers, so they
        go whether or not the operator removes them."""
        self._ignore_missing(
            lambda: self.custom.delete_collection_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "visionjobs", propagation_policy="Background"
            )
        )
        listed: Any = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, "visionjobs")
        for job in listed["items"]:
            if job["metadata"].get("finalizers"):
                self._ignore_missing(
                    partial(
                        self.custom.patch_namespaced_custom_object,
                        GROUP,
                        VERSION,
                        self.namespace,
                        "visionjobs",
                        job["metadata"]["name"],
                        {"metadata": {"finalizers": None}},
                        _content_type="application/merge-patch+json",
                    )
                )

    @staticmethod
    def _ignore_missing(call: Callable[[], object]) -> None:
        try:
            call()
        except ApiException as e:
            if e.status != 404:
                print(f"cleanup: {e.status} {e.reason}")
