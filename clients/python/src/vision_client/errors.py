"""Typed errors of the client. Every error it raises is a :class:`VisionClientError`.

What a backend usually does with them:

- :class:`JobNotFound` (and :class:`JobDeleted`): the job is not there (any
  more); do not retry.
- :class:`SubmissionConflict`: the name of the request is taken by another
  submission; retrying cannot fix it.
- :class:`WaitTimeout`: the job is not finished yet; wait again or give up.
- :class:`JobNotSucceeded`: ``result()`` of a job that did not (yet) succeed.
- :class:`InvalidJob`: the API server refused the job (schema, CEL rules);
  do not retry unchanged.
- :class:`Forbidden`: the credentials may not do this.
- :class:`ApiError`: anything else the API server (or the connection to it)
  failed with; often worth a retry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import JobPhase, VisionJob


class VisionClientError(Exception):
    """Base class of every error the client raises."""


class ApiError(VisionClientError):
    """The API server answered with an error, or could not be reached.

    ``status`` is the HTTP status (None when no answer came), ``reason`` the
    Kubernetes Status reason (``Conflict``, ``Invalid``, ...) when there is one.
    """

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.body = body


class InvalidJob(ApiError):
    """The API server refused the object as invalid (HTTP 400 or 422)."""


class Forbidden(ApiError):
    """The credentials may not do this (HTTP 401 or 403)."""


class JobNotFound(VisionClientError):
    """No VisionJob ``name`` in ``namespace``."""

    def __init__(self, namespace: str, name: str, message: str | None = None) -> None:
        super().__init__(message or f"VisionJob {namespace}/{name} not found")
        self.namespace = namespace
        self.name = name


class JobDeleted(JobNotFound):
    """The job was deleted while the client waited for it."""

    def __init__(self, namespace: str, name: str) -> None:
        super().__init__(namespace, name, f"VisionJob {namespace}/{name} was deleted while waited on")


class SubmissionConflict(VisionClientError):
    """The job name of a request id is taken by a different submission.

    ``differences`` lists the fields that differ (``spec.input``, ...);
    ``existing`` is the job found under the name.
    """

    def __init__(self, namespace: str, name: str, differences: list[str], existing: VisionJob) -> None:
        super().__init__(
            f"VisionJob {namespace}/{name} exists and is another submission (different: {', '.join(differences)})"
        )
        self.namespace = namespace
        self.name = name
        self.differences = differences
        self.existing = existing


class WaitTimeout(VisionClientError, TimeoutError):
    """The job was not finished when the client's wait ran out.

    ``last`` is the job as last seen (its phase says where it stands).
    """

    def __init__(self, namespace: str, name: str, timeout: float, last: VisionJob) -> None:
        phase = last.phase.value if last.phase else "no phase yet"
        super().__init__(f"VisionJob {namespace}/{name} not finished after {timeout:g}s ({phase})")
        self.namespace = namespace
        self.name = name
        self.timeout = timeout
        self.last = last


class JobNotSucceeded(VisionClientError):
    """``result()`` of a job that is not Succeeded; ``job`` says where it is."""

    def __init__(self, namespace: str, name: str, job: VisionJob) -> None:
        phase: JobPhase | None = job.phase
        status = job.status
        detail = f"{phase.value if phase else 'no phase yet'}"
        if status and status.reason:
            detail += f", {status.reason}"
        if status and status.message:
            detail += f": {status.message}"
        super().__init__(f"VisionJob {namespace}/{name} has not succeeded ({detail})")
        self.namespace = namespace
        self.name = name
        self.job = job
