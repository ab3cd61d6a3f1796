"""The ``streaq`` command line: ``streaq run``, ``info``, ``web`` and ``streaq --version``.

Process model of ``streaq run module:worker``:

- ``--workers 1`` (the default): this process imports the worker and runs it.
- ``--workers N``: this process is a *supervisor*. It never imports the worker; it starts N
  children (``python -m streaq run module:worker --workers 1 …``), forwards SIGINT/SIGTERM to
  them, restarts a child that crashes (capped exponential backoff) and gives up when a child
  keeps failing right after it starts (a bad import path, say).
- ``--reload``: this process is a *reloader*. It runs the same command without ``--reload`` as
  a child and restarts it whenever a ``.py`` file under the working directory changes.

``streaq run --metrics-port P`` serves Prometheus metrics (``streaq[prometheus]``) from each worker
process; with ``--workers N`` child *i* (1-based) listens on ``P + i - 1``, because Prometheus
scrapes each process separately and N processes cannot share one port.

``streaq web module:worker [--host H] [--port P]`` serves the monitoring UI (``streaq.ui``, extra
``streaq[web]``) with uvicorn; that process is a producer and never runs tasks.

``streaq info module:worker [--json]`` prints a snapshot of the worker's queue (see
``streaq._inspect``): it reads Redis only and never runs or prepares the queue.

Children run in their own process group, so a Ctrl-C at the terminal reaches only the parent,
which forwards it once: a worker must not see the same interrupt twice (a second signal may
mean "stop now" to it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import logging.config
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import FrameType
from typing import Any

from . import __version__
from .utils import default_log_config, import_string

__all__ = ["main"]

logger = logging.getLogger("streaq.cli")

#: a child exiting with an error this soon after starting counts as failing at start
STARTUP_WINDOW = 2.0
#: give up after this many consecutive failures at start of one child
MAX_STARTUP_FAILURES = 3
#: a child that ran this long before crashing starts its backoff afresh
STABLE_AFTER = 60.0
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
#: how long the reloader waits for a stopped child before killing it
RELOAD_STOP_TIMEOUT = 30.0
_POLL_INTERVAL = 0.05
_FORWARDED = (signal.SIGINT, signal.SIGTERM)


def _error(message: str) -> int:
    print(f"streaq: error: {message}", file=sys.stderr)
    return 1


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port: {value}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streaq", description="Distributed task queue on Redis streams."
    )
    parser.add_argument("--version", action="version", version=f"streaq {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run a worker")
    run.add_argument("worker_path", metavar="module:worker", help="where the Worker object is")
    run.add_argument(
        "--workers", type=_positive_int, default=1, metavar="N", help="worker processes to run"
    )
    run.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    run.add_argument("--reload", action="store_true", help="restart on .py file changes")
    run.add_argument("--verbose", "-v", action="store_true", help="log at DEBUG level")
    run.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics on this port (N workers: PORT..PORT+N-1)",
    )
    info = commands.add_parser("info", help="show the state of a worker's queue")
    info.add_argument("worker_path", metavar="module:worker", help="where the Worker object is")
    info.add_argument("--json", action="store_true", help="print JSON instead of tables")
    web = commands.add_parser("web", help="serve the monitoring web UI (streaq[web])")
    web.add_argument("worker_path", metavar="module:worker", help="where the Worker object is")
    web.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    web.add_argument("--port", type=_port, default=8000, help="port to listen on (8000)")
    dlq = commands.add_parser("dlq", help="list, replay or purge the queue's dead letters")
    dlq.add_argument("action", choices=["list", "replay", "purge"], help="what to do")
    dlq.add_argument("worker_path", metavar="module:worker", help="where the Worker object is")
    dlq.add_argument(
        "--id", dest="ids", action="append", metavar="ID", help="only this task (repeatable)"
    )
    dlq.add_argument("--limit", type=_positive_int, default=None, help="list at most N")
    dlq.add_argument("--json", action="store_true", help="print JSON instead of text")
    functions = commands.add_parser(
        "functions", help="list or prune the server-side libraries of streaq versions"
    )
    functions.add_argument("action", choices=["list", "prune"], help="what to do")
    functions.add_argument(
        "worker_path", metavar="module:worker", help="where the Worker object is"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streaq`` console script and of ``python -m streaq``.

    :param argv: the arguments (without the program name); ``sys.argv[1:]`` by default
    :return: the process exit status
    """
    parser = _build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "web":
        return _web(args.worker_path, host=args.host, port=args.port)
    if args.command == "info":
        return _info(args.worker_path, as_json=args.json)
    if args.command == "dlq":
        return _dlq(args.action, args.worker_path, args.ids, args.limit, as_json=args.json)
    if args.command == "functions":
        return _functions(args.action, args.worker_path)
    if args.reload:
        _configure_cli_logging(args.verbose)
        return _Reloader(_child_command(args, workers=args.workers, port=args.metrics_port)).run()
    if args.workers > 1:
        _configure_cli_logging(args.verbose)
        port = args.metrics_port
        commands = [
            _child_command(args, workers=1, port=None if port is None else port + n)
            for n in range(args.workers)
        ]
        return _Supervisor(commands).run()
    return _run_worker(
        args.worker_path, burst=args.burst, verbose=args.verbose, metrics_port=args.metrics_port
    )


