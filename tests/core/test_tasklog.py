"""Per-task log lines (:mod:`streaq._runtime._tasklog`): same text, nothing formatted when off."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Iterator
from datetime import UTC

import pytest

from streaq._cli._logs import log_config
from streaq._runtime._state import Job
from streaq._runtime._tasklog import TaskLog
from streaq._schema import F_FN

JOB = Job("0123abcd", "1-0", "default", {F_FN: b"add"}, 1)


class Counted:
    """A value that counts how often it is turned into text."""

    def __init__(self) -> None:
        self.calls = 0

    def __str__(self) -> str:
        self.calls += 1
        return "counted"

    def __repr__(self) -> str:
        self.calls += 1
        return "counted"

    def __format__(self, spec: str) -> str:
        self.calls += 1
        return "counted"


@pytest.fixture
def streaq_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("streaq")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield logger
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def _cli_output(level: str, json_lines: bool = False) -> io.StringIO:
    """Configure the ``streaq`` logger as ``streaq run`` does, writing to a string."""
    logging.config.dictConfig(log_config(UTC, level, json_lines=json_lines))
    out = io.StringIO()
    handler = logging.getLogger("streaq").handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    return out


@pytest.mark.parametrize("json_lines", [False, True])
def test_fast_lines_equal_the_records_lines(
    streaq_logger: logging.Logger, json_lines: bool
) -> None:
    out = _cli_output("INFO", json_lines)
    handler = streaq_logger.handlers[0]
    log = TaskLog(streaq_logger, "w1")
    log.add(logging.INFO, JOB, "task %s □ %s → worker %s", "add", JOB.task_id, "w1")
    log.add(logging.WARNING, JOB, "task %s skipped: %r", "add", None)
    entries = list(log.entries)
    log.flush()
    expected = "".join(handler.format(log._record(e)) + "\n" for e in entries)
    assert out.getvalue() == expected
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    if json_lines:
        first = json.loads(lines[0])
        assert first["message"] == "task add □ 0123abcd → worker w1"
        assert (first["task_id"], first["task_name"], first["worker_id"]) == (
            "0123abcd",
            "add",
            "w1",
        )
    else:
        assert lines[0].startswith("[INFO] ")
        assert lines[0].endswith(": task add □ 0123abcd → worker w1")
        assert lines[1].endswith(": task add skipped: None")


def test_a_traceback_keeps_its_place(streaq_logger: logging.Logger) -> None:
    out = _cli_output("INFO")
    log = TaskLog(streaq_logger, "w1")
    try:
        raise ValueError("boom")
    except ValueError as e:
        error = e
    log.add(logging.INFO, JOB, "first")
    log.add(logging.ERROR, JOB, "failed", exc=error)
    log.add(logging.INFO, JOB, "the end")
    log.flush()
    lines = out.getvalue().splitlines()
    assert lines[0].endswith(": first")
    assert lines[1].endswith(": failed")
    assert lines[2] == "Traceback (most recent call last):"
    assert lines[-2] == "ValueError: boom"
    assert lines[-1].endswith(": the end")


def test_nothing_is_formatted_for_a_level_that_is_off(streaq_logger: logging.Logger) -> None:
    out = _cli_output("WARNING")
    value = Counted()
    log = TaskLog(streaq_logger, "w1")
    assert not log.info
    log.add(logging.INFO, JOB, "task %s ← %s %r", value, value, value)
    assert log.entries == []
    log.flush()
    # the handler's level is above the logger's: the line is dropped before it is formatted
    streaq_logger.setLevel(logging.INFO)
    streaq_logger.handlers[0].setLevel(logging.WARNING)
    log.add(logging.INFO, JOB, "task %s ← %s %r", value, value, value)
    log.flush()
    assert value.calls == 0
    assert out.getvalue() == ""
    log.add(logging.WARNING, JOB, "task %s", value)
    log.flush()
    assert value.calls == 1
    assert out.getvalue().endswith(": task counted\n")


def test_other_handlers_get_records(
    streaq_logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "streaq")
    log = TaskLog(streaq_logger, "w1")
    log.add(logging.INFO, JOB, "task %s done", "add")
    created = log.entries[0][0]
    log.flush()
    [record] = [r for r in caplog.records if r.name == "streaq"]
    assert record.getMessage() == "task add done"
    assert record.created == created
    assert (record.task_id, record.task_name, record.worker_id) == ("0123abcd", "add", "w1")  # type: ignore[attr-defined]
