"""Flow control, the Python side: a task's limits as the decorator gives them, as the server reads
them (``lua/flow.lua`` explains how they are enforced), and the group key of a task.

Limits are written to Redis by every worker and producer that registers the task (``prepare``),
so all workers of the queue enforce the same ones; the last process to start with a changed
limit sets it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from ._codec import decode_any, encode
from .types import RateLimit, StreaqError
from .utils import to_ms

#: what computes a task's group key from its arguments (called with the task's arguments)
GroupBy = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class FlowLimits:
    """The flow limits of one task function (see ``Worker.task``).

    :param concurrency: at most this many running (admitted and unfinished) fleet-wide
    :param rate: at most this many starts per window fleet-wide
    :param group_by: computes the group key of a task from its arguments
    :param group_concurrency: at most this many running per group key
    :param group_rate: at most this many starts per window per group key
    """

    concurrency: int | None = None
    rate: RateLimit | None = None
    group_by: GroupBy | None = None
    group_concurrency: int | None = None
    group_rate: RateLimit | None = None

    @classmethod
    def build(
        cls,
        fn_name: str,
        concurrency_limit: int | None,
        rate_limit: str | RateLimit | None,
        group_by: GroupBy | None,
        group_concurrency: int | None,
        group_rate_limit: str | RateLimit | None,
    ) -> FlowLimits | None:
        """The limits of a decorator's options, or ``None`` when it set none.

        :raises StreaqError: for a limit below 1, an unreadable rate, group limits without
            ``group_by``, or ``group_by`` without any limit to share fairly
        """
        for label, value in (
            ("concurrency_limit", concurrency_limit),
            ("group_concurrency", group_concurrency),
        ):
            if value is not None and value < 1:
                raise StreaqError(f"task {fn_name!r}: {label} must be at least 1, not {value}")
        rate = None if rate_limit is None else RateLimit.parse(rate_limit)
        group_rate = None if group_rate_limit is None else RateLimit.parse(group_rate_limit)
        grouped = group_concurrency is not None or group_rate is not None
        if grouped and group_by is None:
            raise StreaqError(f"task {fn_name!r}: group limits need group_by")
        if group_by is not None and not (grouped or concurrency_limit or rate):
            raise StreaqError(
                f"task {fn_name!r}: group_by shares limits fairly between groups; give it a "
                "limit (group_concurrency, group_rate_limit, concurrency_limit or rate_limit)"
            )
        if not (concurrency_limit or rate or grouped):
            return None
        return cls(concurrency_limit, rate, group_by, group_concurrency, group_rate)

    def config(self) -> bytes:
        """The configuration the server reads (keys of ``lua/flow.lua``)."""
        cfg: dict[str, int] = {}
        if self.group_by is not None:
            cfg["g"] = 1  # waiting tasks queue per group key, admitted round-robin
        if self.concurrency:
            cfg["c"] = self.concurrency
        if self.rate is not None:
            cfg["rn"], cfg["rp"] = self.rate.limit, to_ms(self.rate.period) or 1
        if self.group_concurrency:
            cfg["gc"] = self.group_concurrency
        if self.group_rate is not None:
            cfg["grn"], cfg["grp"] = self.group_rate.limit, to_ms(self.group_rate.period) or 1
        return encode(cfg)

    @property
    def rate_limited(self) -> bool:
        """Whether starts are limited (the worker then checks the window before each start)."""
        return self.rate is not None or self.group_rate is not None

    def group_key(self, fn_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """The group key of a task with these arguments, when the task has ``group_by``.

        :raises StreaqError: when ``group_by`` raises or returns something other than a ``str``
            or an ``int``
        """
        if self.group_by is None:
            return None
        try:
            key = self.group_by(*args, **kwargs)
        except Exception as e:
            raise StreaqError(f"group_by of task {fn_name!r} failed: {e!r}") from e
        if not isinstance(key, str | int) or isinstance(key, bool):
            raise StreaqError(
                f"group_by of task {fn_name!r} must return a str or an int, not "
                f"{type(key).__name__}"
            )
        return str(key)


def flow_paused(config: bytes) -> bool:
    """Whether a flow configuration read from the server says its function is paused."""
    try:
        decoded = decode_any(config)
    except Exception:
        return False
    return isinstance(decoded, dict) and decoded.get("paused") == 1


@dataclass(frozen=True, slots=True)
class FlowInfo:
    """The flow control of one task function, as ``streaq info`` shows it.

    :param name: the function's registered name
    :param concurrency_limit: its ``concurrency_limit``, if any
    :param rate_limit: its ``rate_limit`` (``"20/1s"``), if any
    :param group_concurrency: its ``group_concurrency``, if any
    :param group_rate_limit: its ``group_rate_limit``, if any
    :param paused: whether it is paused
    :param admitted: tasks admitted past its gate and not ended (queued or running)
    :param waiting: tasks waiting at its gate
    :param groups: waiting tasks per group key (the first few keys, in round-robin order)
    """

    name: str
    concurrency_limit: int | None
    rate_limit: str | None
    group_concurrency: int | None
    group_rate_limit: str | None
    paused: bool
    admitted: int
    waiting: int
    groups: dict[str, int] = field(default_factory=dict)


def _rate(config: dict[str, Any], count: str, period: str) -> str | None:
    if not config.get(count):
        return None
    return str(RateLimit(int(config[count]), timedelta(milliseconds=int(config[period]))))


def parse_flow_info(reply: list[Any]) -> tuple[bool, list[FlowInfo]]:
    """Whether the queue is paused, and the flows of a ``flow_info`` server reply."""
    flows = []
    for fn, raw, admitted, waiting, groups in reply[1:]:
        config = decode_any(bytes(raw))
        flows.append(
            FlowInfo(
                name=bytes(fn).decode(),
                concurrency_limit=config.get("c") or None,
                rate_limit=_rate(config, "rn", "rp"),
                group_concurrency=config.get("gc") or None,
                group_rate_limit=_rate(config, "grn", "grp"),
                paused=config.get("paused") == 1,
                admitted=int(admitted),
                waiting=int(waiting),
                groups={
                    bytes(groups[n]).decode(): int(groups[n + 1]) for n in range(0, len(groups), 2)
                },
            )
        )
    return bool(reply[0]), sorted(flows, key=lambda f: f.name)
