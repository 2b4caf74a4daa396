"""Warm workers of a vision-operator VisionAlgorithm in worker mode (docs/WORKERS.md).

An algorithm is one function from the job (the JSON pod mode passes in
``$VISION_JOB``, as a dict) to its result (a JSON-serialisable dict of at
most 4096 bytes)::

    import vision_worker

    model = load_model()  # once per process

    def detect(job: dict, task: vision_worker.Task) -> dict:
        return {"faces": model(job["input"]["uri"])}

    vision_worker.run(detect, algorithm="face-detect", capacity=2)

The SDK connects to the operator (``VISION_WORKER_ENDPOINT``), registers with
the pod's projected ServiceAccount token, sends heartbeats, runs up to
``capacity`` tasks at once (a plain function in a thread, a coroutine
function on the event loop), reports results and failures, sets
``task.cancelled`` when the operator cancels a task, and reconnects with
backoff; tasks keep running across a reconnect and are reported when the
worker registers again, and so are the outcomes of the last 30 s (sent again).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from ._proto import worker_pb2 as pb
from ._proto import worker_pb2_grpc as pb_grpc

__all__ = [
    "DEFAULT_TOKEN_FILE",
    "MAX_RESULT_BYTES",
    "Config",
    "Refused",
    "Task",
    "TaskError",
    "run",
    "serve",
]

log = logging.getLogger("vision_worker")

#: The largest result accepted, in bytes of JSON: pod mode's termination-message limit.
MAX_RESULT_BYTES = 4096
DEFAULT_TOKEN_FILE = "/var/run/secrets/vision.zjlab.io/worker/token"
SDK = "vision-worker-python/0.1.0"

# Outcomes (results, failures) of the last RECENT_KEEP seconds, at most
# RECENT_MAX (oldest dropped first), are reported as running in Register after
# a reconnect and sent again once registered, as the Rust SDK does
# (crates/vision-worker/src/sdk.rs). The operator that got them may have died
# before recording them (a leader failover: the new leader would otherwise send
# the task again and the job would run twice), and frames queued on a stream
# that broke are lost with it. The operator holds an outcome of a task it does
# not know until a new leader adopts the task, and drops it otherwise
# (docs/WORKERS.md, the protocol): sent twice, it still counts once.
#: How long an outcome is sent again after a reconnect, in seconds: a new leader's lease and
#: adoption take longer than the old one's last status writes.
RECENT_KEEP = 30.0
#: At most this many (a Register frame with their ids stays far below the operator's 64 KiB frame limit).
RECENT_MAX = 512


class TaskError(Exception):
    """Raise it from a handler to fail the attempt with a reason (CamelCase) and message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Refused(Exception):
    """The operator refused this worker (authentication, wrong algorithm): retrying cannot help."""


@dataclass
class Task:
    """What a handler gets besides the job."""

    task_id: str
    attempt: int
    #: Set when the operator cancels the task (job deleted, suspended, timed out): return soon.
    cancelled: asyncio.Event
    _outbox: asyncio.Queue[pb.WorkerMessage] = field(repr=False)
    _loop: asyncio.AbstractEventLoop = field(repr=False)

    def progress(self, fraction: float, message: str = "") -> None:
        """Reports progress (0..1, negative when unknown); callable from any thread."""
        frame = pb.WorkerMessage(progress=pb.Progress(task_id=self.task_id, fraction=fraction, message=message))
        self._loop.call_soon_threadsafe(self._outbox.put_nowait, frame)

    def is_cancelled(self) -> bool:
        """For plain (threaded) handlers: whether to stop."""
        return self.cancelled.is_set()


Handler = Callable[[dict[str, Any], Task], Any]


@dataclass
class Config:
    endpoint: str
    algorithm: str
    capacity: int
    worker_id: str
    #: The projected ServiceAccount token's file; None sends no token (test-only operators accept that).
    token_file: str | None = None
    backoff_initial: float = 0.2
    backoff_max: float = 5.0

    @classmethod
    def from_env(cls, algorithm: str, capacity: int) -> Config:
        """Endpoint, worker id and token file from VISION_WORKER_ENDPOINT, VISION_WORKER_ID (else the
        host name) and VISION_WORKER_TOKEN_FILE (else DEFAULT_TOKEN_FILE)."""
        endpoint = os.environ.get("VISION_WORKER_ENDPOINT")
        if not endpoint:
            raise ValueError("VISION_WORKER_ENDPOINT is not set")
        return cls(
            endpoint=endpoint,
            algorithm=algorithm,
            capacity=capacity,
            worker_id=os.environ.get("VISION_WORKER_ID") or socket.gethostname(),
            # Set but empty: no token (only test-only operators accept that).
            token_file=os.environ.get("VISION_WORKER_TOKEN_FILE", DEFAULT_TOKEN_FILE) or None,
        )


