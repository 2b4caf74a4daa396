"""The client: submit a VisionJob exactly once, read it, wait for its outcome,
read its result, cancel it. Transport, kubeconfig and in-cluster credentials
are the official ``kubernetes`` package's (``CustomObjectsApi``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from .errors import (
    ApiError,
    Forbidden,
    InvalidJob,
    JobDeleted,
    JobNotFound,
    JobNotSucceeded,
    SubmissionConflict,
    VisionClientError,
    WaitTimeout,
)
from .models import GROUP, PLURAL, VERSION, JobPhase, ObjectMeta, VisionJob, VisionJobSpec
from .submission import ANNOTATION_REQUEST_ID, differences, job_name_for_request

#: The field manager of the client's writes (``managedFields`` names it).
FIELD_MANAGER = "vision-client-python"
#: The prefix of derived job names when the caller gives none.
DEFAULT_PREFIX = "vj"
_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_T = TypeVar("_T")


class VisionClient:
    """A client for the VisionJobs of one namespace.

    Build it with :meth:`from_kubeconfig` (a developer's or CI's kubeconfig),
    :meth:`in_cluster` (a backend running in a pod, with its ServiceAccount),
    or from an existing ``kubernetes.client.ApiClient``::

        jobs = VisionClient.from_kubeconfig(namespace="team-a")
        job = jobs.create(
            VisionJobSpec(algorithm="yolo-detect", input={"uri": "s3://frames/cam42/0001.jpg"}),
            request_id="req-7f3a",
        )
        done = jobs.wait(job.name, timeout=600)  # Succeeded, Failed or Rejected
        if done.phase is JobPhase.SUCCEEDED:
            print(done.result)
    """

    def __init__(self, api_client: k8s.ApiClient, namespace: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        """``api_client``: the connection; ``namespace``: where the jobs are;
        ``prefix``: the prefix of the job names derived from request ids (keep
        it fixed: another prefix names another job)."""
        self.api_client = api_client
        self.namespace = namespace
        self.prefix = prefix
        self._api = k8s.CustomObjectsApi(api_client)

    @classmethod
    def from_kubeconfig(
        cls,
        config_file: str | Path | None = None,
        *,
        context: str | None = None,
        namespace: str | None = None,
        prefix: str = DEFAULT_PREFIX,
    ) -> VisionClient:
        """A client from a kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``
        when ``config_file`` is None) and its ``context`` (the current one when
        None). ``namespace`` defaults to the context's namespace, else
        ``default``."""
        path = str(config_file) if config_file is not None else None
        api_client = k8s_config.new_client_from_config(config_file=path, context=context, persist_config=False)
        if namespace is None:
            contexts, current = k8s_config.list_kube_config_contexts(config_file=path)
            chosen = next((c for c in contexts if c.get("name") == context), None) if context else current
            namespace = ((chosen or {}).get("context") or {}).get("namespace") or "default"
        return cls(api_client, namespace, prefix=prefix)

    @classmethod
    def in_cluster(cls, *, namespace: str | None = None, prefix: str = DEFAULT_PREFIX) -> VisionClient:
        """A client with the pod's ServiceAccount. ``namespace`` defaults to the
        pod's own namespace."""
        configuration = k8s.Configuration()
        k8s_config.load_incluster_config(client_configuration=configuration)
        if namespace is None:
            namespace = _SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        return cls(k8s.ApiClient(configuration), namespace, prefix=prefix)

    def close(self) -> None:
        """Closes the connection pool."""
        self.api_client.close()

    def __enter__(self) -> VisionClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- submission ---------------------------------------------------------

    def job_name(self, request_id: str, *, prefix: str | None = None) -> str:
        """The name :meth:`create` gives the job of ``request_id``."""
        return job_name_for_request(self.prefix if prefix is None else prefix, request_id)

    def create(
        self,
        job: VisionJob | VisionJobSpec,
        *,
        request_id: str,
        prefix: str | None = None,
    ) -> VisionJob:
        """Submits ``job`` exactly once for ``request_id``; returns the job.

        The job is named :meth:`job_name` (``<prefix>-<hash of the request
        id>``) and annotated with the request id. Calling this again for the
        same request (a retry after a timeout, a second worker) returns the
        job the first call made, as long as the job exists; a request id whose
        job has another spec raises :class:`SubmissionConflict`. ``job`` may be
        a bare spec, or a VisionJob to carry labels and annotations (its
        ``metadata.name``, if set, must be the derived name).

        Raises :class:`SubmissionConflict`, :class:`InvalidJob` (refused by the
        API server's validation), :class:`Forbidden`, :class:`ApiError`.
        """
        wanted = _for_request(job, self.job_name(request_id, prefix=prefix), request_id, self.namespace)
        name = wanted.metadata.name
        assert name is not None
        # A job found under the name may be deleted before it is read: create
        # again then (a few times, not forever).
        for _ in range(3):
            try:
                created = self._call(
                    lambda: self._api.create_namespaced_custom_object(
                        GROUP,
                        VERSION,
                        self.namespace,
                        PLURAL,
                        wanted.to_dict(),
                        field_manager=FIELD_MANAGER,
                        field_validation="Strict",
                    ),
                    name,
                )
                return VisionJob.model_validate(created)
            except _AlreadyExists:
                pass
            try:
                existing = self.get(name)
            except JobNotFound:
                continue
            different = differences(existing, wanted)
            if different:
                raise SubmissionConflict(self.namespace, name, different, existing)
            return existing
        raise ApiError(f"VisionJob {self.namespace}/{name} kept being deleted while it was submitted")

    # -- reading ------------------------------------------------------------

    def get(self, name: str) -> VisionJob:
        """The job ``name``. Raises :class:`JobNotFound`."""
        raw = self._call(
            lambda: self._api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name),
            name,
        )
        return VisionJob.model_validate(raw)

    def wait(self, name: str, timeout: float) -> VisionJob:
        """Waits until the job is in a final phase (Succeeded, Failed or
        Rejected) and returns it: a failed job is returned, not raised (its
        ``status.reason`` and ``message`` say why).

        Watches the job (no polling); ``status.phase`` is the source of truth
        (the ``Finished`` condition mirrors it). ``timeout`` is in seconds.

        Raises :class:`WaitTimeout` (with the job as last seen) when it is not
        final in time, :class:`JobNotFound` if it does not exist,
        :class:`JobDeleted` if it is deleted meanwhile.
        """
        deadline = time.monotonic() + timeout
        job = self.get(name)
        while not job.is_finished:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(self.namespace, name, timeout, job)
            seen = self._watch(name, job, remaining, until=lambda j: j.is_finished)
            if seen is None:
                # The watch ended (its time ran out, or it was too old to
                # resume): read the job again, then watch again if there is time.
                try:
                    seen = self.get(name)
                except JobNotFound:
                    raise JobDeleted(self.namespace, name) from None
            job = seen
        return job

    def _watch(
        self, name: str, job: VisionJob, remaining: float, until: Callable[[VisionJob], bool]
    ) -> VisionJob | None:
        """Watches ``name`` from ``job``'s resourceVersion for up to
        ``remaining`` seconds: the job once ``until`` holds for it, None when
        the watch ends first. Raises :class:`JobDeleted` when it is deleted."""
        seconds = max(1, math.ceil(remaining))
        watcher = k8s_watch.Watch()
        try:
            for event in watcher.stream(
                self._api.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                field_selector=f"metadata.name={name}",
                resource_version=job.metadata.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=seconds,
                _request_timeout=(10, seconds + 10),
            ):
                kind = event.get("type")
                if kind == "DELETED":
                    raise JobDeleted(self.namespace, name)
                if kind in ("ADDED", "MODIFIED"):
                    seen = VisionJob.model_validate(event["raw_object"])
                    if until(seen):
                        return seen
        except ApiException as e:
            if e.status == 410:  # resourceVersion too old: start over from a read
                return None
            raise _api_error(e, self.namespace, name) from e
        except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError):
            return None
        finally:
            watcher.stop()
        return None

    def result(self, name: str) -> Any:
        """The result of the Succeeded job ``name`` (``status.result``: the JSON
        the algorithm wrote, or its text; None if it wrote nothing).

        Raises :class:`JobNotSucceeded` if the job is in any other phase,
        :class:`JobNotFound` if it does not exist.
        """
        job = self.get(name)
        if job.phase is not JobPhase.SUCCEEDED:
            raise JobNotSucceeded(self.namespace, name, job)
        return job.result

    # -- control ------------------------------------------------------------

    def cancel(self, name: str, *, wait: float | None = None) -> None:
        """Cancels the job ``name`` by deleting it: the operator deletes its
        pod (the job's finalizer) and frees its slot, then the job goes.

        With ``wait`` (seconds), returns once the job is gone, or raises
        :class:`WaitTimeout`. Raises :class:`JobNotFound` if there is no such
        job (also when a cancel is repeated).
        """
        self._call(
            lambda: self._api.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                propagation_policy="Background",
            ),
            name,
        )
        if wait is None:
            return
        deadline = time.monotonic() + wait
        while True:
            try:
                job = self.get(name)
            except JobNotFound:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(self.namespace, name, wait, job)
            try:
                self._watch(name, job, remaining, until=lambda _: False)
            except JobDeleted:
                return

    # -- errors -------------------------------------------------------------

    def _call(self, fn: Callable[[], _T], name: str) -> _T:
        try:
            return fn()
        except ApiException as e:
            if e.status == 409 and _status_reason(e) == "AlreadyExists":
                raise _AlreadyExists() from e
            raise _api_error(e, self.namespace, name) from e
        except urllib3.exceptions.HTTPError as e:
            raise ApiError(f"the API server could not be reached: {e}") from e


