"""``streaq run``: run the worker in this process, or hand over to the supervisor or reloader.

Options that override the worker's own settings for this run: ``--concurrency N`` (its
``prefetch`` and ``sync_concurrency`` follow when they were left at their default, which is the
concurrency), ``--queue NAME`` (the queue's keys follow), and the log output: ``--log-level``
(``--verbose`` is ``DEBUG``) and ``--log-format json`` (see :mod:`._logs`). With ``--workers N``
or ``--reload`` every option reaches the children on their command lines.
"""

from __future__ import annotations

import argparse
import logging.config
import sys
from datetime import datetime
from typing import Any

from .._keys import QueueKeys
from ..worker import Worker
from ._errors import CliError, import_worker, reaching
from ._logs import log_config

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    """The ``run`` command (``args`` as parsed by :mod:`._commands`); the exit status."""
    level = log_level(args)
    if args.reload:
        _configure_host_logging(args, level)
        try:
            from ._reloader import Reloader
        except ImportError:
            raise CliError("--reload needs watchfiles: pip install 'streaq[reload]'") from None
        return Reloader(_child_command(args, workers=args.workers, port=args.metrics_port)).run()
    if args.workers > 1:
        from ._supervisor import Supervisor

        _configure_host_logging(args, level)
        port = args.metrics_port
        commands = [
            _child_command(args, workers=1, port=None if port is None else port + n)
            for n in range(args.workers)
        ]
        return Supervisor(commands).run()
    return _run_here(args, level)


def log_level(args: argparse.Namespace) -> str:
    """The level ``--log-level`` or ``--verbose`` (DEBUG) asks for; INFO by default."""
    if args.log_level is not None:
        return str(args.log_level)
    return "DEBUG" if args.verbose else "INFO"


def _override(worker: Any, args: argparse.Namespace) -> None:
    """Apply ``--burst``, ``--concurrency`` and ``--queue`` to the worker."""
    if args.burst:
        worker.burst = True
    if args.concurrency is not None:
        old = worker.concurrency
        # prefetch and sync threads default to the concurrency: keep following it
        if worker.prefetch == old:
            worker.prefetch = args.concurrency
        if worker.sync_concurrency == old:
            worker.sync_concurrency = args.concurrency
        worker.concurrency = args.concurrency
    if args.queue is not None:
        worker.queue_name = args.queue
        worker.keys = QueueKeys(args.queue)


def _run_here(args: argparse.Namespace, level: str) -> int:
    """Import the worker and run it in this process."""
    worker = import_worker(args.worker_path)
    _override(worker, args)
    # the progress reader needs a real queue (the CLI tests run stand-ins without one)
    progress = None
    if args.burst and isinstance(worker, Worker):
        from ._progress import BurstProgress

        progress = BurstProgress(worker, sys.stderr)
        if progress.terminal is not None:
            # everything written to stderr from now on keeps clear of the bar
            sys.stderr = progress.terminal
    logging.config.dictConfig(log_config(worker.tz, level, json_lines=args.log_format == "json"))
    if args.metrics_port is not None:
        try:
            from ..contrib.prometheus import serve_metrics
        except ImportError:
            raise CliError(
                "--metrics-port needs prometheus_client: pip install 'streaq[prometheus]'"
            ) from None
        try:
            serve_metrics(worker, args.metrics_port, args.metrics_addr)
        except OSError as exc:
            raise CliError(
                f"cannot serve metrics on port {args.metrics_port} of {args.metrics_addr}: {exc}"
            ) from exc
    if progress is not None:
        progress.start()
    try:
        # a worker only gives up on Redis at start (bad URL, password, db, version, replica):
        # the message says what to fix, a traceback would bury it
        with reaching(worker, f"worker {args.worker_path} cannot run"):
            worker.run_sync()
    except KeyboardInterrupt:
        # the worker handles signals itself; this only happens when it was told not to
        return 130
    finally:
        if progress is not None:
            progress.stop()
    return 0


def _child_command(args: argparse.Namespace, *, workers: int, port: int | None) -> list[str]:
    command = [sys.executable, "-m", "streaq", "run", args.worker_path, "--workers", str(workers)]
    if port is not None:
        command += ["--metrics-port", str(port), "--metrics-addr", args.metrics_addr]
    for flag, value in (
        ("--concurrency", args.concurrency),
        ("--queue", args.queue),
        ("--log-level", args.log_level),
        ("--log-format", args.log_format),
    ):
        if value is not None:
            command += [flag, str(value)]
    if args.burst:
        command.append("--burst")
    if args.verbose:
        command.append("--verbose")
    return command


def _configure_host_logging(args: argparse.Namespace, level: str) -> None:
    # the supervisor and the reloader never import the worker: they log in the host's time zone
    local_tz = datetime.now().astimezone().tzinfo
    assert local_tz is not None
    json_lines = args.log_format == "json"
    logging.config.dictConfig(log_config(local_tz, level, json_lines=json_lines))
