"""The ``streaq`` command line behind its public face, :mod:`streaq.cli`.

``_commands`` parses the arguments and runs each command; ``--workers N`` hands over to
``_supervisor``, ``--reload`` to ``_reloader`` (both start children through ``_children``), and
``run --burst`` shows its progress with ``_progress``.
"""
