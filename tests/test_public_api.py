"""The public surface named by the spec exists, and every public module declares ``__all__``."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

SPEC = {
    "streaq": {
        "Worker",
        "TaskStatus",
        "TaskContext",
        "StreaqError",
        "StreaqRetry",
        "VERSION",
        "__version__",
        "logger",
    },
    "streaq.task": {
        "Task",
        "RegisteredTask",
        "AsyncRegisteredTask",
        "SyncRegisteredTask",
        "RegisteredMiddleware",
        "TaskInfo",
        "TaskResult",
        "TaskStatus",
    },
    "streaq.types": {
        "StreaqError",
        "StreaqRetry",
        "StreaqCancelled",
        "TaskContext",
        "AsyncTask",
        "SyncTask",
        "AsyncCron",
        "SyncCron",
        "Middleware",
        "P",
        "R",
        "POther",
        "ROther",
        "Ts",
    },
    "streaq.utils": {"import_string", "to_seconds", "to_ms", "now_ms", "default_log_config"},
    "streaq.worker": {"Worker"},
    # not in the spec: the test harness (docs/testing.rst)
    "streaq.testing": {
        "DrainSummary",
        "Harness",
        "VirtualClock",
        "open_harness",
        "redis_server",
        "use_clock",
    },
}


@pytest.mark.parametrize("module_name", sorted(SPEC))
def test_public_module_exports_the_spec(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = set(module.__all__)
    assert SPEC[module_name] <= exported
    for name in exported:
        assert hasattr(module, name), f"{module_name}.{name} is in __all__ but missing"


def test_classes_the_spec_names_in_streaq_task_are_defined_there() -> None:
    task = importlib.import_module("streaq.task")
    for name in ("Task", "TaskInfo", "TaskResult", "TaskStatus", "RegisteredTask"):
        assert getattr(task, name).__module__ == "streaq.task"


def test_task_status_values_match_the_spec() -> None:
    from streaq import TaskStatus

    assert {s.name: s.value for s in TaskStatus} == {
        "DONE": "done",
        "NOT_FOUND": "missing",
        "QUEUED": "queued",
        "RUNNING": "running",
        "SCHEDULED": "scheduled",
    }


def test_logger_has_a_null_handler() -> None:
    import logging

    from streaq import logger

    assert logger.name == "streaq"
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)


def test_python_dash_m_streaq_prints_the_version() -> None:
    import streaq

    out = subprocess.run(
        [sys.executable, "-m", "streaq", "--version"], capture_output=True, text=True, check=True
    )
    assert streaq.__version__ in out.stdout
