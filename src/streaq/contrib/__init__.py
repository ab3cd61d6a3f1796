"""Integrations with other tools, each behind an optional extra.

- :mod:`streaq.contrib.prometheus` (``streaq[prometheus]``): task and queue metrics, and the
  HTTP endpoint behind ``streaq run --metrics-port``.
- :mod:`streaq.contrib.otel` (``streaq[otel]``): an OpenTelemetry span per task run.

They use the public API (middlewares, ``worker.counters``) and read the queue's Redis keys; they
never change how tasks run.
"""

__all__: list[str] = []
