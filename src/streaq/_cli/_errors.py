"""How the commands fail: one ``streaq: error: ...`` line on stderr and exit status 1.

A command raises :class:`CliError` for what the user can fix (a wrong import path, an unknown
task, Redis unreachable or refusing); :func:`reaching` turns a Redis or socket failure into one,
naming what the command was doing and where it connected (password hidden). :func:`report`, at
the boundary in :func:`streaq._cli._commands.main`, prints the line -- for any other exception
too, since a bug in the worker's module is fixed faster from its message than from 50 lines of
asyncio frames -- and with ``--verbose`` the traceback above it.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from redis.exceptions import RedisError

from ..utils import import_string

__all__ = ["CliError", "import_worker", "reaching", "report"]

#: the exit status of every failed command (2 is argparse's, for usage errors)
FAILED = 1


class CliError(Exception):
    """A failure the user can fix, shown as its message alone."""


def _where(worker: Any) -> str:
    """Where the worker connects, for an error message: the URL with its password as ``***``."""
    pool = getattr(worker, "redis_pool", None)
    describe = getattr(pool, "describe", None)
    return f" (connecting to {describe()})" if callable(describe) else ""


def describe(exc: BaseException) -> str:
    """One line for an exception: its message, after its type unless it is a :class:`CliError`."""
    if isinstance(exc, CliError):
        return str(exc)
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


@contextmanager
def reaching(worker: Any, doing: str) -> Iterator[None]:
    """Turn a Redis or socket failure inside the block into a :class:`CliError`.

    :param worker: the worker whose Redis the block talks to (its URL goes into the message)
    :param doing: what the block does, e.g. ``"cannot read queue 'default'"``
    """
    try:
        yield
    except (RedisError, OSError) as exc:
        raise CliError(f"{doing}: {describe(exc)}{_where(worker)}") from exc


def report(exc: BaseException, *, verbose: bool) -> int:
    """Print ``exc`` as one error line (after its traceback with ``verbose``).

    :param exc: the failure
    :param verbose: whether the user asked for details (``--verbose``)
    :return: the exit status, :data:`FAILED`
    """
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    line = describe(exc)
    if not verbose and not isinstance(exc, CliError):
        # unexpected: a bug here or in the worker's module, whose frames tell where
        line += " (--verbose shows the traceback)"
    print(f"streaq: error: {line}", file=sys.stderr)
    return FAILED


def import_worker(worker_path: str) -> Any:
    """The worker at ``worker_path`` (``module:attribute``), the working directory importable.

    :raises CliError: when it cannot be imported -- a missing module or attribute, or the
        module's own code failing, e.g. ``Worker(redis_url="http://...")`` -- or is no worker
    """
    # like other task-queue CLIs: modules next to where the command runs are importable
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        worker: Any = import_string(worker_path)
    except ImportError as exc:
        raise CliError(str(exc)) from exc
    except Exception as exc:
        raise CliError(
            f"could not import {worker_path!r}: {describe(exc)} (--verbose shows the traceback)"
        ) from exc
    if not callable(getattr(worker, "run_sync", None)):
        raise CliError(f"{worker_path!r} is not a streaq Worker (it has no run_sync())")
    return worker