def _import_worker(worker_path: str) -> Any:
    """The object at ``worker_path``; ``str`` (the message) when it is missing or no worker."""
    # like other task-queue CLIs: modules next to where the command runs are importable
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        worker: Any = import_string(worker_path)
    except ImportError as exc:
        return str(exc)
    if not callable(getattr(worker, "run_sync", None)):
        return f"{worker_path!r} is not a streaq Worker (it has no run_sync())"
    return worker


def _info(worker_path: str, *, as_json: bool) -> int:
    """Print a snapshot of the queue of the worker at ``worker_path``."""
    import anyio
    from redis.exceptions import RedisError

    from ._inspect import inspect_worker, render_snapshot

    worker = _import_worker(worker_path)
    if isinstance(worker, str):
        return _error(worker)
    try:
        found = anyio.run(
            inspect_worker,
            worker,
            backend=worker.anyio_backend,
            backend_options=worker.anyio_kwargs,
        )
    except (RedisError, OSError) as exc:
        return _error(f"cannot read queue {worker.queue_name!r}: {exc}")
    if as_json:
        print(json.dumps(found.to_json(), indent=2))
    else:
        print(render_snapshot(found, worker.tz))
    return 0


def _web(worker_path: str, *, host: str, port: int) -> int:
    """Serve the monitoring UI of the worker at ``worker_path`` with uvicorn."""
    try:
        import uvicorn

        from .ui import create_app
    except ImportError as exc:
        return _error(f"the web UI needs its extra ({exc.name}): pip install 'streaq[web]'")
    worker = _import_worker(worker_path)
    if isinstance(worker, str):
        return _error(worker)
    # uvicorn runs asyncio whatever the worker's backend: the UI only produces and reads
    uvicorn.run(create_app(worker), host=host, port=port, log_level="info")
    return 0


def _dlq(
    action: str, worker_path: str, ids: list[str] | None, limit: int | None, *, as_json: bool
) -> int:
    """``streaq dlq list|replay|purge module:worker [--id ID ...] [--limit N] [--json]``.

    ``list`` prints the dead letters (oldest first), ``replay`` queues them again as fresh tasks,
    ``purge`` deletes them; ``--id`` restricts each action to those task ids (without it,
    ``replay`` and ``purge`` act on every dead letter). See ``streaq._dlq``.
    """
    import anyio
    from redis.exceptions import RedisError

    worker = _import_worker(worker_path)
    if isinstance(worker, str):
        return _error(worker)

    async def act() -> Any:
        async with worker:
            if action == "replay":
                return await worker.replay_dead_letters(ids)
            if action == "purge":
                return await worker.purge_dead_letters(ids)
            letters = await worker.dead_letters(None if ids else limit)
            wanted = set(ids or [])
            found = [d for d in letters if not wanted or d.task_id in wanted]
            return found if limit is None else found[:limit]

    try:
        result = anyio.run(act, backend=worker.anyio_backend, backend_options=worker.anyio_kwargs)
    except (RedisError, OSError) as exc:
        return _error(f"cannot reach queue {worker.queue_name!r}: {exc}")
    if action == "replay":
        print(json.dumps({"replayed": result}) if as_json else f"replayed {len(result)} tasks")
        for task_id in [] if as_json else result:
            print(task_id)
    elif action == "purge":
        print(json.dumps({"purged": result}) if as_json else f"purged {result} dead letters")
    elif as_json:
        print(json.dumps([d.to_json() for d in result], indent=2))
    else:
        print(f"{len(result)} dead letters")
        for d in result:
            when = d.time.astimezone(worker.tz).strftime("%Y-%m-%d %H:%M:%S")
            print(f"{when}  {d.task_id}  {d.fn_name}  tries={d.tries}  {d.reason}")
    return 0


