"""OpenTelemetry: one span per task run, current while the task runs, with the outcome."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from streaq import StreaqRetry, Worker
from streaq.contrib.otel import carrier, instrument

pytestmark = pytest.mark.anyio


async def test_a_span_per_task_run(redis_url: str, clean_queue: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    worker: Worker[None] = Worker(
        redis_url=redis_url, queue_name=clean_queue, handle_signals=False, idle_timeout=5
    )

    @worker.task(name="ok")
    async def ok(n: int) -> int:
        with tracer.start_as_current_span("inner"):
            return n

    @worker.task(name="sync_ok")
    def sync_ok() -> str:
        with tracer.start_as_current_span("inner sync"):
            return "yes"

    @worker.task(name="boom")
    async def boom() -> None:
        raise ValueError("boom")

    @worker.task(name="flaky")
    async def flaky() -> str:
        if flaky.context.tries == 1:
            raise StreaqRetry("again", delay=0)
        return "done"

    @worker.task(name="slow", timeout=timedelta(milliseconds=200))
    async def slow() -> None:
        await anyio.sleep(10)

    instrument(worker, tracer_provider=provider)

    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)
        with anyio.fail_after(20):
            ok_task = await ok.enqueue(3)
            assert (await ok_task.result()).result == 3
            assert (await (await sync_ok.enqueue()).result()).result == "yes"
            assert not (await (await boom.enqueue()).result()).success
            flaky_task = await flaky.enqueue()
            assert (await flaky_task.result()).result == "done"
            assert not (await (await slow.enqueue()).result()).success
        tg.cancel_scope.cancel()

    spans = exporter.get_finished_spans()
    runs: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        if span.name.startswith("run "):
            runs.setdefault(span.name, []).append(span)
    assert sorted(runs) == ["run boom", "run flaky", "run ok", "run slow", "run sync_ok"]

    [run_ok] = runs["run ok"]
    assert run_ok.kind == SpanKind.CONSUMER
    attributes = dict(run_ok.attributes or {})
    assert attributes == {
        "messaging.system": "streaq",
        "messaging.operation.type": "process",
        "messaging.destination.name": clean_queue,
        "messaging.message.id": ok_task.id,
        "streaq.task.fn": "ok",
        "streaq.task.try": 1,
        "streaq.worker.id": worker.id,
        "streaq.task.outcome": "success",
    }
    assert run_ok.status.status_code == StatusCode.UNSET
    # spans the task opens are children of its run, in a sync task's thread too
    for inner_name, run_name in [("inner", "run ok"), ("inner sync", "run sync_ok")]:
        [inner] = [s for s in spans if s.name == inner_name]
        [run] = runs[run_name]
        assert inner.parent is not None
        assert inner.parent.span_id == run.context.span_id

    [run_boom] = runs["run boom"]
    assert run_boom.status.status_code == StatusCode.ERROR
    assert run_boom.status.description == "ValueError: boom"
    assert [e.name for e in run_boom.events] == ["exception"]

    first, second = sorted(runs["run flaky"], key=lambda s: s.start_time or 0)
    assert (first.attributes or {})["streaq.task.outcome"] == "retry"
    assert first.status.status_code == StatusCode.UNSET
    assert (second.attributes or {})["streaq.task.try"] == 2
    assert (second.attributes or {})["streaq.task.outcome"] == "success"
    # no enqueuer context travels with the payload yet: each run starts its own trace
    assert first.parent is None

    [run_slow] = runs["run slow"]
    assert (run_slow.attributes or {})["streaq.task.outcome"] == "cancelled"
    assert run_slow.status.description == "timed out"


def test_carrier_holds_the_current_context() -> None:
    provider = TracerProvider()
    assert carrier() == {}
    with provider.get_tracer("test").start_as_current_span("enqueue") as span:
        headers = carrier()
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert headers["traceparent"].split("-")[1] == trace_id


async def test_runs_continue_the_enqueuers_trace_through_chains(
    redis_url: str, clean_queue: str
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    worker: Worker[None] = Worker(
        redis_url=redis_url, queue_name=clean_queue, handle_signals=False, idle_timeout=5
    )

    @worker.task(name="first")
    async def first(n: int) -> int:
        return n + 1

    @worker.task(name="second")
    async def second(n: int) -> int:
        return n * 2

    instrument(worker, tracer_provider=provider)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)
        with anyio.fail_after(20):
            with provider.get_tracer("test").start_as_current_span("request") as request:
                chain = await first.enqueue(1).then(second)
            assert (await chain.result()).result == 4
        tg.cancel_scope.cancel()

    trace_id = request.get_span_context().trace_id
    runs = {s.name: s for s in exporter.get_finished_spans() if s.name.startswith("run ")}
    assert set(runs) == {"run first", "run second"}
    for span in runs.values():
        assert span.context is not None
        assert span.context.trace_id == trace_id
        assert span.parent is not None
        assert span.parent.span_id == request.get_span_context().span_id
