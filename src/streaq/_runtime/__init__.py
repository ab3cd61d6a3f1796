"""The worker's run time: one module per duty (see ``_loop``)."""

from ._loop import run_worker

__all__ = ["run_worker"]
