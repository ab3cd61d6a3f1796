"""Testing code that enqueues tasks, and the tasks themselves, on the real engine but fast.

``open_harness(worker)`` runs the worker in the test's own event loop against a real Redis, on a
:class:`VirtualClock` that stands still until the test moves it::

    async with open_harness(worker) as harness:
        task = await send_invoice.enqueue(42).start(delay=timedelta(hours=1))
        harness.advance(timedelta(hours=1))
        await harness.drain()  # the task ran, in milliseconds of real time
        assert (await task.result(timeout=1)).result == ...

:meth:`Harness.drain` runs whatever is due by the clock -- delayed tasks, retries whose back-off
elapsed, cron occurrences, ``then`` links and dependents released on the way -- and returns once
the queue rests; it waits on the worker's own signals, never on a timer (see ``streaq._harness``
for the exact condition).

The clock
---------
Every moment on the queue's schedule is read through :func:`streaq.utils.now_ms`, which consults
a context variable: :func:`use_clock` (and so :func:`open_harness`) installs a clock for the
current context and every task started from it. The test's producer code and the worker's duties
therefore share one clock, on both backends, and tests running side by side keep their own; code
that installs no clock reads the wall clock as before. The scheduler and the cron duty sleep until
their next due time *or* until the virtual clock moves. Task timeouts, leases, result waits and
the TTLs of Redis keys stay in real time.

trio's ``MockClock`` is not used: it can only be given to ``trio.run`` (the test runner's choice,
not the library's), it would not move the wall-clock time that due times are written in, and
with ``autojump_threshold`` it would jump over real waits on Redis, firing socket timeouts. One
clock of streaq's own serves asyncio and trio alike.

pytest
------
``pytest_plugins = ["streaq.testing"]`` (in your root ``conftest.py``) adds one fixture, not
loaded unless you ask for it this way: ``streaq_redis_url`` (session scope), the URL of
``STREAQ_TEST_REDIS_URL`` when set, else of a throwaway ``redis-server`` started on a free port
for the session (:func:`redis_server`); tests using it are skipped when neither is available.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ._clock import VirtualClock, use_clock
from ._harness import DrainSummary, Harness, open_harness

__all__ = [
    "DrainSummary",
    "Harness",
    "VirtualClock",
    "open_harness",
    "redis_server",
    "use_clock",
]

#: the environment variable naming the Redis of the ``streaq_redis_url`` fixture
REDIS_URL_VARIABLE = "STREAQ_TEST_REDIS_URL"

_PORT_ATTEMPTS = 3


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _start(executable: str, directory: str, timeout: float) -> tuple[subprocess.Popen[bytes], int]:
    for _ in range(_PORT_ATTEMPTS):
        port = _free_port()
        args = [executable, "--port", str(port), "--bind", "127.0.0.1", "--dir", directory]
        args += ["--save", "", "--appendonly", "no", "--logfile", os.path.join(directory, "log")]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        # nothing announces readiness but the answer itself: ask until it comes
        while process.poll() is None and time.monotonic() < deadline:
            if _answers_ping(port):
                return process, port
            time.sleep(0.01)
        _stop(process)
        # exited: most likely the port was taken meanwhile, try another
    raise RuntimeError(f"redis-server did not start; see its log in {directory}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def redis_server(executable: str = "redis-server", timeout: float = 10.0) -> Iterator[str]:
    """Start a throwaway ``redis-server`` on a free port for the block, then stop it.

    It keeps nothing on disk (no RDB, no AOF) and listens on 127.0.0.1 only.

    :param executable: the server's command, looked up on ``PATH``
    :param timeout: how long to wait for it to answer ``PING`` (seconds)
    :return: its URL, ``redis://127.0.0.1:<port>``
    :raises FileNotFoundError: when ``executable`` is not found
    :raises RuntimeError: when it does not start
    """
    path = shutil.which(executable)
    if path is None:
        raise FileNotFoundError(f"{executable!r} is not on PATH: install Redis to start one")
    with tempfile.TemporaryDirectory(prefix="streaq-redis-") as directory:
        process, port = _start(path, directory, timeout)
        try:
            yield f"redis://127.0.0.1:{port}"
        finally:
            _stop(process)


try:
    import pytest
except ImportError:  # the fixtures need pytest; the rest of the module does not
    pass
else:

    @pytest.fixture(scope="session")
    def streaq_redis_url() -> Iterator[str]:
        """The URL of a Redis for tests: ``STREAQ_TEST_REDIS_URL``, else a throwaway
        ``redis-server`` for the session; skips the test when neither is available."""
        url = os.environ.get(REDIS_URL_VARIABLE)
        if url:
            yield url
            return
        if shutil.which("redis-server") is None:
            pytest.skip(f"no redis-server on PATH and {REDIS_URL_VARIABLE} is not set")
        with redis_server() as url:
            yield url
