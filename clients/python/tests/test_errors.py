"""How API server answers become typed errors, and what create refuses
before sending anything (no cluster needed)."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException

from vision_client import (
    ApiError,
    Forbidden,
    InvalidJob,
    JobNotFound,
    ObjectMeta,
    VisionJob,
    VisionJobSpec,
)
from vision_client.client import _api_error, _for_request


def answer(status: int, reason: str, kind: str | None = None) -> ApiException:
    e = ApiException(status=status, reason=reason)
    e.body = json.dumps(
        {"kind": "Status", "status": "Failure", "message": f"the {reason}", "reason": reason, "details": {"kind": kind}}
    )
    return e


@pytest.mark.parametrize(
    ("exception", "error"),
    [
        (answer(404, "NotFound", "visionjobs"), JobNotFound),
        (answer(422, "Invalid", "VisionJob"), InvalidJob),
        (answer(400, "BadRequest"), InvalidJob),
        (answer(403, "Forbidden", "visionjobs"), Forbidden),
        (answer(401, "Unauthorized"), Forbidden),
        (answer(500, "InternalError"), ApiError),
        # A missing namespace is not a missing job.
        (answer(404, "NotFound", "namespaces"), ApiError),
    ],
)
def test_answers_become_typed_errors(exception: ApiException, error: type[Exception]) -> None:
    got = _api_error(exception, "team-a", "job-1")
    assert type(got) is error
    if isinstance(got, ApiError):
        assert (got.status, got.reason) == (exception.status, json.loads(str(exception.body))["reason"])


def test_a_submission_is_named_for_its_request_and_keeps_labels_and_annotations() -> None:
    job = VisionJob(
        metadata=ObjectMeta(labels={"team": "a"}, annotations={"note": "x"}, uid="u", resource_version="9"),
        spec=VisionJobSpec(algorithm="detect"),
    )
    sent = _for_request(job, "vj-abc", "req-1", "team-a").to_dict()
    assert sent["metadata"] == {
        "name": "vj-abc",
        "namespace": "team-a",
        "labels": {"team": "a"},
        "annotations": {"note": "x", "vision.zjlab.io/request-id": "req-1"},
    }


def test_a_job_named_otherwise_than_its_request_is_refused() -> None:
    named = VisionJob(metadata=ObjectMeta(name="mine"), spec=VisionJobSpec(algorithm="d"))
    with pytest.raises(ValueError, match=r"leave metadata\.name unset"):
        _for_request(named, "vj-abc", "r", "ns")