def _functions(action: str, worker_path: str) -> int:
    """``streaq functions list|prune module:worker``.

    Every streaq version loads its own library of server functions (its name carries a hash of its
    source) and leaves it loaded. ``list`` shows the libraries on each server (``*`` marks this
    version's); ``prune`` deletes all but this version's. A worker or producer of an older
    version still running loads its library again on its next call, when its ACL user may run
    ``FUNCTION LOAD``: prune once every process runs the new version.
    """
    import anyio
    from redis.exceptions import RedisError

    from ._library import LIBRARY, installed_libraries, prune_libraries

    worker = _import_worker(worker_path)
    if isinstance(worker, str):
        return _error(worker)

    async def act() -> dict[str, list[str]]:
        async with worker._open_redis() as redis:
            if action == "prune":
                return await prune_libraries(redis)
            return await installed_libraries(redis)

    try:
        found = anyio.run(act, backend=worker.anyio_backend, backend_options=worker.anyio_kwargs)
    except (RedisError, OSError) as exc:
        return _error(f"cannot reach the Redis of queue {worker.queue_name!r}: {exc}")
    for server, names in found.items():
        if action == "prune":
            print(f"{server}: deleted {len(names)} old librar{'y' if len(names) == 1 else 'ies'}")
        else:
            print(f"{server}:")
        for name in names:
            print(f"  {'*' if name == LIBRARY.name else ' '} {name}")
    return 0


def _run_worker(
    worker_path: str, *, burst: bool, verbose: bool, metrics_port: int | None = None
) -> int:
    """Import the worker and run it in this process."""
    worker = _import_worker(worker_path)
    if isinstance(worker, str):
        return _error(worker)
    logging.config.dictConfig(default_log_config(worker.tz, verbose))
    if burst:
        worker.burst = True
    if metrics_port is not None:
        try:
            from .contrib.prometheus import serve_metrics
        except ImportError:
            return _error(
                "--metrics-port needs prometheus_client: pip install 'streaq[prometheus]'"
            )
        try:
            serve_metrics(worker, metrics_port)
        except OSError as exc:
            return _error(f"cannot serve metrics on port {metrics_port}: {exc}")
    from .worker import Worker

    # the progress reader needs a real queue (the CLI tests run stand-ins without one)
    progress = _BurstProgress(worker, sys.stderr) if burst and isinstance(worker, Worker) else None
    if progress is not None:
        progress.start()
    from redis.exceptions import RedisError

    try:
        worker.run_sync()
    except KeyboardInterrupt:
        # the worker handles signals itself; this only happens when it was told not to
        return 130
    except (RedisError, OSError) as exc:
        # a worker only gives up on Redis at start (bad URL, password, db, version, replica):
        # the message says what to fix, a traceback would bury it
        return _error(f"worker {worker_path} cannot run: {type(exc).__name__}: {exc}")
    finally:
        if progress is not None:
            progress.stop()
    return 0


class _BurstProgress:
    """Progress of ``streaq run --burst``: a bar on a terminal, else a log line on each change.

    A daemon thread reads the queue (its own short-lived event loop and connection, as
    ``streaq info`` does) and the worker's counters; the worker's loop is never touched.
    "Done" counts tasks this process finished (succeeded, failed or aborted); "left" is what
    the streams still hold, queued or running anywhere.
    """

    BAR_WIDTH = 30
    TTY_INTERVAL = 0.2
    LOG_INTERVAL = 5.0

    def __init__(self, worker: Any, stream: Any) -> None:
        self._worker = worker
        self._stream = stream
        self._tty = bool(getattr(stream, "isatty", lambda: False)())
        self._interval = self.TTY_INTERVAL if self._tty else self.LOG_INTERVAL
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="streaq-progress", daemon=True)
        self._last = ""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        if self._tty and self._last:
            self._stream.write("\n")
            self._stream.flush()

    def _loop(self) -> None:
        while not self._stopped.wait(self._interval):
            self._report()

    def _report(self) -> None:
        import anyio

        from ._inspect import inspect_worker

        try:
            found = anyio.run(inspect_worker, self._worker)
        except Exception as exc:
            logger.debug("cannot read the queue for progress: %s", exc)
            return
        counters = self._worker.counters
        done = counters["completed"] + counters["failed"] + counters["aborted"]
        line = render_progress(
            done, found.queued + found.prefetched + found.running, counters["failed"]
        )
        if self._tty:
            self._stream.write("\r" + line)
            self._stream.flush()
        elif line != self._last:
            logger.info("burst progress: %s", line)
        self._last = line


def render_progress(
    done: int, left: int, failed: int, width: int = _BurstProgress.BAR_WIDTH
) -> str:
    """One line of burst progress, e.g. ``[#######.......] 7/14 done, 7 left, 1 failed``.

    :param done: tasks finished by this process
    :param left: tasks still in the streams
    :param failed: how many of those done failed
    :param width: characters of the bar
    """
    total = done + left
    filled = width if total == 0 else done * width // total
    bar = "#" * filled + "." * (width - filled)
    return f"[{bar}] {done}/{total} done, {left} left, {failed} unsuccessful"


def _child_command(args: argparse.Namespace, *, workers: int, port: int | None) -> list[str]:
    command = [sys.executable, "-m", "streaq", "run", args.worker_path, "--workers", str(workers)]
    if port is not None:
        command += ["--metrics-port", str(port)]
    if args.burst:
        command.append("--burst")
    if args.verbose:
        command.append("--verbose")
    return command


