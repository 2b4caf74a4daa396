"""The exactly-once rules (vision_client.submission), with the test vectors
that crates/vision-api/src/submit.rs is tested against too."""

from __future__ import annotations

import pytest

from vision_client import (
    ANNOTATION_REQUEST_ID,
    ObjectMeta,
    VisionJob,
    VisionJobSpec,
    differences,
    job_name_for_request,
    same_submission,
)


@pytest.mark.parametrize(
    ("prefix", "request_id", "name"),
    [
        # The vectors of crates/vision-api/src/submit/tests.rs.
        ("yolo-detect", "req-42", "yolo-detect-fd1180d9f0c0819f0005"),
        ("Team A/Cam 42", "order:7f3a", "team-a-cam-42-803c72e4498cb6153023"),
        ("", "req-42", "fd1180d9f0c0819f0005"),
        ("---", "x", "2d711642b726b0440162"),
        ("ocr", "Zürich-1", "ocr-b7731d2d6b91ba4164d5"),
        ("a" * 60, "req-42", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-fd1180d9f0c0819f0005"),
        # Cut at 42 characters, then the '-' left at the end is dropped.
        ("x" * 41 + ".y", "r", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx-454349e422f05297191e"),
        # docs/CLIENTS.md's example.
        ("frontend", "order-7f3a", "frontend-a99cd93de9749eb1db41"),
        # More of this client's.
        ("yolo-detect", "req-0001", "yolo-detect-12e1c1ff8535e49a18a7"),
        ("  Team_A / OCR!! ", "req-0001", "team-a-ocr-12e1c1ff8535e49a18a7"),
        # Only ASCII letters are lowercased: the Kelvin sign is not a 'k'.
        ("\u212a8s", "req-0001", "8s-12e1c1ff8535e49a18a7"),
        ("vj", "ünïcode-☃", "vj-bf3fde1b175c5c302f8b"),
        ("--", "", "e3b0c44298fc1c149afb"),
    ],
)
def test_names_for_requests(prefix: str, request_id: str, name: str) -> None:
    assert job_name_for_request(prefix, request_id) == name


def test_a_long_prefix_is_cut_to_a_63_character_name() -> None:
    name = job_name_for_request("a" * 41 + "-bcd", "req-0001")
    # Cut to 42 characters ("a"*41 + "-"), then the trailing '-' dropped.
    assert name == "a" * 41 + "-12e1c1ff8535e49a18a7"
    assert len(job_name_for_request("x" * 100, "r")) == 63


def job(request_id: str | None = None, **spec: object) -> VisionJob:
    annotations = {ANNOTATION_REQUEST_ID: request_id} if request_id else None
    return VisionJob(
        metadata=ObjectMeta(annotations=annotations),
        spec=VisionJobSpec.model_validate({"algorithm": "detect", **spec}),
    )


def test_the_same_spec_is_the_same_submission_whatever_may_change() -> None:
    existing = job("r1", input={"uri": "s3://a", "n": 1}, priority=0)
    wanted = job("r1", input={"n": 1.0, "uri": "s3://a", "extra": None}, priority=9, suspend=True)
    assert differences(existing, wanted) == []
    assert same_submission(existing, wanted)


def test_differences_name_the_fields() -> None:
    existing = job("r1", input={"uri": "s3://a"}, gpus=1)
    wanted = job("r2", input={"uri": "s3://b"}, queue="other")
    assert differences(existing, wanted) == [
        f"metadata.annotations.{ANNOTATION_REQUEST_ID}",
        "spec.gpus",
        "spec.input",
        "spec.queue",
    ]


def test_a_boolean_is_not_a_number() -> None:
    assert differences(job(input={"x": True}), job(input={"x": 1})) == ["spec.input"]


def test_request_ids_compare_only_when_both_carry_one() -> None:
    assert differences(job(None), job("r1")) == []
