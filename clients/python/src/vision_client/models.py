"""Typed models of the VisionJob custom resource (``vision.zjlab.io/v1alpha1``).

The fields mirror the CRD schema in ``crds/visionjobs.vision.zjlab.io.yaml``
(generated from the Rust types in ``crates/vision-api``): Python names in
snake_case, JSON names in camelCase (``timeout_seconds`` is
``timeoutSeconds``). ``tests/test_models.py`` compares them with the schema,
so a CRD change that the client does not follow fails its tests.

Models read from the API server ignore fields they do not know (a newer
operator may add status fields); a job the client sends carries only the
fields set here.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

#: API group, version, kind and plural of the VisionJob resource.
GROUP = "vision.zjlab.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "VisionJob"
PLURAL = "visionjobs"
#: The queue a job goes to when it names none.
DEFAULT_QUEUE = "default"
#: The key of ``status.result`` listing the files written to the output directory.
RESULT_OUTPUTS = "outputs"


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="ignore",
    )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object the API server takes (camelCase, unset fields left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class JobPhase(str, Enum):
    """Where a job is in its life. Succeeded, Failed and Rejected are final."""

    QUEUED = "Queued"
    ADMITTED = "Admitted"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    REJECTED = "Rejected"
    SUSPENDED = "Suspended"

    @property
    def is_final(self) -> bool:
        """Whether the job never runs again (Succeeded, Failed or Rejected)."""
        return self in FINAL_PHASES

    def __str__(self) -> str:
        return self.value


#: The phases a job ends in; ``VisionClient.wait`` returns at any of them.
FINAL_PHASES = frozenset({JobPhase.SUCCEEDED, JobPhase.FAILED, JobPhase.REJECTED})


class OutputClaim(_Model):
    """A PersistentVolumeClaim by name, in the job's namespace."""

    claim_name: str = Field(min_length=1, max_length=253)


class JobOutput(_Model):
    """Where a job's outputs too large for ``status.result`` go: a directory on
    a PersistentVolumeClaim. Each attempt writes into ``<path>/<attempt>``
    (mounted at ``$VISION_OUTPUT_DIR`` in the algorithm container) and lists
    its files in its result (``"outputs": [{"path", "size", "sha256"}]``)."""

    persistent_volume_claim: OutputClaim
    path: str | None = Field(default=None, min_length=1, max_length=1024)
    """The directory within the claim, relative to its root; default: the job's name."""


class OutputLocation(_Model):
    """Where an attempt's outputs are: the claim and the directory within it."""

    claim_name: str
    path: str
    """The attempt's directory within the claim: ``<spec.output.path>/<attempt>``."""


class VisionJobSpec(_Model):
    """What to run: one run of a registered algorithm on one input.

    Only ``algorithm`` is required. ``priority``, ``suspend`` and
    ``ttl_seconds_after_finished`` may change after creation; the other fields
    are immutable (the API server refuses a change).
    """

    algorithm: str = Field(min_length=1, max_length=253)
    """Name of the VisionAlgorithm (cluster-scoped) that runs the job."""
    queue: str = Field(default=DEFAULT_QUEUE, min_length=1, max_length=253)
    """Name of the VisionQueue (worker pool) that admits the job."""
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000)
    """Higher is admitted first; equal priorities in creation order."""
    input: dict[str, Any] | None = None
    """Free-form JSON handed to the algorithm (``{"uri": "s3://..."}``)."""
    params: dict[str, Any] | None = None
    """Free-form JSON parameters handed to the algorithm."""
    gpus: int | None = Field(default=None, ge=0, le=64)
    """GPUs for the job's pod; default: the algorithm's ``gpusPerJob``."""
    timeout_seconds: int | None = Field(default=None, ge=1, le=604_800)
    """Longest run of one attempt; default: the algorithm's."""
    retries: int | None = Field(default=None, ge=0, le=20)
    """Retries of a failed attempt; default: the algorithm's."""
    suspend: bool = False
    """True stops the job (pod deleted, slot freed) until set back to false."""
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    """Seconds after a final phase after which the operator deletes the job;
    default: the queue's ``defaultTtlSecondsAfterFinished``, else kept."""
    output: JobOutput | None = None
    """Where large outputs go (a directory on a PersistentVolumeClaim); unset: none."""