def _configure_cli_logging(verbose: bool) -> None:
    # the supervisor never imports the worker, so it logs in the host's local time zone
    local_tz = datetime.now().astimezone().tzinfo
    assert local_tz is not None
    logging.config.dictConfig(default_log_config(local_tz, verbose))


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


def _spawn(command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, process_group=0)


def _send(process: subprocess.Popen[bytes], signum: int) -> None:
    if process.poll() is None:
        # it may exit between poll() and kill()
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)


class _SignalForwarding:
    """Install SIGINT/SIGTERM handlers for the duration of a ``with`` block."""

    def __init__(self, handler: Any) -> None:
        self._handler = handler
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> None:
        for signum in _FORWARDED:
            self._saved[signum] = signal.signal(signum, self._handler)

    def __exit__(self, *exc_info: object) -> None:
        for signum, previous in self._saved.items():
            signal.signal(signum, previous)


@dataclass
class _Slot:
    """One of the supervisor's N worker processes, across its restarts."""

    index: int
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    startup_failures: int = 0
    restart_at: float | None = None
    final_code: int | None = None


class _Supervisor:
    """Run worker commands (one per slot) until they exit or a signal stops them."""

    def __init__(self, commands: list[list[str]]) -> None:
        self._slots = [_Slot(index, command) for index, command in enumerate(commands, start=1)]
        self._stopping = False
        self._gave_up = False

    def run(self) -> int:
        with _SignalForwarding(self._on_signal):
            for slot in self._slots:
                self._start(slot)
            logger.info("supervising %d worker processes", len(self._slots))
            while not all(slot.final_code is not None for slot in self._slots):
                now = time.monotonic()
                for slot in self._slots:
                    if slot.process is not None and (code := slot.process.poll()) is not None:
                        self._exited(slot, code, now)
                    if slot.restart_at is not None and now >= slot.restart_at:
                        self._start(slot)
                time.sleep(_POLL_INTERVAL)
        if self._gave_up or any(slot.final_code != 0 for slot in self._slots):
            return 1
        return 0

    def _start(self, slot: _Slot) -> None:
        slot.restart_at = None
        slot.started_at = time.monotonic()
        slot.process = _spawn(slot.command)
        logger.debug("worker process %d started (pid %d)", slot.index, slot.process.pid)

    def _exited(self, slot: _Slot, code: int, now: float) -> None:
        slot.process = None
        lived = now - slot.started_at
        if code == 0 or self._stopping:
            slot.final_code = code
            return
        slot.startup_failures = slot.startup_failures + 1 if lived < STARTUP_WINDOW else 0
        slot.failures = 1 if lived >= STABLE_AFTER else slot.failures + 1
        if slot.startup_failures >= MAX_STARTUP_FAILURES:
            slot.final_code = code
            self._give_up(
                f"worker process {slot.index} exited with {_describe_exit(code)} right after "
                f"starting, {slot.startup_failures} times in a row (its error is above); giving up"
            )
            return
        delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (slot.failures - 1))
        logger.warning(
            "worker process %d exited with %s after %.1f s; restarting it in %.1f s",
            slot.index,
            _describe_exit(code),
            lived,
            delay,
        )
        slot.restart_at = now + delay

    def _give_up(self, reason: str) -> None:
        logger.error("%s", reason)
        self._gave_up = True
        self._stop(signal.SIGTERM)

    def _stop(self, signum: int) -> None:
        self._stopping = True
        for slot in self._slots:
            if slot.process is not None:
                _send(slot.process, signum)
            elif slot.final_code is None:
                # waiting for a restart: there is nothing to stop, the slot is simply done
                slot.restart_at = None
                slot.final_code = 0 if slot.failures == 0 else 1

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        logger.info("received %s, stopping worker processes", signal.Signals(signum).name)
        self._stop(signum)


class _Reloader:
    """Run a command and restart it whenever a ``.py`` file under the working directory changes."""

    def __init__(self, command: list[str]) -> None:
        self._command = command
        self._stop_event = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None

    def run(self) -> int:
        try:
            import watchfiles
        except ImportError:
            return _error("--reload needs watchfiles: pip install 'streaq[reload]'")
        root = os.getcwd()
        with _SignalForwarding(self._on_signal):
            self._process = _spawn(self._command)
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
        _send(self._process, signal.SIGTERM)
        try:
            self._process.wait(timeout=RELOAD_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            logger.warning("worker did not stop in %.0f s; killing it", RELOAD_STOP_TIMEOUT)
            self._process.kill()
            self._process.wait()
        if not self._stop_event.is_set():
            self._process = _spawn(self._command)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop_event.set()
        if self._process is not None:
            _send(self._process, signum)
