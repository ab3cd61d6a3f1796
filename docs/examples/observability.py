"""Metrics and tracing: Prometheus metrics and an OpenTelemetry span per task run."""

from __future__ import annotations

import os

import anyio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from streaq import Worker
from streaq.contrib import otel
from streaq.contrib.prometheus import StreaqMetrics

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379")
QUEUE = os.environ.get("STREAQ_QUEUE", "docs")

worker: Worker[None] = Worker(redis_url=REDIS_URL, queue_name=QUEUE)


@worker.task
async def charge(cents: int) -> int:
    if cents < 0:
        raise ValueError("a charge cannot be negative")
    return cents


# --8<-- [start:instrument]
# Prometheus: task metrics from a middleware, queue metrics read from Redis at scrape time
registry = CollectorRegistry()  # the default registry when left out
metrics = StreaqMetrics(registry)
metrics.instrument(worker)  # before the worker runs
# prometheus_client.start_http_server(9100, "127.0.0.1", registry=registry) would serve /metrics
# (prometheus_client listens on every interface unless given an address)

# OpenTelemetry: one span per task run (the global tracer provider when left out)
exporter = InMemorySpanExporter()  # in production: an OTLP exporter
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
otel.instrument(worker, tracer_provider=provider)
# --8<-- [end:instrument]


async def main() -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)
        assert (await (await charge.enqueue(250)).result(timeout=10)).result == 250
        assert not (await (await charge.enqueue(-1)).result(timeout=10)).success
        tg.cancel_scope.cancel()

    # --8<-- [start:check]
    labels = {"queue": worker.queue_name, "function": "charge"}
    assert registry.get_sample_value("streaq_tasks_finished_total", labels) == 1
    assert registry.get_sample_value("streaq_tasks_failed_total", labels) == 1
    assert registry.get_sample_value("streaq_task_duration_seconds_count", labels) == 2

    spans = sorted(exporter.get_finished_spans(), key=lambda span: span.start_time or 0)
    assert [span.name for span in spans] == ["run charge", "run charge"]
    outcomes = [(span.attributes or {}).get("streaq.task.outcome") for span in spans]
    assert outcomes == ["success", "failure"]
    # --8<-- [end:check]


if __name__ == "__main__":
    anyio.run(main)
