"""The ``streaq`` command line: ``streaq run``, ``info``, ``check``, ``enqueue``, ``purge``,
``web``, ``dlq``, ``functions``, ``pause``/``resume`` and ``streaq --version``.

Process model of ``streaq run module:worker``:

- ``--workers 1`` (the default): this process imports the worker and runs it.
- ``--workers N``: this process is a *supervisor*. It never imports the worker; it starts N
  children (``python -m streaq run module:worker --workers 1 …``), forwards SIGINT/SIGTERM to
  them, restarts a child that crashes (capped exponential backoff) and gives up when a child
  keeps failing right after it starts (a bad import path, say).
- ``--reload``: this process is a *reloader*. It runs the same command without ``--reload`` as
  a child and restarts it whenever a ``.py`` file under the working directory changes.

``streaq run --metrics-port P [--metrics-addr A]`` serves Prometheus metrics
(``streaq[prometheus]``) from each worker process, on 127.0.0.1 unless ``--metrics-addr`` says
otherwise; with ``--workers N`` child *i* (1-based) listens on ``P + i - 1``, because Prometheus
scrapes each process separately and N processes cannot share one port.

``streaq web module:worker [--host H] [--port P] [--auth module:callable] [--allowed-host NAME]``
serves the monitoring UI (``streaq.ui``, extra ``streaq[web]``) with uvicorn; that process is a
producer and never runs tasks. ``--auth`` names a FastAPI dependency run before every page and
action; ``--allowed-host`` (repeatable) the ``Host`` names the UI answers to, against DNS
rebinding (by default a request reaching a loopback address must name ``localhost``,
``127.0.0.1`` or ``[::1]``).

``streaq info module:worker [--json]`` prints a snapshot of the worker's queue
(:meth:`Worker.inspect <streaq.Worker.inspect>`) and ``streaq check module:worker`` exits with 0
when a worker of the queue is alive (a health probe); like ``dlq list`` and ``functions list``
they read Redis only and never prepare the queue, so they create no key.

Every command fails on a setting it cannot use (Redis down, a bad URL, a missing password, an
unknown host) with one ``streaq: error: ...`` line and status 1; ``--verbose`` adds the traceback.

Children run in their own process group, so a Ctrl-C at the terminal reaches only the parent,
which forwards it once: a worker must not see the same interrupt twice (a second signal may
mean "stop now" to it).

The implementation lives in ``streaq._cli``: the parser, ``run``, the read-only and the writing
commands, errors, log formats, and one module each for the supervisor, the reloader and the burst
progress.
"""

from ._cli._commands import main as main

__all__ = ["main"]
