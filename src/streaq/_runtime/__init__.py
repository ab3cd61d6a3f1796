"""The worker's run time: one module per duty (see ``_loop``)."""

from ._loop import RunHandle, run_worker

__all__ = ["RunHandle", "run_worker"]
