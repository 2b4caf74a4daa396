"""Exactly-once submission: the rules every client follows (docs/CLIENTS.md).

The same rules, in Rust, are ``crates/vision-api/src/submit.rs``; both are
tested against the same test vectors, so a Python backend and a Rust one (or
``visionctl``) that submit the same request name the same job.

1. The job is named after the backend's request id
   (:func:`job_name_for_request`), and the request id is recorded in the
   annotation :data:`ANNOTATION_REQUEST_ID`. The same request always gives
   the same name, so a second create cannot make a second job.
2. ``201 Created``: submitted.
3. ``409 AlreadyExists``: the job of that name is read. If
   :func:`differences` finds nothing, an earlier create of this submission
   landed (its response was lost, or this is a retry): a success. Otherwise
   the name is taken by another submission: a conflict that retrying cannot
   fix.

The guarantee lasts as long as the job exists: once it is deleted (by hand
or by its TTL) the same request creates a new job.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from .models import VisionJob

#: The annotation that records the request id a job was submitted for.
ANNOTATION_REQUEST_ID = "vision.zjlab.io/request-id"
#: Hex digits of SHA-256(request id) in a derived name (80 bits).
REQUEST_HASH_LEN = 20
#: The longest derived name: 63 characters, also a valid label value.
MAX_DERIVED_NAME_LEN = 63
#: Spec fields that may change after creation (a priority bump, a
#: suspension, a TTL): they do not tell two submissions apart.
MUTABLE_SPEC_FIELDS = frozenset({"priority", "suspend", "ttlSecondsAfterFinished"})

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_NOT_LABEL = re.compile(r"[^a-z0-9]+")


def job_name_for_request(prefix: str, request_id: str) -> str:
    """The job name for a request: ``<prefix>-<first 20 hex digits of SHA-256(request_id)>``.

    The request id is hashed as its UTF-8 bytes. The prefix is made a DNS
    label: ASCII letters are lowercased (only ASCII ones), every run of
    characters other than ``a-z0-9`` becomes one ``-``, leading and trailing
    ``-`` are dropped, it is cut to 42 characters (and a ``-`` left at its end
    dropped). An empty result leaves the name as the hash alone. The name is a
    valid DNS label of at most 63 characters.

    A backend must keep its prefix fixed: another prefix is another name.

    >>> job_name_for_request("yolo-detect", "req-0001")
    'yolo-detect-12e1c1ff8535e49a18a7'
    """
    digest = hashlib.sha256(request_id.encode("utf-8")).hexdigest()[:REQUEST_HASH_LEN]
    label = _NOT_LABEL.sub("-", prefix.translate(_ASCII_LOWER)).strip("-")
    label = label[: MAX_DERIVED_NAME_LEN - 1 - REQUEST_HASH_LEN].rstrip("-")
    return f"{label}-{digest}" if label else digest


def request_id_of(job: VisionJob) -> str | None:
    """The request id recorded on ``job`` (annotation :data:`ANNOTATION_REQUEST_ID`)."""
    return (job.metadata.annotations or {}).get(ANNOTATION_REQUEST_ID)


def differences(existing: VisionJob, wanted: VisionJob) -> list[str]:
    """What tells ``existing`` apart from the submission ``wanted``, as field paths.

    Empty when it is the same submission. Compared: every spec field but
    :data:`MUTABLE_SPEC_FIELDS`, as JSON values by meaning (object keys in any
    order, a key holding null the same as no key, ``1`` the same as ``1.0``),
    and the request ids when both jobs carry one. Labels, other annotations
    and the status are not compared. Paths look like ``spec.input`` or
    ``metadata.annotations.vision.zjlab.io/request-id``.
    """
    out: list[str] = []
    a_id, b_id = request_id_of(existing), request_id_of(wanted)
    if a_id is not None and b_id is not None and a_id != b_id:
        out.append(f"metadata.annotations.{ANNOTATION_REQUEST_ID}")
    a, b = _spec_fields(existing), _spec_fields(wanted)
    for key in sorted(set(a) | set(b)):
        if key in MUTABLE_SPEC_FIELDS:
            continue
        if not _same_value(a.get(key), b.get(key)):
            out.append(f"spec.{key}")
    return out


def same_submission(existing: VisionJob, wanted: VisionJob) -> bool:
    """Whether ``existing`` is the submission ``wanted`` (no :func:`differences`)."""
    return not differences(existing, wanted)


def _spec_fields(job: VisionJob) -> dict[str, Any]:
    # Defaults included (queue "default", ...), as the Rust types serialize them.
    return job.spec.model_dump(mode="json", by_alias=True)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _same_value(a: Any, b: Any) -> bool:
    """JSON equality by meaning: null and absent alike, numbers by value."""
    if _is_number(a) and _is_number(b):
        if isinstance(a, int) and isinstance(b, int):
            return a == b
        return float(a) == float(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return all(_same_value(a.get(k), b.get(k)) for k in set(a) | set(b))
    if _is_number(a) or _is_number(b):
        return False
    return type(a) is type(b) and a == b
