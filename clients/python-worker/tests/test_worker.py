"""The SDK against a fake operator (a grpc.aio server in the test): register, results,
the 4096-byte rule, failures, cancellation, recent outcomes sent again after a reconnect."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

import vision_worker
from vision_worker._proto import worker_pb2 as pb
from vision_worker._proto import worker_pb2_grpc as pb_grpc


class FakeOperator(pb_grpc.WorkerServicer):  # type: ignore[misc]
    """Sends the queued tasks and cancels to the first worker, records what it sends back;
    ``die()`` breaks the stream (UNAVAILABLE) as a leader that dies does, and serves the next one."""

    def __init__(self) -> None:
        self.registered: asyncio.Queue[pb.Register] = asyncio.Queue()
        self.received: asyncio.Queue[pb.WorkerMessage] = asyncio.Queue()
        self.outgoing: asyncio.Queue[pb.OperatorMessage] = asyncio.Queue()
        self.dead = asyncio.Event()

    def die(self) -> None:
        self.dead.set()

    async def Session(
        self, request_iterator: AsyncIterator[pb.WorkerMessage], context: Any
    ) -> AsyncIterator[pb.OperatorMessage]:
        first = await request_iterator.__anext__()
        await self.registered.put(first.register)
        yield pb.OperatorMessage(registered=pb.Registered(heartbeat_interval_ms=100, max_result_bytes=4096))

        async def read() -> None:
            async for message in request_iterator:
                if message.WhichOneof("kind") != "heartbeat":
                    await self.received.put(message)

        reader = asyncio.create_task(read())
        try:
            while True:
                outgoing = asyncio.create_task(self.outgoing.get())
                dead = asyncio.create_task(self.dead.wait())
                await asyncio.wait({outgoing, dead}, return_when=asyncio.FIRST_COMPLETED)
                if outgoing.done():
                    dead.cancel()
                    yield outgoing.result()
                    continue
                outgoing.cancel()
                self.dead.clear()
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the leader died")
        finally:
            reader.cancel()


def task(task_id: str, job: dict[str, Any]) -> pb.OperatorMessage:
    return pb.OperatorMessage(task=pb.Task(task_id=task_id, attempt=1, job_json=json.dumps(job)))


async def scenario(handler: vision_worker.Handler, steps: Any) -> None:
    fake = FakeOperator()
    server = grpc.aio.server()
    pb_grpc.add_WorkerServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    shutdown = asyncio.Event()
    config = vision_worker.Config(endpoint=f"http://127.0.0.1:{port}", algorithm="detect", capacity=2, worker_id="w-1")
    worker = asyncio.create_task(vision_worker.serve(config, handler, shutdown))
    try:
        register = await asyncio.wait_for(fake.registered.get(), 20)
        assert (register.algorithm, register.capacity, register.worker_id) == ("detect", 2, "w-1")
        await asyncio.wait_for(steps(fake), 20)
    finally:
        shutdown.set()
        await asyncio.wait_for(worker, 20)
        await server.stop(None)


def test_results_come_back_from_plain_and_async_handlers() -> None:
    def plain(job: dict[str, Any], t: vision_worker.Task) -> dict[str, Any]:
        return {"echo": job["name"], "attempt": t.attempt}

    async def steps(fake: FakeOperator) -> None:
        await fake.outgoing.put(task("a-1", {"name": "img-1"}))
        got = await fake.received.get()
        assert got.WhichOneof("kind") == "result"
        assert (got.result.task_id, got.result.attempt) == ("a-1", 1)
        assert json.loads(got.result.result_json) == {"echo": "img-1", "attempt": 1}

    asyncio.run(scenario(plain, steps))


def test_a_result_over_4096_bytes_and_an_exception_fail_the_attempt() -> None:
    async def handler(job: dict[str, Any], t: vision_worker.Task) -> dict[str, Any]:
        if job["name"] == "big":
            return {"blob": "x" * 5000}
        if job["name"] == "bad":
            raise vision_worker.TaskError("BadInput", "no image")
        raise RuntimeError("boom")

    async def steps(fake: FakeOperator) -> None:
        seen = {}
        for i, name in enumerate(["big", "bad", "crash"]):
            await fake.outgoing.put(task(f"t-{i}", {"name": name}))
            got = await fake.received.get()
            assert got.WhichOneof("kind") == "failure"
            seen[got.failure.task_id] = (got.failure.reason, got.failure.message)
        assert seen["t-0"][0] == "ResultTooLarge"
        assert seen["t-0"][1].startswith("the result (5011 bytes) is over the 4096-byte limit")
        assert seen["t-1"] == ("BadInput", "no image")
        assert seen["t-2"] == ("AlgorithmError", "RuntimeError: boom")

    asyncio.run(scenario(handler, steps))


def test_a_cancel_reaches_the_handler() -> None:
    started = asyncio.Event()

    async def handler(job: dict[str, Any], t: vision_worker.Task) -> dict[str, Any]:
        started.set()
        await t.cancelled.wait()
        return {"late": True}

    async def steps(fake: FakeOperator) -> None:
        await fake.outgoing.put(task("a-1", {"name": "img-1"}))
        await started.wait()
        await fake.outgoing.put(pb.OperatorMessage(cancel=pb.Cancel(task_id="a-1", reason=pb.CANCEL_REASON_DELETED)))
        got = await fake.received.get()
        assert (got.WhichOneof("kind"), got.failure.task_id, got.failure.reason) == ("failure", "a-1", "Cancelled")

    asyncio.run(scenario(handler, steps))


def test_a_refusal_stops_the_worker() -> None:
    class Refusing(pb_grpc.WorkerServicer):  # type: ignore[misc]
        async def Session(self, request_iterator: Any, context: Any) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no token")

    async def main() -> None:
        server = grpc.aio.server()
        pb_grpc.add_WorkerServicer_to_server(Refusing(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        config = vision_worker.Config(endpoint=f"127.0.0.1:{port}", algorithm="detect", capacity=1, worker_id="w")
        with pytest.raises(vision_worker.Refused, match="UNAUTHENTICATED: no token"):
            await asyncio.wait_for(vision_worker.serve(config, lambda j, t: {}), 20)
        await server.stop(None)

    asyncio.run(main())


async def frames_until_result_of(fake: FakeOperator, task_id: str) -> list[tuple[str, str]]:
    """(kind, task id) of the frames the operator gets up to and with the result of ``task_id``."""
    seen = []
    while True:
        got = await fake.received.get()
        kind = got.WhichOneof("kind")
        seen.append((kind, getattr(got, kind).task_id))
        if (kind, got.result.task_id) == ("result", task_id):
            return seen


def test_a_result_the_dead_leader_got_is_reported_and_sent_again_once() -> None:
    async def handler(job: dict[str, Any], t: vision_worker.Task) -> dict[str, Any]:
        return {"echo": job["name"]}

    async def steps(fake: FakeOperator) -> None:
        await fake.outgoing.put(task("a-1", {"name": "img-1"}))
        got = await fake.received.get()
        assert (got.WhichOneof("kind"), got.result.task_id) == ("result", "a-1")
        # The leader got the result and dies before recording it.
        fake.die()
        register = await fake.registered.get()
        assert list(register.running_task_ids) == ["a-1"]
        again = await fake.received.get()
        assert again == got
        # A later task's result comes after any further copy of a-1's: there is none.
        await fake.outgoing.put(task("b-1", {"name": "img-2"}))
        assert await frames_until_result_of(fake, "b-1") == [("result", "b-1")]

    asyncio.run(scenario(handler, steps))


def test_a_result_made_while_disconnected_is_sent_once_not_also_from_the_queue() -> None:
    started = asyncio.Event()
    disconnected = asyncio.Event()

    class OnDisconnect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("cannot reach the operator"):
                disconnected.set()

    async def handler(job: dict[str, Any], t: vision_worker.Task) -> dict[str, Any]:
        if job["name"] == "slow":
            started.set()
            # Ends between the streams: its result waits in the queue and is a recent outcome too.
            await disconnected.wait()
        return {"echo": job["name"]}

    async def steps(fake: FakeOperator) -> None:
        await fake.outgoing.put(task("a-1", {"name": "slow"}))
        await started.wait()
        fake.die()
        register = await fake.registered.get()
        assert list(register.running_task_ids) == ["a-1"]
        await fake.outgoing.put(task("b-1", {"name": "img-2"}))
        assert await frames_until_result_of(fake, "b-1") == [("result", "a-1"), ("result", "b-1")]

    logger = logging.getLogger("vision_worker")
    hook = OnDisconnect()
    logger.addHandler(hook)
    try:
        asyncio.run(scenario(handler, steps))
    finally:
        logger.removeHandler(hook)
