"""The ``streaq`` command line behind its public face, :mod:`streaq.cli`.

``_commands`` parses the arguments and dispatches; a failure becomes one line in ``_errors``.
``_run`` runs a worker (``_logs`` formats its log, ``run --burst`` shows its progress with
``_progress``) or hands over to ``_supervisor`` (``--workers N``) or ``_reloader`` (``--reload``),
which start children through ``_children``. ``_reading`` holds the read-only commands (``info``,
``check``, ``dlq list``, ``functions list``), ``_writing`` those that change the queue.
"""
