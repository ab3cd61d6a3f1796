"""OpenTelemetry tracing for streaq workers (optional extra ``streaq[otel]``).

Usage::

    from streaq.contrib.otel import instrument

    instrument(worker)  # before the worker runs; uses the global tracer provider

Every run of a task (every try) is a ``CONSUMER`` span named ``run <function>``, current while
the task runs, so spans the task opens (HTTP calls, database queries, sync tasks in their thread
too) are its children. Attributes follow OpenTelemetry's messaging conventions where they fit:

=============================  ===========================================================
``messaging.system``           ``"streaq"``
``messaging.operation.type``   ``"process"``
``messaging.destination.name`` the queue's name
``messaging.message.id``       the task id
``streaq.task.fn``             the task's registered name
``streaq.task.try``            the number of this try, from 1
``streaq.worker.id``           the worker's id
``streaq.task.outcome``        ``success``, ``failure``, ``retry`` or ``cancelled``
=============================  ===========================================================

A failure records the exception and sets the span's status to ``ERROR``; a ``StreaqRetry`` is
recorded as an exception event with the status left unset (the task is not done yet); a
cancellation (timeout, abort or shutdown: a middleware cannot tell them apart without a round
trip) sets ``ERROR`` with a description.

Context propagation: :func:`instrument` sets ``worker.trace_carrier`` to :func:`carrier`, so every
task enqueued through the worker stores the enqueuing code's trace context (W3C
``traceparent``/``tracestate``); the run's span is its child. A chain enqueued at once shares the
enqueuer's context, and tasks enqueued inside a run continue that run's trace.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from ..task import RegisteredMiddleware
from ..types import ReturnCoroutine, StreaqRetry
from ..utils import to_seconds

if TYPE_CHECKING:
    from ..worker import Worker

__all__ = ["carrier", "instrument"]

TRACER_NAME = "streaq"


def carrier() -> dict[str, str]:
    """The current trace context as W3C headers, to store with a task at enqueue time.

    :return: ``{"traceparent": ..., "tracestate": ...}`` (empty without an active span)
    """
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


def instrument(
    worker: Worker[Any], tracer_provider: trace.TracerProvider | None = None
) -> RegisteredMiddleware:
    """Open a span for each task run of ``worker``.

    Call it before the worker runs. The middleware is registered after (inside) those registered
    so far; register it first to have other middlewares' work inside the span.

    :param worker: the worker to trace
    :param tracer_provider: where spans go (the global provider by default)
    :return: the registered middleware
    """
    from .. import __version__

    tracer = trace.get_tracer(TRACER_NAME, __version__, tracer_provider=tracer_provider)
    # tasks enqueued through this worker carry the enqueuer's trace context to their runs
    worker.trace_carrier = carrier
    holder: list[RegisteredMiddleware] = []

    def middleware(call: ReturnCoroutine) -> ReturnCoroutine:
        async def traced(*args: Any, **kwargs: Any) -> Any:
            context = holder[0].context
            attributes: dict[str, AttributeValue] = {
                "messaging.system": "streaq",
                "messaging.operation.type": "process",
                "messaging.destination.name": worker.queue_name,
                "messaging.message.id": context.task_id,
                "streaq.task.fn": context.fn_name,
                "streaq.task.try": context.tries,
                "streaq.worker.id": worker.id,
            }
            # exceptions are recorded here, with the outcome; the defaults would mark a retry
            # as an error and miss cancellations, which are BaseExceptions
            # the enqueuer's trace context, carried by the task (see ``carrier``)
            headers = context.trace_context
            with tracer.start_as_current_span(
                f"run {context.fn_name}",
                context=propagate.extract(headers) if headers else None,
                kind=SpanKind.CONSUMER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                begin = time.perf_counter()
                try:
                    result = await call(*args, **kwargs)
                except anyio.get_cancelled_exc_class():
                    timeout = to_seconds(context.timeout)
                    elapsed = time.perf_counter() - begin
                    timed_out = timeout is not None and elapsed + 0.01 >= timeout
                    span.set_attribute("streaq.task.outcome", "cancelled")
                    reason = "timed out" if timed_out else "cancelled (abort or shutdown)"
                    span.set_status(Status(StatusCode.ERROR, reason))
                    raise
                except StreaqRetry as e:
                    span.set_attribute("streaq.task.outcome", "retry")
                    span.record_exception(e)
                    raise
                except Exception as e:
                    span.set_attribute("streaq.task.outcome", "failure")
                    span.record_exception(e)
                    span.set_status(Status(StatusCode.ERROR, f"{type(e).__name__}: {e}"))
                    raise
                span.set_attribute("streaq.task.outcome", "success")
                return result

        return traced

    holder.append(worker.middleware(middleware))
    return holder[0]
