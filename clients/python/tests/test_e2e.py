"""The client against the local cluster with the operator running: submit
exactly once, wait for every outcome, read the result, cancel, and the typed
errors. Pods are simulated on KWOK nodes, scripted by job annotations."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import client as k8s

from vision_client import (
    ANNOTATION_REQUEST_ID,
    InvalidJob,
    JobDeleted,
    JobNotFound,
    JobNotSucceeded,
    JobPhase,
    ObjectMeta,
    SubmissionConflict,
    VisionClient,
    VisionJob,
    VisionJobSpec,
    WaitTimeout,
    job_name_for_request,
)

from .cluster import World, wait_for
from .conftest import SIM_DURATION, SIM_MESSAGE, SIM_OUTCOME

pytestmark = pytest.mark.e2e

#: How long a job of the tests may take to finish on the local cluster.
T = 60.0


def request_id() -> str:
    return f"req-{uuid.uuid4()}"


def spec(world: World, **fields: object) -> VisionJobSpec:
    return VisionJobSpec.model_validate({"algorithm": world.algorithm, "queue": world.queue, **fields})


def scripted(world: World, annotations: dict[str, str], **fields: object) -> VisionJob:
    """A job whose simulated pod does what ``annotations`` say."""
    return VisionJob(metadata=ObjectMeta(annotations=annotations), spec=spec(world, **fields))


def test_a_request_submitted_twice_makes_one_job(world: World, jobs: VisionClient) -> None:
    rid = request_id()
    wanted = spec(world, input={"uri": "s3://frames/once.jpg"}, params={"confidence": 0.5})

    first = jobs.create(wanted, request_id=rid)
    again = jobs.create(wanted, request_id=rid)

    assert first.name == job_name_for_request("pytest", rid) == jobs.job_name(rid)
    assert again.metadata.uid == first.metadata.uid
    assert (first.metadata.annotations or {})[ANNOTATION_REQUEST_ID] == rid
    listed: Any = world.custom.list_namespaced_custom_object(
        "vision.zjlab.io", "v1alpha1", world.namespace, "visionjobs"
    )
    assert [j["metadata"]["name"] for j in listed["items"] if j["metadata"]["name"] == first.name] == [first.name]
    # A field that may change after creation does not make it another submission.
    bumped = jobs.create(wanted.model_copy(update={"priority": 7}), request_id=rid)
    assert bumped.metadata.uid == first.metadata.uid


def test_a_request_id_with_another_spec_is_a_conflict(world: World, jobs: VisionClient) -> None:
    rid = request_id()
    first = jobs.create(spec(world, input={"uri": "s3://frames/a.jpg"}), request_id=rid)

    with pytest.raises(SubmissionConflict) as conflict:
        jobs.create(spec(world, input={"uri": "s3://frames/b.jpg"}, gpus=2), request_id=rid)

    assert conflict.value.name == first.name
    assert conflict.value.differences == ["spec.gpus", "spec.input"]
    assert conflict.value.existing.metadata.uid == first.metadata.uid
    assert jobs.get(first.name or "").spec.input == {"uri": "s3://frames/a.jpg"}


def test_wait_returns_a_succeeded_job_with_its_result(world: World, jobs: VisionClient) -> None:
    result = {"objects": [{"label": "car", "score": 0.9}]}
    job = jobs.create(
        scripted(world, {SIM_MESSAGE: '{"objects":[{"label":"car","score":0.9}]}'}), request_id=request_id()
    )

    done = jobs.wait(job.name or "", timeout=T)

    assert done.phase is JobPhase.SUCCEEDED
    assert done.status is not None and done.status.reason == "Completed"
    assert done.result == result
    finished = done.condition("Finished")
    assert finished is not None and (finished.status, finished.reason) == ("True", "Succeeded")
    assert jobs.result(job.name or "") == result


def test_wait_returns_a_failed_job_not_a_timeout(world: World, jobs: VisionClient) -> None:
    job = jobs.create(
        scripted(world, {SIM_OUTCOME: "fail", SIM_MESSAGE: "model weights not found"}, retries=0),
        request_id=request_id(),
    )

    done = jobs.wait(job.name or "", timeout=T)

    assert done.phase is JobPhase.FAILED
    assert done.status is not None and done.status.reason == "BackoffLimitExceeded"
    finished = done.condition("Finished")
    assert finished is not None and (finished.status, finished.reason) == ("True", "Failed")
    with pytest.raises(JobNotSucceeded) as not_succeeded:
        jobs.result(job.name or "")
    assert not_succeeded.value.job.phase is JobPhase.FAILED


def test_wait_on_a_job_still_running_times_out_with_the_job_as_last_seen(world: World, jobs: VisionClient) -> None:
    job = jobs.create(scripted(world, {SIM_DURATION: "1h"}), request_id=request_id())
    name = job.name or ""
    try:
        with pytest.raises(WaitTimeout) as timeout:
            jobs.wait(name, timeout=1)
        assert timeout.value.name == name
        assert timeout.value.last.phase is None or not timeout.value.last.phase.is_final
    finally:
        jobs.cancel(name)


def test_wait_on_a_job_cancelled_meanwhile_raises_job_deleted(
    world: World, jobs: VisionClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = jobs.create(scripted(world, {SIM_DURATION: "1h"}), request_id=request_id())
    name = job.name or ""
    watching = threading.Event()
    watch = VisionClient._watch

    def spied(self: VisionClient, *args: Any, **kwargs: Any) -> VisionJob | None:
        watching.set()  # the wait read the job and watches from its resourceVersion
        return watch(self, *args, **kwargs)

    monkeypatch.setattr(VisionClient, "_watch", spied)
    with ThreadPoolExecutor(1) as pool:
        waited = pool.submit(jobs.wait, name, T)
        assert watching.wait(T)
        jobs.cancel(name)
        with pytest.raises(JobDeleted):
            waited.result(T)


def test_cancel_deletes_the_job_and_its_pod(world: World, jobs: VisionClient) -> None:
    job = jobs.create(scripted(world, {SIM_DURATION: "1h"}), request_id=request_id())
    name = job.name or ""
    assert wait_for(T, lambda: jobs.get(name).phase is JobPhase.RUNNING), jobs.get(name).status
    pods = k8s.CoreV1Api(world.client)

    def pods_of_job() -> list[str]:
        listed = pods.list_namespaced_pod(world.namespace, label_selector=f"vision.zjlab.io/job={name}")
        return [str(p.metadata.name) for p in listed.items if p.metadata]

    assert pods_of_job() == [f"{name}-1"]

    jobs.cancel(name, wait=T)

    with pytest.raises(JobNotFound):
        jobs.get(name)
    assert wait_for(T, lambda: pods_of_job() == []), pods_of_job()
    with pytest.raises(JobNotFound):
        jobs.cancel(name)


def test_a_missing_job_is_job_not_found(jobs: VisionClient) -> None:
    for call in (jobs.get, lambda n: jobs.wait(n, timeout=5), jobs.result, jobs.cancel):
        with pytest.raises(JobNotFound) as missing:
            call("no-such-job")
        assert (missing.value.namespace, missing.value.name) == (jobs.namespace, "no-such-job")


def test_a_job_the_api_server_refuses_is_invalid(world: World, jobs: VisionClient) -> None:
    with pytest.raises(InvalidJob) as invalid:
        jobs.create(VisionJobSpec(algorithm="Not_A_DNS_Name", queue=world.queue), request_id=request_id())
    assert invalid.value.status == 422
    assert "spec.algorithm must be a lowercase DNS name" in str(invalid.value)
