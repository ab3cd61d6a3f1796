"""Crash points: a **test-only** hook that SIGKILLs the worker process at named protocol steps.

Never set this in production. The durability suite (``tests/durability/test_crashpoints.py``)
starts worker processes with, say, ``STREAQ_CRASHPOINTS="after_claim:0.02,during_finish:0.05"``:
each time such a process reaches a listed step it kills itself with ``SIGKILL`` with that
probability, as a power cut would at exactly that point -- no ``finally`` block, no hand-back, no
buffered write survives. The suite then checks that every task still ends with exactly one result.

**Cost when disabled.** The variable is read once, when this module is imported; :data:`ARMED` is
a module constant and every call site is guarded by ``if ARMED:``, so a worker started without the
variable pays one global load and one truth test per step -- no call, no environment or dict
lookup. An unknown step name or a probability outside [0, 1] raises :class:`ValueError` at import,
so a misspelt setting fails the test that made it instead of silently testing nothing.

**Steps** (where the process dies):

``after_claim``
    messages were just claimed (``XREADGROUP``, or taken over from a dead worker by the
    reclaimer) and none of them started: they stay pending for this dead consumer.
``mid_run``
    inside a task's body. The runner cannot tell when a body is under way, so a body calls
    :func:`crashpoint` itself (the durability app does, right after recording that it started).
``before_finish``
    outcomes were decided (results, retries, hand-backs) but the ``finish`` call was not sent:
    the runs' work is lost and their messages stay pending.
``during_finish``
    the server applied a ``finish`` call; the worker dies before acting on its reply. (Chosen
    over a kill between writing the command and reading the reply: that point sits in the
    connection layer shared by every command, and whether the server reads a command whose
    client died right after sending it is a race. For Redis, dying after the reply arrived and
    before the worker did anything with it is the same state, reached deterministically.)
``during_retry``
    as ``during_finish``, for a ``finish`` call that scheduled a retry.
``during_release``
    as ``during_finish``, for a ``finish`` call that released (or failed) the dependents of a
    task it finished.
``during_promotion``
    the scheduler's ``promote`` call moved due delayed tasks into their streams; the worker dies
    before acting on its reply.

Before dying the process writes ``streaq crashpoint: <step>`` on its stderr (one unbuffered
``write``), so a test can count the crashes of each step in the worker's log.
"""

from __future__ import annotations

import os
import random
import signal
from typing import Final

__all__ = ["ARMED", "STEPS", "crashpoint", "parse"]

#: the named steps (see the module docstring)
STEPS: Final = frozenset(
    {
        "after_claim",
        "mid_run",
        "before_finish",
        "during_finish",
        "during_retry",
        "during_release",
        "during_promotion",
    }
)

ENV: Final = "STREAQ_CRASHPOINTS"


def parse(spec: str) -> dict[str, float]:
    """The probability of each step in a ``STREAQ_CRASHPOINTS`` value.

    :param spec: comma-separated ``step:probability`` pairs, e.g. ``"after_claim:0.02"``
    :return: step name -> probability (steps with probability 0 are left out)
    :raises ValueError: for an unknown step, a malformed pair or a probability outside [0, 1]
    """
    chances: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        step, sep, value = item.partition(":")
        if not sep or step not in STEPS:
            raise ValueError(
                f"{ENV}: {item!r} is not 'step:probability' with a step among {sorted(STEPS)}"
            )
        chance = float(value)
        if not 0.0 <= chance <= 1.0:
            raise ValueError(f"{ENV}: the probability of {step} must be in [0, 1], not {chance}")
        if chance:
            chances[step] = chance
    return chances


_CHANCES: Final = parse(os.environ.get(ENV, ""))
_random: Final = random.Random().random

#: whether any crash point is set in this process (fixed at import)
ARMED: Final = bool(_CHANCES)


def crashpoint(step: str, when: bool = True) -> None:
    """SIGKILL this process with the probability ``STREAQ_CRASHPOINTS`` gives ``step``.

    Test-only; callers guard the call with ``if ARMED:``.

    :param step: one of :data:`STEPS`
    :param when: whether the step is reached at all (a convenience for conditional steps)
    """
    chance = _CHANCES.get(step)
    if when and chance is not None and _random() < chance:
        os.write(2, f"streaq crashpoint: {step}\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)
