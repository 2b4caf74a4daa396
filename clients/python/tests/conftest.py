"""Fixtures of the e2e tests: one world on the local cluster for the session
(made only when an e2e test runs), and a client of its namespace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vision_client import VisionClient

from .cluster import World, kubeconfig_path

#: The pod annotations that script a simulated (KWOK) pod (hack/kwok/pod-stages.yaml,
#: tests/harness/mod.rs `sim`). A job's annotations reach its pods.
SIM_DURATION = "sim.vision.zjlab.io/duration"
SIM_MESSAGE = "sim.vision.zjlab.io/message"
SIM_OUTCOME = "sim.vision.zjlab.io/outcome"


@pytest.fixture(scope="session")
def world() -> Iterator[World]:
    """The turn, a namespace, queue ``pool-<ns>`` (4 slots), algorithm
    ``detect-<ns>`` (pods run 1 s unless a job says otherwise) and an
    operator; cleaned up after the session."""
    w = World("pyclient", queue_slots=4, algorithm_annotations={SIM_DURATION: "1s"})
    try:
        yield w
    finally:
        w.close()


@pytest.fixture
def jobs(world: World) -> Iterator[VisionClient]:
    """A client of the world's namespace, as a backend builds one."""
    with VisionClient.from_kubeconfig(kubeconfig_path(), namespace=world.namespace, prefix="pytest") as client:
        yield client