class _AlreadyExists(VisionClientError):
    """A create found the name taken (handled inside :meth:`VisionClient.create`)."""


def _for_request(job: VisionJob | VisionJobSpec, name: str, request_id: str, namespace: str) -> VisionJob:
    """``job`` as submitted for ``request_id``: named ``name``, in ``namespace``,
    annotated with the request id, without server-set metadata."""
    if isinstance(job, VisionJobSpec):
        job = VisionJob(spec=job)
    meta = job.metadata
    if meta.name is not None and meta.name != name:
        raise ValueError(
            f"job named {meta.name!r}, but request {request_id!r} names it {name!r}: leave metadata.name unset"
        )
    if meta.namespace is not None and meta.namespace != namespace:
        raise ValueError(f"job in namespace {meta.namespace!r}, but this client submits to {namespace!r}")
    annotations = dict(meta.annotations or {})
    annotations[ANNOTATION_REQUEST_ID] = request_id
    return VisionJob(
        metadata=ObjectMeta(
            name=name,
            namespace=namespace,
            labels=meta.labels,
            annotations=annotations,
        ),
        spec=job.spec,
    )


def _status_body(e: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(e.body) if isinstance(e.body, (str, bytes)) else None
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _status_reason(e: ApiException) -> str | None:
    reason = _status_body(e).get("reason")
    return reason if isinstance(reason, str) else None


def _api_error(e: ApiException, namespace: str, name: str) -> VisionClientError:
    """The typed error of an API server's answer."""
    body = _status_body(e)
    message = body.get("message") or e.reason or str(e)
    reason = _status_reason(e)
    details = body.get("details")
    kind = details.get("kind") if isinstance(details, dict) else None
    if e.status == 404 and kind in (None, PLURAL):
        return JobNotFound(namespace, name)
    if e.status in (400, 422):
        return InvalidJob(str(message), status=e.status, reason=reason, body=body)
    if e.status in (401, 403):
        return Forbidden(str(message), status=e.status, reason=reason, body=body)
    return ApiError(f"VisionJob {namespace}/{name}: {message}", status=e.status, reason=reason, body=body)
