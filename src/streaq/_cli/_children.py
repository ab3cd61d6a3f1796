"""Worker processes started by the supervisor and the reloader, and signals forwarded to them.

Children run in their own process group, so a Ctrl-C at the terminal reaches only the parent,
which forwards it once (:class:`SignalForwarding`): a worker must not see the same interrupt
twice (a second signal may mean "stop now" to it).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from typing import Any

__all__ = ["SignalForwarding", "describe_exit", "send", "spawn"]

#: the signals a parent passes on to its children
_FORWARDED = (signal.SIGINT, signal.SIGTERM)


def spawn(command: list[str]) -> subprocess.Popen[bytes]:
    """Start ``command`` in a process group of its own."""
    return subprocess.Popen(command, process_group=0)


def send(process: subprocess.Popen[bytes], signum: int) -> None:
    """Send ``signum`` to ``process`` unless it has exited."""
    if process.poll() is None:
        # it may exit between poll() and kill()
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)


def describe_exit(code: int) -> str:
    """A child's exit status for a log line: ``status 3`` or ``signal SIGKILL``."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


class SignalForwarding:
    """Install SIGINT/SIGTERM handlers for the duration of a ``with`` block.

    :param handler: called as a signal handler, with the signal number and the frame
    """

    def __init__(self, handler: Any) -> None:
        self._handler = handler
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> None:
        for signum in _FORWARDED:
            self._saved[signum] = signal.signal(signum, self._handler)

    def __exit__(self, *exc_info: object) -> None:
        for signum, previous in self._saved.items():
            signal.signal(signum, previous)
