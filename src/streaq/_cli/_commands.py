"""The ``streaq`` commands: argument parsing, then ``run``, ``info``, ``web``, ``dlq`` and
``functions``.

Each command imports the worker named by its ``module:worker`` argument (the working directory is
importable, as with other task-queue CLIs), talks to Redis on the worker's ``anyio_backend``
(``web`` serves with uvicorn, on asyncio) and returns the process's exit status. Errors a user
can fix (a wrong import path, Redis unreachable or refusing, a missing extra) are one
``streaq: error: ...`` line on stderr and status 1, never a traceback. ``run`` with ``--reload``
or ``--workers N`` (N > 1) does not import the worker at all: it builds the children's command
lines and hands them to :mod:`._reloader` or :mod:`._supervisor`.
"""

from __future__ import annotations

import argparse
import json
import logging.config
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import anyio
from redis.exceptions import RedisError

from .. import __version__
from .._inspect import render_snapshot
from .._library import LIBRARY, installed_libraries, prune_libraries
from ..utils import default_log_config, import_string
from ..worker import Worker

__all__ = ["main"]


def _error(message: str) -> int:
    print(f"streaq: error: {message}", file=sys.stderr)
    return 1


def _where(worker: Any) -> str:
    """Where the worker connects, for an error message: the URL with its password as ``***``."""
    pool = getattr(worker, "redis_pool", None)
    describe = getattr(pool, "describe", None)
    return f" (connecting to {describe()})" if callable(describe) else ""


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
    run.add_argument(
        "--metrics-addr",
        default="127.0.0.1",
        metavar="ADDR",
        help="address the metrics endpoint listens on (127.0.0.1; 0.0.0.0 for every interface)",
    )
    info = commands.add_parser("info", help="show the state of a worker's queue")
    info.add_argument("worker_path", metavar="module:worker", help="where the Worker object is")
    info.add_argument("--json", action="store_true", help="print JSON instead of tables")
    web = commands.add_parser("web", help="serve the monitoring web UI (streaq[web])")
    web.add_argument("worker_path", metavar="module:worker", help="where the Worker object is")
    web.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    web.add_argument("--port", type=_port, default=8000, help="port to listen on (8000)")
    web.add_argument(
        "--auth",
        metavar="module:callable",
        help="a FastAPI dependency run before every page and action; it raises HTTPException "
        "to refuse the request",
    )
    web.add_argument(
        "--allowed-host",
        dest="allowed_hosts",
        action="append",
        metavar="NAME",
        help="a Host name to answer to, e.g. ui.example.com or *.example.com (repeatable); "
        "default: localhost, 127.0.0.1 and [::1] for requests reaching a loopback address",
    )
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
    for verb, what in (("pause", "stop starting"), ("resume", "start again")):
        pausing = commands.add_parser(verb, help=f"{what} the queue's tasks, or one task's")
        pausing.add_argument(
            "worker_path", metavar="module:worker", help="where the Worker object is"
        )
        pausing.add_argument("--task", default=None, metavar="NAME", help="only this task")
    scaling = commands.add_parser(
        "scale", help="set how many tasks each running worker of the queue runs at once"
    )
    scaling.add_argument("worker_path", metavar="module:worker", help="where the Worker object is")
    scaling.add_argument("concurrency", type=_positive_int, help="tasks at once, per worker")
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
        return _web(
            args.worker_path,
            host=args.host,
            port=args.port,
            auth_path=args.auth,
            allowed_hosts=args.allowed_hosts,
        )
    if args.command == "info":
        return _info(args.worker_path, as_json=args.json)
    if args.command == "dlq":
        return _dlq(args.action, args.worker_path, args.ids, args.limit, as_json=args.json)
    if args.command == "functions":
        return _functions(args.action, args.worker_path)
    if args.command in ("pause", "resume"):
        return _pause(args.worker_path, args.task, pause=args.command == "pause")
    if args.command == "scale":
        return _scale(args.worker_path, args.concurrency)
    if args.reload:
        _configure_cli_logging(args.verbose)
        try:
            from ._reloader import Reloader
        except ImportError:
            return _error("--reload needs watchfiles: pip install 'streaq[reload]'")
        return Reloader(_child_command(args, workers=args.workers, port=args.metrics_port)).run()
    if args.workers > 1:
        from ._supervisor import Supervisor

        _configure_cli_logging(args.verbose)
        port = args.metrics_port
        commands = [
            _child_command(args, workers=1, port=None if port is None else port + n)
            for n in range(args.workers)
        ]
        return Supervisor(commands).run()
    return _run_worker(
        args.worker_path,
        burst=args.burst,
        verbose=args.verbose,
        metrics_port=args.metrics_port,
        metrics_addr=args.metrics_addr,
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
    worker = _import_worker(worker_path)
    if isinstance(worker, str):
        return _error(worker)
    try:
        found = anyio.run(
            worker.inspect, backend=worker.anyio_backend, backend_options=worker.anyio_kwargs
        )
    except (RedisError, OSError) as exc:
        return _error(f"cannot read queue {worker.queue_name!r}: {exc}{_where(worker)}")
    if as_json:
        print(json.dumps(found.to_json(), indent=2))
    else:
        print(render_snapshot(found, worker.tz))
    return 0


def _web(
    worker_path: str,
    *,
    host: str,
    port: int,
    auth_path: str | None = None,
    allowed_hosts: list[str] | None = None,
) -> int:
    """Serve the monitoring UI of the worker at ``worker_path`` with uvicorn.

    ``auth_path`` names a FastAPI dependency guarding every page and action (imported like the
    worker); ``allowed_hosts`` the ``Host`` names to answer to (see :func:`streaq.ui.create_app`).
    Redis is read once before serving, so that a wrong URL or password is one line, not a
    traceback from the application's start-up.
    """
    try:
        import uvicorn

        from ..ui import create_app
    except ImportError as exc:
        return _error(f"the web UI needs its extra ({exc.name}): pip install 'streaq[web]'")
    worker = _import_worker(worker_path)
    if isinstance(worker, str):
        return _error(worker)
    auth = None
    if auth_path is not None:
        try:
            auth = import_string(auth_path)
        except ImportError as exc:
            return _error(f"--auth {auth_path}: {exc}")
        if not callable(auth):
            return _error(f"--auth {auth_path}: {type(auth).__name__} object is not callable")
    try:
        anyio.run(worker.inspect)
    except (RedisError, OSError) as exc:
        name = worker.queue_name
        return _error(f"cannot read queue {name!r}: {type(exc).__name__}: {exc}{_where(worker)}")
    app = create_app(worker, auth=auth, allowed_hosts=allowed_hosts)
    # uvicorn runs asyncio whatever the worker's backend: the UI only produces and reads
    uvicorn.run(app, host=host, port=port, log_level="info")
    return 0


def _dlq(
    action: str, worker_path: str, ids: list[str] | None, limit: int | None, *, as_json: bool
) -> int:
    """``streaq dlq list|replay|purge module:worker [--id ID ...] [--limit N] [--json]``.

    ``list`` prints the dead letters (oldest first), ``replay`` queues them again as fresh tasks,
    ``purge`` deletes them; ``--id`` restricts each action to those task ids (without it,
    ``replay`` and ``purge`` act on every dead letter). See ``streaq._dlq``.
    """
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
        return _error(f"cannot reach queue {worker.queue_name!r}: {exc}{_where(worker)}")
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
        name = worker.queue_name
        return _error(f"cannot reach the Redis of queue {name!r}: {exc}{_where(worker)}")
    for server, names in found.items():
        if action == "prune":
            print(f"{server}: deleted {len(names)} old librar{'y' if len(names) == 1 else 'ies'}")
        else:
            print(f"{server}:")
        for name in names:
            print(f"  {'*' if name == LIBRARY.name else ' '} {name}")
    return 0


def _pause(worker_path: str, task: str | None, *, pause: bool) -> int:
    """``streaq pause|resume module:worker [--task NAME]``: on every worker of the queue.

    Paused, tasks start no more (running ones go on) and new ones wait; resumed, they start as
    their limits allow (see the flow control documentation).
    """
    worker = _import_worker(worker_path)
    if isinstance(worker, str):
        return _error(worker)
    if task is not None and task not in worker.registry:
        known = ", ".join(sorted(worker.registry)) or "none"
        return _error(f"no task named {task!r} in {worker_path} (its tasks: {known})")

    async def act() -> bool:
        async with worker:
            return bool(await (worker.pause(task) if pause else worker.resume(task)))

    try:
        changed = anyio.run(act, backend=worker.anyio_backend, backend_options=worker.anyio_kwargs)
    except (RedisError, OSError) as exc:
        name = worker.queue_name
        return _error(f"cannot reach the Redis of queue {name!r}: {exc}{_where(worker)}")
    target = f"task {task}" if task else f"queue {worker.queue_name}"
    state = "paused" if pause else "resumed"
    print(f"{target} {state}" if changed else f"{target} was {state} already")
    return 0


def _scale(worker_path: str, concurrency: int) -> int:
    """``streaq scale module:worker N``: every running worker of the queue runs N tasks at once
    (``Worker.scale``); workers started later keep their own concurrency."""
    worker = _import_worker(worker_path)
    if isinstance(worker, str):
        return _error(worker)

    async def act() -> None:
        async with worker:
            await worker.scale(concurrency)

    try:
        anyio.run(act, backend=worker.anyio_backend, backend_options=worker.anyio_kwargs)
    except (RedisError, OSError) as exc:
        name = worker.queue_name
        return _error(f"cannot reach the Redis of queue {name!r}: {exc}{_where(worker)}")
    print(f"the workers of queue {worker.queue_name} run {concurrency} task(s) at once now")
    return 0


def _run_worker(
    worker_path: str,
    *,
    burst: bool,
    verbose: bool,
    metrics_port: int | None = None,
    metrics_addr: str = "127.0.0.1",
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
            from ..contrib.prometheus import serve_metrics
        except ImportError:
            return _error(
                "--metrics-port needs prometheus_client: pip install 'streaq[prometheus]'"
            )
        try:
            serve_metrics(worker, metrics_port, metrics_addr)
        except OSError as exc:
            return _error(f"cannot serve metrics on port {metrics_port} of {metrics_addr}: {exc}")
    from ._progress import BurstProgress

    # the progress reader needs a real queue (the CLI tests run stand-ins without one)
    progress = BurstProgress(worker, sys.stderr) if burst and isinstance(worker, Worker) else None
    if progress is not None:
        progress.start()
    try:
        worker.run_sync()
    except KeyboardInterrupt:
        # the worker handles signals itself; this only happens when it was told not to
        return 130
    except (RedisError, OSError) as exc:
        # a worker only gives up on Redis at start (bad URL, password, db, version, replica):
        # the message says what to fix, a traceback would bury it
        reason = f"{type(exc).__name__}: {exc}{_where(worker)}"
        return _error(f"worker {worker_path} cannot run: {reason}")
    finally:
        if progress is not None:
            progress.stop()
    return 0


def _child_command(args: argparse.Namespace, *, workers: int, port: int | None) -> list[str]:
    command = [sys.executable, "-m", "streaq", "run", args.worker_path, "--workers", str(workers)]
    if port is not None:
        command += ["--metrics-port", str(port), "--metrics-addr", args.metrics_addr]
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