class Condition(_Model):
    """A standard Kubernetes condition (``metav1.Condition``)."""

    type: str
    status: str
    """``True``, ``False`` or ``Unknown``."""
    reason: str
    message: str
    last_transition_time: datetime
    observed_generation: int | None = None


class VisionJobStatus(_Model):
    """What the operator observed of a job; written only by the operator."""

    phase: JobPhase | None = None
    """Where the job is; the source of truth for its outcome."""
    reason: str | None = None
    """A CamelCase word for why the job is in its phase (``Completed``, ``Timeout``...)."""
    message: str | None = None
    """A human-readable explanation, including why a waiting job waits."""
    attempts: int | None = None
    """Attempts (pods) started so far."""
    gpus: int | None = None
    """GPUs given to the job's pods."""
    pod_name: str | None = None
    """The pod of the current (or last) attempt: ``<job>-<attempt>``."""
    worker: str | None = None
    """Worker mode: the worker (its pod's name) that runs the current
    attempt, or ran the last one that started."""
    queued_at: datetime | None = None
    admitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    retry_after: datetime | None = None
    """Earliest time of the next attempt while a failed attempt backs off."""
    preemptions: int | None = None
    """Attempts that were preempted (stopped for a job of higher priority or
    of a tenant below its share); they spend no retry."""
    last_preempted_attempt: int | None = None
    """The last preempted attempt; the next attempt's job JSON says so
    (``previousAttempt``)."""
    result: Any = None
    """The algorithm's result: its JSON, or the text it wrote if not JSON."""
    conditions: list[Condition] = Field(default_factory=list)
    """Admitted, Running, Complete, Failed, Finished (see the CRD)."""
    observed_generation: int | None = None
    """The spec generation this status was computed from."""
    leader_term: int | None = None
    """The leadership term (the election Lease's transitions) of the operator
    replica that wrote this status; terms only grow."""
    output: OutputLocation | None = None
    """Where the last attempt's outputs are, for a job with ``spec.output``."""


class ObjectMeta(_Model):
    """The part of ``metadata`` a client uses; other fields are kept as they are."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    finalizers: list[str] | None = None


class OutputFile(_Model):
    """A file an attempt wrote to its output directory, as the algorithm lists
    it in its result (``status.result.outputs[]``). Keys of its own
    (``mediaType``, ...) are kept as extra fields."""

    model_config = ConfigDict(extra="allow")

    path: str
    """Relative to the attempt's directory (``status.output.path``)."""
    size: int
    """Bytes."""
    sha256: str
    """Hex SHA-256 of the content: check it when reading the file."""


class VisionJob(_Model):
    """A VisionJob object: metadata, spec and (once the operator saw it) status."""

    api_version: str = API_VERSION
    kind: str = KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: VisionJobSpec
    status: VisionJobStatus | None = None

    @property
    def name(self) -> str | None:
        """``metadata.name``."""
        return self.metadata.name

    @property
    def phase(self) -> JobPhase | None:
        """``status.phase``; None until the operator has seen the job."""
        return self.status.phase if self.status else None

    @property
    def is_finished(self) -> bool:
        """Whether the job is in a final phase (Succeeded, Failed, Rejected)."""
        return self.phase is not None and self.phase.is_final

    @property
    def result(self) -> Any:
        """``status.result`` (None without one)."""
        return self.status.result if self.status else None

    @property
    def outputs(self) -> list[OutputFile]:
        """The files listed in ``status.result.outputs`` (a job with
        ``spec.output``); empty without. Each is at
        ``<status.output.path>/<file.path>`` on the claim
        ``status.output.claim_name`` (docs/CLIENTS.md, "Large outputs")."""
        result = self.result
        listed = result.get(RESULT_OUTPUTS) if isinstance(result, dict) else None
        return [OutputFile.model_validate(f) for f in listed] if isinstance(listed, list) else []

    def condition(self, type_: str) -> Condition | None:
        """The status condition of type ``type_``, if the job has one."""
        for c in self.status.conditions if self.status else []:
            if c.type == type_:
                return c
        return None
