"""Prometheus metrics for streaq workers (optional extra ``streaq[prometheus]``).

Usage::

    from streaq.contrib.prometheus import StreaqMetrics

    metrics = StreaqMetrics()  # registers on prometheus_client's default registry
    metrics.instrument(worker)  # before the worker runs
    prometheus_client.start_http_server(9100, addr="127.0.0.1")

or simply ``streaq run app:worker --metrics-port 9100``, which does both (see
:func:`serve_metrics`). The endpoint listens on 127.0.0.1 unless told otherwise: the queue
metrics name queues and functions, and every scrape reads Redis, so expose it only where
Prometheus needs it (``--metrics-addr 0.0.0.0``, or a private address).

Two kinds of metrics, labelled by ``queue``:

- **task metrics**, recorded in this process by a middleware, per ``function``:
  ``streaq_tasks_started_total``, ``streaq_tasks_finished_total`` (succeeded),
  ``streaq_tasks_failed_total``, ``streaq_tasks_retried_total``, ``streaq_tasks_aborted_total``,
  ``streaq_tasks_relinquished_total`` (handed back at shutdown or taken over by another worker),
  ``streaq_tasks_in_progress`` and the ``streaq_task_duration_seconds`` histogram. Outcomes the
  worker decides before a task's function is called (expired, unknown function, undecodable
  arguments, out of tries after a crash) never reach a middleware; the worker's own counters,
  exported as ``streaq_worker_tasks_total{outcome=...}``, include them.
- **queue metrics**, read from Redis when Prometheus scrapes (one connection, two round trips
  per queue; see :meth:`Worker.inspect <streaq.Worker.inspect>`):
  ``streaq_queue_depth{priority,state=queued|prefetched|running}``,
  ``streaq_queue_lag_seconds{priority}`` (age of the oldest unclaimed task, 0 when none waits),
  ``streaq_queue_delayed``, ``streaq_queue_waiting``, ``streaq_workers_alive``. They describe
  the whole queue, so every worker process of a queue reports the same values: aggregate them
  with ``max``, not ``sum``.

How a middleware tells outcomes apart: it sees the task's exception, or, for a timeout, an abort
or a shutdown, only a cancellation. A cancellation after the task's full ``timeout`` is a
timeout; otherwise :meth:`Worker.abort_requested <streaq.Worker.abort_requested>` (whether the
task's abort is pending), asked under a shield, tells an abort from a hand-back. Retries follow
the worker's rule: ``StreaqRetry`` (or a timeout with ``retry_timeouts``) while tries remain.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import anyio
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..task import RegisteredMiddleware
from ..types import ReturnCoroutine, StreaqRetry
from ..utils import to_seconds
from ..worker import QueueSnapshot, Worker

if TYPE_CHECKING:
    from ..types import TaskContext

__all__ = ["StreaqMetrics", "serve_metrics"]

logger = logging.getLogger("streaq.metrics")

#: how long asking whether a cancelled task was aborted may take
ABORT_CHECK_TIMEOUT = 2.0
#: the longest a scrape waits for a queue's state (Prometheus scrapes time out after 10 s)
SCRAPE_TIMEOUT = 5.0
# a timeout cancels at its deadline; the clock of the event loop and perf_counter differ slightly
_TIMEOUT_SLACK = 0.01


class StreaqMetrics:
    """Task metrics recorded by a middleware and queue metrics collected at scrape time.

    One instance per Prometheus registry; :meth:`instrument` any number of workers with it.

    :param registry: where the metrics are registered (``prometheus_client.REGISTRY`` by default)
    :param namespace: prefix of every metric name
    :param buckets: buckets of the duration histogram, in seconds
    """

    def __init__(
        self,
        registry: CollectorRegistry = REGISTRY,
        *,
        namespace: str = "streaq",
        buckets: tuple[float, ...] = Histogram.DEFAULT_BUCKETS,
    ) -> None:
        self.registry = registry
        labels = ["queue", "function"]

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, labels, namespace=namespace, registry=registry)

        self.started = counter("tasks_started", "Task runs started")
        self.finished = counter("tasks_finished", "Task runs that succeeded")
        self.failed = counter("tasks_failed", "Task runs that failed for good")
        self.retried = counter("tasks_retried", "Task runs that will be retried")
        self.aborted = counter("tasks_aborted", "Task runs stopped by an abort request")
        self.relinquished = counter(
            "tasks_relinquished", "Task runs handed back (shutdown) or taken over (lost lease)"
        )
        self.in_progress = Gauge(
            "tasks_in_progress",
            "Task runs in progress",
            labels,
            namespace=namespace,
            registry=registry,
        )
        self.duration = Histogram(
            "task_duration_seconds",
            "Duration of task runs, whatever their outcome",
            labels,
            namespace=namespace,
            registry=registry,
            buckets=buckets,
        )
        self._collector = _QueueCollector(namespace)
        registry.register(self._collector)

    def instrument(self, worker: Worker[Any]) -> RegisteredMiddleware:
        """Record the task metrics of ``worker`` and collect its queue's metrics at scrape time.

        Call it before the worker runs: middlewares are applied when a task first runs. It is
        registered after (inside) the middlewares registered so far.

        :param worker: the worker to instrument
        :return: the registered middleware
        """
        self._collector.add(worker)
        holder: list[RegisteredMiddleware] = []

        def middleware(call: ReturnCoroutine) -> ReturnCoroutine:
            async def measured(*args: Any, **kwargs: Any) -> Any:
                return await self._measure(worker, holder[0].context, call, args, kwargs)

            return measured

        holder.append(worker.middleware(middleware))
        return holder[0]

    async def _measure(
        self,
        worker: Worker[Any],
        context: TaskContext,
        call: ReturnCoroutine,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        labels = (worker.queue_name, context.fn_name)
        self.started.labels(*labels).inc()
        in_progress = self.in_progress.labels(*labels)
        in_progress.inc()
        begin = time.perf_counter()
        outcome = self.failed
        try:
            result = await call(*args, **kwargs)
        except anyio.get_cancelled_exc_class():
            outcome = await self._cancelled(worker, context, time.perf_counter() - begin)
            raise
        except StreaqRetry:
            outcome = self.retried if _tries_left(worker, context) else self.failed
            raise
        except Exception:
            outcome = self.failed
            raise
        else:
            outcome = self.finished
            return result
        finally:
            elapsed = time.perf_counter() - begin
            in_progress.dec()
            self.duration.labels(*labels).observe(elapsed)
            outcome.labels(*labels).inc()

    async def _cancelled(
        self, worker: Worker[Any], context: TaskContext, elapsed: float
    ) -> Counter:
        timeout = to_seconds(context.timeout)
        if timeout is not None and elapsed + _TIMEOUT_SLACK >= timeout:
            task = worker.registry.get(context.fn_name)
            retries = task is not None and task.retry_timeouts
            return self.retried if retries and _tries_left(worker, context) else self.failed
        aborted = False
        # the run is being cancelled: only a shielded scope can still talk to Redis
        with anyio.CancelScope(shield=True), anyio.move_on_after(ABORT_CHECK_TIMEOUT):
            try:
                aborted = await worker.abort_requested(context.task_id)
            except Exception as e:
                logger.debug("cannot tell an abort from a hand-back: %s", e)
        return self.aborted if aborted else self.relinquished


def _tries_left(worker: Worker[Any], context: TaskContext) -> bool:
    task = worker.registry.get(context.fn_name)
    max_tries = task.max_tries if task is not None else None
    return not max_tries or context.tries < max_tries


class _QueueCollector(Collector):
    """Reads the instrumented workers' queues from Redis whenever Prometheus scrapes."""

    def __init__(self, namespace: str) -> None:
        self._namespace = namespace
        self._workers: list[Worker[Any]] = []

    def add(self, worker: Worker[Any]) -> None:
        if all(w is not worker for w in self._workers):
            self._workers.append(worker)

    def describe(self) -> list[Metric]:
        # no Redis round trip at registration: an empty description skips the duplicate check
        return []

    def collect(self) -> Iterator[Metric]:
        ns = self._namespace
        depth = GaugeMetricFamily(
            f"{ns}_queue_depth", "Tasks in the streams", labels=["queue", "priority", "state"]
        )
        lag = GaugeMetricFamily(
            f"{ns}_queue_lag_seconds",
            "Age of the oldest unclaimed task",
            labels=["queue", "priority"],
        )
        delayed = GaugeMetricFamily(f"{ns}_queue_delayed", "Delayed tasks", labels=["queue"])
        waiting = GaugeMetricFamily(
            f"{ns}_queue_waiting", "Tasks waiting for dependencies", labels=["queue"]
        )
        alive = GaugeMetricFamily(
            f"{ns}_workers_alive", "Workers with a recent heartbeat", labels=["queue"]
        )
        totals = CounterMetricFamily(
            f"{ns}_worker_tasks",
            "Task outcomes counted by this process's workers (worker.counters)",
            labels=["queue", "worker", "outcome"],
        )
        for worker in self._workers:
            for outcome, count in worker.counters.items():
                totals.add_metric([worker.queue_name, worker.id, outcome], count)
        seen: set[str] = set()
        for worker in self._workers:
            if worker.queue_name in seen:
                continue
            seen.add(worker.queue_name)
            found = _read(worker)
            if found is None:
                continue
            queue = found.queue_name
            for prio in found.priorities:
                depth.add_metric([queue, prio.name, "queued"], prio.queued)
                depth.add_metric([queue, prio.name, "prefetched"], prio.prefetched)
                depth.add_metric([queue, prio.name, "running"], prio.running)
                lag.add_metric([queue, prio.name], (prio.lag_ms or 0) / 1000)
            delayed.add_metric([queue], found.delayed)
            waiting.add_metric([queue], found.waiting)
            alive.add_metric([queue], found.workers_alive)
        yield from (depth, lag, delayed, waiting, alive, totals)


