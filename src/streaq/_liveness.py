"""When a worker counts as alive: how often it beats, and when its heartbeat expires.

A running worker writes its heartbeat -- the server's ``workers`` hash, worker id to the time in
ms -- every :func:`heartbeat_interval` seconds, from its lease thread (``_runtime/_leases.py``),
so a task blocking the event loop does not stop it and a reconnecting thread retries at least
that often. A live process therefore never misses two beats in a row: its heartbeat *expires*
after :data:`MISSED_BEATS` intervals (:func:`heartbeat_expiry_ms`), half of ``idle_timeout``.
``streaq info``, ``streaq check`` and the metrics call a worker dead from then on, well before
``idle_timeout``, which is when other workers take over its tasks.
"""

from __future__ import annotations

__all__ = ["MISSED_BEATS", "heartbeat_expiry_ms", "heartbeat_interval"]

#: a heartbeat older than this many intervals has expired
MISSED_BEATS = 2
#: the shortest interval, whatever ``idle_timeout`` says (seconds)
MIN_INTERVAL = 0.05


def heartbeat_interval(idle_timeout: float) -> float:
    """Seconds between a worker's heartbeats (and lease renewals).

    :param idle_timeout: the worker's ``idle_timeout`` in seconds
    :return: a quarter of it: leases are renewed several times before they could lapse
    """
    return max(idle_timeout / 4, MIN_INTERVAL)


def heartbeat_expiry_ms(idle_timeout_ms: int) -> int:
    """How old a heartbeat may be before its worker counts as dead (ms).

    :param idle_timeout_ms: the worker's ``idle_timeout`` in ms
    :return: :data:`MISSED_BEATS` heartbeat intervals
    """
    return round(MISSED_BEATS * heartbeat_interval(idle_timeout_ms / 1000) * 1000)
