"""Python client for vision-operator's VisionJobs, for platform backends.

Submit a job exactly once per request, read it, wait for its outcome, read
its result, cancel it::

    from vision_client import VisionClient, VisionJobSpec

    jobs = VisionClient.from_kubeconfig(namespace="team-a")
    job = jobs.create(VisionJobSpec(algorithm="yolo-detect", input={"uri": "s3://frames/1.jpg"}),
                      request_id="req-7f3a")
    done = jobs.wait(job.name, timeout=600)

See clients/python/README.md and docs/CLIENTS.md.
"""

from .client import DEFAULT_PREFIX, FIELD_MANAGER, VisionClient
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
from .models import (
    API_VERSION,
    FINAL_PHASES,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    Condition,
    JobOutput,
    JobPhase,
    ObjectMeta,
    OutputClaim,
    OutputFile,
    OutputLocation,
    VisionJob,
    VisionJobSpec,
    VisionJobStatus,
)
from .submission import (
    ANNOTATION_REQUEST_ID,
    MUTABLE_SPEC_FIELDS,
    differences,
    job_name_for_request,
    same_submission,
)

__all__ = [
    "ANNOTATION_REQUEST_ID",
    "API_VERSION",
    "DEFAULT_PREFIX",
    "FIELD_MANAGER",
    "FINAL_PHASES",
    "GROUP",
    "KIND",
    "MUTABLE_SPEC_FIELDS",
    "PLURAL",
    "VERSION",
    "ApiError",
    "Condition",
    "Forbidden",
    "InvalidJob",
    "JobDeleted",
    "JobNotFound",
    "JobNotSucceeded",
    "JobOutput",
    "JobPhase",
    "ObjectMeta",
    "OutputClaim",
    "OutputFile",
    "OutputLocation",
    "SubmissionConflict",
    "VisionClient",
    "VisionClientError",
    "VisionJob",
    "VisionJobSpec",
    "VisionJobStatus",
    "WaitTimeout",
    "differences",
    "job_name_for_request",
    "same_submission",
]