def _read(worker: Worker[Any]) -> QueueSnapshot | None:
    # collect() may be called on an event loop's thread (an async web app serving /metrics) or on
    # the HTTP server's thread; either way a short-lived loop on a thread of its own reads the
    # queue, so no running loop (asyncio or trio) is ever blocked or re-entered
    found: list[QueueSnapshot] = []

    def read() -> None:
        try:
            found.append(anyio.run(worker.inspect))
        except Exception as e:
            logger.warning("cannot read queue %s for metrics: %s", worker.queue_name, e)

    reader = threading.Thread(target=read, name="streaq-metrics", daemon=True)
    reader.start()
    reader.join(SCRAPE_TIMEOUT)
    if reader.is_alive():
        logger.warning("reading queue %s for metrics took too long", worker.queue_name)
    return found[0] if found else None


def serve_metrics(
    worker: Worker[Any], port: int, addr: str = "127.0.0.1", metrics: StreaqMetrics | None = None
) -> StreaqMetrics:
    """Instrument ``worker`` and serve ``/metrics`` on ``addr:port`` from a daemon thread.

    This is what ``streaq run --metrics-port PORT --metrics-addr ADDR`` does before running the
    worker.

    :param worker: the worker to instrument
    :param port: TCP port of the endpoint
    :param addr: address to listen on: loopback only by default; ``"0.0.0.0"`` (or ``"::"``) for
        every interface, or one interface's address
    :param metrics: the metrics to use (a new :class:`StreaqMetrics` on the default registry)
    :return: the metrics
    :raises OSError: when the port cannot be bound
    """
    from prometheus_client import start_http_server

    metrics = metrics or StreaqMetrics()
    metrics.instrument(worker)
    start_http_server(port, addr=addr, registry=metrics.registry)
    return metrics
