"""The ``streaq`` commands: argument parsing, and the boundary where a failure becomes one line.

Each command imports the worker named by its ``module:worker`` argument (the working directory is
importable, as with other task-queue CLIs) and talks to Redis on the worker's ``anyio_backend``
(``web`` serves with uvicorn, on asyncio). The commands live by what they do to the queue:
``run`` in :mod:`._run`, the read-only ones (``info``, ``check``, ``dlq list``, ``functions
list``) in :mod:`._reading`, those that change it in :mod:`._writing`, ``web`` here. Every command
fails the same way (:mod:`._errors`): one ``streaq: error: ...`` line on stderr and status 1,
with the traceback above it under ``--verbose``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .. import __version__
from ..utils import import_string
from ._errors import CliError, import_worker, reaching, report
from ._logs import LEVELS
from ._reading import check, dlq_list, functions_list, info
from ._run import run
from ._writing import dlq_purge, dlq_replay, enqueue, functions_prune, pause, purge, scale

__all__ = ["main"]


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


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streaq", description="Distributed task queue on Redis streams."
    )
    parser.add_argument("--version", action="version", version=f"streaq {__version__}")
    # every command takes the worker and --verbose
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("worker_path", metavar="module:worker", help="where the Worker object is")
    common.add_argument(
        "--verbose", "-v", action="store_true", help="show tracebacks of errors (run: log DEBUG)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, parents=[common])

    run = command("run", "run a worker")
    run.add_argument(
        "--workers", type=_positive_int, default=1, metavar="N", help="worker processes to run"
    )
    run.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    run.add_argument("--reload", action="store_true", help="restart on .py file changes")
    run.add_argument(
        "--concurrency", type=_positive_int, metavar="N", help="tasks running at once per process"
    )
    run.add_argument("--queue", metavar="NAME", help="serve this queue instead of the worker's")
    run.add_argument(
        "--log-level", type=str.upper, choices=LEVELS, help="log level (INFO; --verbose: DEBUG)"
    )
    run.add_argument(
        "--log-format", choices=["text", "json"], help="text lines (default) or JSON lines"
    )
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
    info = command("info", "show the state of a worker's queue")
    info.add_argument("--json", action="store_true", help="print JSON instead of tables")
    command("check", "health probe: exit 0 if a worker of the queue is alive, else 1")
    enqueue = command("enqueue", "enqueue a task and print its id")
    enqueue.add_argument("task", metavar="TASK", help="the task's registered name")
    enqueue.add_argument("--args", metavar="JSON", help="positional arguments, a JSON array")
    enqueue.add_argument("--kwargs", metavar="JSON", help="keyword arguments, a JSON object")
    enqueue.add_argument(
        "--delay", type=_non_negative, metavar="SECONDS", help="run it this much later"
    )
    purging = command("purge", "end every queued, delayed or waiting task of the queue")
    purging.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    web = command("web", "serve the monitoring web UI (streaq[web])")
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
    dlq.add_argument("--verbose", "-v", action="store_true", help="show tracebacks of errors")
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
    functions.add_argument("--verbose", "-v", action="store_true", help="show tracebacks of errors")
    for verb, what in (("pause", "stop starting"), ("resume", "start again")):
        pausing = command(verb, f"{what} the queue's tasks, or one task's")
        pausing.add_argument("--task", default=None, metavar="NAME", help="only this task")
    scaling = command("scale", "set how many tasks each running worker of the queue runs at once")
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
    try:
        return _dispatch(args)
    except Exception as exc:
        # the one boundary: whatever went wrong is one line, its traceback under --verbose
        return report(exc, verbose=args.verbose)


def _dispatch(args: argparse.Namespace) -> int:
    command = args.command
    if command == "run":
        return run(args)
    if command == "info":
        return info(args.worker_path, as_json=args.json)
    if command == "check":
        return check(args.worker_path)
    if command == "enqueue":
        return enqueue(
            args.worker_path,
            args.task,
            args_json=args.args,
            kwargs_json=args.kwargs,
            delay=args.delay,
        )
    if command == "purge":
        return purge(args.worker_path, yes=args.yes)
    if command == "web":
        return _web(
            args.worker_path,
            host=args.host,
            port=args.port,
            auth_path=args.auth,
            allowed_hosts=args.allowed_hosts,
        )
    if command in ("pause", "resume"):
        return pause(args.worker_path, args.task, paused=command == "pause")
    if command == "scale":
        return scale(args.worker_path, args.concurrency)
    worker = import_worker(args.worker_path)
    if command == "functions":
        return functions_list(worker) if args.action == "list" else functions_prune(worker)
    if args.action == "replay":
        return dlq_replay(worker, args.ids, as_json=args.json)
    if args.action == "purge":
        return dlq_purge(worker, args.ids, as_json=args.json)
    return dlq_list(worker, args.ids, args.limit, as_json=args.json)


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
        import anyio
        import uvicorn

        from ..ui import create_app
    except ImportError as exc:
        raise CliError(
            f"the web UI needs its extra ({exc.name}): pip install 'streaq[web]'"
        ) from None
    worker = import_worker(worker_path)
    auth = None
    if auth_path is not None:
        try:
            auth = import_string(auth_path)
        except ImportError as exc:
            raise CliError(f"--auth {auth_path}: {exc}") from None
        if not callable(auth):
            raise CliError(f"--auth {auth_path}: {type(auth).__name__} object is not callable")
    with reaching(worker, f"cannot read queue {worker.queue_name!r}"):
        anyio.run(worker.inspect)
    app = create_app(worker, auth=auth, allowed_hosts=allowed_hosts)
    # uvicorn runs asyncio whatever the worker's backend: the UI only produces and reads
    uvicorn.run(app, host=host, port=port, log_level="info")
    return 0