def _failure(task_id: str, reason: str, message: str) -> pb.WorkerMessage:
    return pb.WorkerMessage(failure=pb.Failure(task_id=task_id, reason=reason, message=message))


class _Worker:
    def __init__(self, config: Config, handler: Handler) -> None:
        self.config = config
        self.handler = handler
        self.running: dict[str, tuple[asyncio.Task[None], Task]] = {}
        self.outbox: asyncio.Queue[pb.WorkerMessage] = asyncio.Queue()
        #: (time.monotonic(), task id, outcome frame), oldest first: see RECENT_KEEP.
        self.recent: deque[tuple[float, str, pb.WorkerMessage]] = deque(maxlen=RECENT_MAX)
        self.max_result = MAX_RESULT_BYTES

    def _target(self) -> str:
        endpoint = self.config.endpoint
        for scheme in ("http://", "https://"):
            endpoint = endpoint.removeprefix(scheme)
        return endpoint

    async def run(self, shutdown: asyncio.Event) -> None:
        backoff = self.config.backoff_initial
        try:
            while not shutdown.is_set():
                try:
                    if await self._session(shutdown):
                        backoff = self.config.backoff_initial
                except grpc.aio.AioRpcError as e:
                    # INVALID_ARGUMENT: a capacity over the algorithm's tasksPerWorker.
                    if e.code() in (
                        grpc.StatusCode.UNAUTHENTICATED,
                        grpc.StatusCode.PERMISSION_DENIED,
                        grpc.StatusCode.INVALID_ARGUMENT,
                    ):
                        raise Refused(f"{e.code().name}: {e.details()}") from e
                    log.warning("cannot reach the operator: %s; retrying in %.1fs", e.details(), backoff)
                except OSError as e:
                    log.warning("cannot reach the operator: %s; retrying in %.1fs", e, backoff)
                if shutdown.is_set():
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(shutdown.wait(), backoff)
                backoff = min(backoff * 2, self.config.backoff_max)
        finally:
            for _, task in self.running.values():
                task.cancelled.set()

    async def _session(self, shutdown: asyncio.Event) -> bool:
        """One stream; True when it got as far as being registered."""
        token = ""
        if self.config.token_file:
            with open(self.config.token_file) as f:
                token = f.read().strip()
        # Recent outcomes: reported as running, sent again once registered.
        now = time.monotonic()
        while self.recent and now - self.recent[0][0] > RECENT_KEEP:
            self.recent.popleft()
        resend = [(task_id, frame) for _, task_id, frame in self.recent]
        send: asyncio.Queue[pb.WorkerMessage | None] = asyncio.Queue()
        send.put_nowait(
            pb.WorkerMessage(
                register=pb.Register(
                    algorithm=self.config.algorithm,
                    capacity=self.config.capacity,
                    worker_id=self.config.worker_id,
                    running_task_ids=list(dict.fromkeys([*self.running, *(task_id for task_id, _ in resend)])),
                    token=token,
                    sdk=SDK,
                )
            )
        )

        async def requests() -> AsyncIterator[pb.WorkerMessage]:
            while (frame := await send.get()) is not None:
                yield frame

        async with grpc.aio.insecure_channel(self._target()) as channel:
            call = pb_grpc.WorkerStub(channel).Session(requests())
            first = await call.read()
            if first is grpc.aio.EOF or first.WhichOneof("kind") != "registered":
                if first is not grpc.aio.EOF and first.WhichOneof("kind") == "error":
                    raise Refused(f"{first.error.code}: {first.error.message}")
                return False
            registered = first.registered
            if registered.max_result_bytes:
                self.max_result = min(MAX_RESULT_BYTES, registered.max_result_bytes)
            for task_id in registered.unknown_task_ids:
                self._cancel(task_id)
            interval = max(registered.heartbeat_interval_ms, 50) / 1000
            log.info("registered as %s for %s", self.config.worker_id, self.config.algorithm)
            # The recent outcomes, then what waited for a stream (but not a queued copy of those
            # outcomes: the same frame objects, so a later outcome of the same task id still goes).
            for _, frame in resend:
                send.put_nowait(frame)
            resent = {id(frame) for _, frame in resend}

            async def heartbeats() -> None:
                seq = 0
                while True:
                    seq += 1
                    send.put_nowait(
                        pb.WorkerMessage(heartbeat=pb.Heartbeat(seq=seq, running_task_ids=list(self.running)))
                    )
                    await asyncio.sleep(interval)

            async def forward() -> None:
                while True:
                    frame = await self.outbox.get()
                    if id(frame) not in resent:
                        send.put_nowait(frame)

            helpers = [asyncio.create_task(heartbeats()), asyncio.create_task(forward())]
            stop = asyncio.create_task(shutdown.wait())
            try:
                while True:
                    read = asyncio.create_task(call.read())
                    done, _ = await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
                    if stop in done:
                        read.cancel()
                        return True
                    message = read.result()
                    if message is grpc.aio.EOF:
                        return True
                    kind = message.WhichOneof("kind")
                    if kind == "task":
                        self._start(message.task)
                    elif kind == "cancel":
                        self._cancel(message.cancel.task_id)
                    elif kind == "error":
                        log.warning("operator error %s: %s", message.error.code, message.error.message)
            finally:
                stop.cancel()
                for helper in helpers:
                    helper.cancel()
                send.put_nowait(None)

    def _cancel(self, task_id: str) -> None:
        entry = self.running.get(task_id)
        if entry is not None:
            entry[1].cancelled.set()

    def _start(self, spec: pb.Task) -> None:
        task_id = spec.task_id
        if task_id in self.running:
            return  # never run twice
        if len(self.running) >= self.config.capacity:
            self.outbox.put_nowait(_failure(task_id, "WorkerOverCapacity", "the worker is full"))
            return
        try:
            job = json.loads(spec.job_json)
        except ValueError as e:
            self.outbox.put_nowait(_failure(task_id, "BadTask", f"the task's job JSON does not parse: {e}"))
            return
        task = Task(task_id, spec.attempt, asyncio.Event(), self.outbox, asyncio.get_running_loop())
        runner = asyncio.create_task(self._run_task(job, task))
        self.running[task_id] = (runner, task)

    async def _run_task(self, job: dict[str, Any], task: Task) -> None:
        try:
            if inspect.iscoroutinefunction(self.handler):
                result = await self.handler(job, task)
            else:
                result = await asyncio.to_thread(self.handler, job, task)
                if inspect.isawaitable(result):
                    result = await result
            frame = self._result_frame(task, result)
        except TaskError as e:
            frame = _failure(task.task_id, e.reason, e.message)
        except Exception as e:
            frame = _failure(task.task_id, "AlgorithmError", f"{type(e).__name__}: {e}")
        finally:
            self.running.pop(task.task_id, None)
        if task.cancelled.is_set():
            frame = _failure(task.task_id, "Cancelled", "the operator cancelled the task")
        self.recent.append((time.monotonic(), task.task_id, frame))
        self.outbox.put_nowait(frame)

    def _result_frame(self, task: Task, result: Any) -> pb.WorkerMessage:
        data = json.dumps(result, separators=(",", ":")).encode()
        if len(data) > self.max_result:
            return _failure(
                task.task_id,
                "ResultTooLarge",
                f"the result ({len(data)} bytes) is over the {self.max_result}-byte limit; write large "
                "outputs to $VISION_OUTPUT_DIR (spec.output) and list them in the result",
            )
        return pb.WorkerMessage(result=pb.Result(task_id=task.task_id, attempt=task.attempt, result_json=data))


async def serve(config: Config, handler: Handler, shutdown: asyncio.Event | None = None) -> None:
    """Serves tasks with ``handler`` until ``shutdown`` is set; raises Refused if the operator refuses."""
    await _Worker(config, handler).run(shutdown or asyncio.Event())


def run(handler: Handler, *, algorithm: str, capacity: int = 1) -> None:
    """Serves tasks with ``handler`` as configured by the environment (Config.from_env), forever."""
    asyncio.run(serve(Config.from_env(algorithm, capacity), handler))
