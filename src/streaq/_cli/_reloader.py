"""``streaq run --reload``: run the worker in a child and restart it when the code changes.

The reloader runs the same command without ``--reload`` as a child and watches every ``.py`` file
under the working directory (``watchfiles``, the extra ``streaq[reload]``). On a change it stops
the child with SIGTERM, kills it if it has not stopped after :data:`RELOAD_STOP_TIMEOUT` seconds,
and starts it again. SIGINT/SIGTERM stop the watching and are forwarded to the child, whose exit
status becomes the reloader's.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from types import FrameType

import watchfiles

from ._children import SignalForwarding, send, spawn

__all__ = ["Reloader"]

logger = logging.getLogger("streaq.cli")

#: how long the reloader waits for a stopped child before killing it
RELOAD_STOP_TIMEOUT = 30.0


class Reloader:
    """Run a command and restart it whenever a ``.py`` file under the working directory changes.

    :param command: the child's command line
    """

    def __init__(self, command: list[str]) -> None:
        self._command = command
        self._stop_event = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None

    def run(self) -> int:
        """Run and restart the child until a signal stops it.

        :return: the child's last exit status (0 when it ended by the signal forwarded to it)
        """
        root = os.getcwd()
        with SignalForwarding(self._on_signal):
            self._process = spawn(self._command)
            logger.info("watching %s for changes", root)
            for changes in watchfiles.watch(
                root,
                watch_filter=watchfiles.PythonFilter(),
                stop_event=self._stop_event,
                raise_interrupt=False,
            ):
                if self._stop_event.is_set():
                    break
                changed = sorted({os.path.relpath(path, root) for _, path in changes})
                logger.info("detected changes in %s; reloading", ", ".join(changed))
                self._restart()
            code = self._process.wait()
            # a worker stopped by the signal we forwarded (e.g. before it could install its
            # handler) ended as asked
            return 0 if self._stop_event.is_set() and code < 0 else code

    def _restart(self) -> None:
        assert self._process is not None
        send(self._process, signal.SIGTERM)
        try:
            self._process.wait(timeout=RELOAD_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            logger.warning("worker did not stop in %.0f s; killing it", RELOAD_STOP_TIMEOUT)
            self._process.kill()
            self._process.wait()
        if not self._stop_event.is_set():
            self._process = spawn(self._command)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop_event.set()
        if self._process is not None:
            send(self._process, signum)
